//! Capabilities a plugin declares and the operator grants. What a plugin may do is the
//! intersection, checked at every call; anything not both declared and granted is
//! denied, naming the capability and the plugin.
//!
//! A plugin declares in a sidecar TOML file beside its component — `agent.wasm` →
//! `agent.toml` — read when the component is loaded from a path:
//!
//! ```toml
//! name = "poet"                                       # the name describe() reports
//! models = ["claude-haiku-4-5", "claude-sonnet-*"]   # `*` matches any run of characters
//! max_tokens = 1024                                   # per call
//! store = true                                        # uses its own key-value store
//! store_quota_bytes = 1048576                         # at most this much in it
//! concurrency = 2                                     # model calls in flight at once
//! thinking = true                                     # extended thinking (contract 0.2)
//! max_thinking_budget = 8000                          # its largest budget, in tokens
//! media = true                                        # images and documents (contract 0.2)
//! max_media_bytes = 2097152                           # their bytes in one request
//! ```
//!
//! The operator grants per plugin name, in the config file (`[plugins.<name>]`, same
//! keys plus `budget_usd` and `sha256`) or with [`HostBuilder::grant`]. A grant with a
//! `sha256` applies only to the component with that digest, so that a plugin cannot
//! borrow another's grant by claiming its name. The pin is checked twice: before
//! compiling, against the name the plugin is expected to have (the manifest's `name`,
//! else the file stem: `poet.wasm` → `poet`), and after `describe()`, against the name
//! it reports — a component that reports a pinned name with another digest is refused
//! either way.
//!
//! `store` and `store_quota_bytes` were called `cache` and `cache_quota_bytes` before
//! (the 0.1.0 contract's name for the interface); the old keys are still read.
//!
//! The shipped agents are the operator's own: they run unrestricted unless the
//! operator grants them something narrower.
//!
//! [`HostBuilder::grant`]: crate::HostBuilder::grant

use serde::Deserialize;

/// What a plugin asks for. Every field is optional; an absent list asks for nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The name the plugin reports from `describe()`. When present, loading checks
    /// that the two agree, and a grant pinned to this name is checked before the
    /// component is compiled.
    pub name: Option<String>,
    /// Model patterns the plugin may call.
    #[serde(default)]
    pub models: Vec<String>,
    /// The most tokens one call may ask for.
    pub max_tokens: Option<u32>,
    /// Whether the plugin uses its own key-value store.
    #[serde(default, alias = "cache")]
    pub store: bool,
    /// The most bytes its store may hold.
    #[serde(alias = "cache_quota_bytes")]
    pub store_quota_bytes: Option<u64>,
    /// Model calls in flight at once.
    pub concurrency: Option<u32>,
    /// Whether the plugin uses extended thinking.
    #[serde(default)]
    pub thinking: bool,
    /// The largest thinking budget one call may ask for, in tokens.
    pub max_thinking_budget: Option<u32>,
    /// Whether the plugin sends images and documents.
    #[serde(default)]
    pub media: bool,
    /// The most bytes of images and documents one request may carry.
    pub max_media_bytes: Option<u64>,
}

impl Manifest {
    /// Parses a sidecar manifest.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.message().to_owned())
    }
}

/// What the operator allows a plugin. An absent list allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Model patterns the plugin may call.
    #[serde(default)]
    pub models: Vec<String>,
    /// The most tokens one call may ask for.
    pub max_tokens: Option<u32>,
    /// Whether the plugin may use its own key-value store.
    #[serde(default, alias = "cache")]
    pub store: bool,
    /// The most bytes its store may hold.
    #[serde(alias = "cache_quota_bytes")]
    pub store_quota_bytes: Option<u64>,
    /// Model calls in flight at once.
    pub concurrency: Option<u32>,
    /// Whether the plugin may use extended thinking.
    #[serde(default)]
    pub thinking: bool,
    /// The largest thinking budget one call may ask for, in tokens.
    pub max_thinking_budget: Option<u32>,
    /// Whether the plugin may send images and documents.
    #[serde(default)]
    pub media: bool,
    /// The most bytes of images and documents one request may carry.
    pub max_media_bytes: Option<u64>,
    /// What one run may spend, in US dollars.
    pub budget_usd: Option<f64>,
    /// The component this grant is for (hex SHA-256); any component when absent.
    pub sha256: Option<String>,
}

