//! How results, agents, components and reports look: JSON for programs (one object
//! per result, the same fields whichever front end serves it) and text for people.
//! Every function writes to the writers it is given; a front end chooses where they go
//! (the CLI: results on stdout, everything for humans on stderr).

use cf_host::{
    AgentInfo, BatchResult, ComponentInterface, RunError, RunEvent, RunOutput, RunStats,
};
use serde_json::{Value, json};
use std::io::{self, Write};
use std::path::Path;

fn stats_json(stats: &RunStats) -> Value {
    json!({
        "cached": stats.llm_calls > 0 && stats.cache_hits == stats.llm_calls,
        "cache_hits": stats.cache_hits,
        "llm_calls": stats.llm_calls,
        "attempts": stats.attempts,
        "latency_ms": stats.timings.total.as_secs_f64() * 1000.0,
        "timings": stats.timings,
        "usage": stats.usage,
        "cost_usd": stats.cost.known_usd(),
        "unpriced_calls": stats.cost.unpriced_calls,
        "saved_usd": stats.saved_usd,
        "model": stats.model,
    })
}

/// A result as one line of JSON.
pub fn json_result(
    out: &mut impl Write,
    agent: &str,
    result: &Result<RunOutput, RunError>,
) -> io::Result<()> {
    writeln!(out, "{}", result_json(agent, result))
}

/// A batch item's result as one line of JSON (the single-run fields plus `id` and
/// `index`), appended to `buf`.
pub fn write_json_item(buf: &mut Vec<u8>, item: &BatchResult) {
    write_item(buf, item, None);
}

/// A batch item's result as the last event of its live stream (`--stream-json`):
/// [`write_json_item`]'s object marked `"type": "result"`.
pub fn write_result_event_item(buf: &mut Vec<u8>, item: &BatchResult) {
    write_item(buf, item, Some("result"));
}

fn write_item(buf: &mut Vec<u8>, item: &BatchResult, kind: Option<&str>) {
    let mut value = result_json(&item.agent, &item.result);
    if let Value::Object(map) = &mut value {
        if let Some(kind) = kind {
            map.insert("type".into(), Value::from(kind));
        }
        map.insert(
            "id".into(),
            item.id.clone().map_or(Value::Null, Value::from),
        );
        map.insert("index".into(), Value::from(item.index));
    }
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, &value);
    buf.push(b'\n');
}

/// `text` safe to print on a terminal: control characters other than newline and tab
/// (an escape sequence can rewrite the screen, retitle the window or, on some
/// terminals, write to the clipboard) are shown escaped, as `\u{1b}`. Human output
/// passes every text that came from a plugin, an upstream or a tasks file through it;
/// `--json` output keeps the exact text (JSON escapes control characters itself).
pub fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.chars().any(unsafe_char) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// A batch item's result for people, appended to `buf`.
pub fn write_human_item(buf: &mut Vec<u8>, item: &BatchResult) {
    let outcome = match &item.result {
        Ok(out) => Ok((
            out.stats.timings.total.as_secs_f64() * 1000.0,
            out.text.as_str(),
        )),
        Err(e) => Err((e.error.kind(), e.error.to_string())),
    };
    write_human_parts(buf, item.id.as_deref(), &item.agent, outcome);
}

/// [`write_human_item`] of a result given as its JSON ([`write_json_item`]'s object,
/// as a worker of the fleet's queue stores it).
pub fn write_human_value(buf: &mut Vec<u8>, value: &Value) {
    fn text(v: Option<&Value>) -> &str {
        v.and_then(Value::as_str).unwrap_or_default()
    }
    let outcome = if value.get("ok").and_then(Value::as_bool) == Some(true) {
        Ok((
            value
                .get("latency_ms")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
            text(value.get("output")),
        ))
    } else {
        let error = value.get("error");
        Err((
            text(error.and_then(|e| e.get("kind"))),
            text(error.and_then(|e| e.get("message"))).to_owned(),
        ))
    };
    write_human_parts(
        buf,
        value.get("id").and_then(Value::as_str),
        text(value.get("agent")),
        outcome,
    );
}

fn write_human_parts(
    buf: &mut Vec<u8>,
    id: Option<&str>,
    agent: &str,
    outcome: Result<(f64, &str), (&str, String)>,
) {
    use std::io::Write as _;
    let id = terminal_safe(id.unwrap_or("-"));
    let agent = terminal_safe(agent);
    // Writing to a Vec cannot fail.
    let _ = match outcome {
        Ok((ms, text)) => writeln!(
            buf,
            "── [{id}] {agent} · ok · {ms:.0} ms\n{}",
            terminal_safe(text)
        ),
        Err((kind, message)) => {
            writeln!(
                buf,
                "── [{id}] {agent} · {kind} · {}",
                terminal_safe(&message)
            )
        }
    };
}

