//! The crate's typed errors: [`Error`] for opening and administering stores and the
//! response cache, [`StoreError`] for one agent-store operation (it mirrors the WIT
//! `cache-error` variant one to one).

use std::io;

/// Why opening or administering a store or the response cache failed.
///
/// Messages never contain secret bytes. Branch on the kind with the predicates
/// (`is_io`, `is_invalid_agent_name`, …) rather than on the text.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An agent name is not `^[a-zA-Z0-9_-]{1,64}$`. Holds the (escaped, shortened) name.
    #[error("invalid agent name {0}: expected 1 to 64 characters from [a-zA-Z0-9_-]")]
    InvalidAgentName(String),
    /// A configuration value is out of range; the message names the field.
    #[error("invalid cache configuration: {0}")]
    InvalidConfig(String),
    /// The secret is unusable (too short, or the secret file is malformed).
    #[error("invalid cache secret: {0}")]
    InvalidSecret(String),
    /// An entry is larger than the cache accepts; the message gives both sizes.
    #[error("entry too large: {0}")]
    TooLarge(String),
    /// A directory or secret file is not the user's own, or others may write it (or,
    /// for a secret, read it): someone else could forge or plant what the host trusts.
    /// See [`private`](crate::private).
    #[error("refusing {}: {reason}; to fix: {fix}", path.display())]
    NotPrivate {
        /// What was refused.
        path: std::path::PathBuf,
        /// Why, e.g. "it is owned by uid 1001, not by you (uid 1000)".
        reason: String,
        /// What the user can do about it.
        fix: String,
    },
    /// The file system failed; `context` says which step.
    #[error("cache I/O failed while {context}: {source}")]
    Io {
        /// The step that failed, e.g. "opening the cache directory".
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// True for [`Error::InvalidAgentName`].
    #[must_use]
    pub fn is_invalid_agent_name(&self) -> bool {
        matches!(self, Self::InvalidAgentName(_))
    }

    /// True for [`Error::Io`].
    #[must_use]
    pub fn is_io(&self) -> bool {
        matches!(self, Self::Io { .. })
    }

    /// True for [`Error::NotPrivate`].
    #[must_use]
    pub fn is_not_private(&self) -> bool {
        matches!(self, Self::NotPrivate { .. })
    }

    /// True for [`Error::TooLarge`].
    #[must_use]
    pub fn is_too_large(&self) -> bool {
        matches!(self, Self::TooLarge(_))
    }

    /// The same error again, for each of several operations one failure stopped (an
    /// I/O source is copied as its kind and message).
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            Self::InvalidAgentName(s) => Self::InvalidAgentName(s.clone()),
            Self::InvalidConfig(s) => Self::InvalidConfig(s.clone()),
            Self::InvalidSecret(s) => Self::InvalidSecret(s.clone()),
            Self::TooLarge(s) => Self::TooLarge(s.clone()),
            Self::NotPrivate { path, reason, fix } => Self::NotPrivate {
                path: path.clone(),
                reason: reason.clone(),
                fix: fix.clone(),
            },
            Self::Io { context, source } => Self::Io {
                context: context.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// Why one operation on an agent's store failed. Mirrors the WIT `cache-error`.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The key is empty, longer than 256 bytes, or contains a control character.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// Storing the value would exceed the agent's quota of bytes or entries.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// The value is larger than the store accepts for one entry.
    #[error("value too large: {0}")]
    TooLarge(String),
    /// The store failed (disk full, permissions); the message says why.
    #[error("store I/O failed: {0}")]
    Io(String),
}

/// Renders untrusted text for an error message: escaped and cut to 48 characters.
pub(crate) fn shown(text: &str) -> String {
    const MAX: usize = 48;
    let mut out: String = text.chars().take(MAX).collect::<String>();
    if text.chars().count() > MAX {
        out.push('…');
    }
    format!("{out:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_escapes_and_truncates() {
        assert_eq!(shown("a\0b"), "\"a\\0b\"");
        let long = "x".repeat(100);
        assert_eq!(shown(&long).chars().count(), 48 + 3);
    }

    #[test]
    fn predicates_match_kinds() {
        assert!(Error::InvalidAgentName("x".into()).is_invalid_agent_name());
        assert!(Error::io("x", io::Error::other("y")).is_io());
        assert!(!Error::TooLarge("x".into()).is_io());
    }
}
