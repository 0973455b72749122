//! The run log: one JSON line per finished run, appended by every `cf-host` process
//! that shares a metrics directory, rotated by size, read back for summaries
//! ([`crate::summary`]).
//!
//! A record never holds the task text, only [`task_hash`]: the log is safe to keep
//! and to share.
//!
//! ```no_run
//! use cf_front::runlog::{DEFAULT_MAX_BYTES, RunLog, default_dir};
//! use std::time::{Duration, SystemTime};
//!
//! # fn demo(records: &[cf_front::runlog::RunRecord]) -> Result<(), Box<dyn std::error::Error>> {
//! let dir = default_dir().ok_or("no data directory")?;
//! let log = RunLog::open(&dir, DEFAULT_MAX_BYTES)?;
//! log.append(records)?;
//! let day_ago = SystemTime::now() - Duration::from_secs(86_400);
//! let read = log.read_since(Some(day_ago))?;
//! println!("{} runs, {} malformed lines", read.records.len(), read.skipped_lines);
//! # Ok(()) }
//! ```

use cf_host::Usage;
use cf_host::{Error, RunError, RunOutput, RunStats};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The size past which the current file is rotated: 10 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;

/// The file being appended to, in the metrics directory.
pub const CURRENT_FILE: &str = "runs.jsonl";

/// How many rotated files are kept: `runs.1.jsonl` (the newest) to `runs.3.jsonl`.
pub const KEPT_ROTATED_FILES: usize = 3;

/// The lock file that serialises appends and rotations across processes.
const LOCK_FILE: &str = "runs.lock";

/// The default metrics directory: `dirs::data_dir()/cf-host/metrics`
/// (`$XDG_DATA_HOME/cf-host/metrics` on Linux), or `None` when the platform has none.
pub fn default_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("cf-host").join("metrics"))
}

/// The first 16 hex digits of the SHA-256 of `task` ([`cf_host::short_digest`]):
/// enough to group repeated tasks, never enough to recover them.
pub fn task_hash(task: &str) -> String {
    cf_host::short_digest(task)
}

/// Milliseconds since the Unix epoch; 0 for a time before it.
pub fn unix_ms(time: SystemTime) -> u64 {
    let ms = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// One finished run, as one line of the log.
///
/// Unknown fields are ignored when reading, so a newer `cf-host` may add fields
/// without making older logs or older readers fail. `Default` is a zeroed record (time
/// 0, no agent), a base for struct updates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// When the run ended, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The agent's name.
    pub agent: String,
    /// [`task_hash`] of the task text; the text itself is never logged.
    pub task_hash: String,
    /// The batch item's id; `None` outside a batch.
    #[serde(default)]
    pub id: Option<String>,
    /// The model of the last answer; `None` when no model answered.
    #[serde(default)]
    pub model: Option<String>,
    /// Whether the run succeeded.
    pub ok: bool,
    /// [`Error::kind`] of a failed run (`deadline`, `llm`, …); `None` when `ok`.
    #[serde(default)]
    pub error_kind: Option<String>,
    /// The whole run, in milliseconds.
    pub latency_ms: f64,
    /// Time spent waiting for the global concurrency limit, in milliseconds.
    #[serde(default)]
    pub queue_wait_ms: f64,
    /// Attempts sent to the provider, retries included.
    #[serde(default)]
    pub attempts: u32,
    /// Model calls answered, from the provider or the response cache.
    #[serde(default)]
    pub llm_calls: u32,
    /// Whether every model call of the run was answered from the cache (`false` for a
    /// run without calls).
    #[serde(default)]
    pub cached: bool,
    /// Model calls answered from the response cache.
    #[serde(default)]
    pub cache_hits: u32,
    /// Tokens of every model call.
    #[serde(default)]
    pub usage: Usage,
    /// What the run cost in US dollars; `None` when a call's model has no price (the
    /// cost is unknown, not zero).
    #[serde(default)]
    pub cost_usd: Option<f64>,
    /// What cached answers saved, in US dollars.
    #[serde(default)]
    pub saved_usd: f64,
}