/// A result as JSON: the fields of `cf-host run --json`.
pub fn result_json(agent: &str, result: &Result<RunOutput, RunError>) -> Value {
    let (mut value, stats) = match result {
        Ok(out) => (
            json!({
                "agent": agent,
                "ok": true,
                "output": out.text,
                "metadata": out.metadata.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect::<serde_json::Map<String, Value>>(),
                "error": Value::Null,
            }),
            &out.stats,
        ),
        Err(e) => (
            json!({
                "agent": agent,
                "ok": false,
                "output": Value::Null,
                "metadata": {},
                "error": { "kind": e.error.kind(), "message": e.error.to_string() },
            }),
            &e.stats,
        ),
    };
    if let (Value::Object(map), Value::Object(extra)) = (&mut value, stats_json(stats)) {
        map.extend(extra);
    }
    value
}

/// A live event as one line of JSON (`cf-host run --stream-json`): `delta` for
/// output the agent emitted, `tool` for a tool its model asked for; with the batch
/// item's `index` when there is one.
pub fn event_json(event: &RunEvent, index: Option<usize>) -> Value {
    let mut value = match event {
        RunEvent::Output(text) => json!({"type": "delta", "text": text}),
        RunEvent::ToolUse { id, name } => json!({"type": "tool", "id": id, "name": name}),
        // A kind of event this version does not know yet.
        _ => json!({"type": "other"}),
    };
    if let (Value::Object(map), Some(index)) = (&mut value, index) {
        map.insert("index".into(), Value::from(index));
    }
    value
}

/// The end of a live stream of events (`--stream-json`): the result's JSON
/// ([`result_json`]) marked `"type": "result"`.
pub fn result_event_json(agent: &str, result: &Result<RunOutput, RunError>) -> Value {
    let mut value = result_json(agent, result);
    if let Value::Object(map) = &mut value {
        map.insert("type".into(), Value::from("result"));
    }
    value
}

/// A result for people after its output was shown live (`shown`, the text the agent
/// emitted, already on `out`): what the result adds to it (whitespace the agent
/// trimmed at either end aside), or, when the result is not a continuation of what
/// was shown (post-processing changed it), a rule and the whole result; then the
/// summary on `notes`.
pub fn human_result_after(
    out: &mut impl Write,
    notes: &mut impl Write,
    agent: &str,
    result: &Result<RunOutput, RunError>,
    shown: &str,
) -> io::Result<()> {
    match result {
        Ok(o) if !shown.is_empty() => {
            let rest = o
                .text
                .strip_prefix(shown)
                .or_else(|| o.text.trim_start().strip_prefix(shown.trim()));
            match rest {
                Some(rest) => writeln!(out, "{}", terminal_safe(rest))?,
                None => writeln!(out, "\n──\n{}", terminal_safe(&o.text))?,
            }
            writeln!(notes, "{}", summary_line(agent, &o.stats))
        }
        Err(_) if !shown.is_empty() => {
            writeln!(out)?;
            human_result(out, notes, agent, result)
        }
        _ => human_result(out, notes, agent, result),
    }
}

/// A result for people: the answer on `out`, a one-line summary (or the error) on
/// `notes`.
pub fn human_result(
    out: &mut impl Write,
    notes: &mut impl Write,
    agent: &str,
    result: &Result<RunOutput, RunError>,
) -> io::Result<()> {
    match result {
        Ok(o) => {
            writeln!(out, "{}", terminal_safe(&o.text))?;
            writeln!(notes, "{}", summary_line(agent, &o.stats))
        }
        Err(e) => {
            writeln!(
                notes,
                "cf-host: {agent} failed: {}",
                terminal_safe(&e.error.to_string())
            )?;
            if e.stats.llm_calls > 0 || e.stats.attempts > 0 {
                writeln!(notes, "{}", summary_line(agent, &e.stats))?;
            }
            Ok(())
        }
    }
}

/// One line on what a run used: model, calls, attempts, cache hits, tokens, cost, time.
pub fn summary_line(agent: &str, s: &RunStats) -> String {
    let cost = match s.cost.known_usd() {
        Some(usd) => format!("${usd:.6}"),
        None => format!(
            "${:.6} + {} unpriced call(s)",
            s.cost.usd, s.cost.unpriced_calls
        ),
    };
    format!(
        "— {} · {} · {} call(s), {} attempt(s), {} cached · {} tokens in, {} out · {cost} · {:.0} ms",
        terminal_safe(agent),
        // The model name comes from the provider's answer (or a plugin's request).
        terminal_safe(s.model.as_deref().unwrap_or("no model call")),
        s.llm_calls,
        s.attempts,
        s.cache_hits,
        s.usage.total_input(),
        s.usage.output_tokens,
        s.timings.total.as_secs_f64() * 1000.0,
    )
}

