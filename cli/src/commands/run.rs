//! `cf-host run AGENT [TASK]`: one run, its answer on stdout and a summary line on
//! stderr; with `--tasks FILE` or repeated `--task`, a batch ([`super::batch`]).

use super::{build_host, flush_telling_why, settings};
use crate::args::RunArgs;
use crate::error::{CliError, Exit};
use crate::runlog;
use cf_front::render;
use cf_front::runlog::RunRecord;
use cf_host::{RunEvent, RunOptions, Source, Task};
use std::io::{IsTerminal as _, Read as _, Write as _};

pub(crate) async fn run(args: RunArgs) -> Result<Exit, CliError> {
    if args.tasks.is_some() || !args.batch_tasks.is_empty() {
        return super::batch::run_batch(args).await;
    }
    let agent_arg = args
        .agent
        .as_deref()
        .ok_or_else(|| CliError::usage("name an AGENT, or pass --tasks FILE"))?;
    // Validate what needs no engine first, so bad input costs nothing.
    let source = Source::from(agent_arg);
    if let Source::Builtin(name) = &source {
        cf_host::validate_agent_name(name)?;
    }
    let settings = settings(&args.host)?;
    let text = read_task(args.task.as_deref())?;
    let chars = text.chars().count();
    if chars > settings.max_task_chars {
        return Err(cf_host::Error::TaskTooLarge {
            chars,
            max: settings.max_task_chars,
        }
        .into());
    }
    let host = build_host(&settings).await?;
    let agent = match &args.sha256 {
        Some(digest) => host.load_pinned(source, digest).await,
        None => host.load(source).await,
    }?;
    let options = RunOptions {
        model: settings.model.clone(),
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        budget: settings.budget(),
        ..RunOptions::default()
    };
    let task = Task {
        text,
        context: args.context,
    };
    let task_text = task.text.clone();
    // On a terminal the agent's output shows as it is emitted; piped, stdout gets the
    // result alone (what a script reads is the answer, post-processing included).
    let live = args.stream_json || (!args.json && std::io::stdout().is_terminal());
    let mut shown = String::new();
    let result = if live {
        let mut run = agent.start(task, options);
        while let Some(event) = run.next_event().await {
            let mut out = std::io::stdout().lock();
            // A closed stdout must not stop the run: its result still goes to the log.
            let _ = if args.stream_json {
                writeln!(out, "{}", render::event_json(&event, None))
            } else if let RunEvent::Output(text) = &event {
                shown.push_str(text);
                write!(out, "{}", render::terminal_safe(text))
            } else {
                Ok(())
            }
            .and_then(|()| out.flush());
        }
        run.result().await
    } else {
        agent.run_with(task, &options).await
    };
    flush_telling_why(&host).await;
    runlog::append(&[RunRecord::from_result(agent.name(), &task_text, &result)]);
    let exit = match &result {
        Ok(_) => Exit::Ok,
        // Refused before anything ran (the host's own checks): shown as a result, with
        // the code of a usage error.
        Err(e) if e.error.is_usage() => Exit::Refused,
        Err(_) => Exit::TaskFailed,
    };
    let (out, err) = (std::io::stdout(), std::io::stderr());
    let _ = if args.stream_json {
        writeln!(
            out.lock(),
            "{}",
            render::result_event_json(agent.name(), &result)
        )
    } else if live {
        render::human_result_after(
            &mut out.lock(),
            &mut err.lock(),
            agent.name(),
            &result,
            &shown,
        )
    } else {
        show(args.json, agent.name(), &result, out, err)
    };
    // The process exits next (see `main`); dropping the host would wait for the
    // response cache again, which `flush_telling_why` may have given up on.
    std::mem::forget((host, agent));
    Ok(exit)
}

/// The result: one JSON object on stdout, or the answer on stdout and a summary on
/// stderr.
fn show(
    json: bool,
    agent: &str,
    result: &Result<cf_host::RunOutput, cf_host::RunError>,
    out: std::io::Stdout,
    err: std::io::Stderr,
) -> std::io::Result<()> {
    if json {
        render::json_result(&mut out.lock(), agent, result)
    } else {
        render::human_result(&mut out.lock(), &mut err.lock(), agent, result)
    }
}

/// The task from the command line, or from stdin for `-` or none. One trailing newline
/// (`\n` or `\r\n`) of stdin is dropped: `echo q | cf-host run a -` asks what
/// `cf-host run a q` asks, and the two share a cached answer.
fn read_task(task: Option<&str>) -> Result<String, CliError> {
    match task {
        Some("-") | None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CliError::usage(format!("reading the task from stdin: {e}")))?;
            Ok(without_trailing_newline(text))
        }
        Some(t) => Ok(t.to_owned()),
    }
}

fn without_trailing_newline(mut text: String) -> String {
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::without_trailing_newline;

    #[test]
    fn one_trailing_newline_is_dropped() {
        assert_eq!(without_trailing_newline("q\n".into()), "q");
        assert_eq!(without_trailing_newline("q\r\n".into()), "q");
        assert_eq!(without_trailing_newline("q\n\n".into()), "q\n", "only one");
        assert_eq!(without_trailing_newline("q".into()), "q");
        assert_eq!(without_trailing_newline("a\nb\n".into()), "a\nb");
    }
}
