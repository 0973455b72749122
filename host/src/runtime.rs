//! [`Runtime`]: what every agent loaded into one host shares — the engine, the linker,
//! the LLM service, the agents' stores, compiled components, limits and grants. Its
//! fields are private; agents and batches reach them through methods.

use crate::limits::Limits;
use crate::permissions::Grant;
use crate::sandbox::{CompiledComponents, EpochTicker, RunState};
use cf_cache::AgentStores;
use cf_llm::LlmService;
use std::collections::HashMap;
use tokio::sync::Semaphore;
use wasmtime::Engine;
use wasmtime::component::Linker;

/// The shared core of a [`Host`](crate::Host).
pub(crate) struct Runtime {
    engine: Engine,
    linker: Linker<RunState>,
    llm: LlmService,
    stores: Option<AgentStores>,
    compiled: CompiledComponents,
    policy: Policy,
    /// One permit per pooling-allocator slot: a run holds one while its instance lives.
    instance_slots: Semaphore,
    _ticker: EpochTicker,
}

/// The operator's settings a runtime applies to every agent and run.
#[derive(Debug)]
pub(crate) struct Policy {
    pub limits: Limits,
    pub default_model: String,
    pub default_max_tokens: u32,
    pub max_instances: u32,
    /// Grants by plugin name.
    pub grants: HashMap<String, Grant>,
    /// Whether plugins without a grant get what they declare.
    pub trust_declared: bool,
}

/// The parts a [`HostBuilder`](crate::HostBuilder) assembles.
pub(crate) struct Parts {
    pub engine: Engine,
    pub ticker: EpochTicker,
    pub linker: Linker<RunState>,
    pub llm: LlmService,
    pub stores: Option<AgentStores>,
    pub compiled: CompiledComponents,
}

impl Runtime {
    pub(crate) fn new(parts: Parts, policy: Policy) -> Self {
        Self {
            instance_slots: Semaphore::new(policy.max_instances as usize),
            engine: parts.engine,
            linker: parts.linker,
            llm: parts.llm,
            stores: parts.stores,
            compiled: parts.compiled,
            policy,
            _ticker: parts.ticker,
        }
    }

    /// The wasmtime engine.
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The linker granting the capabilities.
    pub(crate) fn linker(&self) -> &Linker<RunState> {
        &self.linker
    }

    /// The LLM service every model call goes through.
    pub(crate) fn llm(&self) -> &LlmService {
        &self.llm
    }

    /// The agents' stores, when the host has a data directory.
    pub(crate) fn stores(&self) -> Option<&AgentStores> {
        self.stores.as_ref()
    }

    /// Compiled components kept on disk.
    pub(crate) fn compiled(&self) -> &CompiledComponents {
        &self.compiled
    }

    /// The limits of every run and load.
    pub(crate) fn limits(&self) -> &Limits {
        &self.policy.limits
    }

    /// The model when nobody names one.
    pub(crate) fn default_model(&self) -> &str {
        &self.policy.default_model
    }

    /// `max_tokens` when nobody sets it.
    pub(crate) fn default_max_tokens(&self) -> u32 {
        self.policy.default_max_tokens
    }

    /// The pooling allocator's slots, one permit each.
    pub(crate) fn instance_slots(&self) -> &Semaphore {
        &self.instance_slots
    }

    /// The operator's grant for `plugin`, if any.
    pub(crate) fn grant(&self, plugin: &str) -> Option<&Grant> {
        self.policy.grants.get(plugin)
    }

    /// Whether plugins without a grant get what they declare.
    pub(crate) fn trust_declared(&self) -> bool {
        self.policy.trust_declared
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("provider", &self.llm.provider_name())
            .field("limits", &self.policy.limits)
            .finish_non_exhaustive()
    }
}