impl RunRecord {
    /// The record of a run of `agent` on `task` that used `stats` and failed with
    /// `error` (or succeeded), ending now.
    pub fn from_stats(agent: &str, task: &str, stats: &RunStats, error: Option<&Error>) -> Self {
        Self {
            time_ms: unix_ms(SystemTime::now()),
            agent: agent.to_owned(),
            task_hash: task_hash(task),
            id: None,
            model: stats.model.clone(),
            ok: error.is_none(),
            error_kind: error.map(|e| e.kind().to_owned()),
            latency_ms: as_ms(stats.timings.total),
            queue_wait_ms: as_ms(stats.timings.queue_wait),
            attempts: stats.attempts,
            llm_calls: stats.llm_calls,
            cached: stats.llm_calls > 0 && stats.cache_hits == stats.llm_calls,
            cache_hits: stats.cache_hits,
            usage: stats.usage,
            cost_usd: stats.cost.known_usd(),
            saved_usd: stats.saved_usd,
        }
    }

    /// The record of what [`Agent::run`](cf_host::Agent::run) returned, ending now.
    pub fn from_result(agent: &str, task: &str, result: &Result<RunOutput, RunError>) -> Self {
        match result {
            Ok(out) => Self::from_stats(agent, task, &out.stats, None),
            Err(e) => Self::from_stats(agent, task, &e.stats, Some(&e.error)),
        }
    }

    /// This record with a batch item's id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// This record, ended at `time`.
    pub fn with_time(mut self, time: SystemTime) -> Self {
        self.time_ms = unix_ms(time);
        self
    }

    /// When the run ended.
    pub fn time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.time_ms)
    }
}

fn as_ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Whether `file` is not empty and its last byte is not a line end.
fn ends_mid_line(file: &mut File) -> io::Result<bool> {
    if file.metadata()?.len() == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8];
    file.read_exact(&mut last)?;
    Ok(last != *b"\n")
}

