//! Benchmarks of cf-cache with plain std timing; prints medians.
//!
//! Run: `cargo bench -p cf-cache` (release). Set `CF_CACHE_BENCH_ENTRIES` to change the
//! size of the large cache (default 100,000). The directory is a fresh temp dir on the
//! file system of `$TMPDIR`.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use cf_cache::{
    CacheConfig, CacheKey, Durability, EntryMeta, KeyBuilder, Put, ResponseCache, Secret,
    entry_size,
};

const PAYLOAD: usize = 2048;

fn key(n: u64) -> CacheKey {
    KeyBuilder::new("bench-v1").field_u64("n", n).finish()
}

fn config(dir: &Path) -> CacheConfig {
    let mut cfg = CacheConfig::new(dir);
    cfg.secret = Some(Secret::new(vec![7u8; 32]).expect("secret"));
    cfg
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn report(name: &str, per_op: Duration, target: &str) {
    println!(
        "{name:<48} median {:>10.2} µs   (target {target})",
        per_op.as_secs_f64() * 1e6
    );
}

/// Median per-operation time over `batches` batches of `per_batch` calls.
fn batched(batches: usize, per_batch: u32, mut op: impl FnMut()) -> Duration {
    let samples = (0..batches)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..per_batch {
                op();
            }
            start.elapsed() / per_batch
        })
        .collect();
    median(samples)
}

fn fill(cache: &ResponseCache, range: std::ops::Range<u64>) {
    let payload = vec![b'x'; PAYLOAD];
    for n in range {
        cache
            .put("bench", &key(n), &payload, EntryMeta::default())
            .expect("put");
    }
}

fn memory_hit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = ResponseCache::open(config(tmp.path())).expect("open");
    fill(&cache, 0..100);
    let mut n = 0u64;
    let per_op = batched(50, 2000, || {
        n = (n + 1) % 100;
        black_box(cache.get("bench", &key(n)));
    });
    report("get, memory-layer hit (2 KiB)", per_op, "<= 2 µs");
}

fn disk_hit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    fill(
        &ResponseCache::open(config(tmp.path())).expect("open"),
        0..2000,
    );
    let mut cfg = config(tmp.path());
    cfg.memory_max_entries = 0;
    let cache = ResponseCache::open(cfg).expect("reopen");
    let mut n = 0u64;
    let per_op = batched(40, 50, || {
        n = (n + 1) % 2000;
        black_box(cache.get("bench", &key(n)).expect("hit"));
    });
    report(
        "get, disk hit after reopen (2 KiB, HMAC checked)",
        per_op,
        "<= 100 µs",
    );
}

fn insert(durability: Durability) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(tmp.path());
    cfg.durability = durability;
    let cache = ResponseCache::open(cfg).expect("open");
    fill(&cache, 0..100);
    let payload = vec![b'y'; PAYLOAD];
    let mut n = 1_000_000u64;
    let (batches, per_batch) = match durability {
        Durability::Fsync => (10, 10),
        _ => (40, 50),
    };
    let per_op = batched(batches, per_batch, || {
        n += 1;
        cache
            .put("bench", &key(n), &payload, EntryMeta::default())
            .expect("put");
    });
    let name = format!(
        "put, new key (2 KiB, {durability:?}: fsync {})",
        durability == Durability::Fsync
    );
    report(&name, per_op, "<= 200 µs");
}

/// Each big put evicts `PER_PUT` small entries in a full cache; the same puts into a
/// cache with room are the baseline. The difference divided by `PER_PUT` is the cost of
/// evicting one entry (the index rows and the body deleted through the use index).
fn eviction() {
    const SMALL: usize = 100;
    const PER_PUT: u64 = 100;
    const PUTS: u64 = 30;
    let small_entry = entry_size(SMALL as u64);
    // The largest payload charged at most PER_PUT small entries.
    let mut big_len = PER_PUT * small_entry;
    while entry_size(big_len) > PER_PUT * small_entry {
        big_len -= 16;
    }
    let big = vec![b'b'; big_len as usize];
    let run = |full: bool| {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(tmp.path());
        cfg.max_bytes = if full {
            10_000 * small_entry
        } else {
            u64::MAX / 2
        };
        let cache = ResponseCache::open(cfg).expect("open");
        let payload = vec![b's'; SMALL];
        for n in 0..10_000 {
            cache
                .put("bench", &key(n), &payload, EntryMeta::default())
                .expect("put");
        }
        let samples: Vec<Duration> = (0..PUTS)
            .map(|i| {
                let start = Instant::now();
                cache
                    .put("bench", &key(1_000_000 + i), &big, EntryMeta::default())
                    .expect("put");
                start.elapsed()
            })
            .collect();
        let evictions = cache.stats().evictions;
        (median(samples), evictions)
    };
    let (with_room, none) = run(false);
    let (full, evicted) = run(true);
    assert_eq!(none, 0);
    assert!(
        (PUTS * (PER_PUT - 2)..=PUTS * PER_PUT).contains(&evicted),
        "each put evicted about {PER_PUT} entries: {evicted}"
    );
    report(
        &format!("put evicting {PER_PUT} LRU entries (10,000 entries)"),
        full,
        "-",
    );
    report("same put, cache with room", with_room, "-");
    report(
        "  eviction cost per entry",
        full.saturating_sub(with_room) / PER_PUT as u32,
        "-",
    );
}

