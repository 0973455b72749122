//! Four processes sharing one cache directory: mixed reads and writes of the response
//! cache under a size limit small enough to force evictions, and of one agent's store
//! under one quota. The workers are this test binary run again with
//! `CF_MP_WORKER=<n>`, which selects [`cache_worker`].
//!
//! Checked, in every worker as it goes: every value read is one some writer wrote for
//! that key (values are derived from key, writer and sequence number, so a reader can
//! tell); `verify` finds the index equal to the files; the size limit and the quota
//! hold. Afterwards: no integrity failure was ever counted, the cache verifies clean,
//! its reported size equals the sum of its entry files on disk and respects the limit,
//! and the store's shared totals equal what it holds and respect the quota.

use cf_cache::{AgentStores, CacheConfig, EntryMeta, KeyBuilder, ResponseCache, StoreError};
use cf_cache::{CacheKey, StoreLimits};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WORKERS: usize = 4;
/// How long each worker keeps going (long enough to overlap the others' startup), and
/// the operations it makes at least, however slow the machine (`CF_MP_MIN_OPS`
/// raises it: 8000 makes the workers compact the journal, several times, while others
/// read and write).
const WORK_FOR: Duration = Duration::from_millis(2500);
const MIN_OPS: u64 = 300;

/// Set in workers that run beside one that gets killed.
fn crash_tolerant() -> bool {
    std::env::var_os("CF_MP_CRASH").is_some()
}

