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

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use redb::{Database, Durability, ReadableDatabase};

pub use records::{
    AccountRecord, Actor, AuditRecord, CodecError, GraceRecord, KeyRecord, KeyRecordRef,
    LimitsRecord, QuotaRecord, RateRecord, Record,
};
pub use tables::{KeyFilter, KeyPage, ReadTx, WriteTx};

/// redb's page cache. The hot path never reads redb (keys live in memory), so the cache only
/// serves admin reads, usage flushes and startup's scan, which the OS page cache serves as
/// well. 16 MiB keeps RSS low with a million keys (64 MiB cost 48 MB more there, and
/// startup was no faster beyond noise).
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Bytes of the file a key's record takes in the `keys` table, roughly: a million keys made by
/// `bench_fill` spanned 155 MB of pages.
const KEY_PAGE_BYTES: u64 = 160;

/// [`Store::preload`] reads a file up to this many times the size of its keys' pages. Large
/// sequential reads cost about 4 µs per 4 KiB on the 2-core benchmark VM, the scan's random
/// page reads about 56 µs; at 8 times, a cold start gains even if the disk is slower at
/// streaming than that.
const PRELOAD_MAX_RATIO: u64 = 8;

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
    #[error(
        "the database file {path} is corrupt ({detail}); keygate does not replace it: restore it from a backup, or move it away to start with an empty store"
    )]
    Corrupt { path: PathBuf, detail: String },
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

/// Makes the storage a database lives in: the file itself, or (in tests) a backend that can be
/// made to fail.
pub type BackendFactory =
    Arc<dyn Fn() -> std::io::Result<Box<dyn redb::StorageBackend>> + Send + Sync>;

/// The open database.
///
/// After an I/O error redb refuses every further transaction on that handle ("previous I/O
/// error") until the database is opened again, so the store reopens it: the next transaction
/// that meets such an error closes the handle and opens the file anew, once. If the reopen
/// fails too (the disk is still full), the error stands and the next transaction tries again.
pub struct Store {
    path: PathBuf,
    backend: Option<BackendFactory>,
    db: RwLock<Option<Database>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Whether redb needs a fresh handle after this error.
fn needs_reopen(e: &redb::Error) -> bool {
    matches!(
        e,
        redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed
    )
}

impl Store {
    /// Opens (or creates) `state_dir/keygate.redb`, creating `state_dir` with mode 0700 if
    /// needed, and makes sure every table exists.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        Self::open_with(state_dir, None)
    }

    /// Like [`Store::open`], with the storage made by `backend` instead of the file.
    pub fn open_with(
        state_dir: &Path,
        backend: Option<BackendFactory>,
    ) -> Result<Store, StoreError> {
        create_private_dir(state_dir).map_err(|source| StoreError::StateDir {
            path: state_dir.to_owned(),
            source,
        })?;
        let path = db_path(state_dir);
        let db = open_db(&path, backend.as_ref())?;
        let store = Store {
            path,
            backend,
            db: RwLock::new(Some(db)),
        };
        store.write(|tx| tx.create_tables())?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the database file once, front to back in large reads, ahead of startup's scan of
    /// `keys` keys: the scan then finds its pages in the OS page cache instead of reading them
    /// one 4 KiB page at a time, in tree order, from a cold disk. Skipped when the file is
    /// mostly other data (usage history, free pages), where the pass would cost more than it
    /// saves. A failure here only loses the head start, so it is not an error.
    pub fn preload(&self, keys: u64) {
        if self.backend.is_some() {
            return;
        }
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return;
        };
        let len = file.metadata().map_or(u64::MAX, |m| m.len());
        if len > keys.saturating_mul(KEY_PAGE_BYTES * PRELOAD_MAX_RATIO) {
            return;
        }
        let started = std::time::Instant::now();
        let mut buf = vec![0; 2 << 20];
        while let Ok(n @ 1..) = std::io::Read::read(&mut file, &mut buf) {
            std::hint::black_box(&buf[..n]);
        }
        tracing::info!(path = %self.path.display(), bytes = len, ms = started.elapsed().as_millis() as u64,
            "read the store through ahead of loading its keys");
    }

