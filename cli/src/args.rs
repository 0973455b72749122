//! Flags and subcommands.

use crate::exit;
use crate::output;
use crate::{batch, config, summary, tasks};
use cf_host::metrics::{self, MetricsLog, RunRecord};
use cf_host::{BatchOptions, Host, Limits, RunOptions, Source, Task, llm};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  a task failed (the agent, a model call, or a limit such as the deadline)
  2  usage or configuration error (bad flag, invalid agent name, task too long,
     not a valid component): nothing ran

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
    /// Look after the response cache: stats, verify, prune, clear.
    Cache(CacheArgs),
    /// Show the effective configuration (flags > environment > file > defaults),
    /// secrets redacted.
    Config(ConfigArgs),
    /// Summarise the run log: runs, success rate, latency percentiles, tokens, cost and
    /// saved cost, per agent and per model.
    Stats(StatsArgs),
}

#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    /// Only runs newer than this: 30s, 15m, 2h, 7d, 1w.
    #[arg(long, value_name = "DURATION", value_parser = cf_host::summary::parse_duration)]
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
    /// The host's cache directory; the response cache is its `responses/`
    /// [env: CF_CACHE_DIR; default $XDG_CACHE_HOME/cf-host].
    #[arg(long, value_name = "DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
    /// The config file (for the cache directory and secret).
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProviderKind {
    /// Deterministic answers without a network, labelled [offline].
    Offline,
    /// The Anthropic Messages API (needs ANTHROPIC_API_KEY).
    Anthropic,
    /// Answers from a cassette recorded with --record (needs --cassette); no network.
    Replay,
}

/// Settings of the host shared by the subcommands. Every one may also come from the
/// environment or the config file (see `cf-host config show`); a flag wins.
#[derive(Debug, Default, Args)]
pub(crate) struct HostArgs {
    /// The config file. Default: $XDG_CONFIG_HOME/cf-host/config.toml, if it exists.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Who answers model calls [env: CF_PROVIDER]. Default: anthropic when
    /// ANTHROPIC_API_KEY is set, else offline.
    #[arg(long, value_enum)]
    pub provider: Option<ProviderKind>,
    /// The API's base URL [env: ANTHROPIC_BASE_URL]. Default: https://api.anthropic.com.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// Grant every plugin without a grant of its own exactly what its manifest
    /// declares: for trying a local plugin.
    #[arg(long)]
    pub trust: bool,
    /// The cassette `--provider replay` answers from.
    #[arg(long, value_name = "FILE", required_if_eq("provider", "replay"))]
    pub cassette: Option<PathBuf>,
    /// Append every answered request/response pair to this JSONL cassette.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Model calls in flight at once across all runs [env: CF_MAX_CONCURRENT; default 10].
    #[arg(long, value_name = "N", value_parser = concurrency)]
    pub max_concurrent: Option<usize>,
    /// Timeout of one model-call attempt, in seconds [env: CF_TIMEOUT; default 30].
    #[arg(long, value_name = "SECS", value_parser = positive_secs)]
    pub timeout: Option<f64>,
    /// Retries of a transient model-call failure (429, 5xx, timeouts, connection
    /// errors) [env: CF_MAX_RETRIES; default 2].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=10))]
    pub max_retries: Option<u32>,
    /// A price table (TOML, the format of llm/prices.toml) whose entries replace the
    /// built-in ones [env: CF_PRICES].
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,
    /// Wall-clock deadline of a run, in seconds [env: CF_DEADLINE; default 120].
    #[arg(long, value_name = "SECS", value_parser = positive_secs)]
    pub deadline: Option<f64>,
    /// Memory a guest may use, in MiB [env: CF_MEMORY_MB; default 64].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub memory_mb: Option<u64>,
    /// Longest task accepted, in characters [env: CF_MAX_TASK_CHARS; default 100000].
    #[arg(long, value_name = "N")]
    pub max_task_chars: Option<usize>,
    /// The host's cache directory: compiled components, agents' stores, responses
    /// [env: CF_CACHE_DIR; default $XDG_CACHE_HOME/cf-host].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Do not use the response cache: every model call goes to the provider.
    #[arg(long)]
    pub no_cache: bool,
    /// Lifetime of a cached answer, in seconds [env: CF_CACHE_TTL; default 86400].
    #[arg(long, value_name = "SECS", value_parser = positive_secs)]
    pub cache_ttl: Option<f64>,
    /// The model for every call (overrides the agent's choice) [env: CF_MODEL].
    #[arg(long)]
    pub model: Option<String>,
    /// Stop starting model calls once the run (or the whole batch) has spent this
    /// many US dollars [env: CF_BUDGET_USD].
    #[arg(long, value_name = "USD", value_parser = non_negative)]
    pub budget_usd: Option<f64>,
    /// Stop starting model calls once the run (or the whole batch) has used this many
    /// tokens [env: CF_BUDGET_TOKENS].
    #[arg(long, value_name = "N")]
    pub budget_tokens: Option<u64>,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// A built-in agent's name (see `cf-host agents`) or a path to a .wasm component.
    /// In a batch, the agent of items that name none.
    #[arg(required_unless_present_any = ["tasks", "batch_task"])]
    pub agent: Option<String>,
    /// The task; `-` or nothing reads it from stdin.
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
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = positive_secs)]
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
    #[arg(long)]
    pub json: bool,
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

