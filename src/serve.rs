//! `keygate serve`: resolve the config, set up logging, open the store, bind the sockets and run
//! until SIGTERM or SIGINT.

use std::path::Path;

use anyhow::Context;

use crate::app::{self, App, Listeners};
use crate::clock::Clock;
use crate::config::Snapshot;
use crate::net;

/// Runs the gateway with the config at `config` (or `./keygate.toml`, or built-in defaults).
pub fn serve(config: Option<&Path>) -> anyhow::Result<()> {
    let snapshot = Snapshot::resolve(config).map_err(|errors| anyhow::anyhow!("{errors}"))?;
    crate::telemetry::init(&snapshot.log);
    for warning in &snapshot.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("keygate")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let socket = snapshot.admin.socket.clone();
        let source = snapshot.source.clone();
        let app = tokio::task::spawn_blocking(move || App::open(snapshot, Clock::system()))
            .await
            .context("startup task failed")??;
        let data = net::tcp::bind_all(&app, net::workers::count()).await?;
        let admin = net::unix::bind(&socket)
            .with_context(|| format!("cannot bind the admin socket {}", socket.display()))?;
        tracing::info!(
            socket = %socket.display(),
            config = %source.as_deref().map_or("built-in defaults".into(), |p| p.display().to_string()),
            "keygate serving"
        );
        let metrics = match app.config().metrics.addr {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen for metrics on {addr}"))?,
            ),
            None => None,
        };
        let listeners = Listeners {
            admin,
            admin_path: socket,
            data,
            metrics,
        };
        app::run(listeners, app, shutdown_signal()).await?;
        Ok(())
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop keygate with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
