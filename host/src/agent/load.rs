//! Loading an agent, in named steps within the host's load deadline: find and read
//! the component ([`Found::read`]), check its pins, [`compile`] it (or authenticate
//! its compiled copy), [`prepare`] its instantiation, ask it to describe itself, and
//! settle its name and permissions.
//!
//! Reading is bounded: only regular files of at most
//! [`Limits::max_component_bytes`](crate::Limits::max_component_bytes) are read (a
//! path to `/dev/zero` or a FIFO is refused, not read forever), and every step is
//! bounded by [`Limits::load_deadline`](crate::Limits::load_deadline).

use super::plugin::PluginPre;
use super::{Agent, AgentInfo, AgentInner, Source};
use crate::capabilities::Caller;
use crate::contract::ComponentInterface;
use crate::digest::sha256_hex;
use crate::error::{Error, validate_agent_name};
use crate::limits::RunOptions;
use crate::permissions::{Grant, Manifest, Permissions};
use crate::runtime::Runtime;
use crate::sandbox::traps;
use cf_llm::Ledger;
use std::borrow::Cow;
use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use wasmtime::component::Component;

/// Loads an agent: every step within the host's load deadline.
pub(crate) async fn load(
    runtime: &Arc<Runtime>,
    source: Source,
    pinned: Option<&str>,
    manifest: Option<Manifest>,
) -> Result<Agent, Error> {
    let steps = async {
        let found = Found::read(runtime, source, manifest).await?;
        found.check_pins(runtime, pinned)?;
        let Found {
            wasm,
            sha256,
            declared,
            ..
        } = found;
        let (component, interface) = compile(runtime, wasm, sha256.clone()).await?;
        let contract = interface.check()?;
        let pre = prepare(runtime, &component, contract)?;
        let mut agent = Agent::unnamed(runtime.clone(), pre, contract, sha256);
        let described = agent.describe_guest().await?;
        agent.settle(described, declared)?;
        Ok(agent)
    };
    within_deadline(runtime, steps).await
}

/// Describes a component without running it (`Host::inspect`).
pub(crate) async fn inspect(
    runtime: &Arc<Runtime>,
    wasm: Vec<u8>,
) -> Result<ComponentInterface, Error> {
    check_size(runtime, &wasm)?;
    let sha = sha256_hex(&wasm);
    let (_component, interface) = within_deadline(runtime, compile(runtime, wasm, sha)).await?;
    Ok(interface)
}

/// Reads a component file, bounded (`Host::read_component`).
pub(crate) async fn read_component(runtime: &Runtime, path: PathBuf) -> Result<Vec<u8>, Error> {
    read_regular(path, runtime.limits().max_component_bytes).await
}

/// Links the component against the host's capabilities and checks its exports.
fn prepare(runtime: &Runtime, component: &Component, contract: &str) -> Result<PluginPre, Error> {
    let instance_pre =
        runtime
            .linker()
            .instantiate_pre(component)
            .map_err(|e| Error::MissingImports {
                imports: format!("{e:#}"),
            })?;
    PluginPre::new(instance_pre, contract).map_err(|e| Error::NotAnAgent {
        expected: contract.to_owned(),
        exports: format!("{e:#}"),
    })
}

