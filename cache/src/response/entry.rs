//! The file format of one response-cache entry, its HMAC, and the names of the files the
//! cache owns.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "CFRCENT1"
//! 8       32    cache key
//! 40      8     created, ms since the Unix epoch (all integers little endian)
//! 48      8     expires, ms since the Unix epoch
//! 56      8     tokens of the original call
//! 64      8     cost in USD (f64 bits), meaningful if flags bit 0 is set
//! 72      1     flags: bit 0 = cost present
//! 73      7     zero
//! 80      8     payload length P
//! 88      P     payload
//! 88+P    32    HMAC-SHA256(secret, "cf-cache/entry/v1" || bytes 0 .. 88+P)
//! ```
//!
//! A reader checks the length (`120 + P` exactly), that the key is the one asked for, and
//! the MAC in constant time, before it interprets anything past the framing.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::key::CacheKey;
use crate::secret::Secret;

const MAGIC: &[u8; 8] = b"CFRCENT1";
const MAC_DOMAIN: &[u8] = b"cf-cache/entry/v1";
/// Length of the fixed header.
pub(crate) const HEADER_LEN: usize = 88;
/// Length of the MAC trailer.
pub(crate) const MAC_LEN: usize = 32;
/// Bytes of an entry file besides its payload.
pub(crate) const OVERHEAD: u64 = (HEADER_LEN + MAC_LEN) as u64;

const ENTRY_SUFFIX: &str = ".cfe";
const TMP_SUFFIX: &str = ".cfe-tmp";

/// The file name of `key`'s entry: `<64 hex>.cfe`.
pub(crate) fn entry_name(key: &CacheKey) -> String {
    let mut name = key.to_hex();
    name.push_str(ENTRY_SUFFIX);
    name
}

/// The key named by an entry file name, if `name` is one.
pub(crate) fn parse_entry_name(name: &str) -> Option<CacheKey> {
    name.strip_suffix(ENTRY_SUFFIX).and_then(CacheKey::from_hex)
}

/// A fresh temp-file name for `key`: `<64 hex>.<16 hex>.cfe-tmp`.
pub(crate) fn tmp_name(key: &CacheKey, nonce: &str) -> String {
    format!("{}.{nonce}{TMP_SUFFIX}", key.to_hex())
}

/// True if `name` is a temp file name this crate makes.
pub(crate) fn is_tmp_name(name: &str) -> bool {
    name.strip_suffix(TMP_SUFFIX)
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(key, nonce)| {
            CacheKey::from_hex(key).is_some()
                && nonce.len() == 16
                && nonce.bytes().all(|b| b.is_ascii_hexdigit())
        })
}

/// What the caller stores beside a payload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Meta {
    pub(crate) created_ms: u64,
    pub(crate) expires_ms: u64,
    pub(crate) tokens: u64,
    pub(crate) cost_usd: Option<f64>,
}

/// Header and MAC of an entry; the file is `header || payload || mac`.
pub(crate) fn seal(
    secret: &Secret,
    key: &CacheKey,
    meta: &Meta,
    payload: &[u8],
) -> (Vec<u8>, [u8; 32]) {
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(key.as_bytes());
    header.extend_from_slice(&meta.created_ms.to_le_bytes());
    header.extend_from_slice(&meta.expires_ms.to_le_bytes());
    header.extend_from_slice(&meta.tokens.to_le_bytes());
    header.extend_from_slice(&meta.cost_usd.unwrap_or(0.0).to_bits().to_le_bytes());
    header.push(u8::from(meta.cost_usd.is_some()));
    header.extend_from_slice(&[0; 7]);
    header.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    let mut mac = new_mac(secret);
    mac.update(&header);
    mac.update(payload);
    (header, mac.finalize().into_bytes().into())
}

/// The MAC of `body` (an entry file without its trailer): what a valid file ends with.
pub(crate) fn tag(secret: &Secret, body: &[u8]) -> [u8; 32] {
    let mut mac = new_mac(secret);
    mac.update(body);
    mac.finalize().into_bytes().into()
}

fn new_mac(secret: &Secret) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose())
        .expect("HMAC-SHA256 accepts keys of any length");
    mac.update(MAC_DOMAIN);
    mac
}

/// Why an entry file was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Shorter or longer than its header says, or not our magic: torn or foreign.
    Malformed,
    /// A well-formed entry of another key (e.g. copied over this key's file).
    WrongKey,
    /// The MAC does not match: edited, forged, or written under another secret.
    BadMac,
}

impl Fault {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::Malformed => "malformed or truncated",
            Self::WrongKey => "entry of another key",
            Self::BadMac => "HMAC mismatch",
        }
    }
}

