//! The data folder at start-up: create it, check that it is writable, lock
//! it against a second server, and remove what interrupted transfers left
//! behind.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::index::IndexError;

/// Why the data folder cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// A storage limit makes no sense.
    #[error(transparent)]
    Limits(#[from] super::LimitsError),
    /// The folder does not exist and cannot be created.
    #[error("cannot create the data folder {}: {source}", path.display())]
    Create {
        /// The data folder.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The path exists but is not a folder.
    #[error("the data folder {} is not a folder; choose another --data-dir", path.display())]
    NotAFolder {
        /// The data folder.
        path: PathBuf,
    },
    /// No file can be created in the folder.
    #[error("the data folder {} is not writable: {source}; make it writable or choose another --data-dir", path.display())]
    NotWritable {
        /// The data folder.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Another process holds the folder's lock.
    #[error("another secured server is using the data folder {}; stop it or choose another --data-dir", path.display())]
    Locked {
        /// The data folder.
        path: PathBuf,
    },
    /// Something in the folder cannot be read or cleaned up.
    #[error("cannot use {} in the data folder: {source}", path.display())]
    Io {
        /// The file or folder at fault.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The index of files cannot be opened or read.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// Something in a folder of the old layout (files beside their
    /// `.meta/<name>.json` records) is not a file that can be imported.
    #[error(
        "cannot import {} from the old layout of the data folder: {reason}; move it out of the data folder and start again{}",
        path.display(),
        if *more > 0 { format!(" ({more} more such paths are in the log)") } else { String::new() }
    )]
    Legacy {
        /// The first path that cannot be imported.
        path: PathBuf,
        /// Why.
        reason: String,
        /// How many more cannot.
        more: usize,
    },
}

/// What start-up found and did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cleanup {
    /// Leftovers of interrupted transfers, removed: whatever `incoming/`
    /// held, and in folders of the old layout, what their `.incoming`
    /// held and the records of files never published.
    pub partial_files: usize,
    /// Blobs that no file refers to (a crash between storing the content
    /// and committing the file), removed.
    pub orphan_blobs: usize,
    /// Files of the old layout imported into the index.
    pub imported_files: usize,
}

pub(super) fn create_dir_private(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Makes the entries of the folder `path` durable.
pub(super) fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Runs blocking file-system work off the runtime.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(io::Error::other)
}

pub(super) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Creates `root` if needed and checks that files can be created in it.
pub(super) fn create_writable(root: &Path) -> Result<(), OpenError> {
    if let Err(source) = create_dir_private(root) {
        return Err(match fs::metadata(root) {
            Ok(m) if !m.is_dir() => OpenError::NotAFolder {
                path: root.to_owned(),
            },
            _ => OpenError::Create {
                path: root.to_owned(),
                source,
            },
        });
    }
    let not_writable = |source| OpenError::NotWritable {
        path: root.to_owned(),
        source,
    };
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| not_writable(io::Error::other(e)))?;
    let probe = root.join(format!(".probe-{}", hex::encode(random)));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)
        .map_err(not_writable)?;
    fs::remove_file(&probe).map_err(not_writable)
}

/// Takes an advisory lock on the folder `root` itself (no lock file to
/// leave behind), held as long as the returned handle is open; the kernel
/// drops it when the process ends, however it ends.
pub(super) fn lock(root: &Path) -> Result<File, OpenError> {
    let folder = File::open(root).map_err(io_at(root))?;
    match folder.try_lock() {
        Ok(()) => Ok(folder),
        Err(fs::TryLockError::WouldBlock) => Err(OpenError::Locked {
            path: root.to_owned(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(io_at(root)(e)),
    }
}

/// Empties the folder of transfers in flight, whatever it holds: files,
/// symbolic links (never followed) and folders. Returns how many entries it
/// removed.
pub(super) fn clean_incoming(incoming: &Path) -> Result<usize, OpenError> {
    match fs::symlink_metadata(incoming) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            // Not ours to delete; uploads fail until it is moved away, and
            // they log why.
            tracing::warn!(path = %incoming.display(), "not a folder; uploads will fail");
            return Ok(0);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_at(incoming)(e)),
    }
    let mut removed = 0;
    for entry in fs::read_dir(incoming).map_err(io_at(incoming))? {
        let entry = entry.map_err(io_at(incoming))?;
        if remove_entry(&entry.path()).map_err(io_at(&entry.path()))? {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes a file, a symbolic link (not what it points to) or a folder
/// with its content; `false` if it was already gone.
pub(super) fn remove_entry(path: &Path) -> io::Result<bool> {
    let removed = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match removed {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Bytes available to the server on the file system of `path`.
pub(super) fn available_space(path: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}