/// The model an agent prefers, for a terminal.
fn shown_model(a: &AgentInfo) -> std::borrow::Cow<'_, str> {
    if a.default_model.is_empty() {
        "(host default)".into()
    } else {
        terminal_safe(&a.default_model)
    }
}

/// The agents, one per two lines, or as a JSON array.
pub fn agents(out: &mut impl Write, infos: &[AgentInfo], as_json: bool) -> io::Result<()> {
    if as_json {
        writeln!(out, "{}", serde_json::to_string(infos).unwrap_or_default())?;
        return Ok(());
    }
    for a in infos {
        writeln!(
            out,
            "{:<18} {:<8} {}",
            a.name,
            terminal_safe(&a.version),
            terminal_safe(&a.description)
        )?;
        writeln!(
            out,
            "{:<18} model: {}  tags: {}",
            "",
            shown_model(a),
            terminal_safe(&a.tags.join(", "))
        )?;
    }
    Ok(())
}

/// What `cf-host inspect` shows about a component.
pub fn inspect(
    out: &mut impl Write,

    path: &Path,
    interface: &ComponentInterface,
    described: Result<&AgentInfo, &String>,
    as_json: bool,
) -> io::Result<()> {
    let compatible = interface.check();
    if as_json {
        let value = json!({
            "path": path.display().to_string(),
            "contract_versions": interface.contract_versions,
            "supported_by_host": compatible.is_ok(),
            "problem": compatible.as_ref().err().map(ToString::to_string),
            "imports": interface.imports,
            "exports": interface.exports,
            "agent": described.ok(),
            "describe_error": described.err(),
        });
        writeln!(out, "{value}")?;
        return Ok(());
    }
    writeln!(out, "component: {}", path.display())?;
    let versions = if interface.contract_versions.is_empty() {
        "none".to_owned()
    } else {
        interface.contract_versions.join(", ")
    };
    writeln!(out, "contract:  claude-force:agent@{versions}")?;
    match &compatible {
        Ok(v) => writeln!(out, "host:      supported (contract {v})")?,
        Err(e) => writeln!(out, "host:      NOT supported: {e}")?,
    }
    writeln!(out, "imports:")?;
    for i in &interface.imports {
        writeln!(out, "  {i}")?;
    }
    writeln!(out, "exports:")?;
    for e in &interface.exports {
        writeln!(out, "  {e}")?;
    }
    match described {
        Ok(a) => {
            writeln!(
                out,
                "agent:     {} {} — {}",
                a.name,
                terminal_safe(&a.version),
                terminal_safe(&a.description)
            )?;
            writeln!(out, "model:     {}", shown_model(a))?;
            writeln!(out, "tags:      {}", terminal_safe(&a.tags.join(", ")))?;
            writeln!(out, "sha256:    {}", a.sha256)?;
        }
        Err(e) => writeln!(out, "describe:  unavailable ({e})")?,
    }
    Ok(())
}

/// A response-cache report (`cf-host cache …`): JSON as is, or one `name: value` line per field.
pub fn cache_report(out: &mut impl Write, value: &Value, as_json: bool) -> io::Result<()> {
    if as_json {
        writeln!(out, "{value}")?;
        return Ok(());
    }
    if let Value::Object(map) = value {
        for (k, v) in map {
            match v {
                Value::Array(items) => {
                    writeln!(out, "{k}: {}", items.len())?;
                    for item in items {
                        writeln!(out, "  {item}")?;
                    }
                }
                other => writeln!(out, "{k}: {other}")?,
            }
        }
    }
    Ok(())
}

/// The effective configuration, secrets redacted: TOML for people, or JSON.
pub fn settings(
    out: &mut impl Write,
    settings: &crate::settings::Settings,
    as_json: bool,
) -> io::Result<()> {
    if as_json {
        writeln!(
            out,
            "{}",
            serde_json::to_string(settings).unwrap_or_default()
        )?;
    } else {
        write!(out, "{}", toml::to_string(settings).unwrap_or_default())?;
    }
    Ok(())
}

/// The verdict of `cf-host check`: the interface and what the agent says about
/// itself, or why it does not fit (with the interface, when it could be read).
pub type CheckVerdict =
    Result<(ComponentInterface, AgentInfo), (Option<ComponentInterface>, String)>;

