//! Builds the hostile guests in `tests/guests/` from source.

use std::path::PathBuf;

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let guests = manifest.join("guests");
    let sdk = manifest.join("../guest-agents/sdk");
    let wit = manifest.join("../wit");
    let built = cf_build_support::build(
        &guests,
        &["hostile", "future"],
        &[guests.as_path(), sdk.as_path(), wit.as_path()],
    );
    for b in built {
        // The hostile guest declares everything; each test host grants it.
        if b.name == "hostile" {
            std::fs::write(
                b.path.with_extension("toml"),
                "models = [\"*\"]\ncache = true\n",
            )
            .expect("write the hostile guest's manifest");
        }
        println!(
            "cargo:rustc-env=CF_GUEST_{}={}",
            b.name.to_uppercase().replace('-', "_"),
            b.path.display()
        );
    }
    build_python_agent(&manifest);
}

/// Builds the Python agent with `guest-agents/python/build.sh` (componentize-py from
/// PyPI). When the tool cannot be had here the script says `skipped` and the test
/// skips with that reason; a failed build fails this build.
fn build_python_agent(manifest: &std::path::Path) {
    let repo = manifest.parent().expect("tests/ is inside the repository");
    let script = repo.join("guest-agents/python/build.sh");
    for input in ["app.py", "build.sh", "py-summarizer.toml"] {
        println!(
            "cargo:rerun-if-changed={}",
            repo.join("guest-agents/python").join(input).display()
        );
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set"));
    let target = out_dir
        .ancestors()
        .nth(4)
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| repo.join("target"));
    let output = std::process::Command::new("bash")
        .arg(&script)
        .current_dir(repo)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap_or_else(|e| panic!("could not run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        panic!(
            "{} failed:\n{stdout}\n{}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    match stdout
        .lines()
        .find_map(|l| l.strip_prefix("python agent: skipped: "))
    {
        Some(reason) => {
            println!("cargo:warning=python agent not built: {reason}");
            println!("cargo:rustc-env=CF_PYTHON_AGENT_SKIPPED={reason}");
        }
        None => println!(
            "cargo:rustc-env=CF_PYTHON_AGENT={}",
            target
                .join("wasm-guests/python/py-summarizer.wasm")
                .display()
        ),
    }
}
