//! The cache stays in its lane: it never follows a symlink, never touches a file it did
//! not create, and builds no path from request data. Everything it keeps is in
//! `responses.sqlite` (with SQLite's `-wal` and `-shm`) and, when it generates one,
//! `cache.secret`.

use cf_cache::{CacheConfig, EntryMeta, KeyBuilder, ResponseCache};

use crate::common::{DB_FILE, clock, config, key, open, rows, tree};

/// The names the cache may create in its directory.
fn ours(name: &str) -> bool {
    [
        "cache.secret",
        DB_FILE,
        "responses.sqlite-wal",
        "responses.sqlite-shm",
    ]
    .contains(&name)
}

#[test]
fn a_symlink_planted_as_the_database_is_refused_and_its_target_untouched() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("outside");
    let clock = clock();
    // A real cache database outside, and a link to it in the cache directory.
    let elsewhere = outside.path().join("cache");
    open(config(&elsewhere), &clock)
        .put("a", &key(1), b"valid entry", EntryMeta::default())
        .expect("put");
    let target = elsewhere.join(DB_FILE);
    let target_bytes = std::fs::read(&target).expect("target");
    std::os::unix::fs::symlink(&target, tmp.path().join(DB_FILE)).expect("link");

    let err = ResponseCache::open_with_clock(config(tmp.path()), std::sync::Arc::new(clock))
        .expect_err("a linked database is refused");
    assert!(!err.to_string().is_empty());
    assert_eq!(
        std::fs::read(&target).expect("target"),
        target_bytes,
        "the target is neither read into nor written"
    );
    assert_eq!(
        std::fs::read_link(tmp.path().join(DB_FILE)).expect("the link stays"),
        target
    );
    assert_eq!(tree(tmp.path()), [DB_FILE], "nothing set aside or created");
}

/// SQLite opens `-wal` and `-shm` by name beside the database. A link planted under
/// either name is never written through: with an existing database the open is refused;
/// in a fresh directory SQLite may replace a stale `-wal` name by its own file (the link
/// goes, its target stays as it was).
#[test]
fn a_symlink_planted_as_the_log_or_shared_memory_does_not_leak_writes_outside() {
    for existing in [true, false] {
        for name in ["responses.sqlite-wal", "responses.sqlite-shm"] {
            let tmp = tempfile::tempdir().expect("tempdir");
            let outside = tempfile::tempdir().expect("outside");
            let clock = clock();
            if existing {
                open(config(tmp.path()), &clock)
                    .put("a", &key(0), b"x", EntryMeta::default())
                    .expect("put");
            }
            let target = outside.path().join("target");
            std::fs::write(&target, b"original").expect("target");
            std::os::unix::fs::symlink(&target, tmp.path().join(name)).expect("link");
            match ResponseCache::open_with_clock(config(tmp.path()), std::sync::Arc::new(clock)) {
                Ok(cache) => {
                    assert!(!existing, "{name}: opened through a link");
                    cache
                        .put("a", &key(1), b"x", EntryMeta::default())
                        .expect("put");
                    assert!(cache.get("a", &key(1)).is_some());
                }
                Err(e) => assert!(!e.to_string().is_empty()),
            }
            assert_eq!(
                std::fs::read(&target).expect("target"),
                b"original",
                "{name}, existing database: {existing}"
            );
        }
    }
}

#[test]
fn symlinks_under_the_old_formats_names_are_not_followed_nor_removed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("outside");
    let clock = clock();
    let mut links = Vec::new();
    for name in [
        "index.cfj".to_owned(),
        "cache.lock".to_owned(),
        format!("{}.cfe", key(1).to_hex()),
    ] {
        let target = outside.path().join(&name);
        std::fs::write(&target, b"original").expect("target");
        std::os::unix::fs::symlink(&target, tmp.path().join(&name)).expect("link");
        links.push((name, target));
    }
    let cache = open(config(tmp.path()), &clock);
    assert_eq!(cache.get("a", &key(1)), None, "a link is not an entry");
    cache
        .put("a", &key(1), b"x", EntryMeta::default())
        .expect("put");
    assert!(cache.get("a", &key(1)).is_some());
    assert!(cache.verify(true).expect("verify").is_clean());
    cache.prune().expect("prune");
    cache.clear().expect("clear");
    drop(cache);
    for (name, target) in links {
        assert_eq!(std::fs::read(&target).expect("target"), b"original");
        assert_eq!(
            std::fs::read_link(tmp.path().join(&name)).expect("the link stays"),
            target,
            "{name}"
        );
    }
}

