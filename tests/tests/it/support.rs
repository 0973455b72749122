//! Test doubles and helpers shared by the modules.

use cf_host::llm::{
    AnthropicConfig, AnthropicProvider, ApiKey, BoxFuture, OfflineProvider, Provider,
    ProviderError, Request, Response,
};
use cf_host::{Host, HostBuilder, Limits};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tempfile::TempDir;

pub use cf_tests::{bounded, hostile_wasm, impostor_wasm};

/// A provider that records every request and answers like the offline provider, or
/// with the scripted texts in order.
#[derive(Debug, Default)]
pub struct Spy {
    pub requests: Mutex<Vec<Request>>,
    pub script: Mutex<Vec<String>>,
    /// How long each answer takes.
    pub delay: std::time::Duration,
    /// Failures to return, in order, before answering again.
    pub failures: Mutex<Vec<ProviderError>>,
}

impl Spy {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn scripted(texts: &[&str]) -> Arc<Self> {
        let spy = Self::default();
        *spy.script.lock().expect("not poisoned") =
            texts.iter().rev().map(|t| (*t).to_owned()).collect();
        Arc::new(spy)
    }

    pub fn slow(delay: std::time::Duration) -> Arc<Self> {
        Arc::new(Self {
            delay,
            ..Self::default()
        })
    }

    pub fn failing(delay: std::time::Duration, failures: Vec<ProviderError>) -> Arc<Self> {
        Arc::new(Self {
            delay,
            failures: Mutex::new(failures),
            ..Self::default()
        })
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("not poisoned").clone()
    }
}

impl Provider for Spy {
    fn name(&self) -> &str {
        "spy"
    }

    fn send<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Response, ProviderError>> {
        self.requests
            .lock()
            .expect("not poisoned")
            .push(request.clone());
        let mut answer = OfflineProvider::answer(request);
        if let Some(text) = self.script.lock().expect("not poisoned").pop() {
            answer.text = text;
        }
        let failure = self.failures.lock().expect("not poisoned").pop();
        let delay = self.delay;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            match failure {
                Some(f) => Err(f),
                None => Ok(answer),
            }
        })
    }
}

/// A host with its own data directory (kept alive by the returned guard).
pub fn host_with(provider: Option<Arc<dyn Provider>>, limits: Limits) -> (Host, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    // The response cache is tested on its own (tests/it/cache.rs); here every call
    // reaches the provider so that tests see what agents send.
    let mut b: HostBuilder = Host::builder()
        .data_dir(Some(dir.path().to_path_buf()))
        .no_response_cache()
        .grant("hostile", cf_host::permissions::Grant::unrestricted())
        .limits(limits);
    if let Some(p) = provider {
        b = b.provider(p);
    }
    (b.build().expect("host builds"), dir)
}

pub fn host() -> (Host, TempDir) {
    host_with(None, Limits::default())
}

/// The value of `key` in a run's metadata.
pub fn meta<'a>(metadata: &'a [(String, String)], key: &str) -> Option<&'a str> {
    metadata
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The real Anthropic client, pointed at the loopback `server` with `key`.
pub fn anthropic_client(server: &cf_mock_llm::MockServer, key: &str) -> Arc<dyn Provider> {
    let config = AnthropicConfig::new(server.base_url(), ApiKey::new(key));
    Arc::new(AnthropicProvider::new(config).expect("client"))
}

/// An agent in another language, as `tests/build.rs` left it: `built` is the path it
/// reported (`CF_<LANG>_AGENT`), `skipped` the reason it could not build it
/// (`CF_<LANG>_AGENT_SKIPPED`, when the language's tool cannot be had here). `None`,
/// after saying why, when skipped; otherwise the component, its manifest beside it.
pub fn built_guest(
    language: &str,
    script: &str,
    built: Option<&str>,
    skipped: Option<&str>,
) -> Option<PathBuf> {
    if let Some(reason) = skipped {
        // CI sets this: there, every agent must build, and a skip is a failure.
        assert!(
            std::env::var_os("CF_REQUIRE_ALL_AGENTS").is_none(),
            "CF_REQUIRE_ALL_AGENTS is set, but the {language} agent was not built: {script} reported: {reason}"
        );
        eprintln!("skipping the {language} agent: {script} reported: {reason}");
        return None;
    }
    let path = PathBuf::from(built.unwrap_or_else(|| {
        panic!("tests/build.rs reports either the {language} component or why it skipped it")
    }));
    assert!(
        path.exists() && path.with_extension("toml").exists(),
        "{} or its manifest is missing",
        path.display()
    );
    Some(path)
}

/// Where the build puts things (the directory holding `wasm-guests/`), from the path
/// of a component built there.
pub fn guest_target_dir(built: Option<&str>) -> PathBuf {
    built
        .and_then(|p| Path::new(p).ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}
