//! The data folder at start-up: create it, check that it is writable, lock
//! it against a second server, remove what interrupted transfers left
//! behind, and count what each device stores.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::quota::Stored;
use super::{INCOMING, META};

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
}

/// What start-up cleaning removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cleanup {
    /// Temporary files (and anything else) found in `.incoming` folders.
    pub partial_files: usize,
    /// Metadata records whose file was never published.
    pub orphan_records: usize,
}

pub(super) fn create_dir_private(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
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

/// Cleans every device folder and counts what each stores.
pub(super) fn clean_and_count(
    root: &Path,
) -> Result<(Cleanup, HashMap<String, Stored>), OpenError> {
    let mut cleanup = Cleanup::default();
    let mut usage = HashMap::new();
    for entry in fs::read_dir(root).map_err(io_at(root))? {
        let entry = entry.map_err(io_at(root))?;
        let device = entry.path();
        // Device folders only; symbolic links are not followed.
        if !entry.file_type().map_err(io_at(&device))?.is_dir() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        clean_incoming(&device.join(INCOMING), &mut cleanup)?;
        clean_records(&device, &mut cleanup)?;
        usage.insert(name, count_files(&device)?);
    }
    Ok((cleanup, usage))
}

/// Empties `.incoming`, whatever it holds: files, symbolic links (never
/// followed) and folders.
fn clean_incoming(incoming: &Path, cleanup: &mut Cleanup) -> Result<(), OpenError> {
    match fs::symlink_metadata(incoming) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            // Not ours to delete; uploads of this device fail until it is
            // moved away, and they log why.
            tracing::warn!(path = %incoming.display(), "not a folder; this device's uploads will fail");
            return Ok(());
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_at(incoming)(e)),
    }
    for entry in fs::read_dir(incoming).map_err(io_at(incoming))? {
        let entry = entry.map_err(io_at(incoming))?;
        let path = entry.path();
        let is_dir = entry.file_type().map_err(io_at(&path))?.is_dir();
        let removed = if is_dir {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match removed {
            Ok(()) => cleanup.partial_files += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(&path)(e)),
        }
    }
    Ok(())
}

/// Removes metadata records whose file was never published.
fn clean_records(device: &Path, cleanup: &mut Cleanup) -> Result<(), OpenError> {
    let meta = device.join(META);
    let records = match fs::read_dir(&meta) {
        Ok(r) => r,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(());
        }
        Err(e) => return Err(io_at(&meta)(e)),
    };
    for entry in records {
        let entry = entry.map_err(io_at(&meta))?;
        let path = entry.path();
        let file_name = entry.file_name();
        let Some(stored) = file_name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if entry.file_type().map_err(io_at(&path))?.is_dir() {
            continue;
        }
        match fs::symlink_metadata(device.join(stored)) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::remove_file(&path).map_err(io_at(&path))?;
                cleanup.orphan_records += 1;
            }
            Err(e) => return Err(io_at(&device.join(stored))(e)),
        }
    }
    Ok(())
}

/// Bytes and number of the regular files stored in a device folder.
fn count_files(device: &Path) -> Result<Stored, OpenError> {
    let mut stored = Stored::default();
    for entry in fs::read_dir(device).map_err(io_at(device))? {
        let entry = entry.map_err(io_at(device))?;
        if entry.file_name().as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let path = entry.path();
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_at(&path)(e)),
        };
        if meta.is_file() {
            stored.bytes = stored.bytes.saturating_add(meta.len());
            stored.files += 1;
        }
    }
    Ok(stored)
}

/// Bytes available to the server on the file system of `path`.
pub(super) fn available_space(path: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}
