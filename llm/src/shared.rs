//! A concurrency limit shared with other processes (a fleet of hosts on one API
//! account): [`SharedLimit`], which the service asks for a [`Lease`] per attempt on top
//! of its own permits. The Redis implementation is in the `cf-fleet` crate.

use crate::provider::BoxFuture;
use crate::types::LlmError;
use tokio::time::Instant;

/// A slot of a shared concurrency limit, held for one attempt. Dropping it gives the
/// slot back (an implementation may do so in the background; it must be idempotent
/// and must never free another attempt's slot).
pub trait Lease: Send + Sync + std::fmt::Debug {}

/// A concurrency limit shared by several hosts.
pub trait SharedLimit: Send + Sync + std::fmt::Debug {
    /// Waits for a slot until `deadline` (none: for as long as it takes). An error is
    /// the call's failure (for example, the limit's store is unreachable and the
    /// operator chose to fail closed); `Ok(None)` lets the attempt go without a slot
    /// (the store is unreachable and the operator chose to fail open: the
    /// implementation says so loudly).
    fn acquire(
        &self,
        deadline: Option<Instant>,
    ) -> BoxFuture<'_, Result<Option<Box<dyn Lease>>, LlmError>>;
}
