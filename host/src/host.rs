//! [`Host`] and its builder: the public face of the [`Runtime`] every agent loaded into
//! the host shares.

use crate::agent::{self, Agent, Source};
use crate::contract::ComponentInterface;
use crate::error::Error;
use crate::limits::{DEFAULT_MAX_TOKENS, DEFAULT_MODEL, Limits};
use crate::permissions::{Grant, Manifest};
use crate::runtime::{Parts, Policy, Runtime};
use crate::sandbox::{self, CompiledComponents, EpochTicker, engine::DEFAULT_MAX_INSTANCES};
use cf_cache::{AgentStores, CacheConfig, ResponseCache, StoreLimits};
use cf_llm::{LlmService, OfflineProvider, PriceTable, Provider};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Builds a [`Host`]. Every setting has a documented default; nothing is granted to
/// guests beyond the capabilities of the contract, and nothing is written to disk
/// unless a [data directory](Self::data_dir) is given.
#[derive(Debug)]
pub struct HostBuilder {
    provider: Option<Arc<dyn Provider>>,
    prices: PriceTable,
    max_concurrent: usize,
    max_retries: u32,
    attempt_timeout: Duration,
    idle_timeout: Option<Duration>,
    shared_limit: Option<Arc<dyn cf_llm::SharedLimit>>,
    shared_cache: Option<Arc<dyn cf_llm::SharedCache>>,
    limits: Limits,
    default_model: String,
    default_max_tokens: u32,
    data_dir: Option<PathBuf>,
    keep_compiled: bool,
    store_limits: StoreLimits,
    response_cache: ResponseCacheSetting,
    shared_namespace: Option<String>,
    max_instances: u32,
    grants: HashMap<String, Grant>,
    trust_declared: bool,
}

/// Whether and how the host caches model answers.
#[derive(Debug)]
enum ResponseCacheSetting {
    /// `<data_dir>/responses` with `CacheConfig`'s defaults, when there is a data
    /// directory.
    Default,
    Disabled,
    Config(Box<CacheConfig>),
}

impl Default for HostBuilder {
    fn default() -> Self {
        Self {
            provider: None,
            prices: PriceTable::built_in(),
            max_concurrent: cf_llm::DEFAULT_MAX_CONCURRENT,
            max_retries: cf_llm::DEFAULT_MAX_RETRIES,
            attempt_timeout: cf_llm::DEFAULT_ATTEMPT_TIMEOUT,
            idle_timeout: None,
            shared_limit: None,
            shared_cache: None,
            limits: Limits::default(),
            default_model: DEFAULT_MODEL.to_owned(),
            default_max_tokens: DEFAULT_MAX_TOKENS,
            data_dir: None,
            keep_compiled: true,
            store_limits: StoreLimits::default(),
            response_cache: ResponseCacheSetting::Default,
            shared_namespace: None,
            max_instances: DEFAULT_MAX_INSTANCES,
            grants: HashMap::new(),
            trust_declared: false,
        }
    }
}

impl HostBuilder {
    /// The provider that answers model calls. Default: the offline provider.
    pub fn provider(mut self, provider: Arc<dyn Provider>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// The price table. Default: the built-in table (`llm/prices.toml`).
    pub fn prices(mut self, prices: PriceTable) -> Self {
        self.prices = prices;
        self
    }

    /// Model calls in flight at once, across every agent and run. Default 10.
    pub fn max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = n;
        self
    }

    /// Retries of a transient model-call failure. Default 2 (3 attempts).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Timeout of one model-call attempt. Default 30 s.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// A concurrency limit shared with other hosts (a fleet on Redis, `cf-fleet`):
    /// every model-call attempt also holds one of its slots. Default: none.
    pub fn shared_limit(mut self, limit: Arc<dyn cf_llm::SharedLimit>) -> Self {
        self.shared_limit = Some(limit);
        self
    }

    /// A response cache shared with other hosts (the fleet's on Redis, `cf-fleet`),
    /// behind this host's own (no effect without one). Default: none.
    pub fn shared_cache(mut self, cache: Arc<dyn cf_llm::SharedCache>) -> Self {
        self.shared_cache = Some(cache);
        self
    }

    /// The longest a streamed model call waits for its first event and between two
    /// events ([`LlmServiceBuilder::idle_timeout`](cf_llm::LlmServiceBuilder::idle_timeout)).
    /// Default: the attempt timeout.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// The limits of every run. Default: [`Limits::default`].
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The model used when nobody names one. Default `claude-sonnet-4-5`.
    pub fn default_model(mut self, model: impl Into<String>) -> Self {
        self.default_model = model.into();
        self
    }

