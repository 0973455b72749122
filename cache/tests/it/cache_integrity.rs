//! Integrity: values edited, damaged, moved, replayed or forged in the database are
//! misses, counted and removed; a database rolled back under an open handle is noticed;
//! a changed secret makes old entries misses; `verify` reports and fixes; a directory of
//! the older file-per-entry format is migrated at open, and a file that is not a database
//! is set aside.

use std::path::Path;

use cf_cache::{CacheConfig, EntryMeta, ResponseCache, Secret, entry_size};
use rusqlite::params;
use rusqlite::types::Value;

use crate::common::{DB_FILE, clock, config, db, key, open, rows, seq_of, tree};

fn put(cache: &ResponseCache, n: u64, payload: &[u8]) {
    cache
        .put("a", &key(n), payload, EntryMeta::default())
        .expect("put");
}

fn payload(cache: &ResponseCache, n: u64) -> Option<Vec<u8>> {
    cache.get("a", &key(n)).map(|e| e.payload.to_vec())
}

/// A config without the memory layer: every lookup reads the database, so an edit made
/// through another connection is what the next lookup of the same handle reads.
fn uncached(dir: &Path) -> CacheConfig {
    let mut cfg = config(dir);
    cfg.memory_max_entries = 0;
    cfg
}

/// The body columns of a value, in this order.
const BODY: &str = "created_ms, tokens, cost_usd, payload, mac";

/// The body columns of the value `seq`.
fn body(conn: &rusqlite::Connection, seq: i64) -> Vec<Value> {
    conn.query_row(
        &format!("SELECT {BODY} FROM bodies WHERE seq = ?1"),
        [seq],
        |r| (0..5).map(|i| r.get::<_, Value>(i)).collect(),
    )
    .expect("read a body")
}

/// Writes `columns` (as read by [`body`]) over the body of the value `seq`.
fn write_body(conn: &rusqlite::Connection, seq: i64, columns: &[Value]) {
    let changed = conn
        .execute(
            "UPDATE bodies SET created_ms = ?2, tokens = ?3, cost_usd = ?4, payload = ?5, mac = ?6
             WHERE seq = ?1",
            params![
                seq, columns[0], columns[1], columns[2], columns[3], columns[4]
            ],
        )
        .expect("write a body");
    assert_eq!(changed, 1, "the body of {seq} was there to overwrite");
}

fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).expect("count")
}

/// Replaces the three tables of the database behind `conn` by those of the copy at
/// `backup`, as someone restoring an older copy of the file would.
fn restore(conn: &rusqlite::Connection, backup: &Path) {
    conn.execute("ATTACH ?1 AS old", [backup.to_str().expect("utf-8 path")])
        .expect("attach");
    conn.execute_batch(
        "BEGIN IMMEDIATE;
         DELETE FROM main.entries;
         DELETE FROM main.bodies;
         DELETE FROM main.meta;
         INSERT INTO main.bodies SELECT * FROM old.bodies;
         INSERT INTO main.entries SELECT * FROM old.entries;
         INSERT INTO main.meta SELECT * FROM old.meta;
         COMMIT;
         DETACH old;",
    )
    .expect("restore the older copy");
}

#[test]
fn a_payload_edited_in_the_database_is_a_miss_counted_once_and_removed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cache = open(uncached(tmp.path()), &clock);
    put(&cache, 1, b"the real answer");
    assert_eq!(payload(&cache, 1).as_deref(), Some(&b"the real answer"[..]));
    let conn = db(tmp.path());
    let seq = seq_of(&conn, &key(1)).expect("indexed");
    let mut columns = body(&conn, seq);
    let Value::Blob(bytes) = &mut columns[3] else {
        panic!("the payload is a blob: {:?}", columns[3]);
    };
    bytes[4] = b'X';
    write_body(&conn, seq, &columns);

    assert_eq!(payload(&cache, 1), None, "not served");
    assert_eq!(payload(&cache, 1), None, "still a miss");
    // The lookup leaves the removal to the next write.
    cache.flush().expect("flush");
    assert_eq!(seq_of(&conn, &key(1)), None, "the index row is removed");
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM bodies"),
        0,
        "so is the value"
    );
    let stats = cache.stats();
    assert_eq!(
        (
            stats.integrity_failures,
            stats.hits,
            stats.misses,
            stats.entries,
            stats.bytes
        ),
        (1, 1, 2, 0, 0),
        "one integrity failure, counted once"
    );
    assert_eq!(rows(tmp.path()), (0, 0));
}

