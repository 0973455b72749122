//! Reading batch items: JSONL from a file or stdin, or repeated `--task`.

use cf_host::{BatchItem, RunOptions, Task};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::BufRead;

/// One line of a tasks file.
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

/// A line that could not be read, by its 1-based number.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadLine {
    pub line: usize,
    pub message: String,
}

/// Items read from JSONL, and the lines that were not items. Blank lines are skipped.
/// An item without `id` gets its line number as id. `base` holds the command line's
/// settings, which a line's own fields override.
pub(crate) fn read_jsonl(
    input: impl BufRead,
    default_agent: Option<&str>,
    base: &RunOptions,
) -> (Vec<BatchItem>, Vec<BadLine>) {
    let (mut items, mut bad) = (Vec::new(), Vec::new());
    for (i, line) in input.lines().enumerate() {
        let number = i + 1;
        let text = match line {
            Ok(t) => t,
            Err(e) => {
                bad.push(BadLine {
                    line: number,
                    message: format!("unreadable: {e}"),
                });
                continue;
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        let parsed: Line = match serde_json::from_str(&text) {
            Ok(l) => l,
            Err(e) => {
                bad.push(BadLine {
                    line: number,
                    message: e.to_string(),
                });
                continue;
            }
        };
        let Some(agent) = parsed.agent.or_else(|| default_agent.map(str::to_owned)) else {
            bad.push(BadLine {
                line: number,
                message: "no \"agent\" and no AGENT on the command line".into(),
            });
            continue;
        };
        if let Some(t) = parsed.temperature.filter(|t| !(0.0..=1.0).contains(t)) {
            bad.push(BadLine {
                line: number,
                message: format!("temperature {t} is not in [0, 1]"),
            });
            continue;
        }
        let options = RunOptions {
            model: parsed.model.or_else(|| base.model.clone()),
            max_tokens: parsed.max_tokens.or(base.max_tokens),
            temperature: parsed.temperature.or(base.temperature),
            ..base.clone()
        };
        items.push(BatchItem {
            id: Some(parsed.id.unwrap_or_else(|| number.to_string())),
            agent,
            task: Task {
                text: parsed.task,
                context: parsed.context.into_iter().collect(),
            },
            options,
        });
    }
    (items, bad)
}

/// Items from repeated `--task TEXT`, all for `agent`, numbered from 1.
pub(crate) fn from_flags(
    texts: &[String],
    agent: &str,
    context: &[(String, String)],
    base: &RunOptions,
) -> Vec<BatchItem> {
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| BatchItem {
            id: Some((i + 1).to_string()),
            agent: agent.to_owned(),
            task: Task {
                text: text.clone(),
                context: context.to_vec(),
            },
            options: base.clone(),
        })
        .collect()
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
        let base = RunOptions {
            max_tokens: Some(99),
            ..RunOptions::default()
        };
        let (items, bad) = read_jsonl(input.as_bytes(), Some("bug-investigator"), &base);
        assert_eq!(items.len(), 2);
        assert_eq!(
            (items[0].id.as_deref(), items[0].agent.as_str()),
            (Some("1"), "python-expert")
        );
        assert_eq!(
            (items[1].id.as_deref(), items[1].agent.as_str()),
            (Some("x"), "bug-investigator")
        );
        assert_eq!(items[1].options.temperature, Some(0.5));
        assert_eq!(
            items[1].options.max_tokens,
            Some(99),
            "the command line's settings apply"
        );
        let lines: Vec<usize> = bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, vec![2, 5, 6, 7]);
        assert!(bad[1].message.contains("bogus"), "{}", bad[1].message);
        assert!(bad[3].message.contains("task"), "{}", bad[3].message);
    }

    #[test]
    fn no_agent_anywhere_is_a_bad_line() {
        let (items, bad) = read_jsonl(
            "{\"task\": \"t\"}\n".as_bytes(),
            None,
            &RunOptions::default(),
        );
        assert!(items.is_empty());
        assert_eq!(bad[0].line, 1);
    }
}
