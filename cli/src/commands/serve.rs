//! `cf-host serve`: the agents over HTTP ([`cf_serve`]), until SIGTERM or Ctrl-C, then
//! a graceful shutdown.

use super::fleet_host;
use crate::args::ServeArgs;
use crate::error::{CliError, Exit};
use cf_front::queue::{WorkerStats, run_worker};
use cf_front::settings;
use cf_host::RunOptions;
use cf_serve::{ServeConfig, Server};
use std::net::SocketAddr;
use std::time::Duration;

pub(crate) async fn serve(args: ServeArgs) -> Result<Exit, CliError> {
    let mut overrides = args.host.overrides();
    overrides.listen = args.listen.clone();
    let settings = settings::from_process(&overrides)?;
    let addr: SocketAddr = settings.serve_listen.parse().map_err(|e| {
        CliError::usage(format!(
            "--listen {}: not an address such as 127.0.0.1:8787 ({e})",
            settings.serve_listen
        ))
    })?;
    if settings.serve_tokens.is_empty() && !addr.ip().is_loopback() {
        return Err(CliError::usage(format!(
            "--listen {addr}: serving beyond this machine needs tokens: add [serve.tokens] to the config file (tenant = \"<sha256 of its token>\")"
        )));
    }
    let (host, fleet) = fleet_host(&settings).await?;
    let worker = if args.worker {
        Some((
            settings.work_queue(None).await?,
            std::sync::Arc::new(WorkerStats::default()),
        ))
    } else {
        None
    };
    let config = ServeConfig {
        tokens: settings.serve_tokens.clone(),
        tenants: settings.serve_tenants.clone(),
        max_body_bytes: usize::try_from(settings.serve_max_body_bytes).unwrap_or(usize::MAX),
        grace: Duration::from_secs_f64(settings.serve_grace_secs),
        fleet,
        worker: worker.clone(),
        base_options: RunOptions {
            model: settings.model.clone(),
            budget: settings.budget(),
            ..RunOptions::default()
        },
    };
    let server = Server::new(host.clone(), config).map_err(CliError::usage)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::Failed(format!("listening on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| CliError::Failed(format!("listening on {addr}: {e}")))?;
    eprintln!(
        "cf-host: serving on http://{bound} ({}; the API is described at /openapi.json)",
        if server.authenticates() {
            "bearer tokens from [serve.tokens]"
        } else {
            "no authentication: loopback only"
        }
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.send_replace(true);
    });
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let worker = worker.map(|(queue, stats)| {
        let options = super::worker::worker_options(
            &settings,
            settings.max_concurrent,
            Duration::from_secs_f64(settings.serve_grace_secs),
        );
        eprintln!(
            "cf-host: worker {} takes items of queue {:?}",
            options.consumer, settings.redis_queue
        );
        let task = tokio::spawn(run_worker(
            host.clone(),
            queue,
            options,
            stats.clone(),
            until_stopped(stopped.clone()),
        ));
        (task, stats)
    });
    server
        .run(listener, until_stopped(stopped))
        .await
        .map_err(|e| CliError::Failed(format!("serving: {e}")))?;
    if let Some((task, stats)) = worker {
        let _ = task.await;
        eprintln!(
            "cf-host: worker stopped: {}",
            super::worker::summary(&stats)
        );
    }
    eprintln!("cf-host: stopped");
    Ok(Exit::Ok)
}

/// SIGTERM or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
