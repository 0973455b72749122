//! Builds a workspace of WebAssembly guests for `wasm32-wasip2` from a build script.
//!
//! Used by `cf-builtin/build.rs` (the shipped agents) and `cf-tests/build.rs` (the
//! hostile guests). The child cargo gets its own target directory — sharing the
//! parent's would deadlock on its lock — and an environment cleaned of the parent's
//! flags, which are meant for the host target.
#![deny(missing_docs)]

use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target every guest is built for.
pub const TARGET: &str = "wasm32-wasip2";

/// Environment variables of the parent build that must not reach the child cargo.
const SCRUBBED_ENV: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_WRAPPER",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_MAKEFLAGS",
    "CARGO_PRIMARY_PACKAGE",
    "RUSTC",
    "RUSTDOC",
];

/// A guest component that was built.
#[derive(Debug, Clone)]
pub struct Built {
    /// The crate name (`python-expert`).
    pub name: String,
    /// Where the component is.
    pub path: PathBuf,
    /// The SHA-256 of the component, lowercase hex.
    pub sha256: String,
}

/// Builds `packages` of the guest workspace at `workspace` in release mode and returns
/// the components. Tells cargo to rerun the build script when any file in `watch`
/// changes. Panics with a one-line fix when the wasm target is missing, since a build
/// script has no better way to fail.
pub fn build(workspace: &Path, packages: &[&str], watch: &[&Path]) -> Vec<Built> {
    for dir in watch {
        rerun_if_changed(dir);
    }
    let target_dir = target_dir(workspace);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    for p in packages {
        cmd.args(["-p", p]);
    }
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not run cargo for the wasm guests: {e}"));
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("may not be installed")
            || stderr.contains("target may not be installed")
            || stderr.contains("can't find crate for `core`")
        {
            panic!("the {TARGET} target is missing; fix: rustup target add {TARGET}");
        }
        panic!(
            "building the wasm guests in {} failed:\n{stderr}",
            workspace.display()
        );
    }
    packages
        .iter()
        .map(|name| {
            let path = target_dir
                .join(TARGET)
                .join("release")
                .join(format!("{}.wasm", name.replace('-', "_")));
            let bytes = std::fs::read(&path).unwrap_or_else(|e| {
                panic!("guest {name} was not built at {}: {e}", path.display())
            });
            Built {
                name: (*name).to_owned(),
                path,
                sha256: hex(&Sha256::digest(&bytes)),
            }
        })
        .collect()
}

/// The guests' own target directory: beside the host's, so `cargo clean` removes it.
fn target_dir(workspace: &Path) -> PathBuf {
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out; go up to <target>.
    let out_dir =
        PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set for build scripts"));
    let host_target = out_dir
        .ancestors()
        .nth(4)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| workspace.join("target"));
    host_target.join("wasm-guests")
}

fn rerun_if_changed(dir: &Path) {
    println!("cargo:rerun-if-changed={}", dir.display());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if name == "target" || name.to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                rerun_if_changed(&path);
            } else {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
