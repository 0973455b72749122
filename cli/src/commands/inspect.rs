//! `cf-host inspect WASM` (what a component is) and `cf-host check WASM` (whether it
//! fits this host).

use crate::args::InspectArgs;
use crate::error::{CliError, Exit};
use cf_front::render;
use cf_host::{Host, Source};

/// The component `inspect` and `check` look at, and a host to look at it with.
async fn component_and_host(args: &InspectArgs) -> Result<(Vec<u8>, Host), CliError> {
    let (host, _) = super::host_and_settings(&args.host).await?;
    let wasm = host.read_component(&args.wasm).await?;
    Ok((wasm, host))
}

pub(crate) async fn inspect(args: InspectArgs) -> Result<Exit, CliError> {
    let (wasm, host) = component_and_host(&args).await?;
    let interface = host.inspect(wasm.clone()).await?;
    // Describe it only when this host can run it.
    let described = match interface.check() {
        Ok(_) => host
            .load(Source::Bytes(wasm))
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let _ = render::inspect(
        &mut std::io::stdout().lock(),
        &args.wasm,
        &interface,
        described.as_ref().map(|a| a.info()),
        args.json,
    );
    Ok(Exit::Ok)
}

pub(crate) async fn check(args: InspectArgs) -> Result<Exit, CliError> {
    let (wasm, host) = component_and_host(&args).await?;
    let verdict = match host.inspect(wasm.clone()).await {
        Err(e) => Err((None, e.to_string())),
        Ok(interface) => match interface.check() {
            Err(e) => Err((Some(interface), e.to_string())),
            // Fits the contract: loading also calls describe(), the last check.
            Ok(_) => match host.load(Source::Bytes(wasm.clone())).await {
                Ok(agent) => Ok((interface, agent.info().clone())),
                Err(e) => Err((Some(interface), e.to_string())),
            },
        },
    };
    // What the plugin declares, from its sidecar manifest.
    let sidecar = args.wasm.with_extension("toml");
    let declared = match std::fs::read_to_string(&sidecar) {
        Ok(text) => Some(
            cf_host::permissions::Manifest::parse(&text)
                .map_err(|e| format!("{}: {e}", sidecar.display())),
        ),
        Err(_) => None,
    };
    let verdict = match (verdict, &declared) {
        (Ok(_), Some(Err(e))) => Err((None, format!("invalid plugin manifest {e}"))),
        (v, _) => v,
    };
    let declared = declared.and_then(Result::ok);
    let _ = render::check(
        &mut std::io::stdout().lock(),
        &args.wasm,
        &cf_host::component_sha256(&wasm),
        &verdict,
        declared.as_ref(),
        args.json,
    );
    Ok(if verdict.is_ok() {
        Exit::Ok
    } else {
        Exit::TaskFailed
    })
}
