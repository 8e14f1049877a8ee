//! The server's data folder (proto-spec.md §8.3.4): verified files only,
//! one folder per device, published atomically, within each device's quota.
//!
//! ```text
//! <data_dir>/                 locked (advisory, on the folder itself) by the running server
//!   <device>/                 device name from its certificate, never from the device
//!     <name>                  stored files, mode 0600
//!     .meta/<name>.json       one metadata record per stored file
//!     .incoming/*.part        transfers in flight; removed at start-up
//! ```
//!
//! [`Store::open`] locks the folder (a second server on it refuses to
//! start), checks that it is writable, removes what interrupted transfers
//! left behind and counts what each device stores. [`Store::begin`] checks
//! the device's quotas, its uploads in flight and the free space before
//! anything is written (`quota.rs`), then content streams into a temporary
//! file in `.incoming/` on a blocking writer thread (bounded channel: memory
//! does not grow with file size). Only after the caller has verified the
//! signature does [`Received::commit`] fsync it and publish it: the
//! metadata record and the file are hard-linked to their final names, which
//! fails instead of overwriting, so a name that exists is never replaced; a
//! free name `stem (N).ext` is taken instead (`names.rs`). A dropped
//! [`Incoming`] or [`Received`] removes its temporary file and gives its
//! reservation back. Because the metadata record is published before the
//! file, a visible file always has its record; a record left without its
//! file by a crash is removed at start-up together with stale temporary
//! files.

mod folder;
mod incoming;
mod names;
mod quota;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use folder::{Cleanup, OpenError};
pub use incoming::{CommitError, FileRecord, Incoming, Received};
pub use names::{MAX_SUFFIX, validate_file_name};
pub use quota::{LimitsError, Refusal, StoreLimits, Usage};

use crate::message::AckStatus;
use folder::create_dir_private;
use quota::Ledger;

const INCOMING: &str = ".incoming";
const META: &str = ".meta";

