//! Loading components: built-ins, files, bytes, and everything that is not an agent.

use crate::support::*;
use cf_host::{Error, Source};

#[tokio::test]
async fn invalid_names_and_unknown_agents_are_refused() {
    let (host, _dir) = host();
    let err = host.load("no such agent").await.unwrap_err();
    assert!(matches!(err, Error::InvalidAgentName { .. }), "{err:?}");
    let err = host.load("nosuch").await.unwrap_err();
    assert!(matches!(err, Error::UnknownAgent { .. }), "{err:?}");
    assert!(
        err.to_string().contains("python-expert"),
        "lists the built-ins: {err}"
    );
}

#[tokio::test]
async fn bytes_that_are_not_a_component_are_refused_clearly() {
    let (host, _dir) = host();
    let err = host
        .load(Source::Bytes(b"hello".to_vec()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidComponent { .. }), "{err:?}");
    // A core module (not a component): the smallest valid one.
    let core = b"\0asm\x01\0\0\0".to_vec();
    let err = host.load(Source::Bytes(core)).await.unwrap_err();
    assert!(matches!(err, Error::InvalidComponent { .. }), "{err:?}");
    let err = host
        .load(std::path::PathBuf::from("/nonexistent/agent.wasm"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
}

#[tokio::test]
async fn a_component_is_compiled_once_and_reused_from_disk() {
    let (host, dir) = host();
    let wasm = std::fs::read(hostile_wasm()).expect("hostile guest built");
    let first = bounded("first load", 60, host.load(Source::Bytes(wasm.clone())))
        .await
        .expect("loads");
    let compiled: Vec<_> = std::fs::read_dir(dir.path().join("components"))
        .expect("compiled dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    let cwasm: Vec<_> = compiled
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(cwasm.len(), 1, "{compiled:?}");
    assert!(
        cwasm[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&first.info().sha256)
    );
    let modified = std::fs::metadata(cwasm[0]).unwrap().modified().unwrap();
    // A second host (a second `cf-host run`) loads the compiled copy.
    let second_host = cf_host::Host::builder()
        .data_dir(Some(dir.path().to_path_buf()))
        .build()
        .expect("host");
    let second = bounded("second load", 60, second_host.load(Source::Bytes(wasm)))
        .await
        .expect("loads");
    assert_eq!(first.info(), second.info());
    assert_eq!(
        std::fs::metadata(cwasm[0]).unwrap().modified().unwrap(),
        modified,
        "not rewritten"
    );
    // A corrupt compiled copy is ignored and replaced, never fatal.
    std::fs::write(cwasm[0], b"garbage").unwrap();
    let third_host = cf_host::Host::builder()
        .data_dir(Some(dir.path().to_path_buf()))
        .build()
        .expect("host");
    bounded(
        "load over a corrupt copy",
        60,
        third_host.load(hostile_wasm().to_path_buf()),
    )
    .await
    .expect("recompiles");
}

#[tokio::test]
async fn inspect_reports_the_contract_and_imports() {
    let (host, _dir) = host();
    let wasm = std::fs::read(hostile_wasm()).expect("built");
    let interface = host.inspect(wasm).await.expect("a component");
    assert_eq!(interface.contract_versions, vec!["0.1.0".to_owned()]);
    assert!(
        interface
            .imports
            .iter()
            .any(|i| i == "claude-force:agent/llm@0.1.0")
    );
    assert!(
        interface
            .exports
            .iter()
            .any(|e| e == "claude-force:agent/agent@0.1.0")
    );
    assert_eq!(interface.check().expect("supported"), "0.1.0");
}

#[tokio::test]
async fn describe_is_read_at_load() {
    let (host, _dir) = host();
    let agent = host.load("bug-investigator").await.expect("loads");
    let info = agent.info();
    assert_eq!(info.name, "bug-investigator");
    assert_eq!(info.contract, "0.2.0", "bug-investigator moved to 0.2.0");
    assert_eq!(info.sha256.len(), 64);
    let python = host.load("python-expert").await.expect("loads");
    assert_eq!(
        python.info().contract,
        "0.2.0",
        "python-expert streams, on 0.2.0"
    );
    assert!(info.tags.iter().any(|t| t == "multi-step"));
}

#[tokio::test]
async fn a_component_for_another_contract_version_is_refused_by_name() {
    let (host, _dir) = host();
    let err = host
        .load(cf_tests::future_wasm().to_path_buf())
        .await
        .unwrap_err();
    match &err {
        Error::IncompatibleContract { found, supported } => {
            assert_eq!(found, "claude-force:agent@0.9.0");
            assert_eq!(supported, "0.2.0, 0.1.0");
        }
        other => panic!("expected IncompatibleContract, got {other:?}"),
    }
    assert!(err.is_usage());
}

#[tokio::test]
async fn pinned_digests_right_wrong_and_missing() {
    let (host, _dir) = host();
    let wasm = std::fs::read(hostile_wasm()).expect("built");
    let digest = cf_host::component_sha256(&wasm);
    let agent = host
        .load_pinned(Source::Bytes(wasm.clone()), &digest)
        .await
        .expect("the right digest loads");
    assert_eq!(agent.info().sha256, digest);
    let err = host
        .load_pinned(Source::Bytes(wasm.clone()), &"ab".repeat(32))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::DigestMismatch { actual, .. } if *actual == digest),
        "{err:?}"
    );
    // No pin: loads whatever it is given.
    host.load(Source::Bytes(wasm))
        .await
        .expect("unpinned loads");
    // A pinned built-in is checked against its embedded digest.
    let builtin = cf_builtin::find("python-expert").expect("shipped");
    host.load_pinned("python-expert", builtin.sha256)
        .await
        .expect("built-in with its digest");
    assert!(host.load_pinned("python-expert", &digest).await.is_err());
}

/// `Host::builder().build()` keeps nothing on disk unless told where, as wasmtime's
/// builders grant nothing by default: a plugin granted a store finds none (its calls
/// fail with `io`), and the same plugin with a data directory stores and reads back.
#[tokio::test]
async fn a_default_host_keeps_nothing_on_disk() {
    let manifest = cf_host::permissions::Manifest {
        store: true,
        ..Default::default()
    };
    let wasm = std::fs::read(hostile_wasm()).expect("the hostile guest");
    let bare = cf_host::Host::builder()
        .trust_declared(true)
        .build()
        .expect("host");
    let agent = bounded(
        "load",
        60,
        bare.load_declared(wasm.clone(), manifest.clone()),
    )
    .await
    .expect("loads");
    let err = bounded("run", 60, agent.run(cf_host::Task::new("cache-put k v")))
        .await
        .unwrap_err();
    assert!(
        matches!(&err.error, Error::AgentFailed(m) if m.contains("no data directory")),
        "{:?}",
        err.error
    );
    assert!(
        bare.llm().response_cache().is_none(),
        "no response cache without a directory"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let kept = cf_host::Host::builder()
        .trust_declared(true)
        .data_dir(Some(dir.path().to_path_buf()))
        .build()
        .expect("host");
    let agent = bounded("load", 60, kept.load_declared(wasm, manifest))
        .await
        .expect("loads");
    bounded("run", 60, agent.run(cf_host::Task::new("cache-put k v")))
        .await
        .expect("stored");
    assert!(dir.path().join("agents").is_dir());
    assert!(kept.llm().response_cache().is_some());
}
