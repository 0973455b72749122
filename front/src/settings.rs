//! The effective configuration: a front end's overrides (the CLI's flags), then
//! environment variables, then the config file, then defaults — resolved in
//! [`resolve`] and nowhere else, and each numeric value checked by one rule ([`Spec`])
//! whichever of the three it came from. The CLI's flag parsers call the same rules.
//!
//! The file is TOML at `$XDG_CONFIG_HOME/cf-host/config.toml` (or `--config FILE`);
//! unknown keys are errors naming the key. Every key, its variable, its range and its
//! default:
//!
//! | key | environment | range | default |
//! |---|---|---|---|
//! | `provider` | `CF_PROVIDER` | offline, anthropic, replay | `anthropic` with a key, else `offline` |
//! | `base_url` | `ANTHROPIC_BASE_URL` | | `https://api.anthropic.com` |
//! | `api_key` | `ANTHROPIC_API_KEY` | | none (secret) |
//! | `model` | `CF_MODEL` | | the agent's choice |
//! | `max_concurrent` | `CF_MAX_CONCURRENT` | 1..=10000 | 10 |
//! | `timeout_secs` | `CF_TIMEOUT` | (0, 86400] | 30 |
//! | `max_retries` | `CF_MAX_RETRIES` | 0..=10 | 2 |
//! | `deadline_secs` | `CF_DEADLINE` | (0, 86400] | 120 |
//! | `memory_mb` | `CF_MEMORY_MB` | 1..=4096 | 64 |
//! | `max_task_chars` | `CF_MAX_TASK_CHARS` | 1..=100000000 | 100000 |
//! | `prices` | `CF_PRICES` | | the built-in table |
//! | `data_dir` (was `cache_dir`) | `CF_DATA_DIR` (was `CF_CACHE_DIR`) | | `$XDG_CACHE_HOME/cf-host` |
//! | `cache.enabled` | `CF_CACHE` (`0`/`1`) | | true |
//! | `cache.ttl_secs` | `CF_CACHE_TTL` | (0, 31536000] | 86400 |
//! | `cache.max_bytes` | `CF_CACHE_MAX_BYTES` | 64 KiB..=1 TiB | 100 MiB |
//! | `cache.secret` | `CF_CACHE_SECRET` | | generated per directory (secret) |
//! | `cache.shared_namespace` | `CF_CACHE_NAMESPACE` | | one namespace per agent |
//! | `cache.exclude_agents` | — | | none |
//! | `store.max_bytes` | `CF_STORE_MAX_BYTES` | 1 KiB..=1 TiB | 10 MiB per agent |
//! | `store.max_entries` | `CF_STORE_MAX_ENTRIES` | 1..=10000000 | 1000 per agent |
//! | `store.when_full` | `CF_STORE_WHEN_FULL` | evict, refuse | evict (least recently used first) |
//! | `budget.usd`, `budget.tokens` | `CF_BUDGET_USD`, `CF_BUDGET_TOKENS` | ≥ 0 | no limit |
//! | `budget.rule` | `CF_BUDGET_RULE` | until-spent, worst-case | until-spent |
//! | `[plugins.<name>]` | — | | no grant: a third-party plugin may call nothing |
//! | `redis.url` | `CF_REDIS_URL` | `redis://host:port/db` | none: everything stays in this process |
//! | `redis.fail` | `CF_REDIS_FAIL` | closed, open | closed |
//! | `redis.lease_secs` | — | [1, 3600] | 10 |
//! | `redis.requests_per_minute`, `redis.input_tokens_per_minute`, `redis.output_tokens_per_minute` | — | ≥ 1 | no limit |
//! | `redis.queue` | `CF_REDIS_QUEUE` | letters, digits, `-`, `_`, `.` | `default` |
//! | `redis.max_deliveries` | — | 1..=100 | 3 |
//! | `serve.listen` | `CF_LISTEN` | an address | `127.0.0.1:8787` |
//! | `serve.grace_secs` | — | (0, 86400] | 30 |
//! | `serve.max_body_bytes` | — | 1 KiB..=1 GiB | 16 MiB |
//! | `[serve.tokens]` | — | tenant = SHA-256 of its token (hex) | none: no authentication, loopback only |
//! | `[serve.tenants.<name>]` | — | `agents`, `models`, `budget_usd_per_day`, `concurrency` | every built-in agent, any model |
//!
//! Sizes in bytes may be written with a binary suffix in flags and variables
//! (`64KiB`, `10MiB`, `1GiB`); the file takes whole numbers of bytes.

use cf_host::{BudgetRule, HostBuilder, Limits, llm, permissions::Grant, storage::WhenFull};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Why the configuration cannot be used; the message names the setting, where its
/// value came from, and what is allowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl From<String> for ConfigError {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for ConfigError {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// One numeric setting: where it may come from and the rule its value must follow.
#[derive(Debug, Clone, Copy)]
pub struct Spec<T: 'static> {
    /// The flag, as a front end names it.
    pub flag: &'static str,
    /// The environment variable.
    pub env: &'static str,
    /// The key in the config file.
    pub key: &'static str,
    /// Parses and checks a value written as text; file values are checked by the same
    /// function (through their text form), so no source is checked less.
    pub parse: fn(&str) -> Result<T, String>,
}

impl<T: ToString> Spec<T> {
    /// The first value of flag, environment and file, checked. A file value is read as
    /// the type the file holds (a number, or a name) and checked through its text.
    fn pick<F: ToString>(
        &self,
        flag: Option<T>,
        env: &dyn Fn(&str) -> Option<String>,
        file: Option<F>,
        file_path: Option<&Path>,
    ) -> Result<Option<T>, ConfigError> {
        if let Some(v) = flag {
            let text = v.to_string();
            return (self.parse)(&text)
                .map(Some)
                .map_err(|e| ConfigError(format!("{} {text}: {e}", self.flag)));
        }
        if let Some(text) = env(self.env).filter(|v| !v.is_empty()) {
            return (self.parse)(&text)
                .map(Some)
                .map_err(|e| ConfigError(format!("{}={text:?}: {e}", self.env)));
        }
        if let Some(v) = file {
            let text = v.to_string();
            let place =
                file_path.map_or_else(|| "the config file".to_owned(), |p| p.display().to_string());
            return (self.parse)(&text)
                .map(Some)
                .map_err(|e| ConfigError(format!("{} = {text} in {place}: {e}", self.key)));
        }
        Ok(None)
    }
}

