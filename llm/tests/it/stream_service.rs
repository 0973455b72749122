//! `LlmService::stream` end to end against the loopback server: the events arrive in
//! order and assemble to the answer `complete` gives; a stream holds one permit from
//! its request to its end (or failure, or drop) and the concurrency limit bounds
//! streams as it bounds whole calls; retries happen only before the first event; a
//! failure after it is typed, releases everything, closes the connection and is never
//! cached; completed answers are cached and replayed as streams, and identical streams
//! in flight share one upstream call; the idle timeout and the deadline bound every
//! wait for an event, never the stream's length.

use crate::support::{KEY, MODEL, config, request, step};
use cf_cache::{CacheConfig, ResponseCache};
use cf_llm::{
    AnthropicProvider, BlockDelta, CallContext, Completion, CompletionStream, ContentBlock, Ledger,
    LlmError, LlmService, LlmServiceBuilder, Message, Request, StopReason, StreamEvent, Thinking,
    Tool,
};
use cf_mock_llm::{Fault, MockConfig, MockServer, StreamConfig, StreamFault};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The bound of one wait in these tests (a hang fails the test instead of blocking it).
const STEP: Duration = Duration::from_secs(20);

/// A mock server that streams as `stream` says and logs what it served.
async fn mock(stream: StreamConfig) -> MockServer {
    step(
        "start the mock server",
        Duration::from_secs(5),
        MockServer::start(MockConfig {
            stream,
            log_served: true,
            ..MockConfig::default()
        }),
    )
    .await
    .expect("bind 127.0.0.1")
}

/// A service builder over the Anthropic provider pointed at `server` (whole answers for
/// `complete`; `stream` always asks for events).
fn builder(server: &MockServer) -> LlmServiceBuilder {
    LlmService::builder(Arc::new(
        AnthropicProvider::new(config(server)).expect("client"),
    ))
}

/// `builder` with a fresh response cache in a temporary directory (kept alive by the
/// returned guard).
fn cached(builder: LlmServiceBuilder) -> (LlmService, TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = ResponseCache::open(CacheConfig::new(dir.path())).expect("open the cache");
    (builder.response_cache(cache, None).build(), dir)
}

/// Waits (bounded) until `cond` holds, failing with `what` otherwise.
async fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not true within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Opens a stream, bounded.
async fn open(
    service: &LlmService,
    call: &CallContext<'_>,
    r: Request,
) -> Result<CompletionStream, LlmError> {
    step("open a stream", STEP, service.stream(call, r)).await
}

/// Reads a stream to its end or its error: the events read, and how it ended.
async fn drain(stream: &mut CompletionStream) -> (Vec<StreamEvent>, Result<(), LlmError>) {
    let mut events = Vec::new();
    loop {
        match step("read an event", STEP, stream.next()).await {
            Ok(Some(event)) => events.push(event),
            Ok(None) => return (events, Ok(())),
            Err(e) => return (events, Err(e)),
        }
    }
}

/// The blocks the events build: each start, with its deltas appended.
fn assemble(events: &[StreamEvent]) -> Vec<ContentBlock> {
    let mut blocks: Vec<ContentBlock> = Vec::new();
    for event in events {
        match event {
            StreamEvent::BlockStart { index, block } => {
                assert_eq!(*index as usize, blocks.len(), "blocks start in order");
                blocks.push(block.clone());
            }
            StreamEvent::BlockDelta { index, delta } => {
                let block = blocks
                    .get_mut(*index as usize)
                    .unwrap_or_else(|| panic!("a delta of block {index}, not started"));
                match (block, delta) {
                    (ContentBlock::Text { text, .. }, BlockDelta::Text(d)) => text.push_str(d),
                    (ContentBlock::ToolUse { input, .. }, BlockDelta::InputJson(d)) => {
                        input.push_str(d);
                    }
                    (ContentBlock::Thinking { thinking, .. }, BlockDelta::Thinking(d)) => {
                        thinking.push_str(d);
                    }
                    (ContentBlock::Thinking { signature, .. }, BlockDelta::Signature(d)) => {
                        signature.push_str(d);
                    }
                    (block, delta) => panic!("a {delta:?} delta for {block:?}"),
                }
            }
            _ => {}
        }
    }
    blocks
}

