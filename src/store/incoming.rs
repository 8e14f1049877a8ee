//! One upload on its way to the disk: the writer thread that streams it
//! into a temporary file in `incoming/`, and the commit that makes it a
//! blob and a row of the index once its signature verified.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Store;
use super::names::{MAX_SUFFIX, split_extension, validate_file_name};
use super::quota::Reservation;
use crate::crypto::hash::{ContentHasher, HASH_LEN};
use crate::index::{Committed, IndexError, NewFile};

/// Chunks handed to the writer thread at once: fewer wake-ups.
const WRITE_BATCH: usize = 8;
/// Batches queued between the session and the writer thread.
const WRITE_QUEUE: usize = 2;

/// Why a received file was not committed. Nothing was.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Every collision suffix up to [`MAX_SUFFIX`] is taken.
    #[error("no free name for {name:?}: every suffix up to ({MAX_SUFFIX}) is taken")]
    NoFreeName {
        /// The proposed name.
        name: String,
    },
    /// Syncing or storing the content failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The index could not commit the file.
    #[error(transparent)]
    Index(#[from] IndexError),
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
            Self::Io(_) | Self::Index(_) => "the server could not store the file".to_owned(),
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
    store: Store,
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
    /// Starts the writer thread for `file`, a new temporary file at `temp`,
    /// to be committed into `store`.
    pub(super) fn start(file: File, temp: PathBuf, store: Store, reservation: Reservation) -> Self {
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
            store,
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
            store: self.store.clone(),
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
    store: Store,
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

impl Received {
    /// Commits the file, described by `new`: fsyncs it, puts it into the
    /// blob store, then commits its row (and its stored name, proto-spec.md
    /// §8.3.4) to the index. The caller must have verified the signature
    /// first, over this content (`new.size` and `new.sha256` must be what
    /// was received). The commit goes on even if the caller stops waiting.
    ///
    /// # Errors
    /// [`CommitError`]; the temporary file and the blob are removed and
    /// nothing is committed.
    pub async fn commit(self, new: NewFile) -> Result<Committed, CommitError> {
        tokio::spawn(self.commit_task(new))
            .await
            .map_err(|e| CommitError::Io(io::Error::other(e)))?
    }

    async fn commit_task(self, new: NewFile) -> Result<Committed, CommitError> {
        let Self {
            size,
            content_hash,
            file,
            temp,
            store,
            reservation,
        } = self;
        if new.size != size || new.sha256 != content_hash {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the metadata does not describe the content received",
            )
            .into());
        }
        validate_file_name(&new.name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let blobs = store.blobs();
        let key = tokio::task::spawn_blocking(move || {
            let mut temp = temp;
            // On failure, dropping `temp` removes the temporary file.
            file.sync_all()?;
            let path = temp
                .0
                .clone()
                .ok_or_else(|| io::Error::other("no temporary file"))?;
            let key = blobs.put(&path)?;
            temp.0 = None;
            Ok::<_, io::Error>(key)
        })
        .await
        .map_err(io::Error::other)??;
        match store.index().commit_file(&new, &key).await {
            Ok(committed) => {
                if let Some(reservation) = reservation {
                    reservation.stored(size);
                }
                Ok(committed)
            }
            Err(e) => {
                // No row refers to the blob: take it back (or the next
                // start-up will).
                let blobs = store.blobs();
                let deleted = tokio::task::spawn_blocking(move || blobs.delete(&key)).await;
                match deleted.map_err(io::Error::other).and_then(|r| r) {
                    Ok(()) => {}
                    Err(err) => tracing::warn!(
                        error = %err,
                        "cannot remove the content of a file that was not committed"
                    ),
                }
                Err(e)
            }
        }
    }
}
