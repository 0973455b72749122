//! The agents shipped with `cf-host`: `python-expert`, `code-reviewer` and
//! `bug-investigator`, compiled from `guest-agents/` for `wasm32-wasip2` by this
//! crate's build script and embedded in the binary.
//!
//! ```
//! let agent = cf_builtin::find("python-expert").expect("shipped");
//! assert!(agent.wasm.starts_with(b"\0asm"));
//! assert_eq!(agent.sha256.len(), 64);
//! ```
#![deny(missing_docs)]

/// One shipped agent.
#[derive(Debug, Clone, Copy)]
pub struct BuiltinAgent {
    /// The agent's name, as `cf-host run <name>` takes it.
    pub name: &'static str,
    /// The component.
    pub wasm: &'static [u8],
    /// The component's SHA-256, lowercase hex, computed at build time.
    pub sha256: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/agents.rs"));

/// The shipped agent called `name`.
pub fn find(name: &str) -> Option<&'static BuiltinAgent> {
    AGENTS.iter().find(|a| a.name == name)
}
