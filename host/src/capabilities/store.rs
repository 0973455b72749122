//! The agent's own key-value store: the `cache` interface of contract 0.1.0 and the
//! `store` interface of 0.2.0, a store no other agent reaches. Key validation,
//! hashing, quotas and expiry are `cf-cache`'s ([`AgentStore`]); this module opens the
//! agent's store on first use, counts operations against the run's limit and converts
//! errors to each version's WIT values.

use super::Caller;
use crate::bindings::v0_1::claude_force::agent::cache::{CacheError, Host};
use crate::bindings::v0_2::claude_force::agent::store as store_0_2;
use cf_cache::{AgentStore, AgentStores, StoreError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// An agent's store, opened on first use and shared by every run of the agent: opening
/// one scans its directory, which must not happen once per run.
pub(crate) type SharedStore = Arc<OnceLock<Arc<AgentStore>>>;

/// The store capability of one run.
#[derive(Debug)]
pub(crate) struct StoreCtx {
    stores: Option<AgentStores>,
    caller: Arc<Caller>,
    opened: SharedStore,
    /// Operations still allowed in this run.
    ops_left: u32,
    max_ops: u32,
}

impl StoreCtx {
    /// The store of `caller` among `stores` (none: the host keeps nothing on disk),
    /// opened into `opened` on first use; at most `max_ops` operations this run.
    pub(crate) fn new(
        stores: Option<AgentStores>,
        caller: Arc<Caller>,
        opened: SharedStore,
        max_ops: u32,
    ) -> Self {
        Self {
            stores,
            caller,
            opened,
            ops_left: max_ops,
            max_ops,
        }
    }

    /// The agent's store, opened on first use so that agents that never touch it pay
    /// nothing. Opening (the database, a one-time import) runs on the blocking pool.
    async fn store(&mut self) -> Result<Arc<AgentStore>, Failure> {
        // Not granted: `denied` in 0.2.0; 0.1.0 has no such case and says
        // `quota-exceeded` (its quota is zero).
        self.caller
            .permissions
            .store_allowed()
            .map_err(Failure::Denied)?;
        // A guest that hammers its store is refused before the disk is touched.
        if self.ops_left == 0 {
            return Err(Failure::Denied(format!(
                // 0.1.0's guests know the interface as `cache`.
                "this run reached its limit of {} cache operations",
                self.max_ops
            )));
        }
        self.ops_left -= 1;
        if let Some(store) = self.opened.get() {
            return Ok(store.clone());
        }
        let stores = self.stores.as_ref().ok_or_else(|| {
            Failure::Store(StoreError::Io("this host has no data directory".into()))
        })?;
        let limits = cf_cache::StoreLimits {
            max_bytes: self
                .caller
                .permissions
                .store_quota_bytes()
                .unwrap_or(stores.limits().max_bytes),
            ..stores.limits().clone()
        };
        let (stores, name) = (stores.clone(), self.caller.name.clone());
        // 128 bits of the digest name the directory.
        let qualifier = self.caller.component.as_ref().map(|d| d[..32].to_owned());
        let opened = tokio::task::spawn_blocking(move || {
            stores.shared_scope(&name, qualifier.as_deref(), limits)
        })
        .await
        .map_err(|e| Failure::Store(StoreError::Io(format!("opening the store failed: {e}"))))?;
        let store = opened.map_err(|e| Failure::Store(StoreError::Io(e.to_string())))?;
        Ok(self.opened.get_or_init(|| store).clone())
    }

    /// Runs `op` on the agent's store, on the blocking pool: it is file I/O under a
    /// lock that another process may hold, which must not stall an async worker (and
    /// every run scheduled on it).
    async fn on_store<T: Send + 'static>(
        &mut self,
        op: impl FnOnce(&AgentStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Failure> {
        let store = self.store().await?;
        match tokio::task::spawn_blocking(move || op(&store)).await {
            Ok(result) => result.map_err(Failure::Store),
            Err(e) => Err(Failure::Store(StoreError::Io(format!(
                "the store operation failed: {e}"
            )))),
        }
    }

    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, Failure> {
        self.on_store(move |s| s.get(&key)).await
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_seconds: Option<u32>,
    ) -> Result<(), Failure> {
        let ttl = ttl_seconds.map(|s| Duration::from_secs(u64::from(s)));
        self.on_store(move |s| s.set(&key, &value, ttl)).await
    }

    async fn delete(&mut self, key: String) -> Result<bool, Failure> {
        self.on_store(move |s| s.delete(&key)).await
    }
}

/// Why a store operation failed, before it becomes a contract version's error.
#[derive(Debug)]
enum Failure {
    /// Not granted, or past the run's operation limit.
    Denied(String),
    /// The store's own error.
    Store(StoreError),
}

impl Failure {
    fn into_0_1(self) -> CacheError {
        match self {
            Self::Denied(m) => CacheError::QuotaExceeded(m),
            Self::Store(StoreError::InvalidKey(m)) => CacheError::InvalidKey(m),
            Self::Store(StoreError::QuotaExceeded(m)) => CacheError::QuotaExceeded(m),
            Self::Store(StoreError::TooLarge(m)) => CacheError::TooLarge(m),
            Self::Store(StoreError::Io(m)) => CacheError::Io(m),
            Self::Store(other) => CacheError::Io(other.to_string()),
        }
    }

    fn into_0_2(self) -> store_0_2::StoreError {
        use store_0_2::StoreError as E;
        match self {
            Self::Denied(m) => E::Denied(m),
            Self::Store(StoreError::InvalidKey(m)) => E::InvalidKey(m),
            Self::Store(StoreError::QuotaExceeded(m)) => E::QuotaExceeded(m),
            Self::Store(StoreError::TooLarge(m)) => E::TooLarge(m),
            Self::Store(StoreError::Io(m)) => E::Io(m),
            Self::Store(other) => E::Io(other.to_string()),
        }
    }
}

impl Host for StoreCtx {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, CacheError>> {
        Ok(StoreCtx::get(self, key).await.map_err(Failure::into_0_1))
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<(), CacheError>> {
        Ok(StoreCtx::set(self, key, value, ttl_seconds)
            .await
            .map_err(Failure::into_0_1))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, CacheError>> {
        Ok(StoreCtx::delete(self, key).await.map_err(Failure::into_0_1))
    }
}

impl store_0_2::Host for StoreCtx {
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, store_0_2::StoreError>> {
        Ok(StoreCtx::get(self, key).await.map_err(Failure::into_0_2))
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<(), store_0_2::StoreError>> {
        Ok(StoreCtx::set(self, key, value, ttl_seconds)
            .await
            .map_err(Failure::into_0_2))
    }

    async fn delete(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<bool, store_0_2::StoreError>> {
        Ok(StoreCtx::delete(self, key).await.map_err(Failure::into_0_2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permissions::{Grant, Manifest, Permissions};

    fn ctx(stores: Option<AgentStores>, permissions: Permissions, max_ops: u32) -> StoreCtx {
        let caller = Caller::new("tester".into(), None, Arc::new(permissions));
        StoreCtx::new(stores, Arc::new(caller), SharedStore::default(), max_ops)
    }

    fn stores(dir: &std::path::Path) -> AgentStores {
        AgentStores::open(dir, cf_cache::StoreLimits::default()).expect("stores")
    }

    /// The generated `Host` methods, called as a guest would: a value set is read
    /// back, deleted once, then gone.
    #[tokio::test]
    async fn set_get_delete_through_the_generated_host_trait() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = ctx(
            Some(stores(dir.path())),
            Permissions::unrestricted("tester"),
            10,
        );
        Host::set(&mut s, "k".into(), b"v".to_vec(), None)
            .await
            .expect("no trap")
            .expect("set");
        let got = Host::get(&mut s, "k".into()).await.expect("no trap");
        assert_eq!(got.expect("get"), Some(b"v".to_vec()));
        let deleted = Host::delete(&mut s, "k".into()).await.expect("no trap");
        assert!(deleted.expect("delete"));
        let again = Host::delete(&mut s, "k".into()).await.expect("no trap");
        assert!(!again.expect("delete"));
        let bad = Host::get(&mut s, String::new()).await.expect("no trap");
        assert!(matches!(bad, Err(CacheError::InvalidKey(_))), "{bad:?}");
    }

    /// The run's operation limit: obeyed up to it, refused past it without the disk.
    #[tokio::test]
    async fn operations_past_the_runs_limit_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = ctx(
            Some(stores(dir.path())),
            Permissions::unrestricted("tester"),
            2,
        );
        for _ in 0..2 {
            let r = Host::get(&mut s, "k".into()).await.expect("no trap");
            assert_eq!(r.expect("within the limit"), None);
        }
        let r = Host::get(&mut s, "k".into()).await.expect("no trap");
        assert!(
            matches!(&r, Err(CacheError::QuotaExceeded(m)) if m.contains("limit of 2 cache operations")),
            "{r:?}"
        );
    }

    /// Contract 0.2.0 tells "not allowed" from "full": an ungranted store and the
    /// run's operation limit are `denied`, not `quota-exceeded`.
    #[tokio::test]
    async fn contract_0_2_says_denied() {
        use store_0_2::{Host as Host2, StoreError as E};
        let dir = tempfile::tempdir().expect("temp dir");
        let denied = Permissions::intersect("tester", &Manifest::default(), None, "00");
        let mut s = ctx(Some(stores(dir.path())), denied, 10);
        let r = Host2::set(&mut s, "k".into(), vec![1], None)
            .await
            .expect("no trap");
        assert!(
            matches!(&r, Err(E::Denied(m)) if m.contains("capability")),
            "{r:?}"
        );
        let mut s = ctx(
            Some(stores(dir.path())),
            Permissions::unrestricted("tester"),
            1,
        );
        let first = Host2::set(&mut s, "k".into(), vec![1], None)
            .await
            .expect("no trap");
        assert!(first.is_ok(), "{first:?}");
        let got = Host2::get(&mut s, "k".into()).await.expect("no trap");
        assert!(
            matches!(&got, Err(E::Denied(m)) if m.contains("limit of 1")),
            "{got:?}"
        );
    }

    /// A plugin with no store granted, and a host with no data directory.
    #[tokio::test]
    async fn ungranted_plugins_and_hosts_without_a_directory_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let denied = Permissions::intersect("tester", &Manifest::default(), None, "00");
        let mut s = ctx(Some(stores(dir.path())), denied, 10);
        let r = Host::set(&mut s, "k".into(), vec![1], None)
            .await
            .expect("no trap");
        assert!(
            matches!(&r, Err(CacheError::QuotaExceeded(m)) if m.contains("capability cache")),
            "{r:?}"
        );
        let granted = Permissions::granted(
            "tester",
            &Grant {
                store: true,
                ..Grant::default()
            },
        );
        let mut s = ctx(None, granted, 10);
        let r = Host::get(&mut s, "k".into()).await.expect("no trap");
        assert!(
            matches!(&r, Err(CacheError::Io(m)) if m.contains("no data directory")),
            "{r:?}"
        );
    }
}