#[test]
fn an_edit_is_caught_by_a_fresh_process_too() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    put(&open(config(tmp.path()), &clock), 1, b"the real answer");
    let conn = db(tmp.path());
    let seq = seq_of(&conn, &key(1)).expect("indexed");
    conn.execute(
        "UPDATE bodies SET payload = CAST('the fake answer' AS BLOB) WHERE seq = ?1",
        [seq],
    )
    .expect("tamper");
    let cache = open(config(tmp.path()), &clock);
    assert_eq!(payload(&cache, 1), None, "not served");
    let stats = cache.stats();
    assert_eq!(
        (stats.integrity_failures, stats.entries, stats.bytes),
        (1, 0, 0)
    );
}

/// Every column of a value damaged in a way the schema does not stop (types, lengths,
/// signs, a missing row; and, with the schema's `NOT NULL` edited away, NULLs): each is
/// a miss, removed and counted, never a panic, and the intact entry beside them serves.
#[test]
fn damaged_columns_are_misses_and_removed_never_a_panic() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let damages: &[&str] = &[
        "payload = NULL",
        "payload = CAST(payload AS TEXT)",
        "payload = x''",
        "payload = CAST(CAST(payload AS TEXT) || '!' AS BLOB)",
        "mac = substr(mac, 1, 31)",
        "mac = CAST(mac AS TEXT)",
        "mac = NULL",
        "mac = x''",
        "created_ms = -1",
        "created_ms = NULL",
        "created_ms = 'yesterday'",
        "tokens = -5",
        "tokens = 1.5",
        "tokens = NULL",
        "cost_usd = 'cheap'",
        "cost_usd = x'00'",
        "cost_usd = 7",
        "DELETE",
    ];
    let good = 1000;
    let cache = open(config(tmp.path()), &clock);
    for n in 0..damages.len() as u64 {
        cache
            .put(
                "a",
                &key(n),
                format!("answer {n}").as_bytes(),
                EntryMeta {
                    tokens: 10,
                    cost_usd: Some(0.25),
                    ttl: None,
                },
            )
            .expect("put");
    }
    put(&cache, good, b"intact");
    drop(cache);

    let conn = db(tmp.path());
    // Let the damaged database hold NULLs its schema forbids, as a file edited by
    // another program may.
    conn.execute_batch(
        "PRAGMA writable_schema = ON;
         UPDATE sqlite_schema SET sql = replace(sql, ' NOT NULL', '') WHERE name = 'bodies';
         PRAGMA writable_schema = OFF;",
    )
    .expect("relax the schema");
    drop(conn);
    let conn = db(tmp.path());
    for (n, damage) in damages.iter().enumerate() {
        let seq = seq_of(&conn, &key(n as u64)).expect("indexed");
        let sql = if *damage == "DELETE" {
            "DELETE FROM bodies WHERE seq = ?1".to_owned()
        } else {
            format!("UPDATE bodies SET {damage} WHERE seq = ?1")
        };
        assert_eq!(conn.execute(&sql, [seq]).expect(damage), 1, "{damage}");
    }

    let cache = open(uncached(tmp.path()), &clock);
    for (n, damage) in damages.iter().enumerate() {
        assert_eq!(payload(&cache, n as u64), None, "{damage}: not served");
        cache
            .flush()
            .expect("flush: removals happen at the next write");
        assert_eq!(
            seq_of(&conn, &key(n as u64)),
            None,
            "{damage}: the entry is removed"
        );
    }
    assert_eq!(payload(&cache, good).as_deref(), Some(&b"intact"[..]));
    let stats = cache.stats();
    let damaged = damages.len() as u64;
    assert_eq!(
        (stats.integrity_failures, stats.misses, stats.hits),
        (damaged, damaged, 1)
    );
    assert_eq!(
        (stats.entries, stats.bytes, stats.tokens_saved),
        (1, entry_size(6), 0)
    );
    assert_eq!(rows(tmp.path()), (1, entry_size(6)));
    let report = cache.verify(false).expect("verify");
    assert!(report.is_clean(), "{report:?}");
}

/// Regression: an index row with a column of the wrong type or sign (`seq` or
/// `expires_ms`, here edited by hand) was a miss, but never removed nor counted: the
/// removal went by `(key, seq)` with `seq` read as 0, which matched no row, so it stayed,
/// charged against the limit, until `verify(true)`.
#[test]
fn a_damaged_index_row_is_a_miss_and_removed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cache = open(config(tmp.path()), &clock);
    for n in 1..=4 {
        put(&cache, n, b"answer");
    }
    drop(cache);
    let conn = db(tmp.path());
    for (n, damage) in [(1, "seq = -1"), (2, "expires_ms = -1"), (3, "seq = 'abc'")] {
        conn.execute(
            &format!("UPDATE entries SET {damage} WHERE key = ?1"),
            [&key(n).as_bytes()[..]],
        )
        .expect(damage);
    }
    let cache = open(uncached(tmp.path()), &clock);
    for n in 1..=3 {
        assert_eq!(payload(&cache, n), None, "{n}: not served");
    }
    let stats = cache.stats();
    assert_eq!(
        (stats.integrity_failures, stats.entries, stats.bytes),
        (3, 1, entry_size(6)),
        "the damaged rows are removed and counted: {stats:?}"
    );
}

