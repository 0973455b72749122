//! Contract 0.2's shapes through the real client and the loopback server: a tool
//! loop of several turns, thinking signatures going back byte for byte, prompt-cache
//! breakpoints on the wire and the costs they produce, structured output, the
//! refusals that send nothing, and record/replay of a tool loop.

use crate::support::{MODEL, builder, provider, server, step};
use cf_llm::{
    CacheControl, CacheTtl, CallContext, Completion, Content, ContentBlock, Ledger, LlmError,
    LlmService, Message, RecordingProvider, ReplayProvider, Request, Role, StopReason, System,
    TextBlock, Thinking, Tool, ToolResultContent,
};
use cf_mock_llm::{MockServer, Reply, thinking_signature};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const ADD_SCHEMA: &str = r#"{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"}},"required":["a","b"]}"#;

fn add_tool() -> Tool {
    Tool {
        name: "add".into(),
        description: Some("Adds two integers.".into()),
        input_schema: ADD_SCHEMA.into(),
        strict: true,
        cache_control: None,
    }
}

async fn call(service: &LlmService, request: Request) -> Result<Completion, LlmError> {
    let ledger = Ledger::unlimited();
    step(
        "one call",
        Duration::from_secs(10),
        service.complete(&CallContext::new("agent", &ledger), request),
    )
    .await
}

fn blocks(role: Role, content: Vec<ContentBlock>) -> Message {
    Message {
        role,
        content: Content::Blocks(content),
    }
}

/// The tool results a client sends for every tool use of `answer`: `a + b`.
fn results_for(answer: &[ContentBlock]) -> Vec<ContentBlock> {
    answer
        .iter()
        .filter_map(|b| match b {
            ContentBlock::ToolUse { id, input, .. } => {
                let v: Value = serde_json::from_str(input).expect("the input is JSON");
                let sum = v["a"].as_i64().unwrap_or(0) + v["b"].as_i64().unwrap_or(0);
                Some(ContentBlock::ToolResult {
                    tool_use_id: id.clone(),
                    content: vec![ToolResultContent::Text(sum.to_string())],
                    is_error: false,
                    cache_control: None,
                })
            }
            _ => None,
        })
        .collect()
}

/// Three turns: two scripted tool uses (the second asks for two tools at once), then
/// the text answer. What the server received on each turn is the conversation so
/// far, tool inputs byte for byte and results matched to their uses.
#[tokio::test]
async fn a_tool_loop_of_three_turns_end_to_end() {
    let server = server(Duration::ZERO).await;
    server.push_replies([
        Reply::tool_use("add", json!({"a": 2, "b": 3})),
        Reply::blocks(
            vec![
                json!({"type": "text", "text": "Two more."}),
                json!({"type": "tool_use", "id": "toolu_x1", "name": "add", "input": {"a": 5, "b": 10}}),
                json!({"type": "tool_use", "id": "toolu_x2", "name": "add", "input": {"a": 1, "b": 1}}),
            ],
            "tool_use",
        ),
        Reply::text("The sums are 5, 15 and 2."),
    ]);
    let service = builder(&server).build();
    let mut request = Request::new(MODEL, 1024, vec![Message::user("Add some numbers.")]);
    request.tools = vec![add_tool()];
    let mut turns = 0;
    let answer = loop {
        turns += 1;
        let done = call(&service, request.clone()).await.expect("answered");
        let answer = done.response;
        if answer.stop_reason != StopReason::ToolUse {
            break answer;
        }
        let content = answer.blocks().into_owned();
        let results = results_for(&content);
        assert!(!results.is_empty(), "a tool-use answer holds tool uses");
        request.messages.push(blocks(Role::Assistant, content));
        request.messages.push(blocks(Role::User, results));
        assert!(turns < 5, "the loop ends");
    };
    assert_eq!(turns, 3);
    assert_eq!(answer.text, "The sums are 5, 15 and 2.");
    assert_eq!(server.requests(), 3);
    let sent: Vec<Value> = (0..3)
        .map(|i| server.received_body(i).expect("recorded"))
        .collect();
    assert_eq!(sent[0]["tools"][0]["name"], "add");
    assert_eq!(sent[0]["tools"][0]["strict"], true);
    assert_eq!(
        sent[0]["tools"][0]["input_schema"],
        serde_json::from_str::<Value>(ADD_SCHEMA).expect("schema")
    );
    assert_eq!(sent[1]["messages"].as_array().map(Vec::len), Some(3));
    let third = &sent[2]["messages"];
    assert_eq!(third.as_array().map(Vec::len), Some(5));
    // The second answer went back as it came: its text, then both uses.
    assert_eq!(third[3]["content"][0]["text"], "Two more.");
    assert_eq!(third[3]["content"][1]["input"], json!({"a": 5, "b": 10}));
    assert_eq!(third[4]["content"][0]["tool_use_id"], "toolu_x1");
    assert_eq!(third[4]["content"][0]["content"][0]["text"], "15");
    assert_eq!(third[4]["content"][1]["tool_use_id"], "toolu_x2");
}

