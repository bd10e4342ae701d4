//! What kind of program `telebpf exec` is about to run, and whether the
//! preload library can reach it.
//!
//! `LD_PRELOAD` works only where the dynamic loader runs and honours it. A
//! program it cannot reach does not fail: it makes its `bpf()` calls to the
//! **host** kernel, and the user believes they trace the guest. So before
//! `exec`, we look at the program the way the kernel and the loader will:
//!
//! * a `#!` script: its interpreter, recursively (`/usr/bin/env NAME` is
//!   followed to `NAME` on `PATH`), at most [`MAX_INTERPRETERS`] deep as the
//!   kernel's `binprm` recursion limit;
//! * an ELF file without a program interpreter (`PT_INTERP`): statically
//!   linked, no loader, no preload;
//! * a Go binary (a `Go` build-id note or a `.go.buildinfo` section), even a
//!   dynamically linked one: the Go runtime makes its system calls itself,
//!   never through the libc functions the preload replaces;
//! * a program that runs with more privilege than its caller (set-user-ID or
//!   set-group-ID to someone else, or with file capabilities): the kernel
//!   sets `AT_SECURE`, and the loader then ignores our `LD_PRELOAD`;
//! * anything else that is not ELF is run by `/bin/sh` (what `execvp` does
//!   on `ENOEXEC`), so `/bin/sh` is what we check.
//!
//! A program the preload cannot reach is refused with one line saying why;
//! nothing is run. A program that does not exist or cannot be read is left
//! to `exec`, whose error is the right one.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use object::elf;
use object::read::elf::{ElfFile32, ElfFile64, FileHeader, ProgramHeader};
use object::{Endianness, FileKind, Object};

/// How many `#!` interpreters deep we follow (the kernel allows 4 levels of
/// interpreter below the program: `BINPRM_MAX_RECURSION`).
pub const MAX_INTERPRETERS: usize = 4;

/// The kernel reads at most this much of a `#!` line (`BINPRM_BUF_SIZE`).
pub(crate) const SHEBANG_MAX: usize = 256;

/// Why the preload cannot reach a program.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unreachable {
    /// An ELF file without a program interpreter.
    #[error(
        "{0} is statically linked (no program interpreter): LD_PRELOAD cannot reach it, \
         so its bpf() calls would act on the host kernel; not run"
    )]
    Static(PathBuf),
    /// A Go binary.
    #[error(
        "{0} is a Go program: the Go runtime makes its system calls itself, LD_PRELOAD \
         cannot reach them, so its bpf() calls would act on the host kernel; not run"
    )]
    Go(PathBuf),
    /// The loader would run in secure mode and ignore `LD_PRELOAD`.
    #[error(
        "{0} runs with more privilege than its caller ({1}): the dynamic loader ignores \
         LD_PRELOAD for it, so its bpf() calls would act on the host kernel; not run"
    )]
    Privileged(PathBuf, &'static str),
    /// More `#!` levels than the kernel follows.
    #[error("{0}: more than {MAX_INTERPRETERS} levels of #! interpreters; not run")]
    TooDeep(PathBuf),
}

impl Unreachable {
    /// The same refusal, naming the command the user gave when the program
    /// found unreachable is its interpreter.
    fn via(self, script: &Path) -> Unreachable {
        let name = |p: PathBuf| {
            PathBuf::from(format!(
                "{} (interpreter of {})",
                p.display(),
                script.display()
            ))
        };
        match self {
            Unreachable::Static(p) => Unreachable::Static(name(p)),
            Unreachable::Go(p) => Unreachable::Go(name(p)),
            Unreachable::Privileged(p, why) => Unreachable::Privileged(name(p), why),
            deeper => deeper,
        }
    }
}

/// Checks that the preload will reach `program` (as given on the command
/// line: a path, or a name looked up on `PATH` as `execvp` does).
pub fn check(program: &OsStr) -> Result<(), Unreachable> {
    match resolve(program) {
        Some(path) => check_path(&path, 0),
        // Not found: `exec` reports it.
        None => Ok(()),
    }
}

/// The file `execvp` would run for `program`.
pub(crate) fn resolve(program: &OsStr) -> Option<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(program));
    }
    // glibc's execvp searches this when PATH is unset.
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/bin:/usr/bin"));
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable_file(candidate))
}

