//! The properties the fuzz targets in `fuzz/` check, shared with the regression tests
//! that replay `fuzz/regressions/<target>/` on the stable toolchain. Not part of the
//! crate's API: every function panics when its property does not hold, which is how a
//! fuzzer learns of a bug.
//!
//! Each check restates the documented format or rule on its own (magic, offsets,
//! allowed characters) rather than reusing the code under test, so that a bug shared by
//! both cannot hide.

use std::path::Path;

use rusqlite::types::Value;

use crate::error::StoreError;
use crate::key::CacheKey;
use crate::response::seal::{self, Meta};
use crate::secret::Secret;
use crate::store::record;
use crate::{CacheConfig, EntryMeta, ResponseCache, Stats};

/// The byte the harness's secret is made of.
const HARNESS_SECRET: u8 = 0xc3;
/// The key every planted row is read as.
const PLANTED_KEY: [u8; 32] = [0x5a; 32];

fn secret(byte: u8) -> Secret {
    Secret::new(vec![byte; 32]).expect("a 32-byte secret is valid")
}

fn word(data: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&data[at..at + 8]);
    u64::from_le_bytes(bytes)
}

/// The MAC over a stored response (`response/seal.rs`): the first 41 bytes of `data`
/// (zero-padded) are the write number, created, expiry, tokens and a cost flag; the
/// rest is the payload.
///
/// Properties: a sealed value verifies; a change of any bound field (key, write number,
/// created, expiry, tokens, cost, one payload byte), another secret or a flipped MAC bit
/// makes it fail.
pub fn check_seal(data: &[u8]) {
    let (head, payload) = data.split_at(data.len().min(41));
    let mut head = head.to_vec();
    head.resize(41, 0);
    let meta = Meta {
        seq: word(&head, 0),
        created_ms: word(&head, 8),
        expires_ms: word(&head, 16),
        tokens: word(&head, 24),
        cost_usd: (head[40] & 1 == 1).then(|| f64::from_bits(word(&head, 32))),
    };
    let key = CacheKey::from_bytes(PLANTED_KEY);
    let s = secret(0xa1);
    let tag = seal::seal(&s, &key, &meta, payload);
    assert!(
        seal::verify(&s, &key, &meta, payload, &tag),
        "a sealed value does not verify"
    );
    let bump = |v: u64| v.wrapping_add(1);
    let changed = [
        Meta {
            seq: bump(meta.seq),
            ..meta
        },
        Meta {
            created_ms: bump(meta.created_ms),
            ..meta
        },
        Meta {
            expires_ms: bump(meta.expires_ms),
            ..meta
        },
        Meta {
            tokens: bump(meta.tokens),
            ..meta
        },
        Meta {
            cost_usd: match meta.cost_usd {
                Some(_) => None,
                None => Some(0.0),
            },
            ..meta
        },
    ];
    for other in &changed {
        assert!(
            !seal::verify(&s, &key, other, payload, &tag),
            "a value verified under other metadata: {other:?}"
        );
    }
    let mut other_key = PLANTED_KEY;
    other_key[0] ^= 1;
    assert!(
        !seal::verify(&s, &CacheKey::from_bytes(other_key), &meta, payload, &tag),
        "a value verified under another key"
    );
    assert!(
        !seal::verify(&secret(0xb2), &key, &meta, payload, &tag),
        "a value verified under another secret"
    );
    if let Some((first, rest)) = payload.split_first() {
        let altered = [&[first ^ 1][..], rest].concat();
        assert!(
            !seal::verify(&s, &key, &meta, &altered, &tag),
            "an altered payload verified"
        );
    }
    let mut flipped = tag;
    flipped[31] ^= 0x80;
    assert!(
        !seal::verify(&s, &key, &meta, payload, &flipped),
        "a flipped MAC bit verified"
    );
}

