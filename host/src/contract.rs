//! What a component is, in terms of this host's contract: which version it targets,
//! what it imports and exports, and whether this host can run it.

use crate::bindings::{CONTRACT_PACKAGE, SUPPORTED_CONTRACTS};
use crate::error::Error;
use serde::Serialize;
use wasmtime::Engine;
use wasmtime::component::Component;

/// A component's interface, as `cf-host inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentInterface {
    /// The contract versions the component's agent export names (normally one).
    pub contract_versions: Vec<String>,
    /// Everything it imports.
    pub imports: Vec<String>,
    /// Everything it exports.
    pub exports: Vec<String>,
}

impl ComponentInterface {
    pub(crate) fn of(engine: &Engine, component: &Component) -> Self {
        let ty = component.component_type();
        let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_owned()).collect();
        let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_owned()).collect();
        let prefix = format!("{CONTRACT_PACKAGE}/agent@");
        let contract_versions = exports
            .iter()
            .filter_map(|e| e.strip_prefix(&prefix))
            .map(str::to_owned)
            .collect();
        Self {
            contract_versions,
            imports,
            exports,
        }
    }

    /// The supported contract version this component targets, or why it cannot run.
    pub fn check(&self) -> Result<&'static str, Error> {
        let supported = SUPPORTED_CONTRACTS.join(", ");
        if let Some(v) = SUPPORTED_CONTRACTS
            .iter()
            .find(|v| self.contract_versions.iter().any(|c| c == *v))
        {
            let missing: Vec<&str> = self
                .imports
                .iter()
                .map(String::as_str)
                .filter(|i| !host_offers(i, v))
                .collect();
            if !missing.is_empty() {
                return Err(Error::MissingImports {
                    imports: missing.join(", "),
                });
            }
            return Ok(v);
        }
        if !self.contract_versions.is_empty() {
            return Err(Error::IncompatibleContract {
                found: self
                    .contract_versions
                    .iter()
                    .map(|v| format!("{CONTRACT_PACKAGE}@{v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                supported,
            });
        }
        Err(Error::NotAnAgent {
            expected: SUPPORTED_CONTRACTS[0].to_owned(),
            exports: if self.exports.is_empty() {
                "nothing".into()
            } else {
                self.exports.join(", ")
            },
        })
    }
}

/// Whether this host links `import` for contract `version`: the contract's own
/// interfaces and WASI 0.2 (with an empty context).
fn host_offers(import: &str, version: &str) -> bool {
    // 0.1.0 called the agent's store `cache`; 0.2.0 calls it `store`.
    let interfaces: &[&str] = match version {
        "0.1.0" => &["types", "llm", "cache", "log"],
        _ => &["types", "llm", "store", "log", "output"],
    };
    let own = interfaces
        .iter()
        .any(|i| import == format!("{CONTRACT_PACKAGE}/{i}@{version}"));
    own || (import.starts_with("wasi:") && import.contains("@0.2."))
}
