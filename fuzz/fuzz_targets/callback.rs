#![no_main]
//! See `authsidecar::fuzzing::callback` for the properties checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| authsidecar::fuzzing::callback(data));
