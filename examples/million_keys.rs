//! Measures keygate with many keys: redb bytes per key, startup time and RSS of loading them
//! into the in-memory index, and the time to verify a presented key (parse + checksum + blake3
//! + lookup). Run it in release mode:
//!
//! ```sh
//! cargo run --release --example million_keys -- 1000000
//! ```
//!
//! It writes a throwaway state dir under the system temp dir and prints one JSON object.

use std::time::Instant;

use keygate::app::App;
use keygate::clock::Clock;
use keygate::config::Snapshot;
use keygate::keys;
use keygate::store::{KeyRecord, LimitsRecord, RateRecord, Store};

/// Keys written per transaction while filling the store.
const BATCH: usize = 20_000;
/// Presented keys kept for the verification benchmark.
const SAMPLE: usize = 10_000;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");

    // Fill the store as the admin API would, but in large transactions.
    let fill = Instant::now();
    let mut sample = Vec::with_capacity(SAMPLE);
    {
        let store = Store::open(&state)?;
        let mut i = 0;
        while i < n {
            let end = (i + BATCH).min(n);
            let mut records = Vec::with_capacity(end - i);
            for j in i..end {
                let new = keys::generate("sk-kg-")?;
                if sample.len() < SAMPLE && j % (n / SAMPLE).max(1) == 0 {
                    sample.push(new.secret.expose().to_owned());
                }
                records.push(KeyRecord {
                    id: keys::new_id(1_700_000_000_000 + j as i64)?,
                    account: format!("acct-{}", j % 10_000),
                    name: format!("key {j}"),
                    hash: new.hash.0,
                    previous: None,
                    key_prefix: new.display,
                    scopes: 3,
                    is_active: true,
                    primary: j < 10_000,
                    created_at_ms: 1_700_000_000_000 + j as i64,
                    expires_at_ms: None,
                    revoked_at_ms: None,
                    allowed_origins: Vec::new(),
                    allowed_ips: Vec::new(),
                    allowed_models: Vec::new(),
                    limits: LimitsRecord {
                        rate_limit: (j % 10 == 0).then_some(RateRecord {
                            amount: 600,
                            interval_ms: 60_000,
                        }),
                        ..LimitsRecord::default()
                    },
                    metadata: "{}".into(),
                });
            }
            store.write(|tx| {
                for r in &records {
                    tx.put_key(r, None)?;
                }
                Ok::<_, keygate::store::StoreError>(())
            })?;
            i = end;
        }
    }
    let fill_secs = fill.elapsed().as_secs_f64();
    let file_bytes = std::fs::metadata(state.join("keygate.redb"))?.len();

    // Startup: open the store and load every key into memory.
    let text = format!(
        "[server]\nstate_dir = \"{}\"\n[admin]\nsocket = \"{}\"\n",
        state.display(),
        dir.path().join("admin.sock").display()
    );
    let snapshot = Snapshot::parse(&text, std::path::Path::new("bench.toml"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let rss_before = rss_kib();
    let start = Instant::now();
    let app = App::open(snapshot, Clock::system())?;
    let startup_secs = start.elapsed().as_secs_f64();
    let rss_after = rss_kib();

    // Verification: what the data plane does with a presented key.
    let now = app.clock.now_ms();
    let verify = |key: &str| {
        keys::parse(key)
            .ok()
            .and_then(|parsed| app.keyring.find(&parsed.hash(), now))
            .is_some()
    };
    assert!(
        sample.iter().all(|k| verify(k)),
        "every sampled key verifies"
    );
    let rounds = 100;
    let t = Instant::now();
    let mut found = 0usize;
    for _ in 0..rounds {
        for k in &sample {
            found += usize::from(verify(std::hint::black_box(k)));
        }
    }
    let verify_ns = t.elapsed().as_nanos() as f64 / (rounds * sample.len()) as f64;
    assert_eq!(found, rounds * sample.len());
    let unknown: Vec<String> = (0..SAMPLE)
        .map(|_| keys::generate("sk-kg-").map(|k| k.secret.expose().to_owned()))
        .collect::<Result<_, _>>()?;
    let t = Instant::now();
    for _ in 0..rounds {
        for k in &unknown {
            assert!(!verify(std::hint::black_box(k)));
        }
    }
    let unknown_ns = t.elapsed().as_nanos() as f64 / (rounds * unknown.len()) as f64;
    let bad: Vec<String> = sample
        .iter()
        .map(|k| format!("{}x", &k[..k.len() - 1]))
        .collect();
    let t = Instant::now();
    for _ in 0..rounds {
        for k in &bad {
            assert!(!verify(std::hint::black_box(k)));
        }
    }
    let bad_checksum_ns = t.elapsed().as_nanos() as f64 / (rounds * bad.len()) as f64;

    println!(
        "{}",
        serde_json::json!({
            "keys": n,
            "fill_seconds": fill_secs,
            "redb_file_bytes": file_bytes,
            "redb_bytes_per_key": file_bytes as f64 / n as f64,
            "startup_seconds": startup_secs,
            "rss_kib_before_load": rss_before,
            "rss_kib_after_load": rss_after,
            "rss_mib_of_index": (rss_after.saturating_sub(rss_before)) as f64 / 1024.0,
            "indexed_secrets": app.keyring.len(),
            "verify_known_ns": verify_ns,
            "verify_unknown_ns": unknown_ns,
            "verify_bad_checksum_ns": bad_checksum_ns,
        })
    );
    Ok(())
}