/// The rules, shared by every source.
pub mod rules {
    /// Seconds in (0, `max`].
    pub fn seconds(text: &str, max: f64) -> Result<f64, String> {
        let v: f64 = text
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a number of seconds"))?;
        if v.is_finite() && v > 0.0 && v <= max {
            Ok(v)
        } else {
            Err(format!("{text} is not in (0, {max}] seconds"))
        }
    }

    /// A whole number in `min..=max`.
    pub fn count(text: &str, min: u64, max: u64) -> Result<u64, String> {
        match text.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            Ok(_) => Err(format!("{text} is not in {min}..={max}")),
            Err(_) => Err(format!("{text:?} is not a whole number")),
        }
    }

    /// A non-negative finite amount.
    pub fn amount(text: &str) -> Result<f64, String> {
        let v: f64 = text
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a number"))?;
        if v.is_finite() && v >= 0.0 {
            Ok(v)
        } else {
            Err(format!("{text} is not a non-negative amount"))
        }
    }

    /// A size in bytes in `min..=max`: a whole number, optionally with a binary
    /// suffix (`KiB`, `MiB`, `GiB`, `TiB`; case-insensitive).
    pub fn bytes(text: &str, min: u64, max: u64) -> Result<u64, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, suffix) = t.split_at(split);
        let unit: u64 = match suffix.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            _ => {
                return Err(format!(
                    "{text:?} is not a size in bytes (a whole number, optionally with KiB, MiB, GiB or TiB)"
                ));
            }
        };
        let n = digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit))
            .ok_or_else(|| format!("{text:?} is not a size in bytes"))?;
        if (min..=max).contains(&n) {
            Ok(n)
        } else {
            Err(format!("{text} is not in {min}..={max} bytes"))
        }
    }
}

const DAY: f64 = 86_400.0;
const KIB: u64 = 1 << 10;
const TIB: u64 = 1 << 40;

/// Model calls in flight at once.
pub const MAX_CONCURRENT: Spec<u64> = Spec {
    flag: "--max-concurrent",
    env: "CF_MAX_CONCURRENT",
    key: "max_concurrent",
    parse: |t| rules::count(t, 1, 10_000),
};
/// Timeout of one attempt; of a streamed call, the longest wait for its first event
/// and between two events (the idle timeout).
pub const TIMEOUT: Spec<f64> = Spec {
    flag: "--timeout",
    env: "CF_TIMEOUT",
    key: "timeout_secs",
    parse: |t| rules::seconds(t, DAY),
};
/// Retries of a transient failure.
pub const MAX_RETRIES: Spec<u64> = Spec {
    flag: "--max-retries",
    env: "CF_MAX_RETRIES",
    key: "max_retries",
    parse: |t| rules::count(t, 0, 10),
};
/// A run's deadline.
pub const DEADLINE: Spec<f64> = Spec {
    flag: "--deadline",
    env: "CF_DEADLINE",
    key: "deadline_secs",
    parse: |t| rules::seconds(t, DAY),
};
/// A guest's memory, in MiB.
pub const MEMORY_MB: Spec<u64> = Spec {
    flag: "--memory-mb",
    env: "CF_MEMORY_MB",
    key: "memory_mb",
    parse: |t| rules::count(t, 1, 4096),
};
/// The longest task.
pub const MAX_TASK_CHARS: Spec<u64> = Spec {
    flag: "--max-task-chars",
    env: "CF_MAX_TASK_CHARS",
    key: "max_task_chars",
    parse: |t| rules::count(t, 1, 100_000_000),
};
/// A cached answer's lifetime.
pub const CACHE_TTL: Spec<f64> = Spec {
    flag: "--cache-ttl",
    env: "CF_CACHE_TTL",
    key: "cache.ttl_secs",
    parse: |t| rules::seconds(t, 365.0 * DAY),
};
/// The response cache's size on disk.
pub const CACHE_MAX_BYTES: Spec<u64> = Spec {
    flag: "--cache-max-bytes",
    env: "CF_CACHE_MAX_BYTES",
    key: "cache.max_bytes",
    parse: |t| rules::bytes(t, 64 * KIB, TIB),
};
/// One agent's store, in bytes.
pub const STORE_MAX_BYTES: Spec<u64> = Spec {
    flag: "--store-max-bytes",
    env: "CF_STORE_MAX_BYTES",
    key: "store.max_bytes",
    parse: |t| rules::bytes(t, KIB, TIB),
};
/// One agent's store, in entries.
pub const STORE_MAX_ENTRIES: Spec<u64> = Spec {
    flag: "--store-max-entries",
    env: "CF_STORE_MAX_ENTRIES",
    key: "store.max_entries",
    parse: |t| rules::count(t, 1, 10_000_000),
};
/// A dollar budget.
pub const BUDGET_USD: Spec<f64> = Spec {
    flag: "--budget-usd",
    env: "CF_BUDGET_USD",
    key: "budget.usd",
    parse: rules::amount,
};
/// A token budget.
pub const BUDGET_TOKENS: Spec<u64> = Spec {
    flag: "--budget-tokens",
    env: "CF_BUDGET_TOKENS",
    key: "budget.tokens",
    parse: |t| rules::count(t, 0, u64::MAX),
};
/// When a call may start under a budget.
pub const BUDGET_RULE: Spec<BudgetRule> = Spec {
    flag: "--budget-rule",
    env: "CF_BUDGET_RULE",
    key: "budget.rule",
    parse: parse_budget_rule,
};
/// What a full agent store does.
pub const STORE_WHEN_FULL: Spec<WhenFull> = Spec {
    flag: "--store-when-full",
    env: "CF_STORE_WHEN_FULL",
    key: "store.when_full",
    parse: parse_when_full,
};

/// Who answers model calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// Deterministic answers without a network, labelled `[offline]`.
    Offline,
    /// The Anthropic Messages API (needs an API key).
    Anthropic,
    /// Answers from a cassette recorded with `--record`; no network.
    Replay,
}

