#![no_main]
//! See `authsidecar::fuzzing::sign` for the properties checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| authsidecar::fuzzing::sign(data));
