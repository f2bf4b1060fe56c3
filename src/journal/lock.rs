//! One process per journal. Two daemons on one file would each number events from the same
//! counter and knock each other off the broker with one client id; the second one must stop at
//! start-up, naming the first.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use super::JournalError;

/// An exclusive lock on `<journal>.lock`, held for as long as this value lives. The file holds
/// the holder's pid for the next one's error message; the kernel drops the lock with the
/// process, so a `kill -9` never leaves a stale lock behind.
#[derive(Debug)]
pub struct JournalLock {
    _file: File,
}

/// The lock file that guards `journal`.
pub fn lock_path(journal: &Path) -> PathBuf {
    let mut name = journal.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl JournalLock {
    /// Takes the lock of `journal`, or names the process that holds it.
    pub fn acquire(journal: &Path) -> Result<JournalLock, JournalError> {
        let path = lock_path(journal);
        let io_error = |source: std::io::Error| JournalError::Lock {
            path: path.display().to_string(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(JournalError::InUse {
                    path: journal.display().to_string(),
                    holder: holder.trim().parse().ok(),
                });
            }
            Err(TryLockError::Error(source)) => return Err(io_error(source)),
        }
        file.set_len(0).map_err(io_error)?;
        file.rewind().map_err(io_error)?;
        write!(file, "{}", std::process::id()).map_err(io_error)?;
        Ok(JournalLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("j.db");
        let first = JournalLock::acquire(&journal).unwrap();
        match JournalLock::acquire(&journal) {
            Err(JournalError::InUse { holder, .. }) => {
                assert_eq!(holder, Some(std::process::id()))
            }
            other => panic!("second lock: {other:?}"),
        }
        drop(first);
        assert!(JournalLock::acquire(&journal).is_ok());
    }
}
