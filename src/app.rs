//! The shared application handle, and [`run`], which serves already-bound listeners until a
//! shutdown future resolves.
//!
//! [`App`] holds what every request and admin call needs: the current config [`Snapshot`]
//! (swapped whole on reload), the store, the in-memory key index and the clock. Tests build an
//! `App` on a temp dir, bind `127.0.0.1:0` and a temp socket, and drive shutdown themselves.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use prometheus::IntCounter;
use tokio::net::UnixListener;
use tokio::sync::{Mutex, MutexGuard, Semaphore, mpsc};

use crate::admin::api::UsageTotals;
use crate::clock::Clock;
use crate::config::Snapshot;
use crate::control::Command;
use crate::keyring::{IndexError, Keyring, QuotaHolder};
use crate::metrics::Metrics;
use crate::net::tcp::DataListener;
use crate::policy::Limits;
use crate::proxy::upstream::Upstreams;
use crate::store::{Store, StoreError};
use crate::usage::flush::{self, FlushStats};
use crate::usage::{Meter, account_subject, key_subject};
use rustls::sign::CertifiedKey;

/// Threads reading the keys at startup. More than the cores: from a cold page cache, each waits
/// on the disk most of the time.
const LOAD_THREADS: usize = 8;

/// Why keygate could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot load keys from the store: {0}")]
    Index(#[from] IndexError),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Io(String),
}

/// Everything derived from one config generation, swapped as one: a request or a TLS
/// handshake sees either the old generation or the new one, never a mix.
pub struct Live {
    pub config: Arc<Snapshot>,
    /// A pooled client per upstream name.
    pub upstreams: Upstreams,
    /// Route indices from the most specific path to the least (see `proxy::route`).
    pub route_order: Vec<usize>,
    /// The certificate of each TLS listener, by address.
    pub certs: HashMap<SocketAddr, Arc<CertifiedKey>>,
    /// By route index: the `keygate_requests_total` counter of a 200 from the route's own
    /// upstream, looked up once instead of by its labels on every request.
    pub route_ok: Box<[OnceLock<IntCounter>]>,
}

impl Live {
    /// Builds the runtime of `config`: loads TLS certificates and builds upstream clients
    /// (reusing `previous`'s where settings match). Fails without side effects.
    pub fn build(config: Snapshot, previous: Option<&Live>) -> Result<Live, String> {
        let mut errors = Vec::new();
        let mut certs = HashMap::new();
        for listener in &config.listeners {
            if let Some(files) = &listener.tls {
                match crate::net::tls::load(files) {
                    Ok(cert) => {
                        certs.insert(listener.addr, cert);
                    }
                    Err(e) => errors.push(format!("listener {}: {e}", listener.addr)),
                }
            }
        }
        let upstreams = match crate::proxy::upstream::build_all(
            &config.upstreams,
            previous.map(|p| &p.upstreams),
        ) {
            Ok(u) => u,
            Err(e) => {
                errors.push(e.to_string());
                Upstreams::default()
            }
        };
        if !errors.is_empty() {
            return Err(errors.join("\n"));
        }
        Ok(Live {
            route_order: crate::proxy::route::order(&config.routes),
            route_ok: config.routes.iter().map(|_| OnceLock::new()).collect(),
            config: Arc::new(config),
            upstreams,
            certs,
        })
    }
}

/// Everything requests and admin calls share.
pub struct App {
    /// The config generation in force; a request loads it once and keeps it to its end.
    /// Shared with the TLS certificate resolvers.
    live: Arc<ArcSwap<Live>>,
    /// Bumped by every successful reload; reported by `/api/status`.
    generation: AtomicU64,
    /// Durable state. Blocking: use it from `spawn_blocking`.
    pub store: Arc<Store>,
    /// What the data plane verifies keys against.
    pub keyring: Keyring,
    pub clock: Clock,
    /// Serialises admin changes, so each commit and its index update happen as one step.
    admin_lock: Mutex<()>,
    /// When this process started (Unix ms), for uptime.
    started_ms: i64,
    /// The server's own uid, always allowed on the admin socket.
    pub own_uid: u32,
    /// How the last config reload went, for `GET /api/config`.
    pub last_reload: crate::reload::LastReload,
    /// Data-plane requests answered since start.
    served: AtomicU64,
    /// Usage not yet flushed to the store.
    pub meter: Meter,
    /// How flushes went.
    pub flush_stats: FlushStats,
    pub metrics: Metrics,
    /// Failed authentications per client IP (`proxy::guard`).
    pub guard: crate::proxy::guard::AuthGuard,
    /// Where reload triggers send their commands (see `crate::control`).
    control: mpsc::Sender<Command>,
    /// The controller's end of that channel, taken by [`run`].
    control_rx: std::sync::Mutex<Option<mpsc::Receiver<Command>>>,
}

