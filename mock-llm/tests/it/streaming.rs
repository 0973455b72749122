//! Streaming: a request with `"stream": true` gets server-sent events that assemble to
//! the whole answer, cut and paced as configured, and broken by stream faults as
//! scripted. The SSE text is parsed by hand here, so the test trusts no SSE library.

use crate::support::{answer, request, search_tool, server, server_with, step};
use cf_mock_llm::{Fault, MockConfig, MockServer, Reply, StreamConfig, StreamFault};
use serde_json::{Value, json};
use std::time::Duration;

/// How long one step may take before the test fails.
const LIMIT: Duration = Duration::from_secs(10);

/// One parsed event: its `event:` type and its `data:` text.
#[derive(Debug, Clone)]
struct Event {
    kind: String,
    data: String,
}

impl Event {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {}", self.data))
    }
}

/// Splits SSE text on blank lines (`\n\n`, or `\r\n\r\n` when `crlf`) into events.
fn parse(text: &str, crlf: bool) -> Vec<Event> {
    let (eol, blank) = if crlf {
        ("\r\n", "\r\n\r\n")
    } else {
        ("\n", "\n\n")
    };
    assert!(
        text.ends_with(blank) || text.is_empty(),
        "cut stream: {text:?}"
    );
    text.split(blank)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let mut kind = None;
            let mut data = None;
            for line in e.split(eol) {
                if let Some(v) = line.strip_prefix("event: ") {
                    kind = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(v.to_owned());
                } else {
                    panic!("unexpected line {line:?} in {e:?}");
                }
            }
            Event {
                kind: kind.expect("an event line"),
                data: data.expect("a data line"),
            }
        })
        .collect()
}

fn kinds(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

/// `body` with `"stream": true`.
fn streamed(mut body: Value) -> Value {
    body["stream"] = json!(true);
    body
}

/// Sends `body` (which should ask for a stream); returns the response once its head
/// arrived.
async fn open(server: &MockServer, name: &str, body: &Value) -> reqwest::Response {
    let send = reqwest::Client::new()
        .post(server.url())
        .header("x-api-key", "sk-test")
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send();
    step(name, LIMIT, send).await.expect("the server answers")
}

/// Streams `body` to the end; returns the raw SSE text, checking the status and
/// content type.
async fn stream_text(server: &MockServer, name: &str, body: &Value) -> String {
    let response = open(server, name, body).await;
    assert_eq!(response.status(), 200, "{name}");
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "{name}"
    );
    step(name, LIMIT, response.text())
        .await
        .expect("a whole body")
}

/// Reads `response` until `n` whole events arrived; returns their text.
async fn read_events(response: &mut reqwest::Response, n: usize) -> String {
    let mut text = String::new();
    while text.matches("\n\n").count() < n {
        let chunk = step("read the next chunk", LIMIT, response.chunk())
            .await
            .expect("a chunk")
            .expect("more of the stream");
        text.push_str(std::str::from_utf8(&chunk).expect("UTF-8 chunk"));
    }
    text
}

/// The message the events describe, assembled as a client would.
fn assemble(events: &[Event]) -> Value {
    let mut message = Value::Null;
    let mut partial_json: Vec<String> = Vec::new();
    for event in events.iter().filter(|e| e.kind != "ping") {
        let data = event.json();
        assert_eq!(data["type"], event.kind.as_str(), "{data}");
        let index = data["index"].as_u64().unwrap_or(0) as usize;
        match event.kind.as_str() {
            "message_start" => message = data["message"].clone(),
            "content_block_start" => {
                let content = message["content"].as_array_mut().expect("content");
                assert_eq!(index, content.len(), "blocks start in order");
                content.push(data["content_block"].clone());
                partial_json.push(String::new());
            }
            "content_block_delta" => {
                let block = &mut message["content"][index];
                let delta = &data["delta"];
                let (field, piece) = match delta["type"].as_str().expect("a delta type") {
                    "text_delta" => ("text", &delta["text"]),
                    "thinking_delta" => ("thinking", &delta["thinking"]),
                    "signature_delta" => ("signature", &delta["signature"]),
                    "input_json_delta" => {
                        partial_json[index].push_str(delta["partial_json"].as_str().expect("str"));
                        continue;
                    }
                    other => panic!("unknown delta {other}"),
                };
                let so_far = block[field].as_str().unwrap_or_default();
                block[field] = json!(format!("{so_far}{}", piece.as_str().expect("str")));
            }
            "content_block_stop" => {
                let block = &mut message["content"][index];
                if block["type"] == "tool_use" {
                    assert_eq!(block["input"], json!({}), "a tool call starts empty");
                    block["input"] =
                        serde_json::from_str(&partial_json[index]).expect("tool input JSON");
                }
            }
            "message_delta" => {
                message["stop_reason"] = data["delta"]["stop_reason"].clone();
                message["stop_sequence"] = data["delta"]["stop_sequence"].clone();
                message["usage"] = data["usage"].clone();
            }
            "message_stop" => {}
            other => panic!("unexpected event {other}"),
        }
    }
    message
}

