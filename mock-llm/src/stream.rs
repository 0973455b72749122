//! Server-sent events: a whole answer cut into the Messages API's stream events, and
//! the stream faults that break such a stream part way.

use bytes::Bytes;
use serde_json::{Value, json};
use std::time::Duration;

/// How the server streams an answer to a request with `"stream": true` (see the crate
/// docs, "Streaming"). `StreamConfig::default()`: deltas of 16 characters, no pings,
/// no pause between events, lines ending in `\n`.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamConfig {
    /// Characters (not bytes) per `text_delta`, `thinking_delta` and
    /// `input_json_delta`; 0 sends each block's text in one delta. A
    /// `signature_delta` always carries the whole signature, as the API sends it.
    /// Default: 16.
    pub delta_chars: usize,
    /// A `ping` event after every this many other events (never after the last one);
    /// 0 sends none. Default: 0.
    pub ping_every: usize,
    /// The pause before each event after the first (on the server's precise timer).
    /// Default: none.
    pub pace: Duration,
    /// End lines with `\r\n` instead of `\n`. Default: off.
    pub crlf: bool,
    /// Cut the body into chunks of at most this many bytes, each sent on its own (the
    /// server yields between them, so the client reads partial lines and UTF-8
    /// characters split across reads); 0 sends each event in one chunk. Default 0.
    pub chunk_bytes: usize,
    /// With `chunk_bytes`, chunk sizes drawn from 1 to `chunk_bytes` by a generator
    /// seeded with this value (the same seed, the same cuts); `None` cuts every
    /// chunk `chunk_bytes` long. Default `None`.
    pub chunk_seed: Option<u64>,
    /// A pause drawn from `[0, first_token_jitter)` before each answer's first
    /// `content_block_delta`, as a model takes a varying time to its first token (so
    /// that streams started together do not deliver their tokens in lock-step).
    /// Default: none.
    pub first_token_jitter: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            delta_chars: 16,
            ping_every: 0,
            pace: Duration::ZERO,
            crlf: false,
            chunk_bytes: 0,
            chunk_seed: None,
            first_token_jitter: Duration::ZERO,
        }
    }
}

/// What goes wrong with a stream, scripted as [`Fault::Stream`](crate::Fault::Stream).
/// `after` counts the events sent before the fault (pings included); when the stream
/// has fewer, the fault comes after its last event.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamFault {
    /// After `after` events, an `error` event `{"type": "error", "error": {"type":
    /// kind, "message": message}}`; then the body ends (cleanly: the HTTP status
    /// stays 200).
    Error {
        /// Events sent first.
        after: usize,
        /// The error's type, e.g. `overloaded_error`.
        kind: String,
        /// The error's message.
        message: String,
    },
    /// After `after` events, the body fails: the server aborts the connection without
    /// ending the chunked body, so the client sees a broken body.
    Drop {
        /// Events sent first.
        after: usize,
    },
    /// After `after` events, no bytes for `duration`; then the rest of the stream.
    Stall {
        /// Events sent first.
        after: usize,
        /// How long the server sends nothing.
        duration: Duration,
    },
    /// The whole stream but its `message_stop`; the body ends cleanly.
    NoMessageStop,
    /// After `after` events, a `content_block_delta` event whose `data:` line is cut
    /// JSON (`{"type": "content_block_delta", "index": `); then the rest of the stream.
    MalformedLine {
        /// Events sent first.
        after: usize,
    },
}

impl StreamFault {
    /// An `overloaded_error` event after `after` events.
    pub fn overloaded_after(after: usize) -> Self {
        Self::error_after(after, "overloaded_error", "Overloaded")
    }

    /// An `error` event of type `kind` with `message` after `after` events.
    pub fn error_after(after: usize, kind: &str, message: &str) -> Self {
        Self::Error {
            after,
            kind: kind.to_owned(),
            message: message.to_owned(),
        }
    }
}

