//! Data-plane workers: one thread per core, each with its own single-threaded tokio runtime, its
//! own accepting socket on every listener (`SO_REUSEPORT`) and its own upstream connection
//! pools, so that a request is read, forwarded, answered and metered on one thread.
//!
//! The kernel spreads new connections over the workers' sockets. Nothing moves between threads
//! on the hot path: on this 2-core machine a work-stealing runtime spent about 40% more CPU per
//! proxied request, in cross-thread wake-ups, than the same work on one thread. Shared state
//! (keys, limits, usage, the live config) is the same `App` for every worker.

use std::cell::Cell;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{Semaphore, watch};

use super::tcp::{self, DataListener};
use crate::app::App;

/// Workers at most, whatever the machine: more would only multiply idle upstream pools.
const MAX_WORKERS: usize = 64;

thread_local! {
    /// The worker this thread is (0 on any thread that is not a data-plane worker).
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// How many data-plane workers this process runs: one per CPU it may use (the affinity mask and
/// the cgroup CPU quota count, so `CPUAffinity=` or `CPUQuota=` in the unit file narrows it).
pub fn count() -> usize {
    static COUNT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *COUNT.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, MAX_WORKERS)
    })
}

/// The worker running the current thread: picks that worker's upstream pools.
pub fn current() -> usize {
    INDEX.with(Cell::get)
}

/// Starts worker `index` on its own thread, serving `listeners` until `stop` turns true and its
/// connections are drained, or at once when `force` turns true (its runtime is then dropped,
/// which closes whatever is still open).
pub fn spawn(
    index: usize,
    listeners: Vec<DataListener>,
    app: Arc<App>,
    permits: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
    mut force: watch::Receiver<bool>,
) -> std::io::Result<JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("keygate-w{index}"))
        .spawn(move || {
            INDEX.with(|i| i.set(index));
            runtime.block_on(async move {
                let mut served = serve_each(listeners, &app, &permits, &stop);
                tokio::select! {
                    _ = async { while served.join_next().await.is_some() {} } => {}
                    _ = super::stopped(&mut force) => {}
                    _ = anchor_timers() => {}
                }
            });
        })
}

/// Never ends: keeps a timer at most [`ANCHOR`] away on this runtime.
///
/// tokio's timer wakes its own thread (an eventfd write, then one more `epoll_wait` turn)
/// whenever a new timer is due before the earliest one it saw when it last went to sleep. Each
/// keep-alive request arms hyper's 10 s header-read timer, which without a nearer timer is
/// earlier than anything else pending (the 60 s idle watchdogs, the upstream timeout): that was
/// one more wake-up per request on a single connection, and 0.2 per request at 32 connections.
/// With a timer never more than a second away, none of the per-request timers is ever the
/// earliest. The cost is one wake-up a second on an idle worker.
async fn anchor_timers() {
    let mut tick = tokio::time::interval(ANCHOR);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// How far the [`anchor_timers`] timer is at most: well under any per-request timeout.
const ANCHOR: std::time::Duration = std::time::Duration::from_secs(1);

/// Serves `listeners`: on the current runtime when they all belong to worker 0 (one worker, and
/// the tests), else each worker's on its own thread. The set ends when every listener is done.
pub fn serve_all(
    listeners: Vec<DataListener>,
    app: &Arc<App>,
    permits: &Arc<Semaphore>,
    stop: &watch::Receiver<bool>,
    force: &watch::Receiver<bool>,
) -> std::io::Result<tokio::task::JoinSet<()>> {
    for l in &listeners {
        if l.worker == 0 {
            tracing::info!(addr = %l.addr, tls = l.tls.is_some(), "data plane listening");
        }
    }
    if listeners.iter().all(|l| l.worker == 0) {
        return Ok(serve_each(listeners, app, permits, stop));
    }
    let mut set = tokio::task::JoinSet::new();
    let workers = listeners.iter().map(|l| l.worker + 1).max().unwrap_or(1);
    let mut by_worker: Vec<Vec<DataListener>> = (0..workers).map(|_| Vec::new()).collect();
    for l in listeners {
        by_worker[l.worker].push(l);
    }
    for (index, mine) in by_worker.into_iter().enumerate() {
        let thread = spawn(
            index,
            mine,
            Arc::clone(app),
            Arc::clone(permits),
            stop.clone(),
            force.clone(),
        )?;
        set.spawn_blocking(move || {
            if thread.join().is_err() {
                tracing::error!(worker = index, "a data-plane worker panicked");
            }
        });
    }
    tracing::info!(workers, "data-plane workers started");
    Ok(set)
}

/// Serves each of `listeners` as a task of the current runtime.
fn serve_each(
    listeners: Vec<DataListener>,
    app: &Arc<App>,
    permits: &Arc<Semaphore>,
    stop: &watch::Receiver<bool>,
) -> tokio::task::JoinSet<()> {
    let mut set = tokio::task::JoinSet::new();
    for listener in listeners {
        set.spawn(tcp::serve(
            listener,
            Arc::clone(app),
            Arc::clone(permits),
            stop.clone(),
        ));
    }
    set
}