    /// `max_tokens` when nobody sets it. Default 4096.
    pub fn default_max_tokens(mut self, n: u32) -> Self {
        self.default_max_tokens = n;
        self
    }

    /// The host's data directory, which holds the agents' stores (`agents/`), compiled
    /// components (`components/`) and the response cache (`responses/`); created
    /// private to the user, and refused if someone else may write it. Default `None`:
    /// nothing is kept on disk, every component is compiled on each load, answers are
    /// not cached across hosts, and agents' store calls fail with an `io` error. The
    /// CLI passes [`default_data_dir`](crate::default_data_dir).
    pub fn data_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.data_dir = dir;
        self
    }

    /// Whether compiled components are kept in the data directory. Default true.
    pub fn keep_compiled(mut self, on: bool) -> Self {
        self.keep_compiled = on;
        self
    }

    /// Quotas of each agent's store. Default: [`StoreLimits::default`].
    pub fn store_limits(mut self, limits: StoreLimits) -> Self {
        self.store_limits = limits;
        self
    }

    /// The response cache in front of the provider. Default: `<data_dir>/responses`
    /// with [`CacheConfig`]'s defaults (24 h TTL, 100 MiB, a secret generated once per
    /// directory), when the host has a data directory; none without one.
    pub fn response_cache(mut self, config: CacheConfig) -> Self {
        self.response_cache = ResponseCacheSetting::Config(Box::new(config));
        self
    }

    /// Guest instances that may exist at once: the pooling allocator reserves this
    /// many slots, and runs beyond it wait (within their deadline) for one to free.
    /// Default 256.
    pub fn max_instances(mut self, n: u32) -> Self {
        self.max_instances = n.max(1);
        self
    }

    /// Grants `plugin` (an agent's name) capabilities. A third-party plugin may do
    /// only what it declares and is granted; with no grant it may call no model and
    /// use no store. A shipped agent with a grant is narrowed to it. See
    /// [`permissions`](crate::permissions).
    pub fn grant(mut self, plugin: impl Into<String>, grant: Grant) -> Self {
        self.grants.insert(plugin.into(), grant);
        self
    }

    /// Grants every third-party plugin without a grant of its own exactly what it
    /// declares — for an author trying a local plugin (`cf-host run --trust`). An
    /// explicit grant still takes precedence. Default: off (deny by default).
    pub fn trust_declared(mut self, on: bool) -> Self {
        self.trust_declared = on;
        self
    }

    /// No response cache: every model call goes to the provider.
    pub fn no_response_cache(mut self) -> Self {
        self.response_cache = ResponseCacheSetting::Disabled;
        self
    }

    /// Cache answers in one namespace shared by every agent, instead of one per agent
    /// (the default, as the seed did).
    pub fn shared_cache_namespace(mut self, namespace: Option<String>) -> Self {
        self.shared_namespace = namespace;
        self
    }

    /// The host: engine, epoch ticker, linker, LLM service and stores.
    pub fn build(self) -> Result<Host, Error> {
        let engine = sandbox::new_engine(self.limits.memory_bytes, self.max_instances)?;
        let ticker = EpochTicker::start(&engine)?;
        let linker = sandbox::linker(&engine)?;
        let provider = self
            .provider
            .unwrap_or_else(|| Arc::new(OfflineProvider::new()));
        // The stores open the data directory itself first, so that a refusal of it
        // names it (and its fix) rather than a subdirectory whose ancestor it is.
        let stores = match &self.data_dir {
            Some(dir) => Some(AgentStores::open(dir, self.store_limits).map_err(|e| {
                Error::from_storage(
                    &format!("opening the agents' stores in {}", dir.display()),
                    e,
                )
            })?),
            None => None,
        };
        let cache_config = match self.response_cache {
            ResponseCacheSetting::Disabled => None,
            ResponseCacheSetting::Config(c) => Some(*c),
            ResponseCacheSetting::Default => self
                .data_dir
                .as_ref()
                .map(|d| CacheConfig::new(d.join("responses"))),
        };
        let mut llm = LlmService::builder(provider)
            .prices(self.prices)
            .max_concurrent(self.max_concurrent)
            .max_retries(self.max_retries)
            .attempt_timeout(self.attempt_timeout);
        if let Some(idle) = self.idle_timeout {
            llm = llm.idle_timeout(idle);
        }
        if let Some(shared) = self.shared_limit {
            llm = llm.shared_limit(shared);
        }
        if let Some(shared) = self.shared_cache {
            llm = llm.shared_cache(shared);
        }
        if let Some(config) = cache_config {
            let dir = config.dir.clone();
            let cache = ResponseCache::open(config).map_err(|e| {
                Error::from_storage(
                    &format!("opening the response cache in {}", dir.display()),
                    e,
                )
            })?;
            llm = llm.response_cache(cache, self.shared_namespace);
        }
        let compiled_dir = self
            .data_dir
            .as_ref()
            .filter(|_| self.keep_compiled)
            .map(|d| d.join("components"));
        let compiled = CompiledComponents::open(&engine, compiled_dir.as_deref())?;
        let parts = Parts {
            engine,
            ticker,
            linker,
            llm: llm.build(),
            stores,
            compiled,
        };
        let policy = Policy {
            limits: self.limits,
            default_model: self.default_model,
            default_max_tokens: self.default_max_tokens,
            max_instances: self.max_instances,
            grants: self.grants,
            trust_declared: self.trust_declared,
        };
        Ok(Host {
            runtime: Arc::new(Runtime::new(parts, policy)),
        })
    }
}