fn min_ops() -> u64 {
    std::env::var("CF_MP_MIN_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MIN_OPS)
}
/// Response cache: about 50 entries fit, over 400 keys.
const CACHE_MAX_BYTES: u64 = 48 * 1024;
const CACHE_KEYS: u64 = 400;
/// The shared agent store's quota.
const STORE_AGENT: &str = "shared-agent";
const STORE_KEYS: u64 = 120;
/// Rounds of the kill test, each on the directory the last left.
const KILL_ROUNDS: usize = 3;

/// Refusing when full, so that the quota shows in every worker's counts (eviction, the
/// default, is tested in cf-cache's `store_evict`, and with four handles there).
fn store_limits() -> StoreLimits {
    StoreLimits {
        max_bytes: 8 * 1024,
        max_entries: 40,
        max_value_bytes: 2 * 1024,
        when_full: cf_cache::WhenFull::Refuse,
        ..StoreLimits::default()
    }
}

fn cache_config(root: &Path, memory_layer: bool) -> CacheConfig {
    let mut config = CacheConfig::new(root.join("responses"));
    config.max_bytes = CACHE_MAX_BYTES;
    if !memory_layer {
        config.memory_max_entries = 0;
    }
    config
}

fn key(k: u64) -> CacheKey {
    KeyBuilder::new("multiprocess").field_u64("k", k).finish()
}

/// The value writer `w` writes for key `k` the `seq`-th time: a header naming all
/// three, then `len` bytes that only that header produces.
fn value(k: u64, w: usize, seq: u64, len: usize) -> Vec<u8> {
    let mut v = format!("{k}|{w}|{seq}|{len}|").into_bytes();
    let mut rng = fastrand::Rng::with_seed(k ^ ((w as u64) << 48) ^ (seq << 8));
    v.extend((0..len).map(|_| rng.u8(..)));
    v
}

/// Whether `v` is a value some writer wrote for `k`.
fn check(k: u64, v: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(&v[..v.len().min(64)]).into_owned();
    let mut fields = text.splitn(5, '|');
    let mut next = || fields.next().and_then(|f| f.parse::<u64>().ok());
    let (Some(key), Some(w), Some(seq), Some(len)) = (next(), next(), next(), next()) else {
        return Err(format!("key {k}: not a value of ours: {text:?}"));
    };
    if key != k {
        return Err(format!("key {k}: got the value of key {key}"));
    }
    if value(key, w as usize, seq, len as usize) != v {
        return Err(format!("key {k}: a corrupt value (writer {w}, seq {seq})"));
    }
    Ok(())
}

/// Counts of one worker, printed for the parent.
#[derive(Debug, Default)]
struct Counts {
    gets: u64,
    hits: u64,
    puts: u64,
    verifies: u64,
    reopens: u64,
    store_gets: u64,
    store_hits: u64,
    store_sets: u64,
    store_refused: u64,
    store_deletes: u64,
}

fn response_cache_work(root: &Path, w: usize, counts: &mut Counts) {
    let memory_layer = w.is_multiple_of(2);
    let mut cache = ResponseCache::open(cache_config(root, memory_layer)).expect("open");
    let mut rng = fastrand::Rng::with_seed(0xc0ffee ^ w as u64);
    let started = Instant::now();
    let (mut seq, min_ops) = (0, min_ops());
    for ops in 0.. {
        if ops >= min_ops && started.elapsed() >= WORK_FOR {
            break;
        }
        let k = rng.u64(0..CACHE_KEYS);
        match rng.u64(0..100) {
            0..=49 => {
                counts.gets += 1;
                if let Some(entry) = cache.get("agent", &key(k)) {
                    counts.hits += 1;
                    if let Err(e) = check(k, &entry.payload) {
                        panic!("worker {w}: response cache: {e}");
                    }
                }
            }
            50..=94 => {
                seq += 1;
                let v = value(k, w, seq, 100 + rng.u64(0..1400) as usize);
                let meta = EntryMeta {
                    tokens: k,
                    cost_usd: Some(0.001),
                    ttl: None,
                };
                cache
                    .put("agent", &key(k), &v, meta)
                    .unwrap_or_else(|e| panic!("worker {w}: put: {e}"));
                counts.puts += 1;
            }
            95..=97 => {
                let stats = cache.stats();
                assert!(
                    stats.bytes <= CACHE_MAX_BYTES,
                    "worker {w}: {} bytes over the limit of {CACHE_MAX_BYTES}",
                    stats.bytes
                );
                assert_eq!(stats.integrity_failures, 0, "worker {w}: {stats:?}");
            }
            98 => {
                let report = cache.verify(false).expect("verify");
                if crash_tolerant() {
                    // A killed writer may leave an entry renamed before its journal
                    // record, or removed before it: valid files, a stale index.
                    assert!(report.bad.is_empty(), "worker {w}: {report:?}");
                } else {
                    assert!(report.is_clean(), "worker {w}: {report:?}");
                }
                counts.verifies += 1;
            }
            _ => {
                // A new handle, as a new run of the host would open.
                drop(cache);
                cache = ResponseCache::open(cache_config(root, memory_layer)).expect("reopen");
                counts.reopens += 1;
            }
        }
    }
}

fn store_work(root: &Path, w: usize, counts: &mut Counts) {
    let limits = store_limits();
    let stores = AgentStores::open(root, limits.clone()).expect("open stores");
    let store = stores.scope(STORE_AGENT).expect("scope");
    let mut rng = fastrand::Rng::with_seed(0xbeef ^ w as u64);
    let started = Instant::now();
    let (mut seq, min_ops) = (0, min_ops());
    for ops in 0.. {
        if ops >= min_ops && started.elapsed() >= WORK_FOR {
            break;
        }
        let k = rng.u64(0..STORE_KEYS);
        let name = format!("k{k}");
        match rng.u64(0..100) {
            0..=39 => {
                counts.store_gets += 1;
                if let Some(v) = store.get(&name).expect("get") {
                    counts.store_hits += 1;
                    if let Err(e) = check(k, &v) {
                        panic!("worker {w}: store: {e}");
                    }
                }
            }
            40..=84 => {
                seq += 1;
                let v = value(k, w, seq, 50 + rng.u64(0..700) as usize);
                match store.set(&name, &v, None) {
                    Ok(()) => counts.store_sets += 1,
                    Err(StoreError::QuotaExceeded(_)) => counts.store_refused += 1,
                    Err(e) => panic!("worker {w}: set: {e}"),
                }
            }
            85..=94 => {
                store.delete(&name).expect("delete");
                counts.store_deletes += 1;
            }
            _ => {
                let usage = store.usage().expect("usage");
                assert!(
                    usage.bytes <= limits.max_bytes && usage.entries <= limits.max_entries,
                    "worker {w}: {usage:?} over the quota"
                );
            }
        }
    }
}

/// The worker: runs only when started by the test below with `CF_MP_WORKER` set.
#[test]
fn cache_worker() {
    let (Ok(w), Ok(root)) = (std::env::var("CF_MP_WORKER"), std::env::var("CF_MP_ROOT")) else {
        return;
    };
    let w: usize = w.parse().expect("worker number");
    let root = std::path::PathBuf::from(root);
    let (mut cache_counts, mut store_counts) = (Counts::default(), Counts::default());
    std::thread::scope(|s| {
        s.spawn(|| response_cache_work(&root, w, &mut cache_counts));
        s.spawn(|| store_work(&root, w, &mut store_counts));
    });
    let c = Counts {
        store_gets: store_counts.store_gets,
        store_hits: store_counts.store_hits,
        store_sets: store_counts.store_sets,
        store_refused: store_counts.store_refused,
        store_deletes: store_counts.store_deletes,
        ..cache_counts
    };
    println!(
        "MP-WORKER {w} {} {} {} {} {} {} {} {} {} {}",
        c.gets,
        c.hits,
        c.puts,
        c.verifies,
        c.reopens,
        c.store_gets,
        c.store_hits,
        c.store_sets,
        c.store_refused,
        c.store_deletes
    );
}

/// Starts the workers on `root`; with `kill`, SIGKILLs that worker after that delay.
/// Returns the summed counts of the workers that finished.
fn run_workers(root: &Path, kill: Option<(usize, Duration)>) -> [u64; 10] {
    let exe = std::env::current_exe().expect("this test binary");
    let mut children: Vec<_> = (0..WORKERS)
        .map(|w| {
            let mut cmd = Command::new(&exe);
            cmd.args(["multiprocess::cache_worker", "--exact", "--nocapture"])
                .args(["--test-threads", "1"])
                .env("CF_MP_WORKER", w.to_string())
                .env("CF_MP_ROOT", root)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if kill.is_some() {
                cmd.env("CF_MP_CRASH", "1");
            }
            Some(cmd.spawn().expect("a worker starts"))
        })
        .collect();
    if let Some((victim, delay)) = kill {
        std::thread::sleep(delay);
        let mut child = children[victim].take().expect("the victim");
        // `Child::kill` is SIGKILL on Unix.
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("reaped");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "worker {victim} was killed, not finished, after {delay:?}"
        );
    }
    let mut totals = [0u64; 10];
    for (w, child) in children.into_iter().enumerate() {
        let Some(child) = child else { continue };
        let out = child.wait_with_output().expect("a worker ends");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "worker {w}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|l| Some(l.split_once(&format!("MP-WORKER {w} "))?.1))
            .unwrap_or_else(|| panic!("worker {w} reported nothing: {stdout}"));
        let counts: Vec<u64> = line
            .split(' ')
            .map(|n| n.parse().expect("a count"))
            .collect();
        eprintln!(
            "multiprocess: worker {w}: gets hits puts verifies reopens | store gets hits sets refused deletes = {counts:?}"
        );
        for (t, c) in totals.iter_mut().zip(&counts) {
            *t += c;
        }
    }
    totals
}

