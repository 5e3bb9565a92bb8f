//! One `tvetl run` at a time on a lake.
//!
//! Two runs on the same lake would both rewrite its catalog file (through
//! the same temporary file) and load its warehouse; DuckDB refuses the second
//! writer only once the ingest is over. So a run first takes an exclusive
//! lock on a file of the lake's (`LAKE/_warehouse/run.lock`), and a second
//! one fails at once, naming the first. The lock is the kernel's (`flock`):
//! it ends with the process that holds it, however that process ends, so it
//! is never left stale. The file stays empty, so that a rerun over the same
//! files leaves the lake's folder byte for byte as it was; the holder's
//! process id comes from `/proc/locks`.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// An exclusive hold on a lake, for as long as it lives.
#[derive(Debug)]
pub struct LakeLock {
    _file: File,
}

/// Why a lake could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LakeLockError {
    #[error("another tvetl run{holder} is loading {lake}; wait for it to finish, or give this run another --lake")]
    Held { lake: String, holder: String },
    /// The file system's error, in the message alone: as a `source` too,
    /// the error chain printed it twice.
    #[error("locking {path}: {error}")]
    Io { path: String, error: std::io::Error },
}

impl LakeLock {
    /// Takes the lock on `lake`'s file `path` without waiting, creating it
    /// and its folder if need be.
    pub fn acquire(lake: &Path, path: &Path) -> Result<Self, LakeLockError> {
        let io = |error| LakeLockError::Io { path: path.display().to_string(), error };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file =
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io)?;
        // SAFETY: flock only reads the descriptor, which `file` keeps open.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::WouldBlock {
                return Err(io(error));
            }
            let holder = file.metadata().ok().and_then(|m| flock_holder(m.ino())).map(|pid| format!(" (pid {pid})"));
            return Err(LakeLockError::Held { lake: lake.display().to_string(), holder: holder.unwrap_or_default() });
        }
        Ok(LakeLock { _file: file })
    }
}

/// The process holding a `flock` on the file with inode `inode`, from
/// `/proc/locks` (lines like `1: FLOCK  ADVISORY  WRITE 4242 fe:00:10084577 0 EOF`);
/// `None` where there is no such file or line.
fn flock_holder(inode: u64) -> Option<u32> {
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (kind, pid, device_inode) = (fields.get(1)?, fields.get(4)?, fields.get(5)?);
        let lock_inode = device_inode.rsplit(':').next()?.parse::<u64>().ok()?;
        (*kind == "FLOCK" && lock_inode == inode).then(|| pid.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_hold_fails_naming_the_first_and_the_lock_ends_with_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("_warehouse/run.lock");
        let first = LakeLock::acquire(dir.path(), &lock).unwrap();
        // flock locks belong to the open file, so a second open in the same
        // process conflicts as another process would.
        let err = LakeLock::acquire(dir.path(), &lock).unwrap_err();
        let message = err.to_string();
        assert!(message.contains(&format!("(pid {})", std::process::id())), "{message}");
        assert_eq!(std::fs::metadata(&lock).unwrap().len(), 0, "the lock file stays empty");
        assert!(message.contains(&dir.path().display().to_string()), "{message}");
        drop(first);
        LakeLock::acquire(dir.path(), &lock).unwrap();
    }

    #[test]
    fn a_lock_file_that_cannot_be_made_is_named_with_the_cause_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("_warehouse"), "a file where the folder goes").unwrap();
        let lock = dir.path().join("_warehouse/run.lock");
        let err = anyhow::Error::from(LakeLock::acquire(dir.path(), &lock).unwrap_err());
        // As main prints it: the error and its causes.
        let message = format!("{err:#}");
        assert!(message.starts_with(&format!("locking {}: ", lock.display())), "{message}");
        assert_eq!(message.matches("(os error").count(), 1, "{message}");
    }
}
