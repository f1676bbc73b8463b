#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| batch_triage_fuzz::rest_bodies(data));
