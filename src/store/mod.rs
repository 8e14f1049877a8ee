//! The server's data folder (proto-spec.md §8.3.4, §13.9): verified files
//! only, their metadata in an index, their contents as blobs, within each
//! device's quota.
//!
//! ```text
//! <data_dir>/                 locked (advisory, on the folder itself) by the running server
//!   index.sqlite3             the index: devices, files, events (crate::index), mode 0600
//!   index.sqlite3.lock        held while a process opens and migrates the index
//!   blobs/<2 hex>/<32 hex>    file contents under random keys, mode 0600 (blob.rs)
//!   incoming/*.part           transfers in flight; emptied at start-up
//! ```
//!
//! [`Store::open`] locks the folder (a second server on it refuses to
//! start), checks that it is writable, opens the index, imports a folder
//! of the old layout (`legacy.rs`), removes what interrupted transfers
//! left behind and reads what each device stores from the index.
//! [`Store::begin`] checks the device's quotas, its uploads in flight and
//! the free space before anything is written (`quota.rs`), then content
//! streams into a temporary file in `incoming/` on a blocking writer thread
//! (bounded channel: memory does not grow with file size). Only after the
//! caller has verified the signature does [`Received::commit`] fsync it,
//! move it into the blob store and commit its row to the index, in one
//! transaction that also picks a free name `stem (N).ext` when the name is
//! taken (`names.rs`): a name is never reused for another file of the same
//! owner. If the index does not commit, the blob is removed; a blob left
//! without its row by a crash is removed at start-up, so a row always has
//! its blob and no blob outlives its upload for long. A dropped
//! [`Incoming`] or [`Received`] removes its temporary file and gives its
//! reservation back.

mod blob;
mod folder;
mod incoming;
mod legacy;
mod names;
mod quota;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use blob::{BlobKey, BlobStore, FsBlobs};
pub use folder::{Cleanup, OpenError};
pub use incoming::{CommitError, Incoming, Received};
pub(crate) use names::candidate_name;
pub use names::{FreeSuffix, MAX_SUFFIX, validate_file_name};
pub use quota::{LimitsError, Refusal, StoreLimits, Usage};

use crate::index::{FileEntry, Index};
use crate::message::{AckStatus, is_device_name};
use folder::{blocking, create_dir_private, io_at};
use quota::{Ledger, Stored};

/// The index, in the data folder.
pub const INDEX_FILE: &str = "index.sqlite3";
/// The folder of blobs, in the data folder.
pub const BLOBS_DIR: &str = "blobs";
/// The folder of transfers in flight, in the data folder.
pub const INCOMING_DIR: &str = "incoming";

