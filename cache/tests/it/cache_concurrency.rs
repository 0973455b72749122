//! Several handles and several processes share one cache directory: nothing is served
//! corrupt or for the wrong key, `verify` is clean, and the totals equal the rows of the
//! database. Also: a writer killed with SIGKILL at an arbitrary moment.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};

use cf_cache::{EntryMeta, ResponseCache};

use crate::common::{clock, config, key, open, rows};

const CHILD_DIR: &str = "CF_CACHE_IT_CHILD_DIR";
const CHILD_ID: &str = "CF_CACHE_IT_CHILD_ID";
const KEYS: u64 = 40;
const ROUNDS: u64 = 150;

fn small_config(dir: &Path) -> cf_cache::CacheConfig {
    let mut cfg = config(dir);
    // Small enough that writers evict each other's entries all the time.
    cfg.max_bytes = 48 * 1024;
    cfg.memory_max_entries = 8;
    cfg
}

/// A payload that names its key, so a value served under the wrong key is caught.
fn payload(n: u64, writer: u64, round: u64) -> Vec<u8> {
    let mut out = format!("key={n};writer={writer};round={round};").into_bytes();
    out.resize(200 + ((n * 131 + round * 17) % 2000) as usize, b'.');
    out
}

fn check(n: u64, got: Option<cf_cache::CachedEntry>) {
    if let Some(entry) = got {
        let prefix = format!("key={n};");
        assert!(
            entry.payload.starts_with(prefix.as_bytes()),
            "served under the wrong key"
        );
    }
}

/// One writer's workload: puts, gets and the odd prune over a shared key space.
fn workload(dir: &Path, writer: u64, rounds: u64, mut progress: impl FnMut(u64)) {
    let cache = ResponseCache::open(small_config(dir)).expect("open");
    for round in 0..rounds {
        let n = (round * 7 + writer * 13) % KEYS;
        cache
            .put(
                "agent",
                &key(n),
                &payload(n, writer, round),
                EntryMeta::default(),
            )
            .expect("put");
        for m in [n, (n + 1) % KEYS, (round * 3) % KEYS] {
            check(m, cache.get("agent", &key(m)));
        }
        if round % 50 == 49 {
            cache.prune().expect("prune");
        }
        progress(round);
    }
}

/// Makes the cache's database in `dir` before several handles open it at once: the
/// first opens of a fresh directory may race (see
/// `several_handles_opening_a_fresh_directory_at_once_all_open`).
fn create(dir: &Path) {
    drop(ResponseCache::open(small_config(dir)).expect("open"));
}

fn assert_consistent(dir: &Path) {
    let cache = ResponseCache::open(small_config(dir)).expect("open");
    let report = cache.verify(false).expect("verify");
    assert!(report.is_clean(), "{report:?}");
    let stats = cache.stats();
    assert_eq!(
        (stats.entries, stats.bytes),
        rows(dir),
        "the totals equal the rows"
    );
    assert!(stats.bytes <= 48 * 1024);
    for n in 0..KEYS {
        check(n, cache.get("agent", &key(n)));
    }
}

#[test]
fn four_handles_in_four_threads_share_one_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    create(tmp.path());
    std::thread::scope(|s| {
        for writer in 0..4 {
            let dir = tmp.path();
            s.spawn(move || workload(dir, writer, ROUNDS, |_| {}));
        }
    });
    assert_consistent(tmp.path());
    let stats = ResponseCache::open(small_config(tmp.path()))
        .expect("open")
        .stats();
    // The writers' lookups, plus one per key in `assert_consistent`.
    assert_eq!(
        stats.hits + stats.misses,
        4 * ROUNDS * 3 + KEYS,
        "every lookup counted once"
    );
    assert!(stats.evictions > 0, "the size limit was exercised");
}

/// Handles of one process agree: each finds what another stored, a miss is not
/// remembered, the counters are the directory's, and a `clear` by one empties the
/// others' memory layers at their next write.
#[test]
fn handles_agree_on_entries_and_counters() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let a = open(config(tmp.path()), &clock);
    let b = open(config(tmp.path()), &clock);
    let put = |cache: &ResponseCache, n: u64, payload: &[u8]| {
        cache
            .put("agent", &key(n), payload, EntryMeta::default())
            .expect("put");
    };
    let get =
        |cache: &ResponseCache, n: u64| cache.get("agent", &key(n)).map(|e| e.payload.to_vec());
    put(&a, 1, b"one");
    assert_eq!(
        get(&b, 1).as_deref(),
        Some(&b"one"[..]),
        "b finds a's entry"
    );
    assert_eq!(get(&a, 2), None, "a misses 2");
    put(&b, 2, b"two");
    assert_eq!(
        get(&a, 2).as_deref(),
        Some(&b"two"[..]),
        "the miss was not remembered"
    );
    a.flush().expect("flush a");
    b.flush().expect("flush b");
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!(
        (sa.hits, sa.misses, sa.entries, sa.bytes),
        (sb.hits, sb.misses, sb.entries, sb.bytes),
        "one set of counters"
    );
    assert_eq!((sa.hits, sa.misses, sa.entries), (2, 1, 2));
    assert_eq!((sa.entries, sa.bytes), rows(tmp.path()));

    // b holds 1 and 2 in memory; a clears the directory.
    assert_eq!(a.clear().expect("clear"), 2);
    put(&b, 3, b"three");
    assert_eq!(
        get(&b, 1),
        None,
        "b's memory layer was emptied by its write"
    );
    assert_eq!(get(&b, 2), None);
    assert_eq!(get(&a, 3).as_deref(), Some(&b"three"[..]));
    assert_eq!(rows(tmp.path()).0, 1);
}