/// A thinking block goes back with its signature; the server checks it, and a
/// changed one is refused by the server (the host cannot know a signature is bad).
#[tokio::test]
async fn thinking_signatures_make_the_round_trip() {
    let server = server(Duration::ZERO).await;
    let service = builder(&server).build();
    let mut request = Request::new(MODEL, 4096, vec![Message::user("Think, then add.")]);
    request.tools = vec![add_tool()];
    request.thinking = Some(Thinking::Enabled {
        budget_tokens: 2048,
    });
    let first = call(&service, request.clone())
        .await
        .expect("answered")
        .response;
    let content = first.blocks().into_owned();
    let Some(ContentBlock::Thinking {
        thinking,
        signature,
    }) = content.first().cloned()
    else {
        panic!("thinking comes first: {content:?}");
    };
    assert_eq!(signature, thinking_signature(&thinking));
    assert_eq!(first.stop_reason, StopReason::ToolUse);
    assert_eq!(
        server.received_body(0).expect("sent")["thinking"],
        json!({"type": "enabled", "budget_tokens": 2048})
    );
    let mut next = request.clone();
    next.messages.push(blocks(Role::Assistant, content.clone()));
    next.messages
        .push(blocks(Role::User, results_for(&content)));
    let second = call(&service, next.clone()).await.expect("accepted");
    assert_eq!(second.response.stop_reason, StopReason::EndTurn);
    // The same turn with one byte of the signature changed.
    let mut tampered = next;
    if let Content::Blocks(b) = &mut tampered.messages[1].content
        && let Some(ContentBlock::Thinking { signature, .. }) = b.first_mut()
    {
        signature.push('x');
    }
    let refused = call(&service, tampered).await.expect_err("refused");
    assert!(
        matches!(&refused, LlmError::InvalidRequest(m) if m.contains("signature")),
        "{refused:?}"
    );
}

/// Breakpoints reach the wire as `cache_control`; the server's first answer writes
/// the prefix (split by TTL), the second reads it, and each is priced at its rate.
#[tokio::test]
async fn cache_breakpoints_on_the_wire_and_their_costs() {
    let server = server(Duration::ZERO).await;
    let service = builder(&server).max_retries(0).build();
    let mut request = Request::new(MODEL, 64, vec![Message::user("Question one?")]);
    request.system = Some(System::Blocks(vec![TextBlock {
        text: "A long, stable system prompt. ".repeat(200),
        cache_control: Some(CacheControl::new(CacheTtl::OneHour)),
    }]));
    let mut tool = add_tool();
    tool.cache_control = Some(CacheControl::new(CacheTtl::OneHour));
    request.tools = vec![tool];
    let first = call(&service, request.clone()).await.expect("answered");
    let sent = server.received_body(0).expect("sent");
    assert_eq!(
        sent["system"][0]["cache_control"],
        json!({"type": "ephemeral", "ttl": "1h"})
    );
    assert_eq!(
        sent["tools"][0]["cache_control"],
        json!({"type": "ephemeral", "ttl": "1h"})
    );
    let u = first.response.usage;
    assert!(u.cache_creation_input_tokens > 1000, "{u:?}");
    assert_eq!(
        u.cache_creation_1h_input_tokens, u.cache_creation_input_tokens,
        "all written with the 1-hour TTL"
    );
    assert_eq!(u.cache_read_input_tokens, 0);
    // Sonnet 4.5: input 3, 1-hour write 6, read 0.30, output 15 per million.
    let expected = (u.input_tokens as f64 * 3.0
        + u.cache_creation_1h_input_tokens as f64 * 6.0
        + u.output_tokens as f64 * 15.0)
        / 1e6;
    assert!(
        (first.cost.usd - expected).abs() < 1e-12,
        "{} != {expected}",
        first.cost.usd
    );
    // The next question reads the same prefix.
    let mut again = request;
    again.messages = vec![Message::user("Question two?")];
    let second = call(&service, again).await.expect("answered");
    let u2 = second.response.usage;
    assert_eq!(u2.cache_read_input_tokens, u.cache_creation_input_tokens);
    assert_eq!(u2.cache_creation_input_tokens, 0);
    let expected = (u2.input_tokens as f64 * 3.0
        + u2.cache_read_input_tokens as f64 * 0.30
        + u2.output_tokens as f64 * 15.0)
        / 1e6;
    assert!((second.cost.usd - expected).abs() < 1e-12);
    assert!(
        second.cost.usd < first.cost.usd,
        "a read costs less than a write"
    );
}

