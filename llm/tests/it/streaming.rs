//! Streamed answers through the real client: the provider asks for server-sent events
//! (`AnthropicConfig::stream_answers`), reads them with `SseReader` and hands out the
//! same answer the whole body gives; every failure in the middle of a stream is typed.

use crate::support::{KEY, MODEL, config, request, server, step};
use cf_llm::{
    AnthropicProvider, CallContext, ContentBlock, Ledger, LlmError, LlmService, Message, Request,
    StopReason, Thinking, Tool,
};
use cf_mock_llm::{Fault, MockConfig, MockServer, StreamConfig, StreamFault};
use std::sync::Arc;
use std::time::Duration;

fn service(server: &MockServer, stream: bool) -> LlmService {
    let mut c = config(server);
    c.stream_answers = stream;
    LlmService::builder(Arc::new(AnthropicProvider::new(c).expect("client")))
        .max_retries(0)
        .build()
}

async fn call(service: &LlmService, r: Request) -> Result<cf_llm::Response, LlmError> {
    let ledger = Ledger::unlimited();
    step(
        "a call",
        Duration::from_secs(10),
        service.complete(&CallContext::new("a", &ledger), r),
    )
    .await
    .map(|done| done.response)
}

fn requests() -> Vec<Request> {
    let mut tools = request("Add 2 and 3.");
    tools.tools = vec![Tool {
        name: "add".into(),
        description: None,
        input_schema: r#"{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"}},"required":["a","b"]}"#.into(),
        strict: false,
        cache_control: None,
    }];
    let mut thinking = Request::new(MODEL, 4096, vec![Message::user("Think first.")]);
    thinking.thinking = Some(Thinking::Enabled {
        budget_tokens: 2048,
    });
    vec![request("Say something — with ünïcode."), tools, thinking]
}

/// The same requests to two fresh servers, whole and streamed (deltas of 1 and 7
/// characters, CRLF, pings): equal answers, and the streamed ones really were streams.
#[tokio::test]
async fn streamed_answers_equal_whole_ones() {
    for stream_config in [
        StreamConfig {
            delta_chars: 1,
            ..StreamConfig::default()
        },
        StreamConfig {
            delta_chars: 7,
            ping_every: 2,
            crlf: true,
            ..StreamConfig::default()
        },
    ] {
        let whole = server(Duration::ZERO).await;
        let streamed = MockServer::start(MockConfig {
            stream: stream_config.clone(),
            ..MockConfig::default()
        })
        .await
        .expect("binds");
        for r in requests() {
            let a = call(&service(&whole, false), r.clone())
                .await
                .expect("whole");
            let b = call(&service(&streamed, true), r).await.expect("streamed");
            assert_eq!(a, b, "{stream_config:?}");
        }
        let last = streamed.last_body().expect("sent");
        assert_eq!(last["stream"], true);
        assert!(whole.last_body().expect("sent").get("stream").is_none());
    }
    // The tool use's input and the thinking block came through.
    let s = server(Duration::ZERO).await;
    let answers: Vec<_> = {
        let svc = service(&s, true);
        let mut v = Vec::new();
        for r in requests() {
            v.push(call(&svc, r).await.expect("streamed"));
        }
        v
    };
    assert_eq!(answers[1].stop_reason, StopReason::ToolUse);
    assert!(
        matches!(&answers[1].content[0], ContentBlock::ToolUse { input, .. } if input.contains("\"a\""))
    );
    assert!(matches!(
        &answers[2].content[0],
        ContentBlock::Thinking { .. }
    ));
}

/// What a case expects of the error.
type Expected = fn(&LlmError) -> bool;

/// Each failure in the middle of a stream is a typed error: the API's error event
/// (overloaded), a dropped connection, a stall past the attempt timeout, a stream
/// without `message_stop`, a malformed line.
#[tokio::test]
async fn failures_mid_stream_are_typed() {
    let s = server(Duration::ZERO).await;
    let timed = LlmService::builder(Arc::new(
        AnthropicProvider::new({
            let mut c = config(&s);
            c.stream_answers = true;
            c
        })
        .expect("client"),
    ))
    .max_retries(0)
    .attempt_timeout(Duration::from_millis(300))
    .build();
    let cases: Vec<(StreamFault, Expected)> = vec![
        (StreamFault::overloaded_after(3), |e| {
            matches!(e, LlmError::Overloaded(_))
        }),
        (StreamFault::Drop { after: 3 }, |e| {
            matches!(e, LlmError::Connection(_))
        }),
        (
            StreamFault::Stall {
                after: 3,
                duration: Duration::from_secs(5),
            },
            |e| matches!(e, LlmError::Timeout(_)),
        ),
        (
            StreamFault::NoMessageStop,
            |e| matches!(e, LlmError::InvalidResponse(m) if m.contains("message_stop")),
        ),
        (
            StreamFault::MalformedLine { after: 2 },
            |e| matches!(e, LlmError::InvalidResponse(m) if m.contains("malformed")),
        ),
    ];
    for (fault, expected) in cases {
        s.push_fault(Fault::Stream(fault.clone()));
        let e = call(&timed, request("x")).await.expect_err("fails");
        assert!(expected(&e), "{fault:?}: {e:?}");
        assert!(!e.to_string().contains(KEY));
    }
}
