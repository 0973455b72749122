//! Recording live calls to a cassette and replaying them with no server.

use crate::support::{KEY, MODEL, provider, request, server, step};
use cf_llm::{
    CallContext, Ledger, LlmError, LlmService, Message, Provider, RecordingProvider,
    ReplayProvider, Request,
};
use std::sync::Arc;
use std::time::Duration;

fn requests() -> Vec<Request> {
    let mut multi = Request::new(
        MODEL,
        64,
        vec![
            Message::user("one"),
            Message::assistant("two"),
            Message::user("three"),
        ],
    );
    multi.system = Some("sys".into());
    multi.temperature = Some(0.3);
    multi.stop_sequences = vec!["END".into()];
    vec![
        request("first question"),
        request("second question"),
        multi,
        request("first question"),
    ]
}

#[tokio::test]
async fn record_then_replay_gives_equal_responses_without_the_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cassette = dir.path().join("calls.jsonl");
    let server = server(Duration::ZERO).await;
    let recorder =
        Arc::new(RecordingProvider::new(provider(&server), &cassette).expect("open cassette"));
    assert_eq!(
        recorder.name(),
        "anthropic",
        "the recorder reports the inner provider's name"
    );
    let live_service = LlmService::builder(recorder.clone()).build();
    let ledger = Ledger::unlimited();
    let mut live = Vec::new();
    for r in requests() {
        let done = step(
            "live call",
            Duration::from_secs(5),
            live_service.complete(&CallContext::new("a", &ledger), r),
        )
        .await
        .expect("answered");
        live.push(done.response);
    }
    assert_ne!(
        live[0].id, live[3].id,
        "the same request answered twice live"
    );
    step("stop the server", Duration::from_secs(5), server.stop()).await;

    let text = std::fs::read_to_string(&cassette).expect("read cassette");
    assert_eq!(text.lines().count(), 4);
    assert!(
        !text.contains(KEY) && !text.contains("x-api-key"),
        "the cassette holds no key or header"
    );

    let replay = Arc::new(ReplayProvider::open(&cassette).expect("open cassette"));
    assert_eq!(replay.name(), "replay");
    let service = LlmService::builder(replay).build();
    for (r, expected) in requests().into_iter().zip(&live) {
        let done = step(
            "replayed call",
            Duration::from_secs(5),
            service.complete(&CallContext::new("a", &ledger), r),
        )
        .await
        .expect("replayed");
        assert_eq!(&done.response, expected);
        assert_eq!(done.cost.usd, 0.0, "replayed calls cost nothing");
    }
}

#[tokio::test]
async fn replay_of_an_unseen_request_fails_clearly_and_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cassette = dir.path().join("calls.jsonl");
    let server = server(Duration::ZERO).await;
    let recorder = RecordingProvider::new(provider(&server), &cassette).expect("open cassette");
    step(
        "record one call",
        Duration::from_secs(5),
        recorder.send(&request("recorded")),
    )
    .await
    .expect("answered");

    let service =
        LlmService::builder(Arc::new(ReplayProvider::open(&cassette).expect("open"))).build();
    let ledger = Ledger::unlimited();
    let mut unseen =
        request("never recorded, with a long first message that goes on and on and on and on");
    unseen.messages.push(Message::assistant("x"));
    unseen.messages.push(Message::user("y"));
    let e = step(
        "unseen request",
        Duration::from_secs(5),
        service.complete(&CallContext::new("a", &ledger), unseen),
    )
    .await
    .expect_err("not recorded");
    let LlmError::NotFound(message) = &e else {
        panic!("{e:?}")
    };
    assert!(
        message.starts_with("no recorded answer for this request in "),
        "{message}"
    );
    assert!(message.contains("calls.jsonl: model=claude-sonnet-4-5, 3 messages, first user message starts \"never recorded"), "{message}");
    assert_eq!(ledger.totals().attempts, 1, "not retried");
}
