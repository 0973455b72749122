//! cf-tasks: the JSONL task format of `cf-host run --tasks FILE`, parsed without the
//! engine.
//!
//! One JSON object per line: `{"agent", "task", "id"?, "model"?, "max_tokens"?,
//! "temperature"?, "context"?}`; unknown fields are refused. Blank lines are skipped;
//! any other line is either a [`TaskLine`] or a [`BadLine`] naming its 1-based number,
//! never both and never neither. `cf_front::tasks` turns task lines into batch items.
//!
//! ```
//! let input = "{\"agent\": \"python-expert\", \"task\": \"Explain decorators\"}\n\
//!              not json\n\
//!              \n\
//!              {\"task\": \"Review this\", \"id\": \"r1\", \"temperature\": 0.2}\n";
//! let (lines, bad) = cf_tasks::read_jsonl(input.as_bytes(), Some("code-reviewer"));
//! assert_eq!(lines.len(), 2);
//! assert_eq!((lines[0].line, lines[0].id.as_str(), lines[0].agent.as_str()), (1, "1", "python-expert"));
//! assert_eq!((lines[1].id.as_str(), lines[1].agent.as_str()), ("r1", "code-reviewer"));
//! assert_eq!(bad[0].line, 2);
//! ```
#![deny(missing_docs)]

use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::BufRead;

#[doc(hidden)]
pub mod fuzzing;
#[cfg(test)]
#[path = "../../fuzz/regression_inputs.rs"]
mod regression_inputs;

/// One line of a tasks file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    /// The agent; the command line's AGENT when absent.
    agent: Option<String>,
    task: String,
    id: Option<String>,
    model: Option<String>,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
    #[serde(default)]
    context: BTreeMap<String, String>,
}

/// A line that is a task, with its defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskLine {
    /// The line's 1-based number.
    pub line: usize,
    /// The line's `id`, else its line number.
    pub id: String,
    /// The line's `agent`, else the default agent (the command line's AGENT).
    pub agent: String,
    /// The task text.
    pub task: String,
    /// The line's `model`, if any.
    pub model: Option<String>,
    /// The line's `max_tokens`, if any.
    pub max_tokens: Option<u32>,
    /// The line's `temperature`, if any; always in [0, 1].
    pub temperature: Option<f32>,
    /// The line's `context` (key → value), empty when absent.
    pub context: BTreeMap<String, String>,
}

/// A line that could not be read as a task, by its 1-based number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// The line's 1-based number.
    pub line: usize,
    /// Why it is not a task: one line of plain text (control characters escaped).
    pub message: String,
}

/// Reads JSONL from `input`: the task lines and the bad lines, each in line order.
/// Blank lines (only whitespace) are skipped; a line that is not UTF-8 is a bad line
/// (`unreadable: …`), and so is a task with no `agent` when `default_agent` is `None`,
/// and a temperature outside [0, 1].
pub fn read_jsonl(
    input: impl BufRead,
    default_agent: Option<&str>,
) -> (Vec<TaskLine>, Vec<BadLine>) {
    let (mut tasks, mut bad) = (Vec::new(), Vec::new());
    for parsed in lines(input, default_agent) {
        match parsed {
            Ok(task) => tasks.push(task),
            Err(b) => bad.push(b),
        }
    }
    (tasks, bad)
}

/// The lines of `input` one at a time, as [`read_jsonl`] reads them: for a batch of
/// any length in bounded memory.
pub fn lines<'a>(
    input: impl BufRead + 'a,
    default_agent: Option<&'a str>,
) -> impl Iterator<Item = Result<TaskLine, BadLine>> + 'a {
    input.lines().enumerate().filter_map(move |(i, line)| {
        let number = i + 1;
        let parsed = match line {
            Ok(text) if text.trim().is_empty() => return None,
            Ok(text) => parse_line(&text, number, default_agent),
            Err(e) => Err(format!("unreadable: {e}")),
        };
        Some(parsed.map_err(|message| BadLine {
            line: number,
            message: escape_controls(&message),
        }))
    })
}

