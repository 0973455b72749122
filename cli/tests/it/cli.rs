//! The `cf-host` binary as a user runs it: exit codes, messages, JSON.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn cf_host(args: &[&str], stdin: Option<&str>) -> (Run, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = cf_host_in(dir.path(), args, stdin);
    (run, dir)
}

fn cf_host_in(cache: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Run {
    cf_host_env(cache, args, stdin, &[])
}

fn cf_host_env(
    cache: &std::path::Path,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cf-host"));
    cmd.args(args)
        .env("CF_DATA_DIR", cache)
        // No config file of the machine's user: the default path is under the temp dir.
        .env("XDG_CONFIG_HOME", cache.join("config-home"))
        .env("XDG_DATA_HOME", cache.join("data-home"))
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("ANTHROPIC_BASE_URL")
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("cf-host starts");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("cf-host exits");
    Run {
        code: status.code().expect("exited normally"),
        stdout: String::from_utf8_lossy(&stdout).into(),
        stderr: String::from_utf8_lossy(&stderr).into(),
    }
}

#[test]
fn run_prints_the_answer_and_notes_the_offline_provider() {
    let (r, _d) = cf_host(&["run", "python-expert", "How do I read a CSV file?"], None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.starts_with("[offline] model=claude-sonnet-4-5"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("How do I read a CSV file?"));
    let notices = r
        .stderr
        .lines()
        .filter(|l| l.contains("ANTHROPIC_API_KEY is not set"))
        .count();
    assert_eq!(notices, 1, "one notice line: {}", r.stderr);
    assert!(
        r.stderr
            .contains("python-expert · claude-sonnet-4-5 · 1 call(s)"),
        "{}",
        r.stderr
    );
}

#[test]
fn explicit_offline_provider_has_no_notice_and_reads_stdin() {
    let (r, _d) = cf_host(
        &["run", "--provider", "offline", "python-expert", "-"],
        Some("fn main() {}"),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stderr.contains("ANTHROPIC_API_KEY"), "{}", r.stderr);
    assert!(r.stdout.contains("fn main() {}"), "{}", r.stdout);
}

#[test]
fn json_output_has_one_object_with_the_documented_fields() {
    let (r, _d) = cf_host(
        &[
            "run",
            "--json",
            "bug-investigator",
            "Login fails",
            "--max-tokens",
            "300",
            "--temperature",
            "0",
        ],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", r.stdout);
    let v: serde_json::Value = serde_json::from_str(lines[0]).expect("JSON");
    assert_eq!(v["agent"], "bug-investigator");
    assert_eq!(v["ok"], true);
    assert!(v["output"].as_str().expect("output").contains("## Plan"));
    assert!(v["error"].is_null());
    assert_eq!(v["cached"], false);
    assert_eq!(v["attempts"], 2);
    assert_eq!(v["llm_calls"], 2);
    assert!(v["latency_ms"].as_f64().expect("latency") > 0.0);
    assert!(v["usage"]["input_tokens"].as_u64().expect("usage") > 0);
    assert_eq!(v["cost_usd"], 0.0);
    assert!(
        v["output"].as_str().unwrap().contains("max_tokens=300"),
        "the flag reached the request"
    );
}

#[test]
fn a_failed_task_exits_1_with_a_typed_error() {
    let (r, _d) = cf_host(&["run", "--json", "code-reviewer", "   "], None);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("JSON");
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["kind"], "invalid_task");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nothing to review")
    );
    let (r, _d) = cf_host(&["run", "code-reviewer", "   "], None);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("code-reviewer failed: the agent refused the task"),
        "{}",
        r.stderr
    );
}

#[test]
fn usage_errors_exit_2_before_any_work() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["run", "bad name!", "x"],
            "invalid agent name \"bad name!\"",
        ),
        (
            &["run", "no_such_agent", "x"],
            "no built-in agent is called \"no_such_agent\"",
        ),
        (
            &[
                "run",
                "--max-task-chars",
                "10",
                "python-expert",
                "12345678901",
            ],
            "the task has 11 characters; the limit is 10",
        ),
        (
            &["run", "/nonexistent/agent.wasm", "x"],
            "/nonexistent/agent.wasm",
        ),
        (
            &["run", "--temperature", "2", "python-expert", "x"],
            "not in [0, 1]",
        ),
        (
            &["run", "--deadline", "0", "python-expert", "x"],
            "not in (0, 86400]",
        ),
        (
            &["run", "--bogus", "python-expert", "x"],
            "unexpected argument '--bogus'",
        ),
        (&["frobnicate"], "unrecognized subcommand"),
    ];
    for (args, message) in cases {
        let (r, _d) = cf_host(args, None);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains(message),
            "{args:?}: expected {message:?} in {}",
            r.stderr
        );
        assert!(r.stdout.is_empty(), "{args:?} printed {}", r.stdout);
    }
}

#[test]
fn a_file_that_is_not_a_component_is_a_clear_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.wasm");
    std::fs::write(&bogus, b"not wasm at all").unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    for path in [&bogus, &core] {
        let r = cf_host_in(dir.path(), &["run", path.to_str().unwrap(), "x"], None);
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(
            r.stderr.contains("not a valid WebAssembly component"),
            "{}",
            r.stderr
        );
    }
}

