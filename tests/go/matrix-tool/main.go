// SPDX-License-Identifier: Apache-2.0

// Command matrix-tool is the Go tool of the matrix (issue 15): what a
// cilium/ebpf program (Tetragon, Tracee and their kind) does, built by the
// tests offline from Debian's golang-go and golang-github-cilium-ebpf-dev
// (GO111MODULE=off, GOPATH including /usr/share/gocode), with the object
// of examples/ringwatch/src/bpf/ringwatch.bpf.c embedded (the build copies
// it beside this file as ringwatch.bpf.o).
//
//	matrix-tool MARK COUNT [TIMEOUT_MS]
//
// It loads the object with ebpf.LoadCollectionSpecFromReader, writes MARK
// into its .rodata (RewriteConstants), opens ringbuf.NewReader and
// perf.NewReader on its two buffers, attaches the tracepoint
// sched/sched_process_exec with link.Tracepoint and prints "ready MARK".
// Then, for every exec of a process whose comm is MARK, one line per
// record received and the program's .bss counter (cilium/ebpf 0.9.1 does
// not mmap maps: read with a map lookup):
//
//	ringbuf MARK pid N
//	perfbuf MARK pid N
//	bss MARK hits N
//
// It exits 0 once each buffer has delivered COUNT records (COUNT 0:
// never), or on SIGINT/SIGTERM, closing everything first; 2 if TIMEOUT_MS
// (default 30000, 0: none) passes first; 1 on any error, with one line on
// stderr. The output convention is the C tool's (tests/c/matrix-tool.c).
package main

import (
	"bytes"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/perf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
)

//go:embed ringwatch.bpf.o
var object []byte

// commLen is TASK_COMM_LEN: a comm is at most 15 bytes and a NUL.
const commLen = 16

// event is struct event of examples/ringwatch/src/bpf/ringwatch.bpf.c.
type event struct {
	Pid  uint32
	Comm [commLen]byte
}

// received is one record of either buffer, or the reader's end.
type received struct {
	kind string
	raw  []byte
	err  error
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "matrix-tool: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 3 || len(os.Args) > 4 {
		fail("usage: matrix-tool MARK COUNT [TIMEOUT_MS]")
	}
	mark := os.Args[1]
	if len(mark) == 0 || len(mark) >= commLen {
		fail("MARK must be 1 to %d bytes", commLen-1)
	}
	count, err := strconv.ParseUint(os.Args[2], 10, 32)
	if err != nil {
		fail("COUNT: %v", err)
	}
	timeoutMs := uint64(30000)
	if len(os.Args) == 4 {
		if timeoutMs, err = strconv.ParseUint(os.Args[3], 10, 32); err != nil {
			fail("TIMEOUT_MS: %v", err)
		}
	}
	os.Exit(run(mark, count, timeoutMs))
}

func run(mark string, count, timeoutMs uint64) int {
	// What every cilium/ebpf tool does first; a no-op on kernels that
	// account BPF memory to the memory cgroup (5.11 and later).
	if err := rlimit.RemoveMemlock(); err != nil {
		fmt.Fprintf(os.Stderr, "matrix-tool: memlock: %v\n", err)
		return 1
	}
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(object))
	if err != nil {
		fmt.Fprintf(os.Stderr, "matrix-tool: object: %v\n", err)
		return 1
	}
	var setting [commLen]byte
	copy(setting[:], mark)
	if err := spec.RewriteConstants(map[string]interface{}{"target_comm": setting}); err != nil {
		fmt.Fprintf(os.Stderr, "matrix-tool: .rodata: %v\n", err)
		return 1
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		fmt.Fprintf(os.Stderr, "matrix-tool: load: %v\n", err)
		return 1
	}
	defer coll.Close()

	ring, err := ringbuf.NewReader(coll.Maps["ring_events"])
	if err != nil {
		fmt.Fprintf(os.Stderr, "matrix-tool: ringbuf.NewReader: %v\n", err)
		return 1
	}
	defer ring.Close()
	perfReader, err := perf.NewReader(coll.Maps["perf_events"], 8*os.Getpagesize())
	if err != nil {
		fmt.Fprintf(os.Stderr, "matrix-tool: perf.NewReader: %v\n", err)
		return 1
	}
	defer perfReader.Close()
	tp, err := link.Tracepoint("sched", "sched_process_exec", coll.Programs["handle_exec"], nil)
	if err != nil {
		fmt.Fprintf(os.Stderr, "matrix-tool: link.Tracepoint: %v\n", err)
		return 1
	}
	defer tp.Close()

	// Both readers block in Read; Close (deferred above) ends them with
	// ErrClosed. Only this goroutine prints.
	records := make(chan received, 64)
	go func() {
		for {
			rec, err := ring.Read()
			records <- received{kind: "ringbuf", raw: rec.RawSample, err: err}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		for {
			rec, err := perfReader.Read()
			if err == nil && rec.LostSamples > 0 {
				fmt.Fprintf(os.Stderr, "matrix-tool: %d perf records lost on cpu %d\n", rec.LostSamples, rec.CPU)
				continue
			}
			records <- received{kind: "perfbuf", raw: rec.RawSample, err: err}
			if err != nil {
				return
			}
		}
	}()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	var timeout <-chan time.Time
	if timeoutMs > 0 {
		timeout = time.After(time.Duration(timeoutMs) * time.Millisecond)
	}

	fmt.Printf("ready %s\n", mark)
	seen := map[string]uint64{}
	for count == 0 || seen["ringbuf"] < count || seen["perfbuf"] < count {
		select {
		case <-signals:
			return 0
		case <-timeout:
			fmt.Fprintf(os.Stderr, "matrix-tool: timed out after %d ms: %d of %d ring, %d of %d perf records\n",
				timeoutMs, seen["ringbuf"], count, seen["perfbuf"], count)
			return 2
		case r := <-records:
			if r.err != nil {
				fmt.Fprintf(os.Stderr, "matrix-tool: %s read: %v\n", r.kind, r.err)
				return 1
			}
			var e event
			if err := binary.Read(bytes.NewReader(r.raw), binary.LittleEndian, &e); err != nil {
				fmt.Fprintf(os.Stderr, "matrix-tool: malformed %s record of %d bytes\n", r.kind, len(r.raw))
				continue
			}
			comm := string(bytes.TrimRight(e.Comm[:], "\x00"))
			fmt.Printf("%s %s pid %d\n", r.kind, comm, e.Pid)
			hits, err := bssHits(coll)
			if err != nil {
				fmt.Fprintf(os.Stderr, "matrix-tool: .bss: %v\n", err)
				return 1
			}
			fmt.Printf("bss %s hits %d\n", comm, hits)
			seen[r.kind]++
		}
	}
	hits, err := bssHits(coll)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		fmt.Fprintf(os.Stderr, "matrix-tool: .bss: %v\n", err)
		return 1
	}
	fmt.Printf("done %s ringbuf %d perfbuf %d hits %d\n", mark, seen["ringbuf"], seen["perfbuf"], hits)
	return 0
}

// bssHits reads event_count, the only variable of the .bss map.
func bssHits(coll *ebpf.Collection) (uint64, error) {
	var hits uint64
	err := coll.Maps[".bss"].Lookup(uint32(0), &hits)
	return hits, err
}
