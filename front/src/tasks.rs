//! Batch items from the JSONL task format of `cf-host run --tasks FILE`.
//!
//! The lines are parsed by [`cf_tasks`] (a crate of its own, light enough to fuzz);
//! this module applies the operator's settings to them. A line's own `model`,
//! `max_tokens` and `temperature` override the command line's.
//!
//! ```
//! use cf_host::RunOptions;
//! let base = RunOptions { max_tokens: Some(512), ..RunOptions::default() };
//! let input = "{\"task\": \"Explain decorators\", \"temperature\": 0.2}\nnot json\n";
//! let (items, bad) = cf_front::tasks::read_jsonl(input.as_bytes(), Some("python-expert"), &base);
//! assert_eq!(items[0].id.as_deref(), Some("1"));
//! assert_eq!((items[0].options.max_tokens, items[0].options.temperature), (Some(512), Some(0.2)));
//! assert_eq!(bad[0].line, 2);
//! ```

use std::io::BufRead;

use cf_host::{BatchItem, RunOptions, Task};

pub use cf_tasks::{BadLine, TaskLine};

/// Items read from JSONL, and the lines that were not items (with their 1-based
/// numbers). Blank lines are skipped. An item without `id` gets its line number as id;
/// one without `agent` gets `default_agent` (a bad line when that is `None` too).
/// `base` holds the command line's settings, which a line's own fields override.
pub fn read_jsonl(
    input: impl BufRead,
    default_agent: Option<&str>,
    base: &RunOptions,
) -> (Vec<BatchItem>, Vec<BadLine>) {
    let (lines, bad) = cf_tasks::read_jsonl(input, default_agent);
    let items = lines.into_iter().map(|line| item(line, base)).collect();
    (items, bad)
}

/// Items (or bad lines) one at a time, as [`read_jsonl`] reads them: for a batch of
/// any length in bounded memory.
pub fn stream<'a>(
    input: impl BufRead + 'a,
    default_agent: Option<&'a str>,
    base: &'a RunOptions,
) -> impl Iterator<Item = Result<BatchItem, BadLine>> + 'a {
    cf_tasks::lines(input, default_agent).map(move |line| line.map(|l| item(l, base)))
}

/// The batch item of a task line under the command line's settings `base`.
pub fn item(line: TaskLine, base: &RunOptions) -> BatchItem {
    BatchItem {
        id: Some(line.id),
        agent: line.agent,
        task: Task {
            text: line.task,
            context: line.context.into_iter().collect(),
        },
        options: overriding(base, line.model, line.max_tokens, line.temperature),
    }
}

/// `base` with an item's own model, token limit and temperature where the item sets
/// them (a tasks line, an item on the work queue).
pub fn overriding(
    base: &RunOptions,
    model: Option<String>,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
) -> RunOptions {
    RunOptions {
        model: model.or_else(|| base.model.clone()),
        max_tokens: max_tokens.or(base.max_tokens),
        temperature: temperature.or(base.temperature),
        ..base.clone()
    }
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
    fn a_line_overrides_the_command_line() {
        let base = RunOptions {
            model: Some("base-model".into()),
            max_tokens: Some(10),
            temperature: Some(0.9),
            ..RunOptions::default()
        };
        let input = "{\"agent\": \"a\", \"task\": \"t\", \"model\": \"m\", \"max_tokens\": 5, \
                     \"temperature\": 0.1, \"context\": {\"k\": \"v\"}}\n";
        let (items, bad) = read_jsonl(input.as_bytes(), None, &base);
        assert!(bad.is_empty(), "{bad:?}");
        let o = &items[0].options;
        assert_eq!(
            (o.model.as_deref(), o.max_tokens, o.temperature),
            (Some("m"), Some(5), Some(0.1))
        );
        assert_eq!(items[0].task.context, vec![("k".into(), "v".into())]);
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
