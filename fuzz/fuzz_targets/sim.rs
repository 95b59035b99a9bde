#![no_main]
//! The `sim` target; its logic and invariants are in `dcgka_fuzz::sim`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| dcgka_fuzz::sim(data));