impl ProviderKind {
    /// The names a setting may use.
    pub const NAMES: [&'static str; 3] = ["offline", "anthropic", "replay"];

    /// Parses a provider's name (any case).
    pub fn parse(name: &str) -> Result<Self, String> {
        match name.to_ascii_lowercase().as_str() {
            "offline" => Ok(Self::Offline),
            "anthropic" => Ok(Self::Anthropic),
            "replay" => Ok(Self::Replay),
            _ => Err(format!(
                "unknown provider {name:?}: use offline, anthropic or replay"
            )),
        }
    }
}

/// Parses a budget rule's name.
pub fn parse_budget_rule(name: &str) -> Result<BudgetRule, String> {
    match name.to_ascii_lowercase().as_str() {
        "until-spent" => Ok(BudgetRule::UntilSpent),
        "worst-case" => Ok(BudgetRule::WorstCase),
        _ => Err(format!(
            "unknown budget rule {name:?}: use until-spent (a call starts while the budget is not spent) or worst-case (a call starts only if its worst case fits)"
        )),
    }
}

/// Parses what a full agent store does.
pub fn parse_when_full(name: &str) -> Result<WhenFull, String> {
    match name.to_ascii_lowercase().as_str() {
        "evict" => Ok(WhenFull::Evict),
        "refuse" => Ok(WhenFull::Refuse),
        _ => Err(format!(
            "{name:?} is not evict (the least recently used entries make room) or refuse (the write gets quota-exceeded)"
        )),
    }
}

/// What a front end sets itself (the CLI: its flags), over everything else.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// An explicit config file, which must exist.
    pub config: Option<PathBuf>,
    /// `offline`, `anthropic` or `replay`.
    pub provider: Option<String>,
    /// The API's base URL.
    pub base_url: Option<String>,
    /// The model of every call.
    pub model: Option<String>,
    /// Model calls in flight at once.
    pub max_concurrent: Option<u64>,
    /// Timeout of one attempt, in seconds.
    pub timeout_secs: Option<f64>,
    /// Retries of a transient failure.
    pub max_retries: Option<u64>,
    /// A price table whose entries replace the built-in ones.
    pub prices: Option<PathBuf>,
    /// A run's deadline, in seconds.
    pub deadline_secs: Option<f64>,
    /// A guest's memory, in MiB.
    pub memory_mb: Option<u64>,
    /// The longest task, in characters.
    pub max_task_chars: Option<u64>,
    /// The data directory.
    pub data_dir: Option<PathBuf>,
    /// No response cache.
    pub no_cache: bool,
    /// A cached answer's lifetime, in seconds.
    pub cache_ttl_secs: Option<f64>,
    /// The response cache's size on disk.
    pub cache_max_bytes: Option<u64>,
    /// One agent's store, in bytes.
    pub store_max_bytes: Option<u64>,
    /// One agent's store, in entries.
    pub store_max_entries: Option<u64>,
    /// What a full agent store does.
    pub store_when_full: Option<WhenFull>,
    /// A dollar budget.
    pub budget_usd: Option<f64>,
    /// A token budget.
    pub budget_tokens: Option<u64>,
    /// When a call may start under the budget.
    pub budget_rule: Option<BudgetRule>,
    /// The cassette the replay provider answers from.
    pub cassette: Option<PathBuf>,
    /// A cassette every answered call is appended to.
    pub record: Option<PathBuf>,
    /// Grant local plugins what they declare.
    pub trust: bool,
    /// `cf-host serve`'s address.
    pub listen: Option<String>,
    /// The Redis a fleet shares.
    pub redis: Option<String>,
}

/// The config file. Every field is optional; unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    provider: Option<String>,
    base_url: Option<String>,
    #[serde(default)]
    api_key: Redacted,
    model: Option<String>,
    max_concurrent: Option<u64>,
    timeout_secs: Option<f64>,
    max_retries: Option<u64>,
    deadline_secs: Option<f64>,
    memory_mb: Option<u64>,
    max_task_chars: Option<u64>,
    prices: Option<PathBuf>,
    #[serde(alias = "cache_dir")]
    data_dir: Option<PathBuf>,
    #[serde(default)]
    cache: FileCache,
    #[serde(default)]
    store: FileStore,
    #[serde(default)]
    budget: FileBudget,
    /// Grants per plugin name: `[plugins.<name>]` with `models`, `max_tokens`,
    /// `store`, `store_quota_bytes`, `concurrency`, `thinking`, `max_thinking_budget`,
    /// `media`, `max_media_bytes`, `budget_usd`, `sha256`.
    #[serde(default)]
    plugins: BTreeMap<String, Grant>,
    /// `cf-host serve`.
    #[serde(default)]
    serve: FileServe,
    /// What a fleet of hosts shares.
    #[serde(default)]
    redis: FileRedis,
}

/// `[redis]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRedis {
    #[serde(default)]
    url: Redacted,
    fail: Option<String>,
    lease_secs: Option<f64>,
    requests_per_minute: Option<u64>,
    input_tokens_per_minute: Option<u64>,
    output_tokens_per_minute: Option<u64>,
    queue: Option<String>,
    max_deliveries: Option<u64>,
}

/// `[serve]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServe {
    listen: Option<String>,
    grace_secs: Option<f64>,
    max_body_bytes: Option<u64>,
    #[serde(default)]
    tokens: BTreeMap<String, String>,
    #[serde(default)]
    tenants: BTreeMap<String, TenantGrant>,
}

/// What a tenant of `cf-host serve` may do (`[serve.tenants.<name>]`). Unknown keys
/// are refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantGrant {
    /// The agents it may run: built-in names, or paths of plugins on the server.
    /// Default: every built-in agent, and no plugin path.
    pub agents: Option<Vec<String>>,
    /// The models its runs may use. Default: any. With a list, a run that names no
    /// model runs on the first.
    pub models: Option<Vec<String>>,
    /// What its runs and batches may spend per UTC day, in US dollars. Default: no
    /// limit.
    pub budget_usd_per_day: Option<f64>,
    /// Its runs (and batch items) running at once. Default: no limit of its own.
    pub concurrency: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCache {
    enabled: Option<bool>,
    ttl_secs: Option<f64>,
    max_bytes: Option<u64>,
    #[serde(default)]
    secret: Redacted,
    shared_namespace: Option<String>,
    #[serde(default)]
    exclude_agents: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStore {
    max_bytes: Option<u64>,
    max_entries: Option<u64>,
    when_full: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBudget {
    usd: Option<f64>,
    tokens: Option<u64>,
    rule: Option<String>,
}

/// A secret that prints as `<redacted>` wherever it is shown (`Debug`, `Serialize`),
/// from the moment it is read.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Redacted(pub Option<String>);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "<redacted>"
        } else {
            "<unset>"
        })
    }
}

impl Serialize for Redacted {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(_) => s.serialize_str("<redacted>"),
            None => s.serialize_none(),
        }
    }
}

