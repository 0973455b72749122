//! The HMAC secret: a redacting newtype, and the per-directory secret file created once,
//! atomically, when no secret is configured.

use std::fmt;
use std::io;
use std::sync::Arc;

use cap_std::fs::Dir;

use crate::error::Error;
use crate::files::{self, ReadOutcome};
use crate::private;
use std::path::Path;

/// The environment variable [`Secret::from_env`] reads.
pub const SECRET_ENV: &str = "CF_CACHE_SECRET";
/// Name of the generated secret file in the cache directory.
pub(crate) const SECRET_FILE: &str = "cache.secret";
/// Length of a generated secret.
const GENERATED_LEN: usize = 32;

/// The key of the cache entries' HMAC-SHA256. Its `Debug` prints `Secret(<redacted>)`;
/// it never appears in logs or errors.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<[u8]>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// The shortest secret accepted, in bytes.
    pub const MIN_LEN: usize = 16;

    /// A secret from its bytes; at least [`Secret::MIN_LEN`] bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, Error> {
        let bytes: Vec<u8> = bytes.into();
        if bytes.len() < Self::MIN_LEN {
            return Err(Error::InvalidSecret(format!(
                "a secret must be at least {} bytes, got {}",
                Self::MIN_LEN,
                bytes.len()
            )));
        }
        Ok(Self(bytes.into()))
    }

    /// The secret in `CF_CACHE_SECRET`: `Ok(None)` if the variable is unset or empty,
    /// an error if it is too short or not Unicode.
    pub fn from_env() -> Result<Option<Self>, Error> {
        Self::from_env_value(std::env::var(SECRET_ENV))
    }

    fn from_env_value(value: Result<String, std::env::VarError>) -> Result<Option<Self>, Error> {
        match value {
            Ok(value) if value.is_empty() => Ok(None),
            Ok(value) => Self::new(value).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(Error::InvalidSecret(format!(
                "{SECRET_ENV} is not valid Unicode"
            ))),
        }
    }

    pub(crate) fn expose(&self) -> &[u8] {
        &self.0
    }
}

/// The secret of the cache directory `dir` (shown in errors as `shown`), generating it
/// on first use.
///
/// The file is written whole to a private temp file (mode 0600) and then hard-linked to
/// its name, which fails if the name exists: two processes racing both end up reading
/// the one that won, and no reader ever sees a partial secret. A secret file that is
/// not the user's own or that others may read is refused ([`Error::NotPrivate`]): whoever
/// planted or read it could forge what it signs.
pub(crate) fn load_or_create(dir: &Dir, shown: &Path) -> Result<Secret, Error> {
    load_or_create_named(dir, SECRET_FILE, shown)
}

/// [`load_or_create`] for the secret file `name`.
pub(crate) fn load_or_create_named(dir: &Dir, name: &str, shown: &Path) -> Result<Secret, Error> {
    let shown = shown.join(name);
    if let Some(secret) = read(dir, name, &shown)? {
        return Ok(secret);
    }
    let mut bytes = [0u8; GENERATED_LEN];
    getrandom::fill(&mut bytes).map_err(|e| {
        Error::io(
            "generating the cache secret",
            io::Error::other(e.to_string()),
        )
    })?;
    let tmp = format!(
        "{name}.{}.tmp",
        files::random_hex(8).map_err(|e| Error::io("naming a temp file", e))?
    );
    files::write_new(dir, &tmp, &[&bytes], true)
        .map_err(|e| Error::io("writing the cache secret", e))?;
    let linked = dir.hard_link(&tmp, dir, name);
    let _ = dir.remove_file(&tmp);
    match linked {
        Ok(()) => {
            let _ = files::sync_dir(dir);
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("installing the cache secret", e)),
    }
    read(dir, name, &shown)?.ok_or_else(|| {
        Error::io(
            "reading the cache secret",
            io::Error::new(io::ErrorKind::NotFound, "the secret file vanished"),
        )
    })
}

