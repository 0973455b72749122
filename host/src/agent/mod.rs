//! [`Agent`]: a loaded component, compiled once, with a fresh store for every run.

use crate::bindings::v0_1::{AgentPlugin, AgentPluginPre, agent as wit};
use crate::capabilities::{cache::CacheCtx, llm::LlmCtx, llm::error_from_wit, log::LogCtx};
use crate::config::{LIST_ITEM_BYTES, RunOptions};
use crate::engine::sha256_hex;
use crate::error::{Error, validate_agent_name};
use crate::host::HostInner;
use crate::load;
use crate::permissions::{Grant, Manifest, Permissions};
use crate::run::{RunError, RunOutput, RunState, RunStats, Timings, classify_trap};
use cf_llm::Ledger;
use serde::Serialize;
use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use wasmtime::Store;
use wasmtime::component::Component;

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
    host: Arc<HostInner>,
    pre: AgentPluginPre<RunState>,
    info: AgentInfo,
    scope: crate::capabilities::cache::SharedScope,
    /// A plugin's component digest, which keys its cached answers apart from another
    /// plugin's of the same name; `None` for a shipped agent.
    component: Option<Arc<str>>,
    permissions: Arc<Permissions>,
    /// The plugin's share of the model-call concurrency, when limited.
    llm_share: Option<Arc<tokio::sync::Semaphore>>,
    /// How its log records name it at info level and above (a hash of its name).
    log_id: String,
}