/// `url` with any `user:password@` in its authority shown as `<redacted>@`.
pub fn url_without_credentials(url: &str) -> std::borrow::Cow<'_, str> {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.into();
    };
    let rest = &url[scheme_end..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_len].rfind('@') {
        Some(at) => format!("{}<redacted>{}", &url[..scheme_end], &rest[at..]).into(),
        None => url.into(),
    }
}

fn serialize_url_without_credentials<S: serde::Serializer>(
    url: &Option<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => s.serialize_str(&url_without_credentials(url)),
        None => s.serialize_none(),
    }
}

/// The configuration in effect. `Debug` shows what `Serialize` shows: secrets and a
/// base URL's credentials redacted.
#[derive(Clone, PartialEq, Serialize)]
pub struct Settings {
    /// `None`: chosen by whether there is a key.
    pub provider: Option<String>,
    /// The API's base URL (shown without credentials).
    #[serde(serialize_with = "serialize_url_without_credentials")]
    pub base_url: Option<String>,
    /// The API key (never shown).
    pub api_key: Redacted,
    /// The model of every call.
    pub model: Option<String>,
    /// Model calls in flight at once.
    pub max_concurrent: usize,
    /// Timeout of one attempt, in seconds.
    pub timeout_secs: f64,
    /// Retries of a transient failure.
    pub max_retries: u32,
    /// A run's deadline, in seconds.
    pub deadline_secs: f64,
    /// A guest's memory, in MiB.
    pub memory_mb: u64,
    /// The longest task, in characters.
    pub max_task_chars: usize,
    /// A price table over the built-in one.
    pub prices: Option<PathBuf>,
    /// The data directory: agents' stores, compiled components, the response cache.
    pub data_dir: Option<PathBuf>,
    /// Whether answers are cached.
    pub cache_enabled: bool,
    /// A cached answer's lifetime, in seconds.
    pub cache_ttl_secs: f64,
    /// The response cache's size on disk, in bytes.
    pub cache_max_bytes: u64,
    /// The response cache's HMAC secret (never shown).
    pub cache_secret: Redacted,
    /// One namespace for every agent's answers.
    pub cache_shared_namespace: Option<String>,
    /// Agents whose answers are not cached.
    pub cache_exclude_agents: Vec<String>,
    /// One agent's store, in bytes.
    pub store_max_bytes: u64,
    /// One agent's store, in entries.
    pub store_max_entries: u64,
    /// What a full agent store does.
    pub store_when_full: WhenFull,
    /// A dollar budget.
    pub budget_usd: Option<f64>,
    /// A token budget.
    pub budget_tokens: Option<u64>,
    /// When a call may start under the budget.
    pub budget_rule: BudgetRule,
    /// The cassette the replay provider answers from.
    pub cassette: Option<PathBuf>,
    /// A cassette every answered call is appended to.
    pub record: Option<PathBuf>,
    /// Whether local plugins get what they declare.
    pub trust: bool,
    /// The operator's grants, by plugin name (from the file).
    pub plugins: BTreeMap<String, Grant>,
    /// The Redis a fleet shares (never shown: it may hold a password).
    pub redis_url: Redacted,
    /// Whether model calls fail or go under the local limit when Redis is away.
    pub redis_fail_open: bool,
    /// How long a fleet slot lives without a heartbeat, in seconds.
    pub redis_lease_secs: f64,
    /// The account's requests per minute across the fleet.
    pub redis_requests_per_minute: Option<u64>,
    /// The account's input tokens per minute across the fleet.
    pub redis_input_tokens_per_minute: Option<u64>,
    /// The account's output tokens per minute across the fleet.
    pub redis_output_tokens_per_minute: Option<u64>,
    /// The work queue's name (`cf-host run --queue`, `cf-host worker`).
    pub redis_queue: String,
    /// Deliveries of a queued item without a result before it is given up as
    /// `abandoned`.
    pub redis_max_deliveries: u64,
    /// `cf-host serve`'s address.
    pub serve_listen: String,
    /// `cf-host serve`'s grace period at shutdown, in seconds.
    pub serve_grace_secs: f64,
    /// `cf-host serve`'s cap of a request body, in bytes.
    pub serve_max_body_bytes: u64,
    /// Tenant → the SHA-256 of its token (hex).
    pub serve_tokens: BTreeMap<String, String>,
    /// Tenant → its grant.
    pub serve_tenants: BTreeMap<String, TenantGrant>,
    /// Where the file came from, if one was read.
    pub config_file: Option<PathBuf>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match serde_json::to_string(self) {
            Ok(shown) => write!(f, "Settings {shown}"),
            Err(_) => f.write_str("Settings { .. }"),
        }
    }
}

/// The default config file.
pub fn default_path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("cf-host").join("config.toml"))
}

/// Reads the config file: `explicit` must exist; the default one may be absent.
pub fn load_file(explicit: Option<&Path>) -> Result<(FileConfig, Option<PathBuf>), ConfigError> {
    let (path, required) = match explicit {
        Some(p) => (p.to_path_buf(), true),
        None => match default_path() {
            Some(p) => (p, false),
            None => return Ok((FileConfig::default(), None)),
        },
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let file = toml::from_str(&text)
                .map_err(|e| ConfigError(format!("{}: {}", path.display(), e.message())))?;
            Ok((file, Some(path)))
        }
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
            Ok((FileConfig::default(), None))
        }
        Err(e) => Err(ConfigError(format!("{}: {e}", path.display()))),
    }
}

/// The effective settings for `overrides`, from the process environment and the
/// config file.
pub fn from_process(overrides: &Overrides) -> Result<Settings, ConfigError> {
    let (file, path) = load_file(overrides.config.as_deref())?;
    resolve(overrides, &|name| std::env::var(name).ok(), file, path)
}

/// A rate of at least 1, or none.
fn positive_rate(key: &str, rate: Option<u64>) -> Result<Option<u64>, ConfigError> {
    match rate {
        Some(0) => {
            Err(format!("{key} = 0: a rate must be at least 1 (leave it out for no limit)").into())
        }
        other => Ok(other),
    }
}

