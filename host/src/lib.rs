//! `cf-host`: a host for sandboxed LLM agent plugins.
//!
//! Agents are WebAssembly components built against the `claude-force:agent` WIT
//! contract (`wit/`). The host grants them exactly three capabilities — model calls
//! (`llm`), a private key-value store (the agent's store: the 0.1.0 contract's `cache`
//! interface) and logging (`log`) — and nothing else: no files, no network, no
//! environment, never the API key.
//!
//! ```no_run
//! use cf_host::{Host, Task};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // The offline provider, default limits, nothing kept on disk.
//! let host = Host::builder().build()?;
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
//!
//! # Layout
//!
//! - [`Host`] and [`HostBuilder`] (`host.rs`) over the shared runtime (`runtime.rs`);
//! - the sandbox (`sandbox/`): engine configuration, a run's store and limiter, the
//!   epoch deadline, trap classification, the empty WASI context, compiled
//!   components kept on disk, and the linker;
//! - one module per WIT interface (`capabilities/`): `llm`, `store`, `log`;
//! - agents (`agent/`): loading in named steps, and runs; [`permissions`]: what a
//!   plugin declares and the operator grants;
//! - batches (`batch.rs`), limits and options (`limits.rs`), outcomes (`outcome.rs`).
//!
//! Front ends (the `cf-host` CLI, later a server) live in other crates: `cf-front`
//! (configuration, rendering, the run log) and `cf-host-cli`.
//!
//! # Cargo features
//!
//! - `builtin-agents` (off by default): the shipped agents (`python-expert`,
//!   `code-reviewer`, `bug-investigator`), compiled to WebAssembly when this crate is
//!   built and loadable by name. Without it, [`Source::Builtin`] names nothing and
//!   embedders do not build the guests.
#![deny(missing_docs)]

mod agent;
mod batch;
mod bindings;
mod builtin;
mod capabilities;
mod contract;
mod digest;
mod error;
mod events;
mod host;
mod limits;
mod outcome;
pub mod permissions;
mod runtime;
mod sandbox;

pub use agent::{Agent, AgentInfo, Source, Task};
pub use batch::{BatchCanceller, BatchItem, BatchOptions, BatchResult, BatchRun};
pub use bindings::SUPPORTED_CONTRACTS;
pub use builtin::names as builtin_agents;
pub use contract::ComponentInterface;
pub use digest::short_digest;
pub use error::{Error, validate_agent_name};
pub use events::{BatchEventSink, EventSink, RunEvent, RunHandle};
pub use host::{Host, HostBuilder};
pub use limits::{
    DEFAULT_MAX_TOKENS, DEFAULT_MODEL, LIST_ITEM_BYTES, Limits, RunOptions, default_data_dir,
};
pub use outcome::{RunError, RunOutput, RunStats, Timings};
pub use sandbox::engine::DEFAULT_MAX_INSTANCES;

/// The types of the host's public API that come from its engine crates.
pub use cf_cache::{CacheConfig, StoreLimits};
pub use cf_llm::{
    Budget, BudgetRule, Cost, Ledger, LedgerTotals, LlmService, PriceTable, Provider, Usage,
};

/// The engine behind the `llm` capability, re-exported for embedders.
pub use cf_llm as llm;

/// The response cache and the agents' stores, re-exported for embedders.
pub use cf_cache as storage;

/// SHA-256 of a component's bytes, lowercase hex: the digest `load_pinned` and
/// `--sha256` compare against.
pub fn component_sha256(wasm: &[u8]) -> String {
    digest::sha256_hex(wasm)
}
