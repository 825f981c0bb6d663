#![no_main]
//! See `authsidecar::fuzzing::template` for the properties checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| authsidecar::fuzzing::template(data));