#[test]
fn foreign_files_are_left_alone_and_survive_clear() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let foreign = [
        ("README.txt", &b"mine"[..]),
        ("notes.json", b"{}"),
        ("ABC.cfe", b"not our name"),
        ("responses.sqlite.bak", b"a copy someone made"),
        ("sub/x.cfe", b"nested"),
    ];
    std::fs::create_dir(tmp.path().join("sub")).expect("dir");
    for (name, bytes) in foreign {
        std::fs::write(tmp.path().join(name), bytes).expect("foreign");
    }
    let before: Vec<_> = foreign
        .iter()
        .map(|(name, _)| {
            std::fs::metadata(tmp.path().join(name))
                .expect("meta")
                .modified()
                .expect("mtime")
        })
        .collect();

    let cache = open(config(tmp.path()), &clock);
    for n in 0..5 {
        cache
            .put("a", &key(n), b"v", EntryMeta::default())
            .expect("put");
    }
    assert!(cache.verify(true).expect("verify").is_clean());
    cache.prune().expect("prune");
    assert_eq!(cache.clear().expect("clear"), 5);
    assert_eq!(rows(tmp.path()), (0, 0));
    for ((name, bytes), mtime) in foreign.iter().zip(before) {
        let path = tmp.path().join(name);
        assert_eq!(std::fs::read(&path).expect("r"), *bytes, "{name}");
        assert_eq!(
            std::fs::metadata(&path)
                .expect("meta")
                .modified()
                .expect("mtime"),
            mtime,
            "{name} not rewritten"
        );
    }
    let stats = cache.stats();
    assert_eq!((stats.entries, stats.bytes, stats.hits), (0, 0, 0));
    cache
        .put("a", &key(1), b"after", EntryMeta::default())
        .expect("usable after clear");
    assert!(cache.get("a", &key(1)).is_some());
}

#[test]
fn the_directory_holds_only_the_database_and_the_secret() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    // A generated secret: `cache.secret` appears beside the database.
    let cache = ResponseCache::open_with_clock(
        CacheConfig::new(tmp.path()),
        std::sync::Arc::new(clock.clone()),
    )
    .expect("open");
    let mut big = Vec::new();
    for n in 0..200u64 {
        big.resize(100 + (n as usize * 397) % 20_000, n as u8);
        cache
            .put("a", &key(n), &big, EntryMeta::default())
            .expect("put");
        assert!(cache.get("a", &key(n)).is_some());
        if n % 50 == 49 {
            clock.advance(std::time::Duration::from_secs(48 * 3600));
            cache.prune().expect("prune");
            assert!(cache.verify(true).expect("verify").is_clean());
        }
    }
    cache.clear().expect("clear");
    let names = tree(tmp.path());
    assert!(names.contains(&"cache.secret".to_owned()), "{names:?}");
    assert!(names.contains(&DB_FILE.to_owned()), "{names:?}");
    for name in &names {
        assert!(ours(name), "unexpected file {name}");
    }
    drop(cache);
    for name in tree(tmp.path()) {
        assert!(ours(&name), "unexpected file {name} after close");
    }

    // A configured secret: no secret file.
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = open(config(tmp.path()), &clock);
    cache
        .put("a", &key(1), b"x", EntryMeta::default())
        .expect("put");
    for name in tree(tmp.path()) {
        assert!(
            ours(&name) && name != "cache.secret",
            "unexpected file {name}"
        );
    }
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
        "responses.sqlite",
        "x'; DROP TABLE entries; --",
    ] {
        let key = KeyBuilder::new("v1").field_str("prompt", hostile).finish();
        cache
            .put(hostile, &key, hostile.as_bytes(), EntryMeta::default())
            .expect("put");
        assert_eq!(
            cache.get(hostile, &key).map(|e| e.payload.to_vec()),
            Some(hostile.as_bytes().to_vec())
        );
    }
    assert_eq!(cache.stats().entries, 8);
    for path in tree(tmp.path()) {
        assert!(ours(&path), "unexpected file {path}");
    }
}
