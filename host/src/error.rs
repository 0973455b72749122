//! The host's errors: one enum a caller can branch on.

use cf_llm::LlmError;
use std::path::PathBuf;
use std::time::Duration;

/// Why loading an agent or running a task failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An agent name does not match `^[a-zA-Z0-9_-]+$` (1 to 64 characters).
    #[error("invalid agent name {name:?}: use 1 to 64 letters, digits, '-' or '_'")]
    InvalidAgentName {
        /// The name as given.
        name: String,
    },
    /// No built-in agent has this name.
    #[error(
        "no built-in agent is called {name:?} (built-in: {known}); pass a path to a .wasm component to run your own"
    )]
    UnknownAgent {
        /// The name as given.
        name: String,
        /// The built-in names, comma-separated (or why there are none).
        known: String,
    },
    /// The task is longer than the host accepts.
    #[error("the task has {chars} characters; the limit is {max}")]
    TaskTooLarge {
        /// The task's length in characters.
        chars: usize,
        /// The limit.
        max: usize,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The bytes are not a WebAssembly component (a core module, or not wasm at all).
    #[error("not a valid WebAssembly component: {detail}")]
    InvalidComponent {
        /// What the engine said.
        detail: String,
    },
    /// The component targets a contract version this host does not serve.
    #[error("the component targets {found}; this host supports claude-force:agent@{supported}")]
    IncompatibleContract {
        /// The version(s) the component names.
        found: String,
        /// The versions this host supports, comma-separated.
        supported: String,
    },
    /// A plugin's sidecar manifest is not valid.
    #[error("{}: invalid plugin manifest: {reason}", path.display())]
    InvalidManifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong (an unknown key is named).
        reason: String,
    },
    /// The component's SHA-256 is not the one it was pinned to.
    #[error("the component's SHA-256 is {actual}, not the pinned {expected}: refusing to load it")]
    DigestMismatch {
        /// The pinned digest.
        expected: String,
        /// The component's digest.
        actual: String,
    },
    /// The component does not export the agent interface.
    #[error(
        "not an agent: the component does not export claude-force:agent/agent@{expected} (it exports: {exports})"
    )]
    NotAnAgent {
        /// The expected contract version.
        expected: String,
        /// What it exports.
        exports: String,
    },
    /// The component imports something this host does not offer.
    #[error("the component needs imports this host does not offer: {imports}")]
    MissingImports {
        /// The missing imports, comma-separated.
        imports: String,
    },
    /// The agent describes itself with an invalid name or another inconsistency.
    #[error("the agent's describe() is invalid: {0}")]
    InvalidDescription(String),
    /// The run did not finish before its deadline; the guest was stopped.
    #[error("the run exceeded its deadline of {} ms", limit.as_millis())]
    Deadline {
        /// The deadline.
        limit: Duration,
    },
    /// The guest tried to grow its memory past the cap; it was stopped.
    #[error("the guest exceeded its memory limit of {} MiB", limit_bytes / (1024 * 1024))]
    MemoryLimit {
        /// The cap in bytes.
        limit_bytes: u64,
    },
    /// The guest trapped (a panic, a stack overflow, an invalid operation).
    #[error("the guest trapped: {message}")]
    Trap {
        /// The trap, with the guest's backtrace when available.
        message: String,
    },
    /// The guest's answer is larger than the host accepts.
    #[error("the agent's output has {bytes} bytes; the limit is {max}")]
    OutputTooLarge {
        /// The output's size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The agent refused the task as not something it can do.
    #[error("the agent refused the task: {0}")]
    InvalidTask(String),
    /// A model call failed and the agent gave up.
    #[error("a model call failed: {0}")]
    Llm(LlmError),
    /// The agent failed for its own reasons.
    #[error("the agent failed: {0}")]
    AgentFailed(String),
    /// A directory or secret the host would trust is not the user's own, or others
    /// may write it (or read the secret): see [`cf_cache::private`].
    #[error("refusing {}: {reason}; to fix: {fix}", path.display())]
    NotPrivate {
        /// What was refused.
        path: PathBuf,
        /// Why.
        reason: String,
        /// What the user can do.
        fix: String,
    },
    /// Loading (compiling) a component did not finish within the load deadline.
    #[error("loading the component took longer than its deadline of {} ms (Limits::load_deadline)", limit.as_millis())]
    LoadDeadline {
        /// The deadline.
        limit: Duration,
    },
    /// A component file is larger than the host compiles.
    #[error("the component has {bytes} bytes; the limit is {max} (Limits::max_component_bytes)")]
    ComponentTooLarge {
        /// Its size.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// A third-party plugin (other than a copy of the built-in agent itself) reports
    /// the name of a built-in agent.
    #[error(
        "the plugin calls itself {name:?}, the name of a built-in agent: refusing it, so that it cannot reach that agent's data or grant; rename it"
    )]
    ReservedName {
        /// The name it reported.
        name: String,
    },
    /// The host could not be set up (engine, configuration).
    #[error("host setup failed: {0}")]
    Setup(String),
    /// The batch was cancelled before this item finished; `started` says whether it
    /// had begun.
    #[error("cancelled before it finished ({})", if *started { "it was running" } else { "it had not started" })]
    Cancelled {
        /// Whether the item had started.
        started: bool,
    },
}

