//! The wasmtime engine of a host: configuration, the epoch ticker, and compiled
//! components kept on disk.

use crate::error::Error;
use cf_cache::{Compiled, CompiledStore};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the granularity of deadlines and of yields to the
/// async executor while a guest computes.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Default number of guest instances that may exist at once (the pooling
/// allocator's slots); runs beyond it wait for a slot. Measured: with 2000 runs in
/// flight, 250 slots cost 160 µs of host CPU per run against 280 µs with 1000 slots
/// (fresh slots fault their memory in; reused ones do not), so the default stays
/// close to the LLM concurrency a busy host uses.
pub const DEFAULT_MAX_INSTANCES: u32 = 256;

/// The engine: component model, async, epoch interruption, pooling allocator with
/// slots sized to the memory cap.
pub(crate) fn new_engine(memory_bytes: u64, max_instances: u32) -> Result<Engine, Error> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(max_instances)
        // A Rust guest has one memory and a few core instances and tables.
        .total_memories(max_instances)
        .total_tables(max_instances * 4)
        .total_core_instances(max_instances * 8)
        .max_memories_per_component(2)
        .max_tables_per_component(8)
        .max_memory_size(usize::try_from(memory_bytes).unwrap_or(usize::MAX))
        // Keep the first pages of each slot mapped: a fresh instance reuses them.
        .linear_memory_keep_resident(64 * 1024)
        // Reset only the pages a guest dirtied (Linux 6.7+ PAGEMAP_SCAN; off where the
        // kernel lacks it) instead of `madvise` over the slot, whose TLB shootdowns
        // interrupt every core. Measured with 2000 runs in flight: 150 → 80-95 µs of
        // host CPU per run without HTTP, 225-250 → 170-190 µs with it.
        .pagemap_scan(wasmtime::Enabled::Auto)
        .table_keep_resident(16 * 1024)
        .total_stacks(max_instances);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        // Copy data segments at instantiation instead of mapping the image copy-on-write:
        // with many short-lived instances, CoW faults flush TLBs across cores (measured:
        // 175 → 140 µs of host CPU per run with 2000 runs in flight).
        .memory_init_cow(false)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).map_err(|e| Error::Setup(format!("creating the wasmtime engine: {e}")))
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a thread of its own until
/// dropped.
#[derive(Debug)]
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    pub(crate) fn start(engine: &Engine) -> Result<Self, Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let (engine, flag) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("cf-host-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| Error::Setup(format!("starting the epoch thread: {e}")))?;
        Ok(Self { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Compiled components on disk, keyed by the wasm's SHA-256 and the engine's
/// compatibility hash, so that a second `cf-host run` does not recompile. Each file is
/// authenticated ([`cf_cache::CompiledStore`]) before it is deserialized: it is native
/// code, and a file planted there would otherwise run as the user.
#[derive(Debug)]
pub(crate) struct CompiledCache {
    store: Option<CompiledStore>,
    engine_key: String,
}

impl CompiledCache {
    /// Keeps compiled components in `dir` (created private; refused if someone else
    /// owns it or may write it), or nowhere.
    pub(crate) fn open(engine: &Engine, dir: Option<&Path>) -> Result<Self, Error> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let store = dir
            .map(|d| {
                CompiledStore::open(d)
                    .map_err(|e| Error::from_storage("opening the compiled-component directory", e))
            })
            .transpose()?;
        Ok(Self {
            store,
            engine_key: format!("{:016x}", hasher.finish()),
        })
    }

    /// The component for `wasm`: from disk when compiled before and intact, else
    /// compiled now and kept.
    pub(crate) fn load(
        &self,
        engine: &Engine,
        wasm: &[u8],
        sha256: &str,
    ) -> Result<Component, Error> {
        let name = format!("{sha256}-{}.cwasm", self.engine_key);
        if let Some(store) = &self.store {
            // Compiled code is a few times larger than the wasm; anything far larger is
            // not ours, and is not read into memory.
            let bound = (wasm.len() as u64).saturating_mul(16).max(64 * 1024 * 1024);
            match store.get(&name, bound) {
                Ok(Compiled::Valid(bytes)) => match deserialize(engine, &bytes) {
                    Ok(c) => return Ok(c),
                    Err(e) => {
                        tracing::warn!(file = %name, error = %e, "recompiling: the compiled component is unusable")
                    }
                },
                Ok(Compiled::Rejected(why)) => {
                    tracing::warn!(dir = %store.path().display(), file = %name, why = %why, "recompiling: refusing a compiled component this host did not write")
                }
                Ok(Compiled::Missing) => {}
                Err(e) => {
                    tracing::warn!(file = %name, error = %e, "recompiling: the compiled component could not be read")
                }
            }
        }
        let component = Component::new(engine, wasm).map_err(|e| Error::InvalidComponent {
            detail: format!("{e:#}"),
        })?;
        if let Some(store) = &self.store {
            let kept = component
                .serialize()
                .map_err(|e| e.to_string())
                .and_then(|bytes| store.put(&name, &bytes).map_err(|e| e.to_string()));
            if let Err(e) = kept {
                tracing::warn!(file = %name, error = %e, "could not keep the compiled component");
            }
        }
        Ok(component)
    }
}

#[expect(
    unsafe_code,
    reason = "wasmtime requires unsafe to load precompiled native code"
)]
fn deserialize(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `bytes` passed `CompiledStore::get`'s HMAC check under this user's private
    // key, bound to the file's name (the component's digest and this engine's
    // compatibility hash): they are what `CompiledCache::load` serialized earlier. They
    // are a copy in memory, not a mapping another process could truncate (SIGBUS).
    // wasmtime checks the header and the engine configuration again before using them.
    unsafe { Component::deserialize(engine, bytes) }
}

/// SHA-256 of `bytes`, lowercase hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