/// One step of a streamed body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    /// Send these bytes (one event, or a malformed one).
    Send(Bytes),
    /// Send nothing for this long.
    Wait(Duration),
    /// Fail the body: the connection is aborted.
    Fail,
    /// The next step sends the answer's first `content_block_delta`: note the time
    /// ([`Served::first_delta`](crate::Served::first_delta)).
    MarkFirstDelta,
}

/// The events of `answer` (a whole message as the server answers it), each as its
/// type and its `data` JSON, with pings every `ping_every` events.
pub(crate) fn events(
    answer: &Value,
    delta_chars: usize,
    ping_every: usize,
) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = Vec::new();
    let mut message = answer.clone();
    message["content"] = json!([]);
    message["stop_reason"] = Value::Null;
    message["stop_sequence"] = Value::Null;
    let mut usage = json!({});
    for field in [
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "cache_creation",
    ] {
        if let Some(v) = answer["usage"].get(field) {
            usage[field] = v.clone();
        }
    }
    usage["output_tokens"] = json!(1);
    message["usage"] = usage;
    out.push(event(
        "message_start",
        json!({"type": "message_start", "message": message}),
    ));
    let blocks = answer["content"].as_array().map_or(&[][..], Vec::as_slice);
    for (index, block) in blocks.iter().enumerate() {
        let delta = |kind: &str, field: &str, piece: &str| {
            event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": kind, field: piece}}),
            )
        };
        let (start, deltas): (Value, Vec<(String, Value)>) =
            match block["type"].as_str().unwrap_or_default() {
                "text" => (
                    json!({"type": "text", "text": ""}),
                    pieces(block["text"].as_str().unwrap_or_default(), delta_chars)
                        .map(|p| delta("text_delta", "text", p))
                        .collect(),
                ),
                "thinking" => {
                    let text = block["thinking"].as_str().unwrap_or_default();
                    let mut deltas: Vec<_> = pieces(text, delta_chars)
                        .map(|p| delta("thinking_delta", "thinking", p))
                        .collect();
                    if let Some(signature) = block["signature"].as_str() {
                        deltas.push(delta("signature_delta", "signature", signature));
                    }
                    (json!({"type": "thinking", "thinking": ""}), deltas)
                }
                "tool_use" => {
                    let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                    let input = input.to_string();
                    let mut start = block.clone();
                    start["input"] = json!({});
                    let deltas = pieces(&input, delta_chars)
                        .map(|p| delta("input_json_delta", "partial_json", p))
                        .collect();
                    (start, deltas)
                }
                // Redacted thinking and anything else arrive whole in their start.
                _ => (block.clone(), Vec::new()),
            };
        out.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        out.extend(deltas);
        out.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
    }
    out.push(event(
        "message_delta",
        json!({"type": "message_delta",
            "delta": {"stop_reason": answer["stop_reason"], "stop_sequence": answer["stop_sequence"]},
            "usage": answer["usage"]}),
    ));
    out.push(event("message_stop", json!({"type": "message_stop"})));
    if ping_every == 0 {
        return out;
    }
    let last = out.len();
    let mut with_pings = Vec::with_capacity(last + last / ping_every);
    for (i, e) in out.into_iter().enumerate() {
        with_pings.push(e);
        if (i + 1) % ping_every == 0 && i + 1 < last {
            with_pings.push(event("ping", json!({"type": "ping"})));
        }
    }
    with_pings
}

fn event(kind: &str, data: Value) -> (String, Value) {
    (kind.to_owned(), data)
}

