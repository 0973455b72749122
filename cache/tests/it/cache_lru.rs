//! Size limit by true LRU (last access, persisted across restarts), and per-entry hit
//! counts that survive a restart.

use std::time::Duration;

use cf_cache::{EntryMeta, entry_size};

use crate::common::{DB_FILE, clock, config, key, open, rows};

const PAYLOAD: u64 = 1000;

/// The charged size of one entry of these tests.
fn entry() -> u64 {
    entry_size(PAYLOAD)
}

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
    cfg.max_bytes = 10 * entry() + entry() / 2;
    let cache = open(cfg, &clock);
    for n in 0..50 {
        clock.advance(Duration::from_millis(1));
        put(&cache, n);
        assert!(cache.stats().bytes <= 10 * entry() + entry() / 2);
    }
    let stats = cache.stats();
    assert_eq!((stats.entries, stats.evictions), (10, 40));
    assert_eq!(rows(tmp.path()), (10, 10 * entry()));
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
    cfg.max_bytes = 3 * entry();
    // No memory layer: every read goes through the disk path and the shared index.
    cfg.memory_max_entries = 0;
    let cache = open(cfg, &clock);
    for n in 1..=3 {
        clock.advance(Duration::from_secs(61));
        put(&cache, n);
    }
    // Entry 1 is the oldest, but it is read often (a minute apart: the LRU's
    // resolution).
    for _ in 0..5 {
        clock.advance(Duration::from_secs(61));
        assert!(cache.get("a", &key(1)).is_some());
    }
    clock.advance(Duration::from_secs(61));
    put(&cache, 4);
    assert!(
        cache.get("a", &key(2)).is_none(),
        "2 was least recently used"
    );
    assert!(
        cache.get("a", &key(1)).is_some(),
        "the frequently read entry survives"
    );
    clock.advance(Duration::from_secs(61));
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
    cfg.max_bytes = 2 * entry();
    // No memory layer: a handle's memory may go on serving an entry evicted from the
    // database (a valid answer until it expires); what is decided here is the database.
    cfg.memory_max_entries = 0;
    let cache = open(cfg, &clock);
    clock.advance(Duration::from_secs(61));
    put(&cache, 1);
    for _ in 0..20 {
        assert!(
            cache.get("a", &key(1)).is_some(),
            "read 1 many times, long ago"
        );
    }
    clock.advance(Duration::from_secs(61));
    put(&cache, 2);
    clock.advance(Duration::from_secs(61));
    assert!(cache.get("a", &key(2)).is_some(), "read 2 once, recently");
    clock.advance(Duration::from_secs(61));
    put(&cache, 3);
    assert!(
        cache.get("a", &key(1)).is_none(),
        "least-frequently-used would keep 1; LRU drops it"
    );
    assert!(cache.entry_info(&key(1)).expect("info").is_none());
    assert!(cache.get("a", &key(2)).is_some());
    let stats = cache.stats();
    assert_eq!((stats.entries, stats.evictions), (2, 1));
}

#[test]
fn hit_counts_and_last_access_survive_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let mut cfg = config(tmp.path());
    cfg.max_bytes = 3 * entry();
    let cache = open(cfg.clone(), &clock);
    for n in 1..=3 {
        clock.advance(Duration::from_millis(10));
        put(&cache, n);
    }
    // Past the LRU's resolution of a minute: the reads are recorded.
    clock.advance(Duration::from_secs(90));
    let read_at = std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + 30 + 90_000);
    for _ in 0..4 {
        assert!(cache.get("a", &key(1)).is_some());
    }
    drop(cache);

    let cache = open(cfg, &clock);
    let info = cache.entry_info(&key(1)).expect("info").expect("indexed");
    assert_eq!(info.hits, 4);
    assert_eq!(info.last_access, read_at);
    assert_eq!(info.size, entry());
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