/// Reads one column value from `data` at `*at`: a tag byte (0 NULL, 1 integer, 2 real,
/// 3 text, else blob), then 8 bytes for a number, or a length byte and that many bytes
/// (fewer if `data` ends) for text and blobs. Missing bytes read as zero.
fn column(data: &[u8], at: &mut usize) -> Value {
    let mut take = |n: usize| {
        let start = (*at).min(data.len());
        let end = (*at + n).min(data.len());
        *at += n;
        data[start..end].to_vec()
    };
    let tag = take(1).first().copied().unwrap_or(0);
    let number = |bytes: Vec<u8>| {
        let mut b = [0u8; 8];
        b[..bytes.len()].copy_from_slice(&bytes);
        b
    };
    match tag {
        0 => Value::Null,
        1 => Value::Integer(i64::from_le_bytes(number(take(8)))),
        2 => Value::Real(f64::from_le_bytes(number(take(8)))),
        3 => {
            let len = usize::from(take(1).first().copied().unwrap_or(0));
            Value::Text(String::from_utf8_lossy(&take(len)).into_owned())
        }
        _ => {
            let len = usize::from(take(1).first().copied().unwrap_or(0));
            let mut bytes = take(len);
            // Past 255 bytes: the rest of the input (payloads and MACs of any length).
            if len == 255 {
                bytes.extend_from_slice(data.get(*at..).unwrap_or_default());
                *at = data.len();
            }
            Value::Blob(bytes)
        }
    }
}

fn encode(value: &Value) -> Vec<u8> {
    match value {
        Value::Null => vec![0],
        Value::Integer(i) => [&[1u8][..], &i.to_le_bytes()].concat(),
        Value::Real(r) => [&[2u8][..], &r.to_le_bytes()].concat(),
        Value::Text(t) => [&[3u8, t.len() as u8][..], t.as_bytes()].concat(),
        Value::Blob(b) => [&[4u8, b.len().min(254) as u8][..], &b[..b.len().min(254)]].concat(),
    }
}

/// A response cache in a directory of its own, whose stored value's row is overwritten
/// with arbitrary columns and then read through [`ResponseCache::get`]: the full read
/// path.
#[derive(Debug)]
pub struct RowHarness {
    cache: ResponseCache,
    db: rusqlite::Connection,
    _dir: cap_std::fs::Dir,
}

impl RowHarness {
    /// Opens a cache in `dir` (which should be empty) with a fixed secret, and checks
    /// that a genuine entry is served, so that the refusals checked later mean
    /// something.
    pub fn new(dir: &Path) -> Self {
        let mut config = CacheConfig::new(dir);
        config.secret = Some(secret(HARNESS_SECRET));
        config.memory_max_entries = 0;
        let cache = ResponseCache::open(config).expect("open the harness's cache");
        let key = CacheKey::from_bytes([0x11; 32]);
        let meta = EntryMeta {
            tokens: 7,
            cost_usd: Some(0.5),
            ttl: None,
        };
        cache
            .put("fuzz", &key, b"genuine", meta)
            .expect("store a genuine entry");
        let hit = cache.get("fuzz", &key);
        assert_eq!(
            hit.map(|h| (h.payload.to_vec(), h.tokens)),
            Some((b"genuine".to_vec(), 7)),
            "the harness's cache serves a genuine entry"
        );
        let handle = crate::private::open_dir(dir).expect("the harness's directory");
        let db = crate::sqlite::open(
            &handle,
            crate::response::DB_NAME,
            crate::sqlite::Sync::Normal,
            "",
        )
        .expect("a second connection to the harness's database");
        Self {
            cache,
            db,
            _dir: handle,
        }
    }

    /// Index rows of the planted key (0 or 1).
    fn planted_rows(&self) -> i64 {
        self.db
            .query_row(
                "SELECT COUNT(*) FROM entries WHERE key = ?1",
                [&PLANTED_KEY[..]],
                |r| r.get(0),
            )
            .expect("count")
    }

    /// Stores an entry under the planted key unless one is there; its write number and
    /// body columns as `(seq, [created_ms, tokens, cost_usd, payload, mac])`.
    fn store_planted(&self) -> (i64, Vec<Value>) {
        let key = CacheKey::from_bytes(PLANTED_KEY);
        if self.planted_rows() == 0 {
            self.cache
                .put("fuzz", &key, b"to be overwritten", EntryMeta::default())
                .expect("store the entry whose row is replaced");
        }
        self.db
            .query_row(
                "SELECT e.seq, b.created_ms, b.tokens, b.cost_usd, b.payload, b.mac
                 FROM entries e JOIN bodies b ON b.seq = e.seq WHERE e.key = ?1",
                [&PLANTED_KEY[..]],
                |r| {
                    Ok((
                        r.get(0)?,
                        (1..6)
                            .map(|i| r.get::<_, Value>(i))
                            .collect::<rusqlite::Result<_>>()?,
                    ))
                },
            )
            .expect("the planted entry's row")
    }

    /// Stores the planted entry and returns the input that makes the next
    /// [`check`](Self::check) write back its genuine columns: what the check must see
    /// served, so that tests can show that the check fails when a value is served.
    pub fn genuine_row(&self) -> Vec<u8> {
        let (_, columns) = self.store_planted();
        columns.iter().flat_map(encode).collect()
    }

