//! Integration tests of cf-mock-llm over HTTP on 127.0.0.1, with the client the host
//! uses (reqwest): the Messages API's content blocks, tools, thinking, prompt caching,
//! structured output and scripted replies. One module per area.

mod caching;
mod media;
mod scripted;
mod streaming;
mod structured;
mod support;
mod thinking;
mod tools;
