//! The response cache's MAC: arbitrary values and metadata, sealed and checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cf_cache::fuzzing::check_seal(data));