    /// Closes the handle and opens the database again.
    fn reopen(&self) -> Result<(), StoreError> {
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        // The old handle holds the file lock: drop it before opening again.
        drop(db.take());
        let fresh = open_db(&self.path, self.backend.as_ref())?;
        *db = Some(fresh);
        tracing::warn!(path = %self.path.display(), "database reopened after an I/O error");
        Ok(())
    }

    /// Runs `begin` on the current handle; on an error that poisons the handle, reopens and
    /// runs it once more.
    fn begin<T>(
        &self,
        begin: impl Fn(&Database) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        let first = {
            let db = self.db.read().unwrap_or_else(|e| e.into_inner());
            match db.as_ref() {
                Some(db) => begin(db),
                None => Err(redb::Error::DatabaseClosed),
            }
        };
        match first {
            Err(e) if needs_reopen(&e) => {
                tracing::error!(error = %e, "database I/O error; reopening");
                self.reopen()?;
                let db = self.db.read().unwrap_or_else(|e| e.into_inner());
                let db = db.as_ref().ok_or(redb::Error::DatabaseClosed)?;
                Ok(begin(db)?)
            }
            other => Ok(other?),
        }
    }

    /// Runs `f` in a read transaction: a consistent snapshot of the last commit.
    pub fn read<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&ReadTx) -> Result<T, E>,
    ) -> Result<T, E> {
        let txn = self.begin(|db| db.begin_read().map_err(redb::Error::from))?;
        f(&ReadTx::new(txn))
    }

    /// Runs `f` in a write transaction and commits it durably. If `f` fails nothing is written.
    pub fn write<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut WriteTx) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut txn = self.begin(|db| db.begin_write().map_err(redb::Error::from))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| StoreError::Db(e.into()))?;
        let mut tx = WriteTx::new(txn);
        let value = f(&mut tx)?;
        tx.commit()?;
        Ok(value)
    }
}

/// A boxed backend, as redb wants a concrete type.
#[derive(Debug)]
struct Boxed(Box<dyn redb::StorageBackend>);

impl redb::StorageBackend for Boxed {
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.write(offset, data)
    }
    fn close(&self) -> std::io::Result<()> {
        self.0.close()
    }
    fn try_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, redb::BackendError> {
        self.0.try_lock_range(s, e)
    }
    fn try_lock_shared_range(
        &self,
        s: Bound<u64>,
        e: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.0.try_lock_shared_range(s, e)
    }
    fn lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), redb::BackendError> {
        self.0.lock_range(s, e)
    }
    fn lock_shared_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), redb::BackendError> {
        self.0.lock_shared_range(s, e)
    }
    fn unlock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), redb::BackendError> {
        self.0.unlock_range(s, e)
    }
    fn query_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, redb::BackendError> {
        self.0.query_lock_range(s, e)
    }
}

/// The database file in `state_dir`.
fn db_path(state_dir: &Path) -> PathBuf {
    state_dir.join("keygate.redb")
}

fn open_db(path: &Path, backend: Option<&BackendFactory>) -> Result<Database, StoreError> {
    let mut builder = Database::builder();
    builder.set_cache_size(CACHE_BYTES);
    let opened = match backend {
        None => builder.create(path),
        Some(make) => match make() {
            Ok(storage) => builder.create_with_backend(Boxed(storage)),
            Err(e) => Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))),
        },
    };
    opened.map_err(|source| open_error(path, source))
}

fn open_error(path: &Path, source: redb::DatabaseError) -> StoreError {
    match source {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
            path: path.to_owned(),
        },
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => {
            StoreError::Corrupt {
                path: path.to_owned(),
                detail,
            }
        }
        source => StoreError::Open {
            path: path.to_owned(),
            source,
        },
    }
}

/// Runs redb's integrity check on the database in `state_dir`: every page of the committed
/// trees against its checksum. A plain open trusts a file that was closed cleanly (and may panic
/// reading one altered since), so this is what tells a corrupt file from a bug after a failed
/// start. It reads the whole file; only the allocator state is ever rebuilt, never data.
pub fn verify(state_dir: &Path) -> Result<(), StoreError> {
    let path = db_path(state_dir);
    let mut builder = Database::builder();
    builder
        .set_cache_size(CACHE_BYTES)
        .set_check_integrity_on_open(true);
    builder
        .open(&path)
        .map(drop)
        .map_err(|source| open_error(&path, source))
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