fn is_executable_file(path: &Path) -> bool {
    path.metadata()
        .map(|m| m.is_file() && m.mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn check_path(path: &Path, depth: usize) -> Result<(), Unreachable> {
    if depth > MAX_INTERPRETERS {
        return Err(Unreachable::TooDeep(path.to_path_buf()));
    }
    let Ok(file) = File::open(path) else {
        // Unreadable or missing: `exec` answers (EACCES, ENOENT) as it would.
        return Ok(());
    };
    let Ok(meta) = file.metadata() else {
        return Ok(());
    };
    if depth == 0 {
        if let Some(why) = secure_mode(path, &meta) {
            return Err(Unreachable::Privileged(path.to_path_buf(), why));
        }
    }
    if meta.len() == 0 {
        return Ok(());
    }
    // SAFETY: a read-only private mapping of a file we only read; if the
    // file is truncated meanwhile, parsing reads garbage or faults on a
    // program's own binary, which is what `exec` of it would do next.
    let Ok(map) = (unsafe { memmap2::Mmap::map(&file) }) else {
        return Ok(());
    };
    let bytes = &map[..];
    if let Some(interpreter) = shebang(bytes) {
        return check_path(&interpreter, depth + 1).map_err(|e| e.via(path));
    }
    match elf_kind(bytes) {
        Some(Elf::Dynamic) => Ok(()),
        Some(Elf::Static) => Err(Unreachable::Static(path.to_path_buf())),
        Some(Elf::Go) => Err(Unreachable::Go(path.to_path_buf())),
        // Neither ELF nor `#!`: execvp hands it to the shell.
        None if bytes.starts_with(b"\x7fELF") => Ok(()),
        None => check_path(Path::new("/bin/sh"), depth + 1).map_err(|e| e.via(path)),
    }
}

/// Why the kernel would set `AT_SECURE` for a program we (the caller) exec,
/// so that the loader ignores `LD_PRELOAD`.
fn secure_mode(path: &Path, meta: &std::fs::Metadata) -> Option<&'static str> {
    // SAFETY: getuid/getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if meta.mode() & libc::S_ISUID != 0 && meta.uid() != uid {
        return Some("set-user-ID");
    }
    if meta.mode() & libc::S_ISGID != 0 && meta.gid() != gid {
        return Some("set-group-ID");
    }
    // Root gains nothing from file capabilities (it has them all), so the
    // kernel does not switch the loader to secure mode for it.
    if uid != 0 && has_file_capabilities(path) {
        return Some("file capabilities");
    }
    None
}

