//! Shared helpers: a mock server, a provider and a service pointed at it, and a
//! timeout that names the step it bounds.

use cf_llm::{
    AnthropicConfig, AnthropicProvider, ApiKey, LlmService, LlmServiceBuilder, Message, Request,
};
use cf_mock_llm::{MockConfig, MockServer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The key every test sends; tests check it never leaks.
pub const KEY: &str = "sk-ant-api03-TEST-SECRET-0123456789abcdef";

/// The model of the sample requests (priced in the built-in table).
pub const MODEL: &str = "claude-sonnet-4-5";

/// Runs `fut`, failing the test with the step's name if it takes longer than `limit`.
pub async fn step<F: Future>(name: &str, limit: Duration, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("step `{name}` took longer than {limit:?}"),
    }
}

/// A mock server with `latency`, no faults yet.
pub async fn server(latency: Duration) -> MockServer {
    step(
        "start the mock server",
        Duration::from_secs(5),
        MockServer::start(MockConfig {
            latency,
            ..MockConfig::default()
        }),
    )
    .await
    .expect("bind 127.0.0.1")
}

/// The config of a provider for `server`.
pub fn config(server: &MockServer) -> AnthropicConfig {
    AnthropicConfig::new(server.base_url(), ApiKey::new(KEY))
}

/// A provider for `server`.
pub fn provider(server: &MockServer) -> Arc<AnthropicProvider> {
    Arc::new(AnthropicProvider::new(config(server)).expect("valid config"))
}

/// A service builder over a provider for `server`.
pub fn builder(server: &MockServer) -> LlmServiceBuilder {
    LlmService::builder(provider(server))
}

/// A one-message request.
pub fn request(text: &str) -> Request {
    Request::new(MODEL, 256, vec![Message::user(text)])
}
