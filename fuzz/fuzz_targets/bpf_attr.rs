//! cargo-fuzz target: see `telebpf_fuzz::bpf_attr`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| telebpf_fuzz::bpf_attr(data));