fn has_file_capabilities(path: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: both strings are NUL-terminated and live across the call; a
    // NULL buffer of size 0 asks only for the attribute's size.
    let n = unsafe {
        libc::getxattr(
            c_path.as_ptr(),
            c"security.capability".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    n > 0
}

/// The interpreter a `#!` line names: its path, or for `/usr/bin/env [-S]
/// NAME`, `NAME` looked up on `PATH`.
pub(crate) fn shebang(bytes: &[u8]) -> Option<PathBuf> {
    let line = bytes.strip_prefix(b"#!")?;
    let line = &line[..line.len().min(SHEBANG_MAX - 2)];
    let line = line.split(|&b| b == b'\n').next().unwrap_or(line);
    let mut words = line
        .split(|&b| b == b' ' || b == b'\t' || b == b'\r')
        .filter(|w| !w.is_empty());
    let interpreter = PathBuf::from(OsString::from_vec(words.next()?.to_vec()));
    if interpreter.file_name() != Some(OsStr::new("env")) {
        return Some(interpreter);
    }
    // `env` runs the first word that is not an option (`-S` splits the
    // rest of the line into words, which our split already did).
    let name = words.find(|w| !w.starts_with(b"-") && !w.contains(&b'='))?;
    resolve(OsStr::from_bytes(name)).or(Some(interpreter))
}

/// What an ELF file means for the preload.
#[derive(Debug, PartialEq, Eq)]
enum Elf {
    /// Has a program interpreter and is not Go: the loader runs the preload.
    Dynamic,
    /// No program interpreter.
    Static,
    /// Built by Go.
    Go,
}

fn elf_kind(bytes: &[u8]) -> Option<Elf> {
    match FileKind::parse(bytes).ok()? {
        FileKind::Elf32 => elf_kind_of(&ElfFile32::<Endianness>::parse(bytes).ok()?),
        FileKind::Elf64 => elf_kind_of(&ElfFile64::<Endianness>::parse(bytes).ok()?),
        _ => None,
    }
}

fn elf_kind_of<H: FileHeader<Endian = Endianness>>(
    file: &object::read::elf::ElfFile<'_, H>,
) -> Option<Elf> {
    let endian = file.endian();
    let data = file.data();
    let mut interp = false;
    let mut go = file.section_by_name(".go.buildinfo").is_some();
    for ph in file.elf_program_headers() {
        match ph.p_type(endian) {
            elf::PT_INTERP => interp = true,
            // The Go linker writes its build id as an ELF note named "Go"
            // (found even when the section headers were stripped).
            elf::PT_NOTE => {
                if let Ok(Some(mut notes)) = ph.notes(endian, data) {
                    while let Ok(Some(note)) = notes.next() {
                        go |= note.name() == b"Go";
                    }
                }
            }
            _ => {}
        }
    }
    Some(if go {
        Elf::Go
    } else if interp {
        Elf::Dynamic
    } else {
        Elf::Static
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    /// A directory of the test's own, removed when the test ends.
    struct Scratch(PathBuf);

    impl std::ops::Deref for Scratch {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn scratch(tag: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("telebpf-program-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn script(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        let mut f = File::create(&path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Compiles a C program with the machine's cc, if there is one with the
    /// static C library; `None` (the test says SKIP) otherwise.
    fn cc(dir: &Path, name: &str, flags: &[&str]) -> Option<PathBuf> {
        let src = dir.join("main.c");
        std::fs::write(&src, "int main(void) { return 0; }\n").unwrap();
        let out = dir.join(name);
        let ok = Command::new("cc")
            .args(flags)
            .arg("-o")
            .arg(&out)
            .arg(&src)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("SKIP: cc {flags:?} did not build");
        }
        ok.then_some(out)
    }

    #[test]
    fn dynamic_programs_and_their_scripts_pass() {
        assert_eq!(check(OsStr::new("/bin/sh")), Ok(()));
        assert_eq!(check(OsStr::new("sh")), Ok(()));
        let dir = scratch("dynamic");
        let s = script(&dir, "s", "#!/bin/sh\necho hi\n");
        assert_eq!(check(s.as_os_str()), Ok(()));
        let e = script(&dir, "e", "#!/usr/bin/env -S sh -e\necho hi\n");
        assert_eq!(check(e.as_os_str()), Ok(()));
        // No #! and not ELF: the shell runs it.
        let plain = script(&dir, "plain", "echo hi\n");
        assert_eq!(check(plain.as_os_str()), Ok(()));
        // Missing: left to exec's own error.
        assert_eq!(check(dir.join("missing").as_os_str()), Ok(()));
    }

    #[test]
    fn a_static_program_is_refused_directly_and_as_an_interpreter() {
        let dir = scratch("static");
        let Some(bin) = cc(&dir, "static", &["-static"]) else {
            return;
        };
        assert_eq!(
            check(bin.as_os_str()),
            Err(Unreachable::Static(bin.clone()))
        );
        let s = script(&dir, "s", &format!("#!{}\n", bin.display()));
        let err = check(s.as_os_str()).unwrap_err();
        assert!(matches!(err, Unreachable::Static(_)), "{err}");
        assert!(err.to_string().contains("interpreter of"), "{err}");
        // One line.
        assert!(!err.to_string().contains('\n'));
        let Some(pie) = cc(&dir, "static-pie", &["-static-pie"]) else {
            return;
        };
        assert_eq!(
            check(pie.as_os_str()),
            Err(Unreachable::Static(pie.clone()))
        );
    }

    #[test]
    fn a_go_note_makes_even_a_dynamic_program_unreachable() {
        let dir = scratch("go");
        let note = dir.join("note");
        // An ELF note: namesz 3 ("Go\0", padded to 4), descsz 4, type 4
        // (the Go build id), then the name and the descriptor.
        let mut bytes = Vec::new();
        for v in [3u32, 4, 4] {
            bytes.extend_from_slice(&v.to_ne_bytes());
        }
        bytes.extend_from_slice(b"Go\0\0abcd");
        std::fs::write(&note, bytes).unwrap();
        // A note section only becomes a PT_NOTE segment when linked, so
        // link one in.
        let Some(plain) = cc(&dir, "plain", &[]) else {
            return;
        };
        assert_eq!(check(plain.as_os_str()), Ok(()));
        let obj = dir.join("note.o");
        let ok = Command::new("objcopy")
            .args(["-I", "binary", "-O", "elf64-x86-64", "--rename-section"])
            .arg(".data=.note.go.buildid,alloc,load,readonly,data,contents")
            .arg(&note)
            .arg(&obj)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        let linked = dir.join("go-like");
        let ok = ok
            && Command::new("cc")
                .args(["-z", "noexecstack", "-o"])
                .arg(&linked)
                .arg(dir.join("main.c"))
                .arg(&obj)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
        if !ok {
            eprintln!("SKIP: could not link a Go-like note");
            return;
        }
        assert_eq!(
            check(linked.as_os_str()),
            Err(Unreachable::Go(linked.clone()))
        );
    }

    #[test]
    fn set_user_id_to_someone_else_is_refused() {
        let dir = scratch("setuid");
        let Some(bin) = cc(&dir, "suid", &[]) else {
            return;
        };
        // Owned by nobody with the set-user-ID bit: whoever we are, that
        // is someone else (unless we are nobody, then it is not secure).
        // SAFETY: getuid cannot fail.
        if unsafe { libc::getuid() } != 0 {
            eprintln!("SKIP: needs root to chown");
            return;
        }
        std::os::unix::fs::chown(&bin, Some(65534), None).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o4755)).unwrap();
        assert_eq!(
            check(bin.as_os_str()),
            Err(Unreachable::Privileged(bin.clone(), "set-user-ID"))
        );
    }

    #[test]
    fn interpreter_loops_stop() {
        let dir = scratch("loop");
        let a = dir.join("a");
        script(&dir, "a", &format!("#!{}\n", a.display()));
        assert_eq!(check(a.as_os_str()), Err(Unreachable::TooDeep(a.clone())));
    }
}
