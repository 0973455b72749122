//! [`Agent`]: a loaded component, compiled once, with a fresh store for every run.
//! How it is loaded is [`load`]'s.

mod load;
mod plugin;

pub(crate) use load::{inspect, load, read_component};

use crate::capabilities::llm::{CallSettings, LlmCtx};
use crate::capabilities::{
    Caller, log::LogCtx, output::OutputCtx, store::SharedStore, store::StoreCtx,
};
use crate::error::Error;
use crate::events::{EventSink, RunHandle};
use crate::limits::{LIST_ITEM_BYTES, RunOptions};
use crate::outcome::{RunError, RunOutput, RunStats, Timings};
use crate::runtime::Runtime;
use crate::sandbox::{EPOCH_TICK, RunState, new_store, traps};
use cf_llm::Ledger;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::time::Instant;
use wasmtime::Store;

/// Where an agent comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A built-in agent, by name.
    Builtin(String),
    /// A component file.
    Path(PathBuf),
    /// A component in memory.
    Bytes(Vec<u8>),
}

impl From<&str> for Source {
    /// A name without `/` or `.wasm` is a built-in agent; anything else a path.
    fn from(s: &str) -> Self {
        if s.contains('/') || s.contains('\\') || s.ends_with(".wasm") {
            Self::Path(PathBuf::from(s))
        } else {
            Self::Builtin(s.to_owned())
        }
    }
}

impl From<PathBuf> for Source {
    fn from(p: PathBuf) -> Self {
        Self::Path(p)
    }
}

impl From<Vec<u8>> for Source {
    fn from(b: Vec<u8>) -> Self {
        Self::Bytes(b)
    }
}

/// One unit of work for an agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Task {
    /// The task in words.
    pub text: String,
    /// Key-value context.
    pub context: Vec<(String, String)>,
}

impl Task {
    /// A task with no context.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            context: Vec::new(),
        }
    }

    /// The task with one more context entry.
    pub fn with_context(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.context.push((key.into(), value.into()));
        self
    }
}

/// What an agent says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentInfo {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// What it does.
    pub description: String,
    /// The model it prefers; empty for the host's default.
    pub default_model: String,
    /// Tags.
    pub tags: Vec<String>,
    /// The contract version it targets.
    pub contract: String,
    /// SHA-256 of the component, hex.
    pub sha256: String,
}

/// A loaded agent. Cheap to clone; every run gets a fresh store.
#[derive(Debug, Clone)]
pub struct Agent {
    inner: Arc<AgentInner>,
}

struct AgentInner {
    runtime: Arc<Runtime>,
    pre: plugin::PluginPre,
    info: AgentInfo,
    /// Its name, digest and permissions, as its capabilities see them.
    caller: Arc<Caller>,
    /// Its store, opened on first use and shared by its runs.
    store: SharedStore,
}

