//! The file format of one agent-store entry, and the names of the files a store owns.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "CFKVENT1"
//! 8       8     expiry, ms since the Unix epoch, little endian
//! 16      4     key length K, little endian
//! 20      8     value length V, little endian
//! 28      K     key (UTF-8, as given by the agent)
//! 28+K    V     value
//! ```
//!
//! The format of the stores before they moved to SQLite: `legacy.rs` imports it. A file
//! whose length is not exactly `28 + K + V` is torn or foreign, and is dropped.

use sha2::{Digest, Sha256};

use crate::files::hex;

const MAGIC: &[u8; 8] = b"CFKVENT1";

/// Length of the fixed header.
pub(crate) const HEADER_LEN: u64 = 28;

/// Suffix of entry files: `<64 hex digits of SHA-256(key)>.kv`.
const ENTRY_SUFFIX: &str = ".kv";
/// Prefix of temp files: `cfkv-tmp.<64 hex>.<16 hex>`.
pub(crate) const TMP_PREFIX: &str = "cfkv-tmp.";
/// The lock file serialising writers of one agent's directory.
pub(crate) const LOCK_NAME: &str = "cfkv.lock";
/// The usage file: bytes and entries of the directory, kept under the lock.
pub(crate) const USAGE_NAME: &str = "cfkv.usage";

/// The entry file name of `key`: its SHA-256 in hex. No key text reaches a path.
pub(crate) fn entry_name(key: &str) -> String {
    let mut name = hex(&Sha256::digest(key.as_bytes()));
    name.push_str(ENTRY_SUFFIX);
    name
}

/// True if `name` is an entry file name this crate makes.
pub(crate) fn is_entry_name(name: &str) -> bool {
    name.strip_suffix(ENTRY_SUFFIX)
        .is_some_and(|stem| crate::files::parse_hex32(stem).is_some())
}

/// True if `name` is a temp file name this crate makes.
pub(crate) fn is_tmp_name(name: &str) -> bool {
    name.strip_prefix(TMP_PREFIX).is_some_and(|rest| {
        rest.split_once('.').is_some_and(|(hash, nonce)| {
            crate::files::parse_hex32(hash).is_some()
                && nonce.len() == 16
                && nonce.bytes().all(|b| b.is_ascii_hexdigit())
        })
    })
}

/// The header of an entry about to be written.
pub(crate) fn encode_header(key: &str, value_len: u64, expires_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(28);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&expires_ms.to_le_bytes());
    let key_len = u32::try_from(key.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(&value_len.to_le_bytes());
    out
}

/// A decoded entry file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Decoded<'a> {
    pub(crate) expires_ms: u64,
    pub(crate) key: &'a [u8],
    pub(crate) value: &'a [u8],
}

/// Decodes an entry file; `None` if it is torn, foreign or of another version.
pub(crate) fn decode(data: &[u8]) -> Option<Decoded<'_>> {
    let (header, rest) = data.split_at_checked(28)?;
    if &header[..8] != MAGIC {
        return None;
    }
    let expires_ms = u64::from_le_bytes(header[8..16].try_into().ok()?);
    let key_len = usize::try_from(u32::from_le_bytes(header[16..20].try_into().ok()?)).ok()?;
    let value_len = usize::try_from(u64::from_le_bytes(header[20..28].try_into().ok()?)).ok()?;
    if rest.len() != key_len.checked_add(value_len)? {
        return None;
    }
    let (key, value) = rest.split_at(key_len);
    Some(Decoded {
        expires_ms,
        key,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut file = encode_header("k", 3, 42);
        file.extend_from_slice(b"k");
        file.extend_from_slice(b"abc");
        let d = decode(&file).expect("decodes");
        assert_eq!((d.expires_ms, d.key, d.value), (42, &b"k"[..], &b"abc"[..]));
    }

    #[test]
    fn torn_and_foreign_files_do_not_decode() {
        let mut file = encode_header("k", 3, 42);
        file.extend_from_slice(b"kabc");
        assert!(decode(&file[..file.len() - 1]).is_none());
        let mut longer = file.clone();
        longer.push(0);
        assert!(decode(&longer).is_none());
        let mut foreign = file.clone();
        foreign[0] = b'X';
        assert!(decode(&foreign).is_none());
        assert!(decode(b"short").is_none());
    }

    #[test]
    fn names_are_recognised_exactly() {
        let name = entry_name("../../etc/passwd");
        assert!(is_entry_name(&name));
        assert!(!name.contains('/'));
        assert!(!is_entry_name("notes.kv"));
        assert!(!is_entry_name(&name.to_uppercase()));
        let tmp = format!("{TMP_PREFIX}{}.0123456789abcdef", &name[..64]);
        assert!(is_tmp_name(&tmp));
        assert!(!is_tmp_name("cfkv-tmp.x.y"));
    }
}
