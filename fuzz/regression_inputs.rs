//! The regression inputs of a fuzz target, for the ordinary tests of the crate it
//! fuzzes: each of cf-cache, cf-llm and cf-tasks includes this file with `#[path]`
//! (all three sit beside `fuzz/`, so `CARGO_MANIFEST_DIR/../fuzz/regressions` is the
//! same directory for each).

use std::path::{Path, PathBuf};

/// The files of `fuzz/regressions/<target>/` (seeds, and every crash a fuzzer found),
/// sorted; fails if there are none, so that a moved directory cannot pass silently.
pub fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
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