impl Grant {
    /// Every model, the store, thinking and media, no limits: for plugins the
    /// operator fully trusts.
    pub fn unrestricted() -> Self {
        Self {
            models: vec!["*".to_owned()],
            store: true,
            thinking: true,
            media: true,
            ..Self::default()
        }
    }

    /// Exactly what `manifest` declares: what `--trust` grants a local plugin.
    pub fn from_manifest(manifest: &Manifest) -> Self {
        Self {
            models: manifest.models.clone(),
            max_tokens: manifest.max_tokens,
            store: manifest.store,
            store_quota_bytes: manifest.store_quota_bytes,
            concurrency: manifest.concurrency,
            thinking: manifest.thinking,
            max_thinking_budget: manifest.max_thinking_budget,
            media: manifest.media,
            max_media_bytes: manifest.max_media_bytes,
            ..Self::default()
        }
    }
}

/// The effective permissions of a loaded agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Permissions {
    plugin: String,
    /// `None`: any model.
    models: Option<(Vec<String>, Vec<String>)>,
    max_tokens: Option<u32>,
    store: bool,
    store_quota_bytes: Option<u64>,
    concurrency: Option<u32>,
    budget_usd: Option<f64>,
    thinking: bool,
    max_thinking_budget: Option<u32>,
    media: bool,
    max_media_bytes: Option<u64>,
}

impl Permissions {
    /// No restriction: the shipped agents without a grant.
    pub fn unrestricted(plugin: &str) -> Self {
        Self {
            plugin: plugin.to_owned(),
            models: None,
            max_tokens: None,
            store: true,
            store_quota_bytes: None,
            concurrency: None,
            budget_usd: None,
            thinking: true,
            max_thinking_budget: None,
            media: true,
            max_media_bytes: None,
        }
    }

    /// A shipped agent with an operator's grant: the grant alone applies.
    pub fn granted(plugin: &str, grant: &Grant) -> Self {
        Self {
            plugin: plugin.to_owned(),
            models: Some((vec!["*".to_owned()], grant.models.clone())),
            max_tokens: grant.max_tokens,
            store: grant.store,
            store_quota_bytes: grant.store_quota_bytes,
            concurrency: grant.concurrency,
            budget_usd: grant.budget_usd,
            thinking: grant.thinking,
            max_thinking_budget: grant.max_thinking_budget,
            media: grant.media,
            max_media_bytes: grant.max_media_bytes,
        }
    }

    /// A third-party plugin: what it declares and the operator grants, both. No grant
    /// (or a grant pinned to another digest) allows nothing.
    pub fn intersect(
        plugin: &str,
        declared: &Manifest,
        grant: Option<&Grant>,
        sha256: &str,
    ) -> Self {
        let grant = grant.filter(|g| {
            g.sha256
                .as_deref()
                .is_none_or(|pin| pin.eq_ignore_ascii_case(sha256))
        });
        let empty = Grant::default();
        let g = grant.unwrap_or(&empty);
        Self {
            plugin: plugin.to_owned(),
            models: Some((declared.models.clone(), g.models.clone())),
            max_tokens: min_some(declared.max_tokens, g.max_tokens),
            store: declared.store && g.store,
            store_quota_bytes: min_some64(declared.store_quota_bytes, g.store_quota_bytes),
            concurrency: min_some(declared.concurrency, g.concurrency),
            budget_usd: g.budget_usd,
            thinking: declared.thinking && g.thinking,
            max_thinking_budget: min_some(declared.max_thinking_budget, g.max_thinking_budget),
            media: declared.media && g.media,
            max_media_bytes: min_some64(declared.max_media_bytes, g.max_media_bytes),
        }
    }

