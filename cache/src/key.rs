//! Cache keys: SHA-256 over a canonical, versioned, length-prefixed encoding of every
//! field of a request, so that two requests share a key only if every field is equal.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::files::{hex, parse_hex32};

/// The key of one cached response: a full 256-bit SHA-256 digest.
///
/// Its hex form is the entry's file name; it is never built from request text directly.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// A key from its 32 bytes (e.g. read back from a log).
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key from 64 lowercase hex digits; `None` for anything else.
    #[must_use]
    pub fn from_hex(text: &str) -> Option<Self> {
        parse_hex32(text).map(Self)
    }

    /// The 32 bytes of the digest.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 lowercase hex digits of the digest.
    #[must_use]
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", self.to_hex())
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Builds a [`CacheKey`] from named fields.
///
/// The encoding is canonical and unambiguous: a domain tag, the length-prefixed scheme
/// version, then per field a one-byte tag, the length-prefixed name and the
/// length-prefixed value (lengths are 8-byte little-endian). So `("ab", "c")` and
/// `("a", "bc")` differ, a missing optional field differs from an empty one, and field
/// order matters: feed fields in a fixed order. Change the version string whenever the
/// set or meaning of the fields changes.
///
/// ```
/// use cf_cache::KeyBuilder;
/// let key = KeyBuilder::new("v1")
///     .field_str("namespace", "code-reviewer")
///     .field_str("model", "claude-sonnet-4-5")
///     .field_u64("max_tokens", 1024)
///     .field_f64("temperature", 0.2)
///     .field_opt("system", None)
///     .field_list("stop_sequences", ["END", "STOP"])
///     .finish();
/// assert_eq!(key.to_hex().len(), 64);
/// ```
#[derive(Clone)]
pub struct KeyBuilder {
    hasher: Sha256,
}

impl fmt::Debug for KeyBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyBuilder").finish_non_exhaustive()
    }
}

const TAG_FIELD: u8 = b'f';
const TAG_NONE: u8 = b'n';
const TAG_LIST: u8 = b'l';

impl KeyBuilder {
    /// Starts a key of scheme `version` (e.g. `"v1"`).
    #[must_use]
    pub fn new(version: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"cf-cache/key\0");
        let mut builder = Self { hasher };
        builder.bytes(version.as_bytes());
        builder
    }

    fn bytes(&mut self, data: &[u8]) {
        self.hasher.update((data.len() as u64).to_le_bytes());
        self.hasher.update(data);
    }

    /// Adds the field `name` with the bytes `value`.
    #[must_use]
    pub fn field(mut self, name: &str, value: &[u8]) -> Self {
        self.hasher.update([TAG_FIELD]);
        self.bytes(name.as_bytes());
        self.bytes(value);
        self
    }

    /// Adds a text field (its UTF-8 bytes, not normalised).
    #[must_use]
    pub fn field_str(self, name: &str, value: &str) -> Self {
        self.field(name, value.as_bytes())
    }

    /// Adds an integer field (8 bytes, little endian).
    #[must_use]
    pub fn field_u64(self, name: &str, value: u64) -> Self {
        self.field(name, &value.to_le_bytes())
    }

    /// Adds a float field by its exact bits: `0.1` and `0.1000001` differ, and so do
    /// `0.0` and `-0.0`.
    #[must_use]
    pub fn field_f64(self, name: &str, value: f64) -> Self {
        self.field(name, &value.to_bits().to_le_bytes())
    }

    /// Adds an optional field; `None` is distinct from `Some(b"")`.
    #[must_use]
    pub fn field_opt(mut self, name: &str, value: Option<&[u8]>) -> Self {
        match value {
            Some(value) => self.field(name, value),
            None => {
                self.hasher.update([TAG_NONE]);
                self.bytes(name.as_bytes());
                self
            }
        }
    }

    /// Adds a list field: its length, then each item length-prefixed, so `["a,b"]` and
    /// `["a", "b"]` differ and so do `[]` and `[""]`.
    #[must_use]
    pub fn field_list<I, T>(mut self, name: &str, items: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        let items: Vec<T> = items.into_iter().collect();
        self.hasher.update([TAG_LIST]);
        self.bytes(name.as_bytes());
        self.hasher.update((items.len() as u64).to_le_bytes());
        for item in &items {
            self.bytes(item.as_ref());
        }
        self
    }

    /// The key.
    #[must_use]
    pub fn finish(self) -> CacheKey {
        CacheKey(self.hasher.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(fields: &[(&str, &str)]) -> CacheKey {
        fields
            .iter()
            .fold(KeyBuilder::new("v1"), |b, (n, v)| b.field_str(n, v))
            .finish()
    }

    #[test]
    fn same_fields_same_key() {
        let a = key(&[("model", "m"), ("prompt", "hello")]);
        assert_eq!(a, key(&[("model", "m"), ("prompt", "hello")]));
        assert_eq!(CacheKey::from_hex(&a.to_hex()), Some(a));
    }

    #[test]
    fn adjacent_fields_are_not_ambiguous() {
        assert_ne!(
            key(&[("x", "ab"), ("y", "c")]),
            key(&[("x", "a"), ("y", "bc")])
        );
        assert_ne!(key(&[("ab", "c")]), key(&[("a", "bc")]));
        assert_ne!(key(&[("a", "b"), ("c", "")]), key(&[("a", "b")]));
    }

    #[test]
    fn every_field_matters() {
        let base = key(&[("model", "m"), ("prompt", "p"), ("system", "s")]);
        assert_ne!(
            base,
            key(&[("model", "m2"), ("prompt", "p"), ("system", "s")])
        );
        assert_ne!(
            base,
            key(&[("model", "m"), ("prompt", "p2"), ("system", "s")])
        );
        assert_ne!(
            base,
            key(&[("model", "m"), ("prompt", "p"), ("system", "s2")])
        );
        assert_ne!(
            base,
            key(&[("prompt", "p"), ("model", "m"), ("system", "s")])
        );
        let v2 = KeyBuilder::new("v2")
            .field_str("model", "m")
            .field_str("prompt", "p")
            .field_str("system", "s")
            .finish();
        assert_ne!(base, v2);
    }

    #[test]
    fn typed_fields_are_distinct() {
        let none = KeyBuilder::new("v1").field_opt("s", None).finish();
        let empty = KeyBuilder::new("v1").field_opt("s", Some(b"")).finish();
        assert_ne!(none, empty);
        let list_one = KeyBuilder::new("v1").field_list("l", ["a,b"]).finish();
        let list_two = KeyBuilder::new("v1").field_list("l", ["a", "b"]).finish();
        assert_ne!(list_one, list_two);
        let no_items = KeyBuilder::new("v1")
            .field_list("l", Vec::<&str>::new())
            .finish();
        let one_empty = KeyBuilder::new("v1").field_list("l", [""]).finish();
        assert_ne!(no_items, one_empty);
        let zero = KeyBuilder::new("v1").field_f64("t", 0.0).finish();
        let neg_zero = KeyBuilder::new("v1").field_f64("t", -0.0).finish();
        assert_ne!(zero, neg_zero);
    }

    #[test]
    fn debug_and_display_are_hex() {
        let k = CacheKey::from_bytes([0xab; 32]);
        assert_eq!(k.to_string(), "ab".repeat(32));
        assert!(format!("{k:?}").starts_with("CacheKey(abab"));
    }
}
