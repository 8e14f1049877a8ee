//! Where a download lands on the device: an unnamed temporary file in the
//! destination's folder, written and hashed on a blocking thread, that gets
//! its name only after the caller verified it (proto-spec.md §13.5).
//!
//! On Linux the file is opened with `O_TMPFILE`: it has no name at all until
//! it is linked into place, so a download killed at any point (even by
//! `kill -9`) leaves nothing behind. Where the file system cannot do that, a
//! hidden named temporary file (`.secured-*.part`, mode 0600) is used and
//! removed on every exit but a kill. Linking fails instead of replacing an
//! existing file; with `force` the file is linked under a temporary name
//! and renamed over the destination, atomically.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::crypto::hash::{ContentHasher, HASH_LEN};

/// Chunks queued between the session and the writer thread.
const QUEUE: usize = 16;

enum Temp {
    /// `O_TMPFILE`: no name yet.
    Unnamed,
    /// A named temporary file, removed on drop unless persisted.
    Named(tempfile::TempPath),
}

/// What the writer thread hands back: the file, its SHA-256 and size.
type WriterResult = io::Result<(File, [u8; HASH_LEN], u64)>;

/// A download being written.
pub(crate) struct Sink {
    tx: Option<mpsc::Sender<Bytes>>,
    writer: Option<JoinHandle<WriterResult>>,
    temp: Option<Temp>,
    dir: PathBuf,
}

/// A download written in full, not yet verified or named.
pub(crate) struct Written {
    /// SHA-256 of the content.
    pub(crate) sha256: [u8; HASH_LEN],
    /// Bytes written.
    pub(crate) size: u64,
    file: File,
    temp: Temp,
    dir: PathBuf,
}

fn open_temp(dir: &Path) -> io::Result<(File, Temp)> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC;
    match rustix::fs::open(dir, flags, Mode::from_raw_mode(0o600)) {
        Ok(fd) => Ok((File::from(fd), Temp::Unnamed)),
        // No O_TMPFILE here: a hidden named file instead.
        Err(_) => {
            let named = tempfile::Builder::new()
                .prefix(".secured-")
                .suffix(".part")
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .tempfile_in(dir)?;
            let (file, path) = named.into_parts();
            Ok((file, Temp::Named(path)))
        }
    }
}

impl Sink {
    /// Starts a download into `dir` (the destination's folder).
    ///
    /// # Errors
    /// The temporary file cannot be created.
    pub(crate) fn create(dir: &Path) -> io::Result<Self> {
        let (file, temp) = open_temp(dir)?;
        let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
        let writer = tokio::task::spawn_blocking(move || {
            let mut file = file;
            let mut hasher = ContentHasher::new();
            let mut size = 0u64;
            let mut out = io::BufWriter::with_capacity(1 << 20, &mut file);
            while let Some(chunk) = rx.blocking_recv() {
                hasher.update(&chunk);
                out.write_all(&chunk)?;
                size += chunk.len() as u64;
            }
            out.flush()?;
            drop(out);
            Ok((file, hasher.finish(), size))
        });
        Ok(Self {
            tx: Some(tx),
            writer: Some(writer),
            temp: Some(temp),
            dir: dir.to_owned(),
        })
    }

    /// Queues a chunk for the writer thread.
    ///
    /// # Errors
    /// The writer's error, if it stopped on one.
    pub(crate) async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        let sent = match &self.tx {
            Some(tx) => tx.send(chunk).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        Err(match self.writer.take() {
            Some(w) => match w.await {
                Ok(Err(e)) => e,
                _ => io::Error::other("the writer thread stopped"),
            },
            None => io::Error::other("the download is already finished"),
        })
    }

    /// Waits until everything is written.
    ///
    /// # Errors
    /// The first write error.
    pub(crate) async fn finish(mut self) -> io::Result<Written> {
        drop(self.tx.take());
        let (file, sha256, size) = match self.writer.take() {
            Some(w) => w.await.map_err(io::Error::other)??,
            None => return Err(io::Error::other("the download is already finished")),
        };
        let temp = self
            .temp
            .take()
            .ok_or_else(|| io::Error::other("no temporary file"))?;
        Ok(Written {
            sha256,
            size,
            file,
            temp,
            dir: self.dir.clone(),
        })
    }
}

/// Why a verified download could not be put in place.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PersistError {
    /// The destination exists and `force` was not given.
    #[error("{} already exists", .0.display())]
    Exists(PathBuf),
    /// Syncing or linking failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A free temporary name in `dir`, for the replace-by-rename of `force`.
fn side_name(dir: &Path) -> io::Result<PathBuf> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(io::Error::other)?;
    Ok(dir.join(format!(".secured-{}.part", hex::encode(random))))
}

impl Written {
    /// Makes the verified file durable and gives it the name `dest` (in the
    /// folder the sink was created in). Without `force`, an existing `dest`
    /// is never replaced.
    ///
    /// # Errors
    /// [`PersistError`]; nothing is at `dest` then (unless it was there).
    pub(crate) fn persist(self, dest: &Path, force: bool) -> Result<(), PersistError> {
        self.file.sync_all()?;
        let link = |target: &Path| -> io::Result<()> {
            match &self.temp {
                Temp::Unnamed => {
                    let proc_path = format!("/proc/self/fd/{}", self.file.as_raw_fd());
                    rustix::fs::linkat(
                        rustix::fs::CWD,
                        proc_path.as_str(),
                        rustix::fs::CWD,
                        target,
                        rustix::fs::AtFlags::SYMLINK_FOLLOW,
                    )
                    .map_err(io::Error::from)
                }
                Temp::Named(path) => std::fs::hard_link(path, target),
            }
        };
        if force {
            let side = side_name(&self.dir)?;
            link(&side)?;
            if let Err(e) = std::fs::rename(&side, dest) {
                let _ = std::fs::remove_file(&side);
                return Err(e.into());
            }
        } else {
            match link(dest) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(PersistError::Exists(dest.to_owned()));
                }
                Err(e) => return Err(e.into()),
            }
        }
        sync_dir(&self.dir)?;
        // A named temporary file is removed as `self.temp` drops.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nothing_is_visible_until_persisted_and_nothing_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = Sink::create(dir.path()).unwrap();
        sink.write(Bytes::from_static(b"hello ")).await.unwrap();
        sink.write(Bytes::from_static(b"world")).await.unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let written = sink.finish().await.unwrap();
        assert_eq!(written.size, 11);
        assert_eq!(
            written.sha256,
            crate::crypto::hash::sha256(&[b"hello world"])
        );
        let dest = dir.path().join("out.txt");
        written.persist(&dest, false).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello world");
        let mode = std::fs::metadata(&dest).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );

        let mut sink = Sink::create(dir.path()).unwrap();
        sink.write(Bytes::from_static(b"other")).await.unwrap();
        let written = sink.finish().await.unwrap();
        assert!(matches!(
            written.persist(&dest, false),
            Err(PersistError::Exists(_))
        ));
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello world");
        let mut sink = Sink::create(dir.path()).unwrap();
        sink.write(Bytes::from_static(b"other")).await.unwrap();
        sink.finish().await.unwrap().persist(&dest, true).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"other");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn a_dropped_download_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = Sink::create(dir.path()).unwrap();
        sink.write(Bytes::from_static(b"partial")).await.unwrap();
        drop(sink);
        let sink = Sink::create(dir.path()).unwrap();
        drop(sink.finish().await.unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
