//! Host bindings of every WIT contract version this host serves. One `bindgen!` per
//! version; a new version gets its own module here beside the frozen ones.

/// `claude-force:agent@0.1.0`.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "agent-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
    });

    pub use claude_force::agent::types;
    pub use exports::claude_force::agent::agent;
}

/// `claude-force:agent@0.2.0`: content blocks, tools, thinking, prompt caching,
/// structured output, and the agent's store as `store` with a `denied` case.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit/0.2.0",
        world: "agent-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
    });

    pub use claude_force::agent::types;
    pub use exports::claude_force::agent::agent;
}

/// The contract versions this host can run, newest first.
pub const SUPPORTED_CONTRACTS: &[&str] = &["0.2.0", "0.1.0"];

/// The WIT package every agent contract belongs to.
pub const CONTRACT_PACKAGE: &str = "claude-force:agent";
