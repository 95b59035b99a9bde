#![no_main]
//! The `receive_insider` target; its logic and invariants are in `dcgka_fuzz::receive_insider`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| dcgka_fuzz::receive_insider(data));