#[test]
fn agents_lists_the_built_ins_and_inspect_describes_a_component() {
    let (r, dir) = cf_host(&["agents", "--json"], None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("JSON");
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["python-expert", "code-reviewer", "bug-investigator"]
    );

    let path = dir.path().join("code-reviewer.wasm");
    std::fs::write(&path, cf_builtin::find("code-reviewer").unwrap().wasm).unwrap();
    let r = cf_host_in(dir.path(), &["inspect", path.to_str().unwrap()], None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // code-reviewer is on contract 0.2.0.
    assert!(
        r.stdout.contains("contract:  claude-force:agent@0.2.0"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("host:      supported"), "{}", r.stdout);
    assert!(
        r.stdout.contains("claude-force:agent/llm@0.2.0"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("agent:     code-reviewer 0.1.0"),
        "{}",
        r.stdout
    );
}

#[test]
fn help_documents_the_exit_codes() {
    let (r, _d) = cf_host(&["run", "--help"], None);
    assert_eq!(r.code, 0);
    for line in [
        "0  success",
        "1  a task failed",
        "2  usage or configuration error",
    ] {
        assert!(r.stdout.contains(line), "{line:?} missing from --help");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn record_against_the_api_then_replay_without_network() {
    const KEY: &str = "sk-ant-cli-test-key-7f3a";
    let server = cf_mock_llm::MockServer::start(cf_mock_llm::MockConfig::default())
        .await
        .expect("mock server");
    let base = server.base_url();
    let dir = tempfile::tempdir().expect("temp dir");
    let cassette = dir.path().join("agent.cassette.jsonl");
    let cassette_arg = cassette.to_str().expect("utf-8 path").to_owned();
    let cache = dir.path().to_path_buf();
    let recorded = {
        let (cache, cassette_arg) = (cache.clone(), cassette_arg.clone());
        tokio::task::spawn_blocking(move || {
            cf_host_env(
                &cache,
                &[
                    "run",
                    "--base-url",
                    &base,
                    "--record",
                    &cassette_arg,
                    "python-expert",
                    "What is a set?",
                ],
                None,
                &[("ANTHROPIC_API_KEY", KEY)],
            )
        })
        .await
        .expect("cf-host ran")
    };
    assert_eq!(recorded.code, 0, "{}", recorded.stderr);
    assert!(
        !recorded.stderr.contains("offline"),
        "a key selects the anthropic provider: {}",
        recorded.stderr
    );
    assert_eq!(server.received().len(), 1);
    server.stop().await;
    let tape = std::fs::read_to_string(&cassette).expect("cassette written");
    assert_eq!(tape.lines().count(), 1);
    assert!(!tape.contains(KEY), "the key never reaches a cassette");

    let replayed = tokio::task::spawn_blocking({
        let (cache, cassette_arg) = (cache.clone(), cassette_arg.clone());
        move || {
            cf_host_in(
                &cache,
                &[
                    "run",
                    "--provider",
                    "replay",
                    "--cassette",
                    &cassette_arg,
                    "python-expert",
                    "What is a set?",
                ],
                None,
            )
        }
    })
    .await
    .expect("cf-host ran");
    assert_eq!(replayed.code, 0, "{}", replayed.stderr);
    assert_eq!(
        replayed.stdout, recorded.stdout,
        "the same answer, with the server gone"
    );

    let unseen = tokio::task::spawn_blocking(move || {
        cf_host_in(
            &cache,
            &[
                "run",
                "--json",
                "--provider",
                "replay",
                "--cassette",
                &cassette_arg,
                "python-expert",
                "Something else",
            ],
            None,
        )
    })
    .await
    .expect("cf-host ran");
    assert_eq!(unseen.code, 1, "{}", unseen.stderr);
    let v: serde_json::Value = serde_json::from_str(unseen.stdout.trim()).expect("JSON");
    assert_eq!(v["error"]["kind"], "not_found");
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("message")
            .contains("no recorded answer"),
        "{v}"
    );
}

#[test]
fn replay_needs_a_cassette_and_anthropic_needs_a_key() {
    let (r, _d) = cf_host(&["run", "--provider", "replay", "python-expert", "x"], None);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--cassette"), "{}", r.stderr);
    let (r, _d) = cf_host(
        &["run", "--provider", "anthropic", "python-expert", "x"],
        None,
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("ANTHROPIC_API_KEY"), "{}", r.stderr);
}

#[test]
fn the_response_cache_serves_repeats_and_is_looked_after_by_the_cache_command() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--json", "python-expert", "What is a frozenset?"];
        args.extend_from_slice(extra);
        let r = cf_host_in(dir.path(), &args, None);
        assert_eq!(r.code, 0, "{}", r.stderr);
        serde_json::from_str::<serde_json::Value>(r.stdout.trim()).expect("JSON")
    };
    assert_eq!(run(&[])["cached"], false);
    assert_eq!(run(&[])["cached"], true, "the second run is a hit");
    assert_eq!(
        run(&["--no-cache"])["cached"],
        false,
        "--no-cache goes to the provider"
    );
    let stats = cf_host_in(dir.path(), &["cache", "stats", "--json"], None);
    assert_eq!(stats.code, 0, "{}", stats.stderr);
    let v: serde_json::Value = serde_json::from_str(stats.stdout.trim()).expect("JSON");
    assert_eq!(v["entries"], 1);
    let clean = cf_host_in(dir.path(), &["cache", "verify"], None);
    assert_eq!(clean.code, 0, "{}{}", clean.stdout, clean.stderr);
    // Tamper with the entry: verify reports it (exit 1), --fix removes it.
    let db = rusqlite::Connection::open(dir.path().join("responses/responses.sqlite"))
        .expect("the cache's database");
    let changed = db
        .execute("UPDATE bodies SET payload = payload || x'20'", [])
        .expect("tamper");
    assert_eq!(changed, 1);
    drop(db);
    let bad = cf_host_in(dir.path(), &["cache", "verify", "--json"], None);
    assert_eq!(bad.code, 1, "{}", bad.stdout);
    let v: serde_json::Value = serde_json::from_str(bad.stdout.trim()).expect("JSON");
    assert_eq!(v["bad"].as_array().expect("bad list").len(), 1);
    let fixed = cf_host_in(dir.path(), &["cache", "verify", "--fix"], None);
    assert_eq!(fixed.code, 0, "{}", fixed.stdout);
    assert_eq!(cf_host_in(dir.path(), &["cache", "verify"], None).code, 0);
    // clear removes cache files only.
    let foreign = dir.path().join("responses").join("notes.txt");
    std::fs::write(&foreign, "mine").expect("write");
    run(&[]);
    let cleared = cf_host_in(dir.path(), &["cache", "clear", "--json"], None);
    assert_eq!(cleared.code, 0);
    let v: serde_json::Value = serde_json::from_str(cleared.stdout.trim()).expect("JSON");
    assert_eq!(v["removed"], 1);
    assert!(foreign.exists(), "a foreign file survives clear");
}

#[test]
fn a_batch_reports_malformed_lines_and_keeps_the_rest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tasks = "{\"agent\":\"python-expert\",\"task\":\"What is a list?\",\"id\":\"first\"}\nnot json at all\n\n{\"agent\":\"nosuch\",\"task\":\"x\"}\n{\"task\":\"def f(): pass\",\"max_tokens\":50}\n";
    let r = cf_host_in(
        dir.path(),
        &["run", "--json", "--tasks", "-", "bug-investigator"],
        Some(tasks),
    );
    assert_eq!(
        r.code, 1,
        "a failed item and a bad line: exit 1\n{}",
        r.stderr
    );
    assert!(r.stderr.contains("cf-host: -:2: skipped: "), "{}", r.stderr);
    let lines: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 3, "{}", r.stdout);
    let by_id = |id: &str| {
        lines
            .iter()
            .find(|v| v["id"] == id)
            .unwrap_or_else(|| panic!("no result for {id}"))
    };
    assert_eq!(by_id("first")["ok"], true);
    assert_eq!(
        by_id("4")["error"]["kind"],
        "unknown_agent",
        "ids default to line numbers"
    );
    let fifth = by_id("5");
    assert_eq!(
        fifth["agent"], "bug-investigator",
        "the command line's AGENT fills in"
    );
    assert!(
        fifth["output"]
            .as_str()
            .expect("output")
            .contains("max_tokens=50")
    );
    assert!(
        r.stderr
            .contains("3 item(s): 2 ok, 1 failed, 1 malformed line(s) skipped"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_batch_leaves_its_answers_and_its_hits_in_the_data_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut args = vec!["run", "--json", "python-expert"];
    let tasks: Vec<String> = (0..30).map(|i| format!("Question {i}?")).collect();
    for t in &tasks {
        args.extend(["--task", t]);
    }
    let stats = || {
        let s = cf_host_in(dir.path(), &["cache", "stats", "--json"], None);
        assert_eq!(s.code, 0, "{}", s.stderr);
        serde_json::from_str::<serde_json::Value>(s.stdout.trim()).expect("JSON")
    };
    let first = cf_host_in(dir.path(), &args, None);
    assert_eq!(first.code, 0, "{}", first.stderr);
    // Answers are written behind the runs: the process still wrote all before exiting.
    let v = stats();
    assert_eq!(
        (v["entries"].as_u64(), v["hits"].as_u64()),
        (Some(30), Some(0))
    );
    let again = cf_host_in(dir.path(), &args, None);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.stdout.matches("\"cached\":true").count(), 30);
    // The hits are recorded too, though the process exits without running destructors.
    let v = stats();
    assert_eq!(
        (v["entries"].as_u64(), v["hits"].as_u64()),
        (Some(30), Some(30))
    );
    assert_eq!(cf_host_in(dir.path(), &["cache", "verify"], None).code, 0);
}

#[test]
fn repeated_task_flags_make_a_batch() {
    let (r, _d) = cf_host(
        &[
            "run",
            "--json",
            "python-expert",
            "--task",
            "one",
            "--task",
            "two",
        ],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut ids: Vec<String> = r
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("JSON")["id"]
                .as_str()
                .expect("id")
                .to_owned()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["1", "2"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_a_batch_prints_what_finished_and_exits_130() {
    // A slow API (300 ms per call) and one call at a time: 200 items would take a minute.
    let config = cf_mock_llm::MockConfig {
        latency: std::time::Duration::from_millis(300),
        ..cf_mock_llm::MockConfig::default()
    };
    let server = cf_mock_llm::MockServer::start(config)
        .await
        .expect("mock server");
    let dir = tempfile::tempdir().expect("temp dir");
    let tasks: String = (0..200)
        .map(|i| format!("{{\"agent\":\"python-expert\",\"task\":\"q{i}\"}}\n"))
        .collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cf-host"))
        .args([
            "run",
            "--json",
            "--tasks",
            "-",
            "--grace",
            "5",
            "--max-concurrent",
            "1",
            "--base-url",
            &server.base_url(),
        ])
        .env("CF_DATA_DIR", dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join("config-home"))
        .env("XDG_DATA_HOME", dir.path().join("data-home"))
        .env("ANTHROPIC_API_KEY", "test-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cf-host starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(tasks.as_bytes())
        .expect("write tasks");
    let pid = child.id().to_string();
    let (code, lines, stderr) = tokio::task::spawn_blocking(move || {
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut first).expect("a first result");
        let status = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).expect("the rest of stdout");
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
            .expect("stderr");
        let code = child.wait().expect("exits").code();
        let lines: Vec<serde_json::Value> = std::iter::once(first.as_str())
            .chain(rest.lines())
            .map(|l| serde_json::from_str(l).expect("a JSON result"))
            .collect();
        (code, lines, stderr)
    })
    .await
    .expect("joined");
    assert_eq!(code, Some(130), "{stderr}");
    assert_eq!(lines.len(), 200, "every item is reported, finished or not");
    let finished = lines.iter().filter(|v| v["ok"] == true).count();
    let cancelled = lines
        .iter()
        .filter(|v| v["error"]["kind"] == "cancelled")
        .count();
    assert!(finished >= 1, "what finished is printed");
    assert_eq!(finished + cancelled, 200);
    assert!(
        cancelled > 150,
        "the batch stopped early: {cancelled} cancelled"
    );
    assert!(stderr.contains("interrupted"), "{stderr}");
    // Items in flight got the grace period; at most the one call in flight at its end
    // (the limit is 1) was cut off, and reported as cancelled.
    let sent = server.received().len();
    assert!(
        sent == finished || sent == finished + 1,
        "{sent} calls sent, {finished} finished"
    );
}

#[test]
fn config_show_resolves_flags_over_env_over_file_and_redacts_secrets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config_home = dir.path().join("config-home").join("cf-host");
    std::fs::create_dir_all(&config_home).expect("mkdir");
    std::fs::write(
        config_home.join("config.toml"),
        "max_concurrent = 3\ntimeout_secs = 7\nmax_retries = 4\napi_key = \"sk-file-secret\"\n[cache]\nsecret = \"cache-secret-0123456789\"\n",
    )
    .expect("write config");
    let r = cf_host_env(
        dir.path(),
        &["config", "show", "--json", "--max-retries", "1"],
        None,
        &[("CF_TIMEOUT", "9")],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("JSON");
    assert_eq!(v["max_concurrent"], 3, "from the file");
    assert_eq!(v["timeout_secs"], 9.0, "the environment over the file");
    assert_eq!(v["max_retries"], 1, "the flag over both");
    assert_eq!(v["deadline_secs"], 120.0, "the default");
    assert_eq!(v["api_key"], "<redacted>");
    assert_eq!(v["cache_secret"], "<redacted>");
    assert!(!r.stdout.contains("sk-file-secret") && !r.stdout.contains("cache-secret-0123456789"));
    let human = cf_host_in(dir.path(), &["config", "show"], None);
    assert!(
        human.stdout.contains("max_concurrent = 3") && !human.stdout.contains("sk-file-secret"),
        "{}",
        human.stdout
    );

    std::fs::write(config_home.join("config.toml"), "max_concurency = 3\n").expect("write config");
    let r = cf_host_in(dir.path(), &["run", "python-expert", "x"], None);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("max_concurency"),
        "the unknown key is named: {}",
        r.stderr
    );
    let missing = cf_host_in(
        dir.path(),
        &[
            "run",
            "--config",
            "/nonexistent/cf.toml",
            "python-expert",
            "x",
        ],
        None,
    );
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("/nonexistent/cf.toml"),
        "{}",
        missing.stderr
    );
}

#[test]
fn every_run_is_logged_and_stats_summarises_the_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    for task in ["What is a list?", "What is a dict?"] {
        assert_eq!(
            cf_host_in(dir.path(), &["run", "python-expert", task], None).code,
            0
        );
    }
    let batch = cf_host_in(
        dir.path(),
        &[
            "run",
            "code-reviewer",
            "--task",
            "fn a() {}",
            "--task",
            "   ",
        ],
        None,
    );
    assert_eq!(batch.code, 1, "one item fails");
    assert!(
        batch.stderr.contains("p50"),
        "the batch summary has percentiles: {}",
        batch.stderr
    );
    let log = std::fs::read_to_string(dir.path().join("data-home/cf-host/metrics/runs.jsonl"))
        .expect("the run log");
    assert_eq!(log.lines().count(), 4);
    assert!(
        !log.contains("What is a list?"),
        "task text is never logged, only its hash"
    );
    let r = cf_host_in(dir.path(), &["stats", "--json"], None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("JSON");
    assert_eq!(v["runs"], 4);
    assert_eq!(v["failed"], 1);
    assert_eq!(v["by_agent"]["python-expert"]["runs"], 2);
    assert_eq!(v["by_agent"]["code-reviewer"]["failed"], 1);
    assert_eq!(v["error_kinds"]["invalid_task"], 1);
    let csv = cf_host_in(dir.path(), &["stats", "--csv", "--since", "1h"], None);
    assert!(
        csv.stdout.starts_with("scope,name,runs,ok,failed,p50_ms"),
        "{}",
        csv.stdout
    );
    let none = cf_host_in(dir.path(), &["stats", "--json", "--since", "0s"], None);
    let v: serde_json::Value = serde_json::from_str(none.stdout.trim()).expect("JSON");
    assert!(v["runs"].as_u64().expect("runs") <= 4);
    assert_eq!(
        cf_host_in(dir.path(), &["stats", "--since", "soon"], None).code,
        2
    );
}

#[test]
fn check_tells_whether_a_component_fits_this_host() {
    let dir = tempfile::tempdir().expect("temp dir");
    let builtin = dir.path().join("python-expert.wasm");
    std::fs::write(
        &builtin,
        cf_builtin::find("python-expert").expect("shipped").wasm,
    )
    .expect("write");
    let r = cf_host_in(
        dir.path(),
        &["check", builtin.to_str().expect("utf-8")],
        None,
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("targets:       claude-force:agent@0.2.0"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("verdict:       compatible — python-expert"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("declares:      nothing"), "{}", r.stdout);
    std::fs::write(
        builtin.with_extension("toml"),
        "models = [\"claude-*\"]\nmax_tokens = 300\n",
    )
    .expect("manifest");
    let r = cf_host_in(
        dir.path(),
        &["check", "--json", builtin.to_str().expect("utf-8")],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("JSON");
    assert_eq!(v["declares"]["models"][0], "claude-*");
    assert_eq!(v["declares"]["max_tokens"], 300);
    std::fs::write(builtin.with_extension("toml"), "modles = []\n").expect("manifest");
    let r = cf_host_in(
        dir.path(),
        &["check", builtin.to_str().expect("utf-8")],
        None,
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stdout.contains("modles"),
        "a broken manifest is named: {}",
        r.stdout
    );
    std::fs::remove_file(builtin.with_extension("toml")).expect("remove");

    let future = cf_tests::future_wasm().to_str().expect("utf-8");
    let r = cf_host_in(dir.path(), &["check", "--json", future], None);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).expect("JSON");
    assert_eq!(v["compatible"], false);
    assert_eq!(v["targets"][0], "claude-force:agent@0.9.0");
    assert_eq!(
        v["host_supports"],
        serde_json::json!(["claude-force:agent@0.2.0", "claude-force:agent@0.1.0"])
    );
    let problem = v["problem"].as_str().expect("a problem");
    assert!(
        problem.contains("0.9.0") && problem.contains("0.2.0") && problem.contains("0.1.0"),
        "names what it found and what is expected: {problem}"
    );
    // Loading it fails with the same explanation.
    let r = cf_host_in(dir.path(), &["run", future, "x"], None);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains(problem), "{}", r.stderr);

    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").expect("write");
    let r = cf_host_in(dir.path(), &["check", core.to_str().expect("utf-8")], None);
    assert_eq!(r.code, 1);
    assert!(
        r.stdout
            .contains("NOT compatible: not a valid WebAssembly component"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_pinned_digest_is_checked_before_anything_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("code-reviewer.wasm");
    let agent = cf_builtin::find("code-reviewer").expect("shipped");
    std::fs::write(&path, agent.wasm).expect("write");
    let p = path.to_str().expect("utf-8");
    // Loaded from a path it is a third-party plugin: it declares, the operator grants.
    std::fs::write(
        dir.path().join("code-reviewer.toml"),
        "models = [\"claude-*\"]\n",
    )
    .expect("manifest");
    let denied = cf_host_in(dir.path(), &["run", "--json", p, "fn f() {}"], None);
    assert_eq!(denied.code, 1, "no grant: {}", denied.stdout);
    assert!(
        denied.stdout.contains("capability llm.model") && denied.stdout.contains("not granted"),
        "{}",
        denied.stdout
    );
    let config = dir.path().join("cf.toml");
    std::fs::write(
        &config,
        format!(
            "[plugins.code-reviewer]\nmodels = [\"claude-sonnet-*\"]\nsha256 = \"{}\"\n",
            agent.sha256
        ),
    )
    .expect("config");
    let c = config.to_str().expect("utf-8");
    let right = cf_host_in(
        dir.path(),
        &[
            "run",
            "--config",
            c,
            "--sha256",
            &agent.sha256.to_uppercase(),
            p,
            "fn f() {}",
        ],
        None,
    );
    assert_eq!(right.code, 0, "{}", right.stderr);
    // A fresh data directory: the refused component must not even be compiled.
    let fresh = tempfile::tempdir().expect("temp dir");
    let wrong = cf_host_in(
        fresh.path(),
        &["run", "--json", "--sha256", &"0".repeat(64), p, "fn f() {}"],
        None,
    );
    assert_eq!(wrong.code, 2, "{}", wrong.stderr);
    assert!(
        wrong.stderr.contains("refusing to load it") && wrong.stderr.contains(agent.sha256),
        "{}",
        wrong.stderr
    );
    let compiled = std::fs::read_dir(fresh.path().join("components"))
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
            })
            .count()
        })
        .unwrap_or(0);
    assert_eq!(
        compiled, 0,
        "nothing was compiled for the refused component"
    );
}

