//! Who is calling: bearer tokens, kept as SHA-256 digests (the config holds digests,
//! never tokens; a token is hashed when presented and compared with every digest in
//! constant time), each naming a tenant with its own grants.

use crate::error::ApiError;
use cf_host::llm::{Budget, Ledger};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

pub use cf_front::settings::TenantGrant;

/// A tenant as the server keeps it: its grant, its account for the day, its share.
#[derive(Debug)]
pub struct Tenant {
    /// Its name.
    pub name: String,
    /// What it may do.
    pub grant: TenantGrant,
    /// The day (days since the epoch, UTC) and that day's account.
    day: Mutex<(u64, Ledger)>,
    /// Its runs at once, when limited.
    pub(crate) share: Option<Arc<Semaphore>>,
}

impl Tenant {
    fn new(name: String, grant: TenantGrant) -> Self {
        let share = grant
            .concurrency
            .map(|n| Arc::new(Semaphore::new(n.max(1) as usize)));
        let ledger = Self::day_ledger(&grant);
        Self {
            name,
            day: Mutex::new((today(), ledger)),
            grant,
            share,
        }
    }

    fn day_ledger(grant: &TenantGrant) -> Ledger {
        Ledger::with_budget(Budget {
            usd: grant.budget_usd_per_day,
            ..Budget::default()
        })
    }

    /// Today's account: its budget is the tenant's per day; a new day starts afresh.
    pub fn ledger(&self) -> Ledger {
        let mut day = self.day.lock().unwrap_or_else(|p| p.into_inner());
        let now = today();
        if day.0 != now {
            *day = (now, Self::day_ledger(&self.grant));
        }
        day.1.clone()
    }

    /// Whether it may run `agent` (a built-in name or a plugin path), else the 403.
    pub fn may_run(&self, agent: &str, builtin: bool) -> Result<(), ApiError> {
        let allowed = match &self.grant.agents {
            Some(list) => list.iter().any(|a| a == agent),
            None => builtin,
        };
        if allowed {
            Ok(())
        } else {
            Err(ApiError::Forbidden {
                capability: format!("agent {agent}"),
                message: format!(
                    "tenant {} may not run agent {agent}; its grant lists {}",
                    self.name,
                    match &self.grant.agents {
                        Some(list) if list.is_empty() => "no agent".to_owned(),
                        Some(list) => list.join(", "),
                        None => "the built-in agents".to_owned(),
                    }
                ),
            })
        }
    }

    /// The model a run of this tenant uses: `asked` if the grant allows it (the
    /// grant's first model when nothing is asked and the grant lists models), else
    /// the 403.
    pub fn model(&self, asked: Option<String>) -> Result<Option<String>, ApiError> {
        let Some(models) = &self.grant.models else {
            return Ok(asked);
        };
        match asked {
            None => Ok(models.first().cloned()),
            Some(m) if models.contains(&m) => Ok(Some(m)),
            Some(m) => Err(ApiError::Forbidden {
                capability: format!("model {m}"),
                message: format!(
                    "tenant {} may not use model {m}; its grant lists {}",
                    self.name,
                    models.join(", ")
                ),
            }),
        }
    }
}

fn today() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

/// The tokens the server accepts, as digests, and the tenants they name.
#[derive(Debug)]
pub struct Tokens {
    digests: Vec<([u8; 32], Arc<Tenant>)>,
}