/// The same first request to two fresh servers (so ids and counters agree), one whole
/// and one streamed with `config`: the streamed one must assemble to the whole one.
async fn assert_streams_as_whole(
    name: &str,
    body: Value,
    config: StreamConfig,
    reply: Option<Reply>,
) {
    let fresh = || async {
        let server = server_with(MockConfig {
            stream: config.clone(),
            ..MockConfig::default()
        })
        .await;
        if let Some(reply) = reply.clone() {
            server.push_reply(reply);
        }
        server
    };
    let whole_server = fresh().await;
    let whole = answer(&whole_server, name, &body).await;
    let stream_server = fresh().await;
    let text = stream_text(&stream_server, name, &streamed(body)).await;
    let events = parse(&text, config.crlf);
    assert_eq!(kinds(&events).last(), Some(&"message_stop"), "{name}");
    assert_eq!(assemble(&events), whole, "{name}: {text}");
}

fn thinking_tool_request(text: &str) -> Value {
    let mut body = request(json!([{"role": "user", "content": text}]));
    body["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
    body["tools"] = json!([search_tool()]);
    body
}

#[tokio::test]
async fn a_text_answer_streams_in_order_with_deltas_of_the_configured_size() {
    let server = server_with(MockConfig {
        stream: StreamConfig {
            delta_chars: 5,
            ..StreamConfig::default()
        },
        ..MockConfig::default()
    })
    .await;
    let body = streamed(request(json!([{"role": "user", "content": "Say hello."}])));
    let events = parse(
        &stream_text(&server, "a streamed text answer", &body).await,
        false,
    );
    let kinds = kinds(&events);
    let deltas = kinds.len() - 5;
    assert!(deltas > 1, "{kinds:?}");
    let mut expected = vec!["message_start", "content_block_start"];
    expected.extend(std::iter::repeat_n("content_block_delta", deltas));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(kinds, expected);

    let start = events[0].json();
    assert_eq!(start["message"]["content"], json!([]));
    assert_eq!(start["message"]["stop_reason"], Value::Null);
    assert_eq!(start["message"]["usage"]["output_tokens"], 1);
    assert!(start["message"]["usage"]["input_tokens"].as_u64() > Some(0));
    assert_eq!(start["message"]["usage"]["cache_read_input_tokens"], 0);
    assert_eq!(
        events[1].json()["content_block"],
        json!({"type": "text", "text": ""})
    );
    let pieces: Vec<String> = events[2..2 + deltas]
        .iter()
        .map(|e| e.json()["delta"]["text"].as_str().expect("text").to_owned())
        .collect();
    let (last, full) = pieces.split_last().expect("deltas");
    assert!(full.iter().all(|p| p.chars().count() == 5), "{pieces:?}");
    assert!((1..=5).contains(&last.chars().count()), "{pieces:?}");
    let end = events[kinds.len() - 2].json();
    assert_eq!(end["delta"]["stop_reason"], "end_turn");
    assert!(end["usage"]["output_tokens"].as_u64() > Some(1), "{end}");
}

#[tokio::test]
async fn a_tool_call_and_thinking_stream_as_their_blocks() {
    let server = server().await;
    let text = stream_text(
        &server,
        "a streamed thinking tool call",
        &streamed(thinking_tool_request("Look it up.")),
    )
    .await;
    let events = parse(&text, false);
    let blocks: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            let data = e.json();
            let detail = match e.kind.as_str() {
                "content_block_start" => data["content_block"]["type"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                "content_block_delta" => data["delta"]["type"].as_str().unwrap_or("").to_owned(),
                _ => String::new(),
            };
            (e.kind.clone(), detail)
        })
        .collect();
    let mut collapsed: Vec<(String, String)> = Vec::new();
    for b in blocks {
        if collapsed.last() != Some(&b) {
            collapsed.push(b);
        }
    }
    let pair = |k: &str, d: &str| (k.to_owned(), d.to_owned());
    assert_eq!(
        collapsed,
        [
            pair("message_start", ""),
            pair("content_block_start", "thinking"),
            pair("content_block_delta", "thinking_delta"),
            pair("content_block_delta", "signature_delta"),
            pair("content_block_stop", ""),
            pair("content_block_start", "tool_use"),
            pair("content_block_delta", "input_json_delta"),
            pair("content_block_stop", ""),
            pair("message_delta", ""),
            pair("message_stop", ""),
        ],
        "{text}"
    );
    let tool_start = events
        .iter()
        .find(|e| e.kind == "content_block_start" && e.data.contains("tool_use"))
        .expect("a tool_use start")
        .json();
    assert_eq!(tool_start["index"], 1);
    assert_eq!(tool_start["content_block"]["name"], "search");
    assert_eq!(tool_start["content_block"]["input"], json!({}));
    let signatures = events
        .iter()
        .filter(|e| e.data.contains("signature_delta"))
        .count();
    assert_eq!(
        signatures, 1,
        "the signature comes whole, as the API sends it"
    );
    let end = events[events.len() - 2].json();
    assert_eq!(end["delta"]["stop_reason"], "tool_use");
}

