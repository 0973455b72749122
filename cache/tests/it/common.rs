//! Helpers shared by the test modules.

use std::path::Path;
use std::sync::Arc;

use cf_cache::{AgentStores, ManualClock, StoreLimits};

/// A fresh directory, agent stores on it, and the manual clock they read.
pub fn stores(limits: StoreLimits) -> (tempfile::TempDir, AgentStores, ManualClock) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000);
    let stores = AgentStores::open_with_clock(tmp.path(), limits, Arc::new(clock.clone()))
        .expect("open stores");
    (tmp, stores, clock)
}

/// Every path under `root` (relative, sorted), symlinks not followed.
pub fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let entry = entry.expect("entry");
            let path = entry.path();
            let rel = path.strip_prefix(root).expect("prefix");
            out.push(rel.to_string_lossy().into_owned());
            if entry.file_type().expect("file type").is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

use cf_cache::{CacheConfig, CacheKey, KeyBuilder, ResponseCache, Secret};

/// The key of a test request numbered `n`.
pub fn key(n: u64) -> CacheKey {
    KeyBuilder::new("test-v1").field_u64("n", n).finish()
}

/// A config for `dir` with a fixed secret (so reopened handles agree).
pub fn config(dir: &Path) -> CacheConfig {
    let mut cfg = CacheConfig::new(dir);
    cfg.secret = Some(Secret::new(*b"0123456789abcdef0123456789abcdef").expect("secret"));
    cfg
}

/// A cache on `cfg` reading `clock`.
pub fn open(cfg: CacheConfig, clock: &ManualClock) -> ResponseCache {
    ResponseCache::open_with_clock(cfg, Arc::new(clock.clone())).expect("open cache")
}

/// A manual clock at a fixed date.
pub fn clock() -> ManualClock {
    ManualClock::new(1_700_000_000_000)
}

/// The entry file of `key` in `dir`.
pub fn entry_path(dir: &Path, key: &CacheKey) -> std::path::PathBuf {
    dir.join(format!("{}.cfe", key.to_hex()))
}

/// Entry files in `dir` and the sum of their lengths.
pub fn disk_usage(dir: &Path) -> (u64, u64) {
    let mut usage = (0, 0);
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name().into_string().expect("utf-8");
        let meta = entry.path().symlink_metadata().expect("meta");
        let ours = name.len() == 68
            && name.ends_with(".cfe")
            && name[..64]
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if ours && meta.is_file() {
            usage.0 += 1;
            usage.1 += meta.len();
        }
    }
    usage
}

/// Bytes of header and MAC around every payload.
pub const OVERHEAD: u64 = 120;