/// `s` cut into pieces of `n` characters (the last may be shorter); `s` whole when `n`
/// is 0; nothing when `s` is empty.
fn pieces(s: &str, n: usize) -> impl Iterator<Item = &str> {
    let mut rest = s;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = match n {
            0 => rest.len(),
            n => rest.char_indices().nth(n).map_or(rest.len(), |(i, _)| i),
        };
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

/// One event on the wire: `event: <kind>` and `data: <json>` lines, then a blank line.
fn frame(kind: &str, data: &str, crlf: bool) -> Bytes {
    let eol = if crlf { "\r\n" } else { "\n" };
    Bytes::from(format!("event: {kind}{eol}data: {data}{eol}{eol}"))
}

/// The steps of a streamed body for `answer`: its events as `config` cuts and paces
/// them, broken by `fault`.
pub(crate) fn steps(
    answer: &Value,
    config: &StreamConfig,
    fault: Option<&StreamFault>,
) -> Vec<Step> {
    let mut events = events(answer, config.delta_chars, config.ping_every);
    if matches!(fault, Some(StreamFault::NoMessageStop)) {
        events.retain(|(kind, _)| kind != "message_stop");
    }
    let send =
        |(kind, data): &(String, Value)| Step::Send(frame(kind, &data.to_string(), config.crlf));
    let mut out: Vec<Step> = Vec::new();
    let cut = |after: usize| after.min(events.len());
    match fault {
        None | Some(StreamFault::NoMessageStop) => out.extend(events.iter().map(send)),
        Some(StreamFault::Error {
            after,
            kind,
            message,
        }) => {
            out.extend(events[..cut(*after)].iter().map(send));
            let error = json!({"type": "error", "error": {"type": kind, "message": message}});
            out.push(send(&event("error", error)));
        }
        Some(StreamFault::Drop { after }) => {
            out.extend(events[..cut(*after)].iter().map(send));
            // Hyper sends nothing it holds once the body fails: let it flush first.
            out.push(Step::Wait(Duration::ZERO));
            out.push(Step::Fail);
        }
        Some(StreamFault::Stall { after, duration }) => {
            let (before, rest) = events.split_at(cut(*after));
            out.extend(before.iter().map(send));
            out.push(Step::Wait(*duration));
            out.extend(rest.iter().map(send));
        }
        Some(StreamFault::MalformedLine { after }) => {
            let (before, rest) = events.split_at(cut(*after));
            out.extend(before.iter().map(send));
            out.push(Step::Send(frame(
                "content_block_delta",
                r#"{"type": "content_block_delta", "index": "#,
                config.crlf,
            )));
            out.extend(rest.iter().map(send));
        }
    }
    let mut out = if config.pace.is_zero() {
        out
    } else {
        paced(out, config.pace)
    };
    let first_delta = out
        .iter()
        .position(|s| matches!(s, Step::Send(b) if b.starts_with(b"event: content_block_delta")));
    if let Some(at) = first_delta {
        out.insert(at, Step::MarkFirstDelta);
        if !config.first_token_jitter.is_zero() {
            let nanos = u64::try_from(config.first_token_jitter.as_nanos()).unwrap_or(u64::MAX);
            out.insert(
                at,
                Step::Wait(Duration::from_nanos(fastrand::u64(0..nanos))),
            );
        }
    }
    if config.chunk_bytes > 0 {
        return chunked(out, config.chunk_bytes, config.chunk_seed);
    }
    out
}

/// A pause of `pace` before each event after the first.
fn paced(out: Vec<Step>, pace: Duration) -> Vec<Step> {
    let mut paced = Vec::with_capacity(out.len() * 2);
    let mut sent = false;
    for step in out {
        if matches!(step, Step::Send(_)) {
            if sent {
                paced.push(Step::Wait(pace));
            }
            sent = true;
        }
        paced.push(step);
    }
    paced
}

/// Each event of `steps` cut into chunks of at most `max` bytes (sizes drawn from 1 to
/// `max` when `seed` is given), with a yield between two chunks of one event so that
/// they leave as separate writes; the pace still applies between events only.
fn chunked(steps: Vec<Step>, max: usize, seed: Option<u64>) -> Vec<Step> {
    let mut rng = seed.map(fastrand::Rng::with_seed);
    let mut out = Vec::with_capacity(steps.len());
    for step in steps {
        let Step::Send(bytes) = step else {
            out.push(step);
            continue;
        };
        let mut rest = bytes;
        let mut first = true;
        while !rest.is_empty() {
            let size = match &mut rng {
                Some(rng) => rng.usize(1..=max),
                None => max,
            };
            let chunk = rest.split_to(size.min(rest.len()));
            if !first {
                out.push(Step::Wait(Duration::ZERO));
            }
            first = false;
            out.push(Step::Send(chunk));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cut_on_char_boundaries() {
        let cut: Vec<&str> = pieces("héllo wörld", 3).collect();
        assert_eq!(cut, ["hél", "lo ", "wör", "ld"]);
        assert_eq!(pieces("abc", 0).collect::<Vec<_>>(), ["abc"]);
        assert_eq!(pieces("", 4).count(), 0);
    }

    /// Chunks are at most `chunk_bytes` long, put back together they are the body
    /// unchunked, a seed gives the same cuts every time, and the pace stays between
    /// events (not between the chunks of one).
    #[test]
    fn chunks_cut_the_same_body() {
        let answer = json!({"content": [{"type": "text", "text": "héllo wörld, a longer answer"}],
            "stop_reason": "end_turn", "stop_sequence": null, "usage": {"input_tokens": 3, "output_tokens": 1}});
        let bytes = |steps: &[Step]| -> Vec<u8> {
            steps
                .iter()
                .filter_map(|s| match s {
                    Step::Send(b) => Some(b.to_vec()),
                    _ => None,
                })
                .flatten()
                .collect()
        };
        let whole = steps(&answer, &StreamConfig::default(), None);
        let seeded = StreamConfig {
            chunk_bytes: 7,
            chunk_seed: Some(42),
            pace: Duration::from_millis(5),
            ..StreamConfig::default()
        };
        let cut = steps(&answer, &seeded, None);
        assert_eq!(bytes(&cut), bytes(&whole));
        let sizes: Vec<usize> = cut
            .iter()
            .filter_map(|s| match s {
                Step::Send(b) => Some(b.len()),
                _ => None,
            })
            .collect();
        assert!(sizes.iter().all(|n| (1..=7).contains(n)), "{sizes:?}");
        assert!(sizes.iter().any(|n| *n < 7), "sizes vary: {sizes:?}");
        assert_eq!(
            cut,
            steps(&answer, &seeded, None),
            "the same seed, the same cuts"
        );
        let paces = cut
            .iter()
            .filter(|s| matches!(s, Step::Wait(d) if !d.is_zero()))
            .count();
        let events = whole.iter().filter(|s| matches!(s, Step::Send(_))).count();
        assert_eq!(paces, events - 1, "one pause between two events");
        let fixed = StreamConfig {
            chunk_bytes: 1,
            ..StreamConfig::default()
        };
        assert!(
            steps(&answer, &fixed, None)
                .iter()
                .all(|s| !matches!(s, Step::Send(b) if b.len() != 1))
        );
    }

    #[test]
    fn pings_come_between_events_never_last() {
        let answer = json!({"content": [{"type": "text", "text": "ab"}],
            "stop_reason": "end_turn", "stop_sequence": null, "usage": {"input_tokens": 3, "output_tokens": 1}});
        // start, block start, 2 deltas, block stop, message delta, stop: 7 events.
        let kinds: Vec<String> = events(&answer, 1, 2).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_delta",
                "ping",
                "content_block_stop",
                "message_delta",
                "ping",
                "message_stop"
            ]
        );
    }

    #[test]
    fn a_fault_past_the_end_comes_after_the_last_event_and_pace_goes_between_sends() {
        let answer = json!({"content": [], "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 3, "output_tokens": 1}});
        let config = StreamConfig {
            pace: Duration::from_millis(1),
            ..StreamConfig::default()
        };
        let steps = steps(&answer, &config, Some(&StreamFault::Drop { after: 99 }));
        let shape: Vec<&str> = steps
            .iter()
            .map(|s| match s {
                Step::Send(_) => "send",
                Step::Wait(_) => "wait",
                Step::Fail => "fail",
                Step::MarkFirstDelta => "mark",
            })
            .collect();
        assert_eq!(
            shape,
            ["send", "wait", "send", "wait", "send", "wait", "fail"]
        );
    }
}