/// The text deltas, concatenated.
fn text_of(events: &[StreamEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::BlockDelta {
                delta: BlockDelta::Text(t),
                ..
            } => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

/// Checks the shape of a whole answer's events: the start first, the message delta
/// last, and in between each block in index order as a start, its deltas, a stop.
fn assert_in_order(events: &[StreamEvent]) {
    assert!(
        matches!(events.first(), Some(StreamEvent::MessageStart { .. })),
        "the first event is the message start: {events:?}"
    );
    assert!(
        matches!(events.last(), Some(StreamEvent::MessageDelta { .. })),
        "the last event is the message delta: {events:?}"
    );
    // The block open now, and the next index to start.
    let mut open: Option<u32> = None;
    let mut next = 0u32;
    for event in &events[1..events.len() - 1] {
        match event {
            StreamEvent::BlockStart { index, .. } => {
                assert_eq!(open, None, "block {index} starts inside another");
                assert_eq!(*index, next, "blocks start in index order");
                open = Some(*index);
                next += 1;
            }
            StreamEvent::BlockDelta { index, .. } => {
                assert_eq!(open, Some(*index), "a delta outside its block")
            }
            StreamEvent::BlockStop(index) => {
                assert_eq!(open, Some(*index), "a stop of a block not open");
                open = None;
            }
            other => panic!("{other:?} in the middle of the answer"),
        }
    }
    assert_eq!(open, None, "every block stopped");
}

/// Checks that the deltas of text, thinking and tool input were cut into pieces of
/// `n` characters (the last of each block may be shorter), as the server sent them.
fn assert_cut_into(events: &[StreamEvent], n: usize) {
    let mut pieces: Vec<(u32, usize)> = Vec::new();
    for event in events {
        if let StreamEvent::BlockDelta { index, delta } = event {
            let len = match delta {
                BlockDelta::Text(s) | BlockDelta::Thinking(s) | BlockDelta::InputJson(s) => {
                    s.chars().count()
                }
                BlockDelta::Signature(_) => continue,
            };
            pieces.push((*index, len));
        }
    }
    assert!(!pieces.is_empty(), "no deltas at all");
    for (i, (index, len)) in pieces.iter().enumerate() {
        let last_of_block = pieces.get(i + 1).is_none_or(|(next, _)| next != index);
        if last_of_block {
            assert!(
                (1..=n).contains(len),
                "the last delta of block {index} has {len} characters (pieces of {n})"
            );
        } else {
            assert_eq!(*len, n, "a delta of block {index} (pieces of {n})");
        }
    }
}

/// The usage the message start reported.
fn start_usage(events: &[StreamEvent]) -> cf_llm::Usage {
    match events.first() {
        Some(StreamEvent::MessageStart { usage, .. }) => *usage,
        other => panic!("the first event is not the message start: {other:?}"),
    }
}

/// A text request, a tool request and a thinking request.
fn sample_requests() -> Vec<Request> {
    let mut tools = request("Add 2 and 3, then say what you did.");
    tools.tools = vec![Tool {
        name: "add".into(),
        description: Some("Adds two integers".into()),
        input_schema: r#"{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"}},"required":["a","b"]}"#.into(),
        strict: false,
        cache_control: None,
    }];
    let mut thinking = Request::new(
        MODEL,
        4096,
        vec![Message::user("Think first, then answer.")],
    );
    thinking.thinking = Some(Thinking::Enabled {
        budget_tokens: 2048,
    });
    vec![
        request("Say something — with ünïcode, at some length please."),
        tools,
        thinking,
    ]
}

/// What a case expects of an error.
type Expected = fn(&LlmError) -> bool;

/// Checks that an error says nothing of the API key.
fn assert_no_key(e: &LlmError) {
    assert!(!e.to_string().contains(KEY), "the key leaked: {e}");
    assert!(!format!("{e:?}").contains(KEY), "the key leaked: {e:?}");
}

/// 1. The events arrive in order, cut as the server cut them, and the stream's
/// assembled answer equals the one `complete` gets from an identical server, for text,
/// tool use and thinking, with deltas of 1 and 7 characters.
#[tokio::test]
async fn streamed_events_assemble_to_the_answer_complete_gives() {
    for delta_chars in [1, 7] {
        let stream_config = StreamConfig {
            delta_chars,
            ..StreamConfig::default()
        };
        let streamed = mock(stream_config.clone()).await;
        let whole = mock(stream_config).await;
        let streaming = builder(&streamed).build();
        let completing = builder(&whole).build();
        let ledger = Ledger::unlimited();
        let call = CallContext::new("a", &ledger);
        let mut answers = Vec::new();
        for r in sample_requests() {
            let what = format!("pieces of {delta_chars}, {:?}", r.messages[0]);
            let expected = step("complete", STEP, completing.complete(&call, r.clone()))
                .await
                .expect("the whole answer");

            let mut stream = open(&streaming, &call, r).await.expect("the stream opens");
            assert!(!stream.is_replay(), "{what}");
            assert!(!stream.is_ended(), "{what}");
            let (events, end) = drain(&mut stream).await;
            end.expect("the stream completes");
            assert!(stream.is_ended(), "{what}");
            let done = step("finish", STEP, stream.finish())
                .await
                .expect("finish after the end");

            assert_eq!(done.response, expected.response, "{what}");
            assert_eq!(done.attempts, 1, "{what}");
            assert!(!done.cached, "{what}");
            assert_eq!(done.cost, expected.cost, "{what}");
            assert_in_order(&events);
            assert_cut_into(&events, delta_chars);
            assert_eq!(
                assemble(&events),
                done.response.blocks().into_owned(),
                "{what}: the deltas build the answer's blocks"
            );
            assert_eq!(text_of(&events), done.response.text, "{what}");
            match events.last() {
                Some(StreamEvent::MessageDelta { stop_reason, usage }) => {
                    assert_eq!(stop_reason.as_ref(), Some(&done.response.stop_reason));
                    assert_eq!(*usage, done.response.usage, "{what}");
                }
                other => panic!("{what}: ends with {other:?}"),
            }
            if delta_chars == 1 {
                assert_eq!(
                    events
                        .iter()
                        .filter(|e| matches!(
                            e,
                            StreamEvent::BlockDelta {
                                delta: BlockDelta::Text(_),
                                ..
                            }
                        ))
                        .count(),
                    done.response.text.chars().count(),
                    "{what}: one text delta per character"
                );
            }
            // Read again after the end: still the end.
            assert_eq!(stream.next().await, Ok(None));
            assert_eq!(streaming.calls_in_flight(), 0, "{what}");
            answers.push(done.response);
        }
        // The tool and thinking answers have the blocks that make those cases matter.
        assert_eq!(answers[1].stop_reason, StopReason::ToolUse);
        assert!(matches!(
            &answers[1].content[0],
            ContentBlock::ToolUse { name, input, .. } if name == "add" && input.contains("\"a\"")
        ));
        assert!(matches!(
            &answers[2].content[0],
            ContentBlock::Thinking { thinking, signature } if !thinking.is_empty() && !signature.is_empty()
        ));
        let bodies = streamed.received();
        assert_eq!(bodies.len(), 3);
        assert!(bodies.iter().all(|b| b.body["stream"] == true));
        assert!(
            whole
                .received()
                .iter()
                .all(|b| b.body.get("stream").is_none())
        );
    }
}

/// 2. Each failure in the middle of a stream (after ≥ 2 events) is its typed error,
/// returned by `next` and again by `finish`; afterwards no permit is held, the server
/// is done with the request, nothing was cached (the same request reaches the server
/// again), the call was not retried, and the error does not carry the key.
#[tokio::test]
async fn failures_mid_stream_are_typed_release_everything_and_are_never_cached() {
    let server = mock(StreamConfig {
        delta_chars: 4,
        ..StreamConfig::default()
    })
    .await;
    let (service, _dir) = cached(builder(&server).idle_timeout(Duration::from_millis(300)));
    let cases: Vec<(&str, StreamFault, Expected)> = vec![
        ("overloaded", StreamFault::overloaded_after(3), |e| {
            matches!(e, LlmError::Overloaded(_))
        }),
        ("dropped", StreamFault::Drop { after: 3 }, |e| {
            matches!(e, LlmError::Connection(_))
        }),
        (
            "stalled",
            StreamFault::Stall {
                after: 3,
                // Much longer than the bounded poll below: the server only stops
                // counting the request early if the client closed the connection.
                duration: Duration::from_secs(60),
            },
            |e| matches!(e, LlmError::Timeout(m) if m.contains("idle")),
        ),
        (
            "no message_stop",
            StreamFault::NoMessageStop,
            |e| matches!(e, LlmError::InvalidResponse(m) if m.contains("message_stop")),
        ),
        (
            "malformed",
            StreamFault::MalformedLine { after: 3 },
            |e| matches!(e, LlmError::InvalidResponse(m) if m.contains("malformed")),
        ),
    ];
    for (name, fault, expected) in cases {
        let ledger = Ledger::unlimited();
        let call = CallContext::new("a", &ledger);
        let prompt = format!("the {name} case");
        let before = server.requests();
        server.push_fault(Fault::Stream(fault.clone()));

        let mut stream = open(&service, &call, request(&prompt))
            .await
            .unwrap_or_else(|e| panic!("{name}: the stream opens: {e:?}"));
        assert_eq!(
            service.calls_in_flight(),
            1,
            "{name}: the open stream holds a permit"
        );
        let (events, end) = drain(&mut stream).await;
        let e = end.expect_err(name);
        assert!(
            events.len() >= 2,
            "{name}: {} events before the fault",
            events.len()
        );
        assert!(expected(&e), "{name}: {e:?}");
        assert_no_key(&e);
        assert!(stream.is_ended(), "{name}");
        assert_eq!(
            stream.next().await,
            Err(e.clone()),
            "{name}: the error again"
        );
        assert_eq!(
            step("finish", STEP, stream.finish()).await,
            Err(e.clone()),
            "{name}: finish"
        );
        assert_eq!(
            service.calls_in_flight(),
            0,
            "{name}: the permit is released"
        );
        assert_eq!(server.requests(), before + 1, "{name}: not retried");
        eventually(
            &format!("{name}: the server is done with the stream"),
            Duration::from_secs(10),
            || server.in_flight() == 0,
        )
        .await;
        if matches!(fault, StreamFault::Stall { .. }) {
            let served = server.served().pop().expect("logged");
            assert!(
                served.abandoned,
                "{name}: the client closed the connection mid-stall: {served:?}"
            );
        }
        let totals = ledger.totals();
        assert_eq!(
            (totals.calls, totals.failures),
            (0, 1),
            "{name}: {totals:?}"
        );
        assert_eq!(totals.attempts, 1, "{name}: {totals:?}");
        drop(stream);

        // Nothing was cached: the same request goes to the server again, and its
        // complete answer is cached.
        let mut again = open(&service, &call, request(&prompt))
            .await
            .expect("opens");
        assert!(
            !again.is_replay(),
            "{name}: the interrupted answer was cached"
        );
        step("finish", STEP, again.finish())
            .await
            .unwrap_or_else(|e| panic!("{name}: the second try: {e:?}"));
        assert_eq!(server.requests(), before + 2, "{name}");
        let mut third = open(&service, &call, request(&prompt))
            .await
            .expect("opens");
        assert!(third.is_replay(), "{name}: a complete answer is cached");
        step("finish", STEP, third.finish())
            .await
            .expect("replayed");
        assert_eq!(server.requests(), before + 2, "{name}");
    }
    assert_eq!(service.calls_in_flight(), 0);
}

/// 3. A failure before the answer's content starts (an error event first or right
/// after `message_start`, a 529, a dropped connection, a stall past the idle timeout)
/// is retried and the stream then succeeds in 2 attempts; a failure once the content
/// has started is not retried.
#[tokio::test]
async fn failures_before_the_first_event_are_retried_and_after_it_are_not() {
    let server = mock(StreamConfig::default()).await;
    let service = builder(&server)
        .idle_timeout(Duration::from_millis(300))
        .build();
    let cases = [
        (
            "error event first",
            Fault::Stream(StreamFault::overloaded_after(0)),
        ),
        (
            "error event right after message_start",
            Fault::Stream(StreamFault::overloaded_after(1)),
        ),
        (
            "HTTP 529",
            Fault::overloaded().with_header("retry-after-ms", "10"),
        ),
        (
            "dropped before any event",
            Fault::Stream(StreamFault::Drop { after: 0 }),
        ),
        (
            "stalled before any event",
            Fault::Stream(StreamFault::Stall {
                after: 0,
                duration: Duration::from_secs(60),
            }),
        ),
    ];
    for (name, fault) in cases {
        let ledger = Ledger::unlimited();
        let call = CallContext::new("a", &ledger);
        server.reset_stats();
        server.push_fault(fault);
        let mut stream = open(&service, &call, request(name))
            .await
            .unwrap_or_else(|e| panic!("{name}: retried until it opens: {e:?}"));
        let (events, end) = drain(&mut stream).await;
        end.unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let done = step("finish", STEP, stream.finish()).await.expect(name);
        assert_eq!(done.attempts, 2, "{name}");
        assert_eq!(server.requests(), 2, "{name}");
        assert_eq!(text_of(&events), done.response.text, "{name}");
        let totals = ledger.totals();
        assert_eq!(
            (totals.calls, totals.attempts, totals.failures),
            (1, 2, 0),
            "{name}: {totals:?}"
        );
        assert_eq!(service.calls_in_flight(), 0, "{name}");
    }

    // Once the content has started: not retried.
    for after in [2, 3] {
        let ledger = Ledger::unlimited();
        let call = CallContext::new("a", &ledger);
        server.reset_stats();
        server.push_fault(Fault::Stream(StreamFault::overloaded_after(after)));
        let mut stream = open(&service, &call, request("mid-stream"))
            .await
            .expect("the first event arrives");
        let (events, end) = drain(&mut stream).await;
        assert_eq!(events.len(), after, "events before the error");
        assert!(
            matches!(end, Err(LlmError::Overloaded(_))),
            "after {after}: {end:?}"
        );
        assert_eq!(server.requests(), 1, "after {after}: not retried");
        let totals = ledger.totals();
        assert_eq!(
            (totals.calls, totals.attempts, totals.failures),
            (0, 1, 1),
            "{totals:?}"
        );
        assert_eq!(service.calls_in_flight(), 0);
    }
}

/// 4. A stream dropped after one event: its permit is free at once, the server sees
/// the connection closed, and the ledger charges one failed call with the usage the
/// message start reported.
#[tokio::test]
async fn a_stream_dropped_after_one_event_releases_its_permit_closes_and_is_charged() {
    let server = mock(StreamConfig::default()).await;
    // The server would go on for a minute: only a closed connection ends it sooner.
    server.push_fault(Fault::Stream(StreamFault::Stall {
        after: 2,
        duration: Duration::from_secs(60),
    }));
    let service = builder(&server).build();
    let ledger = Ledger::unlimited();
    let call = CallContext::new("a", &ledger);
    let mut stream = open(&service, &call, request("drop me"))
        .await
        .expect("opens");
    let first = step("the first event", STEP, stream.next())
        .await
        .expect("an event")
        .expect("not the end");
    let usage = start_usage(std::slice::from_ref(&first));
    assert!(usage.input_tokens > 0, "{first:?}");
    assert_eq!(service.calls_in_flight(), 1);
    assert_eq!(server.in_flight(), 1);

    drop(stream);
    assert_eq!(
        service.calls_in_flight(),
        0,
        "the permit is released with the drop"
    );
    eventually(
        "the server sees the connection closed",
        Duration::from_secs(10),
        || server.in_flight() == 0,
    )
    .await;
    let served = server.served().pop().expect("logged");
    assert!(served.abandoned, "the client went away: {served:?}");

    let totals = ledger.totals();
    assert_eq!((totals.calls, totals.failures), (0, 1), "{totals:?}");
    assert_eq!(totals.attempts, 1, "{totals:?}");
    assert_eq!(
        totals.usage.input_tokens, usage.input_tokens,
        "the input tokens of message_start are charged: {totals:?}"
    );
    assert_eq!(totals.usage, usage, "{totals:?}");
    assert!(totals.cost.usd > 0.0, "{totals:?}");
}

/// A stream dropped after some of its text is charged for that text at least (the
/// API says how many output tokens it generated only at the end): a guest cannot spend
/// past its budget by dropping its streams before their last event.
#[tokio::test]
async fn a_stream_dropped_mid_text_is_charged_for_the_text_received() {
    let server = mock(StreamConfig {
        delta_chars: 4,
        ..StreamConfig::default()
    })
    .await;
    server.push_fault(Fault::Stream(StreamFault::Stall {
        after: 6,
        duration: Duration::from_secs(60),
    }));
    let service = builder(&server).build();
    let ledger = Ledger::unlimited();
    let call = CallContext::new("a", &ledger);
    let mut stream = open(&service, &call, request("charge me"))
        .await
        .expect("opens");
    let mut text = String::new();
    let mut start = None;
    for _ in 0..6 {
        let event = step("an event", STEP, stream.next())
            .await
            .expect("an event")
            .expect("not the end");
        match event {
            StreamEvent::BlockDelta {
                delta: BlockDelta::Text(t),
                ..
            } => text.push_str(&t),
            StreamEvent::MessageStart { usage, .. } => start = Some(usage),
            _ => {}
        }
    }
    let start = start.expect("a message start");
    assert!(
        text.len() >= 12,
        "three deltas of 4 characters at least: {text:?}"
    );
    drop(stream);
    let totals = ledger.totals();
    let received = (text.len() as u64).div_ceil(cf_llm::BYTES_PER_TOKEN);
    assert!(
        received > start.output_tokens,
        "the text received is more than message_start reported: {received} vs {start:?}"
    );
    assert_eq!(
        totals.usage.output_tokens,
        received,
        "the output charged is the text received, {} bytes: {totals:?}",
        text.len()
    );
    assert_eq!(totals.failures, 1);
}

/// 5. 200 streams at once under a limit of 50, each paced so that they overlap: all
/// complete with their own answers, and the server saw at most 50 at once, and 50.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_streams_are_bounded_by_the_concurrency_limit() {
    let server = step(
        "start the mock server",
        Duration::from_secs(5),
        MockServer::start(MockConfig {
            stream: StreamConfig {
                delta_chars: 4,
                pace: Duration::from_millis(2),
                ..StreamConfig::default()
            },
            record: false,
            ..MockConfig::default()
        }),
    )
    .await
    .expect("bind");
    let service = builder(&server).max_concurrent(50).build();
    let ledger = Ledger::unlimited();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let service = service.clone();
        let ledger = ledger.clone();
        tasks.spawn(async move {
            let call = CallContext::new("a", &ledger);
            let prompt = format!("stream task {i:03}: answer at some length please");
            let mut stream = service.stream(&call, request(&prompt)).await?;
            let (events, end) = drain(&mut stream).await;
            end?;
            let done = stream.finish().await?;
            Ok::<_, LlmError>((prompt, events, done))
        });
    }
    let mut ok = 0;
    let all = step("200 streams", Duration::from_secs(120), async {
        while let Some(joined) = tasks.join_next().await {
            let (prompt, events, done) = joined.expect("task").expect("stream");
            assert!(
                done.response.text.contains(&prompt),
                "{prompt}: {}",
                done.response.text
            );
            assert_eq!(text_of(&events), done.response.text, "{prompt}");
            assert_in_order(&events);
            assert_eq!(done.attempts, 1);
            ok += 1;
        }
    });
    all.await;
    assert_eq!(ok, 200);
    assert_eq!(server.requests(), 200);
    let max = server.max_in_flight();
    assert!(max <= 50, "the server saw {max} streams at once, limit 50");
    assert_eq!(max, 50, "the limit was reached (it was the bound)");
    assert_eq!(service.calls_in_flight(), 0);
    assert_eq!(ledger.totals().calls, 200);
    eventually("the server is idle", Duration::from_secs(10), || {
        server.in_flight() == 0
    })
    .await;
}