#[test]
fn verify_fix_removes_a_damaged_index_row() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cache = open(uncached(tmp.path()), &clock);
    for n in 1..=4 {
        put(&cache, n, b"answer");
    }
    let conn = db(tmp.path());
    for (n, damage) in [
        (1, "seq = -1"),
        (2, "expires_ms = -1"),
        (3, "expires_ms = 'soon'"),
    ] {
        conn.execute(
            &format!("UPDATE entries SET {damage} WHERE key = ?1"),
            [&key(n).as_bytes()[..]],
        )
        .expect(damage);
    }
    // Verify before any lookup (a lookup would remove them itself).
    let report = cache.verify(false).expect("verify");
    assert_eq!((report.checked, report.valid), (4, 1), "{report:?}");
    // Key 1's index row was moved off its body (the body went with the move): bad or
    // stale, it is not valid.
    assert_eq!(
        report.bad.len() as u64 + report.stale_index,
        3,
        "{report:?}"
    );
    let fixed = cache.verify(true).expect("verify --fix");
    assert_eq!(fixed.removed as usize, fixed.bad.len(), "{fixed:?}");
    let after = cache.verify(false).expect("verify");
    assert!(after.is_clean(), "{after:?}");
    assert_eq!((after.checked, after.valid), (1, 1));
    assert_eq!(rows(tmp.path()), (1, entry_size(6)));
    for n in 1..=3 {
        assert_eq!(payload(&cache, n), None, "{n}: not served");
    }
    assert_eq!(payload(&cache, 4).as_deref(), Some(&b"answer"[..]));
}

#[test]
fn a_valid_body_copied_over_another_keys_body_is_rejected() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cache = open(uncached(tmp.path()), &clock);
    put(&cache, 1, b"answer one");
    put(&cache, 2, b"answer two");
    let conn = db(tmp.path());
    let (one, two) = (
        seq_of(&conn, &key(1)).expect("1"),
        seq_of(&conn, &key(2)).expect("2"),
    );
    write_body(&conn, two, &body(&conn, one));

    assert_eq!(
        payload(&cache, 2),
        None,
        "key 1's value is not served for 2"
    );
    cache
        .flush()
        .expect("flush: removals happen at the next write");
    assert_eq!(seq_of(&conn, &key(2)), None, "2 is removed");
    assert_eq!(cache.stats().integrity_failures, 1);
    assert_eq!(
        payload(&cache, 1).as_deref(),
        Some(&b"answer one"[..]),
        "1 still serves"
    );
    assert_eq!(rows(tmp.path()), (1, entry_size(10)));
}

#[test]
fn an_older_value_of_the_same_key_written_back_is_rejected() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cache = open(uncached(tmp.path()), &clock);
    let meta = |tokens| EntryMeta {
        tokens,
        ..EntryMeta::default()
    };
    cache
        .put("a", &key(1), b"first answer", meta(1))
        .expect("put v1");
    let conn = db(tmp.path());
    let v1_seq = seq_of(&conn, &key(1)).expect("v1");
    let v1 = body(&conn, v1_seq);
    cache
        .put("a", &key(1), b"second answer", meta(2))
        .expect("put v2");
    let v2_seq = seq_of(&conn, &key(1)).expect("v2");
    assert!(v2_seq > v1_seq);
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM bodies"),
        1,
        "v1's body went"
    );
    write_body(&conn, v2_seq, &v1);

    assert_eq!(payload(&cache, 1), None, "the older value is not served");
    cache
        .flush()
        .expect("flush: removals happen at the next write");
    assert_eq!(seq_of(&conn, &key(1)), None, "removed");
    assert_eq!(cache.stats().integrity_failures, 1);
    cache
        .put("a", &key(1), b"third answer", meta(3))
        .expect("put v3");
    let hit = cache.get("a", &key(1)).expect("v3");
    assert_eq!((&*hit.payload, hit.tokens), (&b"third answer"[..], 3));
}

