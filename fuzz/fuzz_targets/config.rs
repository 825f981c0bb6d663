#![no_main]
//! See `authsidecar::fuzzing::config` for the properties checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| authsidecar::fuzzing::config(data));