/// A host for agent components. Cheap to clone; clones share the engine, the
/// concurrency limit and the stores.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let host = cf_host::Host::builder().build()?;
/// let agent = host.load("python-expert").await?;
/// let out = agent.run(cf_host::Task::new("Explain decorators")).await?;
/// println!("{} ({} tokens)", out.text, out.stats.usage.total());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Host {
    runtime: Arc<Runtime>,
}

impl Host {
    /// A builder with every default.
    pub fn builder() -> HostBuilder {
        HostBuilder::default()
    }

    /// Loads an agent: a built-in name, a path to a `.wasm` component, or bytes.
    /// Compiles it (or reuses the compiled copy on disk), checks it against the
    /// contract, prepares its instantiation and asks it to describe itself.
    pub async fn load(&self, source: impl Into<Source>) -> Result<Agent, Error> {
        agent::load(&self.runtime, source.into(), None, None).await
    }

    /// Loads a third-party plugin with the capabilities it declares given here rather
    /// than in a sidecar file (for components from bytes). What it may do is still
    /// the intersection with the operator's grant.
    pub async fn load_declared(
        &self,
        source: impl Into<Source>,
        manifest: Manifest,
    ) -> Result<Agent, Error> {
        agent::load(&self.runtime, source.into(), None, Some(manifest)).await
    }

    /// Loads an agent only if its component's SHA-256 is `sha256` (hex, any case);
    /// otherwise refuses it with [`Error::DigestMismatch`] before compiling anything.
    pub async fn load_pinned(
        &self,
        source: impl Into<Source>,
        sha256: &str,
    ) -> Result<Agent, Error> {
        agent::load(&self.runtime, source.into(), Some(sha256), None).await
    }

    /// The limits of every run.
    pub fn limits(&self) -> &Limits {
        self.runtime.limits()
    }

    /// The LLM service every call goes through.
    pub fn llm(&self) -> &LlmService {
        self.runtime.llm()
    }

    /// Waits until every answer stored so far is written to the response cache's
    /// directory (see [`LlmService::flush_cache`]): runs do not wait for the disk.
    /// Call it before exiting; dropping the last handle of the host writes what is
    /// left too, blocking the thread that drops it.
    pub async fn flush(&self) {
        self.runtime.llm().flush_cache().await;
    }

    /// Describes a component without running it: its contract version, imports and
    /// exports, and whether this host can run it.
    pub async fn inspect(&self, wasm: Vec<u8>) -> Result<ComponentInterface, Error> {
        agent::inspect(&self.runtime, wasm).await
    }

    /// Reads a component file for [`inspect`](Self::inspect) or
    /// [`load`](Self::load): a regular file of at most
    /// [`Limits::max_component_bytes`] (a device or a FIFO is refused, not read).
    pub async fn read_component(
        &self,
        path: impl Into<std::path::PathBuf>,
    ) -> Result<Vec<u8>, Error> {
        agent::read_component(&self.runtime, path.into()).await
    }

    /// The shared core, for the batch runner.
    pub(crate) fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }
}
