//! Test doubles and helpers shared by the modules.

use cf_host::llm::{BoxFuture, OfflineProvider, Provider, ProviderError, Request, Response};
use cf_host::{Host, HostBuilder, Limits};
use std::sync::{Arc, Mutex};
use tempfile::TempDir;

pub use cf_tests::{bounded, hostile_wasm};

/// A provider that records every request and answers like the offline provider, or
/// with the scripted texts in order.
#[derive(Debug, Default)]
pub struct Spy {
    pub requests: Mutex<Vec<Request>>,
    pub script: Mutex<Vec<String>>,
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
        Box::pin(async move { Ok(answer) })
    }
}

/// A host with its own cache directory (kept alive by the returned guard).
pub fn host_with(provider: Option<Arc<dyn Provider>>, limits: Limits) -> (Host, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut b: HostBuilder = Host::builder()
        .cache_dir(Some(dir.path().to_path_buf()))
        .limits(limits);
    if let Some(p) = provider {
        b = b.provider(p);
    }
    (b.build().expect("host builds"), dir)
}

pub fn host() -> (Host, TempDir) {
    host_with(None, Limits::default())
}
