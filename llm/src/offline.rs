//! A deterministic provider that answers without a network, for trying agents out and
//! for tests. Its answers say plainly that they are offline.

use crate::provider::{BoxFuture, Provider, ProviderError};
use crate::types::{Request, Response, Role, StopReason, Usage};
use std::fmt::Write as _;

/// Answers every request at once, with a text that summarises what it was sent:
/// `[offline] model=… system=N chars messages=N last user message: "…"`.
///
/// Token counts are estimates (one token per four bytes, rounded up); calls are free.
#[derive(Debug, Default, Clone)]
pub struct OfflineProvider {
    _private: (),
}

/// How much of the last user message the offline answer quotes, in characters.
const QUOTE_CHARS: usize = 200;

impl OfflineProvider {
    /// The offline provider.
    pub fn new() -> Self {
        Self::default()
    }

    /// The answer to `request`, computed without I/O.
    pub fn answer(request: &Request) -> Response {
        let system_chars = request.system.as_ref().map_or(0, |s| s.chars().count());
        let last_user = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map_or("", |m| m.content.as_str());
        let quoted: String = last_user.chars().take(QUOTE_CHARS).collect();
        let ellipsis = if last_user.chars().count() > QUOTE_CHARS {
            "…"
        } else {
            ""
        };
        let mut text = String::new();
        let _ = write!(
            text,
            "[offline] model={} system={} chars messages={} max_tokens={} last user message: {:?}{}",
            request.model,
            system_chars,
            request.messages.len(),
            request.max_tokens,
            quoted,
            ellipsis
        );
        let input_bytes = request.text_bytes();
        let usage = Usage {
            input_tokens: estimate_tokens(input_bytes),
            output_tokens: estimate_tokens(text.len()).min(u64::from(request.max_tokens)),
            ..Usage::default()
        };
        Response {
            id: format!("offline-{:016x}", fnv1a(&text)),
            model: request.model.clone(),
            text,
            stop_reason: StopReason::EndTurn,
            usage,
        }
    }
}

fn estimate_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

/// A small stable hash for the offline answer's id (not security relevant).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Provider for OfflineProvider {
    fn name(&self) -> &str {
        "offline"
    }

    fn billable(&self) -> bool {
        false
    }

    fn send<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Response, ProviderError>> {
        Box::pin(std::future::ready(Ok(Self::answer(request))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Message;

    #[test]
    fn answer_is_labelled_deterministic_and_summarises_the_request() {
        let mut req = Request::new(
            "claude-x",
            100,
            vec![
                Message::user("first"),
                Message::assistant("a"),
                Message::user("why?"),
            ],
        );
        req.system = Some("You are helpful.".into());
        let a = OfflineProvider::answer(&req);
        let b = OfflineProvider::answer(&req);
        assert_eq!(a, b);
        assert!(
            a.text
                .starts_with("[offline] model=claude-x system=16 chars messages=3"),
            "{}",
            a.text
        );
        assert!(
            a.text.ends_with("last user message: \"why?\""),
            "{}",
            a.text
        );
        assert!(a.usage.input_tokens > 0 && a.usage.output_tokens > 0);
    }

    #[test]
    fn long_messages_are_quoted_in_part() {
        let req = Request::new("m", 10, vec![Message::user("x".repeat(1000))]);
        let a = OfflineProvider::answer(&req);
        assert!(a.text.ends_with('…'));
        assert!(a.text.len() < 400);
        assert_eq!(
            a.usage.output_tokens, 10,
            "output tokens never exceed max_tokens"
        );
    }
}
