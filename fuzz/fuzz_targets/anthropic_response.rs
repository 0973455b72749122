//! The Anthropic provider's reading of an answer: status, headers and body.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cf_llm::fuzzing::check_anthropic_response(data));
