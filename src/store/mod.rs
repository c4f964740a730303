//! The redb store: one file, `state_dir/keygate.redb`, holding keys, accounts, the audit log and
//! usage counters.
//!
//! All access goes through [`Store::read`] and [`Store::write`], which hand a closure a typed
//! transaction (`tables`). Every write commits with immediate durability before it returns, so an
//! admin change is on disk when the API answers. redb takes one writer at a time and blocks, so
//! callers on the async runtime run these inside `spawn_blocking`. A second process opening the
//! same file is refused by redb's file lock, reported as [`StoreError::InUse`].

mod records;
mod tables;

use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase};

pub use records::{
    AccountRecord, Actor, AuditRecord, CodecError, GraceRecord, KeyRecord, KeyRecordRef,
    LimitsRecord, QuotaRecord, RateRecord, Record,
};
pub use tables::{KeyFilter, KeyPage, ReadTx, WriteTx};

/// redb's page cache. The hot path never reads redb (keys live in memory), so the cache only
/// serves admin reads and startup; 64 MiB keeps RSS low with a million keys.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Errors of the store. None of them carries a secret: records hold only hashes.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "{path} is already open in another keygate process (one state_dir serves one process; stop the other or use another state_dir)"
    )]
    InUse { path: PathBuf },
    #[error("cannot create state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error("database error: {0}")]
    Db(#[from] redb::Error),
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The blocking task running a transaction panicked or was cancelled.
    #[error("storage task failed: {0}")]
    Task(String),
}

macro_rules! impl_from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
            }
        }
    )*};
}
impl_from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The open database.
pub struct Store {
    path: PathBuf,
    db: Database,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) `state_dir/keygate.redb`, creating `state_dir` with mode 0700 if
    /// needed, and makes sure every table exists.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        create_private_dir(state_dir).map_err(|source| StoreError::StateDir {
            path: state_dir.to_owned(),
            source,
        })?;
        let path = state_dir.join("keygate.redb");
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|source| match source {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    StoreError::InUse { path: path.clone() }
                }
                source => StoreError::Open {
                    path: path.clone(),
                    source,
                },
            })?;
        let store = Store { path, db };
        store.write(|tx| tx.create_tables())?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in a read transaction: a consistent snapshot of the last commit.
    pub fn read<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&ReadTx) -> Result<T, E>,
    ) -> Result<T, E> {
        let txn = self.db.begin_read().map_err(StoreError::from)?;
        f(&ReadTx::new(txn))
    }

    /// Runs `f` in a write transaction and commits it durably. If `f` fails nothing is written.
    pub fn write<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut WriteTx) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut txn = self.db.begin_write().map_err(StoreError::from)?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| StoreError::Db(e.into()))?;
        let mut tx = WriteTx::new(txn);
        let value = f(&mut tx)?;
        tx.commit()?;
        Ok(value)
    }
}

/// Creates `dir` (and parents) if missing; a directory keygate creates is private to its user.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod model_test;
