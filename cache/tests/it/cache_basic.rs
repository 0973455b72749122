//! The seed's basic behaviours: round trips, misses, keys, sizes, persistence,
//! exclusions, statistics.

use std::time::Duration;

use cf_cache::{CacheConfig, EntryMeta, KeyBuilder, ResponseCache, entry_size};

use crate::common::{clock, config, key, open, rows};

fn meta(tokens: u64, cost: Option<f64>) -> EntryMeta {
    EntryMeta {
        tokens,
        cost_usd: cost,
        ttl: None,
    }
}

#[test]
fn handles_are_clone_send_and_sync() {
    fn check<T: Clone + Send + Sync + 'static>() {}
    check::<ResponseCache>();
    check::<cf_cache::CacheKey>();
    check::<cf_cache::CachedEntry>();
}

#[test]
fn set_then_get_round_trips_and_an_empty_cache_misses() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = open(config(tmp.path()), &clock());
    assert_eq!(cache.get("agent", &key(1)), None, "miss on an empty cache");
    cache
        .put("agent", &key(1), b"answer", meta(42, Some(0.01)))
        .expect("put");
    let hit = cache.get("agent", &key(1)).expect("hit");
    assert_eq!(&*hit.payload, b"answer");
    assert_eq!((hit.tokens, hit.cost_usd), (42, Some(0.01)));
    assert_eq!(cache.get("agent", &key(2)), None, "another key misses");
}

#[test]
fn keys_are_consistent_and_unique() {
    let build = |model: &str, temperature: f64, system: Option<&[u8]>| {
        KeyBuilder::new("v1")
            .field_str("model", model)
            .field_f64("temperature", temperature)
            .field_opt("system", system)
            .field_list("messages", ["user: hi"])
            .finish()
    };
    let a = build("m", 1.0, Some(b"be brief"));
    assert_eq!(
        a,
        build("m", 1.0, Some(b"be brief")),
        "same request, same key"
    );
    assert_ne!(a, build("m2", 1.0, Some(b"be brief")), "model matters");
    assert_ne!(a, build("m", 0.5, Some(b"be brief")), "temperature matters");
    assert_ne!(
        a,
        build("m", 1.0, Some(b"be long")),
        "system prompt matters"
    );
    assert_ne!(
        a,
        build("m", 1.0, None),
        "a missing system prompt is not an empty one"
    );
    let ab_c = KeyBuilder::new("v1")
        .field_str("x", "ab")
        .field_str("y", "c")
        .finish();
    let a_bc = KeyBuilder::new("v1")
        .field_str("x", "a")
        .field_str("y", "bc")
        .finish();
    assert_ne!(ab_c, a_bc, "adjacent fields are not ambiguous");
    assert_eq!(a.to_hex().len(), 64, "full 256-bit key");
}

#[test]
fn a_two_mib_payload_round_trips_across_a_reopen() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let payload: Vec<u8> = (0..2 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let cache = open(config(tmp.path()), &clock);
    cache
        .put("a", &key(1), &payload, meta(1, None))
        .expect("put");
    assert_eq!(
        &*cache.get("a", &key(1)).expect("hit").payload,
        &payload[..]
    );
    drop(cache);
    let cache = open(config(tmp.path()), &clock);
    assert_eq!(
        &*cache.get("a", &key(1)).expect("hit after reopen").payload,
        &payload[..]
    );
}

#[test]
fn an_overwrite_adjusts_the_size_exactly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = open(config(tmp.path()), &clock());
    cache
        .put("a", &key(1), &[1; 1000], meta(0, None))
        .expect("put");
    cache
        .put("a", &key(2), &[2; 10], meta(0, None))
        .expect("put");
    assert_eq!(cache.stats().bytes, entry_size(1000) + entry_size(10));
    cache
        .put("a", &key(1), &[1; 300], meta(0, None))
        .expect("overwrite");
    let stats = cache.stats();
    let want = entry_size(300) + entry_size(10);
    assert_eq!((stats.entries, stats.bytes), (2, want));
    assert_eq!(
        rows(tmp.path()),
        (2, want),
        "one value per key, the old one gone"
    );
    let info = cache.entry_info(&key(1)).expect("info").expect("indexed");
    assert_eq!(info.size, entry_size(300));
    assert_eq!(
        &*cache.get("a", &key(1)).expect("hit").payload,
        &[1; 300][..]
    );
}

