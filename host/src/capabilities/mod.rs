//! One module per WIT interface the host offers to guests: `llm` ([`llm`]), `cache`
//! (the agent's own key-value store, [`store`]; the frozen 0.1.0 contract calls it
//! `cache`), `log` ([`log`]) and, from 0.2.0, `output` ([`output`]). Each has a context type kept in the run's store with
//! a constructor, and implements the interface's generated `Host` trait. The sandbox
//! links them ([`crate::sandbox`]); nothing here knows about runs or the run log.

pub(crate) mod llm;
pub(crate) mod log;
pub(crate) mod output;
pub(crate) mod store;

use crate::permissions::Permissions;
use std::sync::Arc;

/// Who is calling a capability: one loaded agent, shared by all its runs.
#[derive(Debug)]
pub(crate) struct Caller {
    /// The name the agent reported.
    pub name: String,
    /// A plugin's component digest (hex), which keys its store and its cached answers
    /// apart from any other component reporting the same name; `None` for a shipped
    /// agent.
    pub component: Option<Arc<str>>,
    /// What it may do.
    pub permissions: Arc<Permissions>,
    /// How log records at info level and above name it (a hash of its name).
    pub log_id: String,
    /// Its share of the model-call concurrency, when its permissions limit it.
    pub llm_share: Option<Arc<tokio::sync::Semaphore>>,
}

impl Caller {
    /// An agent called `name`, with `permissions`.
    pub(crate) fn new(
        name: String,
        component: Option<Arc<str>>,
        permissions: Arc<Permissions>,
    ) -> Self {
        let llm_share = permissions
            .concurrency()
            .map(|n| Arc::new(tokio::sync::Semaphore::new(n as usize)));
        Self {
            log_id: log::agent_id(&name),
            llm_share,
            name,
            component,
            permissions,
        }
    }
}