/// 6. A cache hit is replayed as a stream: no request, no permit, the same answer.
#[tokio::test]
async fn a_cache_hit_is_replayed_as_a_stream_without_a_permit() {
    let server = mock(StreamConfig {
        delta_chars: 3,
        ..StreamConfig::default()
    })
    .await;
    let (service, _dir) = cached(builder(&server));
    let ledger = Ledger::unlimited();
    let call = CallContext::new("a", &ledger);
    for r in sample_requests() {
        server.reset_stats();
        let mut first = open(&service, &call, r.clone()).await.expect("opens");
        assert!(!first.is_replay());
        let (first_events, end) = drain(&mut first).await;
        end.expect("completes");
        let first = step("finish", STEP, first.finish())
            .await
            .expect("completes");
        assert!(!first.cached);

        let mut second = open(&service, &call, r).await.expect("opens");
        assert!(second.is_replay(), "a cache hit is a replay");
        assert_eq!(service.calls_in_flight(), 0, "a replay holds no permit");
        let mut events = Vec::new();
        while let Some(event) = step("replay", STEP, second.next()).await.expect("replay") {
            assert_eq!(service.calls_in_flight(), 0, "a replay holds no permit");
            events.push(event);
        }
        assert!(second.is_replay());
        assert!(second.is_ended());
        let replayed = step("finish", STEP, second.finish())
            .await
            .expect("replayed");
        assert_in_order(&events);
        assert_eq!(text_of(&events), first.response.text);
        assert_eq!(text_of(&events), text_of(&first_events));
        assert_eq!(assemble(&events), first.response.blocks().into_owned());
        assert_eq!(replayed.response, first.response);
        assert!(replayed.cached);
        assert_eq!(replayed.attempts, 0);
        assert_eq!(server.requests(), 1, "the replay sent nothing");
    }
    let totals = ledger.totals();
    assert_eq!((totals.calls, totals.cache_hits), (6, 3), "{totals:?}");
}

