//! A lock-free token bucket, implemented as GCRA (the generic cell rate algorithm).
//!
//! A bucket of `amount` per `interval` is one `AtomicU64`: the theoretical arrival time (TAT),
//! the instant at which the bucket will be full again, in nanoseconds of [`crate::clock::Clock::mono_ns`].
//! Taking `n` pushes the TAT `n` emission intervals (`interval / amount`) later; it is allowed
//! while the TAT stays within `interval` of now. Every change is a compare-and-swap, so parallel
//! requests can never take more than the bucket holds. Parameters are passed on each call rather
//! than stored, so a changed limit applies at once to the existing state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How much a bucket holds and how fast it refills: `amount` per `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub amount: u64,
    pub interval: Duration,
}

impl Params {
    /// The interval in nanoseconds, at most [`super::MAX_INTERVAL`]: validation refuses longer
    /// ones, and the clamp keeps `now + interval` far from overflowing (where it would saturate
    /// and let every take through) whatever an old record holds.
    fn interval_ns(self) -> u64 {
        let interval = self.interval.min(super::MAX_INTERVAL);
        u64::try_from(interval.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Nanoseconds that `n` units push the TAT, rounded up so that no rounding ever lets an
    /// extra unit through.
    fn cost_ns(self, n: u64) -> u64 {
        let amount = u128::from(self.amount.max(1));
        let ns = (u128::from(n) * u128::from(self.interval_ns())).div_ceil(amount);
        u64::try_from(ns).unwrap_or(u64::MAX)
    }
}

/// A bucket's state as the rate-limit headers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    /// The bucket's size.
    pub limit: u64,
    /// Whole units that could be taken now.
    pub remaining: u64,
    /// Time until the bucket is full again.
    pub reset: Duration,
}

/// A refused take: the bucket's level and how long until the take would succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Empty {
    pub level: Level,
    pub retry_after: Duration,
}

/// The bucket state.
#[derive(Debug, Default)]
pub struct Bucket {
    tat: AtomicU64,
}

impl Bucket {
    pub fn new() -> Bucket {
        Bucket::default()
    }

    fn level(p: Params, tat: u64, now: u64) -> Level {
        let base = tat.max(now);
        let headroom = (now.saturating_add(p.interval_ns())).saturating_sub(base);
        let remaining =
            (u128::from(headroom) * u128::from(p.amount) / u128::from(p.interval_ns())) as u64;
        Level {
            limit: p.amount,
            remaining: remaining.min(p.amount),
            reset: Duration::from_nanos(base - now),
        }
    }

    /// The level at `now`, without taking anything.
    pub fn peek(&self, p: Params, now: u64) -> Level {
        Self::level(p, self.tat.load(Ordering::Acquire), now)
    }

    /// Takes `n` units if the bucket holds them all.
    pub fn take(&self, p: Params, now: u64, n: u64) -> Result<Level, Empty> {
        self.update(|tat| {
            let new = tat.max(now).saturating_add(p.cost_ns(n));
            (new - now <= p.interval_ns()).then_some(new)
        })
        .map(|tat| Self::level(p, tat, now))
        .map_err(|tat| Empty {
            level: Self::level(p, tat, now),
            retry_after: Duration::from_nanos(
                tat.max(now)
                    .saturating_add(p.cost_ns(n))
                    .saturating_sub(now.saturating_add(p.interval_ns())),
            ),
        })
    }

    /// Admits a request while the bucket holds at least one unit, then reserves `n` units even
    /// if that runs the bucket into debt. Concurrent admissions therefore overspend by at most
    /// one reservation; [`Bucket::settle`] later corrects the reservation to the real count.
    pub fn reserve(&self, p: Params, now: u64, n: u64) -> Result<Level, Empty> {
        let one = p.cost_ns(1);
        self.update(|tat| {
            let base = tat.max(now);
            (base.saturating_add(one) - now <= p.interval_ns())
                .then(|| base.saturating_add(p.cost_ns(n)))
        })
        .map(|tat| Self::level(p, tat, now))
        .map_err(|tat| Empty {
            level: Self::level(p, tat, now),
            retry_after: Duration::from_nanos(
                tat.max(now)
                    .saturating_add(one)
                    .saturating_sub(now.saturating_add(p.interval_ns())),
            ),
        })
    }

    /// Corrects an earlier take or reservation of `reserved` units to `actual` units. Giving
    /// units back never fills the bucket beyond full.
    pub fn settle(&self, p: Params, now: u64, reserved: u64, actual: u64) {
        if actual == reserved {
            return;
        }
        let _ = self.update(|tat| {
            Some(if actual > reserved {
                tat.max(now).saturating_add(p.cost_ns(actual - reserved))
            } else {
                tat.saturating_sub(p.cost_ns(reserved - actual))
                    .max(now.min(tat))
            })
        });
    }

    /// Gives back `n` units taken at an earlier `take` (another layer refused the request).
    pub fn refund(&self, p: Params, now: u64, n: u64) {
        self.settle(p, now, n, 0);
    }