/// Regression: handles opening a fresh directory at the same time failed with
/// "database is locked" (SQLITE_BUSY) at once, whatever the busy timeout: SQLite does
/// not wait on a busy lock when `PRAGMA journal_mode = WAL` first converts the new
/// database, and `sqlite::open` did not retry it. Seen in about one round in forty of
/// four threads; over 200 rounds this failed nearly always.
#[test]
fn several_handles_opening_a_fresh_directory_at_once_all_open() {
    for round in 0..200 {
        let tmp = tempfile::tempdir().expect("tempdir");
        let barrier = std::sync::Barrier::new(4);
        std::thread::scope(|s| {
            for _ in 0..4 {
                let (dir, barrier) = (tmp.path(), &barrier);
                s.spawn(move || {
                    barrier.wait();
                    if let Err(e) = ResponseCache::open(small_config(dir)) {
                        panic!("round {round}: {e}");
                    }
                });
            }
        });
    }
}

/// A child process killed if the test fails before reaping it.
struct ChildGuard(Child);

impl ChildGuard {
    /// Waits for the child to exit (no time limit: the test harness's own applies);
    /// `step` names what it was doing.
    fn wait(mut self, step: &str) -> ExitStatus {
        self.0.wait().unwrap_or_else(|e| panic!("{step}: {e}"))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run in child processes by the multi-process tests, not on its own: without the
/// variables set by its parent it does nothing.
#[test]
#[ignore = "helper: run as a child process by the multi-process tests"]
fn child_writer() {
    let (Ok(dir), Ok(id)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_ID)) else {
        eprintln!("child_writer only runs as a child of the multi-process tests");
        return;
    };
    let id: u64 = id.parse().expect("numeric id");
    // Ids from 100 are killed by their parent mid-run; the bound only stops a runaway.
    let rounds = if id >= 100 { 50_000 } else { ROUNDS };
    workload(Path::new(&dir), id, rounds, |round| {
        if round % 20 == 19 {
            println!("progress {round}");
        }
    });
}

fn child(dir: &Path, id: u64) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args([
        "--exact",
        "cache_concurrency::child_writer",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_DIR, dir)
    .env(CHILD_ID, id.to_string());
    cmd
}

#[test]
fn four_processes_share_one_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    create(tmp.path());
    let children: Vec<_> = (1..=3)
        .map(|id| {
            ChildGuard(
                child(tmp.path(), id)
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("spawn child"),
            )
        })
        .collect();
    workload(tmp.path(), 0, ROUNDS, |_| {});
    for c in children {
        let status = c.wait("waiting for a child writer");
        assert!(status.success(), "child failed: {status}");
    }
    assert_consistent(tmp.path());
    let stats = ResponseCache::open(small_config(tmp.path()))
        .expect("open")
        .stats();
    assert_eq!(
        stats.hits + stats.misses,
        4 * ROUNDS * 3 + KEYS,
        "every process's lookups counted"
    );
}

#[test]
fn a_writer_killed_at_any_moment_leaves_nothing_served_corrupt() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for attempt in 0..3u64 {
        let mut writer = ChildGuard(
            child(tmp.path(), 100 + attempt)
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn"),
        );
        let stdout = writer.0.stdout.take().expect("stdout");
        // Kill after a varying number of progress lines, i.e. mid-stream.
        let wanted = 2 + attempt * 3;
        let lines = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.starts_with("progress"))
            .take(wanted as usize)
            .count();
        assert_eq!(lines as u64, wanted, "the writer made progress");
        writer.0.kill().expect("SIGKILL");
        let status = writer.wait("reaping the killed writer");
        assert!(!status.success(), "the writer was killed, not finished");

        // Whatever the kill interrupted: nothing is served wrong, and one repair pass
        // leaves the directory clean with exact accounting.
        let cache = ResponseCache::open(small_config(tmp.path())).expect("open");
        for n in 0..KEYS {
            check(n, cache.get("agent", &key(n)));
        }
        cache.verify(true).expect("repair");
        drop(cache);
        assert_consistent(tmp.path());
    }
}
