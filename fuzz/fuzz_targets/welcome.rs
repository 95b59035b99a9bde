#![no_main]
//! The `welcome` target; its logic and invariants are in `dcgka_fuzz::welcome`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| dcgka_fuzz::welcome(data));
