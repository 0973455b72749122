//! `cf-host`: a host for sandboxed LLM agent plugins.
//!
//! Agents are WebAssembly components built against the `claude-force:agent` WIT
//! contract (`wit/`). The host grants them exactly three capabilities — model calls
//! (`llm`), a private key-value store (`cache`) and logging (`log`) — and nothing
//! else: no files, no network, no environment, never the API key.
//!
//! ```no_run
//! use cf_host::{Host, Task};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let host = Host::builder().build()?;             // offline provider, default limits
//! let agent = host.load("python-expert").await?;   // or a path to a .wasm component
//! let out = agent.run(Task::new("How do I read a CSV file?")).await?;
//! println!("{}", out.text);
//! println!("{} tokens, ${:.6}, {} attempts", out.stats.usage.total(), out.stats.cost.usd, out.stats.attempts);
//! # Ok(()) }
//! ```
//!
//! Every run gets a fresh store with a memory cap, a deadline enforced by epoch
//! interruption (for guest code) and by timeouts (for host calls), and caps on the
//! sizes of what crosses the boundary. A guest that traps, loops or exhausts its
//! memory fails its own run with a typed [`Error`]; the host keeps serving.
#![deny(missing_docs)]

mod agent;
mod batch;
mod bindings;
mod capabilities;
mod config;
mod contract;
mod engine;
mod error;
mod host;
mod load;
pub mod metrics;
pub mod permissions;
mod run;
pub mod summary;
pub mod tasks;

pub use agent::{Agent, AgentInfo, Source, Task};
pub use batch::{BatchCanceller, BatchItem, BatchOptions, BatchResult, BatchRun};
pub use bindings::SUPPORTED_CONTRACTS;
pub use config::{
    DEFAULT_MAX_TOKENS, DEFAULT_MODEL, LIST_ITEM_BYTES, Limits, RunOptions, default_cache_dir,
};
pub use contract::ComponentInterface;
pub use engine::DEFAULT_MAX_INSTANCES;
pub use error::{Error, validate_agent_name};
pub use host::{Host, HostBuilder};
pub use run::{RunError, RunOutput, RunStats, Timings};

/// SHA-256 of a component's bytes, lowercase hex: the digest `load_pinned` and
/// `--sha256` compare against.
pub fn component_sha256(wasm: &[u8]) -> String {
    engine::sha256_hex(wasm)
}

/// The engine behind the `llm` capability, re-exported for embedders.
pub use cf_llm as llm;

impl Host {
    /// Describes a component without running it: its contract version, imports and
    /// exports, and whether this host can run it.
    pub async fn inspect(&self, wasm: Vec<u8>) -> Result<ComponentInterface, Error> {
        load::check_size(&self.inner, &wasm)?;
        let sha = engine::sha256_hex(&wasm);
        let (_component, interface) =
            load::within_deadline(&self.inner, load::compile(&self.inner, wasm, sha)).await?;
        Ok(interface)
    }

    /// Reads a component file for [`inspect`](Self::inspect) or
    /// [`load`](Self::load): a regular file of at most
    /// [`Limits::max_component_bytes`] (a device or a FIFO is refused, not read).
    pub async fn read_component(
        &self,
        path: impl Into<std::path::PathBuf>,
    ) -> Result<Vec<u8>, Error> {
        load::read_regular(path.into(), self.inner.limits().max_component_bytes).await
    }
}