/// Overrides > environment > file > defaults, for every setting.
pub fn resolve(
    flags: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
    file: FileConfig,
    config_file: Option<PathBuf>,
) -> Result<Settings, ConfigError> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    let at = config_file.as_deref();
    let provider = flags
        .provider
        .clone()
        .or_else(|| var("CF_PROVIDER"))
        .or(file.provider);
    if let Some(p) = &provider {
        ProviderKind::parse(p)?;
    }
    let cache_enabled = if flags.no_cache {
        false
    } else {
        match var("CF_CACHE") {
            Some(v) => !matches!(v.as_str(), "0" | "false" | "off" | "no"),
            None => file.cache.enabled.unwrap_or(true),
        }
    };
    // The library's defaults, so that they live in one place.
    let limits = Limits::default();
    let store = cf_host::StoreLimits::default();
    let cache = cf_host::CacheConfig::new("");
    // Every count is checked against its range before it is narrowed.
    let narrow = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    let settings = Settings {
        provider,
        base_url: flags
            .base_url
            .clone()
            .or_else(|| var("ANTHROPIC_BASE_URL"))
            .or(file.base_url),
        api_key: Redacted(var("ANTHROPIC_API_KEY").or(file.api_key.0)),
        model: flags
            .model
            .clone()
            .or_else(|| var("CF_MODEL"))
            .or(file.model),
        max_concurrent: MAX_CONCURRENT
            .pick(flags.max_concurrent, env, file.max_concurrent, at)?
            .map_or(llm::DEFAULT_MAX_CONCURRENT, narrow),
        timeout_secs: TIMEOUT
            .pick(flags.timeout_secs, env, file.timeout_secs, at)?
            .unwrap_or(llm::DEFAULT_ATTEMPT_TIMEOUT.as_secs_f64()),
        max_retries: MAX_RETRIES
            .pick(flags.max_retries, env, file.max_retries, at)?
            .map_or(llm::DEFAULT_MAX_RETRIES, |v| {
                u32::try_from(v).unwrap_or(u32::MAX)
            }),
        deadline_secs: DEADLINE
            .pick(flags.deadline_secs, env, file.deadline_secs, at)?
            .unwrap_or(limits.deadline.as_secs_f64()),
        memory_mb: MEMORY_MB
            .pick(flags.memory_mb, env, file.memory_mb, at)?
            .unwrap_or(limits.memory_bytes / (1024 * 1024)),
        max_task_chars: MAX_TASK_CHARS
            .pick(flags.max_task_chars, env, file.max_task_chars, at)?
            .map_or(limits.max_task_chars, narrow),
        prices: flags
            .prices
            .clone()
            .or_else(|| var("CF_PRICES").map(PathBuf::from))
            .or(file.prices),
        data_dir: flags
            .data_dir
            .clone()
            .or_else(|| var("CF_DATA_DIR").map(PathBuf::from))
            .or_else(|| var("CF_CACHE_DIR").map(PathBuf::from))
            .or(file.data_dir)
            .or_else(cf_host::default_data_dir),
        cache_enabled,
        cache_ttl_secs: CACHE_TTL
            .pick(flags.cache_ttl_secs, env, file.cache.ttl_secs, at)?
            .unwrap_or(cache.ttl.as_secs_f64()),
        cache_max_bytes: CACHE_MAX_BYTES
            .pick(flags.cache_max_bytes, env, file.cache.max_bytes, at)?
            .unwrap_or(cache.max_bytes),
        cache_secret: Redacted(var("CF_CACHE_SECRET").or(file.cache.secret.0)),
        cache_shared_namespace: var("CF_CACHE_NAMESPACE").or(file.cache.shared_namespace),
        cache_exclude_agents: file.cache.exclude_agents,
        store_max_bytes: STORE_MAX_BYTES
            .pick(flags.store_max_bytes, env, file.store.max_bytes, at)?
            .unwrap_or(store.max_bytes),
        store_max_entries: STORE_MAX_ENTRIES
            .pick(flags.store_max_entries, env, file.store.max_entries, at)?
            .unwrap_or(store.max_entries),
        store_when_full: STORE_WHEN_FULL
            .pick(flags.store_when_full, env, file.store.when_full, at)?
            .unwrap_or_default(),
        budget_usd: BUDGET_USD.pick(flags.budget_usd, env, file.budget.usd, at)?,
        budget_tokens: BUDGET_TOKENS.pick(flags.budget_tokens, env, file.budget.tokens, at)?,
        budget_rule: BUDGET_RULE
            .pick(flags.budget_rule, env, file.budget.rule, at)?
            .unwrap_or_default(),
        cassette: flags.cassette.clone(),
        record: flags.record.clone(),
        trust: flags.trust,
        plugins: file.plugins,
        serve_listen: flags
            .listen
            .clone()
            .or_else(|| var("CF_LISTEN"))
            .or(file.serve.listen)
            .unwrap_or_else(|| "127.0.0.1:8787".to_owned()),
        serve_grace_secs: match file.serve.grace_secs {
            Some(g) if g > 0.0 && g <= DAY => g,
            Some(g) => {
                return Err(format!("serve.grace_secs = {g}: must be in (0, 86400]").into());
            }
            None => 30.0,
        },
        serve_max_body_bytes: match file.serve.max_body_bytes {
            Some(b) if (1024..=1 << 30).contains(&b) => b,
            Some(b) => {
                return Err(
                    format!("serve.max_body_bytes = {b}: must be in 1024..=1073741824").into(),
                );
            }
            None => 16 << 20,
        },
        redis_url: Redacted(
            flags
                .redis
                .clone()
                .or_else(|| var("CF_REDIS_URL"))
                .or(file.redis.url.0),
        ),
        redis_fail_open: match var("CF_REDIS_FAIL").or(file.redis.fail).as_deref() {
            None | Some("closed") => false,
            Some("open") => true,
            Some(other) => {
                return Err(format!("redis.fail = {other:?}: must be `closed` or `open`").into());
            }
        },
        redis_lease_secs: match file.redis.lease_secs {
            Some(l) if (1.0..=3600.0).contains(&l) => l,
            Some(l) => return Err(format!("redis.lease_secs = {l}: must be in [1, 3600]").into()),
            None => 10.0,
        },
        redis_requests_per_minute: positive_rate(
            "redis.requests_per_minute",
            file.redis.requests_per_minute,
        )?,
        redis_input_tokens_per_minute: positive_rate(
            "redis.input_tokens_per_minute",
            file.redis.input_tokens_per_minute,
        )?,
        redis_output_tokens_per_minute: positive_rate(
            "redis.output_tokens_per_minute",
            file.redis.output_tokens_per_minute,
        )?,
        redis_queue: match var("CF_REDIS_QUEUE").or(file.redis.queue) {
            Some(q)
                if !q.is_empty()
                    && q.len() <= 64
                    && q.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) =>
            {
                q
            }
            Some(q) => {
                return Err(format!(
                    "redis.queue = {q:?}: must be 1 to 64 letters, digits, '-', '_' or '.'"
                )
                .into());
            }
            None => "default".into(),
        },
        redis_max_deliveries: match file.redis.max_deliveries {
            Some(n) if (1..=100).contains(&n) => n,
            Some(n) => {
                return Err(format!("redis.max_deliveries = {n}: must be in 1..=100").into());
            }
            None => 3,
        },
        serve_tokens: file.serve.tokens,
        serve_tenants: file.serve.tenants,
        config_file,
    };
    Ok(settings)
}

