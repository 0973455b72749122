//! The HMAC over one stored response, binding its value to its key and to the write
//! that stored it.
//!
//! ```text
//! HMAC-SHA256(secret,
//!     "cf-cache/response/v2" || key (32) || seq (8) || created_ms (8) || expires_ms (8)
//!     || tokens (8) || cost flag (1: 0 absent, 1 present) || cost bits (8, f64; 0 if absent)
//!     || payload length (8) || payload)
//! ```
//!
//! All integers little endian. `seq` is the write's number, unique and increasing in
//! the database; the index row of a key names the `seq` of its current value and the
//! reader recomputes the MAC with that `seq` and the key it asked for. So a value moved
//! under another key, or an older value of the same key put back in place of the current
//! one, fails the check: neither was written as that key's current value.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::key::CacheKey;
use crate::secret::Secret;

const DOMAIN: &[u8] = b"cf-cache/response/v2";
/// Length of a MAC.
pub(crate) const MAC_LEN: usize = 32;

/// Everything the MAC covers besides the key and the payload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Meta {
    pub(crate) seq: u64,
    pub(crate) created_ms: u64,
    pub(crate) expires_ms: u64,
    pub(crate) tokens: u64,
    pub(crate) cost_usd: Option<f64>,
}

fn mac(secret: &Secret, key: &CacheKey, meta: &Meta, payload: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret.expose()).expect("HMAC takes any key length");
    mac.update(DOMAIN);
    mac.update(key.as_bytes());
    for word in [meta.seq, meta.created_ms, meta.expires_ms, meta.tokens] {
        mac.update(&word.to_le_bytes());
    }
    mac.update(&[u8::from(meta.cost_usd.is_some())]);
    mac.update(&meta.cost_usd.map_or(0, f64::to_bits).to_le_bytes());
    mac.update(&(payload.len() as u64).to_le_bytes());
    mac.update(payload);
    mac
}

/// The MAC of a value written as `key`'s current value.
pub(crate) fn seal(secret: &Secret, key: &CacheKey, meta: &Meta, payload: &[u8]) -> [u8; MAC_LEN] {
    mac(secret, key, meta, payload)
        .finalize()
        .into_bytes()
        .into()
}

/// True if `tag` is the MAC of exactly this value (compared in constant time).
pub(crate) fn verify(
    secret: &Secret,
    key: &CacheKey,
    meta: &Meta,
    payload: &[u8],
    tag: &[u8],
) -> bool {
    mac(secret, key, meta, payload).verify_slice(tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            seq: 7,
            created_ms: 1_000,
            expires_ms: 2_000,
            tokens: 42,
            cost_usd: Some(0.5),
        }
    }

    #[test]
    fn every_bound_field_changes_the_mac() {
        let secret = Secret::new(vec![1u8; 32]).expect("secret");
        let key = CacheKey::from_bytes([3; 32]);
        let tag = seal(&secret, &key, &meta(), b"payload");
        assert!(verify(&secret, &key, &meta(), b"payload", &tag));
        let changed = [
            Meta { seq: 8, ..meta() },
            Meta {
                created_ms: 1_001,
                ..meta()
            },
            Meta {
                expires_ms: 2_001,
                ..meta()
            },
            Meta {
                tokens: 43,
                ..meta()
            },
            Meta {
                cost_usd: None,
                ..meta()
            },
            Meta {
                cost_usd: Some(0.0),
                ..meta()
            },
        ];
        for m in changed {
            assert!(!verify(&secret, &key, &m, b"payload", &tag), "{m:?}");
        }
        assert!(!verify(&secret, &key, &meta(), b"payloaD", &tag));
        let other_key = CacheKey::from_bytes([4; 32]);
        assert!(!verify(&secret, &other_key, &meta(), b"payload", &tag));
        let other_secret = Secret::new(vec![2u8; 32]).expect("secret");
        assert!(!verify(&other_secret, &key, &meta(), b"payload", &tag));
        assert!(!verify(&secret, &key, &meta(), b"payload", &tag[..31]));
    }
}
