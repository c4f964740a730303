//! The in-memory key index the data plane verifies against: blake3 hash → key state.
//!
//! It is loaded from redb at startup and changed by the admin code right after each commit, so a
//! request never touches the disk and an admin change is in force before the API answers. Keys
//! are spread over [`SHARDS`] read-write-locked maps; a lookup takes one uncontended read lock.
//! The maps are keyed by the first 128 bits of the blake3 hash: half the memory of the whole
//! hash, and still 2^128 work to find another key that matches. A key's [`KeyState`] is shared
//! by all of its secrets (the current one and, after a rotation, the previous one, which sits in
//! a small separate map until its grace ends) and outlives policy changes: the policy inside is
//! swapped whole, while counters and buckets stay.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, RwLock};

use arc_swap::{ArcSwap, ArcSwapOption};
use ipnet::IpNet;

use crate::keys::KeyHash;
use crate::limits::Bucket;
use crate::policy::{Limits, OriginPattern};
use crate::scope::Scopes;
use crate::store::{AccountRecord, KeyRecord, KeyRecordRef};
use crate::usage::quota::QuotaCounters;

/// 64 shards: admin writes to one shard never stall lookups in the others, and the per-shard
/// maps stay small enough to grow without long pauses.
pub const SHARDS: usize = 64;

/// Limits for a key that sets none of its own.
const NO_LIMITS: Limits = Limits {
    rate_limit: None,
    token_limit: None,
    quota: None,
};

/// What a request is checked against. Built from a key record when the key changes; kept
/// small, since a million keys each hold one.
#[derive(Debug)]
pub struct KeyPolicy {
    pub account: Arc<AccountState>,
    pub scopes: Scopes,
    pub is_active: bool,
    /// Unix ms at which the key expires; `i64::MAX` when it never does.
    expires_at_ms: i64,
    /// Rarely set, so kept out of line.
    pub restrictions: Option<Box<Restrictions>>,
    /// The key's own limits, rarely set, so kept out of line.
    own_limits: Option<Box<Limits>>,
}

impl KeyPolicy {
    pub fn expires_at_ms(&self) -> Option<i64> {
        (self.expires_at_ms != i64::MAX).then_some(self.expires_at_ms)
    }

    /// The key's own limits; unset ones fall back to the config's `[limits]`.
    pub fn limits(&self) -> &Limits {
        self.own_limits.as_deref().unwrap_or(&NO_LIMITS)
    }
}

/// Per-key allow-lists; an empty list allows everything.
#[derive(Debug, Default)]
pub struct Restrictions {
    pub origins: Vec<OriginPattern>,
    pub ips: Vec<IpNet>,
    pub models: Vec<String>,
}

/// A key as the data plane knows it.
#[derive(Debug)]
pub struct KeyState {
    id: KeyId,
    policy: ArcSwap<KeyPolicy>,
    /// The key's own request bucket.
    pub requests: Bucket,
    /// The key's own token bucket.
    pub tokens: Bucket,
    /// Use in the current period of the key's quota, while it has one.
    pub quota: ArcSwapOption<QuotaCounters>,
}

impl KeyState {
    pub fn id(&self) -> &str {
        self.id.as_str()
    }

    /// The current policy; hold the `Arc` for the whole request.
    pub fn policy(&self) -> Arc<KeyPolicy> {
        self.policy.load_full()
    }
}

/// An account as the data plane knows it: shared by its keys.
#[derive(Debug)]
pub struct AccountState {
    name: Arc<str>,
    limits: ArcSwap<Limits>,
    /// The request bucket shared by the account's keys, used when the account sets a limit.
    pub requests: Bucket,
    /// The shared token bucket, likewise.
    pub tokens: Bucket,
    /// Use in the current period of the account's quota, while it has one.
    pub quota: ArcSwapOption<QuotaCounters>,
}

