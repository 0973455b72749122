//! The response cache's full read path: arbitrary columns over a stored value's row.
#![no_main]

use std::sync::OnceLock;

use cf_cache::fuzzing::RowHarness;

/// One cache for the whole run, in a fresh temporary directory (statics are never
/// dropped, so it is left behind: a small database, since every planted row is removed).
static HARNESS: OnceLock<(tempfile::TempDir, RowHarness)> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (_dir, harness) = HARNESS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let harness = RowHarness::new(dir.path());
        (dir, harness)
    });
    harness.check(data);
});