fn positive_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if v.is_finite() && v > 0.0 && v <= 86_400.0 {
        Ok(v)
    } else {
        Err(format!("{s} is not in (0, 86400] seconds"))
    }
}

fn temperature(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s} is not in [0, 1]"))
    }
}

fn concurrency(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=10_000).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not in 1..=10000")),
    }
}

fn non_negative(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("{s} is not a non-negative amount"))
    }
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// The effective settings for these flags, from the process environment and the
/// config file.
pub(crate) fn settings(args: &HostArgs) -> Result<config::Settings, String> {
    let (file, path) = config::load_file(args.config.as_deref())?;
    config::resolve(args, &|name| std::env::var(name).ok(), file, path)
}

/// Builds the host from the effective settings. Errors are configuration errors
/// (exit 2).
fn build_host(args: &HostArgs, s: &config::Settings) -> Result<Host, String> {
    let (kind, defaulted) = s.provider_kind();
    if defaulted {
        eprintln!(
            "cf-host: ANTHROPIC_API_KEY is not set; using the offline provider (answers are labelled [offline])"
        );
    }
    let mut provider: Arc<dyn llm::Provider> = match kind {
        ProviderKind::Offline => Arc::new(llm::OfflineProvider::new()),
        ProviderKind::Anthropic => {
            let key = s.api_key.0.clone().ok_or(
                "the anthropic provider needs ANTHROPIC_API_KEY (or api_key in the config file)",
            )?;
            let base = llm::resolve_base_url(s.base_url.as_deref());
            let config = llm::AnthropicConfig::new(base, llm::ApiKey::new(key));
            Arc::new(llm::AnthropicProvider::new(config).map_err(|e| e.to_string())?)
        }
        ProviderKind::Replay => {
            let path = args
                .cassette
                .as_ref()
                .ok_or("--provider replay needs --cassette FILE")?;
            Arc::new(llm::ReplayProvider::open(path).map_err(|e| e.to_string())?)
        }
    };
    if let Some(path) = &args.record {
        provider =
            Arc::new(llm::RecordingProvider::new(provider, path).map_err(|e| e.to_string())?);
    }
    let mut prices = llm::PriceTable::built_in();
    if let Some(path) = &s.prices {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let overrides =
            llm::PriceTable::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        prices = prices.with_overrides(overrides);
    }
    let limits = Limits {
        deadline: Duration::from_secs_f64(s.deadline_secs),
        memory_bytes: s.memory_mb * 1024 * 1024,
        max_task_chars: s.max_task_chars,
        ..Limits::default()
    };
    let mut builder = Host::builder()
        .provider(provider)
        .prices(prices)
        .limits(limits)
        .max_concurrent(s.max_concurrent)
        .max_retries(s.max_retries)
        .attempt_timeout(Duration::from_secs_f64(s.timeout_secs))
        .cache_dir(s.cache_dir.clone())
        .shared_cache_namespace(s.cache_shared_namespace.clone())
        .trust_declared(args.trust);
    for (plugin, grant) in &s.plugins {
        builder = builder.grant(plugin.clone(), grant.clone());
    }
    if !s.cache_enabled {
        builder = builder.no_response_cache();
    } else if let Some(dir) = &s.cache_dir {
        builder = builder.response_cache(response_cache_config(dir, s)?);
    }
    builder.build().map_err(|e| e.to_string())
}