impl Tokens {
    /// From `[serve.tokens]` (tenant → the token's SHA-256, 64 hex digits) and
    /// `[serve.tenants]` (tenant → grant). A tenant with a token and no grant gets
    /// the default grant; a grant for a tenant without a token is an error (a typo).
    pub fn new(
        tokens: &BTreeMap<String, String>,
        grants: &BTreeMap<String, TenantGrant>,
    ) -> Result<Self, String> {
        if let Some(orphan) = grants.keys().find(|t| !tokens.contains_key(*t)) {
            return Err(format!(
                "[serve.tenants.{orphan}] names a tenant that has no token in [serve.tokens]"
            ));
        }
        let mut digests = Vec::with_capacity(tokens.len());
        for (tenant, hex) in tokens {
            let digest = parse_digest(hex).ok_or_else(|| {
                format!(
                    "[serve.tokens] {tenant}: expected the token's SHA-256 as 64 hexadecimal digits (`printf %s TOKEN | sha256sum`), not a token"
                )
            })?;
            let grant = grants.get(tenant).cloned().unwrap_or_default();
            digests.push((digest, Arc::new(Tenant::new(tenant.clone(), grant))));
        }
        Ok(Self { digests })
    }

    /// Whether any token is configured.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// The tenant whose token is `token`: its digest is compared with every one, in
    /// constant time, whatever matches.
    pub fn tenant(&self, token: &str) -> Option<Arc<Tenant>> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (known, tenant) in &self.digests {
            if bool::from(known.ct_eq(&digest)) {
                found = Some(tenant.clone());
            }
        }
        found
    }
}

/// 64 hexadecimal digits as 32 bytes.
fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The SHA-256 of `token` as 64 hex digits: what `[serve.tokens]` holds.
pub fn token_digest(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(pairs: &[(&str, &str)]) -> Tokens {
        let map = pairs
            .iter()
            .map(|(t, tok)| ((*t).to_owned(), token_digest(tok)))
            .collect();
        Tokens::new(&map, &BTreeMap::new()).expect("valid")
    }

    #[test]
    fn a_token_names_its_tenant_and_only_its_own() {
        let t = tokens(&[("alpha", "tok-a"), ("beta", "tok-b")]);
        assert_eq!(
            t.tenant("tok-a").map(|t| t.name.clone()).as_deref(),
            Some("alpha")
        );
        assert_eq!(
            t.tenant("tok-b").map(|t| t.name.clone()).as_deref(),
            Some("beta")
        );
        assert!(t.tenant("tok-c").is_none());
        assert!(t.tenant("").is_none());
        // The digest itself is not a token.
        assert!(t.tenant(&token_digest("tok-a")).is_none());
    }

    #[test]
    fn a_token_in_clear_or_a_grant_without_a_token_is_refused() {
        let clear = BTreeMap::from([("alpha".to_owned(), "tok-a".to_owned())]);
        let e = Tokens::new(&clear, &BTreeMap::new()).expect_err("not a digest");
        assert!(e.contains("SHA-256") && !e.contains("tok-a"), "{e}");
        let ok = BTreeMap::from([("alpha".to_owned(), token_digest("x"))]);
        let orphan = BTreeMap::from([("beta".to_owned(), TenantGrant::default())]);
        let e = Tokens::new(&ok, &orphan).expect_err("orphan grant");
        assert!(e.contains("beta"), "{e}");
    }

    #[test]
    fn grants_limit_agents_and_models() {
        let grant = TenantGrant {
            agents: Some(vec!["python-expert".into()]),
            models: Some(vec!["claude-haiku-4-5".into()]),
            ..TenantGrant::default()
        };
        let t = Tenant::new("alpha".into(), grant);
        assert!(t.may_run("python-expert", true).is_ok());
        let e = t.may_run("code-reviewer", true).expect_err("not granted");
        assert!(
            matches!(e, ApiError::Forbidden { ref capability, .. } if capability == "agent code-reviewer")
        );
        assert_eq!(
            t.model(None).expect("ok").as_deref(),
            Some("claude-haiku-4-5")
        );
        assert!(t.model(Some("claude-opus-4-1".into())).is_err());
        let open = Tenant::new("beta".into(), TenantGrant::default());
        assert!(open.may_run("code-reviewer", true).is_ok());
        assert!(
            open.may_run("/tmp/x.wasm", false).is_err(),
            "no plugin path by default"
        );
    }
}
