//! Integrity: tampered, truncated, misplaced and forged entries are misses, counted and
//! removed; a changed secret makes old entries misses; `verify` reports and fixes.

use cf_cache::{CacheConfig, EntryMeta, Secret};

use crate::common::{clock, config, disk_usage, entry_path, key, open};

fn put(cache: &cf_cache::ResponseCache, n: u64, payload: &[u8]) {
    cache
        .put("a", &key(n), payload, EntryMeta::default())
        .expect("put");
}

#[test]
fn a_payload_edited_on_disk_is_detected_counted_and_removed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    put(&open(config(tmp.path()), &clock), 1, b"the real answer");
    let path = entry_path(tmp.path(), &key(1));
    let mut data = std::fs::read(&path).expect("read");
    let at = 88 + 4; // inside the payload
    data[at] = b'X';
    std::fs::write(&path, &data).expect("tamper");

    let cache = open(config(tmp.path()), &clock);
    assert_eq!(cache.get("a", &key(1)), None, "not served");
    assert!(!path.exists(), "removed");
    let stats = cache.stats();
    assert_eq!(
        (
            stats.integrity_failures,
            stats.misses,
            stats.entries,
            stats.bytes
        ),
        (1, 1, 0, 0)
    );
}

#[test]
fn corrupt_or_truncated_files_are_removed_not_served() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cache = open(config(tmp.path()), &clock);
    for n in 1..=4 {
        put(&cache, n, &[n as u8; 300]);
    }
    drop(cache);
    let data = std::fs::read(entry_path(tmp.path(), &key(1))).expect("read");
    std::fs::write(entry_path(tmp.path(), &key(1)), &data[..data.len() - 1]).expect("truncate");
    std::fs::write(entry_path(tmp.path(), &key(2)), b"").expect("empty");
    std::fs::write(entry_path(tmp.path(), &key(3)), vec![0u8; data.len()]).expect("zeroed");

    let cache = open(config(tmp.path()), &clock);
    for n in 1..=3 {
        assert_eq!(cache.get("a", &key(n)), None, "{n} not served");
        assert!(!entry_path(tmp.path(), &key(n)).exists(), "{n} removed");
    }
    assert!(cache.get("a", &key(4)).is_some());
    let stats = cache.stats();
    assert_eq!((stats.integrity_failures, stats.entries), (3, 1));
    assert_eq!(stats.bytes, disk_usage(tmp.path()).1);
}

#[test]
fn a_valid_entry_copied_over_another_keys_file_is_rejected() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cache = open(config(tmp.path()), &clock);
    put(&cache, 1, b"answer one");
    put(&cache, 2, b"answer two");
    drop(cache);
    std::fs::copy(
        entry_path(tmp.path(), &key(1)),
        entry_path(tmp.path(), &key(2)),
    )
    .expect("copy");
    let cache = open(config(tmp.path()), &clock);
    assert_eq!(cache.get("a", &key(2)), None);
    assert_eq!(cache.stats().integrity_failures, 1);
    assert_eq!(
        &*cache.get("a", &key(1)).expect("hit").payload,
        b"answer one"
    );
}

#[test]
fn an_entry_forged_with_another_secret_is_rejected() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let forger_dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let mut forger_cfg = CacheConfig::new(forger_dir.path());
    forger_cfg.secret = Some(Secret::new(*b"an attacker's own secret, 32 by").expect("secret"));
    put(&open(forger_cfg, &clock), 1, b"forged answer");
    let cache = open(config(tmp.path()), &clock);
    put(&cache, 1, b"real answer");
    drop(cache);
    std::fs::copy(
        entry_path(forger_dir.path(), &key(1)),
        entry_path(tmp.path(), &key(1)),
    )
    .expect("plant");
    let cache = open(config(tmp.path()), &clock);
    assert_eq!(cache.get("a", &key(1)), None, "forgery not served");
    assert_eq!(cache.stats().integrity_failures, 1);
}

#[test]
fn a_changed_secret_turns_old_entries_into_misses_not_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    put(&open(config(tmp.path()), &clock), 1, b"old");
    let mut cfg = config(tmp.path());
    cfg.secret = Some(Secret::new(*b"a brand new secret for the cache").expect("secret"));
    let cache = open(cfg, &clock);
    assert_eq!(cache.get("a", &key(1)), None);
    put(&cache, 1, b"new");
    assert_eq!(&*cache.get("a", &key(1)).expect("hit").payload, b"new");
}

