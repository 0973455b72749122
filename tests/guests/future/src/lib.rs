//! An agent built for `claude-force:agent@0.9.0`, a version the host does not serve.

wit_bindgen::generate!({ world: "agent-plugin", path: "wit" });

struct Future;

impl exports::claude_force::agent::agent::Guest for Future {
    fn run(task: String) -> String {
        task
    }
}

export!(Future);
