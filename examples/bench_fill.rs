//! Fills a keygate state dir with N keys for the benchmark harness (`bench/run.sh`), the way
//! `examples/million_keys.rs` does: records written straight into the store in large
//! transactions, as the admin API would write them one by one.
//!
//! One of the N keys is the benchmark's own: account `bench`, scopes `chat` and `read`, and a
//! rate limit of 100,000,000 requests a second, which no benchmark reaches. Its secret is the
//! last line of stdout. The others belong to 10,000 accounts and keep the default limits.
//!
//! ```sh
//! cargo run --release --example bench_fill -- /tmp/state-1m 1000000
//! ```

use std::path::PathBuf;
use std::time::Instant;

use keygate::keys;
use keygate::store::{KeyRecord, LimitsRecord, RateRecord, Store};

/// Keys written per transaction: large commits are what make a million keys take seconds.
const BATCH: usize = 20_000;
/// A time in 2023, so that key ids sort before any a real server would make.
const CREATED_MS: i64 = 1_700_000_000_000;

fn record(
    j: usize,
    new: keys::NewKey,
    account: String,
    limits: LimitsRecord,
) -> anyhow::Result<KeyRecord> {
    Ok(KeyRecord {
        id: keys::new_id(CREATED_MS + j as i64)?,
        account,
        name: format!("bench key {j}"),
        hash: new.hash.0,
        previous: None,
        key_prefix: new.display,
        // chat | read, the default scopes.
        scopes: 3,
        is_active: true,
        primary: j < 10_000,
        created_at_ms: CREATED_MS + j as i64,
        expires_at_ms: None,
        revoked_at_ms: None,
        allowed_origins: Vec::new(),
        allowed_ips: Vec::new(),
        allowed_models: Vec::new(),
        limits,
        metadata: "{}".into(),
    })
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(n)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: bench_fill STATE_DIR N");
    };
    let dir = PathBuf::from(dir);
    let n: usize = n.parse()?;
    anyhow::ensure!(n >= 1, "N must be at least 1");
    anyhow::ensure!(
        !dir.join("keygate.redb").exists(),
        "{} already holds a store",
        dir.display()
    );
    let started = Instant::now();
    let store = Store::open(&dir)?;
    let bench_key = keys::generate("sk-kg-")?;
    let secret = bench_key.secret.expose().to_owned();
    let unlimited = LimitsRecord {
        rate_limit: Some(RateRecord {
            amount: 100_000_000,
            interval_ms: 1_000,
        }),
        ..LimitsRecord::default()
    };
    let mut pending = Some(record(0, bench_key, "bench".into(), unlimited)?);
    let mut i = 1;
    while i < n || pending.is_some() {
        let end = (i + BATCH).min(n);
        let mut records: Vec<KeyRecord> = pending.take().into_iter().collect();
        for j in i..end {
            let account = format!("acct-{}", j % 10_000);
            records.push(record(
                j,
                keys::generate("sk-kg-")?,
                account,
                LimitsRecord::default(),
            )?);
        }
        store.write(|tx| {
            for r in &records {
                tx.put_key(r, None)?;
            }
            Ok::<_, keygate::store::StoreError>(())
        })?;
        i = end;
    }
    drop(store);
    eprintln!(
        "bench_fill: {n} keys in {} in {:.1} s",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    println!("{secret}");
    Ok(())
}
