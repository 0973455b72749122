//! The shipped agents, compiled in with the `builtin-agents` feature; none without it.

/// The names of the shipped agents compiled into this build.
pub fn names() -> impl Iterator<Item = &'static str> {
    #[cfg(feature = "builtin-agents")]
    let names = cf_builtin::AGENTS.iter().map(|a| a.name);
    #[cfg(not(feature = "builtin-agents"))]
    let names = std::iter::empty();
    names
}

/// The names, as an error message lists them.
pub(crate) fn listed() -> String {
    let names: Vec<&str> = names().collect();
    if names.is_empty() {
        "none in this build: cf-host was built without its `builtin-agents` feature".into()
    } else {
        names.join(", ")
    }
}

/// The shipped agent called `name`: its component and digest.
#[cfg(feature = "builtin-agents")]
pub(crate) fn find(name: &str) -> Option<(&'static [u8], &'static str)> {
    cf_builtin::find(name).map(|b| (b.wasm, b.sha256))
}

/// The shipped agent called `name`: none in this build.
#[cfg(not(feature = "builtin-agents"))]
pub(crate) fn find(_name: &str) -> Option<(&'static [u8], &'static str)> {
    None
}