/// 7. Identical streams started together share one upstream call: the follower is
/// replayed the leader's answer.
#[tokio::test]
async fn identical_streams_in_flight_share_one_upstream_call() {
    let server = mock(StreamConfig {
        delta_chars: 2,
        pace: Duration::from_millis(1),
        ..StreamConfig::default()
    })
    .await;
    let (service, _dir) = cached(builder(&server));
    let ledger = Ledger::unlimited();
    let call = CallContext::new("a", &ledger);
    let run = async || {
        let mut stream = service.stream(&call, request("together")).await?;
        let replay = stream.is_replay();
        let (events, end) = drain(&mut stream).await;
        end?;
        Ok::<_, LlmError>((replay, events, stream.finish().await?))
    };
    // `join!` polls the first before the second: the first is the leader (its
    // request on its way) when the second looks for an identical call in flight.
    let (a, b) = step("two identical streams", STEP, async {
        tokio::join!(run(), run())
    })
    .await;
    let (a_replay, a_events, a) = a.expect("the leader");
    let (b_replay, b_events, b) = b.expect("the follower");
    assert_eq!(server.requests(), 1, "one upstream call");
    assert_eq!(a.response, b.response, "equal answers");
    assert_eq!(text_of(&a_events), text_of(&b_events));
    assert!(!a_replay && !a.cached, "the first is the leader");
    assert!(b_replay && b.cached, "the second is replayed");
    assert_eq!(service.calls_in_flight(), 0);
    let totals = ledger.totals();
    assert_eq!((totals.calls, totals.cache_hits), (2, 1), "{totals:?}");
}