    /// Stores an entry for a key, writes the columns read from `data` (see [`column`]:
    /// created, tokens, cost, payload, MAC) over its value, then reads that key.
    ///
    /// Properties: the lookup is a miss (nothing was sealed with the cache's secret for
    /// that key and write), the entry is removed, and exactly one integrity failure is
    /// counted.
    pub fn check(&self, data: &[u8]) {
        let (seq, _) = self.store_planted();
        let before = self.cache.stats();
        let mut at = 0;
        let columns: Vec<Value> = (0..5).map(|_| column(data, &mut at)).collect();
        let planted = self.db.execute(
            "UPDATE bodies SET created_ms = ?2, tokens = ?3, cost_usd = ?4, payload = ?5, mac = ?6
             WHERE seq = ?1",
            rusqlite::params![
                seq, columns[0], columns[1], columns[2], columns[3], columns[4]
            ],
        );
        match planted {
            Ok(_) => {}
            // A NULL where the schema says NOT NULL: such a row cannot exist in the file,
            // so there is nothing to read.
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) => {
                return;
            }
            Err(e) => panic!("planting a row: {e}"),
        }
        let key = CacheKey::from_bytes(PLANTED_KEY);
        let got = self.cache.get("fuzz", &key);
        assert!(got.is_none(), "forged bytes were served: {got:?}");
        // The lookup leaves the removal to the next write: `stats` is one.
        let after = self.cache.stats();
        assert_eq!(self.planted_rows(), 0, "a rejected entry was left in place");
        let removed = |s: &Stats| s.integrity_failures;
        assert_eq!(
            removed(&after),
            removed(&before) + 1,
            "one removal counted: {before:?} then {after:?}"
        );
        assert_eq!(after.misses, before.misses + 1, "the lookup is a miss");
    }
}

/// The agent store's validators, on `data` read as UTF-8 (lossily).
///
/// Properties: [`validate_key`](crate::validate_key) accepts exactly the documented
/// keys (1 to 256 bytes, no control character), and
/// [`validate_agent_name`](crate::validate_agent_name) exactly `^[a-zA-Z0-9_-]{1,64}$`;
/// a refusal's message has no control character and a bounded length (it goes to
/// logs and to the guest); an accepted key maps to an entry file name of 64 hex digits
/// and `.kv` that the store recognises as its own, and an entry written for it decodes
/// to the same key and value.
pub fn check_store_key(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let key: &str = &text;
    let key_ok = (1..=256).contains(&key.len()) && !key.chars().any(char::is_control);
    match crate::validate_key(key) {
        Ok(()) => {
            assert!(key_ok, "accepted the key {key:?}");
            let name = record::entry_name(key);
            assert!(
                name.len() == 67
                    && name.ends_with(".kv")
                    && name[..64].bytes().all(|b| b.is_ascii_hexdigit()),
                "entry name {name:?}"
            );
            assert!(record::is_entry_name(&name), "{name:?} is not recognised");
            let value = data.get(..data.len().min(16)).unwrap_or_default();
            let mut file = record::encode_header(key, value.len() as u64, 42);
            file.extend_from_slice(key.as_bytes());
            file.extend_from_slice(value);
            let decoded = record::decode(&file);
            assert_eq!(
                decoded.map(|d| (d.expires_ms, d.key, d.value)),
                Some((42, key.as_bytes(), value)),
                "an entry of the key round-trips"
            );
        }
        Err(StoreError::InvalidKey(message)) => {
            assert!(!key_ok, "refused the key {key:?}: {message}");
            check_message(&message);
        }
        Err(other) => panic!("validate_key returned {other:?}"),
    }
    let name_ok = (1..=64).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    match crate::validate_agent_name(key) {
        Ok(()) => assert!(name_ok, "accepted the agent name {key:?}"),
        Err(e) => {
            assert!(!name_ok, "refused the agent name {key:?}: {e}");
            assert!(e.is_invalid_agent_name(), "{e:?}");
            check_message(&e.to_string());
        }
    }
}

/// An error message quoting untrusted text: no control character, bounded length.
fn check_message(message: &str) {
    assert!(
        !message.chars().any(char::is_control),
        "a control character in {message:?}"
    );
    // 48 shown characters, each escaped to at most 10 (`\u{10ffff}`), plus the text.
    assert!(
        message.chars().count() <= 48 * 10 + 120,
        "message too long: {message:?}"
    );
}
