//! A guest of contract 0.2.0 that uses what 0.2.0 added — tools, thinking, images,
//! documents, prompt-cache breakpoints, structured output — and, in its hostile modes,
//! breaks the host's rules for them. The task's context key `mode` says what it does;
//! the task's text is the prompt (a default one when empty).
//!
//! | mode               | behaviour                                                       |
//! |--------------------|-----------------------------------------------------------------|
//! | `tools` (default)  | a tool loop with `add` and `remember`, at most `max_turns` calls |
//! | `thinking`         | the same loop with thinking (`budget`) and `max_tokens` 4096     |
//! | `stream`           | streams the answer (with the tools, thinking when context `tools`, `thinking` are set), emitting its text |
//! | `stream-forget`    | opens a stream, reads one event, forgets the handle (never read, never dropped) and answers `forgotten` |
//! | `stream-then-call` | opens a stream, reads one event, keeps it open and makes a second (whole) call; then reads the first to its end |
//! | `stream-trap`      | reads two events of a stream, then traps                        |
//! | `stream-spin`      | reads one event of a stream, then computes for ever (the deadline stops it) |
//! | `structured`       | a list of findings as structured output                         |
//! | `image`            | an image of `size` bytes (PNG magic, then zeros)                |
//! | `pdf`              | a PDF document of `size` bytes (`%PDF-` magic, then zeros)      |
//! | `cache`            | a tool with a 1-hour breakpoint, a system prompt with a 5-minute one |
//! | `endless`          | a tool loop without a turn limit and a tool that always succeeds |
//! | `many-tools`       | 10,000 tools in one request                                     |
//! | `huge-image`       | a 50 MiB image                                                  |
//! | `bad-tool-name`    | a tool named `bad name!`                                        |
//! | `bad-schema`       | a tool whose input schema is `[1,2]`                            |
//! | `dangling-result`  | a tool result whose id matches no tool use                      |
//! | `five-breakpoints` | five prompt-cache breakpoints                                   |
//! | `budget-too-big`   | a thinking budget equal to `max_tokens`                         |
//!
//! Context keys: `max_turns` (default 5; `tools`, `thinking`), `budget` (default 2048;
//! `thinking`), `size` (bytes, default 100; `image`, `pdf`).
//!
//! Metadata:
//! - `tools`, `thinking`, `endless`: `turns` (model calls), `tool_calls`,
//!   `input_tokens`, `output_tokens` (summed over the calls), `max_turns_reached`
//!   (`true`/`false`), `stop_reason` (the last answer's, as `snake_case`); `thinking`
//!   adds `thinking` (every thinking block's text, oldest first, joined by a newline)
//!   and `thinking_blocks` (their count).
//! - `structured`: `findings`, the parsed list as JSON (`[{"severity", "line",
//!   "message"}]`); the text is `N findings`. A call that fails is `llm(error)`; an
//!   answer that does not parse is `failed(message)`.
//! - `image`, `pdf`: `bytes` (the size sent), `input_tokens`.
//! - `cache`: `input_tokens`, `output_tokens`, `cache_write_5m_input_tokens`,
//!   `cache_write_1h_input_tokens`, `cache_read_input_tokens`.
//!
//! A model call that fails ends the run with `llm(error)`, so the host reports the
//! typed error; the hostile modes expect exactly that. Should the host accept one of
//! their requests, they answer with the model's text and metadata `accepted = true`.

use cf_agent_sdk::llm::{self, CacheTtl, ContentBlock, ImageMediaType, Tool, ToolChoice};
use cf_agent_sdk::{Agent, AgentError, AgentInfo, AgentOutput, Task, context, export_agent, store};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The input of the `add` tool.
#[derive(Deserialize, JsonSchema)]
struct Add {
    /// The first term.
    a: i64,
    /// The second term.
    b: i64,
}

/// The input of the `remember` tool.
#[derive(Deserialize, JsonSchema)]
struct Remember {
    /// The key to store under.
    key: String,
    /// The value to store.
    value: String,
}

