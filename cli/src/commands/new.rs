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

/// The SDK, file by file, as `vendor/cf-agent-sdk/src/…` of the new project.
const SDK_FILES: [(&str, &str); 3] = [
    (
        "lib.rs",
        include_str!("../../../guest-agents/sdk/src/lib.rs"),
    ),
    (
        "llm.rs",
        include_str!("../../../guest-agents/sdk/src/llm.rs"),
    ),
    (
        "tools.rs",
        include_str!("../../../guest-agents/sdk/src/tools.rs"),
    ),
];
/// The contract the SDK is generated from (its `../../wit/0.2.0`).
const WIT: &str = include_str!("../../../wit/0.2.0/agent.wit");
const WIT_PATH: &str = "wit/0.2.0/agent.wit";
const AGENT_LIB: &str = include_str!("template/lib.rs.txt");
const BUILD_RS: &str = include_str!("template/build.rs.txt");

/// The SDK's manifest. Its dependencies are those of `guest-agents/sdk/Cargo.toml`,
/// with the versions of `guest-agents/Cargo.toml`'s `[workspace.dependencies]`.
const SDK_CARGO_TOML: &str = "[package]
name = \"cf-agent-sdk\"
version = \"0.2.0\"
edition = \"2024\"
publish = false

[dependencies]
schemars = \"1\"
serde = { version = \"1\", features = [\"derive\"] }
serde_json = \"1\"
wit-bindgen = { version = \"0.63\", default-features = false, features = [\"macros\", \"realloc\", \"std\"] }
";

/// The project's manifest: the SDK, and what the agent's tool inputs derive with.
fn cargo_toml(name: &str) -> String {
    format!(
        "[package]
name = \"{name}\"
version = \"0.1.0\"
edition = \"2024\"
publish = false

[lib]
crate-type = [\"cdylib\"]

[dependencies]
cf-agent-sdk = {{ path = \"vendor/cf-agent-sdk\" }}
# A tool's input is a Rust type; its JSON Schema is derived.
schemars = \"1\"
serde = {{ version = \"1\", features = [\"derive\"] }}

[profile.release]
opt-level = \"s\"
strip = true
panic = \"abort\"

# A workspace of its own.
[workspace]
"
    )
}

/// Writes the project `dir/name`, refusing to touch an existing directory.
fn create(dir: &Path, name: &str) -> Result<std::path::PathBuf, String> {
    cf_host::validate_agent_name(name).map_err(|e| e.to_string())?;
    let root = dir.join(name);
    if root.exists() {
        return Err(format!("{} already exists", root.display()));
    }
    let crate_file = name.replace('-', "_");
    let mut files: Vec<(String, String)> = vec![
        ("Cargo.toml".into(), cargo_toml(name)),
        ("rust-toolchain.toml".into(), "[toolchain]\nchannel = \"1.95.0\"\ntargets = [\"wasm32-wasip2\"]\nprofile = \"minimal\"\n".to_owned()),
        ("agent.toml".into(), format!("# What this agent asks the host for; the operator grants it (or runs it with --trust).\nname = \"{name}\"\nmodels = [\"claude-*\"]\nmax_tokens = 1024\n# Its own key-value store (the contract's `store` interface).\nstore = false\n")),
        ("build.rs".into(), BUILD_RS.to_owned()),
        ("src/lib.rs".into(), AGENT_LIB.replace("{{name}}", name)),
        ("vendor/cf-agent-sdk/Cargo.toml".into(), SDK_CARGO_TOML.to_owned()),
        (WIT_PATH.into(), WIT.to_owned()),
        ("README.md".into(), format!(
            "# {name}\n\nA claude-force agent. Build it and run it:\n\n```sh\ncargo build --release --target wasm32-wasip2\ncf-host run --trust target/wasm32-wasip2/release/{crate_file}.wasm \"What is a monad?\"\n```\n\n`--trust` grants the agent what `agent.toml` declares; an operator grants it in\nthe config file instead (`[plugins.{name}]`). Without `ANTHROPIC_API_KEY` the offline\nprovider answers. The SDK (`vendor/cf-agent-sdk`) and the contract (`wit/0.2.0`) are\ncopies from cf-host.\n"
        )),
    ];
    files.extend(SDK_FILES.iter().map(|(file, text)| {
        (
            format!("vendor/cf-agent-sdk/src/{file}"),
            (*text).to_owned(),
        )
    }));
    for (path, text) in files {
        let file = root.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    Ok(root)
}
