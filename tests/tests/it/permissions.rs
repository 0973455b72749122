//! Declared-and-granted capabilities, end to end: a plugin may call only models it
//! declares and the operator grants; everything else is denied at call time, names
//! the capability and the plugin, and is never sent.

use crate::support::*;
use cf_host::llm::Provider;
use cf_host::permissions::Grant;
use cf_host::{Error, Host, HostBuilder, Task};
use std::path::PathBuf;
use std::sync::Arc;

/// The hostile guest copied beside a manifest of our choosing.
fn plugin_with_manifest(dir: &std::path::Path, manifest: Option<&str>) -> PathBuf {
    let wasm = dir.join("plugin.wasm");
    std::fs::copy(hostile_wasm(), &wasm).expect("copy the guest");
    if let Some(text) = manifest {
        std::fs::write(dir.join("plugin.toml"), text).expect("write the manifest");
    }
    wasm
}

/// A host over the data directory `cache` whose model calls go to `provider`, with
/// the response cache off (every call reaches the provider) and no grants yet.
fn spied(cache: PathBuf, provider: Arc<dyn Provider>) -> HostBuilder {
    Host::builder()
        .data_dir(Some(cache))
        .no_response_cache()
        .provider(provider)
}

fn grant(models: &[&str]) -> Grant {
    Grant {
        models: models.iter().map(|m| (*m).to_owned()).collect(),
        store: true,
        ..Grant::default()
    }
}

#[tokio::test]
async fn the_grant_matrix_end_to_end() {
    let sonnet = "models = [\"claude-sonnet-4-5\"]\ncache = true\n";
    let haiku = "models = [\"claude-haiku-4-5\"]\ncache = true\n";
    let cases: [(&str, Option<&str>, Option<Grant>, bool); 6] = [
        ("no grant", Some(sonnet), None, false),
        ("no manifest", None, Some(grant(&["*"])), false),
        (
            "exact grant",
            Some(sonnet),
            Some(grant(&["claude-sonnet-4-5"])),
            true,
        ),
        (
            "wildcard grant",
            Some(sonnet),
            Some(grant(&["claude-*"])),
            true,
        ),
        (
            "declared but not granted",
            Some(sonnet),
            Some(grant(&["claude-haiku-4-5"])),
            false,
        ),
        (
            "granted but not declared",
            Some(haiku),
            Some(grant(&["claude-sonnet-4-5"])),
            false,
        ),
    ];
    for (name, manifest, g, allowed) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        let wasm = plugin_with_manifest(dir.path(), manifest);
        let spy = Spy::new();
        let mut builder = spied(dir.path().join("cache"), spy.clone());
        if let Some(g) = g {
            builder = builder.grant("hostile", g);
        }
        let host = builder.build().expect("host");
        let agent = bounded("load", 60, host.load(wasm)).await.expect("loads");
        let out = bounded(name, 60, agent.run(Task::new("llm-debug hello")))
            .await
            .expect("runs");
        if allowed {
            assert!(out.text.starts_with("Ok("), "{name}: {}", out.text);
            assert_eq!(spy.requests().len(), 1, "{name}");
        } else {
            assert!(
                out.text.starts_with("Err(LlmError::Denied("),
                "{name}: {}",
                out.text
            );
            assert!(
                out.text.contains("capability llm.model") && out.text.contains("plugin hostile"),
                "{name}: {}",
                out.text
            );
            assert!(
                spy.requests().is_empty(),
                "{name}: a denied call is never sent"
            );
        }
    }
}

