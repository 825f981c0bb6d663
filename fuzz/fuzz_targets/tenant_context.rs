#![no_main]
//! See `authsidecar::fuzzing::tenant_context` for the properties checked.
libfuzzer_sys::fuzz_target!(|data: &[u8]| authsidecar::fuzzing::tenant_context(data));
