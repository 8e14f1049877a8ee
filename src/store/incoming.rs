//! One upload on its way to the disk: the writer thread that streams it
//! into a temporary file in `.incoming/`, and the publish step that makes it
//! visible once its signature verified.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::META;
use super::names::{MAX_SUFFIX, candidate_name, free_suffix, split_extension, validate_file_name};
use super::quota::Reservation;
use crate::crypto::hash::{ContentHasher, HASH_LEN};

/// Chunks handed to the writer thread at once: fewer wake-ups.
const WRITE_BATCH: usize = 8;
/// Batches queued between the session and the writer thread.
const WRITE_QUEUE: usize = 2;
/// Searches for a free name before giving up when concurrent uploads keep
/// taking the name found.
const PUBLISH_ATTEMPTS: usize = 16;

/// Why a received file was not published. Nothing was.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Every collision suffix up to [`MAX_SUFFIX`] is taken.
    #[error("no free name for {name:?}: every suffix up to ({MAX_SUFFIX}) is taken")]
    NoFreeName {
        /// The proposed name.
        name: String,
    },
    /// Writing, syncing or linking failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl CommitError {
    /// A short reason for the device (no paths, no system details).
    #[must_use]
    pub fn detail(&self) -> String {
        match self {
            Self::NoFreeName { name } => {
                let (stem, ext) = split_extension(name);
                format!(
                    "no free name: {name}, {stem} (1){ext} to {stem} ({MAX_SUFFIX}){ext} are all taken; send it under another name"
                )
            }
            Self::Io(_) => "the server could not store the file".to_owned(),
        }
    }
}

struct Written {
    file: File,
    content_hash: [u8; HASH_LEN],
    size: u64,
}

/// Removes the file at its path when dropped, unless disarmed.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(path);
        }
    }
}

/// A file being received. Dropping it removes the temporary file and gives
/// its reservation back.
pub struct Incoming {
    pending: Vec<Bytes>,
    tx: Option<mpsc::Sender<Vec<Bytes>>>,
    writer: Option<JoinHandle<io::Result<Written>>>,
    temp: TempFile,
    dir: PathBuf,
    reservation: Option<Reservation>,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("temp", &self.temp.0)
            .finish_non_exhaustive()
    }
}

impl Incoming {
    /// Starts the writer thread for `file`, a new temporary file at `temp`
    /// in the device folder `dir`.
    pub(super) fn start(file: File, temp: PathBuf, dir: PathBuf, reservation: Reservation) -> Self {
        let (tx, mut rx) = mpsc::channel::<Vec<Bytes>>(WRITE_QUEUE);
        let written: Arc<AtomicU64> = reservation.written();
        let writer = tokio::task::spawn_blocking(move || {
            let mut file = file;
            let mut hasher = ContentHasher::new();
            let mut size = 0u64;
            while let Some(batch) = rx.blocking_recv() {
                for chunk in batch {
                    hasher.update(&chunk);
                    file.write_all(&chunk)?;
                    size += chunk.len() as u64;
                    written.store(size, Ordering::Relaxed);
                }
            }
            Ok(Written {
                file,
                content_hash: hasher.finish(),
                size,
            })
        });
        Self {
            pending: Vec::with_capacity(WRITE_BATCH),
            tx: Some(tx),
            writer: Some(writer),
            temp: TempFile(Some(temp)),
            dir,
            reservation: Some(reservation),
        }
    }

    /// Queues a chunk for the writer thread (which also hashes it); chunks
    /// travel in batches of [`WRITE_BATCH`].
    ///
    /// # Errors
    /// The write error, if the writer thread stopped on one.
    pub async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        self.pending.push(chunk);
        if self.pending.len() >= WRITE_BATCH {
            self.send_pending().await?;
        }
        Ok(())
    }

    async fn send_pending(&mut self) -> io::Result<()> {
        let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(WRITE_BATCH));
        let sent = match &self.tx {
            Some(tx) => tx.send(batch).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The writer ended early: report its error.
        Err(match self.writer.take() {
            Some(w) => match w.await {
                Ok(Err(e)) => e,
                _ => io::Error::other("the writer thread stopped"),
            },
            None => io::Error::other("the transfer is already finished"),
        })
    }

    /// Waits until every chunk is written and returns the content's size
    /// and SHA-256. The file is still temporary.
    ///
    /// # Errors
    /// The first write error.
    pub async fn finish(mut self) -> io::Result<Received> {
        if !self.pending.is_empty() {
            self.send_pending().await?;
        }
        drop(self.tx.take());
        let written = match self.writer.take() {
            Some(w) => w.await.map_err(io::Error::other)??,
            None => return Err(io::Error::other("the transfer is already finished")),
        };
        Ok(Received {
            size: written.size,
            content_hash: written.content_hash,
            file: written.file,
            temp: std::mem::replace(&mut self.temp, TempFile(None)),
            dir: self.dir.clone(),
            reservation: self.reservation.take(),
        })
    }
}