#[tokio::test]
async fn limits_cache_and_pins_follow_the_grant() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wasm = plugin_with_manifest(dir.path(), Some("models = [\"*\"]\nmax_tokens = 100\n"));
    let spy = Spy::new();
    let host = spied(dir.path().join("cache"), spy.clone())
        .grant(
            "hostile",
            Grant {
                models: vec!["*".into()],
                max_tokens: Some(50),
                store: true,
                ..Grant::default()
            },
        )
        .build()
        .expect("host");
    let agent = bounded("load", 60, host.load(wasm.clone()))
        .await
        .expect("loads");
    // `llm-loop` asks for 16 tokens per call: within 50.
    let out = bounded("within", 60, agent.run(Task::new("llm-loop 1")))
        .await
        .expect("runs");
    assert_eq!(out.text, "ok=1 last_error=none");
    // The operator's --max-tokens 80 is above the smaller limit (50).
    let options = cf_host::RunOptions {
        max_tokens: Some(80),
        ..cf_host::RunOptions::default()
    };
    let out = bounded(
        "beyond",
        60,
        agent.run_with(Task::new("llm-loop 1"), &options),
    )
    .await
    .expect("runs");
    assert!(
        out.text.contains("capability llm.max_tokens") && out.text.contains("at most 50"),
        "{}",
        out.text
    );
    // The manifest did not declare the cache: its quota is zero.
    let err = bounded("cache", 60, agent.run(Task::new("cache-put k v")))
        .await
        .unwrap_err();
    assert!(
        matches!(&err.error, Error::AgentFailed(m) if m.contains("capability cache")),
        "{:?}",
        err.error
    );

    // A grant pinned to another component refuses this one.
    let pinned = spied(dir.path().join("cache"), spy.clone())
        .grant(
            "hostile",
            Grant {
                sha256: Some("00".repeat(32)),
                ..Grant::unrestricted()
            },
        )
        .build()
        .expect("host");
    let err = bounded("load", 60, pinned.load(wasm)).await.unwrap_err();
    assert!(
        matches!(&err, Error::DigestMismatch { expected, .. } if *expected == "00".repeat(32)),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_broken_manifest_is_a_clear_load_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wasm = plugin_with_manifest(dir.path(), Some("modles = [\"*\"]\n"));
    let (host, _d) = host();
    let err = host.load(wasm).await.unwrap_err();
    assert!(
        matches!(&err, Error::InvalidManifest { reason, .. } if reason.contains("modles")),
        "{err:?}"
    );
    assert!(err.is_usage());
}

#[tokio::test]
async fn shipped_agents_run_unless_a_grant_narrows_them() {
    let spy = Spy::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let host = spied(dir.path().to_path_buf(), spy.clone())
        .grant("code-reviewer", grant(&["claude-haiku-*"]))
        .build()
        .expect("host");
    let expert = bounded("load", 60, host.load("python-expert"))
        .await
        .expect("loads");
    bounded("ungranted shipped agent", 60, expert.run(Task::new("x")))
        .await
        .expect("the operator's own agents run");
    let reviewer = bounded("load", 60, host.load("code-reviewer"))
        .await
        .expect("loads");
    let err = bounded("narrowed", 60, reviewer.run(Task::new("fn f() {}")))
        .await
        .unwrap_err();
    assert!(
        matches!(&err.error, Error::Llm(cf_host::llm::LlmError::Denied(m)) if m.contains("claude-sonnet-4-5")),
        "{:?}",
        err.error
    );
}

#[tokio::test]
async fn an_embedder_declares_for_a_component_from_bytes() {
    use cf_host::permissions::Manifest;
    let spy = Spy::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let host = spied(dir.path().to_path_buf(), spy.clone())
        .grant("hostile", grant(&["claude-*"]))
        .build()
        .expect("host");
    let wasm = std::fs::read(hostile_wasm()).expect("built");
    // Bytes declare nothing: denied even with a grant.
    let bare = bounded("load", 60, host.load(wasm.clone()))
        .await
        .expect("loads");
    let out = bounded("bare", 60, bare.run(Task::new("llm-debug x")))
        .await
        .expect("runs");
    assert!(
        out.text
            .contains("granted by the operator but not declared"),
        "{}",
        out.text
    );
    // Declared by the embedder: allowed where the grant agrees.
    let manifest = Manifest {
        models: vec!["claude-sonnet-*".into()],
        ..Manifest::default()
    };
    let declared = bounded("load", 60, host.load_declared(wasm, manifest))
        .await
        .expect("loads");
    let out = bounded("declared", 60, declared.run(Task::new("llm-debug x")))
        .await
        .expect("runs");
    assert!(out.text.starts_with("Ok("), "{}", out.text);
    assert_eq!(spy.requests().len(), 1);
}

