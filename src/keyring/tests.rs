//! The keyring's index: lookups by hash, rotation grace, revocation, policy and account swaps.

use super::*;
use crate::store::{GraceRecord, LimitsRecord, RateRecord};

fn record(hash: u8) -> KeyRecord {
    KeyRecord {
        id: "key_0000000000000001".into(),
        account: "acme".into(),
        name: "k".into(),
        hash: [hash; 32],
        previous: None,
        key_prefix: "sk-kg-x".into(),
        scopes: 1,
        is_active: true,
        primary: true,
        created_at_ms: 0,
        expires_at_ms: None,
        revoked_at_ms: None,
        allowed_origins: vec![],
        allowed_ips: vec![],
        allowed_models: vec![],
        limits: LimitsRecord::default(),
        metadata: "{}".into(),
    }
}

#[test]
fn a_new_key_is_found_by_its_hash_only() {
    let ring = Keyring::new();
    ring.apply(None, &record(1)).unwrap();
    let found = ring.find(&KeyHash([1; 32]), 0).unwrap();
    assert_eq!(found.id(), "key_0000000000000001");
    assert_eq!(found.policy().account.name(), "acme");
    assert!(ring.find(&KeyHash([2; 32]), 0).is_none());
}

#[test]
fn a_rotated_key_accepts_the_old_secret_until_its_grace_ends() {
    let ring = Keyring::new();
    let old = record(1);
    ring.apply(None, &old).unwrap();
    let before = ring.find(&KeyHash([1; 32]), 0).unwrap();
    let mut new = record(2);
    new.previous = Some(GraceRecord {
        hash: [1; 32],
        until_ms: 1000,
    });
    ring.apply(Some(&old), &new).unwrap();
    let via_new = ring.find(&KeyHash([2; 32]), 999).unwrap();
    let via_old = ring.find(&KeyHash([1; 32]), 999).unwrap();
    assert!(Arc::ptr_eq(&via_new, &via_old) && Arc::ptr_eq(&via_new, &before));
    assert!(ring.find(&KeyHash([1; 32]), 1000).is_none());
    assert_eq!(ring.sweep_expired_grace(1000), 1);
    assert_eq!(ring.len(), 1);
}

#[test]
fn a_rotation_without_grace_drops_the_old_secret_at_once() {
    let ring = Keyring::new();
    let old = record(1);
    ring.apply(None, &old).unwrap();
    ring.apply(Some(&old), &record(2)).unwrap();
    assert!(ring.find(&KeyHash([1; 32]), 0).is_none());
    assert!(ring.find(&KeyHash([2; 32]), 0).is_some());
}

#[test]
fn a_revoked_key_is_gone_with_all_its_secrets() {
    let ring = Keyring::new();
    let mut old = record(2);
    old.previous = Some(GraceRecord {
        hash: [1; 32],
        until_ms: i64::MAX - 1,
    });
    ring.apply(None, &old).unwrap();
    let mut revoked = old.clone();
    revoked.revoked_at_ms = Some(5);
    ring.apply(Some(&old), &revoked).unwrap();
    assert!(ring.is_empty());
}

#[test]
fn a_policy_change_is_seen_by_the_same_state_object() {
    let ring = Keyring::new();
    let old = record(1);
    ring.apply(None, &old).unwrap();
    let state = ring.find(&KeyHash([1; 32]), 0).unwrap();
    let mut new = old.clone();
    new.is_active = false;
    new.allowed_ips = vec!["10.0.0.0/8".into()];
    ring.apply(Some(&old), &new).unwrap();
    let policy = state.policy();
    assert!(!policy.is_active);
    assert_eq!(policy.restrictions.as_ref().unwrap().ips.len(), 1);
}

#[test]
fn account_limits_are_shared_and_swapped() {
    let ring = Keyring::new();
    ring.apply(None, &record(1)).unwrap();
    let account = ring
        .find(&KeyHash([1; 32]), 0)
        .unwrap()
        .policy()
        .account
        .clone();
    assert!(account.limits().rate_limit.is_none());
    ring.apply_account(&AccountRecord {
        name: "acme".into(),
        created_at_ms: 0,
        max_active_keys: None,
        limits: LimitsRecord {
            rate_limit: Some(RateRecord {
                amount: 5,
                interval_ms: 1000,
            }),
            ..Default::default()
        },
    });
    assert_eq!(account.limits().rate_limit.unwrap().requests, 5);
    ring.remove_account("acme");
    assert!(account.limits().rate_limit.is_none());
}

#[test]
fn a_record_with_an_unreadable_policy_is_refused() {
    let ring = Keyring::new();
    let mut bad = record(1);
    bad.allowed_ips = vec!["not-a-net".into()];
    assert!(matches!(
        ring.apply(None, &bad),
        Err(IndexError::BadPolicy { .. })
    ));
    bad.allowed_ips.clear();
    bad.id = "short".into();
    assert!(matches!(ring.apply(None, &bad), Err(IndexError::BadId(_))));
}
