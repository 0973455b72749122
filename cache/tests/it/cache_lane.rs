//! The cache stays in its lane: it never follows a symlink, never touches a file it did
//! not create, and builds no path from request data.

use cf_cache::{EntryMeta, KeyBuilder};

use crate::common::{clock, config, disk_usage, entry_path, key, open, tree};

#[test]
fn a_symlink_planted_in_the_cache_is_never_followed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("outside");
    let clock = clock();
    let cache = open(config(tmp.path()), &clock);
    cache
        .put("a", &key(1), b"valid entry", EntryMeta::default())
        .expect("put");
    drop(cache);
    // The valid entry moves outside; a link to it takes its place. Another link points
    // at a file the cache must never read, remove or overwrite.
    let victim = outside.path().join("victim.cfe");
    std::fs::rename(entry_path(tmp.path(), &key(1)), &victim).expect("move out");
    std::os::unix::fs::symlink(&victim, entry_path(tmp.path(), &key(1))).expect("link 1");
    let precious = outside.path().join("precious.txt");
    std::fs::write(&precious, b"do not touch").expect("precious");
    std::os::unix::fs::symlink(&precious, entry_path(tmp.path(), &key(2))).expect("link 2");
    let victim_bytes = std::fs::read(&victim).expect("victim");

    let cache = open(config(tmp.path()), &clock);
    assert_eq!(
        cache.get("a", &key(1)),
        None,
        "a link to a valid entry is not followed"
    );
    assert_eq!(cache.get("a", &key(2)), None);
    let report = cache.verify(true).expect("verify");
    assert_eq!(report.bad.len(), 0, "links are not entries: {report:?}");
    cache.prune().expect("prune");
    cache
        .put("a", &key(2), b"new", EntryMeta::default())
        .expect("put replaces the link");
    assert_eq!(&*cache.get("a", &key(2)).expect("hit").payload, b"new");
    cache.clear().expect("clear");

    assert_eq!(std::fs::read(&precious).expect("precious"), b"do not touch");
    assert_eq!(std::fs::read(&victim).expect("victim"), victim_bytes);
    assert!(
        entry_path(tmp.path(), &key(1)).symlink_metadata().is_ok(),
        "link 1 left alone"
    );
}

#[test]
fn a_symlinked_journal_or_lock_does_not_leak_writes_outside() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("outside");
    let target = outside.path().join("target");
    std::fs::write(&target, b"original").expect("target");
    std::os::unix::fs::symlink(&target, tmp.path().join("index.cfj")).expect("link");
    let cache = open(config(tmp.path()), &clock());
    cache
        .put("a", &key(1), b"x", EntryMeta::default())
        .expect("put");
    assert!(cache.get("a", &key(1)).is_some());
    assert_eq!(std::fs::read(&target).expect("target"), b"original");
}

#[test]
fn foreign_files_are_left_alone_and_survive_clear() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    std::fs::write(tmp.path().join("README.txt"), b"mine").expect("foreign");
    std::fs::write(tmp.path().join("notes.json"), b"{}").expect("foreign");
    std::fs::write(tmp.path().join("ABC.cfe"), b"not our name").expect("foreign");
    std::fs::create_dir(tmp.path().join("sub")).expect("dir");
    std::fs::write(tmp.path().join("sub/x.cfe"), b"nested").expect("nested");
    let cache = open(config(tmp.path()), &clock);
    for n in 0..5 {
        cache
            .put("a", &key(n), b"v", EntryMeta::default())
            .expect("put");
    }
    assert!(cache.verify(true).expect("verify").is_clean());
    assert_eq!(cache.clear().expect("clear"), 5);
    assert_eq!(disk_usage(tmp.path()).0, 0);
    assert_eq!(
        std::fs::read(tmp.path().join("README.txt")).expect("r"),
        b"mine"
    );
    assert_eq!(
        std::fs::read(tmp.path().join("notes.json")).expect("r"),
        b"{}"
    );
    assert_eq!(
        std::fs::read(tmp.path().join("ABC.cfe")).expect("r"),
        b"not our name"
    );
    assert_eq!(
        std::fs::read(tmp.path().join("sub/x.cfe")).expect("r"),
        b"nested"
    );
    let stats = cache.stats();
    assert_eq!((stats.entries, stats.bytes, stats.hits), (0, 0, 0));
    cache
        .put("a", &key(1), b"after", EntryMeta::default())
        .expect("usable after clear");
    assert!(cache.get("a", &key(1)).is_some());
}

#[test]
fn request_text_never_becomes_a_path() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = open(config(tmp.path()), &clock());
    for hostile in [
        "../../etc/passwd",
        "/abs",
        "a\0b",
        "..\\..",
        "\u{202e}x",
        ".",
    ] {
        let key = KeyBuilder::new("v1").field_str("prompt", hostile).finish();
        cache
            .put(hostile, &key, hostile.as_bytes(), EntryMeta::default())
            .expect("put");
        assert!(cache.get(hostile, &key).is_some());
    }
    for path in tree(tmp.path()) {
        let ok = ["cache.lock", "cache.secret", "index.cfj"].contains(&path.as_str())
            || (path.len() == 68 && path.ends_with(".cfe"));
        assert!(ok, "unexpected file {path}");
    }
}