/// A completely received but not yet verified file. Dropping it removes
/// the temporary file and gives its reservation back.
pub struct Received {
    /// Bytes received.
    pub size: u64,
    /// SHA-256 of the bytes received.
    pub content_hash: [u8; HASH_LEN],
    file: File,
    temp: TempFile,
    dir: PathBuf,
    reservation: Option<Reservation>,
}

impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Received")
            .field("size", &self.size)
            .field("temp", &self.temp.0)
            .finish_non_exhaustive()
    }
}

/// The metadata record stored beside each file (`.meta/<name>.json`).
#[derive(Debug, Clone, Serialize)]
pub struct FileRecord {
    /// The name the device proposed.
    pub name: String,
    /// The name the file was stored under (differs after a collision).
    pub stored_as: String,
    /// The sender: the device name from its certificate.
    pub device: String,
    /// Serial number of the device certificate, hex.
    pub device_cert_serial: String,
    /// Size in bytes.
    pub size: u64,
    /// `image` or `video`.
    pub kind: String,
    /// Media type declared by the device.
    pub content_type: String,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// The signed file digest (proto-spec.md §8.3.3), hex.
    pub file_digest: String,
    /// The device's RSA-PSS signature over `file_digest`, hex.
    pub signature: String,
    /// When the transfer completed, RFC 3339, UTC.
    pub received_at: String,
    /// Transfer duration in milliseconds.
    pub duration_ms: u64,
}

/// Whether `name` is taken in the device folder `dir`: by a file (of any
/// kind) or by a metadata record (a publish in progress).
fn taken(dir: &Path, name: &str) -> io::Result<bool> {
    for path in [dir.join(name), dir.join(META).join(format!("{name}.json"))] {
        match fs::symlink_metadata(&path) {
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

impl Received {
    /// Publishes the file under `name`, or a free `stem (N).ext`
    /// (proto-spec.md §8.3.4), with `record` (whose `stored_as` is filled
    /// in). The caller must have verified the signature first. Returns the
    /// name used.
    ///
    /// # Errors
    /// [`CommitError`]; the temporary file is removed and nothing is
    /// published.
    pub async fn commit(self, name: &str, record: FileRecord) -> Result<String, CommitError> {
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || self.commit_blocking(&name, record))
            .await
            .map_err(|e| CommitError::Io(io::Error::other(e)))?
    }

    fn commit_blocking(
        mut self,
        name: &str,
        mut record: FileRecord,
    ) -> Result<String, CommitError> {
        validate_file_name(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.file.sync_all()?;
        let temp = self
            .temp
            .0
            .clone()
            .ok_or_else(|| io::Error::other("no temporary file"))?;
        let meta_dir = self.dir.join(META);
        for _ in 0..PUBLISH_ATTEMPTS {
            let Some(n) = free_suffix(|n| taken(&self.dir, &candidate_name(name, n)))? else {
                return Err(CommitError::NoFreeName {
                    name: name.to_owned(),
                });
            };
            let candidate = candidate_name(name, n);
            let target = self.dir.join(&candidate);
            record.stored_as.clone_from(&candidate);
            let meta_temp = TempFile(Some(temp.with_extension("json")));
            let meta_temp_path = meta_temp.0.clone().unwrap_or_default();
            {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&meta_temp_path)?;
                serde_json::to_writer_pretty(&mut f, &record).map_err(io::Error::from)?;
                f.write_all(b"\n")?;
                f.sync_all()?;
            }
            let meta_final = meta_dir.join(format!("{candidate}.json"));
            // Hard links fail rather than replace an existing name.
            match fs::hard_link(&meta_temp_path, &meta_final) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e.into()),
            }
            if let Err(e) = fs::hard_link(&temp, &target) {
                let _ = fs::remove_file(&meta_final);
                if e.kind() == io::ErrorKind::AlreadyExists {
                    continue;
                }
                return Err(e.into());
            }
            // Durable before it is reported: if the folders cannot be
            // synced, take the file back rather than claim it is stored.
            if let Err(e) = sync_dir(&meta_dir).and_then(|()| sync_dir(&self.dir)) {
                let _ = fs::remove_file(&target);
                let _ = fs::remove_file(&meta_final);
                return Err(e.into());
            }
            drop(meta_temp);
            drop(std::mem::replace(&mut self.temp, TempFile(None)));
            let _ = fs::remove_file(&temp);
            if let Some(reservation) = self.reservation.take() {
                reservation.stored(self.size);
            }
            return Ok(candidate);
        }
        Err(io::Error::other("concurrent uploads kept taking the free name found").into())
    }
}