/// The whole database put back to an older copy while a handle is open: at that
/// handle's next write the older entries are all dropped and counted, and write numbers
/// continue from where the handle saw them (none is used twice).
#[test]
fn a_database_rolled_back_under_an_open_handle_is_detected() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cache = open(config(tmp.path()), &clock);
    put(&cache, 1, b"v1");
    put(&cache, 2, b"two");
    let conn = db(tmp.path());
    let backup = elsewhere.path().join("backup.sqlite");
    conn.execute("VACUUM INTO ?1", [backup.to_str().expect("utf-8")])
        .expect("back up");
    put(&cache, 1, b"v2");
    put(&cache, 1, b"v3");
    let newest = seq_of(&conn, &key(1)).expect("v3");
    assert_eq!(cache.stats().integrity_failures, 0);

    restore(&conn, &backup);
    assert!(
        seq_of(&conn, &key(1)).expect("v1") < newest,
        "the database holds v1 again"
    );
    put(&cache, 3, b"three");

    assert_eq!(payload(&cache, 1), None, "the rolled-back v1 is not served");
    assert_eq!(payload(&cache, 2), None, "nothing of the older copy is");
    assert_eq!(payload(&cache, 3).as_deref(), Some(&b"three"[..]));
    let stats = cache.stats();
    assert_eq!(
        (stats.integrity_failures, stats.entries),
        (2, 1),
        "both entries of the older copy dropped and counted: {stats:?}"
    );
    put(&cache, 1, b"v4");
    assert!(
        seq_of(&conn, &key(1)).expect("v4") > newest,
        "write numbers are not reused"
    );
    assert_eq!(payload(&cache, 1).as_deref(), Some(&b"v4"[..]));
    assert_eq!(rows(tmp.path()), (2, entry_size(5) + entry_size(2)));
}

/// Regression: `flush` with no pending reads opened no write transaction, so it did not
/// notice a rolled-back database (nor another handle's `clear`), although the docs name
/// `flush` among the calls that do; without the memory layer the next lookup served the
/// rolled-back value.
#[test]
fn a_flush_notices_a_rolled_back_database() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cache = open(uncached(tmp.path()), &clock);
    put(&cache, 1, b"v1");
    let conn = db(tmp.path());
    let backup = elsewhere.path().join("backup.sqlite");
    conn.execute("VACUUM INTO ?1", [backup.to_str().expect("utf-8")])
        .expect("back up");
    put(&cache, 1, b"v2");
    put(&cache, 1, b"v3");
    restore(&conn, &backup);
    cache.flush().expect("flush");
    assert_eq!(payload(&cache, 1), None, "the rolled-back v1 is not served");
    assert_eq!(cache.stats().integrity_failures, 1);
}

#[test]
fn a_value_forged_with_another_secret_is_rejected() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let forger_dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let mut forger_cfg = CacheConfig::new(forger_dir.path());
    forger_cfg.secret = Some(Secret::new(*b"an attacker's own secret, 32 by").expect("secret"));
    let forger = open(forger_cfg, &clock);
    put(&forger, 1, b"forged answer");
    put(&forger, 2, b"forged answer");
    drop(forger);
    let cache = open(uncached(tmp.path()), &clock);
    put(&cache, 1, b"real answer");
    put(&cache, 2, b"real answer");
    let conn = db(tmp.path());
    conn.execute(
        "ATTACH ?1 AS forger",
        [forger_dir.path().join(DB_FILE).to_str().expect("utf-8")],
    )
    .expect("attach");
    // Key 1: the forged value's columns over the real value's body.
    let ours = seq_of(&conn, &key(1)).expect("1");
    conn.execute(
        &format!(
            "UPDATE main.bodies SET ({BODY}) =
                 (SELECT {BODY} FROM forger.bodies b JOIN forger.entries e ON b.seq = e.seq
                  WHERE e.key = ?2)
             WHERE seq = ?1"
        ),
        params![ours, &key(1).as_bytes()[..]],
    )
    .expect("plant a body");
    // Key 2: the forged index row and body, whole, in place of the real ones.
    conn.execute_batch(&format!(
        "BEGIN;
         DELETE FROM main.entries WHERE key = x'{k}';
         INSERT INTO main.bodies SELECT b.* FROM forger.bodies b JOIN forger.entries e
             ON b.seq = e.seq WHERE e.key = x'{k}';
         INSERT INTO main.entries SELECT * FROM forger.entries WHERE key = x'{k}';
         COMMIT;",
        k = key(2).to_hex()
    ))
    .expect("plant rows");

    assert_eq!(payload(&cache, 1), None, "a forged body is not served");
    assert_eq!(payload(&cache, 2), None, "a forged entry is not served");
    let stats = cache.stats();
    assert_eq!((stats.integrity_failures, stats.entries), (2, 0));
    assert_eq!(rows(tmp.path()), (0, 0));
}

