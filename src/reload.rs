//! Reloading the config file: build a whole new [`Snapshot`], swap it in only when it is valid,
//! and remember how the last attempt went.
//!
//! Settings bound to sockets or files opened at startup — listener addresses, `state_dir`,
//! `admin.socket`, `metrics.addr` — cannot change in a running process. A reload keeps their
//! running values and reports "restart needed" for them, rather than half-applying; everything
//! else, TLS certificate paths of existing listeners included, takes effect at once.

use std::sync::Mutex;

use serde::Serialize;

use crate::app::App;
use crate::clock::rfc3339;
use crate::config::Snapshot;

/// What asked for the reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Api,
    Signal,
    Watcher,
}

/// The result of the last reload attempt, as `GET /api/config` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub at: String,
    pub trigger: Trigger,
    pub ok: bool,
    /// The generation in force after the attempt.
    pub generation: u64,
    /// `file:line:col: message` for each problem of a rejected file.
    pub errors: Vec<String>,
    /// Changed settings that wait for a restart.
    pub restart_needed: Vec<String>,
    pub warnings: Vec<String>,
}

/// Where the last report is kept.
#[derive(Debug, Default)]
pub struct LastReload(Mutex<Option<Report>>);

impl LastReload {
    pub fn get(&self) -> Option<Report> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, report: Report) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(report);
    }
}

/// Re-reads the running config's file and swaps it in if valid. Blocking (reads files).
pub fn reload(app: &App, trigger: Trigger) -> Report {
    let running = app.config();
    let at = rfc3339(app.clock.now_ms());
    let report = match &running.source {
        None => Report {
            at,
            trigger,
            ok: true,
            generation: app.generation(),
            errors: Vec::new(),
            restart_needed: Vec::new(),
            warnings: vec!["running on built-in defaults; there is no file to reload".into()],
        },
        Some(path) => match Snapshot::load_file(path) {
            Ok(mut next) => {
                let restart_needed = pin_restart_only(&mut next, &running);
                let warnings = next.warnings.clone();
                match app.swap_config(next) {
                    Ok(generation) => {
                        tracing::info!(generation, ?trigger, ?restart_needed, "config reloaded");
                        Report {
                            at,
                            trigger,
                            ok: true,
                            generation,
                            errors: Vec::new(),
                            restart_needed,
                            warnings,
                        }
                    }
                    Err(error) => {
                        rejected(app, at, trigger, error.lines().map(str::to_owned).collect())
                    }
                }
            }
            Err(errors) => rejected(
                app,
                at,
                trigger,
                errors.0.iter().map(ToString::to_string).collect(),
            ),
        },
    };
    app.last_reload.set(report.clone());
    report
}

/// The report of a reload that could not run at all.
pub fn failed(app: &App, trigger: Trigger, error: String) -> Report {
    let report = rejected(app, rfc3339(app.clock.now_ms()), trigger, vec![error]);
    app.last_reload.set(report.clone());
    report
}

/// The report of a reload whose file was refused; the running config stays.
fn rejected(app: &App, at: String, trigger: Trigger, errors: Vec<String>) -> Report {
    tracing::error!(?trigger, errors = ?errors, "config reload rejected; the previous config keeps serving");
    Report {
        at,
        trigger,
        ok: false,
        generation: app.generation(),
        errors,
        restart_needed: Vec::new(),
        warnings: Vec::new(),
    }
}

/// Keeps the running values of restart-only settings in `next` and names those that differ.
pub fn pin_restart_only(next: &mut Snapshot, running: &Snapshot) -> Vec<String> {
    let mut notes = Vec::new();
    if next.server.state_dir != running.server.state_dir {
        notes.push(format!(
            "server.state_dir ({} → {})",
            running.server.state_dir.display(),
            next.server.state_dir.display()
        ));
        next.server.state_dir = running.server.state_dir.clone();
    }
    if next.admin.socket != running.admin.socket {
        notes.push(format!(
            "admin.socket ({} → {})",
            running.admin.socket.display(),
            next.admin.socket.display()
        ));
        next.admin.socket = running.admin.socket.clone();
    }
    if next.metrics.addr != running.metrics.addr {
        notes.push("metrics.addr".to_owned());
        next.metrics.addr = running.metrics.addr;
    }
    let addrs = |s: &Snapshot| {
        s.listeners
            .iter()
            .map(|l| (l.addr, l.tls.is_some()))
            .collect::<Vec<_>>()
    };
    if addrs(next) != addrs(running) {
        notes.push("listeners (addresses or TLS on/off)".to_owned());
        let mut kept = running.listeners.clone();
        for listener in &mut kept {
            if let Some(new) = next
                .listeners
                .iter()
                .find(|n| n.addr == listener.addr && n.tls.is_some() == listener.tls.is_some())
            {
                listener.tls = new.tls.clone();
            }
        }
        next.listeners = kept;
    }
    notes
}