/// 7b. A leader dropped mid-stream does not leave its follower waiting or failed: the
/// follower makes its own call.
#[tokio::test]
async fn a_follower_of_a_dropped_leader_makes_its_own_call() {
    let server = mock(StreamConfig::default()).await;
    server.push_fault(Fault::Stream(StreamFault::Stall {
        after: 2,
        duration: Duration::from_secs(60),
    }));
    let (service, _dir) = cached(builder(&server));
    let ledger = Ledger::unlimited();
    let call = CallContext::new("a", &ledger);
    let leader = async {
        let mut stream = service.stream(&call, request("together")).await?;
        stream.next().await?;
        drop(stream);
        Ok::<_, LlmError>(())
    };
    let follower = async {
        let mut stream = service.stream(&call, request("together")).await?;
        let replay = stream.is_replay();
        Ok::<_, LlmError>((replay, stream.finish().await?))
    };
    let (a, b) = step("a dropped leader and its follower", STEP, async {
        tokio::join!(leader, follower)
    })
    .await;
    a.expect("the leader reads one event");
    let (replay, done) = b.expect("the follower gets an answer");
    assert!(!replay, "nothing to replay: the follower called itself");
    assert_eq!(done.attempts, 1);
    assert_eq!(server.requests(), 2);
    assert_eq!(service.calls_in_flight(), 0);
}