/// The framing fields of a header, readable without the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) key: CacheKey,
    pub(crate) created_ms: u64,
    pub(crate) expires_ms: u64,
    /// The length the whole file must have.
    pub(crate) file_len: u64,
}

fn word(data: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&data[at..at + 8]);
    u64::from_le_bytes(bytes)
}

/// Reads the framing of a header (at least [`HEADER_LEN`] bytes); no MAC check.
pub(crate) fn frame(header: &[u8]) -> Option<Frame> {
    let header = header.get(..HEADER_LEN)?;
    if &header[..8] != MAGIC {
        return None;
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&header[8..40]);
    Some(Frame {
        key: CacheKey::from_bytes(key),
        created_ms: word(header, 40),
        expires_ms: word(header, 48),
        file_len: word(header, 80).checked_add(OVERHEAD)?,
    })
}

/// A verified entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Opened {
    pub(crate) meta: Meta,
    pub(crate) payload: std::ops::Range<usize>,
}

/// Verifies a whole entry file for `key`: framing, key, then the MAC in constant time;
/// only then are the metadata fields interpreted.
pub(crate) fn open(secret: &Secret, key: &CacheKey, data: &[u8]) -> Result<Opened, Fault> {
    let frame = frame(data).ok_or(Fault::Malformed)?;
    if frame.file_len != data.len() as u64 {
        return Err(Fault::Malformed);
    }
    if frame.key != *key {
        return Err(Fault::WrongKey);
    }
    let (body, tag) = data.split_at(data.len() - MAC_LEN);
    let mut mac = new_mac(secret);
    mac.update(body);
    mac.verify_slice(tag).map_err(|_| Fault::BadMac)?;
    let has_cost = data[72] & 1 == 1;
    Ok(Opened {
        meta: Meta {
            created_ms: frame.created_ms,
            expires_ms: frame.expires_ms,
            tokens: word(data, 56),
            cost_usd: has_cost.then(|| f64::from_bits(word(data, 64))),
        },
        payload: HEADER_LEN..data.len() - MAC_LEN,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(byte: u8) -> Secret {
        Secret::new(vec![byte; 32]).expect("secret")
    }

    fn sealed(key: &CacheKey, payload: &[u8]) -> Vec<u8> {
        let meta = Meta {
            created_ms: 1,
            expires_ms: 2,
            tokens: 3,
            cost_usd: Some(0.25),
        };
        let (header, mac) = seal(&secret(1), key, &meta, payload);
        [header.as_slice(), payload, &mac].concat()
    }

    #[test]
    fn round_trips() {
        let key = CacheKey::from_bytes([9; 32]);
        let file = sealed(&key, b"payload");
        assert_eq!(file.len() as u64, OVERHEAD + 7);
        let opened = open(&secret(1), &key, &file).expect("opens");
        assert_eq!(&file[opened.payload.clone()], b"payload");
        assert_eq!(opened.meta.tokens, 3);
        assert_eq!(opened.meta.cost_usd, Some(0.25));
        assert_eq!(frame(&file).map(|f| f.file_len), Some(file.len() as u64));
    }

    #[test]
    fn every_tampering_is_caught() {
        let key = CacheKey::from_bytes([9; 32]);
        let file = sealed(&key, b"payload");
        assert_eq!(
            open(&secret(2), &key, &file),
            Err(Fault::BadMac),
            "other secret"
        );
        assert_eq!(
            open(&secret(1), &CacheKey::from_bytes([8; 32]), &file),
            Err(Fault::WrongKey)
        );
        assert_eq!(
            open(&secret(1), &key, &file[..file.len() - 1]),
            Err(Fault::Malformed)
        );
        for at in [40, 48, 56, 64, 72, HEADER_LEN, file.len() - 1] {
            let mut bad = file.clone();
            bad[at] ^= 1;
            assert_eq!(
                open(&secret(1), &key, &bad),
                Err(Fault::BadMac),
                "byte {at}"
            );
        }
        let mut bad = file.clone();
        bad[0] = b'X';
        assert_eq!(open(&secret(1), &key, &bad), Err(Fault::Malformed));
        assert_eq!(open(&secret(1), &key, &[]), Err(Fault::Malformed));
    }

    #[test]
    fn names_are_recognised_exactly() {
        let key = CacheKey::from_bytes([0xab; 32]);
        assert_eq!(parse_entry_name(&entry_name(&key)), Some(key));
        assert!(parse_entry_name("ab.cfe").is_none());
        assert!(is_tmp_name(&tmp_name(&key, "0123456789abcdef")));
        assert!(!is_tmp_name("x.0123456789abcdef.cfe-tmp"));
    }
}