#[test]
fn verify_reports_and_fixes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cache = open(config(tmp.path()), &clock);
    for n in 1..=5 {
        put(&cache, n, &[n as u8; 100]);
    }
    let clean = cache.verify(false).expect("verify");
    assert!(clean.is_clean(), "{clean:?}");
    assert_eq!((clean.checked, clean.valid), (5, 5));

    let path = entry_path(tmp.path(), &key(2));
    let mut data = std::fs::read(&path).expect("read");
    let last = data.len() - 1;
    data[last] ^= 1; // the MAC itself
    std::fs::write(&path, &data).expect("tamper");
    std::fs::remove_file(entry_path(tmp.path(), &key(3))).expect("delete behind its back");

    let report = cache.verify(false).expect("verify");
    assert_eq!(report.bad.len(), 1);
    assert_eq!(report.bad[0].key, key(2).to_hex());
    assert_eq!(report.stale_index, 1, "3 is indexed but gone");
    assert_eq!(report.removed, 0, "nothing changed without fix");
    assert!(path.exists());

    let fixed = cache.verify(true).expect("fix");
    assert_eq!(fixed.removed, 1);
    assert!(!path.exists());
    let after = cache.verify(false).expect("verify");
    assert!(after.is_clean(), "{after:?}");
    let stats = cache.stats();
    assert_eq!((stats.entries, stats.bytes), disk_usage(tmp.path()));
    assert_eq!(stats.integrity_failures, 1);
}

#[test]
fn verify_indexes_an_orphan_left_by_a_crash() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let other = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    // An entry renamed into place whose journal record never got written.
    put(&open(config(other.path()), &clock), 7, b"orphan");
    let cache = open(config(tmp.path()), &clock);
    put(&cache, 1, b"indexed");
    std::fs::copy(
        entry_path(other.path(), &key(7)),
        entry_path(tmp.path(), &key(7)),
    )
    .expect("copy");
    let report = cache.verify(false).expect("verify");
    assert_eq!((report.orphans, report.bad.len()), (1, 0));
    cache.verify(true).expect("fix");
    let stats = cache.stats();
    assert_eq!((stats.entries, stats.bytes), disk_usage(tmp.path()));
    assert!(cache.verify(false).expect("verify").is_clean());
}

#[test]
fn an_orphan_is_served_and_indexed_by_a_process_whose_index_is_not_current() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let other = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    put(&open(config(other.path()), &clock), 7, b"orphan");
    let cache = open(config(tmp.path()), &clock);
    put(&cache, 1, b"indexed");
    // This handle's index is current (a session synced it with the journal).
    assert_eq!(cache.stats().entries, 1);
    std::fs::copy(
        entry_path(other.path(), &key(7)),
        entry_path(tmp.path(), &key(7)),
    )
    .expect("copy");
    // Entries are recorded before their files appear, so a key the current index lacks
    // is a miss, decided without reading the directory.
    assert!(cache.get("a", &key(7)).is_none());
    // A process that has not loaded the index reads the file, serves it, indexes it.
    let fresh = open(config(tmp.path()), &clock);
    assert!(fresh.get("a", &key(7)).is_some());
    let stats = fresh.stats();
    assert_eq!((stats.entries, stats.bytes), disk_usage(tmp.path()));
    assert_eq!(stats.entries, 2);
    // The journal changed: the first handle reads the file now.
    assert!(cache.get("a", &key(7)).is_some());
}

#[test]
fn a_miss_on_a_current_index_reads_nothing_and_follows_other_processes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let a = open(config(tmp.path()), &clock);
    let b = open(config(tmp.path()), &clock);
    put(&a, 1, b"one");
    assert_eq!(a.stats().entries, 1, "a's index is current");
    // A file under key 2's name that no journal record vouches for: a's lookup does
    // not read it (it would be removed as bad if it did).
    let planted = entry_path(tmp.path(), &key(2));
    std::fs::write(&planted, b"not an entry").expect("plant");
    assert!(a.get("a", &key(2)).is_none());
    assert!(planted.exists(), "the miss did not touch the file");
    std::fs::remove_file(&planted).expect("unplant");
    // Another process stores key 2: the journal changed, so a reads the disk and
    // finds the entry.
    put(&b, 2, b"two");
    let hit = a
        .get("a", &key(2))
        .expect("another process's entry is found");
    assert_eq!(&*hit.payload, b"two");
    let stats = a.stats();
    assert_eq!((stats.hits, stats.misses), (1, 1));
}