/// 8. The deadline reached in the middle of a slow stream: a timeout, the permit
/// released, the connection closed.
#[tokio::test]
async fn a_deadline_reached_mid_stream_is_a_timeout() {
    let server = mock(StreamConfig {
        delta_chars: 1,
        pace: Duration::from_millis(200),
        ..StreamConfig::default()
    })
    .await;
    let service = builder(&server).build();
    let ledger = Ledger::unlimited();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    let call = CallContext::new("a", &ledger).with_deadline(deadline);
    let mut stream = open(&service, &call, request("slowly"))
        .await
        .expect("the first event comes at once");
    let (events, end) = drain(&mut stream).await;
    let e = end.expect_err("the deadline comes first");
    assert!(
        matches!(&e, LlmError::Timeout(m) if m.contains("deadline")),
        "{e:?}"
    );
    assert!(
        events.len() >= 2,
        "the deadline came mid-stream, after {} events",
        events.len()
    );
    assert!(tokio::time::Instant::now() >= deadline);
    assert_eq!(service.calls_in_flight(), 0, "the permit is released");
    assert_eq!(server.requests(), 1, "not retried");
    // The whole stream would take ~16 s: only a closed connection ends it sooner.
    eventually(
        "the server sees the connection closed",
        Duration::from_secs(8),
        || server.in_flight() == 0,
    )
    .await;
    let totals = ledger.totals();
    assert_eq!((totals.calls, totals.failures), (0, 1), "{totals:?}");
    assert_eq!(
        step("finish", STEP, stream.finish()).await,
        Err(e),
        "finish repeats the error"
    );
}