#[tokio::test]
async fn a_plugin_cache_quota_is_the_smaller_of_both() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wasm = plugin_with_manifest(
        dir.path(),
        Some("models = [\"*\"]\ncache = true\nstore_quota_bytes = 4096\n"),
    );
    let host = Host::builder()
        .data_dir(Some(dir.path().join("cache")))
        .no_response_cache()
        .grant(
            "hostile",
            Grant {
                store_quota_bytes: Some(100),
                ..Grant::unrestricted()
            },
        )
        .build()
        .expect("host");
    let agent = bounded("load", 60, host.load(wasm)).await.expect("loads");
    let small = "v".repeat(40);
    let out = bounded(
        "within",
        60,
        agent.run(Task::new(format!("cache-put a {small}"))),
    )
    .await
    .expect("40 bytes fit 100");
    assert_eq!(out.text, "stored");
    // 91 more bytes pass 100: the full store makes room by evicting `a` (the store is a
    // cache); with the manifest's 4096 it would have kept both.
    let out = bounded(
        "evicting",
        60,
        agent.run(Task::new(format!("cache-put b {}", "v".repeat(90)))),
    )
    .await
    .expect("stored by evicting");
    assert_eq!(out.text, "stored");
    let out = bounded("evicted", 60, agent.run(Task::new("cache-get a")))
        .await
        .expect("runs");
    assert_eq!(out.text, "<absent>", "a made room for b");
    // An entry alone over 100 bytes is refused.
    let big = "v".repeat(100);
    let err = bounded(
        "beyond",
        60,
        agent.run(Task::new(format!("cache-put c {big}"))),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err.error, Error::AgentFailed(m) if m.contains("QuotaExceeded") && m.contains("limit of 100 bytes")),
        "{:?}",
        err.error
    );
}

/// Compiled components the host keeps under `cache`.
fn compiled_components(cache: &std::path::Path) -> usize {
    std::fs::read_dir(cache.join("components")).map_or(0, |d| {
        d.filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
        })
        .count()
    })
}

#[tokio::test]
async fn a_grant_pinned_to_the_expected_name_refuses_before_compiling() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("cache");
    let pinned_host = |name: &str| {
        spied(cache.clone(), Spy::new())
            .grant(
                name,
                Grant {
                    sha256: Some("00".repeat(32)),
                    ..Grant::unrestricted()
                },
            )
            .build()
            .expect("host")
    };
    // By the file stem: `plugin.wasm` is expected to be `plugin`.
    let wasm = plugin_with_manifest(dir.path(), None);
    let err = bounded("load", 60, pinned_host("plugin").load(wasm.clone()))
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::DigestMismatch { .. }), "{err:?}");
    assert_eq!(compiled_components(&cache), 0, "refused before compiling");

    // By the manifest's name, which the component must then report.
    let wasm = plugin_with_manifest(dir.path(), Some("name = \"hostile\"\n"));
    let err = bounded("load", 60, pinned_host("hostile").load(wasm.clone()))
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::DigestMismatch { .. }), "{err:?}");
    assert_eq!(compiled_components(&cache), 0, "refused before compiling");

    // The same plugin under a host without that pin loads (and is compiled).
    bounded("load", 60, pinned_host("someone-else").load(wasm.clone()))
        .await
        .expect("loads");
    assert_eq!(compiled_components(&cache), 1);

    // A manifest naming the plugin otherwise than it describes itself is refused.
    let wasm = plugin_with_manifest(dir.path(), Some("name = \"poet\"\n"));
    let err = bounded("load", 60, pinned_host("someone-else").load(wasm))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidDescription(m) if m.contains("\"poet\"") && m.contains("\"hostile\"")),
        "{err:?}"
    );
}