/// The response cache's size as its totals report it, checked against its rows.
fn check_sizes(cache: &ResponseCache) -> cf_cache::Stats {
    let stats = cache.stats();
    let report = cache.verify(false).expect("verify");
    assert!(
        !report.totals_wrong && report.checked == stats.entries,
        "the totals are the rows': {report:?} {stats:?}"
    );
    assert!(stats.bytes <= CACHE_MAX_BYTES, "{stats:?}");
    stats
}

#[test]
fn four_processes_share_the_response_cache_and_a_store_consistently() {
    let root = tempfile::tempdir().expect("temp dir");
    let totals = run_workers(root.path(), None);
    assert!(totals[1] > 0 && totals[6] > 0, "some reads hit: {totals:?}");
    assert!(
        totals[8] > 0,
        "the store's quota refused some writes: {totals:?}"
    );

    // The response cache: clean, over the limit never, its size that of the files.
    let cache = ResponseCache::open(cache_config(root.path(), false)).expect("open");
    let report = cache.verify(false).expect("verify");
    assert!(report.is_clean(), "{report:?}");
    let stats = check_sizes(&cache);
    assert_eq!(stats.integrity_failures, 0, "{stats:?}");
    assert!(stats.evictions > 0, "the limit forced evictions: {stats:?}");
    eprintln!(
        "multiprocess: {} entries, {} bytes, {} evictions; {} bytes on disk",
        stats.entries, stats.bytes, stats.evictions, stats.disk_bytes
    );
    for k in 0..CACHE_KEYS {
        if let Some(entry) = cache.get("agent", &key(k)) {
            check(k, &entry.payload).unwrap_or_else(|e| panic!("after the workers: {e}"));
        }
    }

    // The store: the totals the writers kept (the database's, maintained in each
    // write's transaction) equal what it holds, within the quota.
    let limits = store_limits();
    let stores = AgentStores::open(root.path(), limits.clone()).expect("open stores");
    let store = stores.scope(STORE_AGENT).expect("scope");
    let kept = store.usage().expect("usage");
    let (bytes, entries) = (kept.bytes, kept.entries);
    let (mut live_bytes, mut live_entries) = (0, 0);
    for k in 0..STORE_KEYS {
        let name = format!("k{k}");
        if let Some(v) = store.get(&name).expect("get") {
            check(k, &v).unwrap_or_else(|e| panic!("after the workers: {e}"));
            live_bytes += (name.len() + v.len()) as u64;
            live_entries += 1;
        }
    }
    assert_eq!((live_bytes, live_entries), (bytes, entries));
    assert!(bytes <= limits.max_bytes && entries <= limits.max_entries);
}

