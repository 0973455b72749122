//! The canonical request key of cf-llm, on requests built with `arbitrary`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cf_llm::fuzzing::check_request_key(data));
