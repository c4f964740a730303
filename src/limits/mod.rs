//! Rate limits in two layers (SPEC §3): each key has its own request and token buckets (its own
//! limits, else the config's `[limits]`), and an account that sets a limit adds a bucket shared
//! by all of its keys. A request needs a unit from every request bucket that applies and, where
//! token limits apply, a token reservation from every token bucket.
//!
//! [`take`] is what the data plane does; [`peek`] answers the same question without changing
//! anything, for `explain`. Both go through [`Applicable`], so they cannot disagree about which
//! buckets apply.

pub mod bucket;

use std::time::Duration;

pub use bucket::{Bucket, Empty, Level, Params};

use crate::config;
use crate::keyring::{AccountState, KeyPolicy, KeyState};
use crate::policy::Limits;

/// Longest interval a rate or token limit may have: a year. Longer periods are what quotas are
/// for, and it keeps every bucket's arithmetic far from overflow.
pub const MAX_INTERVAL: Duration = Duration::from_secs(366 * 86_400);

/// Which layer a bucket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Key,
    Account,
}

/// What a bucket counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Requests,
    Tokens,
}

/// The bucket parameters that apply to one request; `None` means no such bucket.
#[derive(Debug, Clone, Copy, Default)]
pub struct Applicable {
    pub key_requests: Option<Params>,
    pub account_requests: Option<Params>,
    pub key_tokens: Option<Params>,
    pub account_tokens: Option<Params>,
}

impl Applicable {
    pub fn new(defaults: &config::Limits, key: &KeyPolicy, account: &Limits) -> Applicable {
        let req = |r: config::Rate| Params {
            amount: r.requests,
            interval: r.interval,
        };
        let tok = |r: config::TokenRate| Params {
            amount: r.tokens,
            interval: r.interval,
        };
        Applicable {
            key_requests: key.limits().rate_limit.or(defaults.rate_limit).map(req),
            account_requests: account.rate_limit.map(req),
            key_tokens: key.limits().token_limit.or(defaults.token_limit).map(tok),
            account_tokens: account.token_limit.map(tok),
        }
    }

    pub fn has_tokens(&self) -> bool {
        self.key_tokens.is_some() || self.account_tokens.is_some()
    }
}

/// The levels to report after a request was admitted: the layer with the least remaining.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Granted {
    pub requests: Option<Level>,
    pub tokens: Option<Level>,
    /// Tokens reserved in every token bucket, to be settled when the response ends.
    pub reserved_tokens: u64,
}

/// A refused request: which bucket was empty, its level, and when to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    pub unit: Unit,
    pub layer: Layer,
    pub retry_after: Duration,
    /// The levels to report in headers (the least remaining of each unit).
    pub report: Granted,
}