#[test]
fn a_worker_killed_mid_write_leaves_no_corrupt_entry_for_the_others() {
    let seed = std::env::var("CF_MP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let mut rng = fastrand::Rng::with_seed(seed);
    let root = tempfile::tempdir().expect("temp dir");
    for round in 0..KILL_ROUNDS {
        let victim = rng.u64(0..WORKERS as u64) as usize;
        // Within the workers' WORK_FOR, after their startup.
        let delay = Duration::from_millis(300 + rng.u64(0..1700));
        let context =
            format!("round {round}: worker {victim} killed after {delay:?} (CF_MP_SEED={seed})");
        eprintln!("multiprocess: {context}");
        // The survivors check every value they read and that verify finds no bad entry.
        run_workers(root.path(), Some((victim, delay)));

        let cache = ResponseCache::open(cache_config(root.path(), false)).expect("open");
        let report = cache.verify(false).expect("verify");
        // SQLite's transactions: a kill leaves nothing to repair.
        assert!(report.is_clean(), "{context}: {report:?}");
        assert_eq!(cache.stats().integrity_failures, 0, "{context}");
        eprintln!("multiprocess: after the kill: {report:?}");
        // Repairing leaves an index that is the files, within the limit.
        cache.verify(true).expect("verify --fix");
        let report = cache.verify(false).expect("verify");
        assert!(report.is_clean(), "{context}: after repair: {report:?}");
        check_sizes(&cache);
        for k in 0..CACHE_KEYS {
            if let Some(entry) = cache.get("agent", &key(k)) {
                check(k, &entry.payload).unwrap_or_else(|e| panic!("{context}: {e}"));
            }
        }
    }
    // The store: every value intact; reopening rescans, and the rescan is within the
    // quota (a kill between a rename and the usage update leaves the shared usage
    // behind by that entry until a scope is opened again, so the survivors may have
    // gone over by at most one entry).
    let limits = store_limits();
    let stores = AgentStores::open(root.path(), limits.clone()).expect("open stores");
    let store = stores.scope(STORE_AGENT).expect("scope (rescans)");
    let usage = store.usage().expect("usage");
    let (mut live_bytes, mut live_entries) = (0, 0);
    for k in 0..STORE_KEYS {
        let name = format!("k{k}");
        if let Some(v) = store.get(&name).expect("get") {
            check(k, &v).unwrap_or_else(|e| panic!("CF_MP_SEED={seed}: {e}"));
            live_bytes += (name.len() + v.len()) as u64;
            live_entries += 1;
        }
    }
    assert_eq!((live_bytes, live_entries), (usage.bytes, usage.entries));
    assert!(
        usage.bytes <= limits.max_bytes + limits.max_value_bytes + 8
            && usage.entries <= limits.max_entries + 1,
        "CF_MP_SEED={seed}: {usage:?}: over the quota by more than one entry"
    );
}
