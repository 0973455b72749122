//! [`CompiledStore`]: compiled components on disk, each authenticated before it is
//! handed back.
//!
//! A compiled component is native code: whoever can put a file where the host looks for
//! one runs code as the user, in the process that holds the API key. So each file
//! carries an HMAC-SHA256 under a per-directory key (`compiled.key`, 32 random bytes,
//! mode 0600, refused if anyone else may read it), bound to the file's name, which holds
//! the component's digest and the engine's compatibility hash. A planted or edited file,
//! or a valid one moved to another component's name, fails the check and is never handed
//! back. The directory itself must be the user's own and writable by nobody else
//! ([`private`](crate::private)); files are opened without following symlinks, read
//! only if regular and within a size bound, and written to a fresh temp file created
//! exclusively (never through a planted name) and renamed into place.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "CFCOMP01"
//! 8       32    HMAC-SHA256(key, "cf-cache/compiled/v1" || 0 || name || 0 || payload)
//! 40      P     payload: the serialized component
//! ```

use std::path::{Path, PathBuf};

use cap_std::fs::Dir;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::Error;
use crate::files::{self, ReadOutcome};
use crate::private;
use crate::secret::{self, Secret};

const MAGIC: &[u8; 8] = b"CFCOMP01";
const MAC_DOMAIN: &[u8] = b"cf-cache/compiled/v1";
const MAC_LEN: usize = 32;
const HEADER_LEN: usize = MAGIC.len() + MAC_LEN;
/// The key file in the directory.
pub const KEY_FILE: &str = "compiled.key";
const TMP_PREFIX: &str = ".tmp-";

/// What [`CompiledStore::get`] found.
#[derive(Debug)]
pub enum Compiled {
    /// Nothing under that name.
    Missing,
    /// A file that passed its check: the payload as it was stored.
    Valid(Vec<u8>),
    /// Something that must not be used: a file failing its MAC, too long, not a regular
    /// file (a symlink, a FIFO, a device). Says why; the host recompiles and replaces it.
    Rejected(String),
}

/// Compiled components in one private directory. `Send + Sync`.
#[derive(Debug)]
pub struct CompiledStore {
    dir: Dir,
    path: PathBuf,
    key: Secret,
}

impl CompiledStore {
    /// Opens (creating, mode 0700) the directory `path` and its key, refusing either if
    /// it is not the user's own or others may write it (or read the key).
    pub fn open(path: &Path) -> Result<Self, Error> {
        let dir = private::open_dir(path)?;
        let key = secret::load_or_create_named(&dir, KEY_FILE, path)?;
        Ok(Self {
            dir,
            path: path.to_owned(),
            key,
        })
    }

    /// The directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The payload stored under `name` if it is intact and at most `max_len` bytes.
    /// `name` must be made of ASCII letters, digits, `-`, `_` and `.`, not starting
    /// with `.`; the caller builds it from digests, never from untrusted text.
    pub fn get(&self, name: &str, max_len: u64) -> Result<Compiled, Error> {
        check_name(name)?;
        let limit = max_len.saturating_add(HEADER_LEN as u64);
        let outcome = files::read_regular(&self.dir, name, limit)
            .map_err(|e| Error::io(format!("reading {}", self.path.join(name).display()), e))?;
        let data = match outcome {
            ReadOutcome::Missing => return Ok(Compiled::Missing),
            ReadOutcome::NotRegular => {
                return Ok(Compiled::Rejected("it is not a regular file".into()));
            }
            ReadOutcome::TooLong(len) => {
                return Ok(Compiled::Rejected(format!(
                    "it holds {len} bytes, more than the {limit} expected at most"
                )));
            }
            ReadOutcome::Data(data) => data,
        };
        if data.len() < HEADER_LEN || &data[..MAGIC.len()] != MAGIC {
            return Ok(Compiled::Rejected(
                "it is not a compiled component written by this host".into(),
            ));
        }
        let (tag, payload) = data[MAGIC.len()..].split_at(MAC_LEN);
        if self.mac(name, payload).verify_slice(tag).is_err() {
            return Ok(Compiled::Rejected(
                "its authentication code does not match: it was not written by this host for this component".into(),
            ));
        }
        let mut data = data;
        data.drain(..HEADER_LEN);
        Ok(Compiled::Valid(data))
    }

    /// Stores `payload` under `name` (same rules as [`get`](Self::get)), atomically: a
    /// fresh temp file created exclusively without following symlinks, then renamed over
    /// whatever was there.
    pub fn put(&self, name: &str, payload: &[u8]) -> Result<(), Error> {
        check_name(name)?;
        let tag = self.mac(name, payload).finalize().into_bytes();
        let nonce = files::random_hex(8).map_err(|e| Error::io("naming a temp file", e))?;
        let tmp = format!("{TMP_PREFIX}{nonce}");
        files::write_atomic(&self.dir, name, &tmp, &[MAGIC, &tag, payload], false)
            .map_err(|e| Error::io(format!("writing {}", self.path.join(name).display()), e))
    }