/// What the `structured` mode asks for: structured output's schema is an object.
#[derive(Serialize, Deserialize, JsonSchema)]
struct Findings {
    /// Every finding.
    findings: Vec<Finding>,
}

/// One finding of the `structured` mode.
#[derive(Serialize, Deserialize, JsonSchema)]
struct Finding {
    /// `critical`, `major` or `minor`.
    severity: String,
    /// The line it is about.
    line: u32,
    /// What is wrong.
    message: String,
}

const SYSTEM: &str = "You are a test agent. Use the tools when they help.";
const DEFAULT_PROMPT: &str = "Add 2 and 40 with the `add` tool, then remember the sum under \
the key `answer` with the `remember` tool, then say the sum.";
const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
const PDF_MAGIC: &[u8] = b"%PDF-1.7\n";
const MIB: usize = 1024 * 1024;

struct Contract2;

impl Agent for Contract2 {
    fn describe() -> AgentInfo {
        cf_agent_sdk::info(
            "contract2",
            "0.2.0",
            "Uses everything contract 0.2.0 added, and breaks its rules on purpose, for the host's tests.",
        )
    }

    fn run(task: Task) -> Result<AgentOutput, AgentError> {
        let prompt = if task.text.trim().is_empty() {
            DEFAULT_PROMPT.to_owned()
        } else {
            task.text.clone()
        };
        let request = llm::Request::new().user(prompt);
        match context(&task, "mode").unwrap_or("tools") {
            "tools" => tool_loop(
                request.system(SYSTEM),
                number(&task, "max_turns", 5)?,
                false,
            ),
            "thinking" => {
                let budget = number(&task, "budget", 2048)?;
                let request = request.system(SYSTEM).thinking(budget).max_tokens(4096);
                tool_loop(request, number(&task, "max_turns", 5)?, true)
            }
            "stream-forget" => {
                let mut stream = request.stream()?;
                stream.next_event()?;
                std::mem::forget(stream);
                Ok(AgentOutput {
                    text: "forgotten".into(),
                    metadata: Vec::new(),
                })
            }
            "stream-then-call" => {
                let mut first = request.clone().stream()?;
                first.next_event()?;
                let second = request.user("And again.").send()?;
                let mut text = String::new();
                for piece in &mut first {
                    text.push_str(&piece?);
                }
                let answer = first.finish()?;
                Ok(AgentOutput {
                    text: answer.text.clone(),
                    metadata: vec![
                        meta("text_matches", text == answer.text),
                        meta("second", second.text),
                    ],
                })
            }
            "stream-trap" => {
                let mut stream = request.stream()?;
                stream.next_event()?;
                stream.next_event()?;
                panic!("trapping in the middle of a stream");
            }
            "stream-spin" => {
                let mut stream = request.stream()?;
                stream.next_event()?;
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "structured" => structured(request),
            "stream" => {
                let request = if context(&task, "tools").is_some() {
                    request.tools(tools())
                } else {
                    request
                };
                let request = if context(&task, "thinking").is_some() {
                    request.thinking(2048).max_tokens(4096)
                } else {
                    request
                };
                stream(request)
            }
            "image" => {
                let size = number(&task, "size", 100)?;
                let sent = request.image(ImageMediaType::Png, magic_then_zeros(PNG_MAGIC, size));
                attachment(sent, size)
            }
            "pdf" => {
                let size = number(&task, "size", 100)?;
                let sent = request.document_pdf(magic_then_zeros(PDF_MAGIC, size), "test document");
                attachment(sent, size)
            }
            "cache" => cache(request),
            "endless" => {
                let ping = Tool::raw("ping", "Answers pong.", r#"{"type":"object"}"#, |_| {
                    Ok("pong".into())
                });
                tool_loop(
                    request.tool(ping).tool_choice(ToolChoice::Any),
                    u32::MAX,
                    false,
                )
            }
            "many-tools" => {
                let tools = (0..10_000)
                    .map(|i| Tool::raw(format!("tool_{i}"), "", r#"{"type":"object"}"#, noop))
                    .collect();
                refused(request.tools(tools))
            }
            "huge-image" => {
                refused(request.image(ImageMediaType::Png, magic_then_zeros(PNG_MAGIC, 50 * MIB)))
            }
            "bad-tool-name" => refused(request.tool(Tool::raw(
                "bad name!",
                "A name the contract does not allow.",
                r#"{"type":"object"}"#,
                noop,
            ))),
            "bad-schema" => refused(request.tool(Tool::raw(
                "bad_schema",
                "An input schema that is not a JSON object.",
                "[1,2]",
                noop,
            ))),
            "dangling-result" => refused(
                request
                    .tools(tools())
                    .assistant("Let me add them.")
                    .user_blocks(vec![ContentBlock::tool_result(
                        "toolu_matches_nothing",
                        Ok("42".into()),
                    )]),
            ),
            "five-breakpoints" => refused(
                request
                    .cache_breakpoint(CacheTtl::FiveMinutes)
                    .system(SYSTEM)
                    .cache_breakpoint(CacheTtl::FiveMinutes)
                    .tools(tools())
                    .cache_breakpoint(CacheTtl::FiveMinutes)
                    .assistant("Noted.")
                    .cache_breakpoint(CacheTtl::FiveMinutes)
                    .user("Go on.")
                    .cache_breakpoint(CacheTtl::FiveMinutes),
            ),
            "budget-too-big" => refused(request.thinking(4096).max_tokens(4096)),
            other => Err(AgentError::InvalidTask(format!("unknown mode {other:?}"))),
        }
    }
}

/// The two tools of the `tools` and `thinking` modes.
fn tools() -> Vec<Tool<'static>> {
    vec![
        Tool::new::<Add>("add", "Adds two integers; answers the sum.", |x| {
            x.a.checked_add(x.b)
                .map(|sum| sum.to_string())
                .ok_or_else(|| "the sum does not fit in 64 bits".into())
        }),
        Tool::new::<Remember>(
            "remember",
            "Stores a value under a key in the agent's store; answers `ok`.",
            |r| {
                store::set(&r.key, r.value.as_bytes(), None)
                    .map(|()| "ok".into())
                    .map_err(|e| format!("could not store it: {e}"))
            },
        ),
    ]
}

fn noop(_: serde_json::Value) -> Result<String, String> {
    Ok("ok".into())
}

fn tool_loop(
    request: llm::Request<'_>,
    max_turns: u32,
    thinking: bool,
) -> Result<AgentOutput, AgentError> {
    let run = request.tools(tools()).run_tools(max_turns)?;
    let mut metadata = vec![
        meta("turns", run.turns),
        meta("tool_calls", run.tool_calls),
        meta("input_tokens", run.usage.input_tokens),
        meta("output_tokens", run.usage.output_tokens),
        meta("max_turns_reached", run.max_turns_reached),
        meta("stop_reason", stop_reason(&run.response.stop_reason)),
    ];
    if thinking {
        let blocks: Vec<&str> = run.thinking().collect();
        metadata.push(meta("thinking", blocks.join("\n")));
        metadata.push(meta("thinking_blocks", blocks.len()));
    }
    Ok(AgentOutput {
        text: run.response.text,
        metadata,
    })
}

/// Streams the answer, emitting its text as it comes, and says what it saw: the
/// events' kinds in order, whether the text and tool inputs the deltas assembled equal
/// the finished answer's.
fn stream(request: llm::Request<'_>) -> Result<AgentOutput, AgentError> {
    use llm::{BlockDelta, ContentBlock, StreamEvent};
    let mut stream = request.stream()?;
    let mut kinds = Vec::new();
    let (mut text, mut inputs) = (String::new(), String::new());
    while let Some(event) = stream.next_event()? {
        kinds.push(match event {
            StreamEvent::MessageStart(_) => "start",
            StreamEvent::BlockStart(_) => "block-start",
            StreamEvent::BlockDelta(d) => match d.delta {
                BlockDelta::Text(t) => {
                    cf_agent_sdk::output::emit(&t);
                    text.push_str(&t);
                    "text"
                }
                BlockDelta::InputJson(j) => {
                    inputs.push_str(&j);
                    "input-json"
                }
                BlockDelta::Thinking(_) => "thinking",
                BlockDelta::Signature(_) => "signature",
            },
            StreamEvent::BlockStop(_) => "block-stop",
            StreamEvent::MessageDelta(_) => "delta",
        });
    }
    let answer = stream.finish()?;
    let whole_inputs: String = answer
        .content
        .iter()
        .filter_map(|b| match b {
            ContentBlock::ToolUse(u) => Some(u.input.as_str()),
            _ => None,
        })
        .collect();
    Ok(AgentOutput {
        text: answer.text.clone(),
        metadata: vec![
            meta("events", kinds.join(",")),
            meta("text_matches", text == answer.text),
            meta("inputs_match", inputs == whole_inputs),
            meta("stop_reason", stop_reason(&answer.stop_reason)),
        ],
    })
}

fn structured(request: llm::Request<'_>) -> Result<AgentOutput, AgentError> {
    let Findings { findings } = request
        .system("List the findings about the code in the user's message.")
        .structured()?;
    let json = serde_json::to_string(&findings)
        .map_err(|e| AgentError::Failed(format!("could not serialize the findings: {e}")))?;
    Ok(AgentOutput {
        text: format!("{} findings", findings.len()),
        metadata: vec![meta("findings", json)],
    })
}

fn attachment(request: llm::Request<'_>, size: usize) -> Result<AgentOutput, AgentError> {
    let answer = request.send()?;
    Ok(AgentOutput {
        text: answer.text,
        metadata: vec![
            meta("bytes", size),
            meta("input_tokens", answer.usage.input_tokens),
        ],
    })
}

fn cache(request: llm::Request<'_>) -> Result<AgentOutput, AgentError> {
    // The API reads breakpoints in the order tools, system, messages, and 1-hour
    // ones must come before 5-minute ones.
    let add = tools().swap_remove(0).cache_breakpoint(CacheTtl::OneHour);
    let answer = request
        .system(SYSTEM)
        .cache_breakpoint(CacheTtl::FiveMinutes)
        .tool(add)
        .send()?;
    let u = answer.usage;
    Ok(AgentOutput {
        text: answer.text,
        metadata: vec![
            meta("input_tokens", u.input_tokens),
            meta("output_tokens", u.output_tokens),
            meta("cache_write_5m_input_tokens", u.cache_write_5m_input_tokens),
            meta("cache_write_1h_input_tokens", u.cache_write_1h_input_tokens),
            meta("cache_read_input_tokens", u.cache_read_input_tokens),
        ],
    })
}

/// Sends a request the host should refuse; its error becomes the run's `llm` error.
fn refused(request: llm::Request<'_>) -> Result<AgentOutput, AgentError> {
    let answer = request.send()?;
    Ok(AgentOutput {
        text: answer.text,
        metadata: vec![meta("accepted", true)],
    })
}

/// `size` bytes: `magic` (cut to `size`), then zeros.
fn magic_then_zeros(magic: &[u8], size: usize) -> Vec<u8> {
    let mut bytes = vec![0; size];
    let n = magic.len().min(size);
    bytes[..n].copy_from_slice(&magic[..n]);
    bytes
}

/// A numeric context value, or `default` when absent.
fn number<T: std::str::FromStr>(task: &Task, key: &str, default: T) -> Result<T, AgentError> {
    match context(task, key) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| AgentError::InvalidTask(format!("context {key}={v:?} is not a number"))),
    }
}

fn meta(key: &str, value: impl ToString) -> (String, String) {
    (key.to_owned(), value.to_string())
}

/// The wire name of a stop reason.
fn stop_reason(r: &llm::StopReason) -> &str {
    match r {
        llm::StopReason::EndTurn => "end_turn",
        llm::StopReason::MaxTokens => "max_tokens",
        llm::StopReason::StopSequence(_) => "stop_sequence",
        llm::StopReason::ToolUse => "tool_use",
        llm::StopReason::PauseTurn => "pause_turn",
        llm::StopReason::Refusal => "refusal",
        llm::StopReason::ModelContextWindowExceeded => "model_context_window_exceeded",
        llm::StopReason::Other(other) => other,
    }
}

export_agent!(Contract2);
