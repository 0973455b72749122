//! What one run keeps in its store, the limiter that caps its memory, and the types a
//! run returns.

use crate::capabilities::{cache::CacheCtx, llm::LlmCtx, log::LogCtx, stdio::Capture};
use crate::error::Error;
use cf_llm::{Cost, Usage};
use serde::Serialize;
use std::time::Duration;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// The data of a run's store: an empty WASI context and one context per capability.
pub(crate) struct RunState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: RunLimiter,
    pub llm: LlmCtx,
    pub cache: CacheCtx,
    pub log: LogCtx,
    pub stdout: Capture,
    pub stderr: Capture,
}

impl std::fmt::Debug for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunState")
            .field("agent", &self.log.agent)
            .finish_non_exhaustive()
    }
}

impl RunState {
    pub(crate) fn new(
        llm: LlmCtx,
        cache: CacheCtx,
        log: LogCtx,
        memory_bytes: u64,
        stdio_bytes: usize,
    ) -> Self {
        let stdout = Capture::new(stdio_bytes);
        let stderr = Capture::new(stdio_bytes);
        // Nothing is granted: no arguments, no environment, no preopened directories,
        // no sockets (the default socket check denies every address), no stdin.
        // Only stdout and stderr exist, captured for the log.
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: RunLimiter::new(memory_bytes),
            llm,
            cache,
            log,
            stdout,
            stderr,
        }
    }

    /// Writes what the guest printed to the log, under its name.
    pub(crate) fn flush_stdio(&self) {
        for (stream, capture) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let (text, dropped) = capture.take();
            if !text.is_empty() {
                tracing::debug!(target: "cf_host::guest", agent = %self.log.agent, stream, dropped, "{}", text.trim_end());
            }
        }
        if self.log.dropped > 0 {
            tracing::warn!(target: "cf_host::guest", agent_id = %self.log.agent_id, dropped = self.log.dropped, "log records over the run's limit were dropped");
        }
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

/// wasmtime's [`StoreLimits`] (trap when memory would grow past the cap) that also
/// remembers that the cap was hit, so the trap can be reported as a memory limit.
pub(crate) struct RunLimiter {
    inner: StoreLimits,
    pub memory_bytes: u64,
    pub hit: bool,
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

/// The guest's trap, named: the deadline, the memory cap, or a fault of its own.
pub(crate) fn classify_trap(err: &wasmtime::Error, state: &RunState, deadline: Duration) -> Error {
    if state.limiter.hit {
        return Error::MemoryLimit {
            limit_bytes: state.limiter.memory_bytes,
        };
    }
    let message = match err.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => return Error::Deadline { limit: deadline },
        Some(trap) => trap.to_string(),
        None => err.to_string(),
    };
    // The full backtrace (thousands of frames for a stack overflow) goes to the
    // debug log; the error keeps the trap itself.
    tracing::debug!(agent = %state.log.agent, "guest trap: {err:?}");
    Error::Trap {
        message: crate::capabilities::log::truncate(&message, 2000).to_owned(),
    }
}

/// Time spent in the phases of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Timings {
    /// From the call to `run` to its result.
    #[serde(serialize_with = "ms")]
    pub total: Duration,
    /// Creating the store and instantiating the component.
    #[serde(serialize_with = "ms")]
    pub instantiate: Duration,
    /// Inside model calls (waiting for permits, attempts, backoff).
    #[serde(serialize_with = "ms")]
    pub llm: Duration,
    /// Waiting for a permit of the global concurrency limit.
    #[serde(serialize_with = "ms")]
    pub queue_wait: Duration,
}

fn ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// What a run used, whether it succeeded or not.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunStats {
    /// Tokens of every model call.
    pub usage: Usage,
    /// What the calls cost.
    pub cost: Cost,
    /// What cached answers saved, in US dollars.
    pub saved_usd: f64,
    /// Model calls answered.
    pub llm_calls: u32,
    /// Attempts sent to the provider, retries included.
    pub attempts: u32,
    /// Calls answered from the response cache.
    pub cache_hits: u32,
    /// The model of the last answer.
    pub model: Option<String>,
    /// Where the time went.
    pub timings: Timings,
}

/// A successful run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunOutput {
    /// The agent that ran.
    pub agent: String,
    /// Its answer.
    pub text: String,
    /// Structured facts about the answer.
    pub metadata: Vec<(String, String)>,
    /// What the run used.
    pub stats: RunStats,
}

/// A failed run: why, and what it used before it failed.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct RunError {
    /// Why it failed.
    #[source]
    pub error: Error,
    /// What it used.
    pub stats: RunStats,
}

impl From<Error> for RunError {
    fn from(error: Error) -> Self {
        Self {
            error,
            stats: RunStats::default(),
        }
    }
}