#[test]
fn entries_and_counters_persist_across_reopen() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cache = open(config(tmp.path()), &clock);
    for n in 0..10 {
        cache
            .put(
                "a",
                &key(n),
                format!("v{n}").as_bytes(),
                meta(100, Some(0.5)),
            )
            .expect("put");
    }
    assert!(cache.get("a", &key(3)).is_some());
    assert!(cache.get("a", &key(99)).is_none());
    drop(cache);
    let cache = open(config(tmp.path()), &clock);
    for n in 0..10 {
        assert_eq!(
            &*cache.get("a", &key(n)).expect("hit").payload,
            format!("v{n}").as_bytes()
        );
    }
    let stats = cache.stats();
    assert_eq!((stats.entries, stats.hits, stats.misses), (10, 11, 1));
    assert_eq!(stats.tokens_saved, 1100);
    assert!((stats.cost_saved_usd - 5.5).abs() < 1e-9);
    assert!((stats.hit_rate - 11.0 / 12.0).abs() < 1e-9);
}

#[test]
fn excluded_agents_are_never_cached() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(tmp.path());
    cfg.exclude_agents = vec!["random-agent".into()];
    let cache = open(cfg, &clock());
    cache
        .put("random-agent", &key(1), b"x", meta(1, None))
        .expect("put is a no-op");
    assert_eq!(cache.get("random-agent", &key(1)), None);
    assert_eq!(rows(tmp.path()), (0, 0), "nothing written");
    cache
        .put("other", &key(1), b"y", meta(1, None))
        .expect("put");
    assert_eq!(
        cache.get("random-agent", &key(1)),
        None,
        "excluded even when present"
    );
    let stats = cache.stats();
    assert_eq!(
        (stats.hits, stats.misses, stats.entries),
        (0, 0, 1),
        "exclusions count nothing"
    );
    assert!(cache.is_excluded("random-agent") && !cache.is_excluded("other"));
}

#[test]
fn an_entry_larger_than_the_cache_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(tmp.path());
    cfg.max_bytes = entry_size(880);
    let cache = open(cfg, &clock());
    cache
        .put("a", &key(1), &[0; 880], meta(0, None))
        .expect("exactly the limit fits");
    let err = cache
        .put("a", &key(2), &[0; 881], meta(0, None))
        .expect_err("over");
    assert!(err.is_too_large(), "{err}");
    assert!(cache.get("a", &key(1)).is_some());
    assert_eq!(rows(tmp.path()), (1, entry_size(880)));
}

#[test]
fn a_zero_ttl_stores_nothing_and_zero_limits_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = open(config(tmp.path()), &clock());
    let zero = EntryMeta {
        ttl: Some(Duration::ZERO),
        ..EntryMeta::default()
    };
    cache.put("a", &key(1), b"x", zero).expect("put");
    assert_eq!(cache.get("a", &key(1)), None);
    let mut cfg = CacheConfig::new(tmp.path());
    cfg.max_bytes = 0;
    assert!(ResponseCache::open(cfg).is_err());
}