#[test]
fn new_creates_an_agent_that_builds_and_runs_in_two_commands() {
    let dir = tempfile::tempdir().expect("temp dir");
    let made = cf_host_in(
        dir.path(),
        &[
            "new",
            "demo-agent",
            "--dir",
            dir.path().to_str().expect("utf-8"),
        ],
        None,
    );
    assert_eq!(made.code, 0, "{}", made.stderr);
    let root = dir.path().join("demo-agent");
    assert!(root.join("agent.toml").exists() && root.join("wit/0.2.0/agent.wit").exists());
    assert_eq!(
        cf_host_in(
            dir.path(),
            &[
                "new",
                "demo-agent",
                "--dir",
                dir.path().to_str().expect("utf-8")
            ],
            None
        )
        .code,
        2,
        "an existing directory is left alone"
    );
    // Command one.
    let built = Command::new("cargo")
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(&root)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("cargo runs");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let wasm = root.join("target/wasm32-wasip2/release/demo_agent.wasm");
    assert!(
        wasm.with_extension("toml").exists(),
        "the build put the manifest beside the component"
    );
    // Command two.
    let run = cf_host_in(
        dir.path(),
        &[
            "run",
            "--trust",
            wasm.to_str().expect("utf-8"),
            "What is a monad?",
        ],
        None,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("[offline]") && run.stdout.contains("What is a monad?"),
        "{}",
        run.stdout
    );
    // Without --trust or a grant it may call nothing.
    let denied = cf_host_in(
        dir.path(),
        &["run", wasm.to_str().expect("utf-8"), "What is a monad?"],
        None,
    );
    assert_eq!(denied.code, 1);
    assert!(
        denied.stderr.contains("not granted by the operator"),
        "{}",
        denied.stderr
    );
}

