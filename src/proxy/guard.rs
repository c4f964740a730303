//! Defences that run before authentication: request paths that could escape their route, and a
//! per-client-IP limit on failed authentications against key guessing.
//!
//! A path with `.` or `..` segments (also percent-encoded), encoded slashes or backslashes is
//! refused: routing matches the path as written, but an upstream would resolve it, so
//! `/v1/../admin` could reach what no route allows. Clients have no reason to send such paths.
//!
//! Every failed authentication takes a unit from its client IP's bucket
//! (`server.auth_failure_limit`); while the bucket is empty, that IP's requests are refused
//! with 429 before their key is even looked at. The table of IPs is bounded: when full, IPs
//! whose buckets have refilled are forgotten first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::RwLock;
use std::time::Duration;

use crate::config::Rate;
use crate::limits::{Bucket, Params};

/// Most IPs tracked at once: about 10 MB at worst, enough for a distributed guessing attempt
/// from a large botnet to still be throttled per address.
const MAX_TRACKED: usize = 100_000;

/// Whether `path` is safe to route and forward as written.
pub fn path_is_clean(path: &str) -> bool {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') || memchr::memchr(b'\\', bytes).is_some() {
        return false;
    }
    // Percent-encoded dot, slash, backslash or NUL, in either case; no allocation.
    let encoded = bytes.windows(3).any(|w| {
        w[0] == b'%'
            && matches!(
                (w[1], w[2].to_ascii_lowercase()),
                (b'2', b'e' | b'f') | (b'5', b'c') | (b'0', b'0')
            )
    });
    if encoded {
        return false;
    }
    !bytes
        .split(|&b| b == b'/')
        .any(|segment| segment == b"." || segment == b"..")
}

/// Failed-authentication buckets by client IP.
pub struct AuthGuard {
    buckets: RwLock<HashMap<IpAddr, Bucket>>,
}

impl Default for AuthGuard {
    fn default() -> Self {
        AuthGuard::new()
    }
}

fn params(rate: Rate) -> Params {
    Params {
        amount: rate.requests,
        interval: rate.interval,
    }
}

impl AuthGuard {
    pub fn new() -> AuthGuard {
        AuthGuard {
            buckets: RwLock::default(),
        }
    }

    /// `Some(wait)` when `ip` has used up its failed authentications.
    pub fn blocked(&self, ip: IpAddr, rate: Rate, now: u64) -> Option<Duration> {
        let map = self.buckets.read().unwrap_or_else(|e| e.into_inner());
        let level = map.get(&ip)?.peek(params(rate), now);
        (level.remaining == 0).then(|| {
            let per_unit = rate.interval / u32::try_from(rate.requests.max(1)).unwrap_or(u32::MAX);
            level
                .reset
                .saturating_sub(rate.interval.saturating_sub(per_unit))
        })
    }

    /// Counts a failed authentication from `ip`.
    pub fn failed(&self, ip: IpAddr, rate: Rate, now: u64) {
        let p = params(rate);
        {
            let map = self.buckets.read().unwrap_or_else(|e| e.into_inner());
            if let Some(bucket) = map.get(&ip) {
                let _ = bucket.take(p, now, 1);
                return;
            }
        }
        let mut map = self.buckets.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED {
            map.retain(|_, b| b.peek(p, now).remaining < p.amount);
            if map.len() >= MAX_TRACKED {
                // Still full of active attackers: make room at random rather than grow.
                if let Some(victim) = map.keys().next().copied() {
                    map.remove(&victim);
                }
            }
        }
        let _ = map.entry(ip).or_default().take(p, now, 1);
    }

    pub fn tracked(&self) -> usize {
        self.buckets.read().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_and_encoded_separators_are_refused() {
        for ok in [
            "/v1/chat/completions",
            "/v1/models/gpt-4o",
            "/",
            "/v1/a.b/..c/.d",
            "/v1/x?y=..",
        ] {
            assert!(path_is_clean(ok), "{ok}");
        }
        for bad in [
            "/v1/../admin",
            "/v1/./x",
            "/v1/..",
            "/v1/%2e%2e/admin",
            "/v1/%2E./x",
            "/v1%2fadmin",
            "/v1\\..\\x",
            "v1/x",
            "/v1/%00",
        ] {
            assert!(!path_is_clean(bad), "{bad}");
        }
    }

    #[test]
    fn an_ip_is_blocked_after_its_failures_and_freed_as_the_bucket_refills() {
        let g = AuthGuard::new();
        let rate = Rate {
            requests: 3,
            interval: Duration::from_secs(60),
        };
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let other: IpAddr = "203.0.113.10".parse().unwrap();
        let now = 1_000_000_000;
        for _ in 0..3 {
            assert_eq!(g.blocked(ip, rate, now), None);
            g.failed(ip, rate, now);
        }
        assert_eq!(g.blocked(ip, rate, now), Some(Duration::from_secs(20)));
        assert_eq!(g.blocked(other, rate, now), None);
        assert_eq!(g.blocked(ip, rate, now + 20_000_000_000), None);
    }

    #[test]
    fn the_table_stays_bounded() {
        let g = AuthGuard::new();
        let rate = Rate {
            requests: 1000,
            interval: Duration::from_millis(1),
        };
        for i in 0..(MAX_TRACKED as u32 + 50) {
            g.failed(
                IpAddr::from(i.to_be_bytes()),
                rate,
                u64::from(i) * 10_000_000,
            );
        }
        assert!(g.tracked() <= MAX_TRACKED);
    }
}
