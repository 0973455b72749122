//! Flags and subcommands. Every value a setting may also take from the environment or
//! the config file is checked by the same rule as there (`cf_front::settings`).

use cf_front::settings::{self, Overrides, Spec};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  a task failed (the agent, a model call, or a limit such as the deadline)
  2  usage or configuration error (bad flag, invalid agent name, task too long,
     not a valid component): nothing ran
  130  a batch interrupted by Ctrl-C

Without ANTHROPIC_API_KEY the built-in offline provider answers, labelled [offline].";

/// Run sandboxed LLM agents (WebAssembly components).
#[derive(Debug, Parser)]
#[command(name = "cf-host", version, about, after_help = AFTER_HELP)]
pub(crate) struct Cli {
    /// More log output on stderr (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run an agent on a task.
    #[command(after_help = AFTER_HELP)]
    Run(RunArgs),
    /// List the built-in agents.
    Agents(AgentsArgs),
    /// Show a component's contract version, imports, exports and description.
    #[command(after_help = AFTER_HELP)]
    Inspect(InspectArgs),
    /// Tell whether a component fits this host: the contract version it targets, the
    /// versions the host serves, imports the host does not offer. Exit 0 if it fits,
    /// 1 if not.
    Check(InspectArgs),
    /// Create a Rust agent project that builds and runs in two commands.
    New(NewArgs),
    /// Look after the response cache (model answers): stats, verify, prune, clear.
    Cache(CacheArgs),
    /// Show the effective configuration (flags > environment > file > defaults),
    /// secrets redacted.
    Config(ConfigArgs),
    /// Summarise the run log: runs, success rate, latency percentiles, tokens, cost and
    /// saved cost, per agent and per model.
    Stats(StatsArgs),
    /// Serve the agents over HTTP: runs, batches, live events, metrics, an OpenAPI
    /// document at /openapi.json. Tokens and tenants come from `[serve]` in the config
    /// file; without tokens it serves a loopback address only.
    Serve(ServeArgs),
    /// Run items of the fleet's work queue on Redis (submitted with `cf-host run
    /// --tasks FILE --queue URL`) until SIGTERM or Ctrl-C.
    Worker(WorkerArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The address to listen on [env: CF_LISTEN; default 127.0.0.1:8787]; port 0 picks
    /// a free one (the address is printed on stderr).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Also run items from the fleet's work queue on `--redis` (as `cf-host worker`
    /// does).
    #[arg(long)]
    pub worker: bool,
    #[command(flatten)]
    pub host: HostArgs,
}

#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// The Redis of the fleet's work queue. Default: `--redis` / CF_REDIS_URL /
    /// `redis.url`.
    #[arg(long, value_name = "URL")]
    pub queue: Option<String>,
    /// Items run at once. Default: --max-concurrent.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub items: Option<u64>,
    /// At SIGTERM or Ctrl-C, how long running items may take to finish, in seconds;
    /// the rest goes back to the queue for another worker.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = parser(settings::DEADLINE))]
    pub grace: f64,
    #[command(flatten)]
    pub host: HostArgs,
}

#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    /// Only runs newer than this: 30s, 15m, 2h, 7d, 1w.
    #[arg(long, value_name = "DURATION", value_parser = cf_front::summary::parse_duration)]
    pub since: Option<Duration>,
    /// Print JSON.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV: one row for all runs, then one per agent and per model.
    #[arg(long)]
    pub csv: bool,
}

