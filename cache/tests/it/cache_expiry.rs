//! Expiry: a miss that removes the entry and frees its size; per-entry TTL; prune.

use std::time::Duration;

use cf_cache::{EntryMeta, entry_size};

use crate::common::{clock, config, key, open, rows};

fn ttl(secs: u64) -> EntryMeta {
    EntryMeta {
        ttl: Some(Duration::from_secs(secs)),
        ..EntryMeta::default()
    }
}

#[test]
fn an_expired_entry_is_a_miss_removed_and_frees_its_size() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cache = open(config(tmp.path()), &clock);
    cache.put("a", &key(1), &[0; 100], ttl(60)).expect("put");
    cache
        .put("a", &key(2), &[0; 50], EntryMeta::default())
        .expect("put, default ttl 24 h");
    clock.advance(Duration::from_secs(59));
    assert!(cache.get("a", &key(1)).is_some(), "alive before its expiry");
    clock.advance(Duration::from_secs(1));
    assert_eq!(cache.get("a", &key(1)), None, "expired at its expiry");
    let stats = cache.stats();
    assert_eq!(
        (stats.entries, stats.bytes, stats.expirations),
        (1, entry_size(50), 1)
    );
    assert_eq!(
        rows(tmp.path()),
        (1, entry_size(50)),
        "its row and value are gone"
    );
    clock.advance(Duration::from_secs(24 * 3600));
    assert_eq!(cache.get("a", &key(2)), None, "the default ttl applies");
    // The lookup leaves the removal to the next write.
    cache.flush().expect("flush");
    assert_eq!(rows(tmp.path()), (0, 0));
    assert_eq!(cache.stats().expirations, 2);
}

#[test]
fn an_expired_entry_is_a_miss_for_a_fresh_process_too() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    open(config(tmp.path()), &clock)
        .put("a", &key(1), b"x", ttl(10))
        .expect("put");
    clock.advance(Duration::from_secs(10));
    let cache = open(config(tmp.path()), &clock);
    assert_eq!(cache.get("a", &key(1)), None);
    let stats = cache.stats();
    assert_eq!(
        (stats.entries, stats.bytes, stats.expirations, stats.misses),
        (0, 0, 1, 1)
    );
    assert_eq!(rows(tmp.path()), (0, 0));
}

#[test]
fn the_configured_ttl_is_the_default() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let mut cfg = config(tmp.path());
    cfg.ttl = Duration::from_secs(5);
    let cache = open(cfg, &clock);
    cache
        .put("a", &key(1), b"x", EntryMeta::default())
        .expect("put");
    cache
        .put("a", &key(2), b"y", ttl(3600))
        .expect("put with its own ttl");
    clock.advance(Duration::from_secs(5));
    assert_eq!(cache.get("a", &key(1)), None);
    assert!(
        cache.get("a", &key(2)).is_some(),
        "a per-entry ttl overrides"
    );
}

#[test]
fn prune_removes_only_expired_entries() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cache = open(config(tmp.path()), &clock);
    for n in 0..5 {
        cache.put("a", &key(n), &[0; 10], ttl(10 + n)).expect("put");
    }
    clock.advance(Duration::from_secs(12));
    let report = cache.prune().expect("prune");
    assert_eq!(
        (report.removed, report.freed_bytes),
        (3, 3 * entry_size(10))
    );
    assert_eq!(rows(tmp.path()), (2, 2 * entry_size(10)));
    let stats = cache.stats();
    assert_eq!((stats.entries, stats.expirations), (2, 3));
    assert!(cache.get("a", &key(4)).is_some());
}

#[test]
fn expired_entries_are_evicted_before_live_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let mut cfg = config(tmp.path());
    cfg.max_bytes = 3 * entry_size(100);
    let cache = open(cfg, &clock);
    cache
        .put("a", &key(1), &[0; 100], EntryMeta::default())
        .expect("put");
    cache.put("a", &key(2), &[0; 100], ttl(1)).expect("put");
    cache
        .put("a", &key(3), &[0; 100], EntryMeta::default())
        .expect("put");
    clock.advance(Duration::from_secs(2));
    cache
        .put("a", &key(4), &[0; 100], EntryMeta::default())
        .expect("put");
    assert!(
        cache.get("a", &key(1)).is_some(),
        "the oldest live entry stays"
    );
    assert_eq!(cache.get("a", &key(2)), None, "the expired entry went");
    let stats = cache.stats();
    assert_eq!((stats.expirations, stats.evictions), (1, 0));
    assert_eq!((stats.entries, stats.bytes), (3, 3 * entry_size(100)));
}
