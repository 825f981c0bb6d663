#![no_main]
//! See `authsidecar::fuzzing::differential`: the same caller bytes through a sidecar with
//! `proxy.fast_path` on and one with it off must give the same upstream requests and answers.
libfuzzer_sys::fuzz_target!(|data: &[u8]| authsidecar::fuzzing::differential(data));