#[derive(Debug, Args)]
pub(crate) struct NewArgs {
    /// The agent's name: letters, digits, '-' or '_'.
    pub name: String,
    /// Where to create the project directory.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct ConfigArgs {
    #[command(subcommand)]
    pub action: ConfigAction,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigAction {
    /// Print the effective configuration as TOML (or JSON), secrets redacted.
    Show {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        host: HostArgs,
    },
}

#[derive(Debug, Args)]
pub(crate) struct CacheArgs {
    #[command(subcommand)]
    pub action: CacheAction,
    /// The data directory; the response cache is its `responses/`
    /// [env: CF_DATA_DIR; default $XDG_CACHE_HOME/cf-host].
    #[arg(long, value_name = "DIR", global = true, alias = "cache-dir")]
    pub data_dir: Option<PathBuf>,
    /// The config file (for the data directory and the cache's secret).
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Print JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub(crate) enum CacheAction {
    /// Hits, misses, entries, bytes, evictions, integrity failures, tokens and cost saved.
    Stats,
    /// Check every entry's HMAC; report bad entries (exit 1 if any).
    Verify {
        /// Remove bad entries and repair the index.
        #[arg(long)]
        fix: bool,
    },
    /// Remove expired entries.
    Prune,
    /// Remove every cache entry (and nothing else).
    Clear,
}

/// Settings of the host shared by the subcommands. Every one may also come from the
/// environment or the config file (see `cf-host config show`); a flag wins.
#[derive(Debug, Default, Args)]
pub(crate) struct HostArgs {
    /// The config file. Default: $XDG_CONFIG_HOME/cf-host/config.toml, if it exists.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Who answers model calls: offline (deterministic, no network), anthropic (the
    /// Messages API), replay (a cassette recorded with --record) [env: CF_PROVIDER].
    /// Default: anthropic when ANTHROPIC_API_KEY is set, else offline.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(settings::ProviderKind::NAMES))]
    pub provider: Option<String>,
    /// The API's base URL [env: ANTHROPIC_BASE_URL]. Default: https://api.anthropic.com.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// Grant every plugin without a grant of its own exactly what its manifest
    /// declares: for trying a local plugin.
    #[arg(long)]
    pub trust: bool,
    /// The Redis a fleet of hosts shares [env: CF_REDIS_URL]: `--max-concurrent` is
    /// then the limit of the whole fleet for this API account.
    #[arg(long, value_name = "URL", global = true)]
    pub redis: Option<String>,
    /// The cassette `--provider replay` answers from.
    #[arg(long, value_name = "FILE", required_if_eq("provider", "replay"))]
    pub cassette: Option<PathBuf>,
    /// Append every answered request/response pair to this JSONL cassette.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Model calls in flight at once across all runs [env: CF_MAX_CONCURRENT; default 10].
    #[arg(long, value_name = "N", value_parser = parser(settings::MAX_CONCURRENT))]
    pub max_concurrent: Option<u64>,
    /// Timeout of one model-call attempt, in seconds [env: CF_TIMEOUT; default 30].
    #[arg(long, value_name = "SECS", value_parser = parser(settings::TIMEOUT))]
    pub timeout: Option<f64>,
    /// Retries of a transient model-call failure (429, 5xx, timeouts, connection
    /// errors) [env: CF_MAX_RETRIES; default 2].
    #[arg(long, value_name = "N", value_parser = parser(settings::MAX_RETRIES))]
    pub max_retries: Option<u64>,
    /// A price table (TOML, the format of llm/prices.toml) whose entries replace the
    /// built-in ones [env: CF_PRICES].
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,
    /// Wall-clock deadline of a run, in seconds [env: CF_DEADLINE; default 120].
    #[arg(long, value_name = "SECS", value_parser = parser(settings::DEADLINE))]
    pub deadline: Option<f64>,
    /// Memory a guest may use, in MiB [env: CF_MEMORY_MB; default 64].
    #[arg(long, value_name = "N", value_parser = parser(settings::MEMORY_MB))]
    pub memory_mb: Option<u64>,
    /// Longest task accepted, in characters [env: CF_MAX_TASK_CHARS; default 100000].
    #[arg(long, value_name = "N", value_parser = parser(settings::MAX_TASK_CHARS))]
    pub max_task_chars: Option<u64>,
    /// The data directory: the agents' stores, compiled components, the response
    /// cache [env: CF_DATA_DIR; default $XDG_CACHE_HOME/cf-host]. Was --cache-dir.
    #[arg(long, value_name = "DIR", alias = "cache-dir")]
    pub data_dir: Option<PathBuf>,
    /// Do not use the response cache: every model call goes to the provider.
    #[arg(long)]
    pub no_cache: bool,
    /// Lifetime of a cached answer, in seconds [env: CF_CACHE_TTL; default 86400].
    #[arg(long, value_name = "SECS", value_parser = parser(settings::CACHE_TTL))]
    pub cache_ttl: Option<f64>,
    /// Most bytes the response cache keeps on disk; least recently used answers are
    /// evicted past it. A number of bytes or e.g. 500MiB
    /// [env: CF_CACHE_MAX_BYTES; default 100MiB].
    #[arg(long, value_name = "BYTES", value_parser = parser(settings::CACHE_MAX_BYTES))]
    pub cache_max_bytes: Option<u64>,
    /// Most bytes one agent's store may hold [env: CF_STORE_MAX_BYTES; default 10MiB].
    #[arg(long, value_name = "BYTES", value_parser = parser(settings::STORE_MAX_BYTES))]
    pub store_max_bytes: Option<u64>,
    /// Most entries one agent's store may hold [env: CF_STORE_MAX_ENTRIES; default 1000].
    #[arg(long, value_name = "N", value_parser = parser(settings::STORE_MAX_ENTRIES))]
    pub store_max_entries: Option<u64>,
    /// What an agent's full store does: evict (its least recently used entries make
    /// room: the store is a cache) or refuse (the write gets quota-exceeded)
    /// [env: CF_STORE_WHEN_FULL; default evict].
    #[arg(long, value_name = "WHAT", value_parser = parser(settings::STORE_WHEN_FULL))]
    pub store_when_full: Option<cf_host::storage::WhenFull>,
    /// The model for every call (overrides the agent's choice) [env: CF_MODEL].
    #[arg(long)]
    pub model: Option<String>,
    /// Stop starting model calls once the run (or the whole batch) has spent this
    /// many US dollars [env: CF_BUDGET_USD].
    #[arg(long, value_name = "USD", value_parser = parser(settings::BUDGET_USD))]
    pub budget_usd: Option<f64>,
    /// Stop starting model calls once the run (or the whole batch) has used this many
    /// tokens [env: CF_BUDGET_TOKENS].
    #[arg(long, value_name = "N", value_parser = parser(settings::BUDGET_TOKENS))]
    pub budget_tokens: Option<u64>,
    /// When a model call may start under a budget: until-spent (while the budget is
    /// not spent: the call that crosses it is answered) or worst-case (only if its
    /// input estimate plus max_tokens at the output price fits what is left)
    /// [env: CF_BUDGET_RULE; default until-spent].
    #[arg(long, value_name = "RULE", value_parser = parser(settings::BUDGET_RULE))]
    pub budget_rule: Option<cf_host::BudgetRule>,
}

impl HostArgs {
    /// What these flags set, over the environment and the config file.
    pub(crate) fn overrides(&self) -> Overrides {
        Overrides {
            config: self.config.clone(),
            provider: self.provider.clone(),
            base_url: self.base_url.clone(),
            model: self.model.clone(),
            max_concurrent: self.max_concurrent,
            timeout_secs: self.timeout,
            max_retries: self.max_retries,
            prices: self.prices.clone(),
            deadline_secs: self.deadline,
            memory_mb: self.memory_mb,
            max_task_chars: self.max_task_chars,
            data_dir: self.data_dir.clone(),
            no_cache: self.no_cache,
            cache_ttl_secs: self.cache_ttl,
            cache_max_bytes: self.cache_max_bytes,
            store_max_bytes: self.store_max_bytes,
            store_max_entries: self.store_max_entries,
            store_when_full: self.store_when_full,
            budget_usd: self.budget_usd,
            budget_tokens: self.budget_tokens,
            budget_rule: self.budget_rule,
            cassette: self.cassette.clone(),
            record: self.record.clone(),
            trust: self.trust,
            listen: None,
            redis: self.redis.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// A built-in agent's name (see `cf-host agents`) or a path to a .wasm component.
    /// In a batch, the agent of items that name none.
    #[arg(required_unless_present_any = ["tasks", "batch_task"])]
    pub agent: Option<String>,
    /// The task; `-` or nothing reads it from stdin (one trailing newline dropped, so
    /// `echo q | cf-host run a -` asks what `cf-host run a q` asks).
    pub task: Option<String>,
    /// Run a batch from a JSONL file (`-` for stdin): one object per line with
    /// `agent`, `task`, and optional `id`, `model`, `max_tokens`, `temperature`,
    /// `context`.
    #[arg(long, value_name = "FILE", conflicts_with = "task")]
    pub tasks: Option<String>,
    /// A batch item for AGENT (repeatable).
    #[arg(long = "task", value_name = "TEXT", id = "batch_task", requires = "agent", conflicts_with_all = ["task", "tasks"])]
    pub batch_tasks: Vec<String>,
    /// Refuse to run AGENT unless its component's SHA-256 is this (hex), checked before
    /// it is compiled.
    #[arg(long, value_name = "HEX", conflicts_with_all = ["tasks", "batch_task"])]
    pub sha256: Option<String>,
    /// After Ctrl-C, how long running items may take to finish, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = parser(settings::DEADLINE))]
    pub grace: f64,
    /// Context for the agent, as KEY=VALUE (repeatable).
    #[arg(long = "context", short = 'c', value_name = "KEY=VALUE", value_parser = key_value)]
    pub context: Vec<(String, String)>,
    /// max_tokens for every call.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tokens: Option<u32>,
    /// Temperature for every call, in [0, 1].
    #[arg(long, value_name = "T", value_parser = temperature)]
    pub temperature: Option<f32>,
    /// Print one JSON object per result on stdout.
    #[arg(long, conflicts_with = "stream_json")]
    pub json: bool,
    /// Print the run's live events on stdout, one JSON object per line, as they
    /// happen: `{"type":"delta","text":…}` for output the agent emits,
    /// `{"type":"tool","id":…,"name":…}` for a tool its model asks for, and
    /// `{"type":"result",…}` with the fields of `--json` at the end (in a batch,
    /// every event has the item's `index`).
    #[arg(long)]
    pub stream_json: bool,
    /// Submit the batch to the fleet's work queue on this Redis (`redis://…`) instead
    /// of running it here: workers (`cf-host worker`, `cf-host serve --worker`) run
    /// the items, and their results stream back here as they finish. The queue's name
    /// is `redis.queue` [env: CF_REDIS_QUEUE; default `default`].
    #[arg(long, value_name = "URL")]
    pub queue: Option<String>,
    #[command(flatten)]
    pub host: HostArgs,
}

#[derive(Debug, Args)]
pub(crate) struct AgentsArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub host: HostArgs,
}

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// The component to inspect.
    pub wasm: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub host: HostArgs,
}

/// A flag's parser: the setting's own rule, so that a flag is checked exactly as the
/// same value from the environment or the config file.
fn parser<T: Clone + Send + Sync + 'static>(
    spec: Spec<T>,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {
    move |text| (spec.parse)(text)
}

fn temperature(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s} is not in [0, 1]"))
    }
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}
