#![no_main]
//! The `receive_raw` target; its logic and invariants are in `dcgka_fuzz::receive_raw`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| dcgka_fuzz::receive_raw(data));