/// The fewer-remaining of two levels.
fn least(a: Option<Level>, b: Option<Level>) -> Option<Level> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.remaining < x.remaining { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The buckets of a request in check order, with what each counts.
fn buckets<'a>(
    a: &Applicable,
    key: &'a KeyState,
    account: &'a AccountState,
) -> [(Option<Params>, &'a Bucket, Layer, Unit); 4] {
    [
        (a.key_requests, &key.requests, Layer::Key, Unit::Requests),
        (
            a.account_requests,
            &account.requests,
            Layer::Account,
            Unit::Requests,
        ),
        (a.key_tokens, &key.tokens, Layer::Key, Unit::Tokens),
        (
            a.account_tokens,
            &account.tokens,
            Layer::Account,
            Unit::Tokens,
        ),
    ]
}

/// Takes one request from every request bucket and reserves `reserve` tokens in every token
/// bucket; all or nothing: a refusal gives back what the earlier buckets gave.
pub fn take(
    a: &Applicable,
    key: &KeyState,
    account: &AccountState,
    now: u64,
    reserve: u64,
) -> Result<Granted, RateLimited> {
    let mut granted = Granted {
        reserved_tokens: if a.has_tokens() { reserve } else { 0 },
        ..Granted::default()
    };
    let all = buckets(a, key, account);
    for (i, &(params, bucket, layer, unit)) in all.iter().enumerate() {
        let Some(p) = params else { continue };
        let result = match unit {
            Unit::Requests => bucket.take(p, now, 1),
            Unit::Tokens => bucket.reserve(p, now, reserve),
        };
        match result {
            Ok(level) => record(&mut granted, unit, level),
            Err(empty) => {
                for &(params, bucket, _, unit) in &all[..i] {
                    if let Some(p) = params {
                        let n = if unit == Unit::Requests { 1 } else { reserve };
                        bucket.refund(p, now, n);
                    }
                }
                record(&mut granted, unit, empty.level);
                return Err(RateLimited {
                    unit,
                    layer,
                    retry_after: empty.retry_after,
                    report: granted,
                });
            }
        }
    }
    Ok(granted)
}

/// What [`take`] would decide now, changing nothing.
pub fn peek(
    a: &Applicable,
    key: &KeyState,
    account: &AccountState,
    now: u64,
) -> Result<Granted, RateLimited> {
    let mut granted = Granted::default();
    let mut refused = None;
    for (params, bucket, layer, unit) in buckets(a, key, account) {
        let Some(p) = params else { continue };
        let level = bucket.peek(p, now);
        record(&mut granted, unit, level);
        if level.remaining == 0 && refused.is_none() {
            let per_unit = p.interval.as_nanos() / u128::from(p.amount.max(1));
            let until_one = level
                .reset
                .as_nanos()
                .saturating_sub(p.interval.as_nanos() - per_unit);
            refused = Some((unit, layer, Duration::from_nanos(until_one as u64)));
        }
    }
    match refused {
        None => Ok(granted),
        Some((unit, layer, retry_after)) => Err(RateLimited {
            unit,
            layer,
            retry_after,
            report: granted,
        }),
    }
}

/// Gives back everything [`take`] granted (the request was refused by a later check).
pub fn refund(a: &Applicable, key: &KeyState, account: &AccountState, now: u64, granted: &Granted) {
    for (params, bucket, _, unit) in buckets(a, key, account) {
        if let Some(p) = params {
            let n = if unit == Unit::Requests {
                1
            } else {
                granted.reserved_tokens
            };
            bucket.refund(p, now, n);
        }
    }
}

/// Settles a token reservation to the real count, in every token bucket.
pub fn settle_tokens(
    a: &Applicable,
    key: &KeyState,
    account: &AccountState,
    now: u64,
    reserved: u64,
    actual: u64,
) {
    for (params, bucket, _, unit) in buckets(a, key, account) {
        if let (Some(p), Unit::Tokens) = (params, unit) {
            bucket.settle(p, now, reserved, actual);
        }
    }
}

fn record(granted: &mut Granted, unit: Unit, level: Level) {
    match unit {
        Unit::Requests => granted.requests = least(granted.requests, Some(level)),
        Unit::Tokens => granted.tokens = least(granted.tokens, Some(level)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::Keyring;
    use crate::store::{AccountRecord, KeyRecord, LimitsRecord, RateRecord};
    use std::sync::Arc;

    const SEC: u64 = 1_000_000_000;

    fn key(ring: &Keyring, n: u8, rate: Option<u64>) -> Arc<KeyState> {
        let record = KeyRecord {
            id: format!("key_000000000000000{n}"),
            account: "acme".into(),
            name: "k".into(),
            hash: [n; 32],
            previous: None,
            key_prefix: "sk-kg-x".into(),
            scopes: 1,
            is_active: true,
            primary: false,
            created_at_ms: 0,
            expires_at_ms: None,
            revoked_at_ms: None,
            allowed_origins: vec![],
            allowed_ips: vec![],
            allowed_models: vec![],
            limits: LimitsRecord {
                rate_limit: rate.map(|amount| RateRecord {
                    amount,
                    interval_ms: 60_000,
                }),
                ..Default::default()
            },
            metadata: "{}".into(),
        };
        ring.apply(None, &record).unwrap();
        ring.find(&crate::keys::KeyHash([n; 32]), 0).unwrap()
    }

    fn defaults(rate: u64) -> config::Limits {
        config::Limits {
            rate_limit: Some(config::Rate {
                requests: rate,
                interval: Duration::from_secs(60),
            }),
            token_limit: None,
            reserve_tokens: 1000,
        }
    }

    fn applicable(ring: &Keyring, k: &KeyState, rate: u64) -> Applicable {
        let policy = k.policy();
        let _ = ring;
        Applicable::new(&defaults(rate), &policy, &policy.account.limits())
    }

    #[test]
    fn a_key_without_its_own_limit_uses_the_config_default() {
        let ring = Keyring::new();
        let k = key(&ring, 1, None);
        let a = applicable(&ring, &k, 2);
        let account = k.policy().account.clone();
        assert!(take(&a, &k, &account, SEC, 0).is_ok());
        assert!(take(&a, &k, &account, SEC, 0).is_ok());
        let refused = take(&a, &k, &account, SEC, 0).unwrap_err();
        assert_eq!((refused.unit, refused.layer), (Unit::Requests, Layer::Key));
        assert_eq!(refused.retry_after, Duration::from_secs(30));
    }

    #[test]
    fn an_account_limit_is_shared_by_its_keys_and_refunds_the_key_bucket() {
        let ring = Keyring::new();
        let k1 = key(&ring, 1, Some(10));
        let k2 = key(&ring, 2, Some(10));
        ring.apply_account(&AccountRecord {
            name: "acme".into(),
            created_at_ms: 0,
            max_active_keys: None,
            limits: LimitsRecord {
                rate_limit: Some(RateRecord {
                    amount: 3,
                    interval_ms: 60_000,
                }),
                ..Default::default()
            },
        });
        let account = k1.policy().account.clone();
        let a1 = applicable(&ring, &k1, 60);
        let a2 = applicable(&ring, &k2, 60);
        take(&a1, &k1, &account, SEC, 0).unwrap();
        let g = take(&a2, &k2, &account, SEC, 0).unwrap();
        // The account layer has the least remaining: 1 of 3, against 9 of 10 for the key.
        assert_eq!(g.requests.unwrap().remaining, 1);
        assert_eq!(g.requests.unwrap().limit, 3);
        take(&a1, &k1, &account, SEC, 0).unwrap();
        let refused = take(&a2, &k2, &account, SEC, 0).unwrap_err();
        assert_eq!(refused.layer, Layer::Account);
        // The key bucket got its unit back: 9 remain for k2, not 8.
        assert_eq!(k2.requests.peek(a2.key_requests.unwrap(), SEC).remaining, 9);
    }

    #[test]
    fn peek_agrees_with_take_and_changes_nothing() {
        let ring = Keyring::new();
        let k = key(&ring, 1, Some(1));
        let a = applicable(&ring, &k, 60);
        let account = k.policy().account.clone();
        assert!(peek(&a, &k, &account, SEC).is_ok());
        assert!(peek(&a, &k, &account, SEC).is_ok());
        take(&a, &k, &account, SEC, 0).unwrap();
        let peeked = peek(&a, &k, &account, SEC).unwrap_err();
        let taken = take(&a, &k, &account, SEC, 0).unwrap_err();
        assert_eq!(peeked.retry_after, taken.retry_after);
        assert_eq!(peeked.layer, taken.layer);
    }
}
