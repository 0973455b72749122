//! The response-cache entry decoder past its MAC: arbitrary bytes given a valid MAC.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cf_cache::fuzzing::check_entry_decoder(data));
