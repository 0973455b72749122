//! Compiled components kept in the data directory, authenticated before use.

use crate::error::Error;
use cf_cache::{Compiled, CompiledStore};
use std::hash::{Hash, Hasher};
use std::path::Path;
use wasmtime::Engine;
use wasmtime::component::Component;

/// Compiled components on disk, keyed by the wasm's SHA-256 and the engine's
/// compatibility hash, so that a second `cf-host run` does not recompile. Each file is
/// authenticated ([`cf_cache::CompiledStore`]) before it is deserialized: it is native
/// code, and a file planted there would otherwise run as the user.
#[derive(Debug)]
pub(crate) struct CompiledComponents {
    store: Option<CompiledStore>,
    engine_key: String,
}

impl CompiledComponents {
    /// Keeps compiled components in `dir` (created private; refused if someone else
    /// owns it or may write it), or nowhere.
    pub(crate) fn open(engine: &Engine, dir: Option<&Path>) -> Result<Self, Error> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let store = dir
            .map(|d| {
                CompiledStore::open(d)
                    .map_err(|e| Error::from_storage("opening the compiled-component directory", e))
            })
            .transpose()?;
        Ok(Self {
            store,
            engine_key: format!("{:016x}", hasher.finish()),
        })
    }

    /// The component for `wasm`: from disk when compiled before and intact, else
    /// compiled now and kept.
    pub(crate) fn load(
        &self,
        engine: &Engine,
        wasm: &[u8],
        sha256: &str,
    ) -> Result<Component, Error> {
        let name = format!("{sha256}-{}.cwasm", self.engine_key);
        if let Some(store) = &self.store {
            // Compiled code is a few times larger than the wasm; anything far larger is
            // not ours, and is not read into memory.
            let bound = (wasm.len() as u64).saturating_mul(16).max(64 * 1024 * 1024);
            match store.get(&name, bound) {
                Ok(Compiled::Valid(bytes)) => match deserialize(engine, &bytes) {
                    Ok(c) => return Ok(c),
                    Err(e) => {
                        tracing::warn!(file = %name, error = %e, "recompiling: the compiled component is unusable")
                    }
                },
                Ok(Compiled::Rejected(why)) => {
                    tracing::warn!(dir = %store.path().display(), file = %name, why = %why, "recompiling: refusing a compiled component this host did not write")
                }
                Ok(Compiled::Missing) => {}
                Err(e) => {
                    tracing::warn!(file = %name, error = %e, "recompiling: the compiled component could not be read")
                }
            }
        }
        let component = Component::new(engine, wasm).map_err(|e| Error::InvalidComponent {
            detail: format!("{e:#}"),
        })?;
        if let Some(store) = &self.store {
            let kept = component
                .serialize()
                .map_err(|e| e.to_string())
                .and_then(|bytes| store.put(&name, &bytes).map_err(|e| e.to_string()));
            if let Err(e) = kept {
                tracing::warn!(file = %name, error = %e, "could not keep the compiled component");
            }
        }
        Ok(component)
    }
}

#[expect(
    unsafe_code,
    reason = "wasmtime requires unsafe to load precompiled native code"
)]
fn deserialize(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `bytes` passed `CompiledStore::get`'s HMAC check under this user's private
    // key, bound to the file's name (the component's digest and this engine's
    // compatibility hash): they are what `CompiledComponents::load` serialized earlier. They
    // are a copy in memory, not a mapping another process could truncate (SIGBUS).
    // wasmtime checks the header and the engine configuration again before using them.
    unsafe { Component::deserialize(engine, bytes) }
}