fn open_large(entries: u64) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = {
        let mut cfg = config(tmp.path());
        cfg.max_bytes = u64::MAX / 2;
        cfg.memory_max_entries = 0;
        cfg
    };
    let start = Instant::now();
    fill(&ResponseCache::open(cfg.clone()).expect("open"), 0..entries);
    println!(
        "  (filled {entries} entries in {:.1} s)",
        start.elapsed().as_secs_f64()
    );
    let opens = (0..20)
        .map(|_| {
            let start = Instant::now();
            let cache = ResponseCache::open(cfg.clone()).expect("open");
            let took = start.elapsed();
            drop(black_box(cache));
            took
        })
        .collect();
    report(
        &format!("open, {entries} entries"),
        median(opens),
        "<= 50 ms",
    );
    let loads = (0..5)
        .map(|_| {
            let cache = ResponseCache::open(cfg.clone()).expect("open");
            let start = Instant::now();
            let stats = cache.stats();
            let took = start.elapsed();
            assert_eq!(stats.entries, entries);
            took
        })
        .collect();
    report(
        &format!("open, then stats (one transaction), {entries} entries"),
        median(loads),
        "-",
    );
    let firsts = (0..20)
        .map(|i| {
            let cache = ResponseCache::open(cfg.clone()).expect("open");
            let start = Instant::now();
            black_box(cache.get("bench", &key(i * 997 % entries)).expect("hit"));
            start.elapsed()
        })
        .collect();
    report("open, then first get", median(firsts), "-");
}

/// What `entries` answers of `len` bytes take on disk, stored in groups of 64 as the
/// write-behind stores them, against their payload bytes; and the time per insert.
fn footprint(entries: u64, len: usize) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(tmp.path());
    cfg.max_bytes = u64::MAX / 2;
    cfg.memory_max_entries = 0;
    let cache = ResponseCache::open(cfg).expect("open");
    let payload = vec![b'a'; len];
    let start = Instant::now();
    for group in 0..entries.div_ceil(64) {
        let keys: Vec<CacheKey> = (group * 64..((group + 1) * 64).min(entries))
            .map(key)
            .collect();
        let puts: Vec<Put<'_>> = keys
            .iter()
            .map(|key| Put {
                agent: "bench",
                key,
                payload: &payload,
                meta: EntryMeta::default(),
            })
            .collect();
        assert!(cache.put_many(&puts).iter().all(Result::is_ok));
    }
    let per_insert = start.elapsed() / entries as u32;
    let stats = cache.stats();
    let payload_bytes = entries * len as u64;
    report(
        &format!("put_many, groups of 64 ({len} B), {entries} entries"),
        per_insert,
        "-",
    );
    println!(
        "  {entries} answers of {len} B: {:.1} MB on disk for {:.1} MB of payload ({:.2}×; charged {:.1} MB)",
        stats.disk_bytes as f64 / 1e6,
        payload_bytes as f64 / 1e6,
        stats.disk_bytes as f64 / payload_bytes as f64,
        stats.bytes as f64 / 1e6,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this quickly instead.
    let quick = !std::env::args().any(|a| a == "--bench");
    let entries = std::env::var("CF_CACHE_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1_000 } else { 100_000 });
    println!("cf-cache benchmarks (payload {PAYLOAD} bytes, medians)");
    memory_hit();
    disk_hit();
    insert(Durability::Fast);
    insert(Durability::Fsync);
    eviction();
    open_large(entries);
    footprint(entries, 400);
}
