//! The usage tables in redb, and the transactions that write and read them.
//!
//! - `usage_hourly`: (subject, hour start in Unix seconds) → [`Counts`].
//! - `usage_daily`: (subject, day start) → [`Counts`], hourly buckets folded in past retention.
//! - `usage_totals`: subject → [`Totals`] (all-time counts and `last_used_at`).
//! - `usage_periods`: (subject, period kind, period id) → (forwarded requests, tokens), what
//!   quotas are seeded from without summing buckets.
//!
//! A subject is `k:<key id>` or `a:<account>`. Every write happens in the flusher's one
//! transaction per interval, never per request.

use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::Counts;
use crate::policy::QuotaPeriod;
use crate::store::{Record, StoreError};

pub(crate) const HOURLY: TableDefinition<(&str, i64), &[u8]> = TableDefinition::new("usage_hourly");
pub(crate) const DAILY: TableDefinition<(&str, i64), &[u8]> = TableDefinition::new("usage_daily");
pub(crate) const TOTALS: TableDefinition<&str, &[u8]> = TableDefinition::new("usage_totals");
pub(crate) const PERIODS: TableDefinition<(&str, u8, i64), (u64, u64)> =
    TableDefinition::new("usage_periods");

pub const HOUR_SECS: i64 = 3600;
pub const DAY_SECS: i64 = 86_400;

impl Record for Counts {
    const WHAT: &'static str = "usage counts";
}

/// All-time counts of a subject.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub counts: Counts,
    pub last_used_ms: Option<i64>,
}

impl Record for Totals {
    const WHAT: &'static str = "usage totals";
}

pub fn period_kind(period: QuotaPeriod) -> u8 {
    match period {
        QuotaPeriod::Day => 0,
        QuotaPeriod::Month => 1,
        QuotaPeriod::Total => 2,
    }
}

/// Creates the usage tables if missing.
pub fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(HOURLY)?;
    txn.open_table(DAILY)?;
    txn.open_table(TOTALS)?;
    txn.open_table(PERIODS)?;
    Ok(())
}

/// One subject's share of a flush.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectBatch {
    /// Hour start → counts.
    pub hours: Vec<(i64, Counts)>,
    pub last_used_ms: Option<i64>,
}

/// Adds a batch to the tables.
pub fn write(txn: &WriteTransaction, batch: &[(String, SubjectBatch)]) -> Result<(), StoreError> {
    let mut hourly = txn.open_table(HOURLY)?;
    let mut totals = txn.open_table(TOTALS)?;
    let mut periods = txn.open_table(PERIODS)?;
    for (subject, sb) in batch {
        let mut sum = Counts::default();
        for &(hour, counts) in &sb.hours {
            let key = (subject.as_str(), hour);
            let stored = match hourly.get(key)? {
                Some(v) => Counts::decode(v.value())?,
                None => Counts::default(),
            };
            hourly.insert(key, (stored + counts).encode().as_slice())?;
            sum = sum + counts;
            let ms = hour * 1000;
            for period in [QuotaPeriod::Day, QuotaPeriod::Month, QuotaPeriod::Total] {
                let pkey = (
                    subject.as_str(),
                    period_kind(period),
                    super::quota::period_id(period, ms),
                );
                let (r, t) = periods.get(pkey)?.map_or((0, 0), |v| v.value());
                periods.insert(
                    pkey,
                    (
                        r.saturating_add(counts.forwarded),
                        t.saturating_add(counts.tokens()),
                    ),
                )?;
            }
        }
        let mut total = match totals.get(subject.as_str())? {
            Some(v) => Totals::decode(v.value())?,
            None => Totals::default(),
        };
        total.counts = total.counts + sum;
        total.last_used_ms = total.last_used_ms.max(sb.last_used_ms);
        totals.insert(subject.as_str(), total.encode().as_slice())?;
    }
    Ok(())
}

pub fn totals(txn: &ReadTransaction, subject: &str) -> Result<Totals, StoreError> {
    let table = txn.open_table(TOTALS)?;
    Ok(match table.get(subject)? {
        Some(v) => Totals::decode(v.value())?,
        None => Totals::default(),
    })
}

/// (forwarded requests, tokens) stored for a subject's period.
pub fn period_used(
    txn: &ReadTransaction,
    subject: &str,
    period: QuotaPeriod,
    id: i64,
) -> Result<(u64, u64), StoreError> {
    let table = txn.open_table(PERIODS)?;
    Ok(table
        .get((subject, period_kind(period), id))?
        .map_or((0, 0), |v| v.value()))
}

/// Buckets of a subject with starts in `[from, to)` (Unix seconds), hourly ones and, where
/// hours were folded away, daily ones; in start order.
pub fn buckets(
    txn: &ReadTransaction,
    subject: &str,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, Counts)>, StoreError> {
    let mut out = Vec::new();
    for table in [txn.open_table(DAILY)?, txn.open_table(HOURLY)?] {
        for entry in table.range((subject, from)..(subject, to))? {
            let (k, v) = entry?;
            out.push((k.value().1, Counts::decode(v.value())?));
        }
    }
    out.sort_by_key(|(start, _)| *start);
    Ok(out)
}

/// Folds hourly buckets older than `hourly_cutoff` into daily ones, drops daily buckets older
/// than `daily_cutoff` and period rows no quota can ask for again. Returns rows removed.
pub fn retain(
    txn: &WriteTransaction,
    hourly_cutoff: i64,
    daily_cutoff: Option<i64>,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let mut hourly = txn.open_table(HOURLY)?;
    let mut daily = txn.open_table(DAILY)?;
    let mut old: Vec<(String, i64, Counts)> = Vec::new();
    for entry in hourly.iter()? {
        let (k, v) = entry?;
        let (subject, hour) = k.value();
        if hour < hourly_cutoff {
            old.push((subject.to_owned(), hour, Counts::decode(v.value())?));
        }
    }
    for (subject, hour, counts) in &old {
        hourly.remove((subject.as_str(), *hour))?;
        let day = hour.div_euclid(DAY_SECS) * DAY_SECS;
        let key = (subject.as_str(), day);
        let stored = match daily.get(key)? {
            Some(v) => Counts::decode(v.value())?,
            None => Counts::default(),
        };
        daily.insert(key, (stored + *counts).encode().as_slice())?;
    }
    let mut removed = old.len();
    if let Some(cutoff) = daily_cutoff {
        let expired: Vec<(String, i64)> = daily
            .iter()?
            .filter_map(Result::ok)
            .map(|(k, _)| (k.value().0.to_owned(), k.value().1))
            .filter(|(_, day)| *day < cutoff)
            .collect();
        for (subject, day) in &expired {
            daily.remove((subject.as_str(), *day))?;
        }
        removed += expired.len();
    }
    let mut periods = txn.open_table(PERIODS)?;
    let today = super::quota::period_id(QuotaPeriod::Day, now_ms);
    let this_month = super::quota::period_id(QuotaPeriod::Month, now_ms);
    let stale: Vec<(String, u8, i64)> = periods
        .iter()?
        .filter_map(Result::ok)
        .map(|(k, _)| {
            let (s, kind, id) = k.value();
            (s.to_owned(), kind, id)
        })
        .filter(|(_, kind, id)| match *kind {
            0 => *id < today - 1,
            1 => *id < this_month - 1,
            _ => false,
        })
        .collect();
    for (s, kind, id) in &stale {
        periods.remove((s.as_str(), *kind, *id))?;
    }
    Ok(removed + stale.len())
}
