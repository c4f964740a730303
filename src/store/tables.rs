//! Table definitions and the typed read/write transactions over them.
//!
//! The tables:
//! - `keys`: key id → [`KeyRecord`]. Ids begin with their creation time, so id order is age order.
//! - `key_hashes`: blake3 hash → key id, for the current secret and any secret in its grace period.
//! - `account_keys`: (account, key id) → (), to list and count an account's keys.
//! - `accounts`: name → [`AccountRecord`].
//! - `audit`: sequence number → [`AuditRecord`], append-only.
//! - `meta`: schema facts such as the layout version.
//!
//! Usage counters get their own tables from the metering code (`crate::usage`).
//! Table handles are opened per operation and dropped before commit, as redb requires.

use std::sync::atomic::{AtomicBool, Ordering};

use redb::{
    ReadOnlyTable, ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};

use super::StoreError;
use super::records::{AccountRecord, Actor, AuditRecord, KeyRecord, KeyRecordRef, Record};

pub(crate) const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
pub(crate) const KEY_HASHES: TableDefinition<[u8; 32], &str> = TableDefinition::new("key_hashes");
pub(crate) const ACCOUNT_KEYS: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("account_keys");
pub(crate) const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
pub(crate) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Bumped when the set of tables or their key layout changes (record versions are separate).
const LAYOUT_VERSION: u8 = 1;

/// One page of a key listing.
#[derive(Debug, Clone, Default)]
pub struct KeyPage {
    pub keys: Vec<KeyRecord>,
}

/// Which keys a listing returns.
#[derive(Debug, Clone, Copy)]
pub struct KeyFilter<'a> {
    pub account: Option<&'a str>,
    /// Also return revoked, disabled and expired keys.
    pub include_inactive: bool,
    /// Only keys older than this id (a cursor from the previous page).
    pub before: Option<&'a str>,
    pub limit: usize,
    /// The time against which expiry is judged.
    pub now_ms: i64,
}

/// A read-only snapshot.
pub struct ReadTx {
    txn: ReadTransaction,
}

/// A write transaction; see [`super::Store::write`].
pub struct WriteTx {
    txn: WriteTransaction,
}

/// Up to `parts - 1` ids splitting the time between the oldest and the newest key in `keys`
/// evenly; none when there is nothing to split.
fn split_by_time(
    keys: &ReadOnlyTable<&'static str, &'static [u8]>,
    parts: usize,
) -> Result<Vec<String>, StoreError> {
    let (Some(first), Some(last)) = (keys.first()?, keys.last()?) else {
        return Ok(Vec::new());
    };
    let (Some(t0), Some(t1)) = (
        crate::keys::id_created_ms(first.0.value()),
        crate::keys::id_created_ms(last.0.value()),
    ) else {
        return Ok(Vec::new());
    };
    let span = i128::from(t1) - i128::from(t0);
    let parts = parts.max(1) as i128;
    let mut bounds: Vec<String> = (1..parts)
        .map(|i| {
            let at = i128::from(t0) + span * i / parts;
            crate::keys::first_id_at(i64::try_from(at).unwrap_or(i64::MAX))
        })
        .collect();
    bounds.dedup();
    Ok(bounds)
}

