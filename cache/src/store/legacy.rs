//! The store's format before SQLite: one file per entry (`record.rs`), a usage file and
//! a lock file. A directory in that format is imported into the database once, when the
//! agent's store is first opened, and its files removed.

use cap_std::fs::Dir;

use super::db::Db;
use super::record::{self, LOCK_NAME, USAGE_NAME};
use crate::files::{self, ReadOutcome};

/// What an import found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Imported {
    /// Entries now in the database.
    pub(crate) entries: u64,
    /// Entry files that were expired, torn, or another key's, and were dropped.
    pub(crate) dropped: u64,
}

/// Imports every old-format entry of `dir` that is still live at `now` (with a valid
/// key, and a value within `max_value_bytes`), then removes the old files. Touches no
/// file it did not make. The quotas are not applied to what it imports (the old store
/// kept within them); the next `set` brings the store back under a lowered one.
pub(crate) fn import(
    dir: &Dir,
    db: &mut Db,
    now: u64,
    max_value_bytes: u64,
) -> std::io::Result<Imported> {
    let mut names = Vec::new();
    let mut others = Vec::new();
    for item in dir.entries()? {
        let item = item?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        if record::is_entry_name(name) {
            names.push(name.to_owned());
        } else if record::is_tmp_name(name) || name == USAGE_NAME || name == LOCK_NAME {
            others.push(name.to_owned());
        }
    }
    let mut imported = Imported::default();
    if names.is_empty() && others.is_empty() {
        return Ok(imported);
    }
    let max_len = record::HEADER_LEN + super::MAX_KEY_BYTES as u64 + max_value_bytes;
    let mut live = Vec::new();
    for name in &names {
        // A file that cannot be read is dropped with the rest, not an error that would
        // refuse every later open of the store.
        let Ok(ReadOutcome::Data(data)) = files::read_regular(dir, name, max_len) else {
            imported.dropped += 1;
            continue;
        };
        let entry = record::decode(&data).and_then(|e| {
            let key = std::str::from_utf8(e.key).ok()?;
            let fits = e.expires_ms > now
                && record::entry_name(key) == *name
                && super::validate_key(key).is_ok()
                && e.value.len() as u64 <= max_value_bytes;
            fits.then(|| (key.to_owned(), e.value.to_vec(), e.expires_ms))
        });
        match entry {
            Some(e) => live.push(e),
            None => imported.dropped += 1,
        }
    }
    // Never over a value written since: two processes opening the store at once may
    // both import, and a run may have set a key in between.
    db.write(|tx| {
        for (key, value, expires_ms) in &live {
            let size = key.len() as u64 + value.len() as u64;
            tx.put(key, value, size, *expires_ms, true)?;
        }
        Ok(())
    })
    .map_err(std::io::Error::other)?;
    imported.entries = live.len() as u64;
    // The database holds them now: the old files go (a crash before this point imports
    // them again, which replaces each with itself).
    for name in names.iter().chain(&others) {
        files::remove_regular(dir, name)?;
    }
    Ok(imported)
}