    /// Applies `f` to the TAT with a CAS loop; `Err(tat)` when `f` refuses.
    fn update(&self, f: impl Fn(u64) -> Option<u64>) -> Result<u64, u64> {
        let mut current = self.tat.load(Ordering::Acquire);
        loop {
            let new = f(current).ok_or(current)?;
            match self
                .tat
                .compare_exchange_weak(current, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(new),
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const SEC: u64 = 1_000_000_000;

    fn per_minute(n: u64) -> Params {
        Params {
            amount: n,
            interval: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_full_bucket_gives_its_whole_amount_then_refuses() {
        let b = Bucket::new();
        let p = per_minute(3);
        let now = 100 * SEC;
        assert_eq!(b.take(p, now, 1).unwrap().remaining, 2);
        assert_eq!(b.take(p, now, 1).unwrap().remaining, 1);
        let last = b.take(p, now, 1).unwrap();
        assert_eq!(last.remaining, 0);
        assert_eq!(last.reset, Duration::from_secs(60));
        let empty = b.take(p, now, 1).unwrap_err();
        assert_eq!(empty.retry_after, Duration::from_secs(20));
        assert_eq!(empty.level.remaining, 0);
    }

    #[test]
    fn the_bucket_refills_one_unit_per_emission_interval() {
        let b = Bucket::new();
        let p = per_minute(3);
        let now = 100 * SEC;
        for _ in 0..3 {
            b.take(p, now, 1).unwrap();
        }
        assert!(b.take(p, now + 19 * SEC, 1).is_err());
        assert!(b.take(p, now + 20 * SEC, 1).is_ok());
        assert_eq!(b.peek(p, now + 200 * SEC).remaining, 3);
    }

    /// The state is "how much of the interval is used up", so a changed limit keeps the
    /// fraction used: half of 10/min used is half of 4/min used.
    #[test]
    fn a_changed_limit_applies_to_existing_state() {
        let b = Bucket::new();
        let now = 100 * SEC;
        b.take(per_minute(10), now, 5).unwrap();
        assert_eq!(b.peek(per_minute(4), now).remaining, 2);
        b.take(per_minute(4), now, 2).unwrap();
        assert!(b.take(per_minute(4), now, 1).is_err());
    }

    #[test]
    fn a_refund_gives_back_what_was_taken_but_never_overfills() {
        let b = Bucket::new();
        let p = per_minute(2);
        let now = 100 * SEC;
        b.take(p, now, 2).unwrap();
        b.refund(p, now, 1);
        assert_eq!(b.peek(p, now).remaining, 1);
        b.refund(p, now, 5);
        assert_eq!(b.peek(p, now).remaining, 2);
        assert_eq!(b.peek(p, now).reset, Duration::ZERO);
    }

    #[test]
    fn a_reservation_is_admitted_while_one_unit_remains_and_settles_to_the_real_count() {
        let b = Bucket::new();
        let p = per_minute(100);
        let now = 100 * SEC;
        b.reserve(p, now, 150).unwrap(); // admitted on a full bucket, runs into debt
        assert!(b.reserve(p, now, 1).is_err());
        b.settle(p, now, 150, 40); // the response used 40
        assert_eq!(b.peek(p, now).remaining, 60);
    }

    #[test]
    fn parallel_takers_never_get_more_than_the_bucket_holds() {
        let b = Arc::new(Bucket::new());
        let p = per_minute(1000);
        let now = 100 * SEC;
        let granted: u64 = (0..8)
            .map(|_| {
                let b = Arc::clone(&b);
                std::thread::spawn(move || {
                    (0..500).filter(|_| b.take(p, now, 1).is_ok()).count() as u64
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(granted, 1000);
    }

    #[test]
    fn parallel_reservations_overspend_by_at_most_one_reservation() {
        let b = Arc::new(Bucket::new());
        let p = per_minute(1000);
        let now = 100 * SEC;
        let reserved: u64 = (0..8)
            .map(|_| {
                let b = Arc::clone(&b);
                std::thread::spawn(move || {
                    (0..100).filter(|_| b.reserve(p, now, 64).is_ok()).count() as u64 * 64
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert!(reserved <= 1000 + 64, "reserved {reserved}");
        assert!(reserved > 1000 - 64, "reserved {reserved}");
    }

    /// Regression: an interval of 2^64 ns or more saturated `now + interval`, and every take
    /// succeeded: the limiter failed open.
    #[test]
    fn an_enormous_interval_still_limits() {
        let b = Bucket::new();
        let p = Params {
            amount: 1,
            interval: Duration::from_secs(213_504 * 86_400),
        };
        let now = 100 * SEC;
        assert!(b.take(p, now, 1).is_ok());
        assert!(b.take(p, now, 1).is_err());
        assert!(b.take(p, now + 3600 * SEC, 1).is_err());
    }

    #[test]
    fn rounding_never_lets_an_extra_unit_through() {
        // 7 per 1 s: the emission interval is not a whole number of nanoseconds.
        let b = Bucket::new();
        let p = Params {
            amount: 7,
            interval: Duration::from_secs(1),
        };
        let mut granted = 0;
        for ms in 0..10_000u64 {
            if b.take(p, 5 * SEC + ms * 1_000_000, 1).is_ok() {
                granted += 1;
            }
        }
        // 7 at once, then 7 per second over 10 s.
        assert!(granted <= 7 + 70, "granted {granted}");
        assert!(granted >= 7 + 69, "granted {granted}");
    }
}
