//! Model-based test: random sequences of writes, revocations, account changes and reopens
//! applied both to the store and to plain `BTreeMap`s must leave them agreeing, including the
//! hash and account indexes and the audit log.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    /// Create or overwrite key `n` (of a small id space) with these fields.
    PutKey {
        n: u8,
        account: u8,
        hash: u8,
        grace: Option<u8>,
        active: bool,
    },
    Revoke {
        n: u8,
    },
    PutAccount {
        account: u8,
        max: Option<u8>,
    },
    DeleteAccount {
        account: u8,
    },
    /// Close and reopen the database file.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..12, 0u8..3, any::<u8>(), proptest::option::of(any::<u8>()), any::<bool>())
            .prop_map(|(n, account, hash, grace, active)| Op::PutKey { n, account, hash, grace, active }),
        1 => (0u8..12).prop_map(|n| Op::Revoke { n }),
        1 => (0u8..3, proptest::option::of(1u8..5)).prop_map(|(account, max)| Op::PutAccount { account, max }),
        1 => (0u8..3).prop_map(|account| Op::DeleteAccount { account }),
        1 => Just(Op::Reopen),
    ]
}

/// Key `n`'s id; like real ids, it begins with a creation time (`n` ms).
fn id(n: u8) -> String {
    format!("key_{n:08}{n:08}")
}

fn hash(seed: u8, n: u8) -> [u8; 32] {
    let mut h = [seed; 32];
    h[0] = n;
    h
}

fn key(n: u8, account: u8, seed: u8, grace: Option<u8>, active: bool) -> KeyRecord {
    KeyRecord {
        id: id(n),
        account: format!("acct{account}"),
        name: format!("key {n}"),
        hash: hash(seed, n),
        previous: grace.map(|g| GraceRecord {
            hash: hash(g, n.wrapping_add(100)),
            until_ms: 5,
        }),
        key_prefix: "sk-kg-000000000000".into(),
        scopes: 3,
        is_active: active,
        primary: false,
        created_at_ms: i64::from(n),
        expires_at_ms: None,
        revoked_at_ms: None,
        allowed_origins: vec![],
        allowed_ips: vec!["10.0.0.0/8".into()],
        allowed_models: vec![],
        limits: LimitsRecord::default(),
        metadata: "{}".into(),
    }
}