/// Calls `f` with each key whose id is in `from..to` (unbounded where `None`), until `stop`.
fn each_key_in<E: From<StoreError>>(
    keys: &ReadOnlyTable<&'static str, &'static [u8]>,
    from: Option<&str>,
    to: Option<&str>,
    stop: &AtomicBool,
    f: &(impl Fn(KeyRecordRef<'_>) -> Result<(), E> + Sync),
) -> Result<(), E> {
    use std::ops::Bound;
    let range = (
        from.map_or(Bound::Unbounded, Bound::Included),
        to.map_or(Bound::Unbounded, Bound::Excluded),
    );
    for entry in keys.range::<&str>(range).map_err(StoreError::from)? {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let (_, value) = entry.map_err(StoreError::from)?;
        f(KeyRecordRef::decode(value.value()).map_err(StoreError::from)?)?;
    }
    Ok(())
}

impl ReadTx {
    pub(super) fn new(txn: ReadTransaction) -> Self {
        ReadTx { txn }
    }

    /// The underlying redb transaction, for modules that own further tables (usage).
    pub fn raw(&self) -> &ReadTransaction {
        &self.txn
    }

    fn keys(&self) -> Result<ReadOnlyTable<&'static str, &'static [u8]>, StoreError> {
        Ok(self.txn.open_table(KEYS)?)
    }

    pub fn key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        get_record(&self.keys()?, id)
    }

    pub fn key_id_by_hash(&self, hash: &[u8; 32]) -> Result<Option<String>, StoreError> {
        let table = self.txn.open_table(KEY_HASHES)?;
        Ok(table.get(hash)?.map(|v| v.value().to_owned()))
    }

    /// Keys newest first, as `filter` says.
    pub fn list_keys(&self, filter: KeyFilter<'_>) -> Result<KeyPage, StoreError> {
        let keys = self.keys()?;
        let index = self.txn.open_table(ACCOUNT_KEYS)?;
        list_keys(&keys, &index, filter)
    }

    /// Calls `f` with every key, oldest first.
    pub fn for_each_key<E: From<StoreError>>(
        &self,
        mut f: impl FnMut(KeyRecord) -> Result<(), E>,
    ) -> Result<(), E> {
        for entry in self.keys()?.iter().map_err(StoreError::from)? {
            let (_, value) = entry.map_err(StoreError::from)?;
            f(KeyRecord::decode(value.value()).map_err(StoreError::from)?)?;
        }
        Ok(())
    }

    /// Calls `f` with every key borrowed in place, in no particular order, from `threads`
    /// threads over disjoint ranges of ids: startup's fast path. From a store that is not in
    /// the page cache, reading is one random read per page, and the threads' reads overlap;
    /// from one that is, the work is decoding and indexing, which the threads share. Ids begin
    /// with their creation time, so the ranges split the time between the oldest key and the
    /// newest evenly: as many keys each when keys were made at an even pace, at worst all of
    /// them in one range (as fast as one thread).
    pub fn par_for_each_key_ref<E: From<StoreError> + Send>(
        &self,
        threads: usize,
        f: impl Fn(KeyRecordRef<'_>) -> Result<(), E> + Sync,
    ) -> Result<(), E> {
        let keys = self.keys()?;
        let bounds = split_by_time(&keys, threads)?;
        // Set when a range fails or panics (redb may, on a damaged file): the others stop
        // early, and that failure is what comes out.
        let stop = AtomicBool::new(false);
        let (keys, bounds, f, stop) = (&keys, &bounds, &f, &stop);
        let part = move |i: usize| {
            let from = i.checked_sub(1).map(|j| bounds[j].as_str());
            let to = bounds.get(i).map(String::as_str);
            let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                each_key_in(keys, from, to, stop, f)
            }));
            if !matches!(done, Ok(Ok(()))) {
                stop.store(true, Ordering::Relaxed);
            }
            done.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        };
        std::thread::scope(|scope| {
            let mut running = Vec::new();
            for i in 0..=bounds.len() {
                let thread = std::thread::Builder::new().name("keygate-load".into());
                match thread.spawn_scoped(scope, move || part(i)) {
                    Ok(t) => running.push(t),
                    // No thread to be had (a limit on processes): this one reads the range.
                    Err(_) => part(i)?,
                }
            }
            running
                .into_iter()
                .try_for_each(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        })
    }

    pub fn key_count(&self) -> Result<u64, StoreError> {
        Ok(self.keys()?.len()?)
    }

    pub fn account(&self, name: &str) -> Result<Option<AccountRecord>, StoreError> {
        get_record(&self.txn.open_table(ACCOUNTS)?, name)
    }

    /// Every account, by name.
    pub fn accounts(&self) -> Result<Vec<AccountRecord>, StoreError> {
        let table = self.txn.open_table(ACCOUNTS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            out.push(AccountRecord::decode(entry?.1.value())?);
        }
        Ok(out)
    }

    /// The keys of one account, oldest first.
    pub fn account_keys(&self, account: &str) -> Result<Vec<KeyRecord>, StoreError> {
        account_keys(&self.keys()?, &self.txn.open_table(ACCOUNT_KEYS)?, account)
    }

    /// Audit entries newest first; `before` is a sequence number cursor.
    pub fn audit(&self, limit: usize, before: Option<u64>) -> Result<Vec<AuditRecord>, StoreError> {
        let table = self.txn.open_table(AUDIT)?;
        let mut out = Vec::new();
        for entry in table.range(..before.unwrap_or(u64::MAX))?.rev().take(limit) {
            out.push(AuditRecord::decode(entry?.1.value())?);
        }
        Ok(out)
    }
}

impl WriteTx {
    pub(super) fn new(txn: WriteTransaction) -> Self {
        WriteTx { txn }
    }

    pub(super) fn commit(self) -> Result<(), StoreError> {
        Ok(self.txn.commit()?)
    }

    /// Creates every table so that read transactions never meet a missing one, and checks the
    /// layout version of an existing file.
    pub(super) fn create_tables(&mut self) -> Result<(), StoreError> {
        self.txn.open_table(KEYS)?;
        self.txn.open_table(KEY_HASHES)?;
        self.txn.open_table(ACCOUNT_KEYS)?;
        self.txn.open_table(ACCOUNTS)?;
        self.txn.open_table(AUDIT)?;
        let mut meta = self.txn.open_table(META)?;
        let stored = meta.get("layout")?.map(|v| v.value().to_vec());
        match stored.as_deref() {
            None => {
                meta.insert("layout", [LAYOUT_VERSION].as_slice())?;
            }
            Some([LAYOUT_VERSION]) => {}
            Some(other) => {
                return Err(super::CodecError::UnknownVersion {
                    what: "table layout",
                    version: other.first().copied().unwrap_or(0),
                }
                .into());
            }
        }
        Ok(())
    }

    /// The underlying redb transaction, for modules that own further tables (usage).
    pub fn raw(&mut self) -> &mut WriteTransaction {
        &mut self.txn
    }