impl std::fmt::Debug for AgentInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// What the agent said about itself when loaded.
    pub fn info(&self) -> &AgentInfo {
        &self.inner.info
    }

    /// The agent's name.
    pub fn name(&self) -> &str {
        &self.inner.info.name
    }

    /// Runs `task` with the host's settings.
    pub async fn run(&self, task: Task) -> Result<RunOutput, RunError> {
        self.run_with(task, &RunOptions::default()).await
    }

    /// Starts `task` with the operator's `options` on a task of its own, and returns
    /// a handle that yields the run's events as they happen (the text the agent
    /// emits, the tools its model asks for), then its result. `options.events`, if
    /// set, gets every event too. Dropping the handle cancels the run.
    pub fn start(&self, task: Task, mut options: RunOptions) -> RunHandle {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let also = options.events.take();
        options.events = Some(EventSink::new(move |event| {
            if let Some(also) = &also {
                also.send(event.clone());
            }
            let _ = tx.send(event);
        }));
        let agent = self.clone();
        let run = tokio::spawn(async move { agent.run_with(task, &options).await });
        RunHandle::new(rx, run)
    }

    /// Runs `task` with the operator's `options`.
    pub async fn run_with(&self, task: Task, options: &RunOptions) -> Result<RunOutput, RunError> {
        let ledger = Ledger::with_budget(options.budget);
        self.run_in(task, options, &ledger).await
    }

    /// Runs `task`, charging its model calls to `ledger` (a batch's account, for
    /// example). The run's own budget applies on top through a child ledger.
    pub async fn run_in(
        &self,
        task: Task,
        options: &RunOptions,
        parent: &Ledger,
    ) -> Result<RunOutput, RunError> {
        let started = Instant::now();
        let runtime = &self.inner.runtime;
        let limits = runtime.limits();
        let chars = task.text.chars().count();
        if chars > limits.max_task_chars {
            return Err(Error::TaskTooLarge {
                chars,
                max: limits.max_task_chars,
            }
            .into());
        }
        let limit = options.deadline.unwrap_or(limits.deadline);
        let deadline = started + limit;
        // A plugin's granted budget narrows the run's.
        let mut budget = options.budget;
        if let Some(granted) = self.inner.caller.permissions.budget_usd() {
            budget.usd = Some(budget.usd.map_or(granted, |b| b.min(granted)));
        }
        let ledger = parent.child(budget);
        let Ok(Ok(_slot)) =
            tokio::time::timeout_at(deadline, runtime.instance_slots().acquire()).await
        else {
            return Err(Error::Deadline { limit }.into());
        };
        let mut store = self.new_store(&ledger, options.clone(), deadline, limits.max_llm_calls);
        let mut timings = Timings::default();
        // The epoch stops a computing guest; this bounds everything else (host calls,
        // instantiation) by the same deadline plus one tick of slack.
        let outcome = tokio::time::timeout_at(
            deadline + EPOCH_TICK * 2,
            self.inner.pre.run(&mut store, task.text, task.context, || {
                timings.instantiate = started.elapsed();
            }),
        )
        .await;
        // Streams the guest left open end now, before the run's totals are read, so
        // that what they cost is in them.
        store.data_mut().llm.close_streams().await;
        let state = store.data();
        state.flush_stdio();
        timings.llm = state.llm.busy();
        timings.queue_wait = state.llm.queue_wait();
        timings.total = started.elapsed();
        let totals = ledger.totals();
        let stats = RunStats {
            usage: totals.usage,
            cost: totals.cost,
            saved_usd: totals.saved_usd,
            llm_calls: totals.calls,
            attempts: totals.attempts,
            cache_hits: totals.cache_hits,
            model: state.llm.last_model().map(str::to_owned),
            timings,
        };
        let result = match outcome {
            Err(_elapsed) => Err(Error::Deadline { limit }),
            Ok(Err(trap)) => Err(traps::classify(&trap, state, limit)),
            Ok(Ok(Err(agent_error))) => Err(agent_error),
            Ok(Ok(Ok((text, metadata)))) => {
                let bytes = text.len()
                    + metadata
                        .iter()
                        .map(|(k, v)| k.len() + v.len() + LIST_ITEM_BYTES)
                        .sum::<usize>();
                if bytes > limits.max_output_bytes {
                    Err(Error::OutputTooLarge {
                        bytes,
                        max: limits.max_output_bytes,
                    })
                } else {
                    Ok(RunOutput {
                        agent: self.inner.info.name.clone(),
                        text,
                        metadata,
                        stats: stats.clone(),
                    })
                }
            }
        };
        drop(store);
        result.map_err(|error| {
            tracing::debug!(agent = %self.inner.info.name, kind = error.kind(), "run failed");
            RunError { error, stats }
        })
    }

    /// A store for one run (or `describe()`, with `max_calls` 0) of this agent.
    fn new_store(
        &self,
        ledger: &Ledger,
        options: RunOptions,
        deadline: Instant,
        max_calls: u32,
    ) -> Store<RunState> {
        let runtime = &self.inner.runtime;
        let limits = runtime.limits();
        let caller = &self.inner.caller;
        let settings_events = options.events.clone();
        let settings = CallSettings {
            options,
            agent_model: self.inner.info.default_model.clone(),
            host_model: runtime.default_model().to_owned(),
            default_max_tokens: runtime.default_max_tokens(),
            max_request_bytes: limits.max_request_bytes,
            max_image_bytes: limits.max_image_bytes,
            max_media_bytes: limits.max_media_bytes,
            max_tools: limits.max_tools,
            max_calls,
        };
        let llm = LlmCtx::new(
            runtime.llm().clone(),
            caller.clone(),
            ledger.clone(),
            deadline,
            settings,
        );
        let store = StoreCtx::new(
            runtime.stores().cloned(),
            caller.clone(),
            self.inner.store.clone(),
            limits.max_store_ops,
        );
        let log = LogCtx::new(caller.clone(), limits.max_log_records, limits.max_log_bytes);
        let output = OutputCtx::new(limits.max_output_bytes, settings_events);
        let state = RunState::new(
            llm,
            store,
            log,
            output,
            limits.memory_bytes,
            limits.max_stdio_bytes,
        );
        new_store(runtime.engine(), state, deadline)
    }
}
