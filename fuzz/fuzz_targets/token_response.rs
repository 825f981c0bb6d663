#![no_main]
//! See `authsidecar::fuzzing::token_response` for the properties checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| authsidecar::fuzzing::token_response(data));