/// The limit counts what the database occupies: after three times the limit's worth of
/// 400-byte answers, the charged bytes are under the limit and the database file is
/// within half again of it (plus 64 KiB for the schema and the B-trees' inner pages).
#[test]
fn the_size_limit_counts_the_disk() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let max_bytes = 2 * 1024 * 1024;
    let mut cfg = config(tmp.path());
    cfg.max_bytes = max_bytes;
    let cache = open(cfg, &clock);
    let count = 3 * max_bytes / entry_size(400);
    for n in 0..count {
        clock.advance(Duration::from_millis(1));
        let mut answer = format!("answer {n}: ").into_bytes();
        answer.resize(400, b'.');
        cache
            .put("a", &key(n), &answer, EntryMeta::default())
            .expect("put");
        if n % 1000 == 0 {
            assert!(cache.stats().bytes <= max_bytes, "after {n} puts");
        }
    }
    let stats = cache.stats();
    assert!(stats.bytes <= max_bytes, "{stats:?}");
    assert!(
        stats.bytes > max_bytes - entry_size(400),
        "the limit is used, not undershot: {stats:?}"
    );
    assert_eq!(stats.evictions + stats.entries, count, "{stats:?}");
    assert_eq!((stats.entries, stats.bytes), rows(tmp.path()));
    let file = std::fs::metadata(tmp.path().join(DB_FILE))
        .expect("database")
        .len();
    let bound = max_bytes * 3 / 2 + 64 * 1024;
    assert!(
        file <= bound,
        "the database file is {file} bytes; the limit is {max_bytes}, the bound {bound}"
    );
    let allocated: u64 = [DB_FILE, "responses.sqlite-wal", "responses.sqlite-shm"]
        .iter()
        .filter_map(|name| std::fs::metadata(tmp.path().join(name)).ok())
        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
        .sum();
    assert_eq!(
        stats.disk_bytes, allocated,
        "disk_bytes is what the files occupy"
    );
    // The newest answers are the ones kept.
    assert!(cache.get("a", &key(count - 1)).is_some());
    assert!(cache.get("a", &key(0)).is_none());
}

/// Regression: the handle whose put evicted an entry from the database went on serving
/// it from its memory layer, and counted those hits, although `put_many` knows the
/// evicted keys. The memory layer's documentation allows this for other processes'
/// evictions, which a handle cannot see; not for its own.
#[test]
fn an_entry_this_handle_evicted_is_not_served_from_its_memory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let mut cfg = config(tmp.path());
    cfg.max_bytes = 2 * entry();
    let cache = open(cfg, &clock);
    for n in 1..=3 {
        clock.advance(Duration::from_millis(10));
        put(&cache, n);
    }
    assert!(
        cache.entry_info(&key(1)).expect("info").is_none(),
        "1 was evicted"
    );
    assert_eq!(cache.get("a", &key(1)), None, "and is not served");
}

/// A read less than a minute after an entry's recorded last use is counted in the totals
/// but writes nothing (memcached's rule): it neither moves the entry in the LRU nor
/// counts in its hits. A minute later, a read does both.
#[test]
fn reads_within_a_minute_of_the_last_use_are_counted_not_recorded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let mut cfg = config(tmp.path());
    cfg.max_bytes = 2 * entry();
    cfg.memory_max_entries = 0;
    let cache = open(cfg, &clock);
    put(&cache, 1);
    clock.advance(Duration::from_secs(1));
    put(&cache, 2);
    clock.advance(Duration::from_secs(30));
    assert!(cache.get("a", &key(1)).is_some());
    let info = cache.entry_info(&key(1)).expect("info").expect("indexed");
    assert_eq!(info.hits, 0, "not recorded");
    assert_eq!(cache.stats().hits, 1, "but counted");
    // 1 is still the least recently used: a third entry evicts it.
    put(&cache, 3);
    assert!(
        cache.entry_info(&key(1)).expect("info").is_none(),
        "1 evicted"
    );
    // A minute after its last use, a read of 2 is recorded and moves it ahead of 3.
    clock.advance(Duration::from_secs(60));
    assert!(cache.get("a", &key(2)).is_some());
    assert_eq!(
        cache
            .entry_info(&key(2))
            .expect("info")
            .expect("indexed")
            .hits,
        1
    );
    put(&cache, 4);
    assert!(
        cache.entry_info(&key(3)).expect("info").is_none(),
        "3 evicted"
    );
    assert!(cache.entry_info(&key(2)).expect("info").is_some(), "2 kept");
}

/// Regression (review): hits served from the memory layer were recorded at every
/// flush once the first minute had passed (the memory copy kept its first last-use
/// time), rewriting the row of every hot key every 2 s.
#[test]
fn memory_hits_are_recorded_at_most_once_a_minute() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cache = open(config(tmp.path()), &clock);
    put(&cache, 1);
    clock.advance(Duration::from_secs(61));
    assert!(cache.get("a", &key(1)).is_some());
    cache.flush().expect("flush");
    for _ in 0..5 {
        clock.advance(Duration::from_secs(2));
        assert!(cache.get("a", &key(1)).is_some());
        cache.flush().expect("flush");
    }
    let info = cache.entry_info(&key(1)).expect("info").expect("indexed");
    assert_eq!(info.hits, 1, "one recorded read in the minute");
    assert_eq!(cache.stats().hits, 6, "every read counted");
    // A minute after the recorded one, the next read is recorded again.
    clock.advance(Duration::from_secs(60));
    assert!(cache.get("a", &key(1)).is_some());
    cache.flush().expect("flush");
    let info = cache.entry_info(&key(1)).expect("info").expect("indexed");
    assert_eq!(info.hits, 2);
}
