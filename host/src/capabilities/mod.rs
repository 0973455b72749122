//! One module per WIT interface the host offers: each has its own context type, kept
//! in the run's store, and is linked by [`add_to_linker`].

pub(crate) mod cache;
pub(crate) mod llm;
pub(crate) mod log;
pub(crate) mod stdio;

use crate::bindings::v0_1::claude_force::agent as wit;
use crate::run::RunState;
use wasmtime::component::{HasSelf, Linker};

/// Links WASI (with the run's empty context) and every capability of contract 0.1.0.
pub(crate) fn add_to_linker(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wit::types::add_to_linker::<RunState, HasSelf<llm::LlmCtx>>(linker, |s| &mut s.llm)?;
    wit::llm::add_to_linker::<RunState, HasSelf<llm::LlmCtx>>(linker, |s| &mut s.llm)?;
    wit::cache::add_to_linker::<RunState, HasSelf<cache::CacheCtx>>(linker, |s| &mut s.cache)?;
    wit::log::add_to_linker::<RunState, HasSelf<log::LogCtx>>(linker, |s| &mut s.log)?;
    Ok(())
}
