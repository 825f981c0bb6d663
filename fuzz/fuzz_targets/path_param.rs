#![no_main]
//! See `authsidecar::fuzzing::path_param` for the properties checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| authsidecar::fuzzing::path_param(data));