fn read(dir: &Dir, name: &str, shown: &Path) -> Result<Option<Secret>, Error> {
    let context = "the cache secret";
    let check = |meta: &cap_std::fs::Metadata| private::check_secret_file(meta, shown);
    match files::read_checked(dir, name, 1024, context, check)? {
        ReadOutcome::Missing => Ok(None),
        ReadOutcome::Data(bytes) if bytes.len() == GENERATED_LEN => Ok(Some(Secret(bytes.into()))),
        ReadOutcome::Data(bytes) => Err(Error::InvalidSecret(format!(
            "{name} holds {} bytes, expected {GENERATED_LEN}",
            bytes.len()
        ))),
        ReadOutcome::TooLong(len) => Err(Error::InvalidSecret(format!(
            "{name} holds {len} bytes, expected {GENERATED_LEN}"
        ))),
        ReadOutcome::NotRegular => Err(Error::InvalidSecret(format!(
            "{name} is not a regular file"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_std::ambient_authority;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn debug_never_shows_the_bytes() {
        let secret = Secret::new("correct horse battery staple").expect("secret");
        let shown = format!("{secret:?} {:?}", Some(secret.clone()));
        assert_eq!(shown, "Secret(<redacted>) Some(Secret(<redacted>))");
        assert!(!shown.contains("horse"));
    }

    #[test]
    fn env_values_are_read_like_from_env() {
        use std::env::VarError;
        assert!(matches!(
            Secret::from_env_value(Err(VarError::NotPresent)),
            Ok(None)
        ));
        assert!(matches!(
            Secret::from_env_value(Ok(String::new())),
            Ok(None)
        ));
        assert!(Secret::from_env_value(Ok("too short".into())).is_err());
        let secret = Secret::from_env_value(Ok("a long enough secret value".into()));
        assert_eq!(
            secret.expect("valid").map(|s| s.expose().to_vec()),
            Some(b"a long enough secret value".to_vec())
        );
        let bad = Secret::from_env_value(Err(VarError::NotUnicode("HIDDEN-VALUE".into())));
        assert!(bad.is_err_and(|e| !e.to_string().contains("HIDDEN")));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(Secret::new("short").is_err());
        assert!(Secret::new(vec![0u8; 16]).is_ok());
    }

    #[test]
    fn generated_once_private_and_shared_by_racers() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().to_owned();
        let secrets: Vec<Secret> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let path = path.clone();
                    s.spawn(move || {
                        let dir = Dir::open_ambient_dir(&path, ambient_authority()).expect("dir");
                        load_or_create(&dir, &path).expect("secret")
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("join"))
                .collect()
        });
        assert!(secrets.windows(2).all(|w| w[0] == w[1]), "all racers agree");
        let meta = std::fs::metadata(path.join(SECRET_FILE)).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 32);
        let names: Vec<_> = std::fs::read_dir(&path).expect("read").collect();
        assert_eq!(names.len(), 1, "no temp file left behind");
    }

    /// Regression: a `cache.secret` that others may read was used as is, so whoever
    /// could read it (or planted it) could forge entries served as `cached: true`.
    #[test]
    fn a_secret_others_may_read_is_refused_not_used() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join(SECRET_FILE);
        std::fs::write(&path, [7u8; GENERATED_LEN]).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let dir = Dir::open_ambient_dir(tmp.path(), ambient_authority()).expect("dir");
        let err = load_or_create(&dir, tmp.path()).expect_err("readable by others");
        assert!(err.is_not_private(), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let secret = load_or_create(&dir, tmp.path()).expect("private now");
        assert_eq!(secret.expose(), [7u8; GENERATED_LEN]);
    }

    #[test]
    fn a_malformed_secret_file_is_an_error_not_replaced() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join(SECRET_FILE), b"short").expect("write");
        let dir = Dir::open_ambient_dir(tmp.path(), ambient_authority()).expect("dir");
        std::fs::set_permissions(
            tmp.path().join(SECRET_FILE),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
        let err = load_or_create(&dir, tmp.path()).expect_err("malformed");
        assert!(matches!(err, Error::InvalidSecret(_)), "{err}");
        assert_eq!(
            std::fs::read(tmp.path().join(SECRET_FILE)).expect("read"),
            b"short"
        );
    }
}
