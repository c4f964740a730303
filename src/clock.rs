//! Time, as keygate reads it: wall-clock milliseconds for expiry, quotas and records, and a
//! monotonic nanosecond count for token buckets.
//!
//! Production reads the system clock. Unit tests build a [`Clock::paused_at`] clock whose wall
//! time is an anchor plus tokio's (pausable) elapsed time, so `tokio::time::advance` moves
//! expiry, grace periods, bucket refills and quota periods together, with no sleeps.
//! Tests that talk over real sockets cannot pause tokio (its clock would jump ahead while a
//! socket waits, firing timeouts), so they use a [`Clock::manual`] clock and move it by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// A cheap, cloneable source of time.
#[derive(Clone, Debug)]
pub struct Clock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The monotonic origin of [`Clock::mono_ns`].
    origin: Instant,
    /// `None`: wall time is the system clock. `Some(ms)`: wall time is `ms` plus the tokio time
    /// elapsed since `origin`.
    wall_anchor_ms: Option<i64>,
    /// For a manual clock: the time added by [`Clock::advance`], in nanoseconds, and the wall
    /// time it started at.
    manual: Option<(AtomicI64, AtomicU64)>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock {
            inner: Arc::new(Inner {
                origin: Instant::now(),
                wall_anchor_ms: None,
                manual: None,
            }),
        }
    }

    /// A clock that reads `unix_ms` and moves only when [`Clock::advance`] is called.
    pub fn manual(unix_ms: i64) -> Clock {
        Clock {
            inner: Arc::new(Inner {
                origin: Instant::now(),
                wall_anchor_ms: None,
                manual: Some((AtomicI64::new(unix_ms), AtomicU64::new(1))),
            }),
        }
    }

    /// Moves a manual clock forward; does nothing to other clocks.
    pub fn advance(&self, by: Duration) {
        if let Some((wall, mono)) = &self.inner.manual {
            let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
            mono.fetch_add(ns, Ordering::AcqRel);
            wall.fetch_add(
                i64::try_from(by.as_millis()).unwrap_or(i64::MAX),
                Ordering::AcqRel,
            );
        }
    }

    /// A clock that reads `unix_ms` now and advances only with tokio's clock (for tests with
    /// `tokio::time::pause`).
    pub fn paused_at(unix_ms: i64) -> Clock {
        Clock {
            inner: Arc::new(Inner {
                origin: Instant::now(),
                wall_anchor_ms: Some(unix_ms),
                manual: None,
            }),
        }
    }

    /// Wall-clock Unix time in milliseconds.
    pub fn now_ms(&self) -> i64 {
        if let Some((wall, _)) = &self.inner.manual {
            return wall.load(Ordering::Acquire);
        }
        match self.inner.wall_anchor_ms {
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            Some(anchor) => {
                let elapsed = self.inner.origin.elapsed().as_millis();
                anchor.saturating_add(i64::try_from(elapsed).unwrap_or(i64::MAX))
            }
        }
    }

    /// Nanoseconds since this clock was made; never goes backwards.
    pub fn mono_ns(&self) -> u64 {
        if let Some((_, mono)) = &self.inner.manual {
            return mono.load(Ordering::Acquire);
        }
        u64::try_from(self.inner.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Formats Unix milliseconds as an RFC 3339 UTC timestamp with second precision.
pub fn rfc3339(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => String::from("invalid-timestamp"),
    }
}

/// Whether `ms` is an instant a timestamp can show (jiff's range: up to the end of year 9999).
pub fn in_range(ms: i64) -> bool {
    jiff::Timestamp::from_millisecond(ms).is_ok()
}

/// Parses an RFC 3339 timestamp into Unix milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>()
        .ok()
        .map(|ts| ts.as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_paused_clock_moves_only_with_tokio_time() {
        let clock = Clock::paused_at(1_000_000);
        assert_eq!(clock.now_ms(), 1_000_000);
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now_ms(), 1_090_000);
        assert_eq!(clock.mono_ns(), 90_000_000_000);
    }

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let clock = Clock::manual(5_000);
        let mono = clock.mono_ns();
        assert_eq!(clock.now_ms(), 5_000);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.now_ms(), 6_500);
        assert_eq!(clock.mono_ns() - mono, 1_500_000_000);
    }

    #[test]
    fn timestamps_format_and_parse_as_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_999), "2023-11-14T22:13:20Z");
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20Z"),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20+01:00"),
            Some(1_700_000_000_000)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