impl Clone for Error {
    /// A copy for reporting the same failure on several batch items; an I/O error is
    /// copied as its kind and message.
    fn clone(&self) -> Self {
        match self {
            Self::InvalidAgentName { name } => Self::InvalidAgentName { name: name.clone() },
            Self::UnknownAgent { name, known } => Self::UnknownAgent {
                name: name.clone(),
                known: known.clone(),
            },
            Self::TaskTooLarge { chars, max } => Self::TaskTooLarge {
                chars: *chars,
                max: *max,
            },
            Self::Io { path, source } => Self::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Self::InvalidComponent { detail } => Self::InvalidComponent {
                detail: detail.clone(),
            },
            Self::IncompatibleContract { found, supported } => Self::IncompatibleContract {
                found: found.clone(),
                supported: supported.clone(),
            },
            Self::NotAnAgent { expected, exports } => Self::NotAnAgent {
                expected: expected.clone(),
                exports: exports.clone(),
            },
            Self::InvalidManifest { path, reason } => Self::InvalidManifest {
                path: path.clone(),
                reason: reason.clone(),
            },
            Self::DigestMismatch { expected, actual } => Self::DigestMismatch {
                expected: expected.clone(),
                actual: actual.clone(),
            },
            Self::MissingImports { imports } => Self::MissingImports {
                imports: imports.clone(),
            },
            Self::InvalidDescription(m) => Self::InvalidDescription(m.clone()),
            Self::Deadline { limit } => Self::Deadline { limit: *limit },
            Self::MemoryLimit { limit_bytes } => Self::MemoryLimit {
                limit_bytes: *limit_bytes,
            },
            Self::Trap { message } => Self::Trap {
                message: message.clone(),
            },
            Self::OutputTooLarge { bytes, max } => Self::OutputTooLarge {
                bytes: *bytes,
                max: *max,
            },
            Self::InvalidTask(m) => Self::InvalidTask(m.clone()),
            Self::Llm(e) => Self::Llm(e.clone()),
            Self::AgentFailed(m) => Self::AgentFailed(m.clone()),
            Self::Setup(m) => Self::Setup(m.clone()),
            Self::NotPrivate { path, reason, fix } => Self::NotPrivate {
                path: path.clone(),
                reason: reason.clone(),
                fix: fix.clone(),
            },
            Self::LoadDeadline { limit } => Self::LoadDeadline { limit: *limit },
            Self::ComponentTooLarge { bytes, max } => Self::ComponentTooLarge {
                bytes: *bytes,
                max: *max,
            },
            Self::ReservedName { name } => Self::ReservedName { name: name.clone() },
            Self::Cancelled { started } => Self::Cancelled { started: *started },
        }
    }
}

