//! The batch progress line in a real terminal: `cf-host run --tasks t.jsonl >
//! out.jsonl` inside tmux, its pane captured while the batch runs.
//!
//! Regression: the line was cleared after every result and redrawn at most every
//! 100 ms, so a terminal showed it mostly blank; and it counted every item holding an
//! instance slot as "in flight", which read as a broken limit under
//! `--max-concurrent 2`.

use crate::terminal::{Tmux, tmux_available};
use std::path::Path;
use std::time::{Duration, Instant};

const ITEMS: usize = 120;
const LIMIT: usize = 2;

/// The number before "calls in flight" on the progress line.
fn calls_in_flight(line: &str) -> Option<usize> {
    let end = line.find(" calls in flight")?;
    line[..end].rsplit(' ').next()?.parse().ok()
}

fn progress_line(pane: &str) -> Option<&str> {
    pane.lines().find(|l| l.contains(" calls in flight · "))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_progress_line_stays_on_screen_and_shows_calls_apart_from_waiting_items() {
    if !tmux_available("progress test") {
        return;
    }
    let config = cf_mock_llm::MockConfig {
        latency: Duration::from_millis(50),
        ..cf_mock_llm::MockConfig::default()
    };
    let server = cf_mock_llm::MockServer::start(config)
        .await
        .expect("mock server");
    let dir = tempfile::tempdir().expect("temp dir");
    let tasks = dir.path().join("t.jsonl");
    let lines: String = (0..ITEMS)
        .map(|i| format!("{{\"agent\":\"python-expert\",\"task\":\"question {i}\"}}\n"))
        .collect();
    std::fs::write(&tasks, lines).expect("tasks file");
    let out = dir.path().join("out.jsonl");
    let path = |p: &Path| p.to_str().expect("utf-8 path").to_owned();
    let script = format!(
        "env CF_DATA_DIR={d} XDG_CONFIG_HOME={d}/config XDG_DATA_HOME={d}/data ANTHROPIC_API_KEY=test-key {exe} run --json --tasks {tasks} --max-concurrent {LIMIT} --base-url {url} > {out}; echo CF-EXIT-$?; read _",
        d = path(dir.path()),
        exe = env!("CARGO_BIN_EXE_cf-host"),
        tasks = path(&tasks),
        url = server.base_url(),
        out = path(&out),
    );
    let tmux = Tmux::start("cf-progress", &script);

    let (mut seen, mut blank, mut max_calls) = (0usize, 0usize, 0usize);
    let guard = Instant::now() + Duration::from_secs(300);
    let final_pane = loop {
        let pane = tmux.capture();
        if pane.contains("CF-EXIT-") {
            break pane;
        }
        assert!(Instant::now() < guard, "the batch never ended: {pane}");
        // While the batch runs (no summary yet), once the line has appeared.
        if !pane.contains("item(s):") {
            match progress_line(&pane) {
                Some(line) => {
                    seen += 1;
                    let calls = calls_in_flight(line).expect("a count of calls in flight");
                    max_calls = max_calls.max(calls);
                }
                None if seen > 0 => blank += 1,
                None => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(seen >= 5, "the line was seen in only {seen} captures");
    // A capture may land in the middle of a redraw; the old line was blank in most.
    assert!(
        blank * 10 <= seen,
        "the line was missing from {blank} of {} captures while the batch ran",
        seen + blank
    );
    assert!(
        max_calls <= LIMIT,
        "the line showed {max_calls} model calls in flight under a limit of {LIMIT}"
    );
    assert!(final_pane.contains("CF-EXIT-0"), "{final_pane}");
    assert!(
        final_pane.contains(&format!("{ITEMS} item(s): {ITEMS} ok")),
        "{final_pane}"
    );
    assert!(
        progress_line(&final_pane).is_none(),
        "the line is cleared at the end: {final_pane}"
    );
    let written = std::fs::read_to_string(&out).expect("results file");
    assert_eq!(
        written.lines().count(),
        ITEMS,
        "every result reached the file"
    );
    assert!(server.max_in_flight() <= LIMIT);
    server.stop().await;
}

#[test]
fn calls_in_flight_are_read_from_the_line() {
    let line = "3/120 [=>   ] ETA 4s · 2 calls in flight · 118 waiting · 0 failed · 0 cached · $0.0010 · 120 items running";
    assert_eq!(calls_in_flight(line), Some(2));
    assert_eq!(calls_in_flight("no line"), None);
}
