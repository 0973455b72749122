//! A cache directory in the older format: one `<key hex>.cfe` file per entry, an index
//! journal `index.cfj`, a lock file `cache.lock`, temp files `*.cfe-tmp` and
//! `index.cfj.*.cfj-tmp`. Its responses are dropped (they are a cache: each is fetched
//! again when needed) with one warning; its secret (`cache.secret`) is kept and used.
//!
//! The old engine made `cache.lock` whenever it opened the directory, so its absence
//! (with that of the journal) tells in one or two `stat`s that there is nothing to do.
//! Only files under exactly those names are removed, and only regular files: anything
//! else in the directory stays. The lock and journal go last, so an interrupted
//! migration runs again at the next open.

use std::io;
use std::path::Path;

use cap_std::fs::Dir;

use crate::files;
use crate::key::CacheKey;

const OLD_LOCK: &str = "cache.lock";
const OLD_JOURNAL: &str = "index.cfj";

/// `<64 hex>.cfe`
fn is_old_entry(name: &str) -> bool {
    name.strip_suffix(".cfe")
        .is_some_and(|key| CacheKey::from_hex(key).is_some())
}

fn is_nonce(text: &str) -> bool {
    text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `<64 hex>.<16 hex>.cfe-tmp` or `index.cfj.<16 hex>.cfj-tmp`
fn is_old_temp(name: &str) -> bool {
    let entry_tmp = name
        .strip_suffix(".cfe-tmp")
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(key, nonce)| CacheKey::from_hex(key).is_some() && is_nonce(nonce));
    let journal_tmp = name
        .strip_prefix("index.cfj.")
        .and_then(|rest| rest.strip_suffix(".cfj-tmp"))
        .is_some_and(is_nonce);
    entry_tmp || journal_tmp
}

/// Removes the old format's files from `dir` (shown as `shown`), if there are any;
/// how many entries were dropped.
pub(crate) fn drop_old_entries(dir: &Dir, shown: &Path) -> io::Result<u64> {
    let old = files::regular_len(dir, OLD_LOCK)?.is_some()
        || files::regular_len(dir, OLD_JOURNAL)?.is_some();
    if !old {
        return Ok(0);
    }
    let mut dropped = 0;
    for item in dir.entries()? {
        let name = item?.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_old_entry(name) {
            dropped += u64::from(files::remove_regular(dir, name)?);
        } else if is_old_temp(name) {
            files::remove_regular(dir, name)?;
        }
    }
    files::remove_regular(dir, OLD_JOURNAL)?;
    files::remove_regular(dir, OLD_LOCK)?;
    tracing::warn!(
        "the response cache in {} was in the older file format: dropped its {dropped} cached response(s) (each is fetched again when needed)",
        shown.display()
    );
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_old_names_are_recognised() {
        let key = "ab".repeat(32);
        assert!(is_old_entry(&format!("{key}.cfe")));
        assert!(!is_old_entry("notes.cfe") && !is_old_entry(&format!("{key}.cfe.bak")));
        assert!(is_old_temp(&format!("{key}.0123456789abcdef.cfe-tmp")));
        assert!(is_old_temp("index.cfj.0123456789abcdef.cfj-tmp"));
        assert!(!is_old_temp(&format!("{key}.xyz.cfe-tmp")) && !is_old_temp("index.cfj"));
    }
}
