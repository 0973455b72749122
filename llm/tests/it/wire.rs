//! Everything in a `Request` reaches the wire, and everything in an answer reaches
//! the `Response`.

use crate::support::{KEY, MODEL, builder, provider, request, server, step};
use cf_llm::{CallContext, Ledger, Message, Provider, Request, StopReason, Usage};
use cf_mock_llm::Fault;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn every_request_field_reaches_the_wire() {
    let server = server(Duration::ZERO).await;
    let service = builder(&server).build();
    let ledger = Ledger::unlimited();
    let mut r = Request::new(
        MODEL,
        321,
        vec![
            Message::user("first"),
            Message::assistant("answer"),
            Message::user("second \"quoted\" ünïcode"),
        ],
    );
    r.system = Some("You are terse.".into());
    r.temperature = Some(0.7);
    r.top_p = Some(0.9);
    r.top_k = Some(40);
    r.stop_sequences = vec!["STOP".into(), "\n\nHuman:".into()];
    r.user_id = Some("user-42".into());
    step(
        "one call",
        Duration::from_secs(5),
        service.complete(&CallContext::new("a", &ledger), r),
    )
    .await
    .expect("answered");

    let received = server.received();
    assert_eq!(received.len(), 1);
    let got = &received[0];
    assert_eq!(
        (got.method.as_str(), got.path.as_str()),
        ("POST", "/v1/messages")
    );
    assert_eq!(got.header("x-api-key"), Some(KEY));
    assert_eq!(got.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(
        got.body,
        json!({
            "model": MODEL,
            "max_tokens": 321,
            "system": "You are terse.",
            "messages": [
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "answer"},
                {"role": "user", "content": "second \"quoted\" ünïcode"},
            ],
            "temperature": 0.7,
            "top_p": 0.9,
            "top_k": 40,
            "stop_sequences": ["STOP", "\n\nHuman:"],
            "metadata": {"user_id": "user-42"},
        })
    );
}

#[tokio::test]
async fn unset_fields_are_left_out() {
    let server = server(Duration::ZERO).await;
    step(
        "one call",
        Duration::from_secs(5),
        provider(&server).send(&request("hi")),
    )
    .await
    .expect("answered");
    assert_eq!(
        server.received()[0].body,
        json!({"model": MODEL, "max_tokens": 256, "messages": [{"role": "user", "content": "hi"}]})
    );
}

#[tokio::test]
async fn every_response_field_reaches_the_response() {
    let server = server(Duration::ZERO).await;
    let provider = provider(&server);
    server.push_fault(Fault::Response(json!({
        "id": "msg_01XYZ",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [
            {"type": "thinking", "thinking": "…", "signature": "s"},
            {"type": "text", "text": "Hello, "},
            {"type": "text", "text": "world"},
        ],
        "stop_reason": "stop_sequence",
        "stop_sequence": "STOP",
        "usage": {"input_tokens": 11, "output_tokens": 22, "cache_creation_input_tokens": 33, "cache_read_input_tokens": 44},
    })));
    let r = step(
        "custom answer",
        Duration::from_secs(5),
        provider.send(&request("hi")),
    )
    .await
    .expect("answered");
    assert_eq!(r.id, "msg_01XYZ");
    assert_eq!(r.model, "claude-sonnet-4-5-20250929");
    assert_eq!(r.text, "Hello, world");
    assert_eq!(r.stop_reason, StopReason::StopSequence("STOP".into()));
    assert_eq!(
        r.usage,
        Usage {
            input_tokens: 11,
            output_tokens: 22,
            cache_creation_input_tokens: 33,
            cache_read_input_tokens: 44,
            cache_creation_1h_input_tokens: 0,
        }
    );

    for (reason, expected) in [
        ("max_tokens", StopReason::MaxTokens),
        ("refusal", StopReason::Refusal),
        ("end_turn", StopReason::EndTurn),
    ] {
        server.push_fault(Fault::Response(json!({"id": "m", "type": "message", "role": "assistant", "model": MODEL,
            "content": [{"type": "text", "text": "t"}], "stop_reason": reason, "stop_sequence": null,
            "usage": {"input_tokens": 1, "output_tokens": 1}})));
        let r = step(
            reason,
            Duration::from_secs(5),
            provider.send(&request("hi")),
        )
        .await
        .expect("answered");
        assert_eq!(r.stop_reason, expected);
        assert_eq!(
            r.usage.cache_read_input_tokens, 0,
            "absent cache counters are zero"
        );
    }
}

#[tokio::test]
async fn the_default_mock_answer_round_trips() {
    let server = server(Duration::ZERO).await;
    let r = step(
        "default answer",
        Duration::from_secs(5),
        provider(&server).send(&request("What is 2+2?")),
    )
    .await
    .expect("answered");
    assert_eq!(
        r.text,
        format!("[mock] model={MODEL} messages=1 last user message: \"What is 2+2?\"")
    );
    assert_eq!(
        r.usage.input_tokens,
        cf_mock_llm::estimate_tokens("What is 2+2?".len())
    );
    assert_eq!(r.stop_reason, StopReason::EndTurn);
    assert!(r.id.starts_with("msg_mock_"));
}