#[test]
fn info_logs_name_neither_the_agent_nor_the_task() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A file name that does not give the agent's name away.
    let wasm = dir.path().join("plugin.wasm");
    std::fs::copy(cf_tests::hostile_wasm(), &wasm).expect("copy the guest");
    let p = wasm.to_str().expect("utf-8 path");
    let info = cf_host_in(dir.path(), &["run", "-v", p, "log 2"], None);
    assert_eq!(info.code, 0, "{}", info.stderr);
    assert!(info.stderr.contains("record 1"), "{}", info.stderr);
    let id = cf_front::runlog::task_hash("hostile");
    assert!(
        info.stderr.contains(&id),
        "records carry the agent's id: {}",
        info.stderr
    );
    // Log records (not the result line, which is for the user) hide both.
    let records: Vec<&str> = info
        .stderr
        .lines()
        .filter(|l| l.contains(" INFO ") || l.contains(" WARN "))
        .collect();
    assert_eq!(records.len(), 2, "{}", info.stderr);
    assert!(
        records
            .iter()
            .all(|l| !l.contains("hostile") && !l.contains("log 2") && !l.contains('\x1b')),
        "{records:?}"
    );
    // At debug level the agent is named.
    let debug = cf_host_in(dir.path(), &["run", "-vv", p, "log 2"], None);
    assert_eq!(debug.code, 0, "{}", debug.stderr);
    assert!(debug.stderr.contains("hostile"), "{}", debug.stderr);
}

