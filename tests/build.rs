//! Builds the test guests in `tests/guests/` from source (the hostile ones and
//! `contract2`, which uses contract 0.2.0), and the agents written in
//! Python and JavaScript with their build scripts (`guest-agents/{python,js}/build.sh`).

use std::path::PathBuf;

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let guests = manifest.join("guests");
    // Both SDKs: `hostile` and `impostor` stay on contract 0.1.0, `contract2` uses 0.2.0.
    let sdk = manifest.join("../guest-agents/sdk");
    let sdk_0_1 = manifest.join("../guest-agents/sdk-0.1");
    let wit = manifest.join("../wit");
    let built = cf_build_support::build(
        &guests,
        &[
            "hostile",
            "future",
            "impostor",
            "contract2",
            "echo-0-1",
            "echo-0-2",
        ],
        &[
            guests.as_path(),
            sdk.as_path(),
            sdk_0_1.as_path(),
            wit.as_path(),
        ],
    );
    for b in built {
        // The hostile guests declare everything; each test host grants it.
        let sidecar = match b.name.as_str() {
            "hostile" | "impostor" => Some("models = [\"*\"]\ncache = true\n"),
            // Everything contract 0.2.0 can ask for; each test host grants what it
            // tests.
            "contract2" => Some("models = [\"*\"]\nstore = true\nthinking = true\nmedia = true\n"),
            // One agent built for each contract version, for the benchmarks.
            "echo-0-1" | "echo-0-2" => Some("models = [\"*\"]\n"),
            _ => None,
        };
        if let Some(sidecar) = sidecar {
            std::fs::write(b.path.with_extension("toml"), sidecar)
                .unwrap_or_else(|e| panic!("write the {} guest's manifest: {e}", b.name));
        }
        println!(
            "cargo:rustc-env=CF_GUEST_{}={}",
            b.name.to_uppercase().replace('-', "_"),
            b.path.display()
        );
    }
    build_script_agents(&manifest, &[PYTHON_AGENT, JS_AGENT]);
}

/// An agent written in another language, built by its own script in
/// `guest-agents/<dir>/` with a tool the script installs (componentize-py from PyPI,
/// componentize-js from npm) into `<target>/…`.
///
/// The script's protocol: it writes `<target>/wasm-guests/<dir>/<name>.wasm` and the
/// manifest beside it and exits 0; or, when the tool cannot be had here (not
/// installed, offline), it prints `<label> agent: skipped: <reason>` and exits 0; a
/// failed build exits non-zero and fails this build. The tests see
/// `CF_<ENV>_AGENT=<path>` or `CF_<ENV>_AGENT_SKIPPED=<reason>`.
struct ScriptAgent {
    /// How the script names itself in its output: `python agent: …`.
    label: &'static str,
    /// The directory under `guest-agents/` and under `<target>/wasm-guests/`.
    dir: &'static str,
    /// The component's file stem.
    name: &'static str,
    /// The files of `guest-agents/<dir>/` the component is made from.
    inputs: &'static [&'static str],
    /// The test's environment variables: `CF_<env>_AGENT`, `CF_<env>_AGENT_SKIPPED`.
    env: &'static str,
}

const PYTHON_AGENT: ScriptAgent = ScriptAgent {
    label: "python",
    dir: "python",
    name: "py-summarizer",
    inputs: &["app.py", "build.sh", "py-summarizer.toml"],
    env: "PYTHON",
};

const JS_AGENT: ScriptAgent = ScriptAgent {
    label: "js",
    dir: "js",
    name: "js-summarizer",
    inputs: &[
        "agent.js",
        "build.sh",
        "js-summarizer.toml",
        "package.json",
        "package-lock.json",
    ],
    env: "JS",
};

/// Runs the agents' build scripts side by side and tells the tests where the
/// components are, or why one was not built.
fn build_script_agents(manifest: &std::path::Path, agents: &[ScriptAgent]) {
    let repo = manifest.parent().expect("tests/ is inside the repository");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set"));
    let target = out_dir
        .ancestors()
        .nth(4)
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| repo.join("target"));
    let results: Vec<(&ScriptAgent, Result<Built, String>)> = std::thread::scope(|s| {
        let running: Vec<_> = agents
            .iter()
            .map(|agent| (agent, s.spawn(|| build_script_agent(repo, &target, agent))))
            .collect();
        running
            .into_iter()
            .map(|(agent, handle)| (agent, handle.join().expect("the build thread panicked")))
            .collect()
    });
    let mut failures = Vec::new();
    for (agent, result) in results {
        let env = agent.env;
        match result {
            Ok(Built::Component(wasm)) => {
                println!("cargo:rustc-env=CF_{env}_AGENT={}", wasm.display());
            }
            Ok(Built::Skipped(reason)) => {
                println!("cargo:warning={} agent not built: {reason}", agent.label);
                println!("cargo:rustc-env=CF_{env}_AGENT_SKIPPED={reason}");
            }
            Err(failure) => failures.push(failure),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// What a build script did.
enum Built {
    /// The component, its manifest beside it.
    Component(PathBuf),
    /// Why the tool could not be had here.
    Skipped(String),
}

/// Runs `guest-agents/<dir>/build.sh`; `Err` says how it failed.
fn build_script_agent(
    repo: &std::path::Path,
    target: &std::path::Path,
    agent: &ScriptAgent,
) -> Result<Built, String> {
    let dir = repo.join("guest-agents").join(agent.dir);
    let script = dir.join("build.sh");
    for input in agent.inputs {
        println!("cargo:rerun-if-changed={}", dir.join(input).display());
    }
    let output = std::process::Command::new("bash")
        .arg(&script)
        .current_dir(repo)
        .env("CARGO_TARGET_DIR", target)
        .output()
        .map_err(|e| format!("could not run {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "{} failed:\n{stdout}\n{}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    // What the script said (built, how big, how long), kept by cargo in the build
    // script's `output` file.
    print!("{stdout}");
    let skipped = format!("{} agent: skipped: ", agent.label);
    match stdout
        .lines()
        .find_map(|l| l.strip_prefix(skipped.as_str()))
    {
        Some(reason) => Ok(Built::Skipped(reason.to_owned())),
        None => Ok(Built::Component(
            target
                .join("wasm-guests")
                .join(agent.dir)
                .join(format!("{}.wasm", agent.name)),
        )),
    }
}
