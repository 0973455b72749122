//! The properties the fuzz targets in `fuzz/` check, shared with the regression tests
//! that replay `fuzz/regressions/<target>/` on the stable toolchain. Not part of the
//! crate's API: every function panics when its property does not hold, which is how a
//! fuzzer learns of a bug.
//!
//! Each check restates the documented format or rule on its own (magic, offsets,
//! allowed characters) rather than reusing the code under test, so that a bug shared by
//! both cannot hide.

use std::io;
use std::path::Path;

use crate::error::StoreError;
use crate::key::CacheKey;
use crate::response::entry::{self, Fault, HEADER_LEN, MAC_LEN, Meta};
use crate::secret::Secret;
use crate::store::record;
use crate::{CacheConfig, EntryMeta, ResponseCache, Stats};

/// The documented magic of an entry file (`response/entry.rs`).
const ENTRY_MAGIC: &[u8] = b"CFRCENT1";
/// The byte the harness's secret is made of.
const HARNESS_SECRET: u8 = 0xc3;
/// The key every planted entry file is read as.
const PLANTED_KEY: [u8; 32] = [0x5a; 32];

fn secret(byte: u8) -> Secret {
    Secret::new(vec![byte; 32]).expect("a 32-byte secret is valid")
}

fn word(data: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&data[at..at + 8]);
    u64::from_le_bytes(bytes)
}

/// Equality of metadata with costs compared by their bits (a NaN cost is a value too).
fn same_meta(a: &Meta, b: &Meta) -> bool {
    (a.created_ms, a.expires_ms, a.tokens) == (b.created_ms, b.expires_ms, b.tokens)
        && a.cost_usd.map(f64::to_bits) == b.cost_usd.map(f64::to_bits)
}

/// The entry decoder past its MAC: `data` is taken as the body of an entry file
/// (header and payload, as the fuzzer likes), given the MAC that makes it authentic,
/// and decoded. Then `data` is also read as metadata and a payload, sealed, and decoded.
///
/// Properties: an authentic file decodes if and only if its magic and length are
/// right, and then to exactly the fields at their documented offsets; re-sealing what
/// was decoded gives a file that decodes to the same; the same bytes under another key,
/// another secret or with a flipped MAC bit are refused; sealing then decoding is the
/// identity.
pub fn check_entry_decoder(data: &[u8]) {
    let secret_a = secret(0xa1);
    let key = data
        .get(8..40)
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .map_or(CacheKey::from_bytes(PLANTED_KEY), CacheKey::from_bytes);
    let file = [data, &entry::tag(&secret_a, data)].concat();
    let well_formed = data.len() >= HEADER_LEN
        && &data[..8] == ENTRY_MAGIC
        && word(data, 80).checked_add((HEADER_LEN + MAC_LEN) as u64) == Some(file.len() as u64);
    match entry::open(&secret_a, &key, &file) {
        Ok(opened) => {
            assert!(well_formed, "a malformed entry was accepted");
            assert_eq!(opened.payload, HEADER_LEN..data.len(), "payload range");
            let has_cost = data[72] & 1 == 1;
            let expected = Meta {
                created_ms: word(data, 40),
                expires_ms: word(data, 48),
                tokens: word(data, 56),
                cost_usd: has_cost.then(|| f64::from_bits(word(data, 64))),
            };
            assert!(
                same_meta(&opened.meta, &expected),
                "decoded {:?}, the header says {expected:?}",
                opened.meta
            );
            let payload = &file[opened.payload.clone()];
            let resealed = seal(&secret_a, &key, &opened.meta, payload);
            let again = entry::open(&secret_a, &key, &resealed)
                .unwrap_or_else(|f| panic!("a re-sealed entry does not open: {f:?}"));
            assert!(same_meta(&again.meta, &opened.meta), "re-sealed metadata");
            assert_eq!(&resealed[again.payload], payload, "re-sealed payload");
        }
        Err(fault) => {
            assert!(
                !well_formed,
                "a well-formed authentic entry was refused: {fault:?}"
            );
            assert_eq!(
                fault,
                Fault::Malformed,
                "an authentic entry can only be malformed"
            );
        }
    }
    let mut other = *key.as_bytes();
    other[0] ^= 1;
    assert!(
        entry::open(&secret_a, &CacheKey::from_bytes(other), &file).is_err(),
        "an entry was accepted for another key"
    );
    assert!(
        entry::open(&secret(0xb2), &key, &file).is_err(),
        "an entry was accepted under another secret"
    );
    let mut flipped = file.clone();
    if let Some(last) = flipped.last_mut() {
        *last ^= 0x80;
    }
    assert!(
        entry::open(&secret_a, &key, &flipped).is_err(),
        "an entry with a flipped MAC bit was accepted"
    );
    check_seal_round_trip(&secret_a, data);
}

