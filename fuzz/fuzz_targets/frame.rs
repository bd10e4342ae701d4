//! cargo-fuzz target: see `telebpf_fuzz::frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| telebpf_fuzz::frame(data));
