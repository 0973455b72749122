//! Scripted and random faults: what the server does instead of answering normally.

use crate::StreamFault;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// What the server does with one request instead of (or before) answering normally.
///
/// Scripted faults are consumed in order, one per request: see
/// [`MockServer::push_fault`](crate::MockServer::push_fault) and
/// [`MockServer::push_fault_for`](crate::MockServer::push_fault_for).
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answers with this status, body and extra headers (after the configured latency).
    Status {
        /// The HTTP status.
        status: u16,
        /// The body, sent as `application/json`.
        body: String,
        /// Extra response headers, e.g. `("retry-after", "1")`.
        headers: Vec<(String, String)>,
    },
    /// Closes the connection without sending a response.
    Reset,
    /// Waits this long (on top of the latency), then answers normally: a delay longer
    /// than the client's timeout looks like a hung server.
    Hang(Duration),
    /// A `200 OK` whose body is not valid JSON.
    Malformed,
    /// A `200 OK` whose body is this many bytes, sent chunked without a
    /// `content-length`, so that a client can only find out by counting.
    Oversized(usize),
    /// A `200 OK` message whose `content` is empty.
    EmptyContent,
    /// A `200 OK` with this JSON body.
    Response(Value),
    /// Breaks the streamed answer to a request with `"stream": true` as described
    /// (the request is checked and answered as usual first). A request without
    /// `"stream": true` consumes it and gets its whole answer.
    Stream(StreamFault),
}

impl Fault {
    /// A documented Anthropic error: `{"type":"error","error":{"type":kind,"message":…}}`
    /// with `status` and extra `headers`.
    pub fn api_error(status: u16, kind: &str, message: &str, headers: &[(&str, &str)]) -> Self {
        Self::Status {
            status,
            body: crate::answer::error_body(kind, message),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    /// `429 rate_limit_error` with `retry-after: <seconds>`.
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self::api_error(
            429,
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
            &[("retry-after", &retry_after_secs.to_string())],
        )
    }

    /// `529 overloaded_error`.
    pub fn overloaded() -> Self {
        Self::api_error(529, "overloaded_error", "Overloaded", &[])
    }

    /// `500 api_error`.
    pub fn server_error() -> Self {
        Self::api_error(500, "api_error", "Internal server error", &[])
    }

    /// `400 invalid_request_error` with `message`.
    pub fn invalid_request(message: &str) -> Self {
        Self::api_error(400, "invalid_request_error", message, &[])
    }

    /// `401 authentication_error`.
    pub fn unauthorized() -> Self {
        Self::api_error(401, "authentication_error", "invalid x-api-key", &[])
    }

    /// This fault with an extra response header (only [`Fault::Status`] has headers;
    /// other faults are returned unchanged).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        if let Self::Status { headers, .. } = &mut self {
            headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }
}

/// A deterministic schedule of faults keyed by request content, for soak tests whose
/// expectations must be exact: `plan(last_user_message, nth)` decides the fault
/// of a request whose last user message is `last_user_message` and which is the
/// `nth` (from 0) request with that message — so a task's retries get the task's own
/// sequence whatever order requests arrive in. Any `Fn(&str, u32) -> Option<Fault>`
/// is a plan. Set with [`MockServer::set_fault_plan`](crate::MockServer::set_fault_plan).
///
/// ```
/// use cf_mock_llm::{Fault, FaultPlan};
/// use std::sync::Arc;
/// // Every message mentioning "flaky" fails twice with a 529, then succeeds.
/// let plan: FaultPlan = Arc::new(|text: &str, nth: u32| {
///     (text.contains("flaky") && nth < 2).then(Fault::overloaded)
/// });
/// assert_eq!(plan("a flaky task", 1), Some(Fault::overloaded()));
/// assert_eq!(plan("a flaky task", 2), None);
/// ```
pub type FaultPlan = Arc<dyn Fn(&str, u32) -> Option<Fault> + Send + Sync>;

/// Random faults for soak tests: each request that no scripted fault claims fails
/// with probability `probability`, with a transient fault drawn from a fixed list
/// (429 with `retry-after-ms: 50`, 529, 500, 503, connection reset). The same seed
/// gives the same sequence of draws.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultMix {
    /// Probability in [0, 1] that a request fails.
    pub probability: f64,
    /// Seed of the generator.
    pub seed: u64,
}

impl FaultMix {
    /// Draws the fault for one request, or `None` to answer normally.
    pub(crate) fn draw(&self, rng: &mut fastrand::Rng) -> Option<Fault> {
        if rng.f64() >= self.probability {
            return None;
        }
        Some(match rng.u8(0..5) {
            0 => Fault::api_error(
                429,
                "rate_limit_error",
                "rate limited (fault mix)",
                &[("retry-after-ms", "50")],
            ),
            1 => Fault::overloaded(),
            2 => Fault::server_error(),
            3 => Fault::api_error(503, "api_error", "service unavailable (fault mix)", &[]),
            _ => Fault::Reset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_mix_is_deterministic_and_obeys_its_probability() {
        let mix = FaultMix {
            probability: 0.3,
            seed: 7,
        };
        let draws = |seed| {
            let mut rng = fastrand::Rng::with_seed(seed);
            (0..1000).map(|_| mix.draw(&mut rng)).collect::<Vec<_>>()
        };
        let a = draws(7);
        assert_eq!(a, draws(7));
        let faults = a.iter().filter(|f| f.is_some()).count();
        assert!(
            (200..400).contains(&faults),
            "{faults} faults of 1000 at p=0.3"
        );
        let never = FaultMix {
            probability: 0.0,
            seed: 1,
        };
        let mut rng = fastrand::Rng::with_seed(1);
        assert!((0..100).all(|_| never.draw(&mut rng).is_none()));
    }

    #[test]
    fn helpers_build_documented_error_bodies() {
        let Fault::Status {
            status,
            body,
            headers,
        } = Fault::rate_limited(1)
        else {
            panic!("not a status")
        };
        assert_eq!(status, 429);
        assert_eq!(headers, vec![("retry-after".to_owned(), "1".to_owned())]);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "rate_limit_error");
    }
}
