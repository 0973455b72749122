//! Failures that are not retried, timeouts, and answers that cannot be understood:
//! each is a typed error, never a panic.

use crate::support::{builder, config, request, server, step};
use cf_llm::{AnthropicProvider, CallContext, Ledger, LlmError, LlmService};
use cf_mock_llm::Fault;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn one_call(server: &cf_mock_llm::MockServer, fault: Fault) -> (LlmError, u32) {
    server.push_fault(fault);
    let service = builder(server).build();
    let ledger = Ledger::unlimited();
    let e = step(
        "one failing call",
        Duration::from_secs(10),
        service.complete(&CallContext::new("a", &ledger), request("hi")),
    )
    .await
    .expect_err("the call fails");
    (e, ledger.totals().attempts)
}

#[tokio::test]
async fn bad_request_is_typed_and_not_retried() {
    let server = server(Duration::ZERO).await;
    let (e, attempts) = one_call(&server, Fault::invalid_request("max_tokens: too large")).await;
    assert_eq!(e, LlmError::InvalidRequest("max_tokens: too large".into()));
    assert_eq!(attempts, 1);
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn unauthorized_is_typed_and_not_retried() {
    let server = server(Duration::ZERO).await;
    let (e, attempts) = one_call(&server, Fault::unauthorized()).await;
    assert_eq!(e, LlmError::Authentication("invalid x-api-key".into()));
    assert_eq!(attempts, 1);
}

#[tokio::test]
async fn other_refusals_are_typed_and_not_retried() {
    for (status, kind, expected) in [
        (403, "permission_error", "permission"),
        (404, "not_found_error", "not_found"),
        (413, "request_too_large", "too_large"),
        (422, "invalid_request_error", "invalid_request"),
        (402, "billing_error", "permission"),
    ] {
        let server = server(Duration::ZERO).await;
        let (e, attempts) = one_call(&server, Fault::api_error(status, kind, "no", &[])).await;
        assert_eq!(
            (e.kind(), attempts),
            (expected, 1),
            "status {status}: {e:?}"
        );
    }
}

#[tokio::test]
async fn non_json_error_bodies_fall_back_to_the_status_line() {
    let server = server(Duration::ZERO).await;
    let fault = Fault::Status {
        status: 502,
        body: "<html>Bad Gateway</html>".into(),
        headers: vec![("x-should-retry".into(), "false".into())],
    };
    let (e, _) = one_call(&server, fault).await;
    assert_eq!(
        e,
        LlmError::Server {
            status: 502,
            message: "HTTP 502 Bad Gateway".into()
        }
    );
}

#[tokio::test]
async fn a_hang_longer_than_the_attempt_timeout_is_a_timeout_within_its_bound() {
    let server = server(Duration::ZERO).await;
    server.push_fault(Fault::Hang(Duration::from_secs(5)));
    let service = builder(&server)
        .attempt_timeout(Duration::from_millis(300))
        .max_retries(0)
        .build();
    let ledger = Ledger::unlimited();
    let start = Instant::now();
    let e = step(
        "hung server",
        Duration::from_secs(3),
        service.complete(&CallContext::new("a", &ledger), request("hi")),
    )
    .await
    .expect_err("times out");
    let elapsed = start.elapsed();
    assert!(e.is_timeout(), "{e:?}");
    assert!(
        elapsed >= Duration::from_millis(300),
        "timed out after {elapsed:?}, before the attempt timeout"
    );
    assert_eq!(ledger.totals().attempts, 1);
}

#[tokio::test]
async fn a_hang_is_retried_and_the_deadline_bounds_the_whole_call() {
    let server = server(Duration::ZERO).await;
    server.push_faults([
        Fault::Hang(Duration::from_secs(5)),
        Fault::Hang(Duration::from_secs(5)),
    ]);
    let service = builder(&server)
        .attempt_timeout(Duration::from_millis(200))
        .build();
    let ledger = Ledger::unlimited();
    let call = CallContext::new("a", &ledger)
        .with_deadline(tokio::time::Instant::now() + Duration::from_millis(1500));
    let e = step(
        "two hangs under a 1.5 s deadline",
        Duration::from_secs(4),
        service.complete(&call, request("hi")),
    )
    .await
    .expect_err("runs out of time");
    assert!(e.is_timeout(), "{e:?}");
    // The deadline ended it: the retries allow a third attempt, which would have been
    // answered (only two hangs were queued), but the backoff before it (at least
    // 0.375 + 0.75 s after two 200 ms timeouts) would end past the 1.5 s deadline.
    assert_eq!(ledger.totals().attempts, 2);
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn connection_refused_is_a_connection_error() {
    let server = server(Duration::ZERO).await;
    let config = config(&server);
    step("stop the server", Duration::from_secs(5), server.stop()).await;
    let service = LlmService::builder(Arc::new(
        AnthropicProvider::new(config).expect("valid config"),
    ))
    .max_retries(0)
    .build();
    let ledger = Ledger::unlimited();
    let e = step(
        "call a closed port",
        Duration::from_secs(5),
        service.complete(&CallContext::new("a", &ledger), request("hi")),
    )
    .await
    .expect_err("nobody listens");
    assert!(matches!(e, LlmError::Connection(_)), "{e:?}");
}

#[tokio::test]
async fn malformed_json_is_an_invalid_response() {
    let server = server(Duration::ZERO).await;
    let (e, attempts) = one_call(&server, Fault::Malformed).await;
    assert!(matches!(e, LlmError::InvalidResponse(_)), "{e:?}");
    assert_eq!(attempts, 1);
}

#[tokio::test]
async fn an_oversized_streamed_body_is_refused_while_it_streams() {
    let server = server(Duration::ZERO).await;
    let (e, _) = one_call(&server, Fault::Oversized(64 * 1024 * 1024)).await;
    assert!(
        matches!(&e, LlmError::InvalidResponse(m) if m.contains("cap of 8388608 bytes")),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_body_declared_larger_than_the_cap_is_refused() {
    let server = server(Duration::ZERO).await;
    let mut config = config(&server);
    config.max_response_bytes = 1024;
    let big = json!({"id": "m", "type": "message", "role": "assistant", "model": "x", "content": [{"type": "text", "text": "y".repeat(4096)}],
        "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 1}});
    server.push_fault(Fault::Response(big));
    let service = LlmService::builder(Arc::new(
        AnthropicProvider::new(config).expect("valid config"),
    ))
    .build();
    let ledger = Ledger::unlimited();
    let e = step(
        "a 4 KiB answer with a 1 KiB cap",
        Duration::from_secs(5),
        service.complete(&CallContext::new("a", &ledger), request("hi")),
    )
    .await
    .expect_err("refused");
    assert!(
        matches!(&e, LlmError::InvalidResponse(m) if m.contains("cap of 1024 bytes")),
        "{e:?}"
    );
}

#[tokio::test]
async fn empty_content_and_odd_bodies_are_invalid_responses() {
    let server = server(Duration::ZERO).await;
    let ok = json!({"id": "m", "type": "message", "role": "assistant", "model": "x", "content": [{"type": "text", "text": "y"}],
        "stop_reason": "end_turn", "usage": {"input_tokens": 1, "output_tokens": 1}});
    let mut wrong_type = ok.clone();
    wrong_type["type"] = json!("completion");
    // A block an answer never carries (server tools are not part of the contract).
    let mut no_text = ok.clone();
    no_text["content"] =
        json!([{"type": "server_tool_use", "id": "t", "name": "web_search", "input": {}}]);
    let mut no_usage = ok.clone();
    no_usage.as_object_mut().map(|o| o.remove("usage"));
    for fault in [
        Fault::EmptyContent,
        Fault::Response(wrong_type),
        Fault::Response(no_text),
        Fault::Response(no_usage),
        Fault::Response(json!([1, 2])),
    ] {
        let (e, attempts) = one_call(&server, fault.clone()).await;
        assert!(
            matches!(e, LlmError::InvalidResponse(_)),
            "{fault:?}: {e:?}"
        );
        assert_eq!(attempts, 1);
    }
}
