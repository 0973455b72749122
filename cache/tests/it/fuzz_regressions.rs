//! Every input kept in `fuzz/regressions/<target>/` (seeds and crashes the fuzzers
//! found), through the same checks as the fuzz targets (`cf_cache::fuzzing`).

use cf_cache::fuzzing;

use crate::regression_inputs::inputs;

#[test]
fn response_seal_regressions_hold() {
    for (path, data) in inputs("response_seal") {
        println!("{}", path.display());
        fuzzing::check_seal(&data);
    }
}

/// Regression: `RowHarness::check` panicked with "planting a row" when the schema
/// refuses the input's columns (a NULL where `bodies` says `NOT NULL`: `seed-empty`,
/// `seed-nulls`), before the cache read anything; the fuzz target crashed on any such
/// input.
#[test]
fn response_row_regressions_are_refused_cleanly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let harness = fuzzing::RowHarness::new(tmp.path());
    for (path, data) in inputs("response_row") {
        println!("{}", path.display());
        harness.check(&data);
    }
}

/// Every regression input through the harness, on a database whose `bodies` table lost
/// its `NOT NULL` constraints (as a file edited by another program can): the NULL
/// columns of the seeds reach the cache's reader, which must refuse them like any other
/// damage.
#[test]
fn response_row_regressions_are_refused_cleanly_even_with_nulls() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let harness = fuzzing::RowHarness::new(tmp.path());
    let conn = rusqlite::Connection::open(tmp.path().join("responses.sqlite")).expect("open");
    let version: i64 = conn
        .pragma_query_value(None, "schema_version", |r| r.get(0))
        .expect("schema version");
    conn.execute_batch(
        "PRAGMA writable_schema = ON;
         UPDATE sqlite_schema SET sql = replace(sql, ' NOT NULL', '') WHERE name = 'bodies';
         PRAGMA writable_schema = OFF;",
    )
    .expect("relax the schema");
    // Other connections (the harness's, the cache's) reload the schema.
    conn.pragma_update(None, "schema_version", version + 1)
        .expect("bump the schema version");
    let inputs = inputs("response_row");
    assert!(
        inputs
            .iter()
            .any(|(_, data)| data.first() == Some(&0) || data.is_empty()),
        "some input has NULL columns"
    );
    for (path, data) in inputs {
        println!("{}", path.display());
        harness.check(&data);
    }
}

#[test]
fn store_key_regressions_hold() {
    for (path, data) in inputs("store_key") {
        println!("{}", path.display());
        fuzzing::check_store_key(&data);
    }
}

/// The checks must be able to fail: planted columns that are a genuine value are
/// served, which the full-read-path check reports.
#[test]
#[should_panic(expected = "forged bytes were served")]
fn response_row_check_catches_a_served_entry() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let harness = fuzzing::RowHarness::new(tmp.path());
    harness.check(&harness.genuine_row());
}