    /// Whether a call may think: `budget` is the budget asked for (`None` for
    /// adaptive thinking, which only the grant to think covers).
    pub fn check_thinking(&self, budget: Option<u32>) -> Result<(), String> {
        if !self.thinking {
            return Err(format!(
                "capability llm.thinking: plugin {} was not granted extended thinking",
                self.plugin
            ));
        }
        if let (Some(limit), Some(budget)) = (self.max_thinking_budget, budget)
            && budget > limit
        {
            return Err(format!(
                "capability llm.thinking: plugin {} may ask for a thinking budget of at most {limit} tokens, not {budget}",
                self.plugin
            ));
        }
        Ok(())
    }

    /// Whether a request may carry images and documents of `bytes` bytes in all.
    pub fn check_media(&self, bytes: usize) -> Result<(), String> {
        if !self.media {
            return Err(format!(
                "capability llm.media: plugin {} was not granted images and documents",
                self.plugin
            ));
        }
        if let Some(limit) = self.max_media_bytes
            && bytes as u64 > limit
        {
            return Err(format!(
                "capability llm.media: plugin {} may send at most {limit} bytes of images and documents in one request, not {bytes}",
                self.plugin
            ));
        }
        Ok(())
    }

    /// Whether a call of `model` with `max_tokens` is allowed; the error names the
    /// capability and the plugin.
    pub fn check_call(&self, model: &str, max_tokens: u32) -> Result<(), String> {
        if let Some((declared, granted)) = &self.models {
            let in_declared = declared.iter().any(|p| glob(p, model));
            let in_granted = granted.iter().any(|p| glob(p, model));
            if !(in_declared && in_granted) {
                let why = match (in_declared, in_granted) {
                    (false, false) => "neither declared by the plugin nor granted by the operator",
                    (true, false) => "declared by the plugin but not granted by the operator",
                    _ => "granted by the operator but not declared by the plugin",
                };
                return Err(format!(
                    "capability llm.model: plugin {} may not call model {model:?}: {why}",
                    self.plugin
                ));
            }
        }
        if let Some(limit) = self.max_tokens
            && max_tokens > limit
        {
            return Err(format!(
                "capability llm.max_tokens: plugin {} may ask for at most {limit} tokens per call, not {max_tokens}",
                self.plugin
            ));
        }
        Ok(())
    }

    /// Whether the plugin may use its key-value store.
    pub fn store_allowed(&self) -> Result<(), String> {
        if self.store {
            Ok(())
        } else {
            Err(format!(
                "capability cache: plugin {} was not granted its key-value store",
                self.plugin
            ))
        }
    }

    /// The most bytes the plugin's store may hold, if limited below the
    /// host's quota.
    pub fn store_quota_bytes(&self) -> Option<u64> {
        self.store_quota_bytes
    }

    /// Model calls in flight at once, if limited.
    pub fn concurrency(&self) -> Option<u32> {
        self.concurrency
    }

    /// What one run may spend, if limited.
    pub fn budget_usd(&self) -> Option<f64> {
        self.budget_usd
    }
}

