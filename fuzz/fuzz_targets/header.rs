#![no_main]
//! See `authsidecar::fuzzing::header` for the properties checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| authsidecar::fuzzing::header(data));
