//! A long batch runs in memory that does not grow with it: the tasks file is read as
//! the batch goes, results are written as they finish, and the summary keeps
//! aggregates. Regression: the CLI kept every result until the end (100,000 items took
//! 265 MB; a million would have needed gigabytes).

use std::process::{Command, Stdio};

/// Runs a batch of `n` items on the offline provider; its results and the peak memory
/// the CLI reports (VmHWM), in MiB.
fn batch(n: usize) -> (Vec<serde_json::Value>, f64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let tasks = dir.path().join("t.jsonl");
    let lines: String = (0..n)
        .map(|i| format!("{{\"agent\":\"python-expert\",\"task\":\"question {i}\"}}\n"))
        .collect();
    std::fs::write(&tasks, lines).expect("tasks");
    let out = Command::new(env!("CARGO_BIN_EXE_cf-host"))
        .args([
            "run",
            "--json",
            "--no-cache",
            "--max-concurrent",
            "100",
            "--tasks",
        ])
        .arg(&tasks)
        .env("CF_DATA_DIR", dir.path().join("data"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .env("XDG_DATA_HOME", dir.path().join("xdg-data"))
        .env_remove("ANTHROPIC_API_KEY")
        .stdin(Stdio::null())
        .output()
        .expect("cf-host runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let results = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let peak = stderr
        .split("peak memory ")
        .nth(1)
        .and_then(|rest| rest.split(" MiB").next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak memory in {stderr}"));
    (results, peak)
}

#[test]
fn a_batch_ten_times_longer_needs_no_more_memory() {
    let (small, small_peak) = batch(4_000);
    let (large, large_peak) = batch(40_000);
    for (results, n) in [(&small, 4_000), (&large, 40_000)] {
        assert_eq!(results.len(), n, "every item reports");
        let mut ids: Vec<&str> = results
            .iter()
            .map(|r| r["id"].as_str().expect("id"))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "each item once");
        assert!(results.iter().all(|r| r["ok"] == true));
    }
    // Kept whole, 36,000 more results (a few KiB each with their record) would add
    // over 50 MiB; streamed, the peak stays where the runtime and the pool put it.
    assert!(
        large_peak <= small_peak + 16.0,
        "peak memory grew from {small_peak} MiB to {large_peak} MiB with the batch"
    );
    assert!(large_peak <= 150.0, "{large_peak} MiB");
}
