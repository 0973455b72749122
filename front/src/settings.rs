//! The effective configuration: flags, then environment variables, then the config
//! file, then defaults — resolved in [`resolve`] and nowhere else.
//!
//! The file is TOML at `$XDG_CONFIG_HOME/cf-host/config.toml` (or `--config FILE`);
//! unknown keys are errors naming the key. Every key, its variable and its default:
//!
//! | key | environment | default |
//! |---|---|---|
//! | `provider` | `CF_PROVIDER` | `anthropic` with a key, else `offline` |
//! | `base_url` | `ANTHROPIC_BASE_URL` | `https://api.anthropic.com` |
//! | `api_key` | `ANTHROPIC_API_KEY` | none (secret) |
//! | `model` | `CF_MODEL` | the agent's choice |
//! | `max_concurrent` | `CF_MAX_CONCURRENT` | 10 |
//! | `timeout_secs` | `CF_TIMEOUT` | 30 |
//! | `max_retries` | `CF_MAX_RETRIES` | 2 |
//! | `deadline_secs` | `CF_DEADLINE` | 120 |
//! | `memory_mb` | `CF_MEMORY_MB` | 64 |
//! | `max_task_chars` | `CF_MAX_TASK_CHARS` | 100000 |
//! | `prices` | `CF_PRICES` | the built-in table |
//! | `cache_dir` | `CF_CACHE_DIR` | `$XDG_CACHE_HOME/cf-host` |
//! | `cache.enabled` | `CF_CACHE` (`0`/`1`) | true |
//! | `cache.ttl_secs` | `CF_CACHE_TTL` | 86400 |
//! | `cache.secret` | `CF_CACHE_SECRET` | generated per directory (secret) |
//! | `cache.shared_namespace` | `CF_CACHE_NAMESPACE` | one namespace per agent |
//! | `cache.exclude_agents` | — | none |
//! | `budget.usd`, `budget.tokens` | `CF_BUDGET_USD`, `CF_BUDGET_TOKENS` | no limit |
//! | `[plugins.<name>]` | — | no grant: a third-party plugin may call nothing |

use crate::cli::{HostArgs, ProviderKind};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The config file. Every field is optional; unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    provider: Option<String>,
    base_url: Option<String>,
    api_key: Option<String>,
    model: Option<String>,
    max_concurrent: Option<usize>,
    timeout_secs: Option<f64>,
    max_retries: Option<u32>,
    deadline_secs: Option<f64>,
    memory_mb: Option<u64>,
    max_task_chars: Option<usize>,
    prices: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    #[serde(default)]
    cache: FileCache,
    #[serde(default)]
    budget: FileBudget,
    /// Grants per plugin name: `[plugins.<name>]` with `models`, `max_tokens`,
    /// `cache`, `concurrency`, `budget_usd`, `sha256`.
    #[serde(default)]
    plugins: std::collections::BTreeMap<String, cf_host::permissions::Grant>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCache {
    enabled: Option<bool>,
    ttl_secs: Option<f64>,
    secret: Option<String>,
    shared_namespace: Option<String>,
    #[serde(default)]
    exclude_agents: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBudget {
    usd: Option<f64>,
    tokens: Option<u64>,
}

/// A secret that prints as `<redacted>` wherever it is shown.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Redacted(pub Option<String>);

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
pub(crate) fn url_without_credentials(url: &str) -> std::borrow::Cow<'_, str> {
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

/// The configuration in effect.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Settings {
    /// `None`: chosen by whether there is a key.
    pub provider: Option<String>,
    #[serde(serialize_with = "serialize_url_without_credentials")]
    pub base_url: Option<String>,
    pub api_key: Redacted,
    pub model: Option<String>,
    pub max_concurrent: usize,
    pub timeout_secs: f64,
    pub max_retries: u32,
    pub deadline_secs: f64,
    pub memory_mb: u64,
    pub max_task_chars: usize,
    pub prices: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub cache_enabled: bool,
    pub cache_ttl_secs: f64,
    pub cache_secret: Redacted,
    pub cache_shared_namespace: Option<String>,
    pub cache_exclude_agents: Vec<String>,
    pub budget_usd: Option<f64>,
    pub budget_tokens: Option<u64>,
    /// The operator's grants, by plugin name (from the file).
    pub plugins: std::collections::BTreeMap<String, cf_host::permissions::Grant>,
    /// Where the file came from, if one was read.
    pub config_file: Option<PathBuf>,
}

