//! cargo-fuzz target: see `telebpf_fuzz::netlink`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| telebpf_fuzz::netlink(data));