/// Settings and host for a subcommand, or the usage error to exit with.
fn host_and_settings(args: &HostArgs) -> Result<(Host, config::Settings), String> {
    let s = settings(args)?;
    Ok((build_host(args, &s)?, s))
}

/// The response cache's settings for the host cache directory `dir`: the secret from
/// the settings (`CF_CACHE_SECRET` or the file) else the one generated for the
/// directory, the TTL, the excluded agents.
fn response_cache_config(
    dir: &std::path::Path,
    s: &config::Settings,
) -> Result<cf_cache::CacheConfig, String> {
    let mut config = cf_cache::CacheConfig::new(dir.join("responses"));
    config.secret = s
        .cache_secret
        .0
        .clone()
        .map(cf_cache::Secret::new)
        .transpose()
        .map_err(|e| e.to_string())?;
    config.ttl = Duration::from_secs_f64(s.cache_ttl_secs);
    config.exclude_agents = s.cache_exclude_agents.clone();
    Ok(config)
}

fn read_task(task: Option<String>) -> Result<String, String> {
    match task.as_deref() {
        Some("-") | None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("reading the task from stdin: {e}"))?;
            Ok(text)
        }
        Some(t) => Ok(t.to_owned()),
    }
}

fn usage_error(message: impl std::fmt::Display) -> u8 {
    eprintln!("cf-host: {message}");
    exit::USAGE
}

pub(crate) async fn run(args: RunArgs) -> u8 {
    if args.tasks.is_some() || !args.batch_tasks.is_empty() {
        return run_batch(args).await;
    }
    let Some(agent_arg) = args.agent.as_deref() else {
        return usage_error("name an AGENT, or pass --tasks FILE");
    };
    // Validate what needs no engine first, so bad input costs nothing.
    let source = Source::from(agent_arg);
    if let Source::Builtin(name) = &source
        && let Err(e) = cf_host::validate_agent_name(name)
    {
        return usage_error(e);
    }
    let settings = match settings(&args.host) {
        Ok(s) => s,
        Err(e) => return usage_error(e),
    };
    let text = match read_task(args.task) {
        Ok(t) => t,
        Err(e) => return usage_error(e),
    };
    let chars = text.chars().count();
    if chars > settings.max_task_chars {
        return usage_error(cf_host::Error::TaskTooLarge {
            chars,
            max: settings.max_task_chars,
        });
    }
    let host = match build_host(&args.host, &settings) {
        Ok(h) => h,
        Err(e) => return usage_error(e),
    };
    let loaded = match &args.sha256 {
        Some(digest) => host.load_pinned(source, digest).await,
        None => host.load(source).await,
    };
    let agent = match loaded {
        Ok(a) => a,
        Err(e) => return usage_error(e),
    };
    let options = RunOptions {
        model: settings.model.clone(),
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        budget: llm::Budget {
            usd: settings.budget_usd,
            tokens: settings.budget_tokens,
        },
        ..RunOptions::default()
    };
    let task = Task {
        text,
        context: args.context,
    };
    let task_text = task.text.clone();
    let result = agent.run_with(task, &options).await;
    flush_telling_why(&host).await;
    summary::log_runs(&[RunRecord::from_result(agent.name(), &task_text, &result)]);
    let code = match &result {
        Ok(_) => exit::OK,
        Err(e) if e.error.is_usage() => exit::USAGE,
        Err(_) => exit::TASK_FAILED,
    };
    if args.json {
        output::print_json_result(agent.name(), &result);
    } else {
        output::print_human_result(agent.name(), &result);
    }
    // The process exits next (see `main`); dropping the host would wait for the
    // response cache again, which `flush_telling_why` may have given up on.
    std::mem::forget((host, agent));
    code
}

