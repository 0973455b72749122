//! The wasmtime engine of a host: its configuration and the epoch ticker.

use crate::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the granularity of deadlines and of yields to the
/// async executor while a guest computes.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Default number of guest instances that may exist at once (the pooling
/// allocator's slots); runs beyond it wait for a slot. Close to the model-call
/// concurrency a busy host uses: fresh slots fault their memory in, reused ones do
/// not (the measurement is in docs/benchmarks.md, "What moved the figures").
pub const DEFAULT_MAX_INSTANCES: u32 = 256;

/// The engine: component model, async, epoch interruption, pooling allocator with
/// slots sized to the memory cap.
pub(crate) fn new_engine(memory_bytes: u64, max_instances: u32) -> Result<Engine, Error> {
    // The host lets at most `max_instances` stores live at once (a semaphore in the
    // runtime); the pool has a quarter more slots. At full load (100,000 items at 500
    // in flight against 256 instances) 1 or 2 runs per batch failed at instantiation
    // with "maximum concurrent limit of 256 for memory stripe 0 reached" (or "for
    // fibers") while the pool's metrics, read at that moment, counted 244–255 live
    // memories and stacks and the semaphore had permits to spare. The cause is not
    // understood: every store is dropped before its permit is released. With the
    // headroom, 300,000 items at that load ran without a failure. It costs address
    // space only: slots are reserved, not touched.
    let slots = max_instances.saturating_add((max_instances / 4).max(4));
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        // A Rust guest has one memory and a few core instances and tables.
        .total_memories(slots)
        .total_tables(slots * 4)
        .total_core_instances(slots * 8)
        .max_memories_per_component(2)
        .max_tables_per_component(8)
        .max_memory_size(usize::try_from(memory_bytes).unwrap_or(usize::MAX))
        // Keep the first pages of each slot mapped: a fresh instance reuses them.
        .linear_memory_keep_resident(64 * 1024)
        // Reset only the pages a guest dirtied (Linux 6.7+ PAGEMAP_SCAN; off where the
        // kernel lacks it) instead of `madvise` over the slot, whose TLB shootdowns
        // interrupt every core (docs/benchmarks.md, "What moved the figures").
        .pagemap_scan(wasmtime::Enabled::Auto)
        .table_keep_resident(16 * 1024)
        .total_stacks(slots);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        // Copy data segments at instantiation instead of mapping the image copy-on-write:
        // with many short-lived instances, CoW faults flush TLBs across cores
        // (docs/benchmarks.md, "What moved the figures").
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
