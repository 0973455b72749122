//! The sandbox every guest runs in, and nothing else: the engine's configuration
//! ([`engine`]), the store of one run with its memory limiter and epoch deadline
//! ([`store`]), the empty WASI context with captured stdout and stderr ([`wasi`]),
//! what a trap means ([`traps`]), compiled components kept on disk ([`compiled`]),
//! and the linker that grants the capabilities ([`linker`]).

pub(crate) mod compiled;
pub(crate) mod engine;
pub(crate) mod store;
pub(crate) mod traps;
pub(crate) mod wasi;

pub(crate) use compiled::CompiledComponents;
pub(crate) use engine::{EPOCH_TICK, EpochTicker, new_engine};
pub(crate) use store::{RunState, new_store};

use crate::bindings::v0_1::claude_force::agent as wit;
use crate::bindings::v0_2::claude_force::agent as wit2;
use crate::capabilities::{llm::LlmCtx, log::LogCtx, output::OutputCtx, store::StoreCtx};
use crate::error::Error;
use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};

/// The linker of every run: WASI (with the run's empty context) and every capability
/// of every contract version served (their interfaces have versioned names, so both
/// live in one linker), each reaching its own context in the run's store.
pub(crate) fn linker(engine: &Engine) -> Result<Linker<RunState>, Error> {
    let mut linker = Linker::new(engine);
    let linked = (|| {
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wit::types::add_to_linker::<RunState, HasSelf<LlmCtx>>(&mut linker, |s| &mut s.llm)?;
        wit::llm::add_to_linker::<RunState, HasSelf<LlmCtx>>(&mut linker, |s| &mut s.llm)?;
        wit::cache::add_to_linker::<RunState, HasSelf<StoreCtx>>(&mut linker, |s| &mut s.store)?;
        wit::log::add_to_linker::<RunState, HasSelf<LogCtx>>(&mut linker, |s| &mut s.log)?;
        wit2::types::add_to_linker::<RunState, HasSelf<LlmCtx>>(&mut linker, |s| &mut s.llm)?;
        wit2::llm::add_to_linker::<RunState, HasSelf<LlmCtx>>(&mut linker, |s| &mut s.llm)?;
        wit2::store::add_to_linker::<RunState, HasSelf<StoreCtx>>(&mut linker, |s| &mut s.store)?;
        wit2::log::add_to_linker::<RunState, HasSelf<LogCtx>>(&mut linker, |s| &mut s.log)?;
        wit2::output::add_to_linker::<RunState, HasSelf<OutputCtx>>(&mut linker, |s| {
            &mut s.output
        })?;
        wasmtime::Result::<()>::Ok(())
    })();
    linked.map_err(|e| Error::Setup(format!("linking capabilities: {e}")))?;
    Ok(linker)
}
