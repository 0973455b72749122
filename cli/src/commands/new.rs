//! `cf-host new <name>`: a Rust agent project that builds and runs in two commands.

use crate::args::NewArgs;
use crate::error::{CliError, Exit};
use std::path::Path;

pub(crate) fn new_project(args: NewArgs) -> Result<Exit, CliError> {
    let root = create(&args.dir, &args.name).map_err(CliError::Usage)?;
    let file = args.name.replace('-', "_");
    eprintln!("cf-host: created {}", root.display());
    println!(
        "cd {} && cargo build --release --target wasm32-wasip2",
        root.display()
    );
    println!(
        "cf-host run --trust {}/target/wasm32-wasip2/release/{file}.wasm \"What is a monad?\"",
        root.display()
    );
    Ok(Exit::Ok)
}

const SDK_LIB: &str = include_str!("../../../guest-agents/sdk/src/lib.rs");
const WIT: &str = include_str!("../../../wit/0.1.0/agent.wit");
const AGENT_LIB: &str = include_str!("template/lib.rs.txt");
const BUILD_RS: &str = include_str!("template/build.rs.txt");

/// Writes the project `dir/name`, refusing to touch an existing directory.
fn create(dir: &Path, name: &str) -> Result<std::path::PathBuf, String> {
    cf_host::validate_agent_name(name).map_err(|e| e.to_string())?;
    let root = dir.join(name);
    if root.exists() {
        return Err(format!("{} already exists", root.display()));
    }
    let crate_file = name.replace('-', "_");
    let files: [(&str, String); 9] = [
        ("Cargo.toml", format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\ncf-agent-sdk = {{ path = \"vendor/cf-agent-sdk\" }}\n\n[profile.release]\nopt-level = \"s\"\nstrip = true\npanic = \"abort\"\n\n# A workspace of its own.\n[workspace]\n"
        )),
        ("rust-toolchain.toml", "[toolchain]\nchannel = \"1.95.0\"\ntargets = [\"wasm32-wasip2\"]\nprofile = \"minimal\"\n".to_owned()),
        ("agent.toml", format!("# What this agent asks the host for; the operator grants it (or runs it with --trust).\nname = \"{name}\"\nmodels = [\"claude-*\"]\nmax_tokens = 1024\n# Its own key-value store (the contract's `cache` interface).\nstore = false\n")),
        ("build.rs", BUILD_RS.to_owned()),
        ("src/lib.rs", AGENT_LIB.replace("{{name}}", name)),
        ("vendor/cf-agent-sdk/Cargo.toml", "[package]\nname = \"cf-agent-sdk\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n[dependencies]\nwit-bindgen = { version = \"0.63\", default-features = false, features = [\"macros\", \"realloc\", \"std\"] }\n".to_owned()),
        ("vendor/cf-agent-sdk/src/lib.rs", SDK_LIB.to_owned()),
        ("wit/0.1.0/agent.wit", WIT.to_owned()),
        ("README.md", format!(
            "# {name}\n\nA claude-force agent. Build it and run it:\n\n```sh\ncargo build --release --target wasm32-wasip2\ncf-host run --trust target/wasm32-wasip2/release/{crate_file}.wasm \"What is a monad?\"\n```\n\n`--trust` grants the agent what `agent.toml` declares; an operator grants it in\nthe config file instead (`[plugins.{name}]`). Without `ANTHROPIC_API_KEY` the offline\nprovider answers. The SDK (`vendor/cf-agent-sdk`) and the contract (`wit/0.1.0`) are\ncopies from cf-host.\n"
        )),
    ];
    for (path, text) in files {
        let file = root.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    Ok(root)
}