/// Regression (low): another process holding the response cache's lock kept the CLI
/// running until it let go, however far past `--deadline`. The answer is still printed;
/// the CLI gives up writing it to the cache after one run's deadline and says so.
#[test]
fn a_held_cache_lock_does_not_keep_the_cli_past_its_deadline() {
    let cache = tempfile::tempdir().expect("temp dir");
    // A first run creates the response cache's database.
    let first = cf_host_in(cache.path(), &["run", "python-expert", "first"], None);
    assert_eq!(first.code, 0, "{}", first.stderr);
    // Another process in a write transaction holds the database's write lock.
    let lock = rusqlite::Connection::open(cache.path().join("responses/responses.sqlite"))
        .expect("the cache's database");
    lock.execute_batch("BEGIN IMMEDIATE")
        .expect("hold the write lock as another process would");
    let run = cf_host_in(
        cache.path(),
        &["run", "--deadline", "2", "python-expert", "second"],
        None,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("[offline]"), "{}", run.stdout);
    assert!(
        run.stderr.contains("gave up writing 1 answer(s)"),
        "{}",
        run.stderr
    );
    lock.execute_batch("ROLLBACK").expect("let go");
}

/// Regression (high): a data directory others may write was used as is.
#[test]
fn a_data_directory_others_may_write_is_a_usage_error_naming_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let cache = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let run = cf_host_in(cache.path(), &["run", "python-expert", "q"], None);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("refusing") && run.stderr.contains("chmod go-w"),
        "{}",
        run.stderr
    );
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let run = cf_host_in(cache.path(), &["run", "python-expert", "q"], None);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

