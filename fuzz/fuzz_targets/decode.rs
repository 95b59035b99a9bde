#![no_main]
//! The `decode` target; its logic and invariants are in `dcgka_fuzz::decode`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| dcgka_fuzz::decode(data));