async fn run_batch(args: RunArgs) -> u8 {
    let (host, settings) = match host_and_settings(&args.host) {
        Ok(h) => h,
        Err(e) => return usage_error(e),
    };
    let base = RunOptions {
        model: settings.model.clone(),
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        ..RunOptions::default()
    };
    let (items, bad) = match &args.tasks {
        Some(path) if path == "-" => {
            tasks::read_jsonl(std::io::stdin().lock(), args.agent.as_deref(), &base)
        }
        Some(path) => match std::fs::File::open(path) {
            Ok(f) => tasks::read_jsonl(std::io::BufReader::new(f), args.agent.as_deref(), &base),
            Err(e) => return usage_error(format!("{path}: {e}")),
        },
        None => (
            tasks::from_flags(
                &args.batch_tasks,
                args.agent.as_deref().unwrap_or_default(),
                &args.context,
                &base,
            ),
            Vec::new(),
        ),
    };
    for b in &bad {
        eprintln!(
            "cf-host: {}:{}: skipped: {}",
            args.tasks.as_deref().unwrap_or("-"),
            b.line,
            b.message
        );
    }
    let options = BatchOptions {
        budget: llm::Budget {
            usd: settings.budget_usd,
            tokens: settings.budget_tokens,
        },
        grace: Duration::from_secs_f64(args.grace),
        max_in_flight: None,
    };
    let texts: Vec<String> = items.iter().map(|i| i.task.text.clone()).collect();
    let outcome = batch::run(&host, items, options, args.json).await;
    flush_telling_why(&host).await;
    let records: Vec<RunRecord> = outcome
        .results
        .iter()
        .map(|r| {
            let record = RunRecord::from_result(&r.agent, &texts[r.index], &r.result);
            match &r.id {
                Some(id) => record.with_id(id.clone()),
                None => record,
            }
        })
        .collect();
    summary::log_runs(&records);
    summary::print_batch(&outcome, &records, bad.len());
    let code = batch::exit_code(&outcome, bad.len());
    // The process exits next (see `main`): leave the results and the host (flushed
    // above) to the kernel rather than freeing them piece by piece.
    std::mem::forget((host, outcome, records));
    code
}

/// Flushes the host; if that takes a while (a slow disk), says what it is waiting for.
/// Gives up after one run's deadline: another process holding the response cache's
/// lock must not keep the CLI running past the limit the user set.
async fn flush_telling_why(host: &Host) {
    let flush = host.flush();
    tokio::pin!(flush);
    if tokio::time::timeout(Duration::from_secs(1), &mut flush)
        .await
        .is_err()
    {
        eprintln!(
            "cf-host: writing {} answer(s) to the response cache…",
            host.llm().cache_writes_pending()
        );
        let limit = host
            .limits()
            .deadline
            .saturating_sub(Duration::from_secs(1));
        if tokio::time::timeout(limit, &mut flush).await.is_err() {
            eprintln!(
                "cf-host: gave up writing {} answer(s) to the response cache after the run deadline (is another process holding its lock?); they were not saved",
                host.llm().cache_writes_pending()
            );
        }
    }
}

pub(crate) async fn agents(args: AgentsArgs) -> u8 {
    let (host, _) = match host_and_settings(&args.host) {
        Ok(h) => h,
        Err(e) => return usage_error(e),
    };
    let mut infos = Vec::new();
    for builtin in cf_builtin::AGENTS {
        match host.load(builtin.name).await {
            Ok(agent) => infos.push(agent.info().clone()),
            Err(e) => return usage_error(format!("built-in agent {}: {e}", builtin.name)),
        }
    }
    output::print_agents(&infos, args.json);
    exit::OK
}

/// The component `inspect` and `check` look at, and a host to look at it with.
async fn component_and_host(args: &InspectArgs) -> Result<(Vec<u8>, Host), String> {
    let (host, _) = host_and_settings(&args.host)?;
    let wasm = host
        .read_component(&args.wasm)
        .await
        .map_err(|e| e.to_string())?;
    Ok((wasm, host))
}

