//! A concurrency limit shared with other processes (a fleet of hosts on one API
//! account): [`SharedLimit`], which the service asks for a [`Lease`] per attempt on top
//! of its own permits. The Redis implementation is in the `cf-fleet` crate.

use crate::provider::BoxFuture;
use crate::types::LlmError;
use tokio::time::Instant;

/// A slot of a shared concurrency limit, held for one attempt. Dropping it gives the
/// slot back (an implementation may do so in the background; it must be idempotent
/// and must never free another attempt's slot).
pub trait Lease: Send + Sync + std::fmt::Debug {
    /// What the attempt really used, once its answer is in: a rate limit that
    /// reserved the estimate settles the difference. Default: nothing to settle.
    fn settle(&self, _used: &crate::types::Usage) {}
}

/// A concurrency limit shared by several hosts.
pub trait SharedLimit: Send + Sync + std::fmt::Debug {
    /// Waits for a slot until `deadline` (none: for as long as it takes). An error is
    /// the call's failure (for example, the limit's store is unreachable and the
    /// operator chose to fail closed); `Ok(None)` lets the attempt go without a slot
    /// (the store is unreachable and the operator chose to fail open: the
    /// implementation says so loudly).
    ///
    /// `estimate` is the most the attempt may use (its input estimate and
    /// `max_tokens`), for a limit that also counts tokens per minute: reserved now,
    /// settled with [`Lease::settle`].
    fn acquire(
        &self,
        deadline: Option<Instant>,
        estimate: crate::types::Usage,
    ) -> BoxFuture<'_, Result<Option<Box<dyn Lease>>, LlmError>>;
}

/// What [`SharedCache::flight`] says about an identical call elsewhere in the fleet.
#[derive(Debug)]
pub enum FleetFlight {
    /// This host makes the call; the claim (held until dropped) makes the others wait.
    Lead(Option<Box<dyn Lease>>),
    /// Another host made it: its answer (a serialized [`crate::Response`]).
    Answer(Vec<u8>),
}

/// A response cache shared by a fleet of hosts, behind each host's own: answers by
/// the canonical request key, sealed against tampering by the implementation, with a
/// TTL; and single-flight across hosts.
pub trait SharedCache: Send + Sync + std::fmt::Debug {
    /// The answer stored under `key`, if there is one that verifies (a tampered or
    /// forged one is removed, counted, and not returned). Failures are misses.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<Vec<u8>>>;

    /// Stores `answer` under `key`. Failures are logged, not returned.
    fn put<'a>(&'a self, key: &'a str, answer: Vec<u8>) -> BoxFuture<'a, ()>;

    /// Claims the call for this host, or waits (until `deadline`) for the host that
    /// claimed it to store its answer. When that host gives up or dies, the claim
    /// expires and this host may lead.
    fn flight<'a>(&'a self, key: &'a str, deadline: Option<Instant>) -> BoxFuture<'a, FleetFlight>;
}

/// Told when the API's rate-limit headers ask for a pause: a rate's
/// `anthropic-ratelimit-*-remaining` is 0 until its `-reset`, or a 429's
/// `retry-after`. A fleet's limit passes it on to every host, so that one host's 429
/// pauses the fleet rather than each host meeting its own.
pub trait RateObserver: Send + Sync + std::fmt::Debug {
    /// The API takes no request for `wait` from now.
    fn pause(&self, wait: std::time::Duration);
}