/// Structured output: the schema goes out as `output_config.format`; the text that
/// comes back is what the server made of it (valid), or whatever a script says
/// (here not JSON, which is the agent's to detect: the host carries text).
#[tokio::test]
async fn structured_output_valid_and_invalid() {
    let server = server(Duration::ZERO).await;
    let service = builder(&server).build();
    let schema = r#"{"type":"object","properties":{"severity":{"type":"string","enum":["low","high"]},"line":{"type":"integer"}},"required":["severity","line"]}"#;
    let mut request = Request::new(MODEL, 256, vec![Message::user("Review this.")]);
    request.output_schema = Some(schema.into());
    let valid = call(&service, request.clone())
        .await
        .expect("answered")
        .response;
    let parsed: Value = serde_json::from_str(&valid.text).expect("the answer is JSON");
    assert_eq!(parsed["severity"], "low");
    assert!(parsed["line"].is_i64(), "{parsed}");
    assert_eq!(
        server.received_body(0).expect("sent")["output_config"]["format"],
        json!({"type": "json_schema", "schema": serde_json::from_str::<Value>(schema).expect("schema")})
    );
    server.push_reply(Reply::text("not json at all"));
    let mut other = request;
    other.messages = vec![Message::user("Review that.")];
    let invalid = call(&service, other).await.expect("answered").response;
    assert!(serde_json::from_str::<Value>(&invalid.text).is_err());
}

/// Every refusal of a malformed request: nothing reaches the server.
#[tokio::test]
async fn refusals_send_nothing() {
    let server = server(Duration::ZERO).await;
    let service = builder(&server).build();
    let base = || {
        let mut r = Request::new(MODEL, 2048, vec![Message::user("x")]);
        r.tools = vec![add_tool()];
        r
    };
    let mut bad_name = base();
    bad_name.tools[0].name = "add numbers".into();
    let mut bad_schema = base();
    bad_schema.tools[0].input_schema = "[1,2]".into();
    let mut dangling = base();
    dangling.messages = vec![blocks(
        Role::User,
        vec![ContentBlock::ToolResult {
            tool_use_id: "toolu_none".into(),
            content: Vec::new(),
            is_error: false,
            cache_control: None,
        }],
    )];
    let mut five = base();
    five.messages = vec![blocks(
        Role::User,
        (0..5)
            .map(|i| ContentBlock::Text {
                text: format!("part {i}"),
                cache_control: Some(CacheControl::new(CacheTtl::FiveMinutes)),
            })
            .collect(),
    )];
    let mut budget = base();
    budget.thinking = Some(Thinking::Enabled {
        budget_tokens: 2048,
    });
    for (what, request) in [
        ("tool name", bad_name),
        ("schema", bad_schema),
        ("dangling tool result", dangling),
        ("five breakpoints", five),
        ("thinking budget = max_tokens", budget),
    ] {
        let e = call(&service, request).await.expect_err(what);
        assert!(matches!(e, LlmError::InvalidRequest(_)), "{what}: {e:?}");
    }
    assert_eq!(server.requests(), 0, "nothing was sent");
}

/// A tool loop recorded live replays from the cassette with no server: equal
/// answers, tool uses included.
#[tokio::test]
async fn a_recorded_tool_loop_replays_without_the_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cassette = dir.path().join("loop.jsonl");
    let server: MockServer = server(Duration::ZERO).await;
    let recorder =
        Arc::new(RecordingProvider::new(provider(&server), &cassette).expect("open cassette"));
    let live = LlmService::builder(recorder).build();
    let mut request = Request::new(MODEL, 1024, vec![Message::user("Add 2 and 3.")]);
    request.tools = vec![add_tool()];
    let mut conversation = Vec::new();
    loop {
        let answer = call(&live, request.clone()).await.expect("live").response;
        conversation.push((request.clone(), answer.clone()));
        if answer.stop_reason != StopReason::ToolUse {
            break;
        }
        let content = answer.blocks().into_owned();
        request
            .messages
            .push(blocks(Role::Assistant, content.clone()));
        request
            .messages
            .push(blocks(Role::User, results_for(&content)));
    }
    assert_eq!(conversation.len(), 2, "one tool use, then the text answer");
    server.stop().await;
    let replay = LlmService::builder(Arc::new(
        ReplayProvider::open(&cassette).expect("read cassette"),
    ))
    .build();
    for (request, live_answer) in conversation {
        let replayed = call(&replay, request).await.expect("replayed").response;
        assert_eq!(replayed, live_answer);
    }
}