/// 9. The idle timeout bounds each wait, not the stream: a stream paced below it
/// completes in one attempt however long it takes; a stall past it is a timeout. The
/// idle timeout defaults to the attempt timeout.
#[tokio::test]
async fn the_idle_timeout_bounds_each_wait_not_the_stream() {
    let server = mock(StreamConfig {
        delta_chars: 2,
        pace: Duration::from_millis(30),
        ..StreamConfig::default()
    })
    .await;
    let limit = Duration::from_millis(300);
    let services = [
        ("idle timeout", builder(&server).idle_timeout(limit).build()),
        (
            "attempt timeout as the idle default",
            builder(&server).attempt_timeout(limit).build(),
        ),
    ];
    for (name, service) in services {
        let ledger = Ledger::unlimited();
        let call = CallContext::new("a", &ledger);
        server.reset_stats();
        let start = Instant::now();
        let mut stream = open(&service, &call, request("a long answer, slowly"))
            .await
            .expect("opens");
        let (events, end) = drain(&mut stream).await;
        end.unwrap_or_else(|e| panic!("{name}: a paced stream completes: {e:?}"));
        let done: Completion = step("finish", STEP, stream.finish()).await.expect(name);
        let took = start.elapsed();
        assert!(
            took > limit * 2,
            "{name}: the stream took {took:?}, longer than the limit {limit:?}"
        );
        assert!(events.len() > 20, "{name}: {} events", events.len());
        assert_eq!(done.attempts, 1, "{name}: one attempt however long");
        assert_eq!(server.requests(), 1, "{name}");

        server.push_fault(Fault::Stream(StreamFault::Stall {
            after: 3,
            duration: Duration::from_secs(60),
        }));
        let mut stream = open(&service, &call, request("stalls"))
            .await
            .expect("opens");
        let (events, end) = drain(&mut stream).await;
        let e = end.expect_err("the stall is longer than the limit");
        assert!(matches!(&e, LlmError::Timeout(_)), "{name}: {e:?}");
        assert_eq!(events.len(), 3, "{name}");
        assert_eq!(server.requests(), 2, "{name}: not retried");
        assert_eq!(service.calls_in_flight(), 0, "{name}");
        eventually(
            &format!("{name}: the server sees the connection closed"),
            Duration::from_secs(10),
            || server.in_flight() == 0,
        )
        .await;
    }
}