impl Error {
    /// A short stable name of the error's kind, for `--json` output and metrics.
    /// Model-call failures use the LLM error's kind (`rate_limited`, `timeout`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidAgentName { .. } => "invalid_agent_name",
            Self::UnknownAgent { .. } => "unknown_agent",
            Self::TaskTooLarge { .. } => "task_too_large",
            Self::Io { .. } => "io",
            Self::InvalidComponent { .. } => "invalid_component",
            Self::IncompatibleContract { .. } => "incompatible_contract",
            Self::NotAnAgent { .. } => "not_an_agent",
            Self::DigestMismatch { .. } => "digest_mismatch",
            Self::InvalidManifest { .. } => "invalid_manifest",
            Self::MissingImports { .. } => "missing_imports",
            Self::InvalidDescription(_) => "invalid_description",
            Self::Deadline { .. } => "deadline",
            Self::MemoryLimit { .. } => "memory_limit",
            Self::Trap { .. } => "trap",
            Self::OutputTooLarge { .. } => "output_too_large",
            Self::InvalidTask(_) => "invalid_task",
            Self::Llm(e) => e.kind(),
            Self::AgentFailed(_) => "agent_failed",
            Self::Setup(_) => "setup",
            Self::NotPrivate { .. } => "not_private",
            Self::LoadDeadline { .. } => "load_deadline",
            Self::ComponentTooLarge { .. } => "component_too_large",
            Self::ReservedName { .. } => "reserved_name",
            Self::Cancelled { .. } => "cancelled",
        }
    }

    /// True when the input was refused before any work started (bad name, task too
    /// large, not a component): a usage error, not a failed task.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::InvalidAgentName { .. }
                | Self::UnknownAgent { .. }
                | Self::TaskTooLarge { .. }
                | Self::Io { .. }
                | Self::InvalidComponent { .. }
                | Self::IncompatibleContract { .. }
                | Self::NotAnAgent { .. }
                | Self::DigestMismatch { .. }
                | Self::InvalidManifest { .. }
                | Self::MissingImports { .. }
                | Self::InvalidDescription(_)
                | Self::Setup(_)
                | Self::NotPrivate { .. }
                | Self::LoadDeadline { .. }
                | Self::ComponentTooLarge { .. }
                | Self::ReservedName { .. }
        )
    }

    /// True when the guest was stopped by a limit (deadline, memory) or trapped.
    pub fn is_guest_fault(&self) -> bool {
        matches!(
            self,
            Self::Deadline { .. }
                | Self::MemoryLimit { .. }
                | Self::Trap { .. }
                | Self::OutputTooLarge { .. }
        )
    }
}

impl Error {
    /// A storage error met while setting up the host: a refused directory keeps its
    /// type; anything else is a setup failure described with `context`.
    pub(crate) fn from_storage(context: &str, e: cf_cache::Error) -> Self {
        match e {
            cf_cache::Error::NotPrivate { path, reason, fix } => {
                Self::NotPrivate { path, reason, fix }
            }
            other => Self::Setup(format!("{context}: {other}")),
        }
    }
}

/// Checks an agent name against `^[a-zA-Z0-9_-]{1,64}$`.
pub fn validate_agent_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidAgentName {
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names_follow_the_seed_rule() {
        for ok in ["python-expert", "a", "A_b-9", &"x".repeat(64)] {
            assert!(validate_agent_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../etc",
            "a b",
            "a/b",
            "ä",
            "a\0",
            &"x".repeat(65),
            "a.wasm",
        ] {
            assert!(
                matches!(
                    validate_agent_name(bad),
                    Err(Error::InvalidAgentName { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
