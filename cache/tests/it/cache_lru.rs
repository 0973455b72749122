//! Size limit by true LRU (last access, persisted across restarts), and per-entry hit
//! counts that survive a restart.

use std::time::Duration;

use cf_cache::EntryMeta;

use crate::common::{OVERHEAD, clock, config, disk_usage, key, open};

const PAYLOAD: u64 = 1000;
const ENTRY: u64 = PAYLOAD + OVERHEAD;

fn put(cache: &cf_cache::ResponseCache, n: u64) {
    cache
        .put(
            "a",
            &key(n),
            &vec![n as u8; PAYLOAD as usize],
            EntryMeta::default(),
        )
        .expect("put");
}

#[test]
fn eviction_keeps_the_size_under_the_limit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let mut cfg = config(tmp.path());
    cfg.max_bytes = 10 * ENTRY + ENTRY / 2;
    let cache = open(cfg, &clock);
    for n in 0..50 {
        clock.advance(Duration::from_millis(1));
        put(&cache, n);
        assert!(cache.stats().bytes <= 10 * ENTRY + ENTRY / 2);
    }
    let stats = cache.stats();
    assert_eq!((stats.entries, stats.evictions), (10, 40));
    assert_eq!(disk_usage(tmp.path()), (10, 10 * ENTRY));
    for n in 40..50 {
        assert!(
            cache.get("a", &key(n)).is_some(),
            "the newest entries stay: {n}"
        );
    }
}

#[test]
fn the_least_recently_used_goes_first_and_a_frequently_read_entry_survives() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let mut cfg = config(tmp.path());
    cfg.max_bytes = 3 * ENTRY;
    // No memory layer: every read goes through the disk path and the shared index.
    cfg.memory_max_entries = 0;
    let cache = open(cfg, &clock);
    for n in 1..=3 {
        clock.advance(Duration::from_millis(10));
        put(&cache, n);
    }
    // Entry 1 is the oldest, but it is read often.
    for _ in 0..5 {
        clock.advance(Duration::from_millis(10));
        assert!(cache.get("a", &key(1)).is_some());
    }
    clock.advance(Duration::from_millis(10));
    put(&cache, 4);
    assert!(
        cache.get("a", &key(2)).is_none(),
        "2 was least recently used"
    );
    assert!(
        cache.get("a", &key(1)).is_some(),
        "the frequently read entry survives"
    );
    clock.advance(Duration::from_millis(10));
    put(&cache, 5);
    assert!(cache.get("a", &key(3)).is_none(), "then 3");
    assert!(cache.get("a", &key(1)).is_some());
    assert!(cache.get("a", &key(4)).is_some() && cache.get("a", &key(5)).is_some());
}

#[test]
fn recency_not_frequency_decides() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let mut cfg = config(tmp.path());
    cfg.max_bytes = 2 * ENTRY;
    let cache = open(cfg, &clock);
    clock.advance(Duration::from_millis(10));
    put(&cache, 1);
    for _ in 0..20 {
        assert!(
            cache.get("a", &key(1)).is_some(),
            "read 1 many times, long ago"
        );
    }
    clock.advance(Duration::from_millis(10));
    put(&cache, 2);
    clock.advance(Duration::from_millis(10));
    assert!(cache.get("a", &key(2)).is_some(), "read 2 once, recently");
    clock.advance(Duration::from_millis(10));
    put(&cache, 3);
    assert!(
        cache.get("a", &key(1)).is_none(),
        "least-frequently-used would keep 1; LRU drops it"
    );
    assert!(cache.get("a", &key(2)).is_some());
}

#[test]
fn hit_counts_and_last_access_survive_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let mut cfg = config(tmp.path());
    cfg.max_bytes = 3 * ENTRY;
    let cache = open(cfg.clone(), &clock);
    for n in 1..=3 {
        clock.advance(Duration::from_millis(10));
        put(&cache, n);
    }
    clock.advance(Duration::from_secs(5));
    let read_at = std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + 30 + 5_000);
    for _ in 0..4 {
        assert!(cache.get("a", &key(1)).is_some());
    }
    drop(cache);

    let cache = open(cfg, &clock);
    let info = cache.entry_info(&key(1)).expect("info").expect("indexed");
    assert_eq!(info.hits, 4);
    assert_eq!(info.last_access, read_at);
    assert_eq!(info.size, ENTRY);
    assert_eq!(
        cache
            .entry_info(&key(2))
            .expect("info")
            .expect("indexed")
            .hits,
        0
    );
    // The persisted last access decides the next eviction: 2, not 1.
    clock.advance(Duration::from_millis(10));
    put(&cache, 4);
    assert!(
        cache.entry_info(&key(2)).expect("info").is_none(),
        "2 evicted"
    );
    assert!(cache.entry_info(&key(1)).expect("info").is_some(), "1 kept");
}
