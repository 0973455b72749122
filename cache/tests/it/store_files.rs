//! The store touches only its own files: foreign files stay, symlinks are not followed,
//! and a store of the old one-file-per-entry format is imported once into its
//! database (torn, misplaced and expired entry files dropped).

use cf_cache::{Clock as _, StoreLimits};
use sha2::{Digest, Sha256};

use crate::common::stores;

fn entry_file(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.kv")
}

#[test]
fn foreign_files_are_left_alone_and_not_charged() {
    let (tmp, stores, _clock) = stores(StoreLimits::default());
    let dir = tmp.path().join("agents/a");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("notes.txt"), vec![b'x'; 5000]).expect("foreign");
    std::fs::write(dir.join("0000.kv"), b"not an entry name").expect("foreign");
    let a = stores.scope("a").expect("scope");
    a.set("k", b"v", None).expect("set");
    assert_eq!(a.usage().expect("usage").bytes, 2);
    assert!(a.delete("k").expect("delete"));
    assert_eq!(
        std::fs::read(dir.join("notes.txt")).expect("read").len(),
        5000
    );
    assert!(dir.join("0000.kv").exists());
}

#[test]
fn a_symlink_under_an_entry_name_is_never_followed() {
    let (tmp, stores, _clock) = stores(StoreLimits::default());
    let a = stores.scope("a").expect("scope");
    let outside = tmp.path().join("outside.txt");
    // A well-formed entry for key "k", outside the store.
    let mut forged = b"CFKVENT1".to_vec();
    forged.extend_from_slice(&u64::MAX.to_le_bytes());
    forged.extend_from_slice(&1u32.to_le_bytes());
    forged.extend_from_slice(&6u64.to_le_bytes());
    forged.extend_from_slice(b"kforged");
    std::fs::write(&outside, &forged).expect("outside");
    let link = tmp.path().join("agents/a").join(entry_file("k"));
    std::os::unix::fs::symlink(&outside, &link).expect("symlink");

    assert_eq!(a.get("k").expect("get"), None, "the link is not read");
    assert!(
        !a.delete("k").expect("delete"),
        "the link is not removed as an entry"
    );
    assert!(link.symlink_metadata().is_ok(), "the link itself stays");
    a.set("k", b"mine", None)
        .expect("set replaces the name, not the target");
    assert_eq!(a.get("k").expect("get").as_deref(), Some(&b"mine"[..]));
    assert_eq!(
        std::fs::read(&outside).expect("outside"),
        forged,
        "target untouched"
    );
}

/// An entry file of the old format.
fn old_entry(key: &str, value: &[u8], expires_ms: u64) -> Vec<u8> {
    let mut file = b"CFKVENT1".to_vec();
    file.extend_from_slice(&expires_ms.to_le_bytes());
    file.extend_from_slice(&(key.len() as u32).to_le_bytes());
    file.extend_from_slice(&(value.len() as u64).to_le_bytes());
    file.extend_from_slice(key.as_bytes());
    file.extend_from_slice(value);
    file
}

#[test]
fn an_old_format_store_is_imported_once() {
    let (tmp, stores, clock) = stores(StoreLimits::default());
    let dir = tmp.path().join("agents/a");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let later = clock.now_ms() + 60_000;
    let write = |name: String, data: Vec<u8>| std::fs::write(dir.join(name), data).expect("write");
    write(entry_file("one"), old_entry("one", b"value one", later));
    write(entry_file("two"), old_entry("two", b"value two", later));
    // Misplaced: an entry of "one" under the name of "three".
    write(entry_file("three"), old_entry("one", b"stolen", later));
    // Torn: one byte short.
    let torn = old_entry("four", b"value four", later);
    write(entry_file("four"), torn[..torn.len() - 1].to_vec());
    // Expired.
    write(
        entry_file("five"),
        old_entry("five", b"old", clock.now_ms() - 1),
    );
    write("cfkv.usage".into(), b"CFKVUSE1 whatever".to_vec());
    write("notes.txt".into(), b"not ours".to_vec());

    let a = stores.scope("a").expect("scope");
    assert_eq!(
        a.get("one").expect("get").as_deref(),
        Some(&b"value one"[..])
    );
    assert_eq!(
        a.get("two").expect("get").as_deref(),
        Some(&b"value two"[..])
    );
    for gone in ["three", "four", "five"] {
        assert_eq!(a.get(gone).expect("get"), None, "{gone} was dropped");
    }
    assert_eq!(
        a.usage().expect("usage"),
        cf_cache::StoreUsage {
            bytes: 2 * (3 + 9),
            entries: 2
        }
    );
    let left: Vec<String> = std::fs::read_dir(&dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .filter(|n| !n.starts_with("store.sqlite"))
        .collect();
    assert_eq!(
        left,
        ["notes.txt"],
        "the old files went, the foreign one stayed"
    );
    // Once: a second open finds nothing to import and the values are still there.
    drop(a);
    let again = stores.scope("a").expect("scope");
    assert_eq!(
        again.get("one").expect("get").as_deref(),
        Some(&b"value one"[..])
    );
}

#[test]
fn a_symlink_in_place_of_the_database_is_refused() {
    let (tmp, stores, _clock) = stores(StoreLimits::default());
    let dir = tmp.path().join("agents/a");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let outside = tmp.path().join("elsewhere.sqlite");
    std::fs::write(&outside, b"").expect("outside");
    std::os::unix::fs::symlink(&outside, dir.join("store.sqlite")).expect("symlink");
    let err = stores.scope("a").expect_err("refused");
    assert!(err.to_string().contains("store of agent a"), "{err}");
    assert_eq!(std::fs::read(&outside).expect("outside"), b"", "untouched");
}

#[test]
fn data_survives_reopening() {
    let (tmp, stores, clock) = stores(StoreLimits::default());
    stores
        .scope("a")
        .expect("scope")
        .set("k", b"kept", None)
        .expect("set");
    drop(stores);
    let reopened = cf_cache::AgentStores::open_with_clock(
        tmp.path(),
        StoreLimits::default(),
        std::sync::Arc::new(clock),
    )
    .expect("reopen");
    let a = reopened.scope("a").expect("scope");
    assert_eq!(a.get("k").expect("get").as_deref(), Some(&b"kept"[..]));
    assert_eq!(a.usage().expect("usage").entries, 1);
}

/// The database and SQLite's companions are the user's alone (0600), as the entry files
/// were.
#[test]
fn the_database_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let (tmp, stores, _clock) = stores(StoreLimits::default());
    let a = stores.scope("a").expect("scope");
    a.set("k", b"v", None).expect("set");
    let dir = tmp.path().join("agents/a");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("read_dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name().into_string().expect("utf-8");
        assert!(name.starts_with("store.sqlite"), "{name}");
        let mode = entry.metadata().expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{name} has mode {mode:o}");
        seen += 1;
    }
    assert!(seen >= 1);
}