/// 4b. A stream dropped before its first event was read: the service had already read
/// the message start (the provider reported the input tokens), so they are charged.
///
/// Fails today: `open_upstream` reads the message start ahead into `Source::Live::first`
/// but only `next` passes it through `observe`, so a stream dropped unread charges
/// zero tokens (see the report).
#[tokio::test]
async fn a_stream_dropped_before_reading_is_charged_the_input_already_reported() {
    let server = mock(StreamConfig::default()).await;
    server.push_fault(Fault::Stream(StreamFault::Stall {
        after: 2,
        duration: Duration::from_secs(60),
    }));
    let service = builder(&server).build();
    let ledger = Ledger::unlimited();
    let call = CallContext::new("a", &ledger);
    let stream = open(&service, &call, request("drop me unread"))
        .await
        .expect("opens");
    drop(stream);
    assert_eq!(service.calls_in_flight(), 0);
    let totals = ledger.totals();
    assert_eq!((totals.calls, totals.failures), (0, 1), "{totals:?}");
    assert!(
        totals.usage.input_tokens > 0,
        "the message start's input tokens are charged: {totals:?}"
    );
}

/// 5b. The permit is the stream's, not the request's: with a limit of 1, a second
/// stream waits while the first is open (even once the server has sent everything),
/// and starts when the first ends.
#[tokio::test]
async fn an_open_stream_keeps_its_permit_until_it_ends() {
    let server = mock(StreamConfig::default()).await;
    let service = builder(&server).max_concurrent(1).build();
    let ledger = Ledger::unlimited();
    let call = CallContext::new("a", &ledger);
    let mut first = open(&service, &call, request("first"))
        .await
        .expect("opens");
    step("an event", STEP, first.next())
        .await
        .expect("an event")
        .expect("not the end");
    // The server sent the whole (unpaced) answer: it is done, the stream is not.
    eventually(
        "the server sent everything",
        Duration::from_secs(10),
        || server.in_flight() == 0,
    )
    .await;
    assert_eq!(service.calls_in_flight(), 1);

    let second = tokio::spawn({
        let service = service.clone();
        let ledger = ledger.clone();
        async move {
            let call = CallContext::new("a", &ledger);
            let mut stream = service.stream(&call, request("second")).await?;
            stream.finish().await
        }
    });
    eventually(
        "the second stream waits for the permit",
        Duration::from_secs(10),
        || service.calls_waiting() == 1,
    )
    .await;
    assert_eq!(server.requests(), 1, "the second has not been sent");

    let (_, end) = drain(&mut first).await;
    end.expect("the first completes");
    let done = step("the second stream", STEP, second)
        .await
        .expect("task")
        .expect("the second completes");
    assert!(done.queue_wait > Duration::ZERO);
    assert_eq!(server.requests(), 2);
    assert_eq!(service.calls_in_flight(), 0);
    assert_eq!(service.calls_waiting(), 0);
}

/// 7c. A leader that fails after its first event cannot retry (it handed events out),
/// but its follower has handed out nothing: like the follower of a dropped leader, it
/// should make its own call rather than inherit a transient failure it never had.
///
/// Fails today: `CompletionStream::fail` publishes the leader's mid-stream error to the
/// flight, so the follower returns `Overloaded` with no attempt of its own (see the
/// report).
#[tokio::test]
async fn a_follower_of_a_leader_failed_mid_stream_makes_its_own_call() {
    let server = mock(StreamConfig::default()).await;
    server.push_fault(Fault::Stream(StreamFault::overloaded_after(3)));
    let (service, _dir) = cached(builder(&server));
    let ledger = Ledger::unlimited();
    let call = CallContext::new("a", &ledger);
    let run = async || {
        let mut stream = service.stream(&call, request("together")).await?;
        stream.finish().await
    };
    // `join!` polls the first before the second: the first leads, the second follows.
    let (a, b) = step("a failing leader and its follower", STEP, async {
        tokio::join!(run(), run())
    })
    .await;
    assert!(matches!(a, Err(LlmError::Overloaded(_))), "{a:?}");
    let b = b.expect("the follower gets an answer of its own");
    assert_eq!(b.attempts, 1);
    assert_eq!(server.requests(), 2);
}
