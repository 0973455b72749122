//! Trust nothing found on disk: each test pins a finding of the security review (issue
//! 13) and fails on the host before its fix.

use crate::support::*;
use cf_host::permissions::Manifest;
use cf_host::{Error, Host, Limits, Source, Task};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

fn host_on(cache: &Path, limits: Limits) -> Result<Host, Error> {
    Host::builder()
        .data_dir(Some(cache.to_path_buf()))
        .no_response_cache()
        .trust_declared(true)
        .limits(limits)
        .build()
}

/// The hostile guest with a custom section appended: the same behaviour and the same
/// reported name under another digest, as a second plugin calling itself `hostile`.
fn hostile_twin() -> Vec<u8> {
    let mut wasm = std::fs::read(hostile_wasm()).expect("hostile guest built");
    let name = b"twin";
    let payload = b"another component";
    wasm.push(0); // custom section
    wasm.push((1 + name.len() + payload.len()) as u8);
    wasm.push(name.len() as u8);
    wasm.extend_from_slice(name);
    wasm.extend_from_slice(payload);
    wasm
}

fn declared() -> Manifest {
    Manifest::parse("models = [\"*\"]\ncache = true\n").expect("manifest")
}

/// Critical: a compiled file planted under a component's name ran as native code. Here
/// the planted file is a genuine compiled component, the shipped `python-expert`'s,
/// copied over the hostile guest's file: before the fix the host ran it.
#[tokio::test]
async fn a_compiled_component_this_host_did_not_write_is_never_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let host = host_on(dir.path(), Limits::default()).expect("host");
    bounded("load python-expert", 120, host.load("python-expert"))
        .await
        .expect("loads");
    let wasm = std::fs::read(hostile_wasm()).expect("hostile guest built");
    let hostile = bounded("load hostile", 120, host.load(Source::Bytes(wasm.clone())))
        .await
        .expect("loads");
    let components = dir.path().join("components");
    let cwasm = |prefix: &str| {
        std::fs::read_dir(&components)
            .expect("components")
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            })
            .expect("a compiled file")
    };
    let python = cwasm(&builtin_digest("python-expert"));
    let target = cwasm(&hostile.info().sha256);
    std::fs::copy(&python, &target).expect("plant");
    drop(host);
    let host = host_on(dir.path(), Limits::default()).expect("host");
    let agent = bounded("reload hostile", 120, host.load(Source::Bytes(wasm)))
        .await
        .expect("recompiled, not refused");
    assert_eq!(agent.name(), "hostile", "the planted code did not run");
    // The planted file was replaced by the host's own.
    assert_ne!(
        std::fs::read(&target).expect("read"),
        std::fs::read(&python).expect("read")
    );
}

fn builtin_digest(name: &str) -> String {
    cf_builtin::find(name)
        .expect("a shipped agent")
        .sha256
        .to_owned()
}

/// High: a data directory that others may write, or a subdirectory another user
/// created, was used as is.
#[tokio::test]
async fn a_data_directory_others_may_write_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().expect("temp dir");
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let err = host_on(&shared, Limits::default()).expect_err("world-writable");
    assert!(matches!(err, Error::NotPrivate { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&shared.display().to_string()) && text.contains("chmod go-w"),
        "{text}"
    );
    // A subdirectory planted writable for the group.
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("components")).expect("mkdir");
    std::fs::set_permissions(
        root.join("components"),
        std::fs::Permissions::from_mode(0o775),
    )
    .expect("chmod");
    let err = host_on(&root, Limits::default()).expect_err("group-writable components");
    assert!(err.to_string().contains("components"), "{err}");
    std::fs::set_permissions(
        root.join("components"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    host_on(&root, Limits::default()).expect("fixed as the message says");
}

/// High/medium: a path plugin reporting `bug-investigator` wrote into the shipped
/// agent's store (and picked up a grant written for it).
#[tokio::test]
async fn a_plugin_cannot_take_a_shipped_agents_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let host = host_on(dir.path(), Limits::default()).expect("host");
    let err = bounded(
        "load impostor",
        120,
        host.load(impostor_wasm().to_path_buf()),
    )
    .await
    .expect_err("refused");
    assert!(
        matches!(&err, Error::ReservedName { name } if name == "bug-investigator"),
        "{err:?}"
    );
    assert!(!dir.path().join("agents/bug-investigator").exists());
    // The shipped agent itself still loads under its name.
    let shipped = bounded("load shipped", 120, host.load("bug-investigator"))
        .await
        .expect("the shipped agent");
    assert_eq!(shipped.name(), "bug-investigator");
}