/// Why an upload cannot start. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum BeginError {
    /// A quota, the device's uploads in flight, or the free-space reserve.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The temporary file cannot be created.
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
/// last clone (and the last upload begun in it) is dropped.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    incoming: PathBuf,
    index: Index,
    blobs: Arc<dyn BlobStore>,
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
    /// the folder is writable, locks it for this process, opens the index,
    /// imports files of the old layout, removes what interrupted transfers
    /// left behind, and reads each device's usage from the index.
    ///
    /// # Errors
    /// [`OpenError`]: each variant reads as one sentence naming the path.
    pub async fn open(root: &Path, limits: StoreLimits) -> Result<(Self, Cleanup), OpenError> {
        limits.validate()?;
        let root = root.to_owned();
        let (lock, blobs) = {
            let dir = root.clone();
            blocking(move || {
                folder::create_writable(&dir)?;
                let lock = folder::lock(&dir)?;
                let blobs_dir = dir.join(BLOBS_DIR);
                let blobs = FsBlobs::open(&blobs_dir).map_err(io_at(&blobs_dir))?;
                Ok::<_, OpenError>((lock, blobs))
            })
            .await
            .map_err(io_at(&root))??
        };
        let index = Index::open(&root.join(INDEX_FILE)).await?;
        let mut cleanup = legacy::import(&root, &index, &blobs).await?;
        let incoming = root.join(INCOMING_DIR);
        cleanup.partial_files += {
            let incoming = incoming.clone();
            blocking(move || {
                let removed = folder::clean_incoming(&incoming)?;
                create_dir_private(&incoming).map_err(io_at(&incoming))?;
                Ok::<_, OpenError>(removed)
            })
            .await
            .map_err(io_at(&root))??
        };
        let blobs: Arc<dyn BlobStore> = Arc::new(blobs);
        cleanup.orphan_blobs = remove_orphan_blobs(&index, &blobs, &root).await?;
        let usage: HashMap<String, Stored> = index
            .usage_by_owner()
            .await?
            .into_iter()
            .map(|(owner, (bytes, files))| (owner, Stored { bytes, files }))
            .collect();
        let inner = Inner {
            root,
            incoming,
            index,
            blobs,
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

    /// The index of devices, files and events.
    #[must_use]
    pub fn index(&self) -> &Index {
        &self.inner.index
    }

    /// The blob store.
    pub(crate) fn blobs(&self) -> Arc<dyn BlobStore> {
        self.inner.blobs.clone()
    }

    /// A reader of the content of `file`, from its start. It blocks: call
    /// it, and read, on a blocking thread.
    ///
    /// # Errors
    /// The content cannot be opened.
    pub fn open_blob(&self, file: &FileEntry) -> io::Result<Box<dyn Read + Send>> {
        self.inner.blobs.open(&file.blob)
    }

    /// Starts receiving a file of `size` bytes from `device`: reserves its
    /// share of the device's quotas and of the free space, then creates the
    /// temporary file. A refused upload writes nothing.
    ///
    /// # Errors
    /// [`BeginError::Refused`] over a limit; [`BeginError::Io`] when the
    /// device name is not one, or the file cannot be created or the free
    /// space read.
    pub fn begin(&self, device: &str, size: u64) -> Result<Incoming, BeginError> {
        let root = &self.inner.root;
        let io_at = |path: &Path| {
            let path = path.to_owned();
            move |source| BeginError::Io { path, source }
        };
        // The name comes from a verified certificate, whose common name the
        // PKI restricts to device names; it is checked again here.
        if !is_device_name(device) {
            return Err(io_at(root)(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a device name",
            )));
        }
        let available = folder::available_space(root).map_err(io_at(root))?;
        let reservation = self.inner.ledger.reserve(device, size, available)?;
        let incoming = &self.inner.incoming;
        create_dir_private(incoming).map_err(io_at(incoming))?;
        let mut random = [0u8; 12];
        getrandom::fill(&mut random).map_err(|e| io_at(incoming)(io::Error::other(e)))?;
        let temp = incoming.join(format!("{}.part", hex::encode(random)));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(io_at(&temp))?;
        Ok(Incoming::start(file, temp, self.clone(), reservation))
    }
}