/// The default config file.
pub(crate) fn default_path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("cf-host").join("config.toml"))
}

/// Reads the config file: `explicit` must exist; the default one may be absent.
pub(crate) fn load_file(explicit: Option<&Path>) -> Result<(FileConfig, Option<PathBuf>), String> {
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
                .map_err(|e| format!("{}: {}", path.display(), e.message()))?;
            Ok((file, Some(path)))
        }
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
            Ok((FileConfig::default(), None))
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Flags > environment > file > defaults, for every setting.
pub(crate) fn resolve(
    flags: &HostArgs,
    env: &dyn Fn(&str) -> Option<String>,
    file: FileConfig,
    config_file: Option<PathBuf>,
) -> Result<Settings, String> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    let parsed = |name: &str| -> Result<Option<f64>, String> {
        var(name)
            .map(|v| {
                v.parse::<f64>()
                    .map_err(|_| format!("{name}={v:?} is not a number"))
            })
            .transpose()
    };
    let int = |name: &str| -> Result<Option<u64>, String> {
        var(name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("{name}={v:?} is not a whole number"))
            })
            .transpose()
    };
    let provider = match flags.provider {
        Some(p) => Some(
            p.to_possible_value()
                .map(|v| v.get_name().to_owned())
                .unwrap_or_default(),
        ),
        None => var("CF_PROVIDER").or(file.provider),
    };
    if let Some(p) = &provider {
        ProviderKind::from_str(p, true)
            .map_err(|_| format!("unknown provider {p:?}: use offline, anthropic or replay"))?;
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
    let defaults = cf_host::Limits::default();
    let settings = Settings {
        provider,
        base_url: flags
            .base_url
            .clone()
            .or_else(|| var("ANTHROPIC_BASE_URL"))
            .or(file.base_url),
        api_key: Redacted(var("ANTHROPIC_API_KEY").or(file.api_key)),
        model: flags
            .model
            .clone()
            .or_else(|| var("CF_MODEL"))
            .or(file.model),
        max_concurrent: flags
            .max_concurrent
            .or(int("CF_MAX_CONCURRENT")?.map(|v| v as usize))
            .or(file.max_concurrent)
            .unwrap_or(cf_host::llm::DEFAULT_MAX_CONCURRENT),
        timeout_secs: flags
            .timeout
            .or(parsed("CF_TIMEOUT")?)
            .or(file.timeout_secs)
            .unwrap_or(cf_host::llm::DEFAULT_ATTEMPT_TIMEOUT.as_secs_f64()),
        max_retries: flags
            .max_retries
            .or(int("CF_MAX_RETRIES")?.map(|v| v as u32))
            .or(file.max_retries)
            .unwrap_or(cf_host::llm::DEFAULT_MAX_RETRIES),
        deadline_secs: flags
            .deadline
            .or(parsed("CF_DEADLINE")?)
            .or(file.deadline_secs)
            .unwrap_or(defaults.deadline.as_secs_f64()),
        memory_mb: flags
            .memory_mb
            .or(int("CF_MEMORY_MB")?)
            .or(file.memory_mb)
            .unwrap_or(defaults.memory_bytes / (1024 * 1024)),
        max_task_chars: flags
            .max_task_chars
            .or(int("CF_MAX_TASK_CHARS")?.map(|v| v as usize))
            .or(file.max_task_chars)
            .unwrap_or(defaults.max_task_chars),
        prices: flags
            .prices
            .clone()
            .or_else(|| var("CF_PRICES").map(PathBuf::from))
            .or(file.prices),
        cache_dir: flags
            .cache_dir
            .clone()
            .or_else(|| var("CF_CACHE_DIR").map(PathBuf::from))
            .or(file.cache_dir)
            .or_else(cf_host::default_cache_dir),
        cache_enabled,
        cache_ttl_secs: flags
            .cache_ttl
            .or(parsed("CF_CACHE_TTL")?)
            .or(file.cache.ttl_secs)
            .unwrap_or(86_400.0),
        cache_secret: Redacted(var("CF_CACHE_SECRET").or(file.cache.secret)),
        cache_shared_namespace: var("CF_CACHE_NAMESPACE").or(file.cache.shared_namespace),
        cache_exclude_agents: file.cache.exclude_agents,
        budget_usd: flags
            .budget_usd
            .or(parsed("CF_BUDGET_USD")?)
            .or(file.budget.usd),
        budget_tokens: flags
            .budget_tokens
            .or(int("CF_BUDGET_TOKENS")?)
            .or(file.budget.tokens),
        plugins: file.plugins,
        config_file,
    };
    settings.validate()?;
    Ok(settings)
}