fn min_some64(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn min_some(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `*` matches any run of characters (including none); everything else literally.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (p, t, ok) in [
            ("claude-*", "claude-haiku-4-5", true),
            ("claude-*", "gpt-4", false),
            ("*", "anything", true),
            ("claude-sonnet-4-5", "claude-sonnet-4-5", true),
            ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929", false),
            ("claude-*-4-5", "claude-haiku-4-5", true),
            ("claude-*-4-5", "claude-haiku-4-6", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "acb", false),
        ] {
            assert_eq!(glob(p, t), ok, "{p} ~ {t}");
        }
    }

    fn declared(models: &[&str]) -> Manifest {
        Manifest {
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            max_tokens: Some(1000),
            store: true,
            store_quota_bytes: None,
            concurrency: Some(4),
            ..Manifest::default()
        }
    }

    fn grant(models: &[&str]) -> Grant {
        Grant {
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            max_tokens: Some(500),
            store: true,
            ..Grant::default()
        }
    }

    #[test]
    fn the_grant_matrix() {
        let haiku = "claude-haiku-4-5";
        type Case<'a> = (&'a str, Manifest, Option<Grant>, Result<(), &'a str>);
        let cases: [Case; 6] = [
            (
                "no grant",
                declared(&[haiku]),
                None,
                Err("declared by the plugin but not granted"),
            ),
            (
                "exact grant",
                declared(&[haiku]),
                Some(grant(&[haiku])),
                Ok(()),
            ),
            (
                "wildcard grant",
                declared(&[haiku]),
                Some(grant(&["claude-*"])),
                Ok(()),
            ),
            (
                "wildcard on both sides",
                declared(&["claude-haiku-*"]),
                Some(grant(&["claude-*"])),
                Ok(()),
            ),
            (
                "declared but not granted",
                declared(&[haiku]),
                Some(grant(&["claude-sonnet-4-5"])),
                Err("declared by the plugin but not granted"),
            ),
            (
                "granted but not declared",
                declared(&["claude-sonnet-4-5"]),
                Some(grant(&[haiku])),
                Err("granted by the operator but not declared"),
            ),
        ];
        for (name, manifest, g, expected) in cases {
            let p = Permissions::intersect("poet", &manifest, g.as_ref(), "abc");
            match (p.check_call(haiku, 100), expected) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err(why)) => {
                    assert!(e.contains(why), "{name}: {e}");
                    assert!(
                        e.contains("plugin poet") && e.contains("capability llm.model"),
                        "{name}: {e}"
                    );
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn limits_are_the_smaller_of_both_and_pins_bind_grants() {
        let p = Permissions::intersect("poet", &declared(&["*"]), Some(&grant(&["*"])), "abc");
        assert!(p.check_call("m", 500).is_ok());
        assert!(
            p.check_call("m", 501)
                .unwrap_err()
                .contains("at most 500 tokens")
        );
        assert_eq!(p.concurrency(), Some(4));
        let pinned = Grant {
            sha256: Some("ABC".into()),
            ..grant(&["*"])
        };
        assert!(
            Permissions::intersect("poet", &declared(&["*"]), Some(&pinned), "abc")
                .check_call("m", 1)
                .is_ok(),
            "case-insensitive digest"
        );
        assert!(
            Permissions::intersect("poet", &declared(&["*"]), Some(&pinned), "def")
                .check_call("m", 1)
                .is_err(),
            "another component"
        );
        assert!(
            Permissions::intersect("poet", &Manifest::default(), Some(&grant(&["*"])), "abc")
                .store_allowed()
                .is_err(),
            "cache not declared"
        );
        assert!(
            Permissions::unrestricted("python-expert")
                .check_call("any", u32::MAX)
                .is_ok()
        );
        let narrowed = Permissions::granted("python-expert", &grant(&["claude-haiku-*"]));
        assert!(
            narrowed.check_call("claude-sonnet-4-5", 10).is_err(),
            "a grant narrows a shipped agent"
        );
    }

    #[test]
    fn manifests_refuse_unknown_keys() {
        assert!(Manifest::parse("models = [\"a\"]\nmax_tokens = 5\n").is_ok());
        assert!(
            Manifest::parse("modles = [\"a\"]\n")
                .unwrap_err()
                .contains("modles")
        );
    }

    /// The keys were renamed from `cache`: files written before still read the same.
    #[test]
    fn the_old_cache_keys_still_read() {
        let old = Manifest::parse("cache = true\ncache_quota_bytes = 7\n").expect("old keys");
        let new = Manifest::parse("store = true\nstore_quota_bytes = 7\n").expect("new keys");
        assert_eq!(old, new);
        assert!(old.store);
        assert_eq!(old.store_quota_bytes, Some(7));
        assert!(Manifest::parse("stor = true\n").is_err());
    }
}
