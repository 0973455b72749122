//! The store of one run: the data it keeps (an empty WASI context and one context per
//! capability), the limiter that caps its memory, and the epoch deadline that stops a
//! computing guest.

use super::wasi::{Stdio, empty_ctx};
use crate::capabilities::{llm::LlmCtx, log::LogCtx, output::OutputCtx, store::StoreCtx};
use tokio::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The data of a run's store.
pub(crate) struct RunState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: RunLimiter,
    stdio: Stdio,
    pub(crate) llm: LlmCtx,
    pub(crate) store: StoreCtx,
    pub(crate) log: LogCtx,
    pub(crate) output: OutputCtx,
}

impl std::fmt::Debug for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunState")
            .field("agent", &self.log.agent())
            .finish_non_exhaustive()
    }
}

impl RunState {
    /// A run's data: the capabilities' contexts, `memory_bytes` of linear memory,
    /// `stdio_bytes` of each captured stream.
    pub(crate) fn new(
        llm: LlmCtx,
        store: StoreCtx,
        log: LogCtx,
        output: OutputCtx,
        memory_bytes: u64,
        stdio_bytes: usize,
    ) -> Self {
        let stdio = Stdio::new(stdio_bytes);
        Self {
            wasi: empty_ctx(&stdio),
            table: ResourceTable::new(),
            limiter: RunLimiter::new(memory_bytes),
            stdio,
            llm,
            store,
            log,
            output,
        }
    }

    /// Writes what the guest printed, and how many log records were dropped, to the log.
    pub(crate) fn flush_stdio(&self) {
        self.stdio.flush_to_log(self.log.agent());
        let (_, dropped) = self.output.counts();
        if dropped > 0 {
            tracing::warn!(target: "cf_host::guest", agent_id = %self.log.agent_id(), dropped, "output emitted past the run's output cap was dropped");
        }
        if self.log.dropped() > 0 {
            tracing::warn!(target: "cf_host::guest", agent_id = %self.log.agent_id(), dropped = self.log.dropped(), "log records over the run's limit were dropped");
        }
    }

    /// The memory cap, if the guest hit it.
    pub(crate) fn memory_limit_hit(&self) -> Option<u64> {
        self.limiter.hit.then_some(self.limiter.memory_bytes)
    }
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A store for `state` whose guest code is interrupted once `deadline` passes, and
/// yields to the executor at every epoch tick before that so that a computing guest
/// shares its thread.
pub(crate) fn new_store(engine: &Engine, state: RunState, deadline: Instant) -> Store<RunState> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    let wall_deadline = deadline.into_std();
    store.epoch_deadline_callback(move |_| {
        if std::time::Instant::now() >= wall_deadline {
            Ok(wasmtime::UpdateDeadline::Interrupt)
        } else {
            Ok(wasmtime::UpdateDeadline::Yield(1))
        }
    });
    store.set_epoch_deadline(1);
    store
}

/// wasmtime's [`StoreLimits`] (trap when memory would grow past the cap) that also
/// remembers that the cap was hit, so the trap can be reported as a memory limit.
pub(crate) struct RunLimiter {
    inner: StoreLimits,
    memory_bytes: u64,
    hit: bool,
}

impl RunLimiter {
    fn new(memory_bytes: u64) -> Self {
        let inner = StoreLimitsBuilder::new()
            .memory_size(usize::try_from(memory_bytes).unwrap_or(usize::MAX))
            .trap_on_grow_failure(true)
            .build();
        Self {
            inner,
            memory_bytes,
            hit: false,
        }
    }
}

impl ResourceLimiter for RunLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let result = self.inner.memory_growing(current, desired, maximum);
        if !matches!(result, Ok(true)) {
            self.hit = true;
        }
        result
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }
}