const ACTOR: Actor = Actor {
    uid: 1,
    gid: 1,
    pid: Some(1),
};

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_store_agrees_with_a_map_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Some(Store::open(dir.path()).unwrap());
        let mut keys: BTreeMap<String, KeyRecord> = BTreeMap::new();
        let mut accounts: BTreeMap<String, AccountRecord> = BTreeMap::new();
        let mut audits = 0u64;

        for op in ops {
            let s = store.as_ref().unwrap();
            match op {
                Op::PutKey { n, account, hash, grace, active } => {
                    let record = key(n, account, hash, grace, active);
                    // A hash another key already holds would be a collision of 256-bit hashes;
                    // the model skips such writes as the real code never makes them.
                    let taken = keys.values().any(|k| k.id != record.id && k.revoked_at_ms.is_none()
                        && [Some(k.hash), k.previous.map(|p| p.hash)].contains(&Some(record.hash)));
                    let prev_taken = record.previous.is_some_and(|p| p.hash == record.hash || keys.values().any(|k| k.id != record.id
                        && k.revoked_at_ms.is_none()
                        && [Some(k.hash), k.previous.map(|q| q.hash)].contains(&Some(p.hash))));
                    if taken || prev_taken { continue; }
                    let old = keys.get(&record.id).cloned();
                    s.write(|tx| {
                        tx.put_key(&record, old.as_ref())?;
                        tx.audit(1, ACTOR, "key.put", Some(&record.id), serde_json::json!({}))
                    }).unwrap();
                    keys.insert(record.id.clone(), record);
                    audits += 1;
                }
                Op::Revoke { n } => {
                    let Some(old) = keys.get(&id(n)).cloned() else { continue };
                    let mut new = old.clone();
                    new.revoked_at_ms = Some(9);
                    s.write(|tx| tx.put_key(&new, Some(&old))).unwrap();
                    keys.insert(new.id.clone(), new);
                }
                Op::PutAccount { account, max } => {
                    let record = AccountRecord {
                        name: format!("acct{account}"),
                        created_at_ms: 1,
                        max_active_keys: max.map(u32::from),
                        limits: LimitsRecord::default(),
                    };
                    s.write(|tx| tx.put_account(&record)).unwrap();
                    accounts.insert(record.name.clone(), record);
                }
                Op::DeleteAccount { account } => {
                    let name = format!("acct{account}");
                    let existed = s.write(|tx| tx.delete_account(&name)).unwrap();
                    prop_assert_eq!(existed, accounts.remove(&name).is_some());
                }
                Op::Reopen => {
                    // As startup does; it only reads (the checks below run on what follows).
                    store.as_ref().unwrap().preload(u64::MAX);
                    drop(store.take());
                    store = Some(Store::open(dir.path()).unwrap());
                }
            }
        }

        let s = store.as_ref().unwrap();
        s.read(|tx| {
            // Every key, in id order.
            let mut stored = Vec::new();
            tx.for_each_key(|k| { stored.push(k); Ok::<_, StoreError>(()) })?;
            assert_eq!(stored, keys.values().cloned().collect::<Vec<_>>());
            // Startup's scan, split by creation time over threads, visits each once.
            for threads in [1, 3, 8] {
                let seen = std::sync::Mutex::new(Vec::new());
                tx.par_for_each_key_ref(threads, |k| {
                    seen.lock().unwrap().push(k.id.to_owned());
                    Ok::<_, StoreError>(())
                })?;
                let mut seen = seen.into_inner().unwrap();
                seen.sort();
                assert_eq!(seen, keys.keys().cloned().collect::<Vec<_>>(), "{} threads", threads);
            }
            // The hash index holds exactly the hashes of unrevoked keys.
            for k in keys.values() {
                let expect = k.revoked_at_ms.is_none().then(|| k.id.clone());
                assert_eq!(tx.key_id_by_hash(&k.hash)?, expect);
                if let Some(p) = k.previous {
                    assert_eq!(tx.key_id_by_hash(&p.hash)?, k.revoked_at_ms.is_none().then(|| k.id.clone()));
                }
            }
            // The account index lists each key under its current account only.
            for a in 0..3u8 {
                let name = format!("acct{a}");
                let ids: BTreeSet<String> = tx.account_keys(&name)?.into_iter().map(|k| k.id).collect();
                let expect: BTreeSet<String> = keys.values().filter(|k| k.account == name).map(|k| k.id.clone()).collect();
                assert_eq!(ids, expect, "{}", name);
            }
            assert_eq!(tx.accounts()?, accounts.values().cloned().collect::<Vec<_>>());
            assert_eq!(tx.audit(1000, None)?.len() as u64, audits);
            // Listing newest first with a cursor walks every live key exactly once.
            let mut seen = Vec::new();
            let mut before: Option<String> = None;
            loop {
                let page = tx.list_keys(KeyFilter { account: None, include_inactive: false,
                    before: before.as_deref(), limit: 3, now_ms: 0 })?;
                if page.keys.is_empty() { break; }
                before = page.keys.last().map(|k| k.id.clone());
                seen.extend(page.keys.into_iter().map(|k| k.id));
            }
            let expect: Vec<String> = keys.values().rev().filter(|k| k.is_live()).map(|k| k.id.clone()).collect();
            assert_eq!(seen, expect);
            Ok::<_, StoreError>(())
        }).unwrap();
    }
}

#[test]
fn a_second_open_of_the_same_state_dir_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::InUse { .. }), "{err}");
    assert!(err.to_string().contains("another keygate process"), "{err}");
}

#[test]
fn the_state_dir_is_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("a/b");
    let _store = Store::open(&state).unwrap();
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert!(state.join("keygate.redb").is_file());
}

#[test]
fn the_parallel_key_scan_stops_with_the_error_or_panic_of_one_range() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .write(|tx| {
            for n in 0..200u8 {
                tx.put_key(&key(n, 0, n, None, true), None)?;
            }
            Ok::<_, StoreError>(())
        })
        .unwrap();
    let bad = id(150);
    store
        .read(|tx| {
            let failed = tx.par_for_each_key_ref(8, |k| match k.id == bad {
                true => Err(StoreError::Task(format!("cannot load {}", k.id))),
                false => Ok(()),
            });
            assert!(
                matches!(&failed, Err(StoreError::Task(m)) if m.contains(&bad)),
                "{failed:?}"
            );
            let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                tx.par_for_each_key_ref(8, |k| {
                    assert_ne!(k.id, bad, "a record that makes the loader panic");
                    Ok::<_, StoreError>(())
                })
            }));
            assert!(panicked.is_err(), "the panic reaches the caller");
            Ok::<_, StoreError>(())
        })
        .unwrap();
}