/// What `cf-host check` shows: the verdict, what the component targets and declares.
pub fn check(
    out: &mut impl Write,

    path: &Path,
    sha256: &str,
    verdict: &CheckVerdict,
    declared: Option<&cf_host::permissions::Manifest>,
    as_json: bool,
) -> io::Result<()> {
    let supported: Vec<String> = cf_host::SUPPORTED_CONTRACTS
        .iter()
        .map(|v| format!("claude-force:agent@{v}"))
        .collect();
    let interface = match verdict {
        Ok((i, _)) => Some(i),
        Err((i, _)) => i.as_ref(),
    };
    let targets: Vec<String> = interface
        .map(|i| {
            i.contract_versions
                .iter()
                .map(|v| format!("claude-force:agent@{v}"))
                .collect()
        })
        .unwrap_or_default();
    if as_json {
        let value = json!({
            "path": path.display().to_string(),
            "sha256": sha256,
            "compatible": verdict.is_ok(),
            "targets": targets,
            "host_supports": supported,
            "problem": verdict.as_ref().err().map(|(_, e)| e),
            "imports": interface.map(|i| i.imports.clone()),
            "agent": verdict.as_ref().ok().map(|(_, a)| a),
            "declares": declared.map(|m| json!({
                "name": m.name, "models": m.models, "max_tokens": m.max_tokens, "store": m.store,
                "store_quota_bytes": m.store_quota_bytes, "concurrency": m.concurrency,
                "thinking": m.thinking, "max_thinking_budget": m.max_thinking_budget,
                "media": m.media, "max_media_bytes": m.max_media_bytes,
            })),
        });
        writeln!(out, "{value}")?;
        return Ok(());
    }
    writeln!(out, "component:     {}", path.display())?;
    writeln!(out, "sha256:        {sha256}")?;
    writeln!(
        out,
        "targets:       {}",
        if targets.is_empty() {
            "no claude-force agent contract".to_owned()
        } else {
            targets.join(", ")
        }
    )?;
    writeln!(out, "host supports: {}", supported.join(", "))?;
    match declared {
        Some(m) => writeln!(
            out,
            "declares:      {}models [{}], max_tokens {}, store {}{}, concurrency {}, thinking {}{}, media {}{}",
            m.name
                .as_ref()
                .map_or(String::new(), |n| format!("name {n}, ")),
            m.models.join(", "),
            m.max_tokens.map_or("any".to_owned(), |n| n.to_string()),
            if m.store { "yes" } else { "no" },
            m.store_quota_bytes
                .map_or(String::new(), |b| format!(" ({b} bytes)")),
            m.concurrency.map_or("any".to_owned(), |n| n.to_string()),
            if m.thinking { "yes" } else { "no" },
            m.max_thinking_budget
                .map_or(String::new(), |b| format!(" (budget ≤ {b})")),
            if m.media { "yes" } else { "no" },
            m.max_media_bytes
                .map_or(String::new(), |b| format!(" ({b} bytes)")),
        )?,
        None => writeln!(
            out,
            "declares:      nothing (no manifest beside it): a third-party plugin may call nothing"
        )?,
    }
    match verdict {
        Ok((_, a)) => writeln!(
            out,
            "verdict:       compatible — {} {} ({})",
            a.name, a.version, a.description
        )?,
        Err((_, e)) => writeln!(out, "verdict:       NOT compatible: {e}")?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{human_result_after, terminal_safe};
    use cf_host::{RunOutput, RunStats};

    /// After live output, what the result adds is printed (whitespace trimmed by the
    /// agent aside); a result that is no continuation comes whole after a rule.
    #[test]
    fn a_result_after_live_output_prints_what_it_adds() {
        let shown_then = |shown: &str, text: &str| {
            let result = Ok(RunOutput {
                agent: "a".into(),
                text: text.into(),
                metadata: Vec::new(),
                stats: RunStats::default(),
            });
            let (mut out, mut notes) = (Vec::new(), Vec::new());
            human_result_after(&mut out, &mut notes, "a", &result, shown).expect("writes");
            assert!(!notes.is_empty(), "the summary line");
            String::from_utf8(out).expect("utf-8")
        };
        assert_eq!(shown_then("Hello", "Hello\n```"), "\n```\n");
        assert_eq!(shown_then("\nHello \n", "Hello"), "\n");
        assert_eq!(shown_then("Hello", "Goodbye"), "\n──\nGoodbye\n");
    }

    /// Regression: plugin output and tasks-file fields reached the terminal with raw
    /// escape sequences.
    #[test]
    fn control_characters_are_escaped_for_the_terminal() {
        assert_eq!(terminal_safe("plain\ttext\nnext"), "plain\ttext\nnext");
        assert_eq!(
            terminal_safe("a\u{1b}]0;pwned\u{7}b\r"),
            "a\\u{1b}]0;pwned\\u{7}b\\u{d}"
        );
    }
}
