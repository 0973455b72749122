//! `cf-host serve` as an operator runs it: a config file with a token, the address on
//! stderr, a run over HTTP, SIGTERM, and the OpenAPI document fuzzed by schemathesis.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const TOKEN: &str = "a-token-for-the-tests";

/// `cf-host serve` on a free loopback port with `config` as its config file; its
/// address, read from stderr, and the child.
fn serve(dir: &Path, config: &str) -> (String, Child) {
    let file = dir.join("config.toml");
    std::fs::write(&file, config).expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cf-host"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&file)
        .env("CF_DATA_DIR", dir)
        .env("XDG_CONFIG_HOME", dir.join("config-home"))
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("ANTHROPIC_BASE_URL")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cf-host serve starts");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    let address = loop {
        line.clear();
        let n = stderr.read_line(&mut line).expect("stderr");
        assert!(n > 0, "cf-host serve ended before saying where it serves");
        if let Some(at) = line.find("serving on http://") {
            let rest = &line[at + "serving on ".len()..];
            break rest
                .split_whitespace()
                .next()
                .expect("an address")
                .to_owned();
        }
    };
    // Keep draining stderr so that the server never blocks on it.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while stderr.read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
    });
    (address, child)
}

fn digest(token: &str) -> String {
    cf_serve::token_digest(token)
}

#[tokio::test]
async fn serve_answers_a_run_refuses_strangers_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!("[serve.tokens]\nalpha = \"{}\"\n", digest(TOKEN));
    let (address, mut child) = serve(dir.path(), &config);
    let client = reqwest::Client::new();
    let run = client
        .post(format!("{address}/v1/runs"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"agent": "python-expert", "task": "How do I read a CSV file?"}))
        .send()
        .await
        .expect("answers");
    assert_eq!(run.status(), 200);
    let body: serde_json::Value = run.json().await.expect("JSON");
    assert_eq!(body["ok"], true, "{body}");
    assert!(
        body["output"]
            .as_str()
            .is_some_and(|o| o.starts_with("[offline]")),
        "{body}"
    );
    let stranger = client
        .get(format!("{address}/v1/agents"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .expect("answers");
    assert_eq!(stranger.status(), 401);

    // SIGTERM: a graceful stop, exit 0.
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let status = child.wait().expect("exits");
    assert!(status.success(), "{status}");
}

#[test]
fn serving_beyond_loopback_without_tokens_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_cf-host"))
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env("CF_DATA_DIR", dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join("config-home"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[serve.tokens]"), "{stderr}");
    // A token in clear where its digest belongs is refused without echoing it.
    let file = dir.path().join("config.toml");
    std::fs::write(&file, format!("[serve.tokens]\nalpha = \"{TOKEN}\"\n")).expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_cf-host"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&file)
        .env("CF_DATA_DIR", dir.path())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SHA-256"), "{stderr}");
    assert!(!stderr.contains(TOKEN), "the token is not echoed: {stderr}");
}

/// Whether schemathesis (`st`, from PyPI) is installed; CI installs it, and with
/// `CF_REQUIRE_ALL_AGENTS` set its absence is a failure.
fn schemathesis() -> bool {
    let found = Command::new("st")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CF_REQUIRE_ALL_AGENTS").is_none(),
            "schemathesis is required (CF_REQUIRE_ALL_AGENTS is set): pip install schemathesis"
        );
        eprintln!("schemathesis test: skipped: `st` is not installed");
    }
    found
}

/// schemathesis generates requests from `/openapi.json` (a bounded number per
/// operation) and sends them with a valid token: no answer is a 5xx, and the server
/// is still serving afterwards.
#[tokio::test]
async fn the_openapi_document_survives_schemathesis() {
    if !schemathesis() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!("[serve.tokens]\nalpha = \"{}\"\n", digest(TOKEN));
    let (address, mut child) = serve(dir.path(), &config);
    let out = Command::new("st")
        .args(["run", &format!("{address}/openapi.json")])
        .args(["--checks", "not_a_server_error"])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args([
            "--max-examples",
            "15",
            "--request-timeout",
            "60",
            "--seed",
            "1",
        ])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{report}"
    );
    assert!(report.contains("passed"), "{report}");
    let health = reqwest::get(format!("{address}/healthz"))
        .await
        .expect("still serving");
    assert_eq!(health.text().await.expect("body"), "ok\n");
    let _ = child.kill();
    let _ = child.wait();
}
