//! A redb storage backend over a real file that can be told to fail, like a disk that fills up:
//! while `full` is set, writes, syncs and growth fail with "no space left on device"; reads go
//! on working. Used to prove that keygate keeps authenticating on a full disk and recovers.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use keygate::store::BackendFactory;

#[derive(Debug)]
pub struct Faulty {
    file: File,
    full: Arc<AtomicBool>,
}

fn no_space() -> std::io::Error {
    std::io::Error::from_raw_os_error(28) // ENOSPC
}

impl Faulty {
    fn check(&self) -> std::io::Result<()> {
        if self.full.load(Ordering::SeqCst) {
            Err(no_space())
        } else {
            Ok(())
        }
    }
}

impl redb::StorageBackend for Faulty {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.file.read_exact_at(out, offset)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        if len > self.len()? {
            self.check()?;
        }
        self.file.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.check()?;
        self.file.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check()?;
        self.file.write_all_at(data, offset)
    }
}

/// A factory for `App::open_with`: every (re)open gets the same switch.
pub fn factory(path: PathBuf, full: Arc<AtomicBool>) -> BackendFactory {
    Arc::new(move || {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        Ok(Box::new(Faulty {
            file,
            full: Arc::clone(&full),
        }) as Box<dyn redb::StorageBackend>)
    })
}
