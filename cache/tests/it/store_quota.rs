//! Quotas and value limits, each tested obeyed and violated; TTL; accounting shared by
//! several handles.

use std::sync::Arc;
use std::time::Duration;

use cf_cache::{AgentStores, StoreError, StoreLimits, StoreUsage, WhenFull};

use crate::common::stores;

/// Small limits that refuse when full (the quota tests below predate eviction, the
/// default; `store_evict.rs` tests that).
fn small() -> StoreLimits {
    StoreLimits {
        max_bytes: 100,
        max_entries: 3,
        max_value_bytes: 40,
        default_ttl: Duration::from_secs(60),
        when_full: WhenFull::Refuse,
    }
}

#[test]
fn value_size_limit_obeyed_and_violated() {
    let (_tmp, stores, _clock) = stores(small());
    let a = stores.scope("a").expect("scope");
    a.set("k", &[7; 40], None).expect("40 bytes is the limit");
    let err = a.set("k", &[7; 41], None).expect_err("41 bytes is over");
    assert!(
        matches!(&err, StoreError::TooLarge(m) if m.contains("41")),
        "{err}"
    );
    assert_eq!(
        a.get("k").expect("get"),
        Some(vec![7; 40]),
        "old value kept"
    );
}

#[test]
fn byte_quota_obeyed_and_violated() {
    let (_tmp, stores, _clock) = stores(small());
    let a = stores.scope("a").expect("scope");
    // Charged: key + value bytes. 2 + 38 + 2 + 38 = 80 of 100.
    a.set("k1", &[1; 38], None).expect("k1");
    a.set("k2", &[2; 38], None).expect("k2");
    a.set("k3", &[3; 18], None).expect("exactly 100 bytes fits");
    assert_eq!(
        a.usage().expect("usage"),
        StoreUsage {
            bytes: 100,
            entries: 3
        }
    );
    let err = a.set("k3", &[3; 19], None).expect_err("101 bytes is over");
    assert!(
        matches!(&err, StoreError::QuotaExceeded(m) if m.contains("101") && m.contains("100")),
        "{err}"
    );
    assert_eq!(a.get("k3").expect("get"), Some(vec![3; 18]));
    // Another agent has its own quota.
    stores
        .scope("b")
        .expect("b")
        .set("k1", &[1; 38], None)
        .expect("b has room");
}

#[test]
fn entry_quota_obeyed_and_violated() {
    let (_tmp, stores, _clock) = stores(small());
    let a = stores.scope("a").expect("scope");
    for key in ["a", "b", "c"] {
        a.set(key, b"v", None).expect(key);
    }
    let err = a.set("d", b"v", None).expect_err("a fourth entry is over");
    assert!(
        matches!(&err, StoreError::QuotaExceeded(m) if m.contains("entries")),
        "{err}"
    );
    a.set("c", b"overwrite", None)
        .expect("an overwrite adds no entry");
    assert!(a.delete("a").expect("delete"));
    a.set("d", b"v", None).expect("room again after a delete");
}

#[test]
fn an_overwrite_accounts_for_the_old_size_exactly() {
    let (_tmp, stores, _clock) = stores(StoreLimits::default());
    let a = stores.scope("a").expect("scope");
    a.set("key", &[0; 1000], None).expect("set");
    assert_eq!(
        a.usage().expect("usage"),
        StoreUsage {
            bytes: 1003,
            entries: 1
        }
    );
    a.set("key", &[0; 10], None).expect("shrink");
    assert_eq!(
        a.usage().expect("usage"),
        StoreUsage {
            bytes: 13,
            entries: 1
        }
    );
    a.set("key", &[0; 500], None).expect("grow");
    assert_eq!(
        a.usage().expect("usage"),
        StoreUsage {
            bytes: 503,
            entries: 1
        }
    );
}

