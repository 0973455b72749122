//! Crash safety of the response cache: `cf-host run --tasks … --data-dir DIR`, batches
//! of cached model calls against the loopback server, killed with SIGKILL at random
//! moments, 20 times. After each kill, `cf-host cache verify` finds no entry that fails
//! its MAC (never a torn entry) and no orphan (entries are recorded in the journal
//! before their files are renamed into place, so a crash may leave records whose file is
//! missing, and young temp files, but never a file the journal does not know), and a
//! batch restarted over the same tasks finishes with every cached answer equal to the
//! server's answer for its task.
//!
//! The kill delays come from a seeded generator; the seed is printed and
//! `CF_CRASH_SEED` replays it.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KILLS: usize = 20;
/// Each batch takes a window of the pool's tasks: the first `WINDOW - STEP` were in
/// the previous window (cached, if it got that far), the last `STEP` are new.
const WINDOW: usize = 60;
const STEP: usize = 40;
const POOL: usize = WINDOW + KILLS * STEP;

fn seed() -> u64 {
    std::env::var("CF_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

fn task(i: usize) -> (&'static str, String) {
    if i.is_multiple_of(2) {
        (
            "python-expert",
            format!("crash-task-{i}: how do I sort a list?"),
        )
    } else {
        (
            "code-reviewer",
            format!("// crash-task-{i}\nfn f{i}() {{}}"),
        )
    }
}

fn write_tasks(path: &Path, range: impl Iterator<Item = usize>) {
    let mut file = std::fs::File::create(path).expect("tasks file");
    for i in range {
        let (agent, text) = task(i);
        let line = serde_json::json!({"agent": agent, "task": text, "id": i.to_string()});
        writeln!(file, "{line}").expect("write a task");
    }
}

fn cf_host(home: &Path, base_url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cf-host"));
    cmd.args(args)
        .args(["--data-dir"])
        .arg(home.join("cache"))
        .env("XDG_CONFIG_HOME", home.join("config-home"))
        .env("XDG_DATA_HOME", home.join("data-home"))
        .env("ANTHROPIC_API_KEY", "sk-crash-test")
        .env("ANTHROPIC_BASE_URL", base_url)
        .env_remove("CF_CACHE_SECRET")
        .env_remove("CF_DATA_DIR")
        .env_remove("CF_CACHE")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// A batch to the end: `(id, cached, output)` per task.
fn run_batch(
    home: &Path,
    base_url: &str,
    tasks: &Path,
    extra: &[&str],
) -> Vec<(usize, bool, String)> {
    let mut args = vec!["run", "--json", "--max-concurrent", "4", "--tasks"];
    let tasks = tasks.to_str().expect("utf-8 path");
    args.push(tasks);
    args.extend_from_slice(extra);
    let out = cf_host(home, base_url, &args)
        .output()
        .expect("cf-host runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "cf-host run: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON result");
            assert_eq!(v["ok"], true, "{v}");
            let id = v["id"].as_str().and_then(|s| s.parse().ok()).expect("id");
            let cached = v["cached"].as_bool().expect("cached");
            (id, cached, v["output"].as_str().expect("output").to_owned())
        })
        .collect()
}

/// `cf-host cache verify --json` (with `--fix` if asked): the report and exit code.
fn verify(home: &Path, base_url: &str, fix: bool) -> (serde_json::Value, Option<i32>) {
    let mut args = vec!["cache", "verify", "--json"];
    if fix {
        args.push("--fix");
    }
    let out = cf_host(home, base_url, &args)
        .output()
        .expect("cf-host runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON ({e}): {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (report, out.status.code())
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_killed_at_random_moments_never_leave_a_corrupt_cache_entry() {
    let server =
        cf_mock_llm::MockServer::start(cf_mock_llm::MockConfig::for_load(Duration::from_millis(5)))
            .await
            .expect("mock server binds 127.0.0.1");
    let base_url = server.base_url();
    let seed = seed();
    eprintln!("crash: seed {seed} (CF_CRASH_SEED={seed} replays these kill delays)");
    let result = tokio::task::spawn_blocking(move || kill_and_check(&base_url, seed)).await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

fn kill_and_check(base_url: &str, seed: u64) {
    let dirs = (tempfile::tempdir(), tempfile::tempdir());
    let (Ok(home), Ok(reference_home)) = &dirs else {
        panic!("temp dirs")
    };
    let (home, reference_home) = (home.path(), reference_home.path());
    let tasks_file = home.join("tasks.jsonl");

    // A first batch in a directory of its own, compiling the agents on the way: the
    // first kills below land in a fresh directory too, compiler included.
    write_tasks(&tasks_file, 0..WINDOW);
    let started = Instant::now();
    run_batch(reference_home, base_url, &tasks_file, &["--no-cache"]);
    let first_batch = started.elapsed();
    // The server's answer for every task, with the cache off.
    write_tasks(&tasks_file, 0..POOL);
    let reference: HashMap<usize, String> =
        run_batch(reference_home, base_url, &tasks_file, &["--no-cache"])
            .into_iter()
            .map(|(id, cached, output)| {
                assert!(!cached);
                (id, output)
            })
            .collect();
    assert_eq!(reference.len(), POOL);
    // A batch of a window of new tasks, agents compiled, takes about this long.
    write_tasks(&tasks_file, 0..WINDOW);
    let started = Instant::now();
    run_batch(reference_home, base_url, &tasks_file, &["--no-cache"]);
    let batch = started.elapsed();
    // Kills land anywhere in a batch, the first two in one that may still compile. A
    // batch below has a third of its tasks cached, so it is shorter than a batch of
    // new tasks: most kills land before it ends.
    let span_ms = |k: usize| {
        let span = if k < 2 {
            first_batch
        } else {
            batch.mul_f64(0.8)
        };
        (span.as_millis() as u64).max(100)
    };
    eprintln!("crash: a batch takes about {batch:?}, {first_batch:?} when it compiles the agents");

    let mut rng = fastrand::Rng::with_seed(seed);
    let responses = home.join("cache").join("responses");
    let (mut stale, mut hits, mut killed) = (0, 0, 0);
    for k in 0..KILLS {
        let first = k * STEP;
        write_tasks(&tasks_file, first..first + WINDOW);
        let delay = Duration::from_millis(rng.u64(0..span_ms(k)));
        let context = format!("seed {seed}, kill {k} after {delay:?}");
        let mut child = cf_host(
            home,
            base_url,
            &[
                "run",
                "--json",
                "--max-concurrent",
                "4",
                "--tasks",
                tasks_file.to_str().expect("utf-8 path"),
            ],
        )
        .spawn()
        .expect("cf-host starts");
        std::thread::sleep(delay);
        // `Child::kill` is SIGKILL on Unix: no handler runs, nothing is flushed.
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("reaped");
        killed += usize::from(std::os::unix::process::ExitStatusExt::signal(&status) == Some(9));
        let printed = child
            .stdout
            .take()
            .map(|mut s| {
                let mut text = String::new();
                let _ = std::io::Read::read_to_string(&mut s, &mut text);
                text.lines().count()
            })
            .unwrap_or(0);
        eprintln!(
            "crash: {context}: {status}, {printed} results printed, {} files in responses/",
            files_in(&responses).len()
        );

        // No entry that fails its MAC, length or key check.
        let (report, code) = verify(home, base_url, false);
        assert_eq!(report["bad"], serde_json::json!([]), "{context}: {report}");
        assert_eq!(code, Some(0), "{context}: {report}");
        assert_eq!(
            report["orphans"],
            serde_json::json!(0),
            "{context}: a file the journal does not know: {report}"
        );
        stale += report["stale_index"].as_u64().unwrap_or(0);
        if k % 4 == 3 {
            // Repairing leaves an index that matches the files exactly.
            let (fixed, code) = verify(home, base_url, true);
            assert_eq!(code, Some(0), "{context}: {fixed}");
            let (after, _) = verify(home, base_url, false);
            assert_eq!(
                (&after["bad"], &after["orphans"], &after["stale_index"]),
                (
                    &serde_json::json!([]),
                    &serde_json::json!(0),
                    &serde_json::json!(0)
                ),
                "{context}: after --fix: {after}"
            );
        }

        // The batch again, to the end: every answer, cached or not, is the server's.
        let results = run_batch(home, base_url, &tasks_file, &[]);
        let mut ids: Vec<usize> = results.iter().map(|(id, _, _)| *id).collect();
        ids.sort_unstable();
        assert_eq!(
            ids,
            (first..first + WINDOW).collect::<Vec<_>>(),
            "{context}"
        );
        for (id, cached, output) in &results {
            hits += usize::from(*cached);
            assert_eq!(
                Some(output),
                reference.get(id),
                "{context}: task {id} (cached: {cached}) got another answer than the server's"
            );
        }
        let (report, code) = verify(home, base_url, false);
        assert_eq!(
            (report["bad"].clone(), code),
            (serde_json::json!([]), Some(0)),
            "{context}: after the restarted batch: {report}"
        );
    }
    eprintln!(
        "crash: {killed} of {KILLS} batches killed before they finished; {stale} records without their file reported by verify; {hits} cached answers checked"
    );
    assert!(hits > 0, "the restarted batches were served from the cache");
    assert!(
        killed >= KILLS / 4,
        "only {killed} of {KILLS} kills landed before the batch finished: the delays are too long"
    );
}
