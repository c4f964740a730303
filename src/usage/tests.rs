//! Model-based test of the meter and the flusher: random requests, flushes, failed flushes
//! (taken and put back) and restarts must leave the figures — totals, buckets, quota periods —
//! equal to a plain map's.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::flush::{buckets, flush_now, seed, totals};
use super::*;
use crate::policy::QuotaPeriod;
use crate::store::Store;

/// 2026-03-01T00:00:00Z: hours across a day and a month boundary are generated from here.
const BASE_MS: i64 = 1_772_323_200_000;

#[derive(Debug, Clone)]
enum Op {
    Record {
        key: u8,
        account: u8,
        hour: i64,
        input: u64,
        output: u64,
        error: bool,
    },
    Flush,
    /// A flush whose write failed: the batch goes back into the meter.
    FailedFlush,
    /// A clean stop (flush) and a reopen of the store.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..4, 0u8..2, -30i64..30, 0u64..500, 0u64..500, any::<bool>())
            .prop_map(|(key, account, hour, input, output, error)| Op::Record { key, account, hour, input, output, error }),
        2 => Just(Op::Flush),
        1 => Just(Op::FailedFlush),
        1 => Just(Op::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn flushed_and_pending_usage_equals_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            let store = Store::open(dir.path()).unwrap();
            store.write(|tx| store::create_tables(tx.raw())).unwrap();
            store
        };
        let mut store = open();
        let meter = Meter::new();
        // (subject, hour) → counts
        let mut model: BTreeMap<(String, i64), Counts> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Record { key, account, hour, input, output, error } => {
                    let at = BASE_MS + hour * 3_600_000 + 1234;
                    let counts = Counts { requests: 1, forwarded: 1, input_tokens: input,
                        output_tokens: output, errors: u64::from(error), estimated: 0 };
                    let (k, a) = (format!("key_{key:016}"), format!("acct{account}"));
                    meter.record(&k, &a, at, counts);
                    for subject in [key_subject(&k), account_subject(&a)] {
                        let slot = model.entry((subject, hour_of(at))).or_default();
                        *slot = *slot + counts;
                    }
                }
                Op::Flush => { flush_now(&store, &meter).unwrap(); }
                Op::FailedFlush => { let batch = meter.take(); meter.restore(batch); }
                Op::Restart => {
                    flush_now(&store, &meter).unwrap();
                    prop_assert!(meter.is_empty());
                    drop(store);
                    store = open();
                }
            }
        }
        let subjects: std::collections::BTreeSet<String> = model.keys().map(|(s, _)| s.clone()).collect();
        let now = BASE_MS + 40 * 3_600_000;
        for subject in subjects {
            let expect: Vec<(i64, Counts)> = model.iter().filter(|((s, _), _)| *s == subject)
                .map(|((_, h), c)| (*h, *c)).collect();
            let got = buckets(&store, &meter, &subject, i64::MIN / 2, i64::MAX / 2, false).unwrap();
            prop_assert_eq!(&got, &expect, "{}", subject);
            let sum = expect.iter().fold(Counts::default(), |acc, (_, c)| acc + *c);
            prop_assert_eq!(totals(&store, &meter, &subject).unwrap().counts, sum);
            // Daily buckets sum the hours of each UTC day.
            let days = buckets(&store, &meter, &subject, i64::MIN / 2, i64::MAX / 2, true).unwrap();
            prop_assert_eq!(days.iter().fold(Counts::default(), |acc, (_, c)| acc + *c), sum);
            // Quota periods: the month of `now` holds the month's hours.
            let month = quota::period_id(QuotaPeriod::Month, now);
            let in_month = expect.iter().filter(|(h, _)| quota::period_id(QuotaPeriod::Month, h * 1000) == month)
                .fold(Counts::default(), |acc, (_, c)| acc + *c);
            let counters = seed(&store, &meter, &subject, QuotaPeriod::Month, now).unwrap();
            let q = crate::policy::Quota { requests: Some(u64::MAX), tokens: Some(u64::MAX), period: QuotaPeriod::Month };
            let level = counters.level(q, now);
            prop_assert_eq!(level.used_requests, in_month.forwarded);
            prop_assert_eq!(level.used_tokens, in_month.tokens());
        }
    }
}

#[test]
fn a_failed_flush_loses_nothing_and_merges_with_newer_counts() {
    let meter = Meter::new();
    let c = Counts {
        requests: 1,
        input_tokens: 5,
        ..Default::default()
    };
    meter.record("key_0000000000000001", "a", BASE_MS, c);
    let batch = meter.take();
    assert!(meter.is_empty());
    meter.record("key_0000000000000001", "a", BASE_MS + 10, c);
    meter.restore(batch);
    let (hours, last) = meter.pending(&key_subject("key_0000000000000001"));
    assert_eq!(hours, vec![(hour_of(BASE_MS), c + c)]);
    assert_eq!(last, Some(BASE_MS + 10));
}

#[test]
fn retention_folds_old_hours_into_days_and_keeps_the_sums() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.write(|tx| store::create_tables(tx.raw())).unwrap();
    let meter = Meter::new();
    let c = Counts {
        requests: 1,
        output_tokens: 3,
        ..Default::default()
    };
    for h in 0..48 {
        meter.record("key_0000000000000001", "a", BASE_MS + h * 3_600_000, c);
    }
    flush_now(&store, &meter).unwrap();
    let subject = key_subject("key_0000000000000001");
    let cutoff = (BASE_MS + 24 * 3_600_000) / 1000;
    let removed = store
        .write(|tx| store::retain(tx.raw(), cutoff, None, BASE_MS))
        .unwrap();
    assert_eq!(removed, 48, "24 old hours each for the key and its account");
    let rows = buckets(&store, &meter, &subject, 0, i64::MAX / 2, false).unwrap();
    assert_eq!(rows.len(), 25, "one daily bucket and 24 hourly ones");
    assert_eq!(
        rows[0],
        (
            BASE_MS / 1000,
            Counts {
                requests: 24,
                output_tokens: 72,
                ..Default::default()
            }
        )
    );
    assert_eq!(
        totals(&store, &meter, &subject).unwrap().counts.requests,
        48
    );
}
