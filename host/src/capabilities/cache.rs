//! The `cache` interface: the agent's own store, a directory no other agent reaches.
//! Key validation, hashing, quotas and expiry are `cf-cache`'s; this module opens the
//! agent's scope on first use and converts errors to WIT values.

use crate::bindings::v0_1::claude_force::agent::cache::{CacheError, Host};
use cf_cache::{AgentStore, AgentStores, StoreError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// An agent's store, opened on first use and shared by every run of the agent: opening
/// a scope scans its directory, which must not happen once per run.
pub(crate) type SharedScope = Arc<OnceLock<Arc<AgentStore>>>;

/// The `cache` capability of one run.
#[derive(Debug)]
pub(crate) struct CacheCtx {
    pub stores: Option<AgentStores>,
    pub agent: String,
    /// For a third-party plugin, its component's digest: its store is its own, apart
    /// from any other component reporting the same name.
    component: Option<Arc<str>>,
    scope: SharedScope,
    permissions: Arc<crate::permissions::Permissions>,
    /// Operations still allowed in this run.
    ops_left: u32,
    max_ops: u32,
}

impl CacheCtx {
    pub(crate) fn new(
        stores: Option<AgentStores>,
        agent: String,
        component: Option<Arc<str>>,
        scope: SharedScope,
        permissions: Arc<crate::permissions::Permissions>,
        max_ops: u32,
    ) -> Self {
        Self {
            stores,
            agent,
            component,
            scope,
            permissions,
            ops_left: max_ops,
            max_ops,
        }
    }

    /// The agent's scope, opened on first use so that agents that never touch the
    /// cache pay nothing.
    fn scope(&mut self) -> Result<Arc<AgentStore>, CacheError> {
        // Not granted: the plugin's quota is zero.
        self.permissions
            .cache_allowed()
            .map_err(CacheError::QuotaExceeded)?;
        // A guest that hammers its store is refused before the disk is touched.
        if self.ops_left == 0 {
            return Err(CacheError::QuotaExceeded(format!(
                "this run reached its limit of {} cache operations",
                self.max_ops
            )));
        }
        self.ops_left -= 1;
        if let Some(scope) = self.scope.get() {
            return Ok(scope.clone());
        }
        let stores = self
            .stores
            .as_ref()
            .ok_or_else(|| CacheError::Io("this host has no cache directory".into()))?;
        let limits = cf_cache::StoreLimits {
            max_bytes: self
                .permissions
                .cache_quota_bytes()
                .unwrap_or(stores.limits().max_bytes),
            ..stores.limits().clone()
        };
        let opened = match &self.component {
            // 128 bits of the digest name the directory.
            Some(digest) => stores.qualified_scope(&self.agent, &digest[..32], limits),
            None => stores.scope_with_limits(&self.agent, limits),
        };
        let scope = Arc::new(opened.map_err(|e| CacheError::Io(e.to_string()))?);
        Ok(self.scope.get_or_init(|| scope).clone())
    }
}

fn to_wit(e: StoreError) -> CacheError {
    match e {
        StoreError::InvalidKey(m) => CacheError::InvalidKey(m),
        StoreError::QuotaExceeded(m) => CacheError::QuotaExceeded(m),
        StoreError::TooLarge(m) => CacheError::TooLarge(m),
        StoreError::Io(m) => CacheError::Io(m),
        other => CacheError::Io(other.to_string()),
    }
}

impl CacheCtx {
    /// Runs `op` on the agent's store, on the blocking pool: it is file I/O under a
    /// lock that another process may hold, which must not stall an async worker (and
    /// every run scheduled on it).
    async fn on_store<T: Send + 'static>(
        &mut self,
        op: impl FnOnce(&AgentStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, CacheError> {
        let scope = self.scope()?;
        match tokio::task::spawn_blocking(move || op(&scope)).await {
            Ok(result) => result.map_err(to_wit),
            Err(e) => Err(CacheError::Io(format!("the store operation failed: {e}"))),
        }
    }
}

impl Host for CacheCtx {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, CacheError>> {
        Ok(self.on_store(move |s| s.get(&key)).await)
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<(), CacheError>> {
        let ttl = ttl_seconds.map(|s| Duration::from_secs(u64::from(s)));
        Ok(self.on_store(move |s| s.set(&key, &value, ttl)).await)
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, CacheError>> {
        Ok(self.on_store(move |s| s.delete(&key)).await)
    }
}