/// High/medium: two plugins reporting one name shared one store.
#[tokio::test]
async fn two_plugins_with_one_name_have_two_stores() {
    let dir = tempfile::tempdir().expect("temp dir");
    let host = host_on(dir.path(), Limits::default()).expect("host");
    let wasm = std::fs::read(hostile_wasm()).expect("hostile guest built");
    let one = bounded(
        "load one",
        120,
        host.load_declared(Source::Bytes(wasm), declared()),
    )
    .await
    .expect("one");
    let two = bounded(
        "load twin",
        120,
        host.load_declared(Source::Bytes(hostile_twin()), declared()),
    )
    .await
    .expect("twin");
    assert_eq!((one.name(), two.name()), ("hostile", "hostile"));
    assert_ne!(one.info().sha256, two.info().sha256);
    let put = one
        .run(Task::new("cache-put secret mine"))
        .await
        .expect("put");
    assert_eq!(put.text, "stored");
    let got = two.run(Task::new("cache-get secret")).await.expect("get");
    assert_eq!(
        got.text, "<absent>",
        "the twin does not see the first plugin's data"
    );
    let got = one.run(Task::new("cache-get secret")).await.expect("get");
    assert_eq!(got.text, "mine");
}

/// Medium: compiling an untrusted component was unbounded. The load deadline is obeyed
/// (a generous one lets the load finish) and enforced (one far below any compile time
/// stops it).
#[tokio::test]
async fn loading_is_bounded_by_the_load_deadline() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wasm = std::fs::read(hostile_wasm()).expect("hostile guest built");
    let tight = Limits {
        load_deadline: Duration::from_nanos(1),
        ..Limits::default()
    };
    let host = host_on(dir.path(), tight).expect("host");
    let err = bounded("load", 120, host.load(Source::Bytes(wasm.clone())))
        .await
        .expect_err("deadline");
    assert!(matches!(err, Error::LoadDeadline { .. }), "{err:?}");
    assert!(err.is_usage());
    let err = bounded("inspect", 120, host.inspect(wasm.clone()))
        .await
        .expect_err("deadline");
    assert!(matches!(err, Error::LoadDeadline { .. }), "{err:?}");
    let other = tempfile::tempdir().expect("temp dir");
    let host = host_on(other.path(), Limits::default()).expect("host");
    bounded("load", 120, host.load(Source::Bytes(wasm)))
        .await
        .expect("within the default");
}

/// Medium: a size budget before compiling, obeyed and violated.
#[tokio::test]
async fn components_over_the_size_limit_are_not_compiled() {
    let dir = tempfile::tempdir().expect("temp dir");
    let len = std::fs::metadata(hostile_wasm()).expect("built").len();
    let limits = |max| Limits {
        max_component_bytes: max,
        ..Limits::default()
    };
    let host = host_on(dir.path(), limits(len - 1)).expect("host");
    let err = bounded("load", 120, host.load(hostile_wasm().to_path_buf()))
        .await
        .expect_err("too large");
    assert!(
        matches!(err, Error::ComponentTooLarge { bytes, max } if bytes == len && max == len - 1),
        "{err:?}"
    );
    let wasm = std::fs::read(hostile_wasm()).expect("read");
    let err = host.load(Source::Bytes(wasm)).await.expect_err("too large");
    assert!(matches!(err, Error::ComponentTooLarge { .. }), "{err:?}");
    let host = host_on(dir.path(), limits(len)).expect("host");
    bounded("load", 120, host.load(hostile_wasm().to_path_buf()))
        .await
        .expect("at the limit");
}

/// Medium/low: an agent path naming `/dev/zero` grew memory without bound, and a FIFO
/// hung the CLI.
#[tokio::test]
async fn devices_and_fifos_are_refused_not_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let host = host_on(dir.path(), Limits::default()).expect("host");
    let err = bounded(
        "load /dev/zero",
        30,
        host.load(std::path::PathBuf::from("/dev/zero")),
    )
    .await
    .expect_err("a device");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    let fifo = dir.path().join("agent.wasm");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let err = bounded("load a FIFO", 30, host.load(fifo.clone()))
        .await
        .expect_err("a FIFO");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    let err = bounded("read a FIFO", 30, host.read_component(&fifo))
        .await
        .expect_err("a FIFO");
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

/// Low: the output and request caps counted only string bytes, so a million empty
/// metadata pairs or one-byte messages passed them.
#[tokio::test]
async fn every_list_item_counts_against_the_byte_caps() {
    let limits = Limits {
        max_output_bytes: 64 * 1024,
        max_request_bytes: 64 * 1024,
        ..Limits::default()
    };
    let (host, _dir) = host_with(None, limits);
    let agent = bounded("load", 120, host.load(hostile_wasm().to_path_buf()))
        .await
        .expect("loads");
    let items = 64 * 1024 / cf_host::LIST_ITEM_BYTES;
    let fits = agent
        .run(Task::new(format!("metadata {}", items / 2)))
        .await
        .expect("fits");
    assert_eq!(fits.metadata.len(), items / 2);
    let err = agent
        .run(Task::new(format!("metadata {}", items * 2)))
        .await
        .expect_err("over");
    assert!(matches!(err.error, Error::OutputTooLarge { .. }), "{err:?}");
    let out = agent
        .run(Task::new(format!("messages {}", items / 2)))
        .await
        .expect("runs");
    assert_eq!(out.text, "sent");
    let out = agent
        .run(Task::new(format!("messages {}", items * 2)))
        .await
        .expect("runs");
    assert!(
        out.text.starts_with("refused: LlmError::TooLarge") || out.text.contains("TooLarge"),
        "{}",
        out.text
    );
}
