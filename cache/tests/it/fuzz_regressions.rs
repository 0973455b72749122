//! Every input kept in `fuzz/regressions/<target>/` (seeds and crashes the fuzzers
//! found), through the same checks as the fuzz targets (`cf_cache::fuzzing`).

use std::path::{Path, PathBuf};

use cf_cache::fuzzing;

/// The files of `fuzz/regressions/<target>/`; fails if there are none, so that a
/// moved directory cannot pass silently.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let data = std::fs::read(&path).expect("a regression input");
            (path, data)
        })
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no regression inputs in {}",
        dir.display()
    );
    files
}

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
