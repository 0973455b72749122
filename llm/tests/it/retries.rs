//! The retry policy, end to end: which failures are retried, how long the service
//! waits, and that no wait passes the deadline.

use crate::support::{builder, request, server, step};
use cf_llm::{CallContext, Ledger, LlmError};
use cf_mock_llm::Fault;
use std::time::{Duration, Instant};

#[tokio::test]
async fn rate_limit_with_retry_after_is_waited_out_then_succeeds() {
    let server = server(Duration::ZERO).await;
    server.push_fault(Fault::rate_limited(1));
    let service = builder(&server).build();
    let ledger = Ledger::unlimited();
    let start = Instant::now();
    let done = step(
        "429 then success",
        Duration::from_secs(10),
        service.complete(&CallContext::new("a", &ledger), request("hi")),
    )
    .await
    .expect("the retry succeeds");
    assert_eq!(done.attempts, 2);
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "waited {:?}, asked for 1 s",
        start.elapsed()
    );
    assert_eq!(server.requests(), 2);
    assert_eq!(ledger.totals().attempts, 2);
}

#[tokio::test]
async fn overloaded_twice_then_success_takes_three_attempts() {
    let server = server(Duration::ZERO).await;
    server.push_faults([Fault::overloaded(), Fault::overloaded()]);
    let service = builder(&server).build();
    let ledger = Ledger::unlimited();
    let done = step(
        "529, 529, 200",
        Duration::from_secs(10),
        service.complete(&CallContext::new("a", &ledger), request("hi")),
    )
    .await
    .expect("the third attempt succeeds");
    assert_eq!(done.attempts, 3);
    assert_eq!(server.requests(), 3);
}

#[tokio::test]
async fn server_errors_until_retries_run_out_return_the_last_error() {
    let server = server(Duration::ZERO).await;
    server.push_faults(std::iter::repeat_n(Fault::server_error(), 5));
    let service = builder(&server).max_retries(2).build();
    let ledger = Ledger::unlimited();
    let e = step(
        "500 × 3",
        Duration::from_secs(10),
        service.complete(&CallContext::new("a", &ledger), request("hi")),
    )
    .await
    .expect_err("retries run out");
    assert!(matches!(e, LlmError::Server { status: 500, .. }), "{e:?}");
    assert_eq!(server.requests(), 3);
    let t = ledger.totals();
    assert_eq!((t.attempts, t.failures, t.calls), (3, 1, 0));
}

#[tokio::test]
async fn connection_reset_is_retried() {
    let server = server(Duration::ZERO).await;
    server.push_fault(Fault::Reset);
    let service = builder(&server).build();
    let ledger = Ledger::unlimited();
    let done = step(
        "reset then success",
        Duration::from_secs(10),
        service.complete(&CallContext::new("a", &ledger), request("hi")),
    )
    .await
    .expect("the retry succeeds");
    assert_eq!(done.attempts, 2);
}

#[tokio::test]
async fn x_should_retry_false_stops_retries_of_a_500() {
    let server = server(Duration::ZERO).await;
    server.push_faults([
        Fault::server_error().with_header("x-should-retry", "false"),
        Fault::server_error(),
    ]);
    let service = builder(&server).build();
    let ledger = Ledger::unlimited();
    let e = step(
        "500 with x-should-retry: false",
        Duration::from_secs(5),
        service.complete(&CallContext::new("a", &ledger), request("hi")),
    )
    .await
    .expect_err("not retried");
    assert!(matches!(e, LlmError::Server { status: 500, .. }), "{e:?}");
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn x_should_retry_true_retries_a_400() {
    let server = server(Duration::ZERO).await;
    server.push_fault(
        Fault::invalid_request("try again")
            .with_header("x-should-retry", "true")
            .with_header("retry-after-ms", "10"),
    );
    let service = builder(&server).build();
    let ledger = Ledger::unlimited();
    let done = step(
        "400 with x-should-retry: true",
        Duration::from_secs(5),
        service.complete(&CallContext::new("a", &ledger), request("hi")),
    )
    .await
    .expect("retried");
    assert_eq!(done.attempts, 2);
}

#[tokio::test]
async fn retry_after_ms_is_preferred_over_retry_after() {
    let server = server(Duration::ZERO).await;
    server.push_fault(Fault::rate_limited(30).with_header("retry-after-ms", "100"));
    let service = builder(&server).build();
    let ledger = Ledger::unlimited();
    let start = Instant::now();
    let done = step(
        "429 with both headers",
        Duration::from_secs(10),
        service.complete(&CallContext::new("a", &ledger), request("hi")),
    )
    .await
    .expect("retried after 100 ms");
    assert_eq!(done.attempts, 2);
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(100), "waited {waited:?}");
}

#[tokio::test]
async fn retry_after_past_the_deadline_returns_at_once() {
    let server = server(Duration::ZERO).await;
    server.push_fault(Fault::rate_limited(30));
    let service = builder(&server).build();
    let ledger = Ledger::unlimited();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let call = CallContext::new("a", &ledger).with_deadline(deadline);
    let e = step(
        "429 asking for 30 s with 2 s left",
        Duration::from_secs(5),
        service.complete(&call, request("hi")),
    )
    .await
    .expect_err("gives up");
    assert_eq!(
        e,
        LlmError::RateLimited {
            retry_after: Some(Duration::from_secs(30)),
            message: "Number of request tokens has exceeded your per-minute rate limit".into()
        }
    );
    // Returned without waiting: a wait of 30 s would have ended at the deadline as a
    // timeout, not with the rate limit.
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn backoff_never_waits_past_the_deadline() {
    let server = server(Duration::ZERO).await;
    // Backoff after the first 529 is 0.375–0.5 s, after the second 0.75–1 s: with a
    // 1 s deadline the second wait cannot fit.
    server.push_faults(std::iter::repeat_n(Fault::overloaded(), 5));
    let service = builder(&server).max_retries(5).build();
    let ledger = Ledger::unlimited();
    let call = CallContext::new("a", &ledger)
        .with_deadline(tokio::time::Instant::now() + Duration::from_secs(1));
    let e = step(
        "529s under a 1 s deadline",
        Duration::from_secs(5),
        service.complete(&call, request("hi")),
    )
    .await
    .expect_err("gives up");
    // Gave up with the upstream's error: a backoff past the deadline would have ended
    // as a timeout.
    assert!(matches!(e, LlmError::Overloaded(_)), "{e:?}");
    assert_eq!(server.requests(), 2);
}
