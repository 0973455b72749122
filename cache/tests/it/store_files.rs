//! The store touches only its own files: foreign files stay, symlinks are not followed,
//! torn or misplaced entry files are misses.

use cf_cache::StoreLimits;
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

#[test]
fn torn_or_misplaced_entry_files_are_misses() {
    let (tmp, stores, _clock) = stores(StoreLimits::default());
    let a = stores.scope("a").expect("scope");
    a.set("one", b"value one", None).expect("set");
    a.set("two", b"value two", None).expect("set");
    let dir = tmp.path().join("agents/a");
    // An entry copied under another key's name records the wrong key: a miss.
    std::fs::copy(dir.join(entry_file("one")), dir.join(entry_file("two"))).expect("copy");
    assert_eq!(a.get("two").expect("get"), None);
    // A truncated file fails the length check: a miss.
    let path = dir.join(entry_file("one"));
    let data = std::fs::read(&path).expect("read");
    std::fs::write(&path, &data[..data.len() - 1]).expect("truncate");
    assert_eq!(a.get("one").expect("get"), None);
    // Both can be written again.
    a.set("one", b"again", None).expect("set");
    assert_eq!(a.get("one").expect("get").as_deref(), Some(&b"again"[..]));
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