/// A new user could not set the response cache's size from the CLI, the environment or
/// the file. Under a small limit, the least recently used answers are evicted and the
/// cache stays within it; under the default, every answer is kept.
#[test]
fn the_response_cache_size_limit_is_settable_and_evicts() {
    const ITEMS: usize = 300;
    let tasks: String = (0..ITEMS)
        .map(|i| format!("{{\"agent\":\"python-expert\",\"task\":\"Question number {i}?\"}}\n"))
        .collect();
    let stats = |dir: &std::path::Path, env: &[(&str, &str)]| {
        let s = cf_host_env(dir, &["cache", "stats", "--json"], None, env);
        assert_eq!(s.code, 0, "{}", s.stderr);
        serde_json::from_str::<serde_json::Value>(s.stdout.trim()).expect("JSON")
    };
    let small = tempfile::tempdir().expect("temp dir");
    let limit = [("CF_CACHE_MAX_BYTES", "64KiB")];
    let r = cf_host_env(
        small.path(),
        &["run", "--json", "--tasks", "-"],
        Some(&tasks),
        &limit,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = stats(small.path(), &limit);
    assert_eq!(v["max_bytes"].as_u64(), Some(64 * 1024), "{v}");
    let (entries, bytes) = (
        v["entries"].as_u64().expect("entries"),
        v["bytes"].as_u64().expect("bytes"),
    );
    assert!(
        bytes <= 64 * 1024,
        "{bytes} bytes kept under a 64 KiB limit"
    );
    assert!(
        entries > 0 && entries < ITEMS as u64,
        "{entries} of {ITEMS} answers kept under the limit"
    );
    // The flag says the same, and wins over the environment.
    let flag = cf_host_env(
        small.path(),
        &["cache", "stats", "--json"],
        None,
        &[("CF_CACHE_MAX_BYTES", "not a size")],
    );
    assert_eq!(
        flag.code, 2,
        "a bad value is a usage error: {}",
        flag.stderr
    );
    assert!(
        flag.stderr.contains("CF_CACHE_MAX_BYTES"),
        "{}",
        flag.stderr
    );

    let roomy = tempfile::tempdir().expect("temp dir");
    let r = cf_host_env(
        roomy.path(),
        &[
            "run",
            "--json",
            "--cache-max-bytes",
            "100MiB",
            "--tasks",
            "-",
        ],
        Some(&tasks),
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = stats(roomy.path(), &[]);
    assert_eq!(v["entries"].as_u64(), Some(ITEMS as u64), "{v}");
    assert!(v["bytes"].as_u64().expect("bytes") > 64 * 1024);
    // And from the config file.
    let config = roomy.path().join("cf.toml");
    std::fs::write(&config, "[cache]\nmax_bytes = 131072\n").expect("config");
    let shown = cf_host_in(
        roomy.path(),
        &[
            "config",
            "show",
            "--json",
            "--config",
            config.to_str().expect("utf-8"),
        ],
        None,
    );
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    let v: serde_json::Value = serde_json::from_str(shown.stdout.trim()).expect("JSON");
    assert_eq!(v["cache_max_bytes"].as_u64(), Some(131_072));
}

/// `echo q | cf-host run a -` kept the newline, so it missed the answer cached for
/// `cf-host run a q`.
#[test]
fn a_task_from_stdin_loses_its_trailing_newline_and_shares_the_cached_answer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let args = cf_host_in(
        dir.path(),
        &["run", "--json", "python-expert", "What is a tuple?"],
        None,
    );
    assert_eq!(args.code, 0, "{}", args.stderr);
    let piped = cf_host_in(
        dir.path(),
        &["run", "--json", "python-expert", "-"],
        Some("What is a tuple?\n"),
    );
    assert_eq!(piped.code, 0, "{}", piped.stderr);
    let v: serde_json::Value = serde_json::from_str(piped.stdout.trim()).expect("JSON");
    assert_eq!(v["cached"], true, "the same request: {v}");
    // Only one newline goes: a task that ends in a blank line keeps the rest.
    let blank = cf_host_in(
        dir.path(),
        &["run", "--json", "python-expert", "-"],
        Some("What is a tuple?\n\n"),
    );
    let v: serde_json::Value = serde_json::from_str(blank.stdout.trim()).expect("JSON");
    assert_eq!(v["cached"], false, "another request: {v}");
}

/// `--budget-usd` let the first call through whatever the budget. The worst-case rule
/// refuses a call that may not fit; the default rule keeps the original's behaviour.
/// (The offline provider bills nothing, so a token budget shows it here; dollar
/// budgets are tested in cf-llm's ledger and against the loopback API in cf-tests.)
#[test]
fn the_worst_case_budget_rule_refuses_a_call_that_may_not_fit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--json", "--no-cache"];
        args.extend_from_slice(extra);
        args.extend(["python-expert", "What is a list?"]);
        let r = cf_host_in(dir.path(), &args, None);
        let v: serde_json::Value = serde_json::from_str(r.stdout.trim())
            .unwrap_or_else(|_| panic!("JSON: {} {}", r.stdout, r.stderr));
        (r.code, v)
    };
    let (code, v) = run(&["--budget-tokens", "10", "--budget-rule", "worst-case"]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["error"]["kind"], "budget_exceeded", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("message")
            .contains("worst case"),
        "{v}"
    );
    assert_eq!(v["attempts"], 0, "nothing was sent: {v}");
    let (code, v) = run(&["--budget-tokens", "10"]);
    assert_eq!(code, 0, "the default rule lets the first call through: {v}");
    let (code, v) = run(&["--budget-tokens", "1000000", "--budget-rule", "worst-case"]);
    assert_eq!(code, 0, "a budget the worst case fits: {v}");
    let (code, v) = run(&["--budget-usd", "0.0000001", "--budget-rule", "worst-case"]);
    assert_eq!(code, 0, "the offline provider costs nothing: {v}");
    let bad = cf_host_in(
        dir.path(),
        &["run", "--budget-rule", "strictest", "python-expert", "q"],
        None,
    );
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("strictest"), "{}", bad.stderr);
}