    fn mac(&self, name: &str, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.key.expose())
            .expect("HMAC accepts keys of any length");
        mac.update(MAC_DOMAIN);
        mac.update(&[0]);
        mac.update(name.as_bytes());
        mac.update(&[0]);
        mac.update(payload);
        mac
    }
}

fn check_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "invalid compiled-component name {}",
            crate::error::shown(name)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn valid(found: Compiled) -> Vec<u8> {
        match found {
            Compiled::Valid(data) => data,
            other => panic!("expected a valid file, got {other:?}"),
        }
    }

    fn rejected(found: Compiled) -> String {
        match found {
            Compiled::Rejected(why) => why,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn round_trips_and_keeps_everything_private() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("components");
        let store = CompiledStore::open(&path).expect("open");
        assert!(matches!(
            store.get("a.cwasm", 100).expect("get"),
            Compiled::Missing
        ));
        store.put("a.cwasm", b"native code").expect("put");
        assert_eq!(
            valid(store.get("a.cwasm", 100).expect("get")),
            b"native code"
        );
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o700);
        assert_eq!(mode(&path.join(KEY_FILE)), 0o600);
        assert_eq!(mode(&path.join("a.cwasm")), 0o600);
        // Another handle on the directory shares the key.
        let again = CompiledStore::open(&path).expect("reopen");
        assert_eq!(
            valid(again.get("a.cwasm", 100).expect("get")),
            b"native code"
        );
    }

    /// Regression (critical): a `.cwasm` planted under a component's name was
    /// deserialized and run as native code.
    #[test]
    fn a_planted_or_edited_file_is_rejected() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = CompiledStore::open(tmp.path()).expect("open");
        std::fs::write(tmp.path().join("planted.cwasm"), b"\x7fELF evil").expect("plant");
        assert!(rejected(store.get("planted.cwasm", 100).expect("get")).contains("not a compiled"));
        // A file with our framing but a MAC made without the key.
        let mut forged = MAGIC.to_vec();
        forged.extend_from_slice(&[0u8; MAC_LEN]);
        forged.extend_from_slice(b"evil");
        std::fs::write(tmp.path().join("forged.cwasm"), &forged).expect("forge");
        assert!(rejected(store.get("forged.cwasm", 100).expect("get")).contains("authentication"));
        // A genuine file edited in place.
        store.put("b.cwasm", b"genuine").expect("put");
        let mut bytes = std::fs::read(tmp.path().join("b.cwasm")).expect("read");
        *bytes.last_mut().expect("byte") ^= 1;
        std::fs::write(tmp.path().join("b.cwasm"), &bytes).expect("edit");
        assert!(rejected(store.get("b.cwasm", 100).expect("get")).contains("authentication"));
        // A genuine file moved to another component's name.
        store.put("c.cwasm", b"genuine").expect("put");
        std::fs::copy(tmp.path().join("c.cwasm"), tmp.path().join("d.cwasm")).expect("copy");
        assert!(rejected(store.get("d.cwasm", 100).expect("get")).contains("authentication"));
        // A file signed under another directory's key.
        let other = tempfile::tempdir().expect("other");
        CompiledStore::open(other.path())
            .expect("open")
            .put("e.cwasm", b"x")
            .expect("put");
        std::fs::copy(other.path().join("e.cwasm"), tmp.path().join("e.cwasm")).expect("copy");
        assert!(rejected(store.get("e.cwasm", 100).expect("get")).contains("authentication"));
    }

    #[test]
    fn symlinks_devices_and_oversized_files_are_never_read() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = CompiledStore::open(tmp.path()).expect("open");
        std::os::unix::fs::symlink("/dev/zero", tmp.path().join("zero.cwasm")).expect("link");
        assert!(rejected(store.get("zero.cwasm", 100).expect("get")).contains("regular"));
        store.put("big.cwasm", &[1u8; 200]).expect("put");
        assert!(rejected(store.get("big.cwasm", 100).expect("get")).contains("bytes"));
        assert_eq!(valid(store.get("big.cwasm", 200).expect("get")).len(), 200);
    }

    /// Regression: the temp file was created with `File::create`, which follows a
    /// planted symlink and overwrites its target.
    #[test]
    fn writes_never_go_through_a_planted_symlink() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = CompiledStore::open(tmp.path()).expect("open");
        let victim = tempfile::NamedTempFile::new().expect("victim");
        std::fs::write(victim.path(), b"precious").expect("write");
        std::os::unix::fs::symlink(victim.path(), tmp.path().join("x.cwasm")).expect("link");
        store
            .put("x.cwasm", b"compiled")
            .expect("put renames over the link");
        assert_eq!(std::fs::read(victim.path()).expect("read"), b"precious");
        assert_eq!(valid(store.get("x.cwasm", 100).expect("get")), b"compiled");
    }

    #[test]
    fn names_are_checked() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = CompiledStore::open(tmp.path()).expect("open");
        for bad in ["", "../x", ".hidden", "a/b", "compiled key"] {
            assert!(store.put(bad, b"x").is_err(), "{bad:?}");
            assert!(store.get(bad, 10).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_shared_directory_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let err = CompiledStore::open(tmp.path()).expect_err("world-writable");
        assert!(err.is_not_private(), "{err}");
    }
}