#[test]
fn a_changed_secret_turns_old_entries_into_misses_not_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    put(&open(config(tmp.path()), &clock), 1, b"old");
    let mut cfg = config(tmp.path());
    cfg.secret = Some(Secret::new(*b"a brand new secret for the cache").expect("secret"));
    let cache = open(cfg, &clock);
    assert_eq!(payload(&cache, 1), None);
    assert_eq!(cache.stats().integrity_failures, 1);
    put(&cache, 1, b"new");
    assert_eq!(payload(&cache, 1).as_deref(), Some(&b"new"[..]));
    assert_eq!(rows(tmp.path()), (1, entry_size(3)));
}

#[test]
fn verify_reports_and_fixes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cache = open(uncached(tmp.path()), &clock);
    for n in 1..=5 {
        put(&cache, n, &[n as u8; 100]);
    }
    let clean = cache.verify(false).expect("verify");
    assert!(clean.is_clean(), "{clean:?}");
    assert_eq!((clean.checked, clean.valid), (5, 5));

    let conn = db(tmp.path());
    let seq = |n| seq_of(&conn, &key(n)).expect("indexed");
    // 2: a bad MAC.
    let mut columns = body(&conn, seq(2));
    let Value::Blob(mac) = &mut columns[4] else {
        panic!("the MAC is a blob");
    };
    mac[31] ^= 1;
    write_body(&conn, seq(2), &columns);
    // 3: a stale index row (its value deleted behind the cache's back).
    conn.execute("DELETE FROM bodies WHERE seq = ?1", [seq(3)])
        .expect("delete a body");
    // An orphan: a copy of 4's value under a number no index row names.
    conn.execute(
        &format!("INSERT INTO bodies SELECT 1000000, {BODY} FROM bodies WHERE seq = ?1"),
        [seq(4)],
    )
    .expect("orphan");
    // Wrong totals.
    conn.execute("UPDATE meta SET bytes = bytes + 4096 WHERE id = 0", [])
        .expect("break the totals");

    let report = cache.verify(false).expect("verify");
    assert_eq!((report.checked, report.valid), (5, 3), "{report:?}");
    assert_eq!(report.bad.len(), 1, "{report:?}");
    assert_eq!(report.bad[0].key, key(2).to_hex());
    assert_eq!(report.stale_index, 1, "3 is indexed but its value is gone");
    assert_eq!(report.orphans, 1);
    assert!(report.totals_wrong);
    assert!(report.database.is_empty(), "{report:?}");
    assert_eq!(report.removed, 0, "nothing changed without fix");
    assert!(!report.is_clean());
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM entries"), 5);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM bodies"), 5);
    assert_eq!(cache.verify(false).expect("verify again"), report);

    let fixed = cache.verify(true).expect("fix");
    assert_eq!(fixed.removed, 1);
    assert_eq!(
        (fixed.bad.len(), fixed.stale_index, fixed.orphans),
        (1, 1, 1)
    );
    assert!(fixed.totals_wrong, "what was found, before fixing");
    let after = cache.verify(false).expect("verify");
    assert!(after.is_clean(), "{after:?}");
    assert_eq!((after.checked, after.valid), (3, 3));
    assert_eq!(rows(tmp.path()), (3, 3 * entry_size(100)));
    let stats = cache.stats();
    assert_eq!(
        (stats.entries, stats.bytes, stats.integrity_failures),
        (3, 3 * entry_size(100), 1)
    );
    for n in [1, 4, 5] {
        assert_eq!(payload(&cache, n), Some(vec![n as u8; 100]), "{n} serves");
    }
    for n in [2, 3] {
        assert_eq!(payload(&cache, n), None, "{n} is gone");
    }
}

/// Stores ten entries (`n` → `[n; 100]`) in a cache in `dir`, then damages the root
/// page of the table or index `name` in the file: its cell count says far more cells
/// than the page can hold.
fn ten_entries_with_a_damaged_root_page(dir: &Path, clock: &cf_cache::ManualClock, name: &str) {
    let cache = open(config(dir), clock);
    for n in 0..10 {
        put(&cache, n, &[n as u8; 100]);
    }
    drop(cache);
    let root: i64 = db(dir)
        .query_row(
            "SELECT rootpage FROM sqlite_schema WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .expect("root page");
    let path = dir.join(DB_FILE);
    let mut data = std::fs::read(&path).expect("read");
    let page = (root as usize - 1) * 4096;
    data[page + 3..page + 5].copy_from_slice(&[0xff, 0xff]);
    std::fs::write(&path, &data).expect("damage");
}

/// A damaged index page: `verify` names it (SQLite's `quick_check`), lookups go on
/// answering, and writes fail with an error, never a panic.
#[test]
fn a_damaged_page_is_reported_by_verify() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    ten_entries_with_a_damaged_root_page(tmp.path(), &clock, "entries_by_expiry");

    let cache = open(config(tmp.path()), &clock);
    for n in 0..10 {
        assert_eq!(payload(&cache, n), Some(vec![n as u8; 100]), "{n}");
    }
    let report = cache.verify(false).expect("verify");
    assert!(!report.database.is_empty(), "{report:?}");
    assert!(!report.is_clean());
    assert_eq!((report.checked, report.valid), (10, 10));
    assert!(
        cache
            .put("a", &key(99), b"x", EntryMeta::default())
            .is_err(),
        "a write through the damaged index fails"
    );
}

