#![no_main]
//! The `device` target; its logic and invariants are in `dcgka_fuzz::device`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| dcgka_fuzz::device(data));
