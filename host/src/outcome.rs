//! What a run returns: its output, or why it failed; and in both cases what it used.

use crate::error::Error;
use cf_llm::{Cost, Usage};
use serde::Serialize;
use std::time::Duration;

/// Time spent in the phases of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Timings {
    /// From the call to `run` to its result.
    #[serde(serialize_with = "ms")]
    pub total: Duration,
    /// Creating the store and instantiating the component.
    #[serde(serialize_with = "ms")]
    pub instantiate: Duration,
    /// Inside model calls (waiting for permits, attempts, backoff).
    #[serde(serialize_with = "ms")]
    pub llm: Duration,
    /// Waiting for a permit of the global concurrency limit.
    #[serde(serialize_with = "ms")]
    pub queue_wait: Duration,
}

fn ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// What a run used, whether it succeeded or not.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunStats {
    /// Tokens of every model call.
    pub usage: Usage,
    /// What the calls cost.
    pub cost: Cost,
    /// What cached answers saved, in US dollars.
    pub saved_usd: f64,
    /// Model calls answered.
    pub llm_calls: u32,
    /// Attempts sent to the provider, retries included.
    pub attempts: u32,
    /// Calls answered from the response cache.
    pub cache_hits: u32,
    /// The model of the last answer.
    pub model: Option<String>,
    /// Where the time went.
    pub timings: Timings,
}

/// A successful run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunOutput {
    /// The agent that ran.
    pub agent: String,
    /// Its answer.
    pub text: String,
    /// Structured facts about the answer.
    pub metadata: Vec<(String, String)>,
    /// What the run used.
    pub stats: RunStats,
}

/// A failed run: why, and what it used before it failed.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct RunError {
    /// Why it failed.
    #[source]
    pub error: Error,
    /// What it used.
    pub stats: RunStats,
}

impl From<Error> for RunError {
    fn from(error: Error) -> Self {
        Self {
            error,
            stats: RunStats::default(),
        }
    }
}
