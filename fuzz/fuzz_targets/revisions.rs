#![no_main]
//! Fuzz target: see `nps_stream_fuzz::revisions` (fuzz/src/checks.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| nps_stream_fuzz::revisions(data));