/// `text` with its control characters escaped (`\r` → `\\r`, ESC → `\\u{1b}`): serde's
/// messages quote the input (an unknown field's name), and a bad line's message is
/// printed on the operator's terminal, where it must stay one line of plain text.
fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// One non-blank line, numbered `number`.
fn parse_line(text: &str, number: usize, default_agent: Option<&str>) -> Result<TaskLine, String> {
    let parsed: Line = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let Some(agent) = parsed.agent.or_else(|| default_agent.map(str::to_owned)) else {
        return Err("no \"agent\" and no AGENT on the command line".into());
    };
    if let Some(t) = parsed.temperature.filter(|t| !(0.0..=1.0).contains(t)) {
        return Err(format!("temperature {t} is not in [0, 1]"));
    }
    Ok(TaskLine {
        line: number,
        id: parsed.id.unwrap_or_else(|| number.to_string()),
        agent,
        task: parsed.task,
        model: parsed.model,
        max_tokens: parsed.max_tokens,
        temperature: parsed.temperature,
        context: parsed.context,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_lines_are_reported_by_number_and_skipped() {
        let input = "\
{\"agent\": \"python-expert\", \"task\": \"a\"}
not json

{\"task\": \"b\", \"id\": \"x\", \"temperature\": 0.5}
{\"agent\": \"code-reviewer\", \"task\": \"c\", \"bogus\": 1}
{\"agent\": \"code-reviewer\", \"task\": \"d\", \"temperature\": 3}
{\"agent\": \"code-reviewer\"}
";
        let (tasks, bad) = read_jsonl(input.as_bytes(), Some("bug-investigator"));
        let got: Vec<(usize, &str, &str)> = tasks
            .iter()
            .map(|t| (t.line, t.id.as_str(), t.agent.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![(1, "1", "python-expert"), (4, "x", "bug-investigator")]
        );
        assert_eq!(tasks[1].temperature, Some(0.5));
        let lines: Vec<usize> = bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, vec![2, 5, 6, 7]);
        assert!(bad[1].message.contains("bogus"), "{}", bad[1].message);
        assert!(
            bad[2].message.contains("temperature 3"),
            "{}",
            bad[2].message
        );
        assert!(bad[3].message.contains("task"), "{}", bad[3].message);
    }

    #[test]
    fn no_agent_anywhere_is_a_bad_line() {
        let (tasks, bad) = read_jsonl("{\"task\": \"t\"}\n".as_bytes(), None);
        assert!(tasks.is_empty());
        assert_eq!(bad[0].line, 1);
    }

    #[test]
    fn a_line_that_is_not_utf8_is_unreadable_and_the_next_still_counts() {
        let input = b"\xff\xfe\n{\"agent\": \"a\", \"task\": \"t\"}\r\n";
        let (tasks, bad) = read_jsonl(&input[..], None);
        assert_eq!(bad.len(), 1);
        assert!(
            bad[0].message.starts_with("unreadable"),
            "{}",
            bad[0].message
        );
        assert_eq!((tasks[0].line, tasks[0].id.as_str()), (2, "2"));
    }

    /// Regression (fuzz/regressions/tasks_jsonl/crash-3bf31687…): an unknown field
    /// named `"a\r"` or `"\u001b[2J"` reached the terminal raw inside the message.
    #[test]
    fn messages_quoting_the_input_escape_control_characters() {
        let input = "{\"axp\\rt\": 1, \"task\": \"t\"}\n{\"\\u001b[2J\": 1}\n";
        let (_, bad) = read_jsonl(input.as_bytes(), Some("a"));
        assert_eq!(bad.len(), 2);
        assert!(bad[0].message.contains("axp\\rt"), "{}", bad[0].message);
        assert!(bad[1].message.contains("\\u{1b}[2J"), "{}", bad[1].message);
        assert!(
            bad.iter().all(|b| !b.message.chars().any(char::is_control)),
            "{bad:?}"
        );
    }

    /// Every input kept in `fuzz/regressions/tasks_jsonl/`, through the fuzz target's
    /// checks.
    #[test]
    fn fuzz_regressions_hold() {
        for (path, data) in crate::regression_inputs::inputs("tasks_jsonl") {
            println!("{}", path.display());
            fuzzing::check_read_jsonl(&data);
        }
    }
}