/// Why an upload cannot start. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum BeginError {
    /// A quota, the device's uploads in flight, or the free-space reserve.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The device's folders or the temporary file cannot be created.
    #[error("cannot prepare an upload in {}: {source}", path.display())]
    Io {
        /// The folder or file at fault.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

impl BeginError {
    /// The `ACK_` status that answers the `OPEN` (proto-spec.md §8.5).
    #[must_use]
    pub fn status(&self) -> AckStatus {
        match self {
            Self::Refused(Refusal::QuotaBytes { .. } | Refusal::QuotaFiles { .. }) => {
                AckStatus::QuotaExceeded
            }
            Self::Refused(Refusal::Busy { .. }) => AckStatus::Busy,
            Self::Refused(Refusal::InsufficientStorage { .. }) => AckStatus::InsufficientStorage,
            Self::Io { .. } => AckStatus::StorageError,
        }
    }

    /// The `ACK_` detail for the device: the numbers behind a refusal, no
    /// paths or system details.
    #[must_use]
    pub fn detail(&self) -> String {
        match self {
            Self::Refused(r) => r.to_string(),
            Self::Io { .. } => "the server cannot store files now".to_owned(),
        }
    }
}

/// The data folder. Clones share it; the folder stays locked until the
/// last clone is dropped.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    ledger: Arc<Ledger>,
    /// Holds the advisory lock on the data folder.
    _lock: File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.inner.root)
            .field("limits", self.inner.ledger.limits())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the data folder: checks `limits` and that
    /// the folder is writable, locks it for this process, removes what
    /// interrupted transfers left behind, and counts each device's usage.
    ///
    /// # Errors
    /// [`OpenError`]: each variant reads as one sentence naming the path.
    pub fn open(root: &Path, limits: StoreLimits) -> Result<(Self, Cleanup), OpenError> {
        limits.validate()?;
        folder::create_writable(root)?;
        let lock = folder::lock(root)?;
        let (cleanup, usage) = folder::clean_and_count(root)?;
        let inner = Inner {
            root: root.to_owned(),
            ledger: Arc::new(Ledger::new(limits, usage)),
            _lock: lock,
        };
        Ok((
            Self {
                inner: Arc::new(inner),
            },
            cleanup,
        ))
    }

    /// What `device` stores and has in flight.
    #[must_use]
    pub fn usage(&self, device: &str) -> Usage {
        self.inner.ledger.usage(device)
    }

    /// The folder of `device`. The name comes from a verified certificate,
    /// whose common name the PKI restricts to `[A-Za-z0-9._-]`, not starting
    /// with `.`; it is checked again here.
    fn device_dir(&self, device: &str) -> io::Result<PathBuf> {
        if validate_file_name(device).is_err()
            || !device
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "invalid device folder name",
            ));
        }
        Ok(self.inner.root.join(device))
    }

    /// Starts receiving a file of `size` bytes from `device`: reserves its
    /// share of the device's quotas and of the free space, then creates the
    /// temporary file. A refused upload writes nothing.
    ///
    /// # Errors
    /// [`BeginError::Refused`] over a limit; [`BeginError::Io`] when the
    /// folders or the file cannot be created or the free space read.
    pub fn begin(&self, device: &str, size: u64) -> Result<Incoming, BeginError> {
        let root = &self.inner.root;
        let io_at = |path: &Path| {
            let path = path.to_owned();
            move |source| BeginError::Io { path, source }
        };
        let dir = self.device_dir(device).map_err(io_at(root))?;
        let available = folder::available_space(root).map_err(io_at(root))?;
        let reservation = self.inner.ledger.reserve(device, size, available)?;
        let incoming = dir.join(INCOMING);
        create_dir_private(&incoming).map_err(io_at(&incoming))?;
        let meta = dir.join(META);
        create_dir_private(&meta).map_err(io_at(&meta))?;
        let mut random = [0u8; 12];
        getrandom::fill(&mut random).map_err(|e| io_at(&incoming)(io::Error::other(e)))?;
        let temp = incoming.join(format!("{}.part", hex::encode(random)));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(io_at(&temp))?;
        Ok(Incoming::start(file, temp, dir, reservation))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    fn record() -> FileRecord {
        FileRecord {
            name: "a.jpg".into(),
            stored_as: String::new(),
            device: "device-1".into(),
            device_cert_serial: "01".into(),
            size: 3,
            kind: "image".into(),
            content_type: "image/jpeg".into(),
            sha256: String::new(),
            file_digest: String::new(),
            signature: String::new(),
            received_at: String::new(),
            duration_ms: 0,
        }
    }

    fn open(dir: &Path) -> Store {
        Store::open(dir, StoreLimits::default()).unwrap().0
    }

    async fn store_file(store: &Store, name: &str, content: &[u8]) -> Result<String, CommitError> {
        let mut inc = store.begin("device-1", content.len() as u64).unwrap();
        inc.write(Bytes::copy_from_slice(content)).await.unwrap();
        let rec = inc.finish().await.unwrap();
        assert_eq!(rec.size, content.len() as u64);
        rec.commit(name, record()).await
    }

    /// Waits (bounded) until `dir` has no entries.
    async fn empties(dir: &Path) -> bool {
        for _ in 0..200 {
            if fs::read_dir(dir).unwrap().count() == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn commit_publishes_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut names = Vec::new();
        for content in [&b"one"[..], b"two", b"three"] {
            names.push(store_file(&store, "a.jpg", content).await.unwrap());
        }
        assert_eq!(names, ["a.jpg", "a (1).jpg", "a (2).jpg"]);
        let dev = dir.path().join("device-1");
        assert_eq!(fs::read(dev.join("a.jpg")).unwrap(), b"one");
        assert_eq!(fs::read(dev.join("a (2).jpg")).unwrap(), b"three");
        let meta: serde_json::Value =
            serde_json::from_slice(&fs::read(dev.join(".meta/a (1).jpg.json")).unwrap()).unwrap();
        assert_eq!(meta["stored_as"], "a (1).jpg");
        assert_eq!(fs::read_dir(dev.join(INCOMING)).unwrap().count(), 0);
        assert_eq!(
            store.usage("device-1"),
            Usage {
                stored_bytes: 11,
                stored_files: 3,
                uploads: 0,
                reserved_bytes: 0
            }
        );
    }

    #[tokio::test]
    async fn a_record_without_its_file_also_takes_the_name() {
        // A publish in progress (record linked, file not yet) holds its name.
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let dev = dir.path().join("device-1");
        fs::create_dir_all(dev.join(META)).unwrap();
        fs::write(dev.join(META).join("a.jpg.json"), b"{}").unwrap();
        assert_eq!(
            store_file(&store, "a.jpg", b"x").await.unwrap(),
            "a (1).jpg"
        );
    }

    #[tokio::test]
    async fn dropped_transfers_leave_nothing_and_release_their_reservation() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut inc = store.begin("device-1", 100).unwrap();
        inc.write(Bytes::from_static(b"partial")).await.unwrap();
        assert_eq!(store.usage("device-1").uploads, 1);
        assert_eq!(store.usage("device-1").reserved_bytes, 100);
        drop(inc);
        assert_eq!(store.usage("device-1"), Usage::default());
        let inc = store.begin("device-1", 0).unwrap();
        let rec = inc.finish().await.unwrap();
        drop(rec); // received but never verified
        assert_eq!(store.usage("device-1"), Usage::default());
        let dev = dir.path().join("device-1");
        assert!(empties(&dev.join(INCOMING)).await);
        assert_eq!(
            fs::read_dir(&dev).unwrap().count(),
            2,
            "only .incoming and .meta"
        );
    }

    #[tokio::test]
    async fn a_refused_upload_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let limits = StoreLimits {
            quota_bytes_per_device: 10,
            ..StoreLimits::default()
        };
        let (store, _) = Store::open(dir.path(), limits).unwrap();
        let err = store.begin("device-1", 11).unwrap_err();
        assert_eq!(err.status(), AckStatus::QuotaExceeded);
        assert!(!dir.path().join("device-1").exists());
        let limits = StoreLimits {
            min_free_space: u64::MAX / 2,
            ..StoreLimits::default()
        };
        drop(store);
        let (store, _) = Store::open(dir.path(), limits).unwrap();
        let err = store.begin("device-1", 1).unwrap_err();
        assert_eq!(err.status(), AckStatus::InsufficientStorage);
        assert!(!dir.path().join("device-1").exists());
    }

    #[test]
    fn startup_cleans_whatever_it_finds_and_counts_usage() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("device-1");
        let incoming = dev.join(INCOMING);
        fs::create_dir_all(incoming.join("stray/deeper")).unwrap();
        fs::write(incoming.join("stray/deeper/f"), b"x").unwrap();
        fs::create_dir_all(dev.join(META)).unwrap();
        fs::write(incoming.join("x.part"), b"half").unwrap();
        // A symbolic link is removed, never followed.
        let outside = dir.path().join("outside.txt");
        fs::write(&outside, b"keep").unwrap();
        std::os::unix::fs::symlink(&outside, incoming.join("link")).unwrap();
        std::os::unix::fs::symlink(dir.path(), incoming.join("dirlink")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", incoming.join("dangling")).unwrap();
        fs::write(dev.join(META).join("gone.jpg.json"), b"{}").unwrap();
        fs::create_dir(dev.join(META).join("odd.json")).unwrap();
        fs::write(dev.join("kept.jpg"), b"kept").unwrap();
        fs::write(dev.join("other.png"), b"123456").unwrap();
        fs::write(dev.join(META).join("kept.jpg.json"), b"{}").unwrap();
        // Another device whose .incoming is a file: left alone, no error.
        fs::create_dir_all(dir.path().join("device-2")).unwrap();
        fs::write(dir.path().join("device-2").join(INCOMING), b"").unwrap();
        let (store, cleanup) = Store::open(dir.path(), StoreLimits::default()).unwrap();
        assert_eq!(
            cleanup,
            Cleanup {
                partial_files: 5,
                orphan_records: 1
            }
        );
        assert_eq!(fs::read_dir(&incoming).unwrap().count(), 0);
        assert_eq!(fs::read(&outside).unwrap(), b"keep");
        assert!(dir.path().join("device-2").join(INCOMING).is_file());
        assert!(dev.join(META).join("kept.jpg.json").exists());
        assert!(!dev.join(META).join("gone.jpg.json").exists());
        assert_eq!(
            store.usage("device-1"),
            Usage {
                stored_bytes: 10,
                stored_files: 2,
                uploads: 0,
                reserved_bytes: 0
            }
        );
    }

    #[test]
    fn a_second_open_of_the_same_folder_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(dir.path());
        let clone = first.clone();
        fs::create_dir_all(dir.path().join("device-1").join(INCOMING)).unwrap();
        let in_flight = dir.path().join("device-1").join(INCOMING).join("a.part");
        fs::write(&in_flight, b"in flight").unwrap();
        let err = Store::open(dir.path(), StoreLimits::default()).unwrap_err();
        assert!(matches!(err, OpenError::Locked { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "another secured server is using the data folder {}; stop it or choose another --data-dir",
                dir.path().display()
            )
        );
        assert!(in_flight.exists(), "the refused open cleaned up anyway");
        drop(first);
        assert!(matches!(
            Store::open(dir.path(), StoreLimits::default()),
            Err(OpenError::Locked { .. })
        ));
        drop(clone);
        let (_, cleanup) = Store::open(dir.path(), StoreLimits::default()).unwrap();
        assert_eq!(cleanup.partial_files, 1);
    }

    #[test]
    fn a_data_folder_that_cannot_be_used_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        let err = Store::open(&file, StoreLimits::default()).unwrap_err();
        assert!(matches!(err, OpenError::NotAFolder { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "the data folder {} is not a folder; choose another --data-dir",
                file.display()
            )
        );
        let below = file.join("data");
        let err = Store::open(&below, StoreLimits::default()).unwrap_err();
        assert!(matches!(err, OpenError::Create { .. }), "{err}");
        assert!(err.to_string().contains(&below.display().to_string()));
        // Not writable even for root: a folder of the proc file system.
        let err = Store::open(Path::new("/proc/self"), StoreLimits::default()).unwrap_err();
        assert!(matches!(err, OpenError::NotWritable { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("the data folder /proc/self is not writable: ")
        );
        let err = Store::open(
            dir.path(),
            StoreLimits {
                max_uploads_per_device: 0,
                ..StoreLimits::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, OpenError::Limits(_)), "{err}");
    }

    #[test]
    fn device_folders_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        assert!(store.begin("../etc", 0).is_err());
        assert!(store.begin(".meta", 0).is_err());
    }
}