/// The data directory was called the cache directory: the old flag still works.
#[test]
fn the_old_cache_dir_flag_names_the_data_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let other = dir.path().join("elsewhere");
    let r = cf_host_in(
        dir.path(),
        &[
            "run",
            "--cache-dir",
            other.to_str().expect("utf-8"),
            "python-expert",
            "q",
        ],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        other.join("responses").is_dir(),
        "the answer went to the named directory"
    );
}

/// `cf-host run --json --tasks - ARGS` on the offline provider in `dir`, its stdin and
/// stdout piped (a producer still writing, a consumer reading), its stderr dropped.
fn batch_on_stdin(dir: &std::path::Path, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_cf-host"))
        .args(["run", "--json", "--tasks", "-"])
        .args(args)
        .env("CF_DATA_DIR", dir)
        .env("XDG_CONFIG_HOME", dir.join("config-home"))
        .env("XDG_DATA_HOME", dir.join("data-home"))
        .env_remove("ANTHROPIC_API_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cf-host starts")
}

/// A producer that writes a task, waits for its result, then writes the next (a
/// program driving the CLI through a pipe): each task runs as soon as it is written,
/// though the reader hands tasks over in chunks, and the batch ends when stdin does.
#[test]
fn tasks_on_an_open_stdin_run_one_at_a_time_as_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = batch_on_stdin(dir.path(), &[]);
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    for n in 0..3 {
        writeln!(
            stdin,
            "{{\"agent\":\"python-expert\",\"task\":\"question {n}\"}}"
        )
        .expect("write a task");
        stdin.flush().expect("flush");
        // Bounded, so that a CLI waiting for more input fails the test, not hangs it.
        let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(60)) else {
            let _ = child.kill();
            panic!("task {n} was not run while stdin stayed open");
        };
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["index"], n, "{v}");
    }
    drop(stdin);
    assert!(child.wait().expect("exits").success());
    assert!(rx.recv().is_err(), "no result beyond the three tasks");
}

