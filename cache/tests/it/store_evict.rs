//! A full agent store behaves like a cache: it evicts its least recently used entries
//! (the default) or refuses at once when configured so, and either way touches no more
//! rows than it needs: every query goes through an index, which the store's count of
//! full-scan steps shows (regression: every `set` on a full store rescanned the whole
//! directory, and the store slowed quadratically once full).

use std::time::Duration;

use cf_cache::{StoreError, StoreLimits, StoreUsage, WhenFull};

use crate::common::stores;

fn limits(when_full: WhenFull) -> StoreLimits {
    StoreLimits {
        max_entries: 1000,
        when_full,
        ..StoreLimits::default()
    }
}

#[test]
fn a_full_store_evicts_the_least_recently_used_without_a_scan() {
    let (_tmp, stores, _clock) = stores(limits(WhenFull::Evict));
    let a = stores.scope("a").expect("scope");
    for i in 0..1000 {
        a.set(&format!("k{i}"), b"value", None).expect("fills");
    }
    assert_eq!(a.usage().expect("usage").entries, 1000, "exactly full");
    // A use makes k0 the most recent: it outlives k1.
    assert!(a.get("k0").expect("get").is_some());
    for i in 1000..3000 {
        a.set(&format!("k{i}"), b"value", None)
            .expect("a full store makes room");
        assert!(a.usage().expect("usage").entries <= 1000, "the quota holds");
    }
    assert_eq!(
        a.get("k1").expect("get"),
        None,
        "the least recently used went"
    );
    assert!(a.get("k2999").expect("get").is_some(), "the newest stays");
    assert_eq!(a.full_scan_steps(), 0, "no query scanned the table");
}

#[test]
fn a_byte_quota_evicts_as_many_entries_as_the_new_one_needs() {
    let (_tmp, stores, _clock) = stores(StoreLimits {
        max_bytes: 1000,
        ..limits(WhenFull::Evict)
    });
    let a = stores.scope("a").expect("scope");
    for i in 0..10 {
        a.set(&format!("k{i}"), &[b'x'; 98], None).expect("fills"); // 100 bytes each
    }
    assert_eq!(a.usage().expect("usage").bytes, 1000);
    a.set("big", &[b'y'; 297], None).expect("evicts three"); // 300 bytes
    assert_eq!(
        a.usage().expect("usage"),
        StoreUsage {
            bytes: 1000,
            entries: 8
        }
    );
    for gone in ["k0", "k1", "k2"] {
        assert_eq!(a.get(gone).expect("get"), None, "{gone}");
    }
    assert!(a.get("k3").expect("get").is_some());
    let err = a
        .set("huge", &[b'z'; 997], None)
        .expect_err("alone over the quota");
    assert!(matches!(err, StoreError::QuotaExceeded(_)), "{err:?}");
    assert!(
        a.get("k3").expect("get").is_some(),
        "nothing evicted for it"
    );
    assert_eq!(a.full_scan_steps(), 0);
}

#[test]
fn a_full_store_configured_to_refuse_refuses_at_once_without_a_scan() {
    let (_tmp, stores, _clock) = stores(limits(WhenFull::Refuse));
    let a = stores.scope("a").expect("scope");
    for i in 0..1000 {
        a.set(&format!("k{i}"), b"value", None).expect("fills");
    }
    for i in 1000..1100 {
        let err = a.set(&format!("k{i}"), b"value", None).expect_err("full");
        assert!(matches!(err, StoreError::QuotaExceeded(_)), "{err:?}");
    }
    a.set("k5", b"replaced", None)
        .expect("replacing an entry fits");
    assert!(a.get("k0").expect("get").is_some(), "nothing was evicted");
    assert_eq!(a.full_scan_steps(), 0);
}

#[test]
fn expired_entries_make_room_before_live_ones_are_evicted() {
    let (_tmp, stores, clock) = stores(StoreLimits {
        max_entries: 100,
        ..limits(WhenFull::Evict)
    });
    let a = stores.scope("a").expect("scope");
    for i in 0..50 {
        a.set(&format!("short{i}"), b"v", Some(Duration::from_secs(10)))
            .expect("set");
    }
    for i in 0..50 {
        a.set(&format!("long{i}"), b"v", Some(Duration::from_secs(3600)))
            .expect("set");
    }
    clock.advance(Duration::from_secs(11));
    for i in 0..50 {
        a.set(&format!("new{i}"), b"v", None).expect("set");
    }
    for i in 0..50 {
        assert!(
            a.get(&format!("long{i}")).expect("get").is_some(),
            "live entries stay while expired ones make room"
        );
    }
    assert_eq!(a.usage().expect("usage").entries, 100);
    assert_eq!(a.full_scan_steps(), 0);
}
