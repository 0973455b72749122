//! One agent, built twice from this one file: `echo-0-1` against contract 0.1.0 and
//! `echo-0-2` against 0.2.0 (each crate names the SDK of its version
//! `cf_agent_sdk`), so that a benchmark compares the contract versions and nothing
//! else. One model call per run, like the shipped single-call agents.

use cf_agent_sdk::{Agent, AgentError, AgentInfo, AgentOutput, Task, delimit, export_agent, llm};

struct Echo;

impl Agent for Echo {
    fn describe() -> AgentInfo {
        cf_agent_sdk::info(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Repeats the task through the model.",
        )
    }

    fn run(task: Task) -> Result<AgentOutput, AgentError> {
        let answer = llm::Request::new()
            .system("Repeat what the user says, word for word.")
            .user(delimit("task", &task.text))
            .temperature(0.0)
            .max_tokens(512)
            .send()?;
        Ok(AgentOutput {
            text: answer.text,
            metadata: vec![("model".into(), answer.model)],
        })
    }
}

export_agent!(Echo);