impl App {
    /// Opens the store under `snapshot.server.state_dir` and loads every key into memory.
    /// Blocking (it reads the whole key table): call it before the runtime's work starts or
    /// from `spawn_blocking`.
    ///
    /// A store that cannot be read (redb may panic on a file altered outside it) is checked
    /// page by page, and refused with a message that says whether the file is corrupt.
    pub fn open(snapshot: Snapshot, clock: Clock) -> Result<Arc<App>, StartError> {
        let state_dir = snapshot.server.state_dir.clone();
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Self::open_with(snapshot, clock, None)
        }));
        match opened {
            Ok(Ok(app)) => Ok(app),
            Ok(Err(e @ StartError::Store(StoreError::Db(_) | StoreError::Codec(_))))
            | Ok(Err(e @ StartError::Index(_))) => Err(match crate::store::verify(&state_dir) {
                Err(corrupt @ StoreError::Corrupt { .. }) => corrupt.into(),
                _ => e,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(match crate::store::verify(&state_dir) {
                Err(e) => e.into(),
                Ok(()) => StartError::Io(format!(
                    "reading the store in {} failed (see the panic above), though its integrity check passes; please report this",
                    state_dir.display()
                )),
            }),
        }
    }

    /// Like [`App::open`], with the database's storage made by `backend` (tests inject faults).
    pub fn open_with(
        snapshot: Snapshot,
        clock: Clock,
        backend: Option<crate::store::BackendFactory>,
    ) -> Result<Arc<App>, StartError> {
        let store = Store::open_with(&snapshot.server.state_dir, backend)?;
        store.write(|tx| crate::usage::store::create_tables(tx.raw()))?;
        let keyring = Keyring::new();
        let meter = Meter::new();
        let now_ms = clock.now_ms();
        let mut with_quota = Vec::new();
        let keys_with_quota = std::sync::Mutex::new(Vec::new());
        store.read(|tx| {
            for account in tx.accounts()? {
                keyring.apply_account(&account);
                if let Some(q) = Limits::from_record(&account.limits).quota {
                    let holder = QuotaHolder::Account(keyring.account(&account.name));
                    with_quota.push((holder, account_subject(&account.name), q.period));
                }
            }
            let keys = tx.key_count()?;
            store.preload(keys);
            keyring.reserve(usize::try_from(keys).unwrap_or(0));
            tx.par_for_each_key_ref(LOAD_THREADS, |key| {
                keyring.load(&key)?;
                if key.revoked_at_ms.is_none()
                    && let (Some(q), Some(state)) = (
                        Limits::from_record(&key.limits).quota,
                        keyring.find_current(&key.hash),
                    )
                {
                    let found = (QuotaHolder::Key(state), key_subject(key.id), q.period);
                    keys_with_quota
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(found);
                }
                Ok::<_, StartError>(())
            })
        })?;
        with_quota.extend(
            keys_with_quota
                .into_inner()
                .unwrap_or_else(|e| e.into_inner()),
        );
        // Quota counters start from what the store holds for the current period.
        for (holder, subject, period) in with_quota {
            let counters = flush::seed(&store, &meter, &subject, period, now_ms)?;
            holder.slot().store(Some(Arc::new(counters)));
        }
        keyring.sweep_expired_grace(clock.now_ms());
        let live = Live::build(snapshot, None).map_err(StartError::Config)?;
        let (control, control_rx) = crate::control::channel();
        Ok(Arc::new(App {
            live: Arc::new(ArcSwap::from_pointee(live)),
            generation: AtomicU64::new(1),
            store: Arc::new(store),
            keyring,
            started_ms: clock.now_ms(),
            clock,
            admin_lock: Mutex::new(()),
            own_uid: rustix::process::getuid().as_raw(),
            last_reload: Default::default(),
            served: AtomicU64::new(0),
            meter,
            flush_stats: FlushStats::default(),
            metrics: Metrics::new(),
            guard: Default::default(),
            control,
            control_rx: std::sync::Mutex::new(Some(control_rx)),
        }))
    }

    /// A sender for reload commands.
    pub fn control(&self) -> mpsc::Sender<Command> {
        self.control.clone()
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Snapshot> {
        Arc::clone(&self.live.load().config)
    }

    /// The whole live generation (config, upstream clients, certificates).
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// The shared handle TLS resolvers read certificates from.
    pub fn live_handle(&self) -> Arc<ArcSwap<Live>> {
        Arc::clone(&self.live)
    }

    /// Puts a new, validated config in force and returns its generation. Fails, changing
    /// nothing, when its certificates or upstream clients cannot be built.
    pub fn swap_config(&self, snapshot: Snapshot) -> Result<u64, String> {
        let live = Live::build(snapshot, Some(&self.live.load()))?;
        self.live.store(Arc::new(live));
        Ok(self.generation.fetch_add(1, Ordering::AcqRel) + 1)
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn uptime_ms(&self) -> i64 {
        self.clock.now_ms() - self.started_ms
    }

    /// A subject's usage totals (flushed and not) and when it was last used. Blocking.
    pub fn usage_totals(&self, subject: &str) -> Result<(UsageTotals, Option<i64>), StoreError> {
        let totals = flush::totals(&self.store, &self.meter, subject)?;
        let c = totals.counts;
        Ok((
            UsageTotals {
                requests: c.requests,
                input_tokens: c.input_tokens,
                output_tokens: c.output_tokens,
            },
            totals.last_used_ms,
        ))
    }

    /// Data-plane requests answered since start.
    pub fn requests_served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Counts one answered data-plane request.
    pub fn count_request(&self) {
        self.served.fetch_add(1, Ordering::Relaxed);
    }

    /// Held for the whole of an admin change: commit, then index update.
    pub async fn admin_guard(&self) -> MutexGuard<'_, ()> {
        self.admin_lock.lock().await
    }

    /// Runs blocking store work off the async workers.
    pub async fn blocking<T, E>(
        self: &Arc<Self>,
        f: impl FnOnce(&App) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: Send + 'static + From<StoreError>,
    {
        let app = Arc::clone(self);
        match tokio::task::spawn_blocking(move || f(&app)).await {
            Ok(result) => result,
            Err(join) => Err(StoreError::Task(join.to_string()).into()),
        }
    }
}

/// The bound sockets keygate serves.
pub struct Listeners {
    /// The admin Unix socket, already bound with its permissions set.
    pub admin: UnixListener,
    /// Its path, removed at shutdown.
    pub admin_path: std::path::PathBuf,
    /// The data-plane listeners (`crate::net::tcp::bind_all`).
    pub data: Vec<DataListener>,
    /// The plain-HTTP metrics listener, when `[metrics] addr` is set.
    pub metrics: Option<tokio::net::TcpListener>,
}

/// Serves `listeners` until `shutdown` resolves, then stops accepting, lets in-flight requests
/// finish within `server.shutdown_grace`, and cleans up.
pub async fn run(
    listeners: Listeners,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (force_tx, force_rx) = tokio::sync::watch::channel(false);
    let permits = Arc::new(Semaphore::new(app.config().server.max_connections));
    let mut data =
        crate::net::workers::serve_all(listeners.data, &app, &permits, &stop_rx, &force_rx)
            .map_err(|e| StartError::Io(format!("cannot start the data-plane workers: {e}")))?;
    let admin = tokio::spawn(crate::admin::serve(
        listeners.admin,
        Arc::clone(&app),
        stop_rx.clone(),
    ));
    // The flusher stops last, after the drained requests have recorded their usage.
    let (flush_stop_tx, flush_stop_rx) = tokio::sync::watch::channel(false);
    let flusher = tokio::spawn(flush::run(Arc::clone(&app), flush_stop_rx));
    let taken = app
        .control_rx
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(commands) = taken {
        tokio::spawn(crate::control::run(
            Arc::clone(&app),
            commands,
            stop_rx.clone(),
        ));
    }
    if let Some(listener) = listeners.metrics {
        tokio::spawn(crate::metrics::serve(
            listener,
            Arc::clone(&app),
            stop_rx.clone(),
        ));
    }

    crate::control::notify_systemd(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!("serving config generation {}", app.generation())),
    ]);
    shutdown.await;
    crate::control::notify_systemd(&[sd_notify::NotifyState::Stopping]);
    let grace = app.config().server.shutdown_grace;
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "shutting down: draining connections"
    );
    let _ = stop_tx.send(true);
    if tokio::time::timeout(grace, async { while data.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace; closing them");
        data.abort_all();
        let _ = force_tx.send(true);
        while data.join_next().await.is_some() {}
    }
    if let Err(e) = admin.await {
        tracing::error!(error = %e, "admin server task failed");
    }
    // The flusher writes what the drained requests counted, then ends.
    let _ = flush_stop_tx.send(true);
    if let Err(e) = flusher.await {
        tracing::error!(error = %e, "usage flusher task failed");
    }
    let socket = listeners.admin_path;
    if let Err(e) = std::fs::remove_file(&socket)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %socket.display(), error = %e, "cannot remove the admin socket");
    }
    Ok(())
}
