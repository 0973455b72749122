//! Extended thinking: the signatures of thinking blocks and the opaque data of
//! redacted ones.
//!
//! A signature is the hex SHA-256 of a fixed secret and the thinking text, so any
//! server (and [`answer_for`](crate::answer_for)) recognises the blocks any other one
//! issued, a test can compute the signature of a text with [`thinking_signature`], and
//! a changed text or signature is caught. Redacted data are hashes of the secret and a
//! per-server counter; only the server that issued them knows them.

use sha2::{Digest, Sha256};

/// The text that makes a server with thinking on add a `redacted_thinking` block to
/// its answer, when the system prompt or the last user message contains it.
pub const REDACT_MARKER: &str = "[redact]";

/// The fixed secret behind signatures and redacted data. Not a secret of anyone's:
/// it only makes forged signatures unlikely by accident.
const SECRET: &[u8] = b"cf-mock-llm: the fixed secret of thinking signatures, v1";

/// The signature the server gives (and demands back) for a thinking block whose text
/// is `thinking`: 64 lowercase hex digits.
///
/// ```
/// let s = cf_mock_llm::thinking_signature("Let me think.");
/// assert_eq!(s.len(), 64);
/// assert_ne!(s, cf_mock_llm::thinking_signature("Let me think!"));
/// ```
pub fn thinking_signature(thinking: &str) -> String {
    hex(&Sha256::new()
        .chain_update(SECRET)
        .chain_update(b"thinking\0")
        .chain_update(thinking.as_bytes())
        .finalize())
}

/// The `data` of the `n`-th redacted thinking block a server issues.
pub(crate) fn redacted_data(n: u64) -> String {
    hex(&Sha256::new()
        .chain_update(SECRET)
        .chain_update(b"redacted_thinking\0")
        .chain_update(n.to_le_bytes())
        .finalize())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_depend_on_the_text_and_redacted_data_on_the_counter() {
        assert_eq!(thinking_signature("a"), thinking_signature("a"));
        assert_ne!(thinking_signature("a"), thinking_signature("b"));
        assert!(
            thinking_signature("")
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(redacted_data(1), redacted_data(2));
        assert_ne!(redacted_data(1), thinking_signature(""), "separate domains");
    }
}