    pub fn key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        get_record(&self.txn.open_table(KEYS)?, id)
    }

    pub fn account(&self, name: &str) -> Result<Option<AccountRecord>, StoreError> {
        get_record(&self.txn.open_table(ACCOUNTS)?, name)
    }

    /// The keys of one account, oldest first.
    pub fn account_keys(&self, account: &str) -> Result<Vec<KeyRecord>, StoreError> {
        account_keys(
            &self.txn.open_table(KEYS)?,
            &self.txn.open_table(ACCOUNT_KEYS)?,
            account,
        )
    }

    /// Writes a key and keeps the hash and account indexes in step with it. `old` is the record
    /// being replaced, if any: its hashes and account entry are dropped when they changed.
    pub fn put_key(&mut self, key: &KeyRecord, old: Option<&KeyRecord>) -> Result<(), StoreError> {
        let mut hashes = self.txn.open_table(KEY_HASHES)?;
        if let Some(old) = old {
            for hash in indexed_hashes(old) {
                hashes.remove(hash)?;
            }
        }
        for hash in indexed_hashes(key) {
            hashes.insert(hash, key.id.as_str())?;
        }
        drop(hashes);
        let mut by_account = self.txn.open_table(ACCOUNT_KEYS)?;
        if let Some(old) = old.filter(|old| old.account != key.account) {
            by_account.remove((old.account.as_str(), old.id.as_str()))?;
        }
        by_account.insert((key.account.as_str(), key.id.as_str()), ())?;
        drop(by_account);
        self.txn
            .open_table(KEYS)?
            .insert(key.id.as_str(), key.encode().as_slice())?;
        Ok(())
    }

    pub fn put_account(&mut self, account: &AccountRecord) -> Result<(), StoreError> {
        self.txn
            .open_table(ACCOUNTS)?
            .insert(account.name.as_str(), account.encode().as_slice())?;
        Ok(())
    }

    /// Removes an account record. Its keys stay (revoked ones keep their history).
    pub fn delete_account(&mut self, name: &str) -> Result<bool, StoreError> {
        Ok(self.txn.open_table(ACCOUNTS)?.remove(name)?.is_some())
    }

    /// Appends an audit entry and returns its sequence number.
    pub fn audit(
        &mut self,
        at_ms: i64,
        actor: Actor,
        action: &str,
        target: Option<&str>,
        details: serde_json::Value,
    ) -> Result<u64, StoreError> {
        let mut table = self.txn.open_table(AUDIT)?;
        let seq = table.last()?.map_or(1, |(k, _)| k.value() + 1);
        let record = AuditRecord {
            seq,
            at_ms,
            actor,
            action: action.to_owned(),
            target: target.map(str::to_owned),
            details: details.to_string(),
        };
        table.insert(seq, record.encode().as_slice())?;
        Ok(seq)
    }
}

/// The hashes under which a key is found: none once revoked; the previous one during its grace.
fn indexed_hashes(key: &KeyRecord) -> impl Iterator<Item = [u8; 32]> + '_ {
    let live = key.revoked_at_ms.is_none();
    std::iter::once(key.hash)
        .chain(key.previous.map(|p| p.hash))
        .filter(move |_| live)
}

fn get_record<R: Record>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<R>, StoreError> {
    match table.get(id)? {
        Some(value) => Ok(Some(R::decode(value.value())?)),
        None => Ok(None),
    }
}

fn account_keys(
    keys: &impl ReadableTable<&'static str, &'static [u8]>,
    index: &impl ReadableTable<(&'static str, &'static str), ()>,
    account: &str,
) -> Result<Vec<KeyRecord>, StoreError> {
    let mut out = Vec::new();
    for entry in index.range((account, "")..)? {
        let (k, _) = entry?;
        let (acct, id) = k.value();
        if acct != account {
            break;
        }
        if let Some(key) = get_record(keys, id)? {
            out.push(key);
        }
    }
    Ok(out)
}

fn list_keys(
    keys: &impl ReadableTable<&'static str, &'static [u8]>,
    index: &impl ReadableTable<(&'static str, &'static str), ()>,
    filter: KeyFilter<'_>,
) -> Result<KeyPage, StoreError> {
    let wanted = |key: &KeyRecord| filter.include_inactive || key.counts_as_active(filter.now_ms);
    let mut page = KeyPage::default();
    match filter.account {
        Some(account) => {
            let end = (account, filter.before.unwrap_or("\u{10FFFF}"));
            for entry in index.range((account, "")..end)?.rev() {
                if page.keys.len() == filter.limit {
                    break;
                }
                let (k, _) = entry?;
                if let Some(key) = get_record::<KeyRecord>(keys, k.value().1)?.filter(wanted) {
                    page.keys.push(key);
                }
            }
        }
        None => {
            let range = match filter.before {
                Some(before) => keys.range(..before)?,
                None => keys.range::<&str>(..)?,
            };
            for entry in range.rev() {
                if page.keys.len() == filter.limit {
                    break;
                }
                let key = KeyRecord::decode(entry?.1.value())?;
                if wanted(&key) {
                    page.keys.push(key);
                }
            }
        }
    }
    Ok(page)
}