impl std::fmt::Debug for AgentInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Refuses a component whose digest is not `expected`, when a digest is expected.
fn check_digest(expected: Option<&str>, actual: &str) -> Result<(), Error> {
    match expected {
        Some(e) if !e.eq_ignore_ascii_case(actual) => Err(Error::DigestMismatch {
            expected: e.to_ascii_lowercase(),
            actual: actual.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// The digest the operator's grant for `plugin` is pinned to, if any.
fn grant_pin<'a>(host: &'a HostInner, plugin: &str) -> Option<&'a str> {
    host.grants.get(plugin).and_then(|g| g.sha256.as_deref())
}

/// The deadline of `describe()`, which may not call anything.
const DESCRIBE_DEADLINE: Duration = Duration::from_secs(5);

/// A component found and read, before it is compiled.
struct Found {
    wasm: Cow<'static, [u8]>,
    sha256: String,
    /// What a third-party plugin declares; `None` for a shipped agent (the operator's
    /// own).
    declared: Option<Manifest>,
    /// The name it should report, known before compiling it (a shipped agent's name,
    /// a manifest's `name`, a file's stem).
    expected_name: Option<String>,
}

impl Found {
    /// Reads `source`: a shipped agent, a bounded regular file with its sidecar
    /// manifest, or bytes (which declare nothing unless `manifest` is given).
    async fn read(
        host: &HostInner,
        source: Source,
        manifest: Option<Manifest>,
    ) -> Result<Self, Error> {
        match source {
            Source::Builtin(name) => {
                validate_agent_name(&name)?;
                let b = cf_builtin::find(&name).ok_or_else(|| Error::UnknownAgent {
                    name: name.clone(),
                    known: cf_builtin::AGENTS
                        .iter()
                        .map(|a| a.name)
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
                Ok(Self {
                    wasm: Cow::Borrowed(b.wasm),
                    sha256: b.sha256.to_owned(),
                    declared: None,
                    expected_name: Some(name),
                })
            }
            Source::Path(path) => {
                let declared = match manifest {
                    Some(m) => m,
                    None => match load::read_sidecar(&path).await? {
                        Some((sidecar, text)) => {
                            Manifest::parse(&text).map_err(|reason| Error::InvalidManifest {
                                path: sidecar,
                                reason,
                            })?
                        }
                        None => Manifest::default(),
                    },
                };
                let stem = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned);
                let bytes = load::read_regular(path, host.limits().max_component_bytes).await?;
                Ok(Self::plugin(Cow::Owned(bytes), declared, stem))
            }
            Source::Bytes(bytes) => {
                load::check_size(host, &bytes)?;
                Ok(Self::plugin(
                    Cow::Owned(bytes),
                    manifest.unwrap_or_default(),
                    None,
                ))
            }
        }
    }

    fn plugin(wasm: Cow<'static, [u8]>, declared: Manifest, stem: Option<String>) -> Self {
        let expected_name = declared.name.clone().or(stem);
        Self {
            sha256: sha256_hex(&wasm),
            wasm,
            declared: Some(declared),
            expected_name,
        }
    }

    /// Refuses the component before anything is compiled if its digest is not the
    /// caller's pin, or not the pin of a grant for the name it is expected to have.
    fn check_pins(&self, host: &HostInner, pinned: Option<&str>) -> Result<(), Error> {
        check_digest(pinned, &self.sha256)?;
        let grant = self
            .expected_name
            .as_deref()
            .and_then(|n| grant_pin(host, n));
        check_digest(grant, &self.sha256)
    }
}

impl Agent {
    /// Loads an agent within the host's load deadline: read, check pins, compile,
    /// prepare, describe, settle its name and permissions.
    pub(crate) async fn load(
        host: Arc<HostInner>,
        source: Source,
        pinned: Option<&str>,
        manifest: Option<Manifest>,
    ) -> Result<Self, Error> {
        let steps = async {
            let found = Found::read(&host, source, manifest).await?;
            found.check_pins(&host, pinned)?;
            let Found {
                wasm,
                sha256,
                declared,
                ..
            } = found;
            let (component, interface) = load::compile(&host, wasm, sha256.clone()).await?;
            let contract = interface.check()?;
            let pre = Self::prepare(&host, &component, contract)?;
            let mut agent = Self::unnamed(host.clone(), pre, contract, sha256);
            let described = agent.describe_guest().await?;
            agent.settle(described, declared)?;
            Ok(agent)
        };
        load::within_deadline(&host, steps).await
    }

    /// Links the component against the host's capabilities and checks its exports.
    fn prepare(
        host: &HostInner,
        component: &Component,
        contract: &str,
    ) -> Result<AgentPluginPre<RunState>, Error> {
        let instance_pre =
            host.linker
                .instantiate_pre(component)
                .map_err(|e| Error::MissingImports {
                    imports: format!("{e:#}"),
                })?;
        AgentPluginPre::new(instance_pre).map_err(|e| Error::NotAnAgent {
            expected: contract.to_owned(),
            exports: format!("{e:#}"),
        })
    }

    /// The agent before it has described itself: no name, no permissions.
    fn unnamed(
        host: Arc<HostInner>,
        pre: AgentPluginPre<RunState>,
        contract: &str,
        sha256: String,
    ) -> Self {
        Self {
            inner: Arc::new(AgentInner {
                host,
                pre,
                info: AgentInfo {
                    name: String::new(),
                    version: String::new(),
                    description: String::new(),
                    default_model: String::new(),
                    tags: Vec::new(),
                    contract: contract.to_owned(),
                    sha256,
                },
                scope: Default::default(),
                component: None,
                permissions: Arc::new(Permissions::unrestricted("")),
                llm_share: None,
                log_id: crate::capabilities::log::agent_id(""),
            }),
        }
    }

    /// Takes the name the agent reported, checks it against the manifest, the
    /// built-in names and any pinned grant, and settles what it may do.
    fn settle(&mut self, described: AgentInfo, declared: Option<Manifest>) -> Result<(), Error> {
        validate_agent_name(&described.name).map_err(|_| {
            Error::InvalidDescription(format!(
                "the name {:?} does not match ^[a-zA-Z0-9_-]+$",
                described.name
            ))
        })?;
        let inner = Arc::get_mut(&mut self.inner)
            .ok_or_else(|| Error::Setup("agent handle shared during load".into()))?;
        inner.info = AgentInfo {
            contract: inner.info.contract.clone(),
            sha256: inner.info.sha256.clone(),
            ..described
        };
        inner.log_id = crate::capabilities::log::agent_id(&inner.info.name);
        let name = inner.info.name.as_str();
        if let Some(manifest) = &declared {
            if let Some(declared_name) = manifest.name.as_deref()
                && declared_name != name
            {
                return Err(Error::InvalidDescription(format!(
                    "the manifest names the plugin {declared_name:?} but it describes itself as {name:?}"
                )));
            }
            // A plugin under a shipped agent's name would pick up the operator's grant
            // for it; only that agent's own component (a copy of it) may use the name.
            if cf_builtin::find(name).is_some_and(|b| b.sha256 != inner.info.sha256) {
                return Err(Error::ReservedName {
                    name: name.to_owned(),
                });
            }
            // Its store and cached answers are keyed by its name and its digest: two
            // plugins reporting one name never reach each other's data.
            inner.component = Some(inner.info.sha256.as_str().into());
        }
        // A grant pinned to a digest refuses any other component under that name.
        check_digest(grant_pin(&inner.host, name), &inner.info.sha256)?;
        // An operator who trusts local plugins grants each what it declares.
        let trusted = match (&declared, inner.host.grants.get(name)) {
            (Some(m), None) if inner.host.trust_declared => Some(Grant::from_manifest(m)),
            _ => None,
        };
        let grant = inner.host.grants.get(name).or(trusted.as_ref());
        inner.permissions = Arc::new(match (&declared, grant) {
            (None, None) => Permissions::unrestricted(name),
            (None, Some(g)) => Permissions::granted(name, g),
            (Some(manifest), g) => Permissions::intersect(name, manifest, g, &inner.info.sha256),
        });
        if let Some(n) = inner.permissions.concurrency() {
            inner.llm_share = Some(Arc::new(tokio::sync::Semaphore::new(n as usize)));
        }
        Ok(())
    }

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
        let host = &self.inner.host;
        let chars = task.text.chars().count();
        if chars > host.limits.max_task_chars {
            return Err(Error::TaskTooLarge {
                chars,
                max: host.limits.max_task_chars,
            }
            .into());
        }
        let limit = options.deadline.unwrap_or(host.limits.deadline);
        let deadline = started + limit;
        // A plugin's granted budget narrows the run's.
        let mut budget = options.budget;
        if let Some(granted) = self.inner.permissions.budget_usd() {
            budget.usd = Some(budget.usd.map_or(granted, |b| b.min(granted)));
        }
        let ledger = parent.child(budget);
        let Ok(Ok(_slot)) = tokio::time::timeout_at(deadline, host.instance_slots.acquire()).await
        else {
            return Err(Error::Deadline { limit }.into());
        };
        let mut store = self.new_store(
            &ledger,
            options.clone(),
            deadline,
            host.limits.max_llm_calls,
        );
        let mut timings = Timings::default();
        let wit_task = wit::Task {
            text: task.text,
            context: task.context,
        };
        // The epoch stops a computing guest; this bounds everything else (host calls,
        // instantiation) by the same deadline plus one tick of slack.
        let outcome = tokio::time::timeout_at(deadline + crate::engine::EPOCH_TICK * 2, async {
            let plugin = self.inner.pre.instantiate_async(&mut store).await?;
            timings.instantiate = started.elapsed();
            plugin
                .claude_force_agent_agent()
                .call_run(&mut store, &wit_task)
                .await
        })
        .await;
        let state = store.data();
        state.flush_stdio();
        timings.llm = state.llm.busy;
        timings.queue_wait = state.llm.queue_wait;
        timings.total = started.elapsed();
        let totals = ledger.totals();
        let stats = RunStats {
            usage: totals.usage,
            cost: totals.cost,
            saved_usd: totals.saved_usd,
            llm_calls: totals.calls,
            attempts: totals.attempts,
            cache_hits: totals.cache_hits,
            model: state.llm.last_model.clone(),
            timings,
        };
        let result = match outcome {
            Err(_elapsed) => Err(Error::Deadline { limit }),
            Ok(Err(trap)) => Err(classify_trap(&trap, state, limit)),
            Ok(Ok(Err(agent_error))) => Err(match agent_error {
                wit::AgentError::InvalidTask(m) => Error::InvalidTask(m),
                wit::AgentError::Llm(e) => Error::Llm(error_from_wit(e)),
                wit::AgentError::Failed(m) => Error::AgentFailed(m),
            }),
            Ok(Ok(Ok(output))) => {
                let bytes = output.text.len()
                    + output
                        .metadata
                        .iter()
                        .map(|(k, v)| k.len() + v.len() + LIST_ITEM_BYTES)
                        .sum::<usize>();
                if bytes > host.limits.max_output_bytes {
                    Err(Error::OutputTooLarge {
                        bytes,
                        max: host.limits.max_output_bytes,
                    })
                } else {
                    Ok(RunOutput {
                        agent: self.inner.info.name.clone(),
                        text: output.text,
                        metadata: output.metadata,
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

    /// Calls the guest's `describe()` in a store of its own, with model calls denied.
    async fn describe_guest(&self) -> Result<AgentInfo, Error> {
        let deadline = Instant::now() + DESCRIBE_DEADLINE;
        let ledger = Ledger::unlimited();
        let Ok(Ok(_slot)) =
            tokio::time::timeout_at(deadline, self.inner.host.instance_slots.acquire()).await
        else {
            return Err(Error::InvalidDescription(
                "no instance slot became free in time to call describe()".into(),
            ));
        };
        let mut store = self.new_store(&ledger, RunOptions::default(), deadline, 0);
        let described = tokio::time::timeout_at(deadline, async {
            let plugin: AgentPlugin = self.inner.pre.instantiate_async(&mut store).await?;
            plugin
                .claude_force_agent_agent()
                .call_describe(&mut store)
                .await
        })
        .await;
        store.data().flush_stdio();
        let info = match described {
            Err(_) => {
                return Err(Error::InvalidDescription(format!(
                    "describe() did not return within {} s",
                    DESCRIBE_DEADLINE.as_secs()
                )));
            }
            Ok(Err(trap)) => {
                return Err(Error::InvalidDescription(
                    classify_trap(&trap, store.data(), DESCRIBE_DEADLINE).to_string(),
                ));
            }
            Ok(Ok(info)) => info,
        };
        Ok(AgentInfo {
            name: info.name,
            version: info.version,
            description: info.description,
            default_model: info.default_model,
            tags: info.tags,
            contract: String::new(),
            sha256: String::new(),
        })
    }

    fn new_store(
        &self,
        ledger: &Ledger,
        options: RunOptions,
        deadline: Instant,
        max_calls: u32,
    ) -> Store<RunState> {
        let host = &self.inner.host;
        let limits = &host.limits;
        let name = self.inner.info.name.clone();
        let llm = LlmCtx {
            service: host.llm.clone(),
            agent: name.clone(),
            component: self.inner.component.clone(),
            ledger: ledger.clone(),
            deadline,
            options,
            agent_model: self.inner.info.default_model.clone(),
            host_model: host.default_model.clone(),
            default_max_tokens: host.default_max_tokens,
            max_request_bytes: limits.max_request_bytes,
            calls_left: max_calls,
            max_calls,
            busy: Duration::ZERO,
            queue_wait: Duration::ZERO,
            last_model: None,
            permissions: self.inner.permissions.clone(),
            share: self.inner.llm_share.clone(),
        };
        let cache = CacheCtx::new(
            host.stores.clone(),
            name.clone(),
            self.inner.component.clone(),
            self.inner.scope.clone(),
            self.inner.permissions.clone(),
            limits.max_cache_ops,
        );
        let log = LogCtx {
            agent_id: self.inner.log_id.clone(),
            agent: name,
            max_bytes: limits.max_log_bytes,
            records_left: limits.max_log_records,
            dropped: 0,
        };
        let state = RunState::new(llm, cache, log, limits.memory_bytes, limits.max_stdio_bytes);
        let mut store = Store::new(&host.engine, state);
        store.limiter(|s| &mut s.limiter);
        let wall_deadline = deadline.into_std();
        // Checked at every epoch tick: yield to the executor so a computing guest
        // shares its thread, and stop it once the run's deadline has passed.
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
}