impl Settings {
    /// The provider to use, and whether it was chosen for lack of a key.
    pub fn provider_kind(&self) -> (ProviderKind, bool) {
        match self
            .provider
            .as_deref()
            .and_then(|p| ProviderKind::parse(p).ok())
        {
            Some(kind) => (kind, false),
            None if self.api_key.0.is_some() => (ProviderKind::Anthropic, false),
            None => (ProviderKind::Offline, true),
        }
    }

    /// The budget of a run, or of a whole batch.
    pub fn budget(&self) -> cf_host::Budget {
        cf_host::Budget {
            usd: self.budget_usd,
            tokens: self.budget_tokens,
            rule: self.budget_rule,
        }
    }

    /// The limits of every run.
    pub fn limits(&self) -> Limits {
        Limits {
            deadline: Duration::from_secs_f64(self.deadline_secs),
            memory_bytes: self.memory_mb * 1024 * 1024,
            max_task_chars: self.max_task_chars,
            ..Limits::default()
        }
    }

    /// The response cache's settings in the data directory `dir`: the secret from the
    /// settings (`CF_CACHE_SECRET` or the file) else the one generated for the
    /// directory, the TTL, the size, the excluded agents.
    pub fn response_cache(&self, dir: &Path) -> Result<cf_host::CacheConfig, ConfigError> {
        let mut config = cf_host::CacheConfig::new(dir.join("responses"));
        config.secret = self
            .cache_secret
            .0
            .clone()
            .map(cf_host::storage::Secret::new)
            .transpose()
            .map_err(|e| ConfigError(e.to_string()))?;
        config.ttl = Duration::from_secs_f64(self.cache_ttl_secs);
        config.max_bytes = self.cache_max_bytes;
        config.exclude_agents = self.cache_exclude_agents.clone();
        Ok(config)
    }

    /// The fleet's concurrency limit on Redis, when `redis.url` is set: the limit is
    /// `max_concurrent`, of the whole fleet for this API account.
    pub async fn fleet_limit(&self) -> Result<Option<cf_fleet::RedisLimit>, ConfigError> {
        let Some(url) = &self.redis_url.0 else {
            return Ok(None);
        };
        let (kind, _) = self.provider_kind();
        let account = match (kind, &self.api_key.0) {
            (ProviderKind::Anthropic, Some(key)) => cf_fleet::account_of(key),
            _ => cf_fleet::account_of(&format!("{kind:?}")),
        };
        let config = cf_fleet::FleetConfig {
            lease: Duration::from_secs_f64(self.redis_lease_secs),
            fail: if self.redis_fail_open {
                cf_fleet::FailMode::Open
            } else {
                cf_fleet::FailMode::Closed
            },
            requests_per_minute: self.redis_requests_per_minute,
            input_tokens_per_minute: self.redis_input_tokens_per_minute,
            output_tokens_per_minute: self.redis_output_tokens_per_minute,
            ..cf_fleet::FleetConfig::new(self.max_concurrent, account)
        };
        cf_fleet::RedisLimit::connect(url, config)
            .await
            .map(Some)
            .map_err(ConfigError)
    }

    /// The fleet's work queue at `url` (`--queue`) or else `redis.url`.
    pub async fn work_queue(&self, url: Option<&str>) -> Result<cf_fleet::WorkQueue, ConfigError> {
        let Some(url) = url.or(self.redis_url.0.as_deref()) else {
            return Err(ConfigError(
                "no work queue: give its Redis URL (--queue redis://…, --redis, CF_REDIS_URL or redis.url)".into(),
            ));
        };
        let config = cf_fleet::QueueConfig {
            name: self.redis_queue.clone(),
            lease: Duration::from_secs_f64(self.redis_lease_secs),
            max_deliveries: self.redis_max_deliveries,
            ..cf_fleet::QueueConfig::default()
        };
        cf_fleet::WorkQueue::connect(url, config)
            .await
            .map_err(ConfigError)
    }

    /// The fleet's response cache on Redis, when `redis.url` is set, the response cache
    /// is on and `cache.secret` is set (answers are sealed with it: it must be the same
    /// on every host). Without the secret there is no shared tier, and the reason.
    pub async fn fleet_cache(
        &self,
    ) -> Result<(Option<cf_fleet::RedisCache>, Option<String>), ConfigError> {
        let Some(url) = &self.redis_url.0 else {
            return Ok((None, None));
        };
        if !self.cache_enabled || self.data_dir.is_none() {
            return Ok((None, None));
        }
        let Some(secret) = &self.cache_secret.0 else {
            return Ok((
                None,
                Some("the fleet shares no response cache: set cache.secret (CF_CACHE_SECRET), the same on every host, to seal its answers".into()),
            ));
        };
        let config = cf_fleet::CacheConfig::new(
            secret.as_bytes().to_vec(),
            Duration::from_secs_f64(self.cache_ttl_secs),
        );
        cf_fleet::RedisCache::connect(url, config)
            .await
            .map(|c| (Some(c), None))
            .map_err(ConfigError)
    }

    /// The provider these settings choose, wrapped in a recorder when asked.
    pub fn provider(&self) -> Result<Arc<dyn llm::Provider>, ConfigError> {
        self.provider_observed(None)
    }

    /// [`Settings::provider`], telling `observer` when the API's rate-limit headers ask
    /// for a pause (the fleet's limit: [`Settings::fleet_limit`]).
    pub fn provider_observed(
        &self,
        observer: Option<Arc<dyn llm::RateObserver>>,
    ) -> Result<Arc<dyn llm::Provider>, ConfigError> {
        let (kind, _) = self.provider_kind();
        let mut provider: Arc<dyn llm::Provider> = match kind {
            ProviderKind::Offline => Arc::new(llm::OfflineProvider::new()),
            ProviderKind::Anthropic => {
                let key = self.api_key.0.clone().ok_or(
                    "the anthropic provider needs ANTHROPIC_API_KEY (or api_key in the config file)",
                )?;
                let base = llm::resolve_base_url(self.base_url.as_deref());
                let mut config = llm::AnthropicConfig::new(base, llm::ApiKey::new(key));
                config.rate_observer = observer;
                Arc::new(
                    llm::AnthropicProvider::new(config).map_err(|e| ConfigError(e.to_string()))?,
                )
            }
            ProviderKind::Replay => {
                let path = self
                    .cassette
                    .as_ref()
                    .ok_or("the replay provider needs a cassette (--cassette FILE)")?;
                Arc::new(llm::ReplayProvider::open(path).map_err(|e| ConfigError(e.to_string()))?)
            }
        };
        if let Some(path) = &self.record {
            provider = Arc::new(
                llm::RecordingProvider::new(provider, path)
                    .map_err(|e| ConfigError(e.to_string()))?,
            );
        }
        Ok(provider)
    }

