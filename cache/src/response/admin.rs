//! Administration of the response cache: `verify`, `prune`, `clear`. Each runs as one
//! session under the directory lock, and touches only files whose names this crate
//! makes (entry files, its temp files); anything else in the directory is left alone.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use super::entry::{self, OVERHEAD};
use super::journal::{self, Record, RemoveReason};
use super::{Lookup, ResponseCache};
use crate::error::Error;
use crate::files;
use crate::stats::{BadEntry, PruneReport, VerifyReport};

/// A temp file older than this was left by a writer that died.
const STALE_TEMP_AGE: Duration = Duration::from_secs(60 * 60);

/// One of our files found in the directory.
enum Found {
    Entry(crate::key::CacheKey),
    StaleTemp(String),
}

impl ResponseCache {
    /// Our entry files, and our temp files older than an hour (regular files only).
    fn our_files(&self) -> Result<Vec<Found>, Error> {
        let context = "listing the cache directory";
        let mut found = Vec::new();
        let items = self
            .inner
            .dir
            .entries()
            .map_err(|e| Error::io(context, e))?;
        for item in items {
            let item = item.map_err(|e| Error::io(context, e))?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            let Ok(meta) = item.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            if let Some(key) = entry::parse_entry_name(name) {
                found.push(Found::Entry(key));
            } else if entry::is_tmp_name(name) || journal::is_tmp_name(name) {
                let age = meta
                    .modified()
                    .ok()
                    .and_then(|m| SystemTime::now().duration_since(m.into_std()).ok());
                if age.is_some_and(|age| age >= STALE_TEMP_AGE) {
                    found.push(Found::StaleTemp(name.to_owned()));
                }
            }
        }
        Ok(found)
    }

    /// Checks every entry file's length, key and HMAC, and the index against the files.
    /// With `fix`: removes bad entries (counted as integrity failures), indexes valid
    /// files the index missed, corrects index entries whose file is gone or changed,
    /// and removes temp files older than an hour. Holds the directory lock throughout.
    pub fn verify(&self, fix: bool) -> Result<VerifyReport, Error> {
        let inner = &*self.inner;
        let mut locked = inner.locked()?;
        locked.flush_pending()?;
        let mut report = VerifyReport::default();
        let mut seen = HashSet::new();
        for found in self.our_files()? {
            let key = match found {
                Found::Entry(key) => key,
                Found::StaleTemp(name) => {
                    if fix && files::remove_regular(&inner.dir, &name).unwrap_or(false) {
                        report.stale_temps_removed += 1;
                    }
                    continue;
                }
            };
            let lookup = inner
                .read_entry(&key)
                .map_err(|e| Error::io("reading an entry", e))?;
            let (reason, why) = match lookup {
                Lookup::Absent => continue,
                Lookup::Valid(cached) => {
                    report.checked += 1;
                    report.valid += 1;
                    seen.insert(key);
                    let size = cached.payload.len() as u64 + OVERHEAD;
                    let known = locked.index().get(&key).copied();
                    let fresh = Record::Put {
                        key,
                        size,
                        expires_ms: cached.expires_ms,
                        at_ms: known.map_or(cached.created_ms, |e| e.last_access_ms),
                        hits: known.map_or(0, |e| e.hits),
                    };
                    match known {
                        None => report.orphans += 1,
                        Some(e) if e.size != size || e.expires_ms != cached.expires_ms => {
                            report.stale_index += 1;
                        }
                        Some(_) => continue,
                    }
                    if fix {
                        locked.push(fresh);
                    }
                    continue;
                }
                Lookup::Bad(fault) => (RemoveReason::Integrity, fault.describe()),
                Lookup::Oversize => (RemoveReason::Evicted, "larger than the size limit"),
            };
            report.checked += 1;
            report.bad.push(BadEntry {
                key: key.to_hex(),
                reason: why.to_owned(),
            });
            if fix {
                files::remove_regular(&inner.dir, &entry::entry_name(&key))
                    .map_err(|e| Error::io("removing an entry", e))?;
                locked.push(Record::Remove { key, reason });
                report.removed += 1;
            }
        }
        let vanished: Vec<_> = locked
            .index()
            .keys()
            .filter(|key| !seen.contains(*key))
            .copied()
            .collect();
        // Bad entries were just removed (with `fix`) or are reported already.
        let bad: HashSet<String> = report.bad.iter().map(|b| b.key.clone()).collect();
        for key in vanished.into_iter().filter(|k| !bad.contains(&k.to_hex())) {
            report.stale_index += 1;
            if fix {
                locked.push(Record::Remove {
                    key,
                    reason: RemoveReason::Dropped,
                });
            }
        }
        if fix {
            // Adopted orphans may have taken the cache over its limit.
            locked.evict_to_limit(None)?;
        }
        locked.write_out()?;
        Ok(report)
    }

    /// Removes every expired entry.
    pub fn prune(&self) -> Result<PruneReport, Error> {
        let inner = &*self.inner;
        let mut locked = inner.locked()?;
        locked.flush_pending()?;
        let mut report = PruneReport::default();
        for key in locked.index().expired(inner.clock.now_ms()) {
            let size = locked.index().get(&key).map_or(0, |e| e.size);
            files::remove_regular(&inner.dir, &entry::entry_name(&key))
                .map_err(|e| Error::io("removing an expired entry", e))?;
            locked.push(Record::Remove {
                key,
                reason: RemoveReason::Expired,
            });
            report.removed += 1;
            report.freed_bytes += size;
        }
        locked.write_out()?;
        Ok(report)
    }

    /// Removes every entry file (and temp files older than an hour) and resets the index
    /// and counters; returns how many entries were removed. Files this crate did not
    /// name (anything else in the directory) are left alone, and so are the secret and
    /// lock files.
    pub fn clear(&self) -> Result<u64, Error> {
        let inner = &*self.inner;
        let mut locked = inner.locked()?;
        let mut removed = 0;
        for found in self.our_files()? {
            let name = match found {
                Found::Entry(key) => entry::entry_name(&key),
                Found::StaleTemp(name) => {
                    let _ = files::remove_regular(&inner.dir, &name);
                    continue;
                }
            };
            if files::remove_regular(&inner.dir, &name)
                .map_err(|e| Error::io("removing an entry", e))?
            {
                removed += 1;
            }
        }
        locked.reset()?;
        Ok(removed)
    }
}
