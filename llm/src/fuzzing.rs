//! The properties the fuzz targets in `fuzz/` check, shared with the regression tests
//! that replay `fuzz/regressions/<target>/` on the stable toolchain. Not part of the
//! crate's API: every function panics when its property does not hold, which is how a
//! fuzzer learns of a bug.
//!
//! [`check_request_key`] builds requests with the `arbitrary` crate and needs the
//! `arbitrary` feature; [`check_anthropic_response`] reads its own simple layout.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::anthropic::{self, RetryHints};
use crate::pricing::PriceTable;
use crate::types::{LlmError, Response};

/// Statuses worth reaching often: success, and every status the classification names.
const STATUSES: &[u16] = &[
    200, 201, 204, 299, 400, 401, 402, 403, 404, 408, 409, 413, 422, 429, 500, 503, 529, 599,
];

/// The clock reading a `retry-after` date is compared with: fixed, for reproducible runs.
const NOW_SECS: u64 = 1_750_000_000;

/// The longest message of a classified failure: the API's message (at most 500
/// characters and `…`) plus the text around it.
const MAX_MESSAGE_CHARS: usize = 600;

/// The Anthropic provider's reading of an answer (status, headers, body) into a
/// [`Response`] or a classified failure, on an answer decoded from `data`:
///
/// * byte 0 picks the status: below 128 → 200; below 240 → one of [`STATUSES`]; else
///   the next two bytes, big endian, map onto 100–999;
/// * the rest, up to the first blank line (`\n\n`), is `name: value` header lines;
///   without a blank line there are no headers;
/// * what follows is the body.
///
/// Properties: nothing panics; only a 2xx answer gives a response, which survives the
/// JSON round trip the response cache makes, and whose tokens and cost the service can
/// total; a 2xx answer that is not a valid response is an `invalid_response` that is
/// not retried; any other status gives the documented kind, is retried exactly as the
/// status (or `x-should-retry`) says, carries the wait the headers ask for, and has a
/// bounded message.
pub fn check_anthropic_response(data: &[u8]) {
    let (status, rest) = match data.split_first() {
        None => (200, data),
        Some((&pick, rest)) if pick < 128 => (200, rest),
        Some((&pick, rest)) if pick < 240 => (STATUSES[usize::from(pick) % STATUSES.len()], rest),
        Some((_, rest)) => {
            let (raw, rest) = rest.split_at(rest.len().min(2));
            let raw = raw.iter().fold(0u16, |acc, &b| (acc << 8) | u16::from(b));
            (100 + raw % 900, rest)
        }
    };
    let (head, body) = match rest.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&rest[..at], &rest[at + 2..]),
        None => (&[][..], rest),
    };
    let mut headers = HeaderMap::new();
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (line[..colon].trim_ascii(), line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_SECS);
    let hints = RetryHints::from_headers(&headers, now);
    if let Some(wait) = hints.retry_after {
        assert!(!wait.is_zero(), "a zero wait was taken from {headers:?}");
    }
    let Ok(status) = StatusCode::from_u16(status) else {
        panic!("status {status} is outside 100–999");
    };
    let code = status.as_u16();
    match anthropic::interpret(status, &hints, Some(body)) {
        Ok(response) => {
            assert!(status.is_success(), "HTTP {code} gave a response");
            check_response_use(&response);
        }
        Err(failure) if status.is_success() => {
            assert!(
                matches!(failure.error, LlmError::InvalidResponse(_)),
                "HTTP {code} with a bad body gave {:?}",
                failure.error
            );
            assert!(
                !failure.retryable && failure.retry_after.is_none(),
                "{failure:?}"
            );
        }
        Err(failure) => {
            let kind = failure.error.kind();
            let expected = match code {
                400 | 422 => Some("invalid_request"),
                401 => Some("authentication"),
                402 | 403 => Some("permission"),
                404 => Some("not_found"),
                408 => Some("timeout"),
                413 => Some("too_large"),
                429 => Some("rate_limited"),
                529 => Some("overloaded"),
                _ => None,
            };
            match expected {
                Some(expected) => assert_eq!(kind, expected, "HTTP {code}"),
                // Any other status may be overloaded by its body, else by its range.
                None => {
                    let by_range = match code {
                        409 | 500.. => "server_error",
                        400..=499 => "invalid_request",
                        _ => "invalid_response",
                    };
                    assert!(
                        kind == by_range || kind == "overloaded",
                        "HTTP {code} gave {kind}"
                    );
                }
            }
            let retryable_by_status = matches!(code, 408 | 409 | 429) || code >= 500;
            assert_eq!(
                failure.retryable,
                hints.should_retry.unwrap_or(retryable_by_status),
                "HTTP {code}, hints {hints:?}"
            );
            assert_eq!(failure.retry_after, hints.retry_after, "the wait asked for");
            if let LlmError::RateLimited { retry_after, .. } = &failure.error {
                assert_eq!(*retry_after, hints.retry_after, "the wait of a 429");
            }
            let message = failure.error.to_string();
            assert!(
                message.chars().count() <= MAX_MESSAGE_CHARS,
                "a message of {} characters",
                message.chars().count()
            );
        }
    }
}

