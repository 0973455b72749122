//! Reading and compiling a component, bounded: only regular files of at most
//! [`Limits::max_component_bytes`](crate::Limits::max_component_bytes) are read (a
//! path to `/dev/zero` or a FIFO is refused, not read forever), and compiling is
//! bounded by [`Limits::load_deadline`](crate::Limits::load_deadline).

use crate::contract::ComponentInterface;
use crate::error::Error;
use crate::host::HostInner;
use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::component::Component;

/// Reads the regular file `path` whole, refusing anything else (a device, a FIFO, a
/// directory) and anything longer than `max` bytes. Opened non-blocking so that a FIFO
/// is refused at once instead of waiting for a writer.
pub(crate) async fn read_regular(path: PathBuf, max: u64) -> Result<Vec<u8>, Error> {
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
pub(crate) fn check_size(host: &HostInner, wasm: &[u8]) -> Result<(), Error> {
    let max = host.limits().max_component_bytes;
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
pub(crate) async fn within_deadline<T>(
    host: &HostInner,
    steps: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let limit = host.limits().load_deadline;
    tokio::time::timeout(limit, steps)
        .await
        .unwrap_or(Err(Error::LoadDeadline { limit }))
}

/// Compiles `wasm` (or authenticates and reuses its compiled copy) on the blocking
/// pool. The caller bounds it with [`within_deadline`] and has checked its size.
pub(crate) async fn compile(
    host: &Arc<HostInner>,
    wasm: impl AsRef<[u8]> + Send + 'static,
    sha256: String,
) -> Result<(Component, ComponentInterface), Error> {
    let h = host.clone();
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
pub(crate) async fn read_sidecar(path: &Path) -> Result<Option<(PathBuf, String)>, Error> {
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
