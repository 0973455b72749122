//! Every input kept in `fuzz/regressions/<target>/` (seeds and crashes the fuzzers
//! found), through the same checks as the fuzz targets (`cf_llm::fuzzing`).

use std::path::{Path, PathBuf};

use cf_llm::fuzzing;

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
fn request_key_regressions_hold() {
    for (path, data) in inputs("request_key") {
        println!("{}", path.display());
        fuzzing::check_request_key(&data);
    }
}

#[test]
fn anthropic_response_regressions_hold() {
    for (path, data) in inputs("anthropic_response") {
        println!("{}", path.display());
        fuzzing::check_anthropic_response(&data);
    }
}
