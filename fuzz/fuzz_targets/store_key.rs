//! The agent store's key and agent-name validators.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cf_cache::fuzzing::check_store_key(data));
