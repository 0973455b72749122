//! Reading batch items: JSONL from a file or stdin, or repeated `--task`.

use cf_host::{BatchItem, RunOptions, Task};

/// JSONL lines: the library's reader (`cf_host::tasks`).
pub(crate) use cf_host::tasks::read_jsonl;

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