impl Settings {
    /// The same checks as the flags' parsers, for values from the environment or file.
    fn validate(&self) -> Result<(), String> {
        let secs = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 && v <= 86_400.0 * 365.0 {
                Ok(())
            } else {
                Err(format!("{name} = {v} is not a positive number of seconds"))
            }
        };
        secs("timeout", self.timeout_secs)?;
        secs("deadline", self.deadline_secs)?;
        secs("cache ttl", self.cache_ttl_secs)?;
        if !(1..=10_000).contains(&self.max_concurrent) {
            return Err(format!(
                "max_concurrent = {} is not in 1..=10000",
                self.max_concurrent
            ));
        }
        if !(1..=4096).contains(&self.memory_mb) {
            return Err(format!("memory_mb = {} is not in 1..=4096", self.memory_mb));
        }
        if self.budget_usd.is_some_and(|v| !v.is_finite() || v < 0.0) {
            return Err("budget usd must be a non-negative amount".into());
        }
        Ok(())
    }

    /// The provider to use, and whether it was chosen for lack of a key.
    pub fn provider_kind(&self) -> (ProviderKind, bool) {
        match self
            .provider
            .as_deref()
            .and_then(|p| ProviderKind::from_str(p, true).ok())
        {
            Some(kind) => (kind, false),
            None if self.api_key.0.is_some() => (ProviderKind::Anthropic, false),
            None => (ProviderKind::Offline, true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn flags(args: &[&str]) -> HostArgs {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            host: HostArgs,
        }
        let mut all = vec!["cf-host"];
        all.extend_from_slice(args);
        Wrapper::parse_from(all).host
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
        let s = resolve(&flags(&[]), &env(&[]), FileConfig::default(), None).unwrap();
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
        let s = resolve(&flags(&[]), &env(&[]), f(), None).unwrap();
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
            &flags(&[]),
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
            &flags(&["--max-concurrent", "9", "--timeout", "1"]),
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
            &flags(&["--base-url", "https://u:p4ss@h/"]),
            &env(&[]),
            FileConfig::default(),
            None,
        )
        .expect("settings");
        let shown = serde_json::to_string(&settings).expect("json");
        assert!(!shown.contains("p4ss"), "{shown}");
        assert!(shown.contains("https://<redacted>@h/"), "{shown}");
    }

    #[test]
    fn secrets_are_redacted_and_the_cache_can_be_turned_off_anywhere() {
        let s = resolve(
            &flags(&[]),
            &env(&[("ANTHROPIC_API_KEY", "sk-very-secret")]),
            file("[cache]\nsecret = \"0123456789abcdef0123\"\nenabled = false\n"),
            None,
        )
        .unwrap();
        let shown = format!("{s:?} {}", toml::to_string(&s).unwrap());
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
            &flags(&["--no-cache"]),
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
                &flags(&[]),
                &env(&[("CF_TIMEOUT", "soon")]),
                FileConfig::default(),
                None
            )
            .unwrap_err()
            .contains("CF_TIMEOUT")
        );
        assert!(
            resolve(&flags(&[]), &env(&[]), file("memory_mb = 0\n"), None)
                .unwrap_err()
                .contains("memory_mb")
        );
        assert!(
            resolve(
                &flags(&[]),
                &env(&[("CF_PROVIDER", "openai")]),
                FileConfig::default(),
                None
            )
            .unwrap_err()
            .contains("openai")
        );
    }
}
