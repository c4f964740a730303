//! Quotas: requests and tokens per UTC day, UTC month or in total, for keys and accounts.
//!
//! Each key or account with a quota carries [`QuotaCounters`] for the quota's current period,
//! seeded from the store when the quota comes into force (startup, or the admin change that set
//! it) and counted up in memory by every forwarded request. A counter whose period is over reads
//! as zero and is reset by the next count, so periods roll over at the UTC boundary with no
//! timer.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::policy::{Quota, QuotaPeriod};

const DAY_MS: i64 = 86_400_000;

/// The number of a period: days since 1970 for `Day`, `year * 12 + month - 1` for `Month`,
/// 0 for `Total`.
pub fn period_id(period: QuotaPeriod, now_ms: i64) -> i64 {
    match period {
        QuotaPeriod::Day => now_ms.div_euclid(DAY_MS),
        QuotaPeriod::Month => {
            let (y, m, _) = civil_from_days(now_ms.div_euclid(DAY_MS));
            y * 12 + (m - 1)
        }
        QuotaPeriod::Total => 0,
    }
}

/// When the period containing `now_ms` ends (Unix ms); `None` for `Total`.
pub fn period_end_ms(period: QuotaPeriod, now_ms: i64) -> Option<i64> {
    match period {
        QuotaPeriod::Day => Some((now_ms.div_euclid(DAY_MS) + 1) * DAY_MS),
        QuotaPeriod::Month => {
            let (y, m, _) = civil_from_days(now_ms.div_euclid(DAY_MS));
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            Some(days_from_civil(ny, nm, 1) * DAY_MS)
        }
        QuotaPeriod::Total => None,
    }
}

/// Year, month (1–12) and day of a day number (Howard Hinnant's algorithm; proleptic
/// Gregorian, exact for every i64 day in range).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The day number of a civil date.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Use in the current period of one quota.
#[derive(Debug)]
pub struct QuotaCounters {
    period: QuotaPeriod,
    id: AtomicI64,
    requests: AtomicU64,
    tokens: AtomicU64,
}

/// What is used and left of a quota now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaLevel {
    pub quota: Quota,
    pub used_requests: u64,
    pub used_tokens: u64,
    /// When the period ends (Unix ms); `None` for `total`.
    pub resets_at_ms: Option<i64>,
}

impl QuotaLevel {
    /// Whether another request may start.
    pub fn exhausted(&self) -> bool {
        self.quota.requests.is_some_and(|n| self.used_requests >= n)
            || self.quota.tokens.is_some_and(|n| self.used_tokens >= n)
    }
}

impl QuotaCounters {
    /// Counters for `period`, starting from what the store holds for the period of `now_ms`.
    pub fn seeded(period: QuotaPeriod, now_ms: i64, requests: u64, tokens: u64) -> QuotaCounters {
        QuotaCounters {
            period,
            id: AtomicI64::new(period_id(period, now_ms)),
            requests: AtomicU64::new(requests),
            tokens: AtomicU64::new(tokens),
        }
    }

    pub fn period(&self) -> QuotaPeriod {
        self.period
    }

    /// Moves the counters into the period of `now_ms`, zeroing them if it is a new one.
    fn roll(&self, now_ms: i64) {
        let current = period_id(self.period, now_ms);
        let seen = self.id.load(Ordering::Acquire);
        if seen != current
            && self
                .id
                .compare_exchange(seen, current, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.requests.store(0, Ordering::Release);
            self.tokens.store(0, Ordering::Release);
        }
    }

    pub fn level(&self, quota: Quota, now_ms: i64) -> QuotaLevel {
        let current = self.id.load(Ordering::Acquire) == period_id(self.period, now_ms);
        let read = |a: &AtomicU64| {
            if current {
                a.load(Ordering::Acquire)
            } else {
                0
            }
        };
        QuotaLevel {
            quota,
            used_requests: read(&self.requests),
            used_tokens: read(&self.tokens),
            resets_at_ms: period_end_ms(self.period, now_ms),
        }
    }

    /// Counts a forwarded request.
    pub fn add_request(&self, now_ms: i64) {
        self.roll(now_ms);
        self.requests.fetch_add(1, Ordering::AcqRel);
    }

    /// Takes back a request counted by [`QuotaCounters::add_request`] in the same period.
    pub fn undo_request(&self, now_ms: i64) {
        if self.id.load(Ordering::Acquire) == period_id(self.period, now_ms) {
            let _ = self
                .requests
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }

    pub fn add_tokens(&self, now_ms: i64, tokens: u64) {
        self.roll(now_ms);
        // Saturating: an upstream's huge count must not wrap the counter back under the quota.
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_add(tokens))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAN_31_2026_23H: i64 = 1_769_900_400_000; // 2026-01-31T23:00:00Z

    #[test]
    fn civil_dates_round_trip_over_centuries() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
    }

    #[test]
    fn periods_end_at_utc_boundaries() {
        let day_end = period_end_ms(QuotaPeriod::Day, JAN_31_2026_23H).unwrap();
        assert_eq!(crate::clock::rfc3339(day_end), "2026-02-01T00:00:00Z");
        let month_end = period_end_ms(QuotaPeriod::Month, JAN_31_2026_23H).unwrap();
        assert_eq!(crate::clock::rfc3339(month_end), "2026-02-01T00:00:00Z");
        let dec = 1_796_083_200_000; // 2026-12-01T00:00:00Z
        assert_eq!(
            crate::clock::rfc3339(period_end_ms(QuotaPeriod::Month, dec).unwrap()),
            "2027-01-01T00:00:00Z"
        );
        assert_eq!(period_end_ms(QuotaPeriod::Total, dec), None);
    }

    #[test]
    fn counters_read_zero_in_a_new_period_and_restart_from_it() {
        let quota = Quota {
            requests: Some(2),
            tokens: None,
            period: QuotaPeriod::Day,
        };
        let c = QuotaCounters::seeded(QuotaPeriod::Day, JAN_31_2026_23H, 1, 0);
        assert!(!c.level(quota, JAN_31_2026_23H).exhausted());
        c.add_request(JAN_31_2026_23H);
        assert!(c.level(quota, JAN_31_2026_23H).exhausted());
        let next_day = JAN_31_2026_23H + 3_600_000;
        assert_eq!(c.level(quota, next_day).used_requests, 0);
        c.add_request(next_day);
        assert_eq!(c.level(quota, next_day).used_requests, 1);
    }

    #[test]
    fn a_token_quota_is_exhausted_at_its_limit() {
        let quota = Quota {
            requests: None,
            tokens: Some(100),
            period: QuotaPeriod::Total,
        };
        let c = QuotaCounters::seeded(QuotaPeriod::Total, 0, 0, 99);
        assert!(!c.level(quota, 5).exhausted());
        c.add_tokens(5, 1);
        let level = c.level(quota, 5);
        assert!(level.exhausted());
        assert_eq!(level.resets_at_ms, None);
    }
}
