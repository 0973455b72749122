//! Every input kept in `fuzz/regressions/<target>/` (seeds and crashes the fuzzers
//! found), through the same checks as the fuzz targets (`cf_cache::fuzzing`).

use cf_cache::fuzzing;

use crate::regression_inputs::inputs;

#[test]
fn entry_decoder_regressions_hold() {
    for (path, data) in inputs("entry_decoder") {
        println!("{}", path.display());
        fuzzing::check_entry_decoder(&data);
    }
}

#[test]
fn entry_file_regressions_are_refused_cleanly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let harness = fuzzing::EntryFileHarness::new(tmp.path());
    for (path, data) in inputs("entry_file") {
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

/// The checks must be able to fail: a planted file that is a genuine entry is served,
/// which the full-read-path check reports.
#[test]
#[should_panic(expected = "forged bytes were served")]
fn entry_file_check_catches_a_served_entry() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let harness = fuzzing::EntryFileHarness::new(tmp.path());
    harness.check(&harness.genuine_entry(b"payload"));
}