/// Regression: when the damage was in a page that the rows or this handle's pending
/// reads go through, `verify` returned the SQLite error instead of its report, and
/// `clear`, the remedy its documentation gives, failed with the same error: the cache
/// stayed unusable until its directory was deleted by hand.
#[test]
fn a_damaged_table_is_reported_by_verify_and_cleared() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    ten_entries_with_a_damaged_root_page(tmp.path(), &clock, "entries");

    let cache = open(config(tmp.path()), &clock);
    let report = cache.verify(false).expect("verify reports, not fails");
    assert!(!report.database.is_empty(), "{report:?}");
    cache.clear().expect("clear");
    put(&cache, 1, b"after");
    assert_eq!(payload(&cache, 1).as_deref(), Some(&b"after"[..]));
}

/// Regression: a damaged `meta` row stopped every write for good. With `next_seq`
/// behind the stored values (edited, or an older `meta` restored over newer rows) every
/// put failed with "UNIQUE constraint failed: bodies.seq"; with the row lost, every
/// write (put, `stats`, `verify`) failed with "Query returned no rows".
#[test]
fn a_damaged_meta_row_does_not_stop_puts() {
    for damage in ["UPDATE meta SET next_seq = 1", "DELETE FROM meta"] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let clock = clock();
        let cache = open(config(tmp.path()), &clock);
        for n in 1..=3 {
            put(&cache, n, b"answer");
        }
        drop(cache);
        db(tmp.path()).execute(damage, []).expect(damage);
        let cache = open(config(tmp.path()), &clock);
        let repair = cache.verify(true);
        cache
            .put("a", &key(9), b"new", EntryMeta::default())
            .unwrap_or_else(|e| panic!("{damage}: put after verify(true) ({repair:?}): {e}"));
        assert_eq!(payload(&cache, 9).as_deref(), Some(&b"new"[..]), "{damage}");
    }
}

#[test]
fn a_torn_wal_tail_keeps_every_committed_entry() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let copy = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cache = open(config(tmp.path()), &clock);
    for n in 1..=3 {
        put(&cache, n, &[n as u8; 50]);
    }
    // A copy of the files as a crash in the middle of a commit leaves them: the log
    // ends in half a frame.
    for suffix in ["", "-wal"] {
        let name = format!("{DB_FILE}{suffix}");
        std::fs::copy(tmp.path().join(&name), copy.path().join(&name)).expect("copy");
    }
    let wal = copy.path().join(format!("{DB_FILE}-wal"));
    let mut data = std::fs::read(&wal).expect("read the log");
    assert!(!data.is_empty(), "the commits are in the log");
    data.extend_from_slice(&[0x5a; 2000]);
    std::fs::write(&wal, &data).expect("tear");
    drop(cache);

    let cache = open(config(copy.path()), &clock);
    for n in 1..=3 {
        assert_eq!(payload(&cache, n), Some(vec![n as u8; 50]), "{n}");
    }
    assert!(cache.verify(false).expect("verify").is_clean());
    put(&cache, 4, &[4; 50]);
    assert_eq!(rows(copy.path()), (4, 4 * entry_size(50)));
}

/// The cache's own state lives in the database: files a crash of the older format
/// could leave, outside a directory of that format, are not the cache's and stay
/// through open, lookups, `verify(true)`, `prune` and `clear`.
#[test]
fn old_style_names_outside_an_old_format_directory_are_left_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let names = [
        format!("{}.cfe", key(1).to_hex()),
        format!("{}.0123456789abcdef.cfe-tmp", key(2).to_hex()),
        "index.cfj.0123456789abcdef.cfj-tmp".to_owned(),
        "notes.cfe-tmp".to_owned(),
    ];
    for name in &names {
        std::fs::write(tmp.path().join(name), name.as_bytes()).expect("plant");
    }
    let cache = open(config(tmp.path()), &clock);
    assert_eq!(payload(&cache, 1), None, "a file is not an entry");
    put(&cache, 3, b"three");
    assert!(cache.verify(true).expect("verify --fix").is_clean());
    cache.prune().expect("prune");
    assert_eq!(cache.clear().expect("clear"), 1);
    drop(cache);
    for name in &names {
        assert_eq!(
            std::fs::read(tmp.path().join(name)).expect("still there"),
            name.as_bytes()
        );
    }
}

