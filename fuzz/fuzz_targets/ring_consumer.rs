//! cargo-fuzz target: see `telebpf_fuzz::ring_consumer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| telebpf_fuzz::ring_consumer(data));