#[tokio::test]
async fn streamed_answers_assemble_to_the_whole_answers() {
    let configs = [
        StreamConfig {
            delta_chars: 1,
            ..StreamConfig::default()
        },
        StreamConfig {
            delta_chars: 7,
            ping_every: 3,
            ..StreamConfig::default()
        },
        StreamConfig {
            delta_chars: 0,
            crlf: true,
            ..StreamConfig::default()
        },
    ];
    let mut structured = request(json!([{"role": "user", "content": "Describe a book."}]));
    structured["output_config"] = json!({"format": {"type": "json_schema", "schema":
        {"type": "object", "required": ["title", "year"],
         "properties": {"title": {"type": "string"}, "year": {"type": "integer"}}}}});
    let mut tools = request(json!([{"role": "user", "content": "Find «rust» ünïcode"}]));
    tools["tools"] = json!([search_tool()]);
    let cases: [(&str, Value, Option<Reply>); 5] = [
        (
            "text",
            request(json!([{"role": "user", "content": "Grüße, 世界!"}])),
            None,
        ),
        ("tool input", tools, None),
        (
            "thinking, signature and tool input",
            thinking_tool_request("Look it up."),
            None,
        ),
        ("structured output", structured, None),
        (
            "a scripted reply",
            request(json!([{"role": "user", "content": "Hi"}])),
            Some(Reply::text("naïve café — 😀 done").with_stop_reason("max_tokens")),
        ),
    ];
    for config in configs {
        for (name, body, reply) in &cases {
            let name = format!("{name} with {config:?}");
            assert_streams_as_whole(&name, body.clone(), config.clone(), reply.clone()).await;
        }
    }
}

#[tokio::test]
async fn crlf_mode_ends_every_line_with_crlf_and_pings_come_as_configured() {
    let server = server_with(MockConfig {
        stream: StreamConfig {
            crlf: true,
            ping_every: 2,
            ..StreamConfig::default()
        },
        ..MockConfig::default()
    })
    .await;
    let body = streamed(request(json!([{"role": "user", "content": "Hello"}])));
    let text = stream_text(&server, "a CRLF stream", &body).await;
    assert!(text.contains("\r\n\r\n"), "{text:?}");
    assert_eq!(
        text.matches('\n').count(),
        text.matches("\r\n").count(),
        "a bare LF in {text:?}"
    );
    let events = parse(&text, true);
    let kinds = kinds(&events);
    for (i, kind) in kinds.iter().enumerate() {
        let is_ping = *kind == "ping";
        assert_eq!(
            is_ping,
            i % 3 == 2,
            "a ping after every 2 events: {kinds:?}"
        );
    }
    assert_eq!(kinds.last(), Some(&"message_stop"));
}

#[tokio::test]
async fn an_error_event_ends_the_stream_after_the_events_before_it() {
    let server = server().await;
    server.push_fault(Fault::Stream(StreamFault::overloaded_after(2)));
    let body = streamed(request(json!([{"role": "user", "content": "Hello"}])));
    let events = parse(
        &stream_text(&server, "a stream with an error", &body).await,
        false,
    );
    assert_eq!(
        kinds(&events),
        ["message_start", "content_block_start", "error"]
    );
    let error = events[2].json();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "overloaded_error");
    assert_eq!(server.pending_faults(), 0);
}

