#![no_main]
//! See `authsidecar::fuzzing::http1` for the properties checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| authsidecar::fuzzing::http1(data));
