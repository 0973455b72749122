//! Integration tests of cf-llm against a real HTTP server on 127.0.0.1 (cf-mock-llm):
//! the Anthropic provider, the service's retry, timeout and concurrency rules,
//! record/replay, secrets and costs. One module per area.

mod concurrency;
mod contract2;
mod cost;
mod errors;
mod fuzz_regressions;
mod record_replay;
#[path = "../../../fuzz/regression_inputs.rs"]
mod regression_inputs;
mod retries;
mod secrets;
mod stream_service;
mod streaming;
mod support;
mod wire;
