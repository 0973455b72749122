//! The response cache's full read path: arbitrary bytes as an entry file.
#![no_main]

use std::sync::OnceLock;

use cf_cache::fuzzing::EntryFileHarness;

/// One cache for the whole run, in a fresh temporary directory (statics are never
/// dropped, so it is left behind: a few KiB, since every planted file is removed).
static HARNESS: OnceLock<(tempfile::TempDir, EntryFileHarness)> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (_dir, harness) = HARNESS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let harness = EntryFileHarness::new(dir.path());
        (dir, harness)
    });
    harness.check(data);
});