/// What the service does with a response: totals its tokens, prices it, and stores it
/// in the response cache as JSON, read back on a hit.
fn check_response_use(response: &Response) {
    let total = response.usage.total();
    assert!(
        total >= response.usage.output_tokens,
        "total tokens {total}"
    );
    let mut running = response.usage;
    running.add(&response.usage);
    assert!(running.total() >= total, "a running total went down");
    let cost = PriceTable::built_in().cost(&response.model, &response.usage);
    assert!(cost.usd >= 0.0, "cost {}", cost.usd);
    let stored = match serde_json::to_vec(response) {
        Ok(json) => json,
        Err(e) => panic!("a response cannot be stored: {e}"),
    };
    match serde_json::from_slice::<Response>(&stored) {
        Ok(back) => assert_eq!(&back, response, "a response changed in the cache"),
        Err(e) => panic!("a stored response does not read back: {e}"),
    }
}

#[cfg(feature = "arbitrary")]
pub use request_key::{arbitrary_request, check_request_key};

#[cfg(feature = "arbitrary")]
mod request_key {
    use arbitrary::{Arbitrary, Unstructured};

    use crate::caching::request_key;
    use crate::content::{Content, System, Thinking, Tool};
    use crate::provider::{BoxFuture, Provider, ProviderError};
    use crate::types::{LlmError, Message, Request, Response, Role};

    /// A provider that only has a name and an endpoint, the parts of a key it adds.
    #[derive(Debug, Clone, PartialEq)]
    struct Named {
        name: String,
        endpoint: String,
    }

    impl Provider for Named {
        fn name(&self) -> &str {
            &self.name
        }

        fn endpoint(&self) -> &str {
            &self.endpoint
        }

