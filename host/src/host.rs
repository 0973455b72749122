//! [`Host`]: the engine, the capabilities and the LLM service, shared by every agent
//! loaded into it.

use crate::agent::{Agent, Source};
use crate::capabilities;
use crate::config::{self, DEFAULT_MAX_TOKENS, DEFAULT_MODEL, Dirs, Limits};
use crate::engine::{CompiledCache, DEFAULT_MAX_INSTANCES, EpochTicker, new_engine};
use crate::error::Error;
use crate::permissions::{Grant, Manifest};
use crate::run::RunState;
use cf_cache::{AgentStores, CacheConfig, ResponseCache, StoreLimits};
use cf_llm::{LlmService, OfflineProvider, PriceTable, Provider};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::Engine;
use wasmtime::component::Linker;

/// Builds a [`Host`]. Every setting has a documented default; nothing is granted to
/// guests beyond the capabilities of the contract.
#[derive(Debug)]
pub struct HostBuilder {
    provider: Option<Arc<dyn Provider>>,
    prices: PriceTable,
    max_concurrent: usize,
    max_retries: u32,
    attempt_timeout: Duration,
    limits: Limits,
    default_model: String,
    default_max_tokens: u32,
    dirs: Dirs,
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
    /// `<cache_dir>/responses` with `CacheConfig`'s defaults, when there is a cache dir.
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
            limits: Limits::default(),
            default_model: DEFAULT_MODEL.to_owned(),
            default_max_tokens: DEFAULT_MAX_TOKENS,
            dirs: Dirs {
                cache_dir: config::default_cache_dir(),
                compiled_cache: true,
            },
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

    /// The host's cache directory (compiled components, the agents' stores).
    /// Default: `$XDG_CACHE_HOME/cf-host`. `None`: keep nothing on disk; agents'
    /// cache calls then fail with an `io` error.
    pub fn cache_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.dirs.cache_dir = dir;
        self
    }

    /// Whether compiled components are kept in the cache directory. Default true.
    pub fn compiled_cache(mut self, on: bool) -> Self {
        self.dirs.compiled_cache = on;
        self
    }

    /// Quotas of each agent's store. Default: [`StoreLimits::default`].
    pub fn store_limits(mut self, limits: StoreLimits) -> Self {
        self.store_limits = limits;
        self
    }

    /// The response cache in front of the provider. Default: `<cache_dir>/responses`
    /// with [`CacheConfig`]'s defaults (24 h TTL, 100 MB, a secret generated once per
    /// directory), when the host has a cache directory.
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
    /// use no cache. A shipped agent with a grant is narrowed to it. See
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
        let engine = new_engine(self.limits.memory_bytes, self.max_instances)?;
        let ticker = EpochTicker::start(&engine)?;
        let mut linker = Linker::new(&engine);
        capabilities::add_to_linker(&mut linker)
            .map_err(|e| Error::Setup(format!("linking capabilities: {e}")))?;
        let provider = self
            .provider
            .unwrap_or_else(|| Arc::new(OfflineProvider::new()));
        // The stores open the cache directory itself first, so that a refusal of it
        // names it (and its fix) rather than a subdirectory whose ancestor it is.
        let stores = match &self.dirs.cache_dir {
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
                .dirs
                .cache_dir
                .as_ref()
                .map(|d| CacheConfig::new(d.join("responses"))),
        };
        let mut llm = LlmService::builder(provider)
            .prices(self.prices)
            .max_concurrent(self.max_concurrent)
            .max_retries(self.max_retries)
            .attempt_timeout(self.attempt_timeout);
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
        let llm = llm.build();
        let compiled_dir = self
            .dirs
            .cache_dir
            .as_ref()
            .filter(|_| self.dirs.compiled_cache)
            .map(|d| d.join("components"));
        let compiled = CompiledCache::open(&engine, compiled_dir.as_deref())?;
        Ok(Host {
            inner: Arc::new(HostInner {
                engine,
                linker,
                llm,
                stores,
                compiled,
                limits: self.limits,
                default_model: self.default_model,
                default_max_tokens: self.default_max_tokens,
                instance_slots: tokio::sync::Semaphore::new(self.max_instances as usize),
                grants: self.grants,
                trust_declared: self.trust_declared,
                _ticker: ticker,
            }),
        })
    }
}

pub(crate) struct HostInner {
    pub engine: Engine,
    pub linker: Linker<RunState>,
    pub llm: LlmService,
    pub stores: Option<AgentStores>,
    pub compiled: CompiledCache,
    pub limits: Limits,
    pub default_model: String,
    pub default_max_tokens: u32,
    /// One permit per pooling-allocator slot: a run holds one while its instance lives.
    pub instance_slots: tokio::sync::Semaphore,
    /// The operator's grants, by plugin name.
    pub grants: HashMap<String, Grant>,
    /// Whether plugins without a grant get what they declare.
    pub trust_declared: bool,
    _ticker: EpochTicker,
}

impl HostInner {
    /// The wasmtime engine.
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiled components kept on disk.
    pub(crate) fn compiled(&self) -> &CompiledCache {
        &self.compiled
    }

    /// The limits of every run and load.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }
}

impl std::fmt::Debug for HostInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("provider", &self.llm.provider_name())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
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
    pub(crate) inner: Arc<HostInner>,
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
        Agent::load(self.inner.clone(), source.into(), None, None).await
    }

    /// Loads a third-party plugin with the capabilities it declares given here rather
    /// than in a sidecar file (for components from bytes). What it may do is still
    /// the intersection with the operator's grant.
    pub async fn load_declared(
        &self,
        source: impl Into<Source>,
        manifest: Manifest,
    ) -> Result<Agent, Error> {
        Agent::load(self.inner.clone(), source.into(), None, Some(manifest)).await
    }

    /// Loads an agent only if its component's SHA-256 is `sha256` (hex, any case);
    /// otherwise refuses it with [`Error::DigestMismatch`] before compiling anything.
    pub async fn load_pinned(
        &self,
        source: impl Into<Source>,
        sha256: &str,
    ) -> Result<Agent, Error> {
        Agent::load(self.inner.clone(), source.into(), Some(sha256), None).await
    }

    /// The limits of every run.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The LLM service every call goes through.
    pub fn llm(&self) -> &LlmService {
        &self.inner.llm
    }

    /// Waits until every answer stored so far is written to the response cache's
    /// directory (see [`LlmService::flush_cache`]): runs do not wait for the disk.
    /// Call it before exiting; dropping the last handle of the host writes what is
    /// left too, blocking the thread that drops it.
    pub async fn flush(&self) {
        self.inner.llm.flush_cache().await;
    }
}
