#![no_main]
//! See `authsidecar::fuzzing::query` for the properties checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| authsidecar::fuzzing::query(data));