/// Why the run log could not be opened, written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunLogError {
    /// A file or the directory of the log could not be created, written, renamed or
    /// read.
    #[error("run log {}: cannot {action}: {source}", path.display())]
    Io {
        /// What was being done: `create the directory`, `append`, `rotate`, `read`, `lock`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A record could not be encoded as JSON (a non-finite number, for instance).
    #[error("cannot encode a run record: {0}")]
    Encode(#[source] serde_json::Error),
}

impl RunLogError {
    fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_owned();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

/// What [`RunLog::read_since`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadReport {
    /// The records, oldest file first and in file order within each file.
    pub records: Vec<RunRecord>,
    /// Lines that were not a valid record (a write cut short, a foreign line); blank
    /// lines are not counted.
    pub skipped_lines: u64,
}

/// The run log of one metrics directory.
///
/// Several threads may share one `RunLog` and several processes may open the same
/// directory: every [`append`](Self::append) and rotation holds an exclusive lock on
/// `runs.lock` (an advisory OS file lock) and writes its lines with one write on a
/// file opened with `O_APPEND`; [`read_since`](Self::read_since) holds a shared lock
/// so it never sees a rotation half done.
///
/// **Rotation.** Before a batch is appended, if `runs.jsonl` is not empty and the
/// batch would take it past `max_bytes`, `runs.2.jsonl` becomes `runs.3.jsonl`
/// (replacing the oldest), `runs.1.jsonl` becomes `runs.2.jsonl` and `runs.jsonl`
/// becomes `runs.1.jsonl`. So no file is larger than `max_bytes`, unless a single
/// batch is, and the log takes at most `(1 + KEPT_ROTATED_FILES) × max_bytes`.
#[derive(Debug)]
pub struct RunLog {
    dir: PathBuf,
    max_bytes: u64,
    // Threads of one process also take the OS lock; the mutex only keeps them from
    // contending for it.
    guard: Mutex<()>,
}

impl RunLog {
    /// Opens the log in `dir`, creating the directory; `max_bytes` is the size past
    /// which `runs.jsonl` is rotated ([`DEFAULT_MAX_BYTES`]; 0 rotates before every
    /// append).
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, RunLogError> {
        fs::create_dir_all(dir).map_err(RunLogError::io("create the directory", dir))?;
        Ok(Self {
            dir: dir.to_owned(),
            max_bytes,
            guard: Mutex::new(()),
        })
    }

    /// The metrics directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file being appended to: `<dir>/runs.jsonl`.
    pub fn current_path(&self) -> PathBuf {
        self.dir.join(CURRENT_FILE)
    }

    /// The `n`th rotated file, 1 being the newest: `<dir>/runs.<n>.jsonl`.
    pub fn rotated_path(&self, n: usize) -> PathBuf {
        self.dir.join(format!("runs.{n}.jsonl"))
    }

    /// Appends `records`, one JSON line each, in one write; rotates first if the
    /// batch would take `runs.jsonl` past the size limit. An empty batch writes
    /// nothing.
    pub fn append(&self, records: &[RunRecord]) -> Result<(), RunLogError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut batch = Vec::with_capacity(records.len() * 512);
        for record in records {
            serde_json::to_writer(&mut batch, record).map_err(RunLogError::Encode)?;
            batch.push(b'\n');
        }
        let _thread = self.guard.lock().unwrap_or_else(PoisonError::into_inner);
        let _process = self.lock(true)?;
        let current = self.current_path();
        let len = match fs::metadata(&current) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(RunLogError::io("append", &current)(e)),
        };
        if len > 0 && len.saturating_add(batch.len() as u64) > self.max_bytes {
            self.rotate()?;
        }
        let append = |e| RunLogError::io("append", &current)(e);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&current)
            .map_err(append)?;
        // A write cut short (a full disk, a killed process) leaves a partial line;
        // ending it keeps it from swallowing this batch's first record.
        if ends_mid_line(&mut file).map_err(append)? {
            batch.insert(0, b'\n');
        }
        file.write_all(&batch).map_err(append)
    }

    /// Shifts every file one place older, dropping the oldest. Called with the lock
    /// held.
    fn rotate(&self) -> Result<(), RunLogError> {
        // A rename replaces its destination, so the oldest file goes first.
        for n in (1..KEPT_ROTATED_FILES).rev() {
            let (from, to) = (self.rotated_path(n), self.rotated_path(n + 1));
            match fs::rename(&from, &to) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(RunLogError::io("rotate", &from)(e));
                }
                _ => {}
            }
        }
        let current = self.current_path();
        fs::rename(&current, self.rotated_path(1)).map_err(RunLogError::io("rotate", &current))
    }

    /// The records of runs that ended at or after `since` (all of them for `None`),
    /// from the rotated files oldest first, then the current file. A line that is not
    /// a record is skipped and counted; a missing file is empty.
    pub fn read_since(&self, since: Option<SystemTime>) -> Result<ReadReport, RunLogError> {
        let since_ms = since.map_or(0, unix_ms);
        let _thread = self.guard.lock().unwrap_or_else(PoisonError::into_inner);
        let _process = self.lock(false)?;
        let mut report = ReadReport::default();
        let files = (1..=KEPT_ROTATED_FILES)
            .rev()
            .map(|n| self.rotated_path(n))
            .chain([self.current_path()]);
        for path in files {
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(RunLogError::io("read", &path)(e)),
            };
            // Lines are split on bytes: a line that is not UTF-8 is malformed, not fatal.
            for line in BufReader::new(file).split(b'\n') {
                let line = line.map_err(RunLogError::io("read", &path))?;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match serde_json::from_slice::<RunRecord>(&line) {
                    Ok(r) if r.time_ms >= since_ms => report.records.push(r),
                    Ok(_) => {}
                    Err(_) => report.skipped_lines += 1,
                }
            }
        }
        Ok(report)
    }

    /// Takes the directory's lock, exclusive to write, shared to read; released when
    /// the file drops. A reader finds no lock file only when nothing was ever
    /// appended, and then reads without it (a read-only directory stays readable).
    fn lock(&self, exclusive: bool) -> Result<Option<File>, RunLogError> {
        let path = self.dir.join(LOCK_FILE);
        let lock_err = |e| RunLogError::io("lock", &path)(e);
        let opened = if exclusive {
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
        } else {
            File::open(&path)
        };
        let file = match opened {
            Ok(f) => f,
            Err(e) if !exclusive && e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(lock_err(e)),
        };
        if exclusive {
            file.lock().map_err(lock_err)?;
        } else {
            file.lock_shared().map_err(lock_err)?;
        }
        Ok(Some(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn record(agent: &str, time_ms: u64) -> RunRecord {
        let usage = Usage {
            input_tokens: 100,
            output_tokens: 20,
            ..Usage::default()
        };
        RunRecord {
            time_ms,
            agent: agent.to_owned(),
            task_hash: task_hash("a task"),
            model: Some("claude-sonnet-4-5".to_owned()),
            ok: true,
            latency_ms: 12.5,
            llm_calls: 1,
            usage,
            cost_usd: Some(0.0006),
            ..RunRecord::default()
        }
    }

    fn times(report: &ReadReport) -> Vec<u64> {
        report.records.iter().map(|r| r.time_ms).collect()
    }

    #[test]
    fn task_hash_is_the_first_16_hex_digits_of_sha256() {
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(task_hash("abc"), "ba7816bf8f01cfea");
        assert_eq!(task_hash("secret task").len(), 16);
        assert_ne!(task_hash("a"), task_hash("b"));
    }

    #[test]
    fn a_record_is_one_json_object_with_the_documented_fields() {
        let line = serde_json::to_string(&record("python-expert", 7).with_id("item-1")).unwrap();
        assert!(!line.contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        let documented = "agent attempts cache_hits cached cost_usd error_kind id latency_ms \
                          llm_calls model ok queue_wait_ms saved_usd task_hash time_ms usage";
        assert_eq!(
            keys.join(" "),
            documented.split_whitespace().collect::<Vec<_>>().join(" ")
        );
        assert_eq!(value["id"], "item-1");
        assert_eq!(value["usage"]["input_tokens"], 100);
    }

    #[test]
    fn a_minimal_line_and_unknown_fields_are_read() {
        let line =
            r#"{"time_ms":1,"agent":"a","task_hash":"00","ok":false,"latency_ms":3.0,"future":1}"#;
        let r: RunRecord = serde_json::from_str(line).unwrap();
        assert_eq!(
            (r.id, r.model, r.cost_usd, r.llm_calls),
            (None, None, None, 0)
        );
    }

    #[test]
    fn from_result_takes_stats_error_kind_and_hides_the_task() {
        let mut stats = RunStats {
            llm_calls: 2,
            cache_hits: 2,
            model: Some("m".to_owned()),
            ..RunStats::default()
        };
        stats.cost.unpriced_calls = 1;
        stats.timings.total = Duration::from_millis(250);
        let err = RunError {
            error: Error::Deadline {
                limit: Duration::from_secs(1),
            },
            stats: stats.clone(),
        };
        let kind = err.error.kind();
        let r = RunRecord::from_result("bug-investigator", "the secret task", &Err(err));
        assert!(!r.ok);
        assert_eq!(r.error_kind.as_deref(), Some(kind));
        assert!(r.cached, "every call came from the cache");
        assert_eq!(r.cost_usd, None, "an unpriced call makes the cost unknown");
        assert!((r.latency_ms - 250.0).abs() < 1e-9);
        assert_eq!(r.task_hash, task_hash("the secret task"));
        assert!(!serde_json::to_string(&r).unwrap().contains("secret"));

        stats.cache_hits = 1;
        stats.cost.unpriced_calls = 0;
        stats.cost.usd = 0.25;
        let r = RunRecord::from_stats("a", "t", &stats, None);
        assert!(r.ok && !r.cached && r.error_kind.is_none());
        assert_eq!(r.cost_usd, Some(0.25));
        let none = RunRecord::from_stats("a", "t", &RunStats::default(), None);
        assert!(!none.cached, "a run without calls is not cached");
    }

    #[test]
    fn append_then_read_round_trips_and_since_filters() {
        let dir = tempfile::tempdir().unwrap();
        let log = RunLog::open(&dir.path().join("deep/metrics"), DEFAULT_MAX_BYTES).unwrap();
        let batch: Vec<RunRecord> = (1..=5).map(|t| record("a", t * 1000)).collect();
        log.append(&batch).unwrap();
        log.append(&[record("b", 6000).with_id("x")]).unwrap();

        let all = log.read_since(None).unwrap();
        assert_eq!(all.skipped_lines, 0);
        assert_eq!(all.records.len(), 6);
        assert_eq!(all.records[..5], batch[..]);
        assert_eq!(all.records[5].id.as_deref(), Some("x"));

        let since = UNIX_EPOCH + Duration::from_millis(4000);
        assert_eq!(
            times(&log.read_since(Some(since)).unwrap()),
            [4000, 5000, 6000]
        );
        let future = SystemTime::now() + Duration::from_secs(3600);
        assert!(log.read_since(Some(future)).unwrap().records.is_empty());
    }

    #[test]
    fn an_empty_log_and_an_empty_batch() {
        let dir = tempfile::tempdir().unwrap();
        let log = RunLog::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        assert_eq!(log.read_since(None).unwrap(), ReadReport::default());
        log.append(&[]).unwrap();
        assert!(!log.current_path().exists());
    }

    #[test]
    fn malformed_lines_are_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let log = RunLog::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        log.append(&[record("a", 1)]).unwrap();
        let mut junk = b"not json\n\n   \n{\"time_ms\":2}\n\xff\xfe\n".to_vec();
        junk.extend_from_slice(&serde_json::to_vec(&record("a", 3)).unwrap());
        junk.extend_from_slice(b"\n{\"time_ms\":4,\"agent\":\"cut"); // a write cut short
        OpenOptions::new()
            .append(true)
            .open(log.current_path())
            .unwrap()
            .write_all(&junk)
            .unwrap();
        let read = log.read_since(None).unwrap();
        assert_eq!(times(&read), [1, 3]);
        assert_eq!(read.skipped_lines, 4, "blank lines are not counted");
        // The next append ends the cut line first, so only the cut line is lost.
        log.append(&[record("a", 5)]).unwrap();
        let read = log.read_since(None).unwrap();
        assert_eq!((times(&read), read.skipped_lines), (vec![1, 3, 5], 4));
    }

    #[test]
    fn rotation_bounds_the_size_keeps_three_old_files_and_reads_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let line_len = serde_json::to_vec(&record("a", 1000)).unwrap().len() as u64 + 1;
        let max = line_len * 3; // three lines per file
        let log = RunLog::open(dir.path(), max).unwrap();
        for t in 1000..1020 {
            log.append(&[record("a", t)]).unwrap();
        }
        for n in 1..=3 {
            let len = fs::metadata(log.rotated_path(n)).unwrap().len();
            assert_eq!(len, max, "runs.{n}.jsonl is full and no larger");
        }
        assert!(!log.rotated_path(4).exists(), "at most three old files");
        let current = fs::metadata(log.current_path()).unwrap().len();
        assert!(current <= max);
        // 20 lines: files of 3, the current one holds 20 mod 3 = 2; 3 × 3 + 2 kept.
        let read = log.read_since(None).unwrap();
        assert_eq!(times(&read), (1009..1020).collect::<Vec<_>>());
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "runs.1.jsonl",
                "runs.2.jsonl",
                "runs.3.jsonl",
                "runs.jsonl",
                "runs.lock"
            ]
        );
    }

    #[test]
    fn a_batch_larger_than_the_limit_gets_a_file_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let log = RunLog::open(dir.path(), 10).unwrap();
        log.append(&[record("a", 1)]).unwrap();
        log.append(&[record("a", 2), record("a", 3)]).unwrap();
        assert_eq!(times(&log.read_since(None).unwrap()), [1, 2, 3]);
        let rotated = fs::read_to_string(log.rotated_path(1)).unwrap();
        assert_eq!(rotated.lines().count(), 1);
        let current = fs::read_to_string(log.current_path()).unwrap();
        assert_eq!(current.lines().count(), 2, "a batch is never split");
    }

    #[test]
    fn concurrent_appends_lose_no_line() {
        let dir = tempfile::tempdir().unwrap();
        // Two logs on one directory stand for two processes; two threads share each.
        let logs = [
            Arc::new(RunLog::open(dir.path(), DEFAULT_MAX_BYTES).unwrap()),
            Arc::new(RunLog::open(dir.path(), DEFAULT_MAX_BYTES).unwrap()),
        ];
        let threads: Vec<_> = (0..4u64)
            .map(|thread| {
                let log = Arc::clone(&logs[(thread % 2) as usize]);
                std::thread::spawn(move || {
                    for i in 0..100u64 {
                        let t = thread * 1000 + i * 2;
                        log.append(&[record("a", t), record("a", t + 1)]).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let read = logs[0].read_since(None).unwrap();
        assert_eq!(read.skipped_lines, 0, "no line was torn");
        let mut got = times(&read);
        got.sort_unstable();
        let expected: Vec<u64> = (0..4)
            .flat_map(|th| (0..200).map(move |i| th * 1000 + i))
            .collect();
        assert_eq!(got, expected);
    }
}
