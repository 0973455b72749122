//! A component prepared for instantiation, whichever contract version it targets:
//! the version-specific calls of `describe()` and `run()`, and their results in the
//! host's terms.

use crate::bindings::{v0_1, v0_2};
use crate::capabilities::llm::{error_from_0_2, error_from_wit};
use crate::error::Error;
use crate::sandbox::RunState;
use wasmtime::Store;
use wasmtime::component::InstancePre;

/// An agent component linked and checked, for one contract version.
pub(crate) enum PluginPre {
    /// `claude-force:agent@0.1.0`.
    V0_1(v0_1::AgentPluginPre<RunState>),
    /// `claude-force:agent@0.2.0`.
    V0_2(v0_2::AgentPluginPre<RunState>),
}

/// What `describe()` returned, in the host's terms.
pub(crate) struct Described {
    pub name: String,
    pub version: String,
    pub description: String,
    /// Empty: none.
    pub default_model: String,
    pub tags: Vec<String>,
}

/// What `run()` returned: the output's text and metadata, or the agent's error.
pub(crate) type Ran = Result<(String, Vec<(String, String)>), Error>;

impl PluginPre {
    /// Checks that `instance_pre` exports the agent interface of `contract`.
    pub(crate) fn new(
        instance_pre: InstancePre<RunState>,
        contract: &str,
    ) -> wasmtime::Result<Self> {
        Ok(match contract {
            "0.1.0" => Self::V0_1(v0_1::AgentPluginPre::new(instance_pre)?),
            _ => Self::V0_2(v0_2::AgentPluginPre::new(instance_pre)?),
        })
    }

    /// Instantiates the component in `store` and calls `describe()`.
    pub(crate) async fn describe(
        &self,
        store: &mut Store<RunState>,
    ) -> wasmtime::Result<Described> {
        Ok(match self {
            Self::V0_1(pre) => {
                let plugin = pre.instantiate_async(&mut *store).await?;
                let info = plugin
                    .claude_force_agent_agent()
                    .call_describe(&mut *store)
                    .await?;
                Described {
                    name: info.name,
                    version: info.version,
                    description: info.description,
                    default_model: info.default_model,
                    tags: info.tags,
                }
            }
            Self::V0_2(pre) => {
                let plugin = pre.instantiate_async(&mut *store).await?;
                let info = plugin
                    .claude_force_agent_agent()
                    .call_describe(&mut *store)
                    .await?;
                Described {
                    name: info.name,
                    version: info.version,
                    description: info.description,
                    default_model: info.default_model.unwrap_or_default(),
                    tags: info.tags,
                }
            }
        })
    }

    /// Instantiates the component in `store` (calling `instantiated` once it is) and
    /// runs `task`.
    pub(crate) async fn run(
        &self,
        store: &mut Store<RunState>,
        text: String,
        context: Vec<(String, String)>,
        instantiated: impl FnOnce(),
    ) -> wasmtime::Result<Ran> {
        Ok(match self {
            Self::V0_1(pre) => {
                use v0_1::agent::{AgentError, Task};
                let plugin = pre.instantiate_async(&mut *store).await?;
                instantiated();
                let task = Task { text, context };
                match plugin
                    .claude_force_agent_agent()
                    .call_run(&mut *store, &task)
                    .await?
                {
                    Ok(out) => Ok((out.text, out.metadata)),
                    Err(AgentError::InvalidTask(m)) => Err(Error::InvalidTask(m)),
                    Err(AgentError::Llm(e)) => Err(Error::Llm(error_from_wit(e))),
                    Err(AgentError::Failed(m)) => Err(Error::AgentFailed(m)),
                }
            }
            Self::V0_2(pre) => {
                use v0_2::agent::{AgentError, Task};
                let plugin = pre.instantiate_async(&mut *store).await?;
                instantiated();
                let task = Task { text, context };
                match plugin
                    .claude_force_agent_agent()
                    .call_run(&mut *store, &task)
                    .await?
                {
                    Ok(out) => Ok((out.text, out.metadata)),
                    Err(AgentError::InvalidTask(m)) => Err(Error::InvalidTask(m)),
                    Err(AgentError::Llm(e)) => Err(Error::Llm(error_from_0_2(e))),
                    Err(AgentError::Failed(m)) => Err(Error::AgentFailed(m)),
                }
            }
        })
    }
}
