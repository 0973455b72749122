//! The properties the `tasks_jsonl` fuzz target in `fuzz/` checks, shared with the
//! regression test that replays `fuzz/regressions/tasks_jsonl/`. Not part of the
//! crate's API: [`check_read_jsonl`] panics when a property does not hold.

use crate::{BadLine, TaskLine, read_jsonl};

/// The agent lines without their own `agent` get.
const DEFAULT_AGENT: &str = "default-agent";

/// The lines of `data` as [`BufRead::lines`](std::io::BufRead::lines) splits them,
/// restated: at each `\n`, dropping a `\r` just before it.
fn split_lines(data: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    if data.is_empty() || data.ends_with(b"\n") {
        lines.pop();
    }
    let last = lines.len().saturating_sub(1);
    for (i, line) in lines.iter_mut().enumerate() {
        let ended = i < last || data.ends_with(b"\n");
        if ended && let Some(stripped) = line.strip_suffix(b"\r") {
            *line = stripped;
        }
    }
    lines
}

/// The JSONL reader on `data`.
///
/// Properties: nothing panics; every non-blank line is exactly one task line or one bad
/// line, in order, with its own number; a line that is not UTF-8 is `unreadable`; a
/// task line has its `id` or its number, its `agent` or the default, a temperature in
/// [0, 1]; a bad line's message has no control character; and reading each line on its own
/// gives the same verdict as reading the whole input.
pub fn check_read_jsonl(data: &[u8]) {
    let (tasks, bad) = read_jsonl(data, Some(DEFAULT_AGENT));
    let lines = split_lines(data);
    let non_blank: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| !matches!(std::str::from_utf8(l), Ok(t) if t.trim().is_empty()))
        .map(|(i, _)| i + 1)
        .collect();
    let mut numbers: Vec<usize> = tasks
        .iter()
        .map(|t| t.line)
        .chain(bad.iter().map(|b| b.line))
        .collect();
    numbers.sort_unstable();
    assert_eq!(
        numbers, non_blank,
        "each non-blank line is read exactly once"
    );
    assert!(
        tasks.windows(2).all(|w| w[0].line < w[1].line),
        "tasks in order"
    );
    assert!(
        bad.windows(2).all(|w| w[0].line < w[1].line),
        "bad lines in order"
    );
    for task in &tasks {
        check_task(task, lines[task.line - 1]);
    }
    for b in &bad {
        check_bad(b, lines[b.line - 1]);
    }
    // Each line alone: the same verdict, and no line depends on another.
    let mut alone_tasks = Vec::new();
    for &number in &non_blank {
        let (mut t, b) = read_jsonl(lines[number - 1], Some(DEFAULT_AGENT));
        assert_eq!(t.len() + b.len(), 1, "line {number} alone");
        for task in &mut t {
            task.line = number;
            // Alone, a line without an id is line 1.
            let whole = tasks.iter().find(|w| w.line == number);
            if task.id == "1" && whole.is_some_and(|w| w.id == number.to_string()) {
                task.id = number.to_string();
            }
        }
        alone_tasks.extend(t);
    }
    assert_eq!(alone_tasks, tasks, "lines read alone");
}

fn check_task(task: &TaskLine, raw: &[u8]) {
    assert!(
        std::str::from_utf8(raw).is_ok(),
        "line {} is not UTF-8",
        task.line
    );
    if let Some(t) = task.temperature {
        assert!((0.0..=1.0).contains(&t), "temperature {t} accepted");
    }
}

fn check_bad(bad: &BadLine, raw: &[u8]) {
    assert!(
        !bad.message.is_empty(),
        "line {}: an empty message",
        bad.line
    );
    assert!(
        !bad.message.chars().any(char::is_control),
        "line {}: a control character in the message: {:?}",
        bad.line,
        bad.message
    );
    let unreadable = std::str::from_utf8(raw).is_err();
    assert_eq!(
        bad.message.starts_with("unreadable"),
        unreadable,
        "line {}: {:?}",
        bad.line,
        bad.message
    );
}