#[test]
fn a_lost_journal_is_rebuilt_from_the_entry_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cache = open(config(tmp.path()), &clock);
    for n in 1..=3 {
        put(&cache, n, &[0; 50]);
    }
    drop(cache);
    std::fs::remove_file(tmp.path().join("index.cfj")).expect("lose the journal");
    let cache = open(config(tmp.path()), &clock);
    let stats = cache.stats();
    assert_eq!((stats.entries, stats.bytes), disk_usage(tmp.path()));
    assert_eq!(stats.entries, 3);
}

#[test]
fn a_torn_journal_tail_is_cut_and_the_rest_kept() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cache = open(config(tmp.path()), &clock);
    for n in 1..=3 {
        put(&cache, n, &[0; 50]);
    }
    drop(cache);
    let journal = tmp.path().join("index.cfj");
    let mut data = std::fs::read(&journal).expect("read");
    data.extend_from_slice(&[0x5a; 47]); // half a record
    std::fs::write(&journal, &data).expect("tear");
    let cache = open(config(tmp.path()), &clock);
    assert_eq!(cache.stats().entries, 3);
    put(&cache, 4, &[0; 50]);
    drop(cache);
    let cache = open(config(tmp.path()), &clock);
    let stats = cache.stats();
    assert_eq!((stats.entries, stats.bytes), disk_usage(tmp.path()));
    assert_eq!(stats.entries, 4);
}

#[test]
fn verify_fix_removes_stale_temp_files_and_nothing_else() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cache = open(config(tmp.path()), &clock);
    put(&cache, 1, b"one");
    // Temp files a crash left; one fresh, as if a put were in progress; one file that
    // is not ours.
    let name = |nonce: &str| format!("{}.{nonce}.cfe-tmp", key(2).to_hex());
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    let plant = |name: String, old: bool| {
        let path = tmp.path().join(name);
        let f = std::fs::File::create(&path).expect("plant");
        if old {
            f.set_modified(two_hours_ago).expect("age it");
        }
        path
    };
    let stale = [
        plant(name("0123456789abcdef"), true),
        plant(name("fedcba9876543210"), true),
    ];
    let fresh = plant(name("00112233aabbccdd"), false);
    let foreign = plant("notes.cfe-tmp".into(), true);
    let report = cache.verify(false).expect("verify");
    assert_eq!(
        report.stale_temps_removed, 0,
        "nothing removed without --fix"
    );
    let report = cache.verify(true).expect("verify --fix");
    assert_eq!(report.stale_temps_removed, 2, "{report:?}");
    assert!(stale.iter().all(|p| !p.exists()));
    assert!(
        fresh.exists(),
        "a temp file younger than an hour may be in use"
    );
    assert!(foreign.exists(), "a file that is not ours is left alone");
    assert!(cache.get("a", &key(1)).is_some());
}

/// Regression: a sparse 100 GB journal made every cache-writing operation, the repairs
/// included, abort on a failed allocation. It is now damaged, and rebuilt from the
/// entries.
#[test]
fn an_enormous_journal_is_rebuilt_not_read() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    put(&open(config(tmp.path()), &clock), 1, b"kept");
    let journal = std::fs::OpenOptions::new()
        .write(true)
        .open(tmp.path().join("index.cfj"))
        .expect("journal");
    journal.set_len(100 << 30).expect("sparse 100 GB");
    let cache = open(config(tmp.path()), &clock);
    put(&cache, 2, b"new");
    let stats = cache.stats();
    assert_eq!(
        stats.entries, 2,
        "the index was rebuilt from the entry files"
    );
    assert_eq!(
        cache.get("a", &key(1)).map(|e| e.payload.to_vec()),
        Some(b"kept".to_vec())
    );
    assert!(
        std::fs::metadata(tmp.path().join("index.cfj"))
            .expect("journal")
            .len()
            < 1 << 20,
        "the journal was rewritten"
    );
    let report = cache.verify(true).expect("verify --fix");
    assert_eq!(report.bad.len(), 0, "{report:?}");
}
