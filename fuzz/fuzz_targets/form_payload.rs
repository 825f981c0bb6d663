#![no_main]
//! See `authsidecar::fuzzing::form_payload` for the properties checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| authsidecar::fuzzing::form_payload(data));
