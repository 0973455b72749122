//! An agent's keys cannot escape its scope or reach another agent's.

use cf_cache::{StoreError, StoreLimits};

use crate::common::{stores, tree};

/// Keys that would be dangerous if they ever became paths.
const HOSTILE_KEYS: &[&str] = &[
    "..",
    ".",
    "../b/secret",
    "../../outside.txt",
    "/etc/passwd",
    "\\..\\..\\windows",
    "a/../../b",
    "%2e%2e%2f%2e%2e%2f",
    "cfkv.lock",
    "cfkv.usage",
    "~",
    "$HOME",
    "\u{202e}gnp.exe",
    "\u{ff0f}etc\u{ff0f}passwd",
    "CON",
    "nul",
    "e\u{301}",
    "\u{e9}",
];

#[test]
fn hostile_keys_stay_hashed_inside_their_own_directory() {
    let (tmp, stores, _clock) = stores(StoreLimits::default());
    std::fs::write(tmp.path().join("outside.txt"), b"untouched").expect("sentinel");
    let a = stores.scope("a").expect("scope a");
    let b = stores.scope("b").expect("scope b");
    let long = "../".repeat(85);
    let mut keys: Vec<&str> = HOSTILE_KEYS.to_vec();
    keys.push(&long);

    for (i, key) in keys.iter().enumerate() {
        a.set(key, format!("value {i}").as_bytes(), None)
            .expect(key);
    }
    for (i, key) in keys.iter().enumerate() {
        let got = a.get(key).expect(key);
        assert_eq!(
            got,
            Some(format!("value {i}").into_bytes()),
            "{key:?} round-trips"
        );
        assert_eq!(
            b.get(key).expect(key),
            None,
            "{key:?} is invisible to agent b"
        );
    }
    // Two spellings of "é" are different keys, not folded together.
    assert_ne!(
        a.get("e\u{301}").expect("get"),
        a.get("\u{e9}").expect("get")
    );

    // Keys are rows of the agent's database, never paths.
    let files = tree(tmp.path());
    for path in &files {
        let ok = path == "outside.txt"
            || path == "agents"
            || path == "agents/a"
            || path == "agents/b"
            || ["agents/a/", "agents/b/"].iter().any(|d| {
                path.strip_prefix(d)
                    .is_some_and(|f| f.starts_with("store.sqlite"))
            });
        assert!(ok, "unexpected path {path}");
    }
    assert_eq!(a.usage().expect("usage").entries, keys.len() as u64);
    assert_eq!(
        std::fs::read(tmp.path().join("outside.txt")).expect("sentinel"),
        b"untouched"
    );
}

#[test]
fn invalid_keys_are_refused_and_create_nothing() {
    let (tmp, stores, _clock) = stores(StoreLimits::default());
    let a = stores.scope("a").expect("scope");
    let before = tree(tmp.path());
    let too_long = "k".repeat(257);
    for key in [
        "",
        "a\0b",
        "line\nbreak",
        "tab\t",
        "\u{1b}[2J",
        "\u{85}",
        &too_long,
    ] {
        assert!(
            matches!(a.set(key, b"v", None), Err(StoreError::InvalidKey(_))),
            "{key:?}"
        );
        assert!(
            matches!(a.get(key), Err(StoreError::InvalidKey(_))),
            "{key:?}"
        );
        assert!(
            matches!(a.delete(key), Err(StoreError::InvalidKey(_))),
            "{key:?}"
        );
    }
    assert_eq!(tree(tmp.path()), before);
    // The longest valid key is fine.
    a.set(&"k".repeat(256), b"v", None).expect("256-byte key");
}

#[test]
fn invalid_agent_names_are_refused() {
    let (tmp, stores, _clock) = stores(StoreLimits::default());
    let too_long = "a".repeat(65);
    for name in [
        "", ".", "..", "../a", "a/b", "a\\b", "a.b", "ä", "a\0", &too_long,
    ] {
        let err = stores.scope(name).expect_err(name);
        assert!(err.is_invalid_agent_name(), "{name:?}: {err}");
    }
    assert_eq!(tree(tmp.path()), vec!["agents".to_owned()]);
}

#[test]
fn the_same_key_in_two_agents_is_two_values() {
    let (_tmp, stores, _clock) = stores(StoreLimits::default());
    let a = stores.scope("a").expect("a");
    let b = stores.scope("b").expect("b");
    a.set("shared", b"from a", None).expect("a set");
    b.set("shared", b"from b", None).expect("b set");
    assert_eq!(
        a.get("shared").expect("a get").as_deref(),
        Some(&b"from a"[..])
    );
    assert_eq!(
        b.get("shared").expect("b get").as_deref(),
        Some(&b"from b"[..])
    );
    assert!(b.delete("shared").expect("b delete"));
    assert_eq!(
        a.get("shared").expect("a get").as_deref(),
        Some(&b"from a"[..])
    );
}

#[test]
fn a_symlinked_agent_directory_is_refused() {
    let (tmp, stores, _clock) = stores(StoreLimits::default());
    let victim = stores.scope("victim").expect("victim");
    victim.set("k", b"private", None).expect("set");
    let agents = tmp.path().join("agents");
    std::os::unix::fs::symlink(agents.join("victim"), agents.join("thief")).expect("symlink");
    let outside = tempfile::tempdir().expect("outside");
    std::os::unix::fs::symlink(outside.path(), agents.join("escaper")).expect("symlink");

    let err = stores
        .scope("thief")
        .expect_err("symlink to a sibling is refused");
    assert!(err.is_not_private(), "{err}");
    let err = stores
        .scope("escaper")
        .expect_err("symlink outside is refused");
    assert!(err.is_not_private(), "{err}");
    assert_eq!(std::fs::read_dir(outside.path()).expect("read").count(), 0);
    assert_eq!(
        victim.get("k").expect("get").as_deref(),
        Some(&b"private"[..])
    );
}

#[test]
fn stores_are_send_sync_and_clone() {
    fn check<T: Send + Sync>() {}
    check::<cf_cache::AgentStores>();
    check::<cf_cache::AgentStore>();
    let (_tmp, stores, _clock) = stores(StoreLimits::default());
    let copy = stores.clone();
    stores
        .scope("a")
        .expect("a")
        .set("k", b"v", None)
        .expect("set");
    assert!(copy.scope("a").expect("a").get("k").expect("get").is_some());
}