    /// A host builder with everything these settings say: provider, prices, limits,
    /// concurrency, retries, the data directory, the response cache, the agents'
    /// stores, grants. A front end may add to it before building.
    pub fn host_builder(&self) -> Result<HostBuilder, ConfigError> {
        self.host_builder_observed(None)
    }

    /// [`Settings::host_builder`] whose provider tells `observer` when the API asks for
    /// a pause ([`Settings::provider_observed`]).
    pub fn host_builder_observed(
        &self,
        observer: Option<Arc<dyn llm::RateObserver>>,
    ) -> Result<HostBuilder, ConfigError> {
        let mut prices = llm::PriceTable::built_in();
        if let Some(path) = &self.prices {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
            let overrides = llm::PriceTable::parse(&text)
                .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
            prices = prices.with_overrides(overrides);
        }
        let mut builder = cf_host::Host::builder()
            .provider(self.provider_observed(observer)?)
            .prices(prices)
            .limits(self.limits())
            .max_concurrent(self.max_concurrent)
            .max_retries(self.max_retries)
            .attempt_timeout(Duration::from_secs_f64(self.timeout_secs))
            .data_dir(self.data_dir.clone())
            .store_limits(cf_host::StoreLimits {
                max_bytes: self.store_max_bytes,
                max_entries: self.store_max_entries,
                when_full: self.store_when_full,
                ..cf_host::StoreLimits::default()
            })
            .shared_cache_namespace(self.cache_shared_namespace.clone())
            .trust_declared(self.trust);
        for (plugin, grant) in &self.plugins {
            builder = builder.grant(plugin.clone(), grant.clone());
        }
        if !self.cache_enabled {
            builder = builder.no_response_cache();
        } else if let Some(dir) = &self.data_dir {
            builder = builder.response_cache(self.response_cache(dir)?);
        }
        Ok(builder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(set: impl FnOnce(&mut Overrides)) -> Overrides {
        let mut o = Overrides::default();
        set(&mut o);
        o
    }

    fn none() -> Overrides {
        Overrides::default()
    }

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).expect("valid config")
    }

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn flags_beat_environment_beats_file_beats_defaults() {
        let f = || {
            file("max_concurrent = 3\ntimeout_secs = 7\nmax_retries = 4\nmodel = \"from-file\"\n")
        };
        let s = resolve(&none(), &env(&[]), FileConfig::default(), None).unwrap();
        assert_eq!(
            (
                s.max_concurrent,
                s.timeout_secs,
                s.max_retries,
                s.model.as_deref()
            ),
            (10, 30.0, 2, None),
            "defaults"
        );
        let s = resolve(&none(), &env(&[]), f(), None).unwrap();
        assert_eq!(
            (
                s.max_concurrent,
                s.timeout_secs,
                s.max_retries,
                s.model.as_deref()
            ),
            (3, 7.0, 4, Some("from-file")),
            "file over defaults"
        );
        let s = resolve(
            &none(),
            &env(&[("CF_MAX_CONCURRENT", "5"), ("CF_MODEL", "from-env")]),
            f(),
            None,
        )
        .unwrap();
        assert_eq!(
            (s.max_concurrent, s.timeout_secs, s.model.as_deref()),
            (5, 7.0, Some("from-env")),
            "environment over file"
        );
        let s = resolve(
            &flags(|o| {
                o.max_concurrent = Some(9);
                o.timeout_secs = Some(1.0);
            }),
            &env(&[("CF_MAX_CONCURRENT", "5")]),
            f(),
            None,
        )
        .unwrap();
        assert_eq!(
            (s.max_concurrent, s.timeout_secs),
            (9, 1.0),
            "flags over everything"
        );
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let err = toml::from_str::<FileConfig>("max_concurency = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_concurency"), "{err}");
        let err = toml::from_str::<FileConfig>("[cache]\nttl = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ttl"), "{err}");
    }

    /// Regression: `cf-host config show` printed a base URL's `user:password@` in full.
    #[test]
    fn credentials_in_the_base_url_are_not_shown() {
        assert_eq!(
            url_without_credentials("https://user:hunter2@proxy.example:8443/v1?x=@"),
            "https://<redacted>@proxy.example:8443/v1?x=@"
        );
        assert_eq!(
            url_without_credentials("http://127.0.0.1:8080/a@b"),
            "http://127.0.0.1:8080/a@b"
        );
        let settings = resolve(
            &flags(|o| o.base_url = Some("https://u:p4ss@h/".into())),
            &env(&[]),
            FileConfig::default(),
            None,
        )
        .expect("settings");
        let shown = serde_json::to_string(&settings).expect("json");
        assert!(!shown.contains("p4ss"), "{shown}");
        let debug = format!("{settings:?}");
        assert!(!debug.contains("p4ss"), "{debug}");
        assert!(shown.contains("https://<redacted>@h/"), "{shown}");
    }

    #[test]
    fn secrets_are_redacted_and_the_cache_can_be_turned_off_anywhere() {
        let s = resolve(
            &none(),
            &env(&[("ANTHROPIC_API_KEY", "sk-very-secret")]),
            file("[cache]\nsecret = \"0123456789abcdef0123\"\nenabled = false\n"),
            None,
        )
        .unwrap();
        let shown = format!("{s:?} {}", toml::to_string(&s).unwrap());
        let read =
            file("api_key = \"sk-in-the-file\"\n[cache]\nsecret = \"0123456789abcdef0123\"\n");
        let debug = format!("{read:?}");
        assert!(
            !debug.contains("sk-in-the-file") && !debug.contains("0123456789abcdef0123"),
            "the file's secrets are redacted as soon as they are read: {debug}"
        );
        assert!(
            !shown.contains("sk-very-secret") && !shown.contains("0123456789abcdef0123"),
            "{shown}"
        );
        assert!(!s.cache_enabled);
        assert_eq!(
            s.provider_kind(),
            (ProviderKind::Anthropic, false),
            "a key selects the API"
        );
        let s = resolve(
            &flags(|o| o.no_cache = true),
            &env(&[("CF_CACHE", "1")]),
            FileConfig::default(),
            None,
        )
        .unwrap();
        assert!(!s.cache_enabled, "the flag wins");
    }

    #[test]
    fn bad_values_from_the_environment_or_file_are_clear_errors() {
        assert!(
            resolve(
                &none(),
                &env(&[("CF_TIMEOUT", "soon")]),
                FileConfig::default(),
                None
            )
            .unwrap_err()
            .0
            .contains("CF_TIMEOUT")
        );
        assert!(
            resolve(&none(), &env(&[]), file("memory_mb = 0\n"), None)
                .unwrap_err()
                .0
                .contains("memory_mb")
        );
        assert!(
            resolve(
                &none(),
                &env(&[("CF_PROVIDER", "openai")]),
                FileConfig::default(),
                None
            )
            .unwrap_err()
            .0
            .contains("openai")
        );
    }

    /// Regression: `CF_MAX_RETRIES` was not range-checked and was truncated to 32
    /// bits, and seconds were capped at a day for flags but a year for the file. One
    /// rule now checks every source, and the error names where the value came from.
    #[test]
    fn every_source_is_checked_by_the_same_rule() {
        let err = resolve(
            &none(),
            &env(&[("CF_MAX_RETRIES", "11")]),
            FileConfig::default(),
            None,
        )
        .unwrap_err()
        .0;
        assert!(
            err.contains("CF_MAX_RETRIES") && err.contains("0..=10"),
            "{err}"
        );
        let err = resolve(
            &none(),
            &env(&[("CF_MAX_RETRIES", "4294967298")]),
            FileConfig::default(),
            None,
        )
        .unwrap_err()
        .0;
        assert!(err.contains("0..=10"), "not truncated to 2: {err}");
        let ok = resolve(
            &none(),
            &env(&[("CF_MAX_RETRIES", "10")]),
            FileConfig::default(),
            None,
        )
        .expect("10 is the most");
        assert_eq!(ok.max_retries, 10);
        for (flag, envv, text) in [
            (Some(86_401.0), None, None),
            (None, Some("86401"), None),
            (None, None, Some("timeout_secs = 86401\n")),
        ] {
            let vars: &'static [(&str, &str)] = match envv {
                Some(_) => &[("CF_TIMEOUT", "86401")],
                None => &[],
            };
            let err = resolve(
                &flags(|o| o.timeout_secs = flag),
                &env(vars),
                text.map(file).unwrap_or_default(),
                Some(PathBuf::from("/etc/cf.toml")),
            )
            .unwrap_err()
            .0;
            assert!(err.contains("(0, 86400]"), "{err}");
            let source = if flag.is_some() {
                "--timeout"
            } else if envv.is_some() {
                "CF_TIMEOUT"
            } else {
                "timeout_secs = 86401 in /etc/cf.toml"
            };
            assert!(err.contains(source), "{err}");
        }
        let day = resolve(&none(), &env(&[]), file("timeout_secs = 86400\n"), None)
            .expect("a day is the most");
        assert_eq!(day.timeout_secs, 86_400.0);
    }

    /// The response cache's size limit, from each of the three places, with suffixes.
    #[test]
    fn the_response_cache_size_is_settable_everywhere() {
        let s = resolve(&none(), &env(&[]), FileConfig::default(), None).expect("defaults");
        assert_eq!(s.cache_max_bytes, 100 * 1024 * 1024);
        let s = resolve(
            &none(),
            &env(&[]),
            file("[cache]\nmax_bytes = 1048576\n"),
            None,
        )
        .expect("file");
        assert_eq!(s.cache_max_bytes, 1 << 20);
        let s = resolve(
            &none(),
            &env(&[("CF_CACHE_MAX_BYTES", "2MiB")]),
            file("[cache]\nmax_bytes = 1048576\n"),
            None,
        )
        .expect("environment");
        assert_eq!(s.cache_max_bytes, 2 << 20);
        let s = resolve(
            &flags(|o| o.cache_max_bytes = Some(3 << 20)),
            &env(&[("CF_CACHE_MAX_BYTES", "2MiB")]),
            FileConfig::default(),
            None,
        )
        .expect("flag");
        assert_eq!(s.cache_max_bytes, 3 << 20);
        assert_eq!(
            s.response_cache(Path::new("/tmp/d"))
                .expect("config")
                .max_bytes,
            3 << 20
        );
        let err = resolve(
            &none(),
            &env(&[("CF_CACHE_MAX_BYTES", "1KiB")]),
            FileConfig::default(),
            None,
        )
        .unwrap_err()
        .0;
        assert!(err.contains("65536..="), "below the floor: {err}");
        assert!(rules::bytes("10 MiB", 1, u64::MAX) == Ok(10 << 20));
        assert!(
            rules::bytes("10MB", 1, u64::MAX).is_err(),
            "decimal units are ambiguous"
        );
        assert!(
            rules::bytes("99999999999TiB", 1, u64::MAX).is_err(),
            "overflow"
        );
    }

    #[test]
    fn the_budget_rule_and_the_old_directory_key() {
        let s = resolve(
            &none(),
            &env(&[]),
            file("[budget]\nrule = \"worst-case\"\n"),
            None,
        )
        .expect("file");
        assert_eq!(s.budget().rule, BudgetRule::WorstCase);
        let s = resolve(&none(), &env(&[]), FileConfig::default(), None).expect("default");
        assert_eq!(s.budget().rule, BudgetRule::UntilSpent);
        let err = resolve(
            &none(),
            &env(&[("CF_BUDGET_RULE", "strictest")]),
            FileConfig::default(),
            None,
        )
        .unwrap_err()
        .0;
        assert!(
            err.contains("CF_BUDGET_RULE") && err.contains("strictest"),
            "{err}"
        );
        let s = resolve(&none(), &env(&[]), file("cache_dir = \"/x/old\"\n"), None)
            .expect("the old key");
        assert_eq!(s.data_dir, Some(PathBuf::from("/x/old")));
        let s = resolve(
            &none(),
            &env(&[("CF_CACHE_DIR", "/x/env-old")]),
            FileConfig::default(),
            None,
        )
        .expect("the old variable");
        assert_eq!(s.data_dir, Some(PathBuf::from("/x/env-old")));
    }
}
