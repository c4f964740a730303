//! Moving usage from memory to redb, and reading it back merged with what is still in memory.
//!
//! [`run`] flushes every `usage.flush_interval` and once more at shutdown; a failed flush (a
//! full disk, an I/O error) keeps the counts in memory, logs loudly and retries at the next
//! interval. Once an hour it also applies retention. The read functions add the unflushed part
//! to what the store holds, so admin figures are always current. All of these block on redb.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::quota::{QuotaCounters, period_id};
use super::store::{self, DAY_SECS, Totals};
use super::{Counts, Meter};
use crate::app::App;
use crate::policy::QuotaPeriod;
use crate::store::{Store, StoreError};

/// Retention runs this often: hourly buckets age by the hour.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Flush outcomes, for metrics and status.
#[derive(Debug, Default)]
pub struct FlushStats {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    /// Consecutive failures right now (0 when healthy).
    pub failing: AtomicU64,
}

/// Writes everything pending in one transaction; on failure puts it back. Returns the number
/// of subjects written.
pub fn flush_now(store: &Store, meter: &Meter) -> Result<usize, StoreError> {
    let batch = meter.take();
    if batch.is_empty() {
        return Ok(0);
    }
    match store.write(|tx| store::write(tx.raw(), &batch)) {
        Ok(()) => Ok(batch.len()),
        Err(e) => {
            meter.restore(batch);
            Err(e)
        }
    }
}

/// Flushes and records the outcome. Blocking.
pub fn flush_and_count(app: &App) -> Result<usize, StoreError> {
    let result = flush_now(&app.store, &app.meter);
    let stats = &app.flush_stats;
    match &result {
        Ok(_) => {
            stats.ok.fetch_add(1, Ordering::Relaxed);
            if stats.failing.swap(0, Ordering::Relaxed) > 0 {
                tracing::warn!("usage flush recovered; counts kept in memory are now stored");
            }
        }
        Err(e) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            let n = stats.failing.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::error!(error = %e, consecutive_failures = n,
                "usage flush failed; counts stay in memory and the flush is retried");
        }
    }
    result
}

/// The flusher: every `usage.flush_interval` until `stop`, then a last flush. It ticks on a
/// fixed schedule (not a sleep after each flush), so the time a flush takes does not stretch
/// the interval, and with it what a crash can lose.
pub async fn run(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let mut last_retention: Option<Instant> = None;
    let mut period = app.config().usage.flush_interval;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = crate::net::stopped(&mut stop) => break,
        }
        // A reload may have changed the interval.
        let configured = app.config().usage.flush_interval;
        if configured != period {
            period = configured;
            ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        let due = last_retention.is_none_or(|t| t.elapsed() >= RETENTION_EVERY);
        let worker = Arc::clone(&app);
        let result = tokio::task::spawn_blocking(move || {
            let _ = flush_and_count(&worker);
            if due {
                retain(&worker);
            }
        })
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "usage flush task failed");
        }
        if due {
            last_retention = Some(Instant::now());
        }
    }
    let worker = Arc::clone(&app);
    match tokio::task::spawn_blocking(move || flush_and_count(&worker)).await {
        Ok(Ok(n)) => tracing::info!(subjects = n, "usage flushed at shutdown"),
        Ok(Err(_)) => {
            tracing::error!("usage could not be flushed at shutdown; up to one interval is lost")
        }
        Err(e) => tracing::error!(error = %e, "final usage flush task failed"),
    }
}

fn retain(app: &App) {
    let config = app.config();
    let now_ms = app.clock.now_ms();
    let now = now_ms / 1000;
    let hourly_cutoff = now - config.usage.hourly_retention.as_secs() as i64;
    let daily_cutoff = config
        .usage
        .daily_retention
        .map(|d| now - d.as_secs() as i64);
    match app
        .store
        .write(|tx| store::retain(tx.raw(), hourly_cutoff, daily_cutoff, now_ms))
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(rows = n, "usage retention applied"),
        Err(e) => tracing::error!(error = %e, "usage retention failed; retried in an hour"),
    }
}

/// All-time totals of `subject`, flushed and not.
pub fn totals(store: &Store, meter: &Meter, subject: &str) -> Result<Totals, StoreError> {
    let mut totals = store.read(|tx| store::totals(tx.raw(), subject))?;
    let (hours, last_used) = meter.pending(subject);
    for (_, counts) in hours {
        totals.counts = totals.counts + counts;
    }
    totals.last_used_ms = totals.last_used_ms.max(last_used);
    Ok(totals)
}

/// Buckets of `subject` with starts in `[from, to)` (Unix seconds), by hour or by day,
/// flushed and not, in order.
pub fn buckets(
    store: &Store,
    meter: &Meter,
    subject: &str,
    from: i64,
    to: i64,
    daily: bool,
) -> Result<Vec<(i64, Counts)>, StoreError> {
    let from = if daily {
        from.div_euclid(DAY_SECS) * DAY_SECS
    } else {
        from
    };
    let mut rows = store.read(|tx| store::buckets(tx.raw(), subject, from, to))?;
    let (pending, _) = meter.pending(subject);
    rows.extend(pending.into_iter().filter(|(h, _)| (from..to).contains(h)));
    let mut merged: std::collections::BTreeMap<i64, Counts> = Default::default();
    for (start, counts) in rows {
        let start = if daily {
            start.div_euclid(DAY_SECS) * DAY_SECS
        } else {
            start
        };
        let slot = merged.entry(start).or_default();
        *slot = *slot + counts;
    }
    Ok(merged.into_iter().collect())
}

/// Quota counters for `subject`'s `period` as of `now_ms`: the stored period row plus what is
/// still in memory for that period.
pub fn seed(
    store: &Store,
    meter: &Meter,
    subject: &str,
    period: QuotaPeriod,
    now_ms: i64,
) -> Result<QuotaCounters, StoreError> {
    let id = period_id(period, now_ms);
    let (mut requests, mut tokens) =
        store.read(|tx| store::period_used(tx.raw(), subject, period, id))?;
    for (hour, counts) in meter.pending(subject).0 {
        if period_id(period, hour * 1000) == id {
            requests = requests.saturating_add(counts.forwarded);
            tokens = tokens.saturating_add(counts.tokens());
        }
    }
    Ok(QuotaCounters::seeded(period, now_ms, requests, tokens))
}