/// Regression: with the tasks on a stdin still open (a producer that has not finished),
/// Ctrl-C waited for stdin to end before the batch could stop. It stops at once now;
/// items the reader never handed over are not reported.
#[test]
fn ctrl_c_stops_a_batch_whose_stdin_is_still_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = batch_on_stdin(dir.path(), &["--grace", "5"]);
    // Kept open: the producer is still "writing".
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(b"{\"agent\":\"python-expert\",\"task\":\"first\"}\n")
        .expect("write a task");
    stdin.flush().expect("flush");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    // The task is run while stdin stays open (the reader does not wait for more input
    // to hand it over). Bounded, so that a CLI waiting for more fails the test rather
    // than hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut first = String::new();
        let _ = std::io::BufRead::read_line(&mut stdout, &mut first);
        let _ = tx.send(first);
    });
    let Ok(first) = rx.recv_timeout(std::time::Duration::from_secs(60)) else {
        let _ = child.kill();
        panic!("no result while stdin stayed open: the task was not run");
    };
    let v: serde_json::Value = serde_json::from_str(&first).expect("JSON");
    assert_eq!(v["ok"], true, "{v}");
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    // Bounded: a CLI that still waits for stdin is killed and the test fails.
    let guard = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let code = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status.code();
        }
        if std::time::Instant::now() > guard {
            let _ = child.kill();
            panic!("the batch still waited for stdin after Ctrl-C");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    drop(stdin);
    assert_eq!(code, Some(130));
}

/// A data directory of an earlier version: its response cache in the file-per-entry
/// format is not an error. Its answers are dropped with one line on stderr, once; the
/// run works and caches again; foreign files stay.
#[test]
fn an_old_format_response_cache_is_dropped_with_one_line() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let responses = dir.path().join("responses");
    std::fs::create_dir_all(&responses).expect("mkdir");
    for d in [dir.path(), responses.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    for name in [
        "cache.lock".to_owned(),
        "index.cfj".to_owned(),
        format!("{}.cfe", "ab".repeat(32)),
        format!("{}.cfe", "cd".repeat(32)),
    ] {
        std::fs::write(responses.join(name), b"old").expect("plant");
    }
    std::fs::write(responses.join("notes.txt"), b"mine").expect("foreign");
    let notice = "was in the older file format: dropped its 2 cached response(s)";
    let first = cf_host_in(dir.path(), &["run", "python-expert", "q"], None);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(
        first.stderr.matches(notice).count(),
        1,
        "one notice: {}",
        first.stderr
    );
    let left: Vec<String> = std::fs::read_dir(&responses)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cfe") || n == "index.cfj" || n == "cache.lock")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(
        std::fs::read(responses.join("notes.txt")).expect("kept"),
        b"mine"
    );
    let again = cf_host_in(dir.path(), &["run", "--json", "python-expert", "q"], None);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(!again.stderr.contains(notice), "{}", again.stderr);
    let v: serde_json::Value = serde_json::from_str(again.stdout.trim()).expect("JSON");
    assert_eq!(v["cached"], true, "the new cache works");
}