/// Removes the blobs that no file refers to; returns how many.
async fn remove_orphan_blobs(
    index: &Index,
    blobs: &Arc<dyn BlobStore>,
    root: &Path,
) -> Result<usize, OpenError> {
    let referenced = index.blobs().await?;
    let blobs = blobs.clone();
    let dir = root.join(BLOBS_DIR);
    blocking(move || {
        let mut removed = 0;
        for key in blobs.keys().map_err(io_at(&dir))? {
            if !referenced.contains(key.as_str()) {
                blobs.delete(&key).map_err(io_at(&dir.join(key.as_str())))?;
                removed += 1;
            }
        }
        Ok(removed)
    })
    .await
    .map_err(io_at(root))?
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::crypto::hash::sha256;
    use crate::index::{ImportedFile, NewFile};
    use crate::message::{MediaKind, Scope};

    pub(super) fn new_file(owner: &str, name: &str, content: &[u8]) -> NewFile {
        NewFile {
            owner: owner.to_owned(),
            owner_serial: "01".to_owned(),
            certificate: b"certificate".to_vec(),
            name: name.to_owned(),
            kind: MediaKind::Image,
            size: content.len() as u64,
            content_type: "image/jpeg".to_owned(),
            sha256: sha256(&[content]),
            file_digest: [7; 32],
            signature: vec![9; 256],
            signed_version: 1,
            signed_at: 0,
            scope: Scope::Private,
            duration_ms: 5,
        }
    }

    async fn open(dir: &Path) -> Store {
        Store::open(dir, StoreLimits::default()).await.unwrap().0
    }

    async fn store_file(store: &Store, name: &str, content: &[u8]) -> Result<String, CommitError> {
        let mut inc = store.begin("device-1", content.len() as u64).unwrap();
        inc.write(Bytes::copy_from_slice(content)).await.unwrap();
        let rec = inc.finish().await.unwrap();
        assert_eq!(rec.size, content.len() as u64);
        let committed = rec.commit(new_file("device-1", name, content)).await?;
        Ok(committed.stored_as)
    }

    /// The content of what `owner` stores as `stored_as`.
    async fn content(store: &Store, owner: &str, stored_as: &str) -> Option<Vec<u8>> {
        let file = store.index().stored_file(owner, stored_as).await.unwrap()?;
        let mut bytes = Vec::new();
        store
            .open_blob(&file)
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        Some(bytes)
    }

    fn entries(dir: &Path) -> usize {
        fs::read_dir(dir).map_or(0, Iterator::count)
    }

    fn blob_count(root: &Path) -> usize {
        FsBlobs::open(&root.join(BLOBS_DIR))
            .unwrap()
            .keys()
            .unwrap()
            .len()
    }

    /// Waits (bounded) until `dir` has no entries.
    async fn empties(dir: &Path) -> bool {
        for _ in 0..200 {
            if entries(dir) == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn commit_stores_and_never_reuses_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let mut names = Vec::new();
        for content in [&b"one"[..], b"two", b"three"] {
            names.push(store_file(&store, "a.jpg", content).await.unwrap());
        }
        assert_eq!(names, ["a.jpg", "a (1).jpg", "a (2).jpg"]);
        assert_eq!(content(&store, "device-1", "a.jpg").await.unwrap(), b"one");
        assert_eq!(
            content(&store, "device-1", "a (2).jpg").await.unwrap(),
            b"three"
        );
        let second = store
            .index()
            .stored_file("device-1", "a (1).jpg")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(second.name, "a.jpg");
        assert_eq!(second.sha256, sha256(&[b"two"]));
        assert_eq!(second.certificate.as_deref(), Some(&b"certificate"[..]));
        assert_eq!(entries(&dir.path().join(INCOMING_DIR)), 0);
        assert_eq!(blob_count(dir.path()), 3);
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
    async fn a_commit_the_index_refuses_leaves_no_blob_and_releases_its_reservation() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        // Every name of full.jpg is taken (by rows whose content is elsewhere).
        let rows: Vec<ImportedFile> = (0..=MAX_SUFFIX)
            .map(|n| ImportedFile {
                file: new_file("device-1", "full.jpg", b""),
                stored_as: candidate_name("full.jpg", n),
                stored_at_ms: 1,
                blob: BlobKey::random().unwrap(),
            })
            .collect();
        store.index().import(&rows).await.unwrap();
        let err = store_file(&store, "full.jpg", b"one too many")
            .await
            .unwrap_err();
        assert!(matches!(err, CommitError::NoFreeName { .. }), "{err}");
        assert_eq!(blob_count(dir.path()), 0);
        assert_eq!(entries(&dir.path().join(INCOMING_DIR)), 0);
        assert_eq!(store.usage("device-1"), Usage::default());
        assert!(store_file(&store, "other.jpg", b"x").await.is_ok());
    }

    #[tokio::test]
    async fn commit_checks_that_the_metadata_describes_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let mut inc = store.begin("device-1", 3).unwrap();
        inc.write(Bytes::from_static(b"abc")).await.unwrap();
        let rec = inc.finish().await.unwrap();
        let err = rec
            .commit(new_file("device-1", "a.jpg", b"abd"))
            .await
            .unwrap_err();
        assert!(matches!(err, CommitError::Io(_)), "{err}");
        assert_eq!(blob_count(dir.path()), 0);
        assert!(empties(&dir.path().join(INCOMING_DIR)).await);
        assert_eq!(store.usage("device-1"), Usage::default());
    }

    #[tokio::test]
    async fn dropped_transfers_leave_nothing_and_release_their_reservation() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
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
        assert!(empties(&dir.path().join(INCOMING_DIR)).await);
        assert_eq!(blob_count(dir.path()), 0);
        assert!(
            store
                .index()
                .visible_files("device-1", None)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_refused_upload_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let limits = StoreLimits {
            quota_bytes_per_device: 10,
            ..StoreLimits::default()
        };
        let (store, _) = Store::open(dir.path(), limits).await.unwrap();
        let err = store.begin("device-1", 11).unwrap_err();
        assert_eq!(err.status(), AckStatus::QuotaExceeded);
        assert_eq!(entries(&dir.path().join(INCOMING_DIR)), 0);
        let limits = StoreLimits {
            min_free_space: u64::MAX / 2,
            ..StoreLimits::default()
        };
        drop(store);
        let (store, _) = Store::open(dir.path(), limits).await.unwrap();
        let err = store.begin("device-1", 1).unwrap_err();
        assert_eq!(err.status(), AckStatus::InsufficientStorage);
        assert_eq!(entries(&dir.path().join(INCOMING_DIR)), 0);
        assert_eq!(blob_count(dir.path()), 0);
    }

    #[tokio::test]
    async fn startup_cleans_whatever_it_finds_and_counts_usage() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path()).await;
            store_file(&store, "kept.jpg", b"kept").await.unwrap();
            store_file(&store, "other.png", b"123456").await.unwrap();
        }
        let incoming = dir.path().join(INCOMING_DIR);
        fs::create_dir_all(incoming.join("stray/deeper")).unwrap();
        fs::write(incoming.join("stray/deeper/f"), b"x").unwrap();
        fs::write(incoming.join("x.part"), b"half").unwrap();
        // A symbolic link is removed, never followed.
        let outside = dir.path().join("outside.txt");
        fs::write(&outside, b"keep").unwrap();
        std::os::unix::fs::symlink(&outside, incoming.join("link")).unwrap();
        std::os::unix::fs::symlink(dir.path(), incoming.join("dirlink")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", incoming.join("dangling")).unwrap();
        // Content put in the blob store whose commit never happened.
        let blobs = FsBlobs::open(&dir.path().join(BLOBS_DIR)).unwrap();
        let orphan = dir.path().join("orphan");
        fs::write(&orphan, b"never committed").unwrap();
        blobs.put(&orphan).unwrap();
        // What the blob store did not make is left alone.
        let stray = dir.path().join(BLOBS_DIR).join("README");
        fs::write(&stray, b"not a blob").unwrap();
        let (store, cleanup) = Store::open(dir.path(), StoreLimits::default())
            .await
            .unwrap();
        assert_eq!(
            cleanup,
            Cleanup {
                partial_files: 5,
                orphan_blobs: 1,
                imported_files: 0
            }
        );
        assert_eq!(entries(&incoming), 0);
        assert_eq!(fs::read(&outside).unwrap(), b"keep");
        assert!(stray.exists());
        assert_eq!(blob_count(dir.path()), 2);
        assert_eq!(
            content(&store, "device-1", "kept.jpg").await.unwrap(),
            b"kept"
        );
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

    #[tokio::test]
    async fn a_second_open_of_the_same_folder_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(dir.path()).await;
        let clone = first.clone();
        let in_flight = dir.path().join(INCOMING_DIR).join("a.part");
        fs::write(&in_flight, b"in flight").unwrap();
        let err = Store::open(dir.path(), StoreLimits::default())
            .await
            .unwrap_err();
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
            Store::open(dir.path(), StoreLimits::default()).await,
            Err(OpenError::Locked { .. })
        ));
        drop(clone);
        let (_, cleanup) = Store::open(dir.path(), StoreLimits::default())
            .await
            .unwrap();
        assert_eq!(cleanup.partial_files, 1);
    }

    #[tokio::test]
    async fn a_data_folder_that_cannot_be_used_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        let err = Store::open(&file, StoreLimits::default())
            .await
            .unwrap_err();
        assert!(matches!(err, OpenError::NotAFolder { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "the data folder {} is not a folder; choose another --data-dir",
                file.display()
            )
        );
        let below = file.join("data");
        let err = Store::open(&below, StoreLimits::default())
            .await
            .unwrap_err();
        assert!(matches!(err, OpenError::Create { .. }), "{err}");
        assert!(err.to_string().contains(&below.display().to_string()));
        // Not writable even for root: a folder of the proc file system.
        let err = Store::open(Path::new("/proc/self"), StoreLimits::default())
            .await
            .unwrap_err();
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
        .await
        .unwrap_err();
        assert!(matches!(err, OpenError::Limits(_)), "{err}");
        // An index that is not a database.
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        fs::write(data.join(INDEX_FILE), b"not a database, not at all").unwrap();
        let err = Store::open(&data, StoreLimits::default())
            .await
            .unwrap_err();
        assert!(matches!(err, OpenError::Index(_)), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("the index {}", data.join(INDEX_FILE).display())),
            "{err}"
        );
    }

    #[tokio::test]
    async fn device_names_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        assert!(store.begin("../etc", 0).is_err());
        assert!(store.begin(".meta", 0).is_err());
        assert!(store.begin("", 0).is_err());
    }

    #[tokio::test]
    async fn the_index_and_blobs_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        store_file(&store, "a.jpg", b"a").await.unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join(INDEX_FILE)), 0o600);
        assert_eq!(mode(&dir.path().join(INCOMING_DIR)), 0o700);
        assert_eq!(mode(&dir.path().join(BLOBS_DIR)), 0o700);
        let file = store
            .index()
            .stored_file("device-1", "a.jpg")
            .await
            .unwrap()
            .unwrap();
        let blobs = FsBlobs::open(&dir.path().join(BLOBS_DIR)).unwrap();
        assert_eq!(mode(&blobs.path(&file.blob)), 0o600);
    }
}
