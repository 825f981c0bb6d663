#![no_main]
//! See `authsidecar::fuzzing::json_payload` for the properties checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| authsidecar::fuzzing::json_payload(data));
