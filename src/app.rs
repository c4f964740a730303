//! The shared application handle, and [`run`], which serves already-bound listeners until a
//! shutdown future resolves.
//!
//! [`App`] holds what every request and admin call needs: the current config [`Snapshot`]
//! (swapped whole on reload), the store, the in-memory key index and the clock. Tests build an
//! `App` on a temp dir, bind `127.0.0.1:0` and a temp socket, and drive shutdown themselves.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use tokio::net::UnixListener;
use tokio::sync::{Mutex, MutexGuard};

use crate::admin::api::UsageTotals;
use crate::clock::Clock;
use crate::config::Snapshot;
use crate::keyring::{IndexError, Keyring};
use crate::store::{Store, StoreError};

/// Why keygate could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot load keys from the store: {0}")]
    Index(#[from] IndexError),
    #[error("{0}")]
    Io(String),
}

/// Everything requests and admin calls share.
pub struct App {
    /// The config in force; a request loads it once and keeps that `Arc` to its end.
    config: ArcSwap<Snapshot>,
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
}

impl App {
    /// Opens the store under `snapshot.server.state_dir` and loads every key into memory.
    /// Blocking (it reads the whole key table): call it before the runtime's work starts or
    /// from `spawn_blocking`.
    pub fn open(snapshot: Snapshot, clock: Clock) -> Result<Arc<App>, StartError> {
        let store = Store::open(&snapshot.server.state_dir)?;
        let keyring = Keyring::new();
        store.read(|tx| {
            for account in tx.accounts()? {
                keyring.apply_account(&account);
            }
            tx.for_each_key(|key| {
                if key.revoked_at_ms.is_none() {
                    keyring.apply(None, &key)?;
                }
                Ok::<_, StartError>(())
            })
        })?;
        keyring.sweep_expired_grace(clock.now_ms());
        Ok(Arc::new(App {
            config: ArcSwap::from_pointee(snapshot),
            generation: AtomicU64::new(1),
            store: Arc::new(store),
            keyring,
            started_ms: clock.now_ms(),
            clock,
            admin_lock: Mutex::new(()),
            own_uid: rustix::process::getuid().as_raw(),
            last_reload: Default::default(),
        }))
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Snapshot> {
        self.config.load_full()
    }

    /// Puts a new, validated config in force and returns its generation.
    pub fn swap_config(&self, snapshot: Snapshot) -> u64 {
        self.config.store(Arc::new(snapshot));
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn uptime_ms(&self) -> i64 {
        self.clock.now_ms() - self.started_ms
    }

    /// A key's usage totals and when it was last used.
    pub fn key_usage(&self, _id: &str) -> (UsageTotals, Option<i64>) {
        (UsageTotals::default(), None)
    }

    /// An account's usage totals.
    pub fn account_usage(&self, _name: &str) -> UsageTotals {
        UsageTotals::default()
    }

    /// Proxied requests answered since start.
    pub fn requests_served(&self) -> u64 {
        0
    }

    /// Held for the whole of an admin change: commit, then index update.
    pub async fn admin_guard(&self) -> MutexGuard<'_, ()> {
        self.admin_lock.lock().await
    }

    /// Runs blocking store work off the async workers.
    pub async fn blocking<T, E>(
        self: &Arc<Self>,
        f: impl FnOnce(&Store) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: Send + 'static + From<StoreError>,
    {
        let app = Arc::clone(self);
        match tokio::task::spawn_blocking(move || f(&app.store)).await {
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
}

/// Serves `listeners` until `shutdown` resolves, then stops accepting and cleans up.
pub async fn run(
    listeners: Listeners,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let admin = tokio::spawn(crate::admin::serve(
        listeners.admin,
        Arc::clone(&app),
        stop_rx.clone(),
    ));
    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    if let Err(e) = admin.await {
        tracing::error!(error = %e, "admin server task failed");
    }
    let socket = listeners.admin_path;
    if let Err(e) = std::fs::remove_file(&socket)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %socket.display(), error = %e, "cannot remove the admin socket");
    }
    Ok(())
}