#[test]
fn a_generated_secret_is_kept_across_reopens() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cfg = CacheConfig::new(tmp.path());
    open(cfg.clone(), &clock)
        .put("a", &key(1), b"x", meta(0, None))
        .expect("put");
    assert!(
        open(cfg, &clock).get("a", &key(1)).is_some(),
        "same generated secret"
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(tmp.path().join("cache.secret"))
            .expect("secret")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn the_memory_layer_is_bounded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(tmp.path());
    cfg.memory_max_entries = 3;
    cfg.memory_max_bytes = 250;
    let cache = open(cfg, &clock());
    for n in 0..10 {
        cache
            .put("a", &key(n), &[0; 100], meta(0, None))
            .expect("put");
        assert!(cache.get("a", &key(n)).is_some());
    }
    let stats = cache.stats();
    assert_eq!((stats.memory_entries, stats.memory_bytes), (2, 200));
    assert_eq!(stats.entries, 10, "the disk keeps everything");
}

#[test]
fn put_many_stores_each_entry_and_reports_each_failure_in_place() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(tmp.path());
    cfg.max_bytes = 10_000;
    cfg.exclude_agents = vec!["skipped".to_owned()];
    let clock = clock();
    let cache = open(cfg.clone(), &clock);
    let keys: Vec<_> = (1..=5).map(key).collect();
    let big = vec![0u8; 10_001];
    let put = |i: usize, agent, payload: &'static [u8]| cf_cache::Put {
        agent,
        key: &keys[i],
        payload,
        meta: meta(i as u64, None),
    };
    let mut puts = vec![put(0, "a", b"zero"), put(1, "a", b"one")];
    puts.push(cf_cache::Put {
        payload: &big,
        ..put(2, "a", b"")
    });
    puts.extend([put(3, "skipped", b"three"), put(4, "a", b"four")]);
    let results = cache.put_many(&puts);
    assert_eq!(results.len(), 5, "one result per entry");
    let failed: Vec<usize> = (0..5).filter(|i| results[*i].is_err()).collect();
    assert_eq!(failed, [2], "only the oversize entry fails: {results:?}");
    assert!(results[2].as_ref().expect_err("oversize").is_too_large());
    // Visible at once in this handle, and to a fresh process from disk.
    let fresh = open(cfg, &clock);
    for c in [&cache, &fresh] {
        for (i, want) in [(0, &b"zero"[..]), (1, b"one"), (4, b"four")] {
            let hit = c.get("a", &keys[i]).expect("stored");
            assert_eq!((&*hit.payload, hit.tokens), (want, i as u64));
        }
        assert_eq!(c.get("a", &keys[2]), None, "the oversize entry is absent");
        assert_eq!(
            c.get("skipped", &keys[3]),
            None,
            "an excluded agent stores nothing"
        );
    }
    let stats = fresh.stats();
    assert_eq!(stats.entries, 3);
    let want = entry_size(4) + entry_size(3) + entry_size(4);
    assert_eq!(rows(tmp.path()), (3, want));
    assert_eq!(stats.bytes, want);
}

#[test]
fn put_many_evicts_to_the_limit_and_serves_only_what_it_kept() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(tmp.path());
    // Room for two entries of 260 bytes, not three.
    cfg.max_bytes = 2 * entry_size(260) + 100;
    let clock = clock();
    let cache = open(cfg, &clock);
    let keys: Vec<_> = (1..=3).map(key).collect();
    let payload = [7u8; 260];
    let puts: Vec<_> = keys
        .iter()
        .map(|k| cf_cache::Put {
            agent: "a",
            key: k,
            payload: &payload,
            meta: meta(0, None),
        })
        .collect();
    assert!(cache.put_many(&puts).iter().all(Result::is_ok));
    let served = keys.iter().filter(|k| cache.get("a", k).is_some()).count();
    let stats = cache.stats();
    assert_eq!(stats.entries, 2, "one entry was evicted to fit");
    assert_eq!(
        served, 2,
        "the memory layer does not serve the evicted entry"
    );
    assert!(
        cache.get("a", &keys[2]).is_some(),
        "the last entry of the group is kept"
    );
    assert_eq!((stats.entries, stats.bytes), rows(tmp.path()));
    assert_eq!(stats.bytes, 2 * entry_size(260));
}
