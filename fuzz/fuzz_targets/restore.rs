#![no_main]
//! The `restore` target; its logic and invariants are in `dcgka_fuzz::restore`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| dcgka_fuzz::restore(data));
