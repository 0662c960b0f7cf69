//! The daemon's data directory: who owns it and who may read it.
//!
//! # Design constraints
//! - **One daemon per data directory.** [`Lock::take`] holds an exclusive
//!   advisory lock (`flock`) on `sluice.lock` in the directory for as long as
//!   the daemon runs. The kernel releases it when the process ends, however
//!   it ends: a SIGKILL leaves no stale lock behind. A second daemon is
//!   refused at once, told the directory and the PID that holds it (the
//!   holder writes its PID into the file after it took the lock). Commands
//!   that only touch `tokens.db` (`sluice token create --config`) take no
//!   lock: SQLite serialises them with the daemon.
//! - **Private files.** The directory is created `0700` and every file
//!   sluice writes there (site databases and their WAL and SHM files, site
//!   logs, `tokens.db`, the lock) is `0600`, whatever the umask: they hold
//!   records, credentials' traces and token hashes. Files created before
//!   are narrowed to `0600` when they are opened. SQLite gives the WAL and
//!   SHM files it creates the mode of their database file, so making the
//!   database file `0600` before SQLite opens it covers them.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file in the data directory.
pub const LOCK_FILE: &str = "sluice.lock";

/// Why the data directory could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the data directory {dir} is in use by another sluice daemon{}; \
         stop it first, or give this one another data_dir",
        match pid { Some(pid) => format!(" (PID {pid})"), None => String::new() }
    )]
    Held { dir: PathBuf, pid: Option<u32> },
    #[error("cannot lock the data directory {dir}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// The exclusive hold of one daemon on its data directory; released when
/// dropped or when the process ends.
#[derive(Debug)]
pub struct Lock {
    /// Kept open: closing it would release the lock.
    _file: File,
}

impl Lock {
    /// Creates the directory if needed (`0700`) and takes its lock, or says
    /// which process holds it.
    pub fn take(dir: &Path) -> Result<Lock, LockError> {
        let io = |source| LockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        create_private_dir(dir).map_err(io)?;
        let path = dir.join(LOCK_FILE);
        let mut file = private_options()
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        narrow(&file).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let pid = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    pid,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        // Ours now: say who holds it, for the next one to ask.
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(Lock { _file: file })
    }
}

/// Creates `dir` and any missing parent with mode `0700`. An existing
/// directory is left as it is (it may be one the operator chose to share).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Options that create a file readable and writable by its owner only.
pub fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Makes sure `path` exists as a private file (`0600`): created so if it is
/// new, narrowed if it was made before with wider permissions. Its folder is
/// created `0700` if missing.
pub fn private_file(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        create_private_dir(dir)?;
    }
    let file = private_options().append(true).open(path)?;
    narrow(&file)
}

/// Makes a SQLite database file private before SQLite opens it: the file
/// itself (created `0600` if new), and the WAL and SHM files left by an
/// earlier run, if any (new ones take the database file's mode).
pub fn private_database(path: &Path) -> std::io::Result<()> {
    private_file(path)?;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        match OpenOptions::new().read(true).open(Path::new(&side)) {
            Ok(file) => narrow(&file)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sets an open file's mode to `0600` unless it is already.
fn narrow(file: &File) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata()?.permissions().mode() & 0o777;
        if mode != 0o600 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = Lock::take(&data).unwrap();
        match Lock::take(&data) {
            Err(LockError::Held { dir, pid }) => {
                assert_eq!(dir, data);
                assert_eq!(pid, Some(std::process::id()));
            }
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        let again = Lock::take(&data);
        assert!(again.is_ok(), "{again:?}");
    }

    #[cfg(unix)]
    #[test]
    fn files_and_folders_are_private_whatever_was_there() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/b");
        create_private_dir(&data).unwrap();
        for d in [dir.path().join("a"), data.clone()] {
            let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        let old = data.join("old.log");
        std::fs::write(&old, "x").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        private_file(&old).unwrap();
        let fresh = data.join("new.db");
        private_file(&fresh).unwrap();
        for f in [old, fresh] {
            let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.display());
        }
        assert_eq!(std::fs::read_to_string(data.join("old.log")).unwrap(), "x");
    }
}
