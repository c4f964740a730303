//! The control channel: every reload trigger — the config file watcher, `SIGHUP`, and
//! `POST /api/config/reload` — sends a [`Command`] here, and one controller task carries them
//! out one at a time, telling systemd (`RELOADING=1` … `READY=1`) around each reload.
//!
//! The watcher watches the config file's **directory**, not the file: editors and deploy tools
//! replace the file by renaming a new one over it, and a watch on the old file would go silent.
//! Each replace fires several events, so they are debounced into one reload.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, oneshot, watch};

use crate::app::App;
use crate::reload::{self, Report, Trigger};

/// Events closer together than this are one change (an atomic replace fires two or three).
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Commands the controller carries out.
pub enum Command {
    Reload {
        trigger: Trigger,
        /// Where the report goes, for a caller that waits for it.
        reply: Option<oneshot::Sender<Report>>,
    },
}

/// Makes the control channel. The sender is cloned by every trigger.
pub fn channel() -> (mpsc::Sender<Command>, mpsc::Receiver<Command>) {
    // A short queue: triggers that arrive during a reload wait for it; more would be redundant.
    mpsc::channel(8)
}

/// Tells systemd our state, if it is watching (a no-op without `$NOTIFY_SOCKET`).
pub fn notify_systemd(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// The controller: runs until `stop`. Starts the file watcher and the SIGHUP listener.
pub async fn run(
    app: Arc<App>,
    mut commands: mpsc::Receiver<Command>,
    mut stop: watch::Receiver<bool>,
) {
    let _watcher = app
        .config()
        .source
        .clone()
        .and_then(|path| watch_file(&path, app.control()));
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; reload with the API instead");
            None
        }
    };
    loop {
        let command = tokio::select! {
            _ = crate::net::stopped(&mut stop) => break,
            Some(_) = async { match hangups.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                Command::Reload { trigger: Trigger::Signal, reply: None }
            }
            command = commands.recv() => match command {
                Some(c) => c,
                None => break,
            },
        };
        match command {
            Command::Reload { trigger, reply } => {
                let report = reload_now(&app, trigger).await;
                if let Some(reply) = reply {
                    let _ = reply.send(report);
                }
            }
        }
    }
}

async fn reload_now(app: &Arc<App>, trigger: Trigger) -> Report {
    notify_systemd(&[
        sd_notify::NotifyState::Reloading,
        sd_notify::NotifyState::monotonic_usec_now()
            .unwrap_or(sd_notify::NotifyState::Status("reloading")),
    ]);
    let worker = Arc::clone(app);
    let report = tokio::task::spawn_blocking(move || reload::reload(&worker, trigger))
        .await
        .unwrap_or_else(|e| reload::failed(app, trigger, format!("reload task failed: {e}")));
    app.metrics
        .reloads
        .with_label_values(&[if report.ok { "ok" } else { "error" }])
        .inc();
    let status = if report.ok {
        format!("serving config generation {}", report.generation)
    } else {
        format!("reload rejected; serving generation {}", report.generation)
    };
    notify_systemd(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]);
    report
}

/// Watches the directory of `path` and sends a debounced reload for changes to the file.
/// Returns the watcher, which must be kept alive; `None` (logged) if watching is impossible.
fn watch_file(path: &Path, control: mpsc::Sender<Command>) -> Option<RecommendedWatcher> {
    let file = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let dir = file.parent().map(Path::to_owned)?;
    let name = file.file_name()?.to_owned();
    let (events_tx, mut events_rx) = mpsc::unbounded_channel::<()>();
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        if event.paths.iter().any(|p| p.file_name() == Some(&name)) {
            let _ = events_tx.send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch the config file; reload with SIGHUP or the API");
            return None;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::error!(dir = %dir.display(), error = %e, "cannot watch the config directory");
        return None;
    }
    tokio::spawn(async move {
        while events_rx.recv().await.is_some() {
            // Let the burst of one replace settle, then reload once.
            loop {
                match tokio::time::timeout(DEBOUNCE, events_rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let command = Command::Reload {
                trigger: Trigger::Watcher,
                reply: None,
            };
            if control.send(command).await.is_err() {
                return;
            }
        }
    });
    tracing::info!(dir = %dir.display(), "watching the config directory");
    Some(watcher)
}
