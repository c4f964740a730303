//! Metering: what each key and account uses, counted in memory and persisted without a write
//! per request.
//!
//! Every authenticated request is recorded in the [`Meter`]: hourly buckets of [`Counts`] per
//! key and per account, held in sharded maps. The flusher (`flush`) takes them every
//! `usage.flush_interval` and writes them in one durable redb transaction (`store`); a failed
//! write puts them back, so a full disk delays usage but loses none, and a crash loses at most
//! one interval. Admin figures add the unflushed part, so they are always current. Token counts
//! come from the responses themselves (`parse`); quotas (`quota`) are counted in memory and
//! seeded from the store.

pub mod flush;
pub mod parse;
pub mod quota;
mod scan;
pub mod store;

use std::ops::Add;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use self::store::{HOUR_SECS, SubjectBatch};

/// What was used in one bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Authenticated requests, whatever their outcome.
    pub requests: u64,
    /// Requests forwarded to an upstream (what request quotas count).
    pub forwarded: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Requests answered with an error status, or whose stream failed.
    pub errors: u64,
    /// Requests whose tokens were estimated because the upstream never reported them.
    pub estimated: u64,
}

impl Counts {
    pub fn tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
}

/// Saturating: an upstream can report any token count, and a counter that wraps would let a key
/// past its quota.
impl Add for Counts {
    type Output = Counts;
    fn add(self, o: Counts) -> Counts {
        Counts {
            requests: self.requests.saturating_add(o.requests),
            forwarded: self.forwarded.saturating_add(o.forwarded),
            input_tokens: self.input_tokens.saturating_add(o.input_tokens),
            output_tokens: self.output_tokens.saturating_add(o.output_tokens),
            errors: self.errors.saturating_add(o.errors),
            estimated: self.estimated.saturating_add(o.estimated),
        }
    }
}

/// The store's name for a key's counters.
pub fn key_subject(id: &str) -> String {
    format!("k:{id}")
}

/// The store's name for an account's counters.
pub fn account_subject(name: &str) -> String {
    format!("a:{name}")
}

/// The start (Unix seconds) of the hour containing `ms`.
pub fn hour_of(ms: i64) -> i64 {
    ms.div_euclid(1000).div_euclid(HOUR_SECS) * HOUR_SECS
}

/// 16 shards: recording takes one short lock, rarely contended on two cores.
const SHARDS: usize = 16;

/// Unflushed counts of one subject.
#[derive(Debug, Default, Clone)]
struct Pending {
    /// Usually one entry: the current hour.
    hours: Vec<(i64, Counts)>,
    last_used_ms: Option<i64>,
}

impl Pending {
    fn add(&mut self, hour: i64, counts: Counts) {
        match self.hours.iter_mut().find(|(h, _)| *h == hour) {
            Some((_, c)) => *c = *c + counts,
            None => self.hours.push((hour, counts)),
        }
    }
}

/// Unflushed counts, by key id and by account name (not by subject string, so that recording
/// a request looks its entries up without building a string).
#[derive(Default)]
struct Shard {
    keys: foldhash::HashMap<Box<str>, Pending>,
    accounts: foldhash::HashMap<Box<str>, Pending>,
}

impl Shard {
    fn map(&mut self, account: bool) -> &mut foldhash::HashMap<Box<str>, Pending> {
        if account {
            &mut self.accounts
        } else {
            &mut self.keys
        }
    }

    fn add(
        &mut self,
        account: bool,
        name: &str,
        hour: i64,
        counts: Counts,
        last_used: Option<i64>,
    ) {
        let map = self.map(account);
        let p = match map.get_mut(name) {
            Some(p) => p,
            None => map.entry(name.into()).or_default(),
        };
        p.add(hour, counts);
        p.last_used_ms = p.last_used_ms.max(last_used);
    }
}

/// Splits a subject into (is an account, name).
fn split(subject: &str) -> Option<(bool, &str)> {
    match subject.split_at_checked(2)? {
        ("k:", name) => Some((false, name)),
        ("a:", name) => Some((true, name)),
        _ => None,
    }
}

/// The in-memory aggregator.
pub struct Meter {
    shards: Box<[Mutex<Shard>]>,
}

impl Default for Meter {
    fn default() -> Self {
        Meter::new()
    }
}

impl Meter {
    pub fn new() -> Meter {
        Meter {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard(&self, name: &str) -> std::sync::MutexGuard<'_, Shard> {
        let h = name.bytes().fold(0usize, |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        });
        self.shards[h % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Records one request of `key_id` (in `account`) at `at_ms`.
    pub fn record(&self, key_id: &str, account: &str, at_ms: i64, counts: Counts) {
        let hour = hour_of(at_ms);
        self.shard(key_id)
            .add(false, key_id, hour, counts, Some(at_ms));
        self.shard(account)
            .add(true, account, hour, counts, Some(at_ms));
    }

    /// Takes everything unflushed, leaving the meter empty.
    pub fn take(&self) -> Vec<(String, SubjectBatch)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let taken = std::mem::take(&mut *shard.lock().unwrap_or_else(|e| e.into_inner()));
            let keys = taken.keys.into_iter().map(|(n, p)| (key_subject(&n), p));
            let accounts = taken
                .accounts
                .into_iter()
                .map(|(n, p)| (account_subject(&n), p));
            out.extend(keys.chain(accounts).map(|(subject, p)| {
                (
                    subject,
                    SubjectBatch {
                        hours: p.hours,
                        last_used_ms: p.last_used_ms,
                    },
                )
            }));
        }
        out
    }

    /// Puts back a batch whose write failed, merging it with what arrived meanwhile.
    pub fn restore(&self, batch: Vec<(String, SubjectBatch)>) {
        for (subject, sb) in batch {
            let Some((account, name)) = split(&subject) else {
                continue;
            };
            let mut shard = self.shard(name);
            for (hour, counts) in sb.hours {
                shard.add(account, name, hour, counts, sb.last_used_ms);
            }
        }
    }

    /// Whether nothing is waiting to be flushed.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| {
            let s = s.lock().unwrap_or_else(|e| e.into_inner());
            s.keys.is_empty() && s.accounts.is_empty()
        })
    }

    /// The unflushed buckets of `subject`.
    pub fn pending(&self, subject: &str) -> (Vec<(i64, Counts)>, Option<i64>) {
        let Some((account, name)) = split(subject) else {
            return Default::default();
        };
        self.shard(name)
            .map(account)
            .get(name)
            .map(|p| (p.hours.clone(), p.last_used_ms))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