/// Refuses a component whose digest is not `expected`, when a digest is expected.
fn check_digest(expected: Option<&str>, actual: &str) -> Result<(), Error> {
    match expected {
        Some(e) if !e.eq_ignore_ascii_case(actual) => Err(Error::DigestMismatch {
            expected: e.to_ascii_lowercase(),
            actual: actual.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// The digest the operator's grant for `plugin` is pinned to, if any.
fn grant_pin<'a>(runtime: &'a Runtime, plugin: &str) -> Option<&'a str> {
    runtime.grant(plugin).and_then(|g| g.sha256.as_deref())
}

/// The deadline of `describe()`, which may not call anything.
const DESCRIBE_DEADLINE: Duration = Duration::from_secs(5);

/// A component found and read, before it is compiled.
struct Found {
    wasm: Cow<'static, [u8]>,
    sha256: String,
    /// What a third-party plugin declares; `None` for a shipped agent (the operator's
    /// own).
    declared: Option<Manifest>,
    /// The name it should report, known before compiling it (a shipped agent's name,
    /// a manifest's `name`, a file's stem).
    expected_name: Option<String>,
}

impl Found {
    /// Reads `source`: a shipped agent, a bounded regular file with its sidecar
    /// manifest, or bytes (which declare nothing unless `manifest` is given).
    async fn read(
        runtime: &Runtime,
        source: Source,
        manifest: Option<Manifest>,
    ) -> Result<Self, Error> {
        match source {
            Source::Builtin(name) => {
                validate_agent_name(&name)?;
                let (wasm, sha256) =
                    crate::builtin::find(&name).ok_or_else(|| Error::UnknownAgent {
                        name: name.clone(),
                        known: crate::builtin::listed(),
                    })?;
                Ok(Self {
                    wasm: Cow::Borrowed(wasm),
                    sha256: sha256.to_owned(),
                    declared: None,
                    expected_name: Some(name),
                })
            }
            Source::Path(path) => {
                let declared = match manifest {
                    Some(m) => m,
                    None => match read_sidecar(&path).await? {
                        Some((sidecar, text)) => {
                            Manifest::parse(&text).map_err(|reason| Error::InvalidManifest {
                                path: sidecar,
                                reason,
                            })?
                        }
                        None => Manifest::default(),
                    },
                };
                let stem = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned);
                let bytes = read_regular(path, runtime.limits().max_component_bytes).await?;
                Ok(Self::plugin(Cow::Owned(bytes), declared, stem))
            }
            Source::Bytes(bytes) => {
                check_size(runtime, &bytes)?;
                Ok(Self::plugin(
                    Cow::Owned(bytes),
                    manifest.unwrap_or_default(),
                    None,
                ))
            }
        }
    }

    fn plugin(wasm: Cow<'static, [u8]>, declared: Manifest, stem: Option<String>) -> Self {
        let expected_name = declared.name.clone().or(stem);
        Self {
            sha256: sha256_hex(&wasm),
            wasm,
            declared: Some(declared),
            expected_name,
        }
    }

    /// Refuses the component before anything is compiled if its digest is not the
    /// caller's pin, or not the pin of a grant for the name it is expected to have.
    fn check_pins(&self, runtime: &Runtime, pinned: Option<&str>) -> Result<(), Error> {
        check_digest(pinned, &self.sha256)?;
        let grant = self
            .expected_name
            .as_deref()
            .and_then(|n| grant_pin(runtime, n));
        check_digest(grant, &self.sha256)
    }
}

impl Agent {
    /// The agent before it has described itself: no name, no permissions.
    fn unnamed(runtime: Arc<Runtime>, pre: PluginPre, contract: &str, sha256: String) -> Self {
        let caller = Caller::new(String::new(), None, Arc::new(Permissions::unrestricted("")));
        Self {
            inner: Arc::new(AgentInner {
                runtime,
                pre,
                info: AgentInfo {
                    name: String::new(),
                    version: String::new(),
                    description: String::new(),
                    default_model: String::new(),
                    tags: Vec::new(),
                    contract: contract.to_owned(),
                    sha256,
                },
                caller: Arc::new(caller),
                store: Default::default(),
            }),
        }
    }

    /// Takes the name the agent reported, checks it against the manifest, the
    /// built-in names and any pinned grant, and settles what it may do.
    fn settle(&mut self, described: AgentInfo, declared: Option<Manifest>) -> Result<(), Error> {
        validate_agent_name(&described.name).map_err(|_| {
            Error::InvalidDescription(format!(
                "the name {:?} does not match ^[a-zA-Z0-9_-]+$",
                described.name
            ))
        })?;
        let inner = Arc::get_mut(&mut self.inner)
            .ok_or_else(|| Error::Setup("agent handle shared during load".into()))?;
        inner.info = AgentInfo {
            contract: inner.info.contract.clone(),
            sha256: inner.info.sha256.clone(),
            ..described
        };
        let (name, sha256) = (inner.info.name.as_str(), inner.info.sha256.as_str());
        let runtime = &inner.runtime;
        let mut component = None;
        if let Some(manifest) = &declared {
            if let Some(declared_name) = manifest.name.as_deref()
                && declared_name != name
            {
                return Err(Error::InvalidDescription(format!(
                    "the manifest names the plugin {declared_name:?} but it describes itself as {name:?}"
                )));
            }
            // A plugin under a shipped agent's name would pick up the operator's grant
            // for it; only that agent's own component (a copy of it) may use the name.
            if crate::builtin::find(name).is_some_and(|(_, digest)| digest != sha256) {
                return Err(Error::ReservedName {
                    name: name.to_owned(),
                });
            }
            // Its store and cached answers are keyed by its name and its digest: two
            // plugins reporting one name never reach each other's data.
            component = Some(Arc::from(sha256));
        }
        // A grant pinned to a digest refuses any other component under that name.
        check_digest(grant_pin(runtime, name), sha256)?;
        // An operator who trusts local plugins grants each what it declares.
        let trusted = match (&declared, runtime.grant(name)) {
            (Some(m), None) if runtime.trust_declared() => Some(Grant::from_manifest(m)),
            _ => None,
        };
        let grant = runtime.grant(name).or(trusted.as_ref());
        let permissions = match (&declared, grant) {
            (None, None) => Permissions::unrestricted(name),
            (None, Some(g)) => Permissions::granted(name, g),
            (Some(manifest), g) => Permissions::intersect(name, manifest, g, sha256),
        };
        inner.caller = Arc::new(Caller::new(
            name.to_owned(),
            component,
            Arc::new(permissions),
        ));
        Ok(())
    }

    /// Calls the guest's `describe()` in a store of its own, with model calls denied.
    async fn describe_guest(&self) -> Result<AgentInfo, Error> {
        let deadline = Instant::now() + DESCRIBE_DEADLINE;
        let ledger = Ledger::unlimited();
        let Ok(Ok(_slot)) =
            tokio::time::timeout_at(deadline, self.inner.runtime.instance_slots().acquire()).await
        else {
            return Err(Error::InvalidDescription(
                "no instance slot became free in time to call describe()".into(),
            ));
        };
        let mut store = self.new_store(&ledger, RunOptions::default(), deadline, 0);
        let described =
            tokio::time::timeout_at(deadline, self.inner.pre.describe(&mut store)).await;
        store.data().flush_stdio();
        let info = match described {
            Err(_) => {
                return Err(Error::InvalidDescription(format!(
                    "describe() did not return within {} s",
                    DESCRIBE_DEADLINE.as_secs()
                )));
            }
            Ok(Err(trap)) => {
                return Err(Error::InvalidDescription(
                    traps::classify(&trap, store.data(), DESCRIBE_DEADLINE).to_string(),
                ));
            }
            Ok(Ok(info)) => info,
        };
        Ok(AgentInfo {
            name: info.name,
            version: info.version,
            description: info.description,
            default_model: info.default_model,
            tags: info.tags,
            contract: String::new(),
            sha256: String::new(),
        })
    }
}

/// Reads the regular file `path` whole, refusing anything else (a device, a FIFO, a
/// directory) and anything longer than `max` bytes. Opened non-blocking so that a FIFO
/// is refused at once instead of waiting for a writer.
async fn read_regular(path: PathBuf, max: u64) -> Result<Vec<u8>, Error> {
    tokio::task::spawn_blocking(move || {
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        if meta.len() > max {
            return Err(Error::ComponentTooLarge {
                bytes: meta.len(),
                max,
            });
        }
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        // The bound holds even if the file grows after the stat.
        file.take(max.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > max {
            return Err(Error::ComponentTooLarge {
                bytes: bytes.len() as u64,
                max,
            });
        }
        Ok(bytes)
    })
    .await
    .map_err(|e| Error::Setup(format!("the reading thread failed: {e}")))?
}

/// Refuses a component larger than the host compiles, before it is hashed or
/// compiled (a file read by [`read_regular`] is bounded already).
fn check_size(runtime: &Runtime, wasm: &[u8]) -> Result<(), Error> {
    let max = runtime.limits().max_component_bytes;
    if wasm.len() as u64 > max {
        return Err(Error::ComponentTooLarge {
            bytes: wasm.len() as u64,
            max,
        });
    }
    Ok(())
}

/// Runs `steps` (reading, compiling, describing) within the host's load deadline.
///
/// wasmtime cannot cancel a compilation: past the deadline the caller gets
/// [`Error::LoadDeadline`] at once, while the compiler thread finishes on its own (a
/// process that exits, like the CLI, ends it).
async fn within_deadline<T>(
    runtime: &Runtime,
    steps: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let limit = runtime.limits().load_deadline;
    tokio::time::timeout(limit, steps)
        .await
        .unwrap_or(Err(Error::LoadDeadline { limit }))
}

/// Compiles `wasm` (or authenticates and reuses its compiled copy) on the blocking
/// pool. The caller bounds it with [`within_deadline`] and has checked its size.
async fn compile(
    runtime: &Arc<Runtime>,
    wasm: impl AsRef<[u8]> + Send + 'static,
    sha256: String,
) -> Result<(Component, ComponentInterface), Error> {
    let h = runtime.clone();
    tokio::task::spawn_blocking(move || {
        let wasm = wasm.as_ref();
        if !wasm.starts_with(b"\0asm") {
            return Err(Error::InvalidComponent {
                detail: "the file does not start with the WebAssembly magic bytes".into(),
            });
        }
        let component = h.compiled().load(h.engine(), wasm, &sha256)?;
        let interface = ComponentInterface::of(h.engine(), &component);
        Ok((component, interface))
    })
    .await
    .map_err(|e| Error::Setup(format!("the compiler thread failed: {e}")))?
}

/// The sidecar manifest of a component at `path` (`agent.wasm` → `agent.toml`), if
/// there is one; at most 64 KiB.
async fn read_sidecar(path: &Path) -> Result<Option<(PathBuf, String)>, Error> {
    let sidecar = path.with_extension("toml");
    match read_regular(sidecar.clone(), 64 * 1024).await {
        Ok(bytes) => {
            let text = String::from_utf8(bytes).map_err(|_| Error::InvalidManifest {
                path: sidecar.clone(),
                reason: "it is not UTF-8".into(),
            })?;
            Ok(Some((sidecar, text)))
        }
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(Error::ComponentTooLarge { bytes, max }) => Err(Error::InvalidManifest {
            path: sidecar,
            reason: format!("it has {bytes} bytes; the limit is {max}"),
        }),
        Err(e) => Err(e),
    }
}
