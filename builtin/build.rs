//! Compiles the shipped agents in `guest-agents/` to components and embeds them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const AGENTS: &[&str] = &["python-expert", "code-reviewer", "bug-investigator"];

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("builtin/ is inside the workspace");
    let guests = root.join("guest-agents");
    let wit = root.join("wit");
    let built = cf_build_support::build(&guests, AGENTS, &[guests.as_path(), wit.as_path()]);
    let mut code = String::from(
        "/// The agents shipped with cf-host.\npub static AGENTS: &[BuiltinAgent] = &[\n",
    );
    for b in &built {
        let _ = writeln!(
            code,
            "    BuiltinAgent {{ name: {:?}, wasm: include_bytes!({:?}), sha256: {:?} }},",
            b.name,
            b.path.display().to_string(),
            b.sha256
        );
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(Path::new(&out).join("agents.rs"), code).expect("write agents.rs");
}