/// Reads metadata from the first 25 bytes of `data` (the rest is the payload), seals
/// and opens it: the identity.
fn check_seal_round_trip(secret: &Secret, data: &[u8]) {
    let (head, payload) = data.split_at(data.len().min(25));
    let mut head = head.to_vec();
    head.resize(25, 0);
    let meta = Meta {
        created_ms: word(&head, 0),
        expires_ms: word(&head, 8),
        tokens: word(&head, 16),
        cost_usd: (head[24] & 1 == 1).then(|| f64::from_bits(word(&head, 0) ^ word(&head, 8))),
    };
    let key = CacheKey::from_bytes(PLANTED_KEY);
    let file = seal(secret, &key, &meta, payload);
    assert_eq!(
        file.len(),
        HEADER_LEN + payload.len() + MAC_LEN,
        "sealed length"
    );
    let opened = entry::open(secret, &key, &file)
        .unwrap_or_else(|f| panic!("a sealed entry does not open: {f:?}"));
    assert!(same_meta(&opened.meta, &meta), "sealed metadata");
    assert_eq!(&file[opened.payload], payload, "sealed payload");
}

fn seal(secret: &Secret, key: &CacheKey, meta: &Meta, payload: &[u8]) -> Vec<u8> {
    let (header, mac) = entry::seal(secret, key, meta, payload);
    [header.as_slice(), payload, &mac].concat()
}

/// A response cache in a directory of its own, for planting entry files and reading
/// them through [`ResponseCache::get`]: the full read path.
#[derive(Debug)]
pub struct EntryFileHarness {
    cache: ResponseCache,
}

impl EntryFileHarness {
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
        Self { cache }
    }

    /// A genuine entry file (sealed with the harness's secret, unexpired) for the key
    /// [`check`](Self::check) plants: what the check must never see served, so that
    /// tests can show it fails.
    pub fn genuine_entry(&self, payload: &[u8]) -> Vec<u8> {
        let meta = Meta {
            created_ms: 0,
            expires_ms: u64::MAX / 2,
            tokens: 1,
            cost_usd: None,
        };
        let key = CacheKey::from_bytes(PLANTED_KEY);
        seal(&secret(HARNESS_SECRET), &key, &meta, payload)
    }

    /// Stores an entry for a key, writes `data` over its file, then reads that key.
    /// (The key is stored first because a key the journal does not know is a miss
    /// without a read: only a file the index vouches for is read.)
    ///
    /// Properties: the lookup is a miss (the bytes were not sealed with the cache's
    /// secret), the file is removed, and exactly one integrity failure is counted (or
    /// one eviction for a file over the size limit).
    pub fn check(&self, data: &[u8]) {
        let key = CacheKey::from_bytes(PLANTED_KEY);
        let name = entry::entry_name(&key);
        self.cache
            .put("fuzz", &key, b"to be overwritten", EntryMeta::default())
            .expect("store the entry whose file is replaced");
        let before = self.cache.stats();
        self.cache
            .dir()
            .write(&name, data)
            .unwrap_or_else(|e| panic!("planting an entry file: {e}"));
        let got = self.cache.get("fuzz", &key);
        assert!(got.is_none(), "forged bytes were served: {got:?}");
        match self.cache.dir().symlink_metadata(&name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => panic!("a rejected entry file was left in place: {other:?}"),
        }
        let after = self.cache.stats();
        let removed = |s: &Stats| s.integrity_failures + s.evictions;
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
