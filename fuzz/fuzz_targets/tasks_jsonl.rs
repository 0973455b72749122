//! The JSONL task reader of `cf-host run --tasks`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cf_tasks::fuzzing::check_read_jsonl(data));