#[test]
fn an_old_format_directory_is_migrated_at_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("outside");
    let clock = clock();
    let dir = tmp.path();
    // The older engine's files: its lock, journal, entries and temp files, and its
    // generated secret.
    let secret = *b"the old engine's secret, 32 byte";
    let secret_path = dir.join("cache.secret");
    std::fs::write(&secret_path, secret).expect("secret");
    std::fs::set_permissions(
        &secret_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("secret mode");
    let old = [
        "cache.lock".to_owned(),
        "index.cfj".to_owned(),
        format!("{}.cfe", key(1).to_hex()),
        format!("{}.cfe", key(2).to_hex()),
        format!("{}.0123456789abcdef.cfe-tmp", key(3).to_hex()),
        "index.cfj.fedcba9876543210.cfj-tmp".to_owned(),
    ];
    for name in &old {
        std::fs::write(dir.join(name), vec![0xa5; 200]).expect("old file");
    }
    // Files that are not the old engine's, and a link under an entry's name.
    std::fs::write(dir.join("notes.txt"), b"mine").expect("foreign");
    std::fs::write(dir.join("ABC.cfe"), b"not an entry name").expect("foreign");
    let target = outside.path().join("precious.cfe");
    std::fs::write(&target, b"do not touch").expect("target");
    let link_name = format!("{}.cfe", key(4).to_hex());
    std::os::unix::fs::symlink(&target, dir.join(&link_name)).expect("link");

    let cache =
        ResponseCache::open_with_clock(CacheConfig::new(dir), std::sync::Arc::new(clock.clone()))
            .expect("open an old-format directory");
    for name in &old {
        assert!(
            dir.join(name).symlink_metadata().is_err(),
            "{name} is removed"
        );
    }
    let mut expected = vec![
        "ABC.cfe".to_owned(),
        "cache.secret".to_owned(),
        "notes.txt".to_owned(),
        DB_FILE.to_owned(),
        format!("{DB_FILE}-shm"),
        format!("{DB_FILE}-wal"),
        link_name.clone(),
    ];
    expected.sort();
    assert_eq!(tree(dir), expected);
    assert_eq!(std::fs::read(dir.join("notes.txt")).expect("r"), b"mine");
    assert_eq!(
        std::fs::read(dir.join("ABC.cfe")).expect("r"),
        b"not an entry name"
    );
    assert_eq!(
        std::fs::read_link(dir.join(&link_name)).expect("link"),
        target
    );
    assert_eq!(std::fs::read(&target).expect("target"), b"do not touch");
    assert_eq!(std::fs::read(&secret_path).expect("secret"), secret);

    // The old entries are dropped, not imported; the cache works, under the kept
    // secret.
    for n in 1..=4 {
        assert_eq!(payload(&cache, n), None);
    }
    put(&cache, 1, b"after the migration");
    assert_eq!(cache.stats().entries, 1);
    drop(cache);
    let mut cfg = config(dir);
    cfg.secret = Some(Secret::new(secret).expect("secret"));
    let cache = open(cfg, &clock);
    assert_eq!(
        payload(&cache, 1).as_deref(),
        Some(&b"after the migration"[..]),
        "the old secret file is the one in use"
    );
    drop(cache);
    let closed: Vec<String> = expected
        .into_iter()
        .filter(|name| !name.ends_with("-wal") && !name.ends_with("-shm"))
        .collect();
    assert_eq!(tree(dir), closed, "a second open changes nothing");
}

/// Regression (older format): a sparse 100 GB journal made every operation abort on a
/// failed allocation. At open it is removed, never read.
#[test]
fn an_enormous_old_journal_is_removed_not_read() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let journal = std::fs::File::create(tmp.path().join("index.cfj")).expect("journal");
    journal.set_len(100 << 30).expect("sparse 100 GB");
    drop(journal);
    let cache = open(config(tmp.path()), &clock);
    assert!(!tmp.path().join("index.cfj").exists());
    put(&cache, 1, b"kept");
    assert_eq!(payload(&cache, 1).as_deref(), Some(&b"kept"[..]));
    assert!(cache.verify(false).expect("verify").is_clean());
}

