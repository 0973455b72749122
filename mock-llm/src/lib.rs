//! Placeholder: the helper fills this crate.