        fn send<'a>(
            &'a self,
            _request: &'a Request,
        ) -> BoxFuture<'a, Result<Response, ProviderError>> {
            Box::pin(async {
                Err(ProviderError::fatal(LlmError::NotFound(
                    "a provider for computing keys only".into(),
                )))
            })
        }
    }

    /// Everything a key is computed from.
    #[derive(Debug, Clone)]
    struct Keyed {
        provider: Named,
        namespace: String,
        request: Request,
    }

    impl Keyed {
        fn key(&self) -> cf_cache::CacheKey {
            request_key(&self.provider, &self.namespace, &self.request)
        }

        /// Equal in every field, floats by their bits (`0.0` and `-0.0` differ, a NaN
        /// equals itself): the equality the key must follow.
        fn same(&self, other: &Self) -> bool {
            let bits = |v: Option<f32>| v.map(f32::to_bits);
            let (a, b) = (&self.request, &other.request);
            self.provider == other.provider
                && self.namespace == other.namespace
                && a.model == b.model
                && a.max_tokens == b.max_tokens
                && a.system == b.system
                && a.messages == b.messages
                && bits(a.temperature) == bits(b.temperature)
                && bits(a.top_p) == bits(b.top_p)
                && a.top_k == b.top_k
                && a.stop_sequences == b.stop_sequences
                && a.user_id == b.user_id
                && a.tools == b.tools
                && a.tool_choice == b.tool_choice
                && a.disable_parallel_tool_use == b.disable_parallel_tool_use
                && a.thinking == b.thinking
                && a.effort == b.effort
                && a.output_schema == b.output_schema
        }
    }

    fn role(u: &mut Unstructured<'_>) -> arbitrary::Result<Role> {
        Ok(if bool::arbitrary(u)? {
            Role::User
        } else {
            Role::Assistant
        })
    }

    fn strings(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<String>> {
        let n = u.int_in_range(0..=3)?;
        (0..n).map(|_| String::arbitrary(u)).collect()
    }

    fn text(u: &mut Unstructured<'_>) -> arbitrary::Result<Content> {
        Ok(Content::Text(String::arbitrary(u)?))
    }

    fn system(u: &mut Unstructured<'_>) -> arbitrary::Result<Option<System>> {
        Ok(Option::<String>::arbitrary(u)?.map(System::Text))
    }

    /// The text of a text turn or a text system prompt, to edit in place.
    fn text_of(content: &mut Content) -> Option<&mut String> {
        match content {
            Content::Text(text) => Some(text),
            Content::Blocks(_) => None,
        }
    }

    fn tool(u: &mut Unstructured<'_>) -> arbitrary::Result<Tool> {
        Ok(Tool {
            name: String::arbitrary(u)?,
            description: Option::arbitrary(u)?,
            // Valid JSON (serialization needs it): an object with one arbitrary key.
            input_schema: serde_json::json!({ String::arbitrary(u)?: bool::arbitrary(u)? })
                .to_string(),
            strict: bool::arbitrary(u)?,
            cache_control: None,
        })
    }

    /// A request from arbitrary data: any text, any numbers (NaN included), up to
    /// four messages and three stop sequences.
    pub fn arbitrary_request(u: &mut Unstructured<'_>) -> arbitrary::Result<Request> {
        let n = u.int_in_range(0..=4)?;
        let messages = (0..n)
            .map(|_| {
                Ok(Message {
                    role: role(u)?,
                    content: text(u)?,
                })
            })
            .collect::<arbitrary::Result<Vec<_>>>()?;
        let mut request = Request::new(String::arbitrary(u)?, u32::arbitrary(u)?, messages);
        request.system = system(u)?;
        request.temperature = Option::arbitrary(u)?;
        request.top_p = Option::arbitrary(u)?;
        request.top_k = Option::arbitrary(u)?;
        request.stop_sequences = strings(u)?;
        request.user_id = Option::arbitrary(u)?;
        Ok(request)
    }

    fn keyed(u: &mut Unstructured<'_>) -> arbitrary::Result<Keyed> {
        Ok(Keyed {
            provider: Named {
                name: String::arbitrary(u)?,
                endpoint: String::arbitrary(u)?,
            },
            namespace: String::arbitrary(u)?,
            request: arbitrary_request(u)?,
        })
    }

    /// Changes one thing of `k`, chosen by `u`; says what.
    fn mutate(u: &mut Unstructured<'_>, k: &mut Keyed) -> arbitrary::Result<&'static str> {
        let r = &mut k.request;
        let n = r.messages.len();
        let pick = |u: &mut Unstructured<'_>| u.choose_index(n);
        Ok(match u.int_in_range(0..=21)? {
            0 => {
                r.model = String::arbitrary(u)?;
                "model"
            }
            1 => {
                r.max_tokens = u32::arbitrary(u)?;
                "max_tokens"
            }
            2 => {
                r.system = system(u)?;
                "system"
            }
            3 if n > 0 => {
                let i = pick(u)?;
                r.messages[i].content = text(u)?;
                "a message's text"
            }
            4 if n > 0 => {
                let i = pick(u)?;
                r.messages[i].role = role(u)?;
                "a message's role"
            }
            5 => {
                r.messages.push(Message {
                    role: role(u)?,
                    content: text(u)?,
                });
                "one more message"
            }
            6 if n > 0 => {
                let i = pick(u)?;
                r.messages.remove(i);
                "one message fewer"
            }
            7 => {
                r.temperature = Option::arbitrary(u)?;
                "temperature"
            }
            8 => {
                r.top_p = Option::arbitrary(u)?;
                "top_p"
            }
            9 => {
                r.top_k = Option::arbitrary(u)?;
                "top_k"
            }
            10 => {
                r.stop_sequences = strings(u)?;
                "stop sequences"
            }
            11 => {
                r.stop_sequences.push(String::arbitrary(u)?);
                "one more stop sequence"
            }
            12 => {
                r.user_id = Option::arbitrary(u)?;
                "user_id"
            }
            13 => {
                k.namespace = String::arbitrary(u)?;
                "namespace"
            }
            14 => {
                k.provider.name = String::arbitrary(u)?;
                "provider"
            }
            15 => {
                k.provider.endpoint = String::arbitrary(u)?;
                "endpoint"
            }
            // The same text, split elsewhere: the first character of one message
            // moves to the end of the one before.
            16 if n > 1 => {
                let i = u.int_in_range(1..=n - 1)?;
                let moved = text_of(&mut r.messages[i].content).and_then(|t| {
                    let c = t.chars().next()?;
                    t.remove(0);
                    Some(c)
                });
                if let (Some(c), Some(before)) = (moved, text_of(&mut r.messages[i - 1].content)) {
                    before.push(c);
                }
                "a message boundary"
            }
            // Text moved between the system prompt and the first message.
            17 if n > 0 => {
                if let System::Text(system) =
                    r.system.get_or_insert_with(|| System::Text(String::new()))
                    && let Some(c) = system.pop()
                    && let Some(first) = text_of(&mut r.messages[0].content)
                {
                    first.insert(0, c);
                }
                "the system prompt's boundary"
            }
            18 => {
                r.tools.push(tool(u)?);
                "one more tool"
            }
            19 => {
                r.thinking = Some(Thinking::Enabled {
                    budget_tokens: u32::arbitrary(u)?,
                });
                "thinking"
            }
            20 => {
                r.output_schema = Some(String::arbitrary(u)?);
                "the output schema"
            }
            21 => {
                r.disable_parallel_tool_use = !r.disable_parallel_tool_use;
                "disable_parallel_tool_use"
            }
            _ => "nothing",
        })
    }

    /// The canonical request key, on requests built from `data`.
    ///
    /// Properties: the same request gives the same key however it was obtained (built
    /// twice from the same data, cloned, or — when its floats are finite, as JSON
    /// cannot carry others — through the serde round trip of cassettes); a request
    /// with one field changed gets another key exactly when the change made it
    /// different (floats compared by their bits), including text moved across a
    /// message or system-prompt boundary.
    pub fn check_request_key(data: &[u8]) {
        let mut u = Unstructured::new(data);
        let Ok(original) = keyed(&mut u) else {
            return;
        };
        let key = original.key();
        let Ok(again) = keyed(&mut Unstructured::new(data)) else {
            panic!("the same data built no request the second time");
        };
        assert!(original.same(&again), "building is deterministic");
        assert_eq!(again.key(), key, "the same request built twice");
        assert_eq!(original.clone().key(), key, "a clone");
        let r = &original.request;
        let finite = [r.temperature, r.top_p]
            .into_iter()
            .flatten()
            .all(f32::is_finite);
        if finite {
            let json = match serde_json::to_string(r) {
                Ok(json) => json,
                Err(e) => panic!("a request does not serialize: {e}"),
            };
            let back: Request = match serde_json::from_str(&json) {
                Ok(back) => back,
                Err(e) => panic!("a serialized request does not read back: {e}: {json}"),
            };
            let through = Keyed {
                request: back,
                ..original.clone()
            };
            assert!(
                original.same(&through),
                "the serde round trip changed the request: {json}"
            );
            assert_eq!(through.key(), key, "the key after a serde round trip");
        }
        let mut changed = original.clone();
        let Ok(what) = mutate(&mut u, &mut changed) else {
            return;
        };
        if original.same(&changed) {
            assert_eq!(changed.key(), key, "no change to {what}, yet another key");
        } else {
            assert_ne!(changed.key(), key, "changing {what} kept the key");
        }
    }
}