#[tokio::test]
async fn a_dropped_stream_is_a_broken_body_for_the_client() {
    let server = server().await;
    server.push_fault_for("drop me", Fault::Stream(StreamFault::Drop { after: 3 }));
    let body = streamed(request(json!([{"role": "user", "content": "drop me"}])));
    let mut response = open(&server, "a stream that is dropped", &body).await;
    assert_eq!(response.status(), 200);
    let text = read_events(&mut response, 3).await;
    assert_eq!(
        kinds(&parse(&text, false)),
        [
            "message_start",
            "content_block_start",
            "content_block_delta"
        ]
    );
    let rest = step("read past the drop", LIMIT, async {
        loop {
            match response.chunk().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await;
    assert!(rest.is_err(), "the body must fail, got {rest:?}");
    // Another message is not dropped: the fault was keyed.
    let other = streamed(request(json!([{"role": "user", "content": "keep me"}])));
    let events = parse(
        &stream_text(&server, "a stream not dropped", &other).await,
        false,
    );
    assert_eq!(kinds(&events).last(), Some(&"message_stop"));
}

#[tokio::test]
async fn a_stall_outlasts_a_clients_idle_timeout_and_the_abandoned_stream_is_released() {
    let server = server_with(MockConfig {
        log_served: true,
        ..MockConfig::default()
    })
    .await;
    server.push_fault(Fault::Stream(StreamFault::Stall {
        after: 2,
        duration: Duration::from_secs(600),
    }));
    let body = streamed(request(json!([{"role": "user", "content": "Hello"}])));
    let mut response = open(&server, "a stream that stalls", &body).await;
    let text = read_events(&mut response, 2).await;
    assert_eq!(
        kinds(&parse(&text, false)),
        ["message_start", "content_block_start"]
    );
    assert_eq!(server.in_flight(), 1, "a stream mid-way is in flight");
    let idle = tokio::time::timeout(Duration::from_millis(200), response.chunk()).await;
    assert!(idle.is_err(), "the client's idle timeout fires: {idle:?}");
    drop(response);
    wait_until_released(&server).await;
    let served = server.served().pop().expect("served");
    assert!(served.abandoned, "the client went away: {served:?}");
}

#[tokio::test]
async fn a_client_that_drops_a_paced_stream_midway_is_released() {
    let server = server_with(MockConfig {
        stream: StreamConfig {
            delta_chars: 1,
            pace: Duration::from_millis(20),
            ..StreamConfig::default()
        },
        ..MockConfig::default()
    })
    .await;
    let body = streamed(request(json!([{"role": "user", "content": "Hello"}])));
    let mut response = open(&server, "a paced stream", &body).await;
    let text = read_events(&mut response, 3).await;
    assert_eq!(
        kinds(&parse(&text, false)),
        [
            "message_start",
            "content_block_start",
            "content_block_delta"
        ]
    );
    drop(response);
    wait_until_released(&server).await;
}

/// Polls the server's in-flight count until it is 0, failing after `LIMIT`.
async fn wait_until_released(server: &MockServer) {
    step("the server releases the stream", LIMIT, async {
        while server.in_flight() != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_stream_can_end_without_message_stop() {
    let server = server().await;
    server.push_fault(Fault::Stream(StreamFault::NoMessageStop));
    let body = streamed(request(json!([{"role": "user", "content": "Hello"}])));
    let events = parse(
        &stream_text(&server, "a stream cut short", &body).await,
        false,
    );
    let kinds = kinds(&events);
    assert_eq!(kinds.last(), Some(&"message_delta"), "{kinds:?}");
    assert!(!kinds.contains(&"message_stop"));
}

#[tokio::test]
async fn a_malformed_line_comes_after_the_given_events() {
    let server = server().await;
    server.push_fault(Fault::Stream(StreamFault::MalformedLine { after: 2 }));
    let body = streamed(request(json!([{"role": "user", "content": "Hello"}])));
    let events = parse(
        &stream_text(&server, "a stream with bad JSON", &body).await,
        false,
    );
    let bad: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| serde_json::from_str::<Value>(&e.data).is_err())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(bad, [2], "{events:?}");
    assert_eq!(kinds(&events).last(), Some(&"message_stop"));
}

#[tokio::test]
async fn a_stream_fault_on_a_whole_request_is_consumed_and_the_answer_is_whole() {
    let server = server().await;
    server.push_fault(Fault::Stream(StreamFault::Drop { after: 0 }));
    let body = request(json!([{"role": "user", "content": "Hello"}]));
    let whole = answer(&server, "a whole answer", &body).await;
    assert_eq!(whole["type"], "message");
    assert_eq!(server.pending_faults(), 0);
    assert_eq!(server.in_flight(), 0);
}
