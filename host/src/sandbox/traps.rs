//! What a guest's trap means: the run's deadline, its memory cap, or a fault of its own.

use super::store::RunState;
use crate::error::Error;
use std::time::Duration;

/// The guest's trap, named: the deadline, the memory cap, or a fault of its own.
pub(crate) fn classify(err: &wasmtime::Error, state: &RunState, deadline: Duration) -> Error {
    if let Some(limit_bytes) = state.memory_limit_hit() {
        return Error::MemoryLimit { limit_bytes };
    }
    let message = match err.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => return Error::Deadline { limit: deadline },
        Some(trap) => trap.to_string(),
        None => err.to_string(),
    };
    // The full backtrace (thousands of frames for a stack overflow) goes to the
    // debug log; the error keeps the trap itself.
    tracing::debug!(agent = %state.log.agent(), "guest trap: {err:?}");
    Error::Trap {
        message: crate::limits::truncate(&message, 2000).to_owned(),
    }
}