#[test]
fn expired_entries_are_misses_and_are_swept_before_a_refusal() {
    let (_tmp, stores, clock) = stores(small());
    let a = stores.scope("a").expect("scope");
    a.set("short", &[1; 38], Some(Duration::from_secs(1)))
        .expect("short");
    a.set("long", &[2; 38], None)
        .expect("long (default ttl 60 s)");
    clock.advance(Duration::from_millis(999));
    assert!(
        a.get("short").expect("get").is_some(),
        "alive until its expiry"
    );
    clock.advance(Duration::from_millis(1));
    // Not read since it expired, so still charged; the sweep makes room for this write.
    a.set("new", &[3; 38], None)
        .expect("expired entry swept to make room");
    assert_eq!(
        a.usage().expect("usage"),
        StoreUsage {
            bytes: 42 + 41,
            entries: 2
        }
    );
    assert_eq!(a.get("short").expect("get"), None);
    clock.advance(Duration::from_secs(60));
    assert_eq!(a.get("long").expect("get"), None, "default ttl applies");
    assert!(
        !a.delete("new").expect("delete"),
        "an expired entry is not live"
    );
    assert_eq!(a.usage().expect("usage"), StoreUsage::default());
}

#[test]
fn quota_is_shared_by_handles_in_separate_instances() {
    let (tmp, stores, clock) = stores(small());
    let other = AgentStores::open_with_clock(tmp.path(), small(), Arc::new(clock))
        .expect("second instance");
    let a1 = stores.scope("a").expect("scope 1");
    let a2 = other.scope("a").expect("scope 2");
    a1.set("k1", &[1; 38], None).expect("k1");
    a2.set("k2", &[2; 38], None).expect("k2");
    assert_eq!(
        a1.usage().expect("usage"),
        StoreUsage {
            bytes: 80,
            entries: 2
        }
    );
    let err = a1
        .set("k3", &[3; 38], None)
        .expect_err("over across handles");
    assert!(matches!(err, StoreError::QuotaExceeded(_)));
    assert!(a2.delete("k1").expect("delete"));
    a1.set("k3", &[3; 38], None)
        .expect("room made by the other handle");
    // A new scope rescans and agrees.
    assert_eq!(
        other.scope("a").expect("scope 3").usage().expect("usage"),
        a1.usage().expect("usage")
    );
}

#[test]
fn concurrent_writers_keep_usage_equal_to_what_is_stored() {
    let (tmp, stores, _clock) = stores(StoreLimits::default());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let root = tmp.path().to_owned();
            let shared = stores.clone();
            std::thread::spawn(move || {
                // Half the threads use their own instance, half share one.
                let own;
                let stores = if t % 2 == 0 {
                    own = AgentStores::open(&root, StoreLimits::default()).expect("open");
                    &own
                } else {
                    &shared
                };
                let store = Arc::new(stores.scope("a").expect("scope"));
                for i in 0..50u32 {
                    let key = format!("k{}", i % 20);
                    let value = vec![t as u8; (i as usize * 7 + t) % 300];
                    store.set(&key, &value, None).expect("set");
                    if i % 5 == 0 {
                        store.delete(&format!("k{}", (i + 3) % 20)).expect("delete");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    // Usage equals what the store holds: every key the threads used, read back.
    let store = stores.scope("a").expect("scope");
    let mut real = StoreUsage::default();
    for i in 0..20 {
        let key = format!("k{i}");
        if let Some(value) = store.get(&key).expect("get") {
            real.entries += 1;
            real.bytes += (key.len() + value.len()) as u64;
        }
    }
    let _ = &tmp;
    assert!(real.entries > 0);
    assert_eq!(store.usage().expect("usage"), real);
}

#[test]
fn writes_sweep_expired_entries_at_a_pace() {
    let limits = StoreLimits {
        max_bytes: 1 << 20,
        max_entries: 1000,
        ..small()
    };
    let (_tmp, stores, clock) = stores(limits);
    let a = stores.scope("a").expect("scope");
    let entries = |a: &cf_cache::AgentStore| a.usage().expect("usage").entries;
    // The first write sweeps (finding nothing): the next sweep is a second away.
    a.set("first", b"v", None).expect("set");
    for i in 0..3 {
        a.set(&format!("short{i}"), b"v", Some(Duration::from_millis(10)))
            .expect("set");
    }
    clock.advance(Duration::from_millis(20));
    a.set("second", b"v", None).expect("set");
    assert_eq!(
        entries(&a),
        5,
        "within the pace, a write with room to spare leaves expired entries (misses) for later"
    );
    assert_eq!(a.get("short0").expect("get"), None, "expired is a miss");
    // `get` removed the one it read; the others wait for the next sweep.
    assert_eq!(entries(&a), 4);
    clock.advance(Duration::from_secs(1));
    a.set("third", b"v", None).expect("set");
    assert_eq!(
        entries(&a),
        3,
        "past the pace, the write swept the other two"
    );
}