impl AccountState {
    fn new(name: &str, limits: Limits) -> AccountState {
        AccountState {
            name: Arc::from(name),
            limits: ArcSwap::from_pointee(limits),
            requests: Bucket::new(),
            tokens: Bucket::new(),
            quota: ArcSwapOption::empty(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn limits(&self) -> Arc<Limits> {
        self.limits.load_full()
    }
}

/// A key or an account, as the holder of quota counters.
pub enum QuotaHolder {
    Key(Arc<KeyState>),
    Account(Arc<AccountState>),
}

impl QuotaHolder {
    pub fn slot(&self) -> &ArcSwapOption<QuotaCounters> {
        match self {
            QuotaHolder::Key(k) => &k.quota,
            QuotaHolder::Account(a) => &a.quota,
        }
    }
}

/// A key id stored inline (ids are always `key_` + 16 base62 = 20 bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
struct KeyId([u8; 20]);

impl KeyId {
    fn new(id: &str) -> Option<KeyId> {
        id.as_bytes().try_into().ok().map(KeyId)
    }

    fn as_str(&self) -> &str {
        // Only built from a `&str` of exactly this length, so always valid UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("key_?")
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The map key of a secret: the first 128 bits of its blake3 hash.
type Short = u128;

fn short(hash: &[u8; 32]) -> Short {
    let mut first = [0u8; 16];
    first.copy_from_slice(&hash[..16]);
    u128::from_le_bytes(first)
}

/// blake3 output is uniformly random, so the low 64 bits of a [`Short`] are already a perfect
/// hash: no need to pay for SipHash on every request.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

type Shard = HashMap<Short, Arc<KeyState>, BuildHasherDefault<PassThrough>>;

/// Why a key record cannot be indexed (a stored value the current code cannot interpret).
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("key id {0:?} is malformed")]
    BadId(String),
    #[error("key {id}: {message}")]
    BadPolicy { id: String, message: String },
}

/// The index itself.
pub struct Keyring {
    shards: Box<[RwLock<Shard>]>,
    /// Rotated-out secrets in their grace period, with its end (Unix ms). Few at any time.
    grace: RwLock<HashMap<Short, (Arc<KeyState>, i64)>>,
    accounts: RwLock<HashMap<String, Arc<AccountState>>>,
}

impl Default for Keyring {
    fn default() -> Self {
        Keyring::new()
    }
}

impl Keyring {
    pub fn new() -> Keyring {
        Keyring {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            grace: RwLock::default(),
            accounts: RwLock::default(),
        }
    }

    /// Makes room for `n` keys in all, so loading them does not rehash.
    pub fn reserve(&self, n: usize) {
        for shard in self.shards.iter() {
            shard
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .reserve(n.div_ceil(SHARDS));
        }
    }

    fn shard(&self, key: Short) -> &RwLock<Shard> {
        // The top byte is independent of the low 64 bits the maps hash on.
        &self.shards[(key >> 120) as usize % SHARDS]
    }

    fn get(&self, key: Short) -> Option<Arc<KeyState>> {
        let shard = self.shard(key).read().unwrap_or_else(|e| e.into_inner());
        shard.get(&key).cloned()
    }

    /// The key a presented secret's hash belongs to, if that secret is accepted at `now_ms`.
    pub fn find(&self, hash: &KeyHash, now_ms: i64) -> Option<Arc<KeyState>> {
        let key = short(&hash.0);
        if let Some(state) = self.get(key) {
            return Some(state);
        }
        let grace = self.grace.read().unwrap_or_else(|e| e.into_inner());
        grace
            .get(&key)
            .filter(|(_, until)| *until > now_ms)
            .map(|(state, _)| Arc::clone(state))
    }

    /// Number of indexed secrets (current ones plus those in a grace period).
    pub fn len(&self) -> usize {
        let current: usize = self
            .shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()).len())
            .sum();
        current + self.grace.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shared state of an account, created with no limits if it is not known yet.
    pub fn account(&self, name: &str) -> Arc<AccountState> {
        if let Some(state) = self.read_accounts().get(name) {
            return Arc::clone(state);
        }
        let mut accounts = self.accounts.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            accounts
                .entry(name.to_owned())
                .or_insert_with(|| Arc::new(AccountState::new(name, Limits::default()))),
        )
    }

    fn read_accounts(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<AccountState>>> {
        self.accounts.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The state of a known account, if any.
    pub fn find_account(&self, name: &str) -> Option<Arc<AccountState>> {
        self.read_accounts().get(name).cloned()
    }

    /// The state of a key, found by its current secret.
    pub fn find_key(&self, record: &KeyRecord) -> Option<Arc<KeyState>> {
        self.find_current(&record.hash)
    }

    /// The state of the key whose current secret has this hash.
    pub fn find_current(&self, hash: &[u8; 32]) -> Option<Arc<KeyState>> {
        self.get(short(hash))
    }

    pub fn account_count(&self) -> usize {
        self.read_accounts().len()
    }

    /// Puts an account's current limits in force.
    pub fn apply_account(&self, record: &AccountRecord) {
        self.account(&record.name)
            .limits
            .store(Arc::new(Limits::from_record(&record.limits)));
    }

    /// Forgets an account's limits (it was deleted); its keys keep their state object.
    pub fn remove_account(&self, name: &str) {
        if let Some(state) = self.read_accounts().get(name) {
            state.limits.store(Arc::new(Limits::default()));
        }
    }

    /// Adds a key read from the store at startup (the index is being filled: no key in it can
    /// be this one). Revoked keys are skipped.
    pub fn load(&self, record: &KeyRecordRef<'_>) -> Result<(), IndexError> {
        if record.revoked_at_ms.is_some() {
            return Ok(());
        }
        let state = Arc::new(KeyState {
            id: KeyId::new(record.id).ok_or_else(|| IndexError::BadId(record.id.to_owned()))?,
            policy: ArcSwap::from_pointee(self.policy_for(record)?),
            requests: Bucket::new(),
            tokens: Bucket::new(),
            quota: ArcSwapOption::empty(),
        });
        self.put(record, state);
        Ok(())
    }

    /// Indexes `state` under the record's secrets: the current one, and the previous one while
    /// its grace lasts.
    fn put(&self, record: &KeyRecordRef<'_>, state: Arc<KeyState>) {
        let key = short(&record.hash);
        if let Some(prev) = record.previous {
            self.grace
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(short(&prev.hash), (Arc::clone(&state), prev.until_ms));
        }
        self.shard(key)
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, state);
    }

    /// Makes the index match `new`, the key as just committed. `old` is the record it replaced.
    /// New secrets are indexed before old ones are removed, so a rotation never has a gap.
    pub fn apply(&self, old: Option<&KeyRecord>, new: &KeyRecord) -> Result<(), IndexError> {
        let new = new.as_ref();
        let policy = self.policy_for(&new)?;
        let secrets = |r: &KeyRecordRef<'_>| [Some(r.hash), r.previous.map(|p| p.hash)];
        let old = old.map(KeyRecord::as_ref);
        let existing = old
            .iter()
            .chain([&new])
            .flat_map(secrets)
            .flatten()
            .find_map(|h| self.get(short(&h)).or_else(|| self.grace_get(short(&h))));
        let state = match existing {
            Some(state) => {
                state.policy.store(Arc::new(policy));
                state
            }
            None => Arc::new(KeyState {
                id: KeyId::new(new.id).ok_or_else(|| IndexError::BadId(new.id.to_owned()))?,
                policy: ArcSwap::from_pointee(policy),
                requests: Bucket::new(),
                tokens: Bucket::new(),
                quota: ArcSwapOption::empty(),
            }),
        };
        let live = new.revoked_at_ms.is_none();
        if live {
            self.put(&new, Arc::clone(&state));
        }
        let keep: Vec<Short> = if live {
            secrets(&new)
                .into_iter()
                .flatten()
                .map(|h| short(&h))
                .collect()
        } else {
            Vec::new()
        };
        for stale in old
            .iter()
            .chain([&new])
            .flat_map(secrets)
            .flatten()
            .map(|h| short(&h))
            .filter(|k| !keep.contains(k))
        {
            self.shard(stale)
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&stale);
            self.grace
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&stale);
        }
        // A secret that was current and is now the previous one moved to the grace map.
        if let Some(prev) = new.previous.filter(|_| live) {
            let moved = short(&prev.hash);
            self.shard(moved)
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&moved);
        }
        Ok(())
    }

    fn grace_get(&self, key: Short) -> Option<Arc<KeyState>> {
        let grace = self.grace.read().unwrap_or_else(|e| e.into_inner());
        grace.get(&key).map(|(state, _)| Arc::clone(state))
    }

    /// Removes rotated-out secrets whose grace ended before `now_ms`; returns how many.
    pub fn sweep_expired_grace(&self, now_ms: i64) -> usize {
        let mut grace = self.grace.write().unwrap_or_else(|e| e.into_inner());
        let before = grace.len();
        grace.retain(|_, (_, until)| *until > now_ms);
        before - grace.len()
    }

    fn policy_for(&self, record: &KeyRecordRef<'_>) -> Result<KeyPolicy, IndexError> {
        let bad = |message: String| IndexError::BadPolicy {
            id: record.id.to_owned(),
            message,
        };
        let restrictions = if record.allowed_origins.is_empty()
            && record.allowed_ips.is_empty()
            && record.allowed_models.is_empty()
        {
            None
        } else {
            Some(Box::new(Restrictions {
                origins: record
                    .allowed_origins
                    .iter()
                    .map(|o| OriginPattern::parse(o))
                    .collect::<Result<_, _>>()
                    .map_err(bad)?,
                ips: record
                    .allowed_ips
                    .iter()
                    .map(|n| crate::policy::parse_net(n))
                    .collect::<Result<_, _>>()
                    .map_err(bad)?,
                models: record
                    .allowed_models
                    .iter()
                    .map(|m| (*m).to_owned())
                    .collect(),
            }))
        };
        let limits = Limits::from_record(&record.limits);
        Ok(KeyPolicy {
            account: self.account(record.account),
            scopes: Scopes::from_bits(record.scopes),
            is_active: record.is_active,
            expires_at_ms: record.expires_at_ms.unwrap_or(i64::MAX),
            restrictions,
            own_limits: (!limits.is_empty()).then(|| Box::new(limits)),
        })
    }
}

#[cfg(test)]
mod tests;