#[test]
fn a_file_that_is_not_a_database_is_set_aside() {
    let garbage: [&[u8]; 3] = [b"garbage", &[0x5a; 8192], &[0; 8192]];
    for bytes in garbage {
        let tmp = tempfile::tempdir().expect("tempdir");
        let clock = clock();
        std::fs::write(tmp.path().join(DB_FILE), bytes).expect("garbage");
        let cache = open(config(tmp.path()), &clock);
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.bytes), (0, 0), "a fresh database");
        put(&cache, 1, b"works");
        assert_eq!(payload(&cache, 1).as_deref(), Some(&b"works"[..]));

        let aside: Vec<String> = tree(tmp.path())
            .into_iter()
            .filter(|name| name.starts_with(&format!("{DB_FILE}.damaged-")))
            .collect();
        assert_eq!(aside.len(), 1, "{:?}", tree(tmp.path()));
        let stamp = &aside[0][format!("{DB_FILE}.damaged-").len()..];
        assert!(
            !stamp.is_empty() && stamp.bytes().all(|b| b.is_ascii_digit()),
            "{stamp}"
        );
        assert_eq!(
            std::fs::read(tmp.path().join(&aside[0])).expect("kept"),
            bytes,
            "the damaged file is kept as it was"
        );
        drop(cache);
        let cache = open(config(tmp.path()), &clock);
        assert_eq!(
            payload(&cache, 1).as_deref(),
            Some(&b"works"[..]),
            "the new database is kept"
        );
        assert_eq!(
            tree(tmp.path())
                .iter()
                .filter(|name| name.contains(".damaged-"))
                .count(),
            1
        );
    }
}

/// Regression (review): a lookup that found an expired entry removed it in a write
/// transaction on the caller's thread, waiting up to the busy timeout (5 s) for another
/// process's write lock. The lookup is a miss at once; the next write removes it.
#[test]
fn a_lookup_of_an_expired_entry_does_not_wait_for_a_writer() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cache = open(uncached(tmp.path()), &clock);
    let meta = EntryMeta {
        ttl: Some(std::time::Duration::from_secs(1)),
        ..EntryMeta::default()
    };
    cache.put("a", &key(1), b"soon gone", meta).expect("put");
    clock.advance(std::time::Duration::from_secs(2));
    let other = db(tmp.path());
    other
        .execute_batch("BEGIN IMMEDIATE")
        .expect("hold the write lock");
    // A lookup needs no write lock: it returns while the other connection holds it
    // (were it to wait, this thread would block until the rollback below, never
    // reached).
    let (done, finished) = std::sync::mpsc::channel();
    let reader = cache.clone();
    std::thread::spawn(move || {
        let _ = done.send(reader.get("a", &key(1)).map(|e| e.payload.to_vec()));
    });
    let got = finished.recv().expect("the lookup returned");
    assert_eq!(got, None, "expired: a miss");
    other.execute_batch("ROLLBACK").expect("let go");
    let stats = cache.stats();
    assert_eq!(
        (stats.expirations, stats.entries, stats.misses),
        (1, 0, 1),
        "removed and counted by the next write: {stats:?}"
    );
}

/// Regression (review): an entry that never expires (`ttl: Duration::MAX`) or with a
/// token count past `i64::MAX` was sealed with values SQLite cannot store, so its MAC
/// failed on the next read and it was removed as forged.
#[test]
fn an_entry_that_never_expires_is_not_taken_for_a_forgery() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cache = open(uncached(tmp.path()), &clock);
    let meta = EntryMeta {
        ttl: Some(std::time::Duration::MAX),
        tokens: u64::MAX,
        cost_usd: None,
    };
    cache.put("a", &key(1), b"forever", meta).expect("put");
    assert_eq!(payload(&cache, 1).as_deref(), Some(&b"forever"[..]));
    assert_eq!(cache.stats().integrity_failures, 0);
}

/// Regression (review): when another process set a damaged database aside and started
/// a new one, a handle kept writing to (and reading from) the renamed file. It follows
/// the name at its next write: its answers land in the new file, the old one's are gone.
#[test]
fn a_handle_follows_a_database_replaced_by_another_process() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let a = open(uncached(tmp.path()), &clock);
    put(&a, 1, b"in the old file");
    for suffix in ["", "-wal", "-shm"] {
        let from = tmp.path().join(format!("{DB_FILE}{suffix}"));
        if from.exists() {
            std::fs::rename(
                &from,
                tmp.path().join(format!("{DB_FILE}.damaged-1{suffix}")),
            )
            .expect("set aside, as another process does");
        }
    }
    let other = open(uncached(tmp.path()), &clock);
    put(&a, 2, b"after the replacement");
    assert_eq!(
        payload(&other, 2).as_deref(),
        Some(&b"after the replacement"[..]),
        "the write went to the new file"
    );
    assert_eq!(
        payload(&a, 1),
        None,
        "the old file's entries are not served"
    );
    assert_eq!(rows(tmp.path()).0, 1);
}
