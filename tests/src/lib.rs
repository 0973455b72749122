//! Support for the integration tests: the hostile guests, built from source by this
//! crate's build script.
#![deny(missing_docs)]

use std::path::Path;

/// The hostile guest component (see `tests/guests/hostile/src/lib.rs` for what each
/// task makes it do).
pub fn hostile_wasm() -> &'static Path {
    Path::new(env!("CF_GUEST_HOSTILE"))
}

/// A plugin that reports the name of a shipped agent, `bug-investigator`
/// (`tests/guests/impostor`); it declares models and a cache like the hostile guest.
pub fn impostor_wasm() -> &'static Path {
    Path::new(env!("CF_GUEST_IMPOSTOR"))
}

/// A component built for `claude-force:agent@0.9.0`, a contract version this host does
/// not serve (`tests/guests/future`).
pub fn future_wasm() -> &'static Path {
    Path::new(env!("CF_GUEST_FUTURE"))
}

/// An agent on `claude-force:agent@0.2.0` that exercises the contract's new shapes,
/// and refuses nothing itself (`tests/guests/contract2`; the task's context key `mode`
/// picks what it does). Its manifest declares every model, its store, thinking and
/// media.
pub fn contract2_wasm() -> &'static Path {
    Path::new(env!("CF_GUEST_CONTRACT2"))
}

/// The same one-call agent built against contract 0.1.0 (`echo-0-1`) and 0.2.0
/// (`echo-0-2`) from one source file (`tests/guests/echo/lib.rs`), to compare the
/// versions.
pub fn echo_wasm(contract: &str) -> &'static Path {
    match contract {
        "0.1.0" => Path::new(env!("CF_GUEST_ECHO_0_1")),
        _ => Path::new(env!("CF_GUEST_ECHO_0_2")),
    }
}

/// Runs `fut`, failing the test with `step` in the message if it takes longer than
/// `secs` seconds.
pub async fn bounded<F: std::future::Future>(step: &str, secs: u64, fut: F) -> F::Output {
    match tokio::time::timeout(std::time::Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("step {step:?} did not finish within {secs} s"),
    }
}