pub(crate) async fn inspect(args: InspectArgs) -> u8 {
    let (wasm, host) = match component_and_host(&args).await {
        Ok(w) => w,
        Err(e) => return usage_error(e),
    };
    let interface = match host.inspect(wasm.clone()).await {
        Ok(i) => i,
        Err(e) => return usage_error(e),
    };
    // Describe it only when this host can run it.
    let described = match interface.check() {
        Ok(_) => host
            .load(Source::Bytes(wasm))
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    output::print_inspect(
        &args.wasm,
        &interface,
        described.as_ref().map(|a| a.info()),
        args.json,
    );
    exit::OK
}

pub(crate) async fn cache(args: CacheArgs) -> u8 {
    let host_args = HostArgs {
        config: args.config.clone(),
        cache_dir: args.cache_dir.clone(),
        ..HostArgs::default()
    };
    let settings = match settings(&host_args) {
        Ok(s) => s,
        Err(e) => return usage_error(e),
    };
    let Some(dir) = settings.cache_dir.clone() else {
        return usage_error("no cache directory: pass --cache-dir");
    };
    let cache = match response_cache_config(&dir, &settings)
        .and_then(|c| cf_cache::ResponseCache::open(c).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    let result = match args.action {
        CacheAction::Stats => Ok((serde_json::to_value(cache.stats()), true)),
        CacheAction::Verify { fix } => cache.verify(fix).map(|r| {
            let clean = r.bad.is_empty() || fix;
            (serde_json::to_value(r), clean)
        }),
        CacheAction::Prune => cache.prune().map(|r| (serde_json::to_value(r), true)),
        CacheAction::Clear => cache
            .clear()
            .map(|n| (Ok(serde_json::json!({ "removed": n })), true)),
    };
    match result {
        Ok((Ok(value), ok)) => {
            output::print_cache_report(&value, args.json);
            if ok { exit::OK } else { exit::TASK_FAILED }
        }
        Ok((Err(e), _)) => usage_error(e),
        Err(e) => {
            eprintln!("cf-host: cache: {e}");
            exit::TASK_FAILED
        }
    }
}

pub(crate) fn config(args: ConfigArgs) -> u8 {
    match args.action {
        ConfigAction::Show { json, host } => match settings(&host) {
            Ok(s) => {
                output::print_settings(&s, json);
                exit::OK
            }
            Err(e) => usage_error(e),
        },
    }
}

pub(crate) fn stats(args: StatsArgs) -> u8 {
    let Some(dir) = metrics::default_dir() else {
        return usage_error("no data directory for the run log");
    };
    let since = match args.since {
        Some(d) => match std::time::SystemTime::now().checked_sub(d) {
            Some(t) => Some(t),
            None => return usage_error("--since reaches before the epoch"),
        },
        None => None,
    };
    let report = match MetricsLog::open(&dir, metrics::DEFAULT_MAX_BYTES)
        .and_then(|log| log.read_since(since))
    {
        Ok(r) => r,
        Err(e) => return usage_error(e),
    };
    if report.skipped_lines > 0 {
        eprintln!(
            "cf-host: skipped {} unreadable line(s) of the run log",
            report.skipped_lines
        );
    }
    let summary = cf_host::summary::Summary::from_records(&report.records);
    if args.json {
        println!("{}", serde_json::to_string(&summary).unwrap_or_default());
    } else if args.csv {
        print!("{}", summary.to_csv());
    } else {
        print!("{summary}");
    }
    exit::OK
}

pub(crate) async fn check(args: InspectArgs) -> u8 {
    let (wasm, host) = match component_and_host(&args).await {
        Ok(w) => w,
        Err(e) => return usage_error(e),
    };
    let verdict = match host.inspect(wasm.clone()).await {
        Err(e) => Err((None, e.to_string())),
        Ok(interface) => match interface.check() {
            Err(e) => Err((Some(interface), e.to_string())),
            // Fits the contract: loading also calls describe(), the last check.
            Ok(_) => match host.load(Source::Bytes(wasm.clone())).await {
                Ok(agent) => Ok((interface, agent.info().clone())),
                Err(e) => Err((Some(interface), e.to_string())),
            },
        },
    };
    // What the plugin declares, from its sidecar manifest.
    let sidecar = args.wasm.with_extension("toml");
    let declared = match std::fs::read_to_string(&sidecar) {
        Ok(text) => Some(
            cf_host::permissions::Manifest::parse(&text)
                .map_err(|e| format!("{}: {e}", sidecar.display())),
        ),
        Err(_) => None,
    };
    let verdict = match (verdict, &declared) {
        (Ok(_), Some(Err(e))) => Err((None, format!("invalid plugin manifest {e}"))),
        (v, _) => v,
    };
    let declared = declared.and_then(Result::ok);
    output::print_check(
        &args.wasm,
        &cf_host::component_sha256(&wasm),
        &verdict,
        declared.as_ref(),
        args.json,
    );
    if verdict.is_ok() {
        exit::OK
    } else {
        exit::TASK_FAILED
    }
}

pub(crate) fn new_project(args: NewArgs) -> u8 {
    match crate::new::create(&args.dir, &args.name) {
        Ok(root) => {
            let file = args.name.replace('-', "_");
            eprintln!("cf-host: created {}", root.display());
            println!(
                "cd {} && cargo build --release --target wasm32-wasip2",
                root.display()
            );
            println!(
                "cf-host run --trust {}/target/wasm32-wasip2/release/{file}.wasm \"What is a monad?\"",
                root.display()
            );
            exit::OK
        }
        Err(e) => usage_error(e),
    }
}
