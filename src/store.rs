//! The server's data folder (proto-spec.md §8.3.4): verified files only,
//! one folder per device, published atomically.
//!
//! ```text
//! <data_dir>/
//!   <device>/                 device name from its certificate, never from the device
//!     <name>                  stored files, mode 0600
//!     .meta/<name>.json       one metadata record per stored file
//!     .incoming/*.part        transfers in flight; removed at start-up
//! ```
//!
//! Content streams into a temporary file in `.incoming/` on a blocking
//! writer thread (bounded channel: memory does not grow with file size).
//! Only after the caller has verified the signature does [`Verified::commit`]
//! fsync it and publish it: the metadata record and the file are hard-linked
//! to their final names, which fails instead of overwriting, so a name that
//! exists is never replaced; the next free name `stem (N).ext` is taken. A
//! dropped [`Incoming`] or [`Verified`] removes its temporary file. Because
//! the metadata record is published before the file, a visible file always
//! has its record; a record left without its file by a crash is removed at
//! start-up together with stale temporary files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::crypto::hash::{ContentHasher, HASH_LEN};
use crate::message::MAX_FILE_NAME_LEN;

const INCOMING: &str = ".incoming";
const META: &str = ".meta";
/// Chunks handed to the writer thread at once: fewer wake-ups.
const WRITE_BATCH: usize = 8;
/// Batches queued between the session and the writer thread.
const WRITE_QUEUE: usize = 2;
/// Most collision suffixes tried before giving up.
const MAX_SUFFIX: u32 = 10_000;

/// Why a proposed file name is refused (proto-spec.md §8.3.2).
pub fn validate_file_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the name is empty");
    }
    if name.len() > MAX_FILE_NAME_LEN {
        return Err("the name is longer than 200 bytes");
    }
    if name == "." || name == ".." {
        return Err("the name is a relative path component");
    }
    if name.starts_with('.') {
        return Err("the name starts with '.'");
    }
    if name.contains(['/', '\\']) {
        return Err("the name contains a path separator");
    }
    if name.chars().any(char::is_control) {
        return Err("the name contains a control character");
    }
    if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        return Err("the name starts or ends with white space");
    }
    Ok(())
}

/// What start-up cleaning removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cleanup {
    /// Temporary files of interrupted transfers.
    pub partial_files: usize,
    /// Metadata records whose file was never published.
    pub orphan_records: usize,
}

/// The data folder.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

fn create_dir_private(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

impl Store {
    /// Opens (creating if needed) the data folder and removes what
    /// interrupted transfers left behind.
    ///
    /// # Errors
    /// I/O errors creating or reading the folder.
    pub fn open(root: &Path) -> io::Result<(Self, Cleanup)> {
        create_dir_private(root)?;
        let mut cleanup = Cleanup::default();
        for entry in fs::read_dir(root)? {
            let entry = entry?;
            if !entry.file_type()?.is_dir() {
                continue;
            }
            let device = entry.path();
            if let Ok(partials) = fs::read_dir(device.join(INCOMING)) {
                for p in partials.flatten() {
                    fs::remove_file(p.path())?;
                    cleanup.partial_files += 1;
                }
            }
            if let Ok(records) = fs::read_dir(device.join(META)) {
                for r in records.flatten() {
                    let name = r.file_name();
                    let Some(stored) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                        continue;
                    };
                    if !device.join(stored).exists() {
                        fs::remove_file(r.path())?;
                        cleanup.orphan_records += 1;
                    }
                }
            }
        }
        Ok((
            Self {
                root: root.to_owned(),
            },
            cleanup,
        ))
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
        Ok(self.root.join(device))
    }

    /// Starts receiving a file from `device` into a temporary file.
    ///
    /// # Errors
    /// I/O errors creating the folders or the file.
    pub fn begin(&self, device: &str) -> io::Result<Incoming> {
        let dir = self.device_dir(device)?;
        create_dir_private(&dir.join(INCOMING))?;
        create_dir_private(&dir.join(META))?;
        let mut random = [0u8; 12];
        getrandom::fill(&mut random).map_err(io::Error::other)?;
        let temp = dir
            .join(INCOMING)
            .join(format!("{}.part", hex::encode(random)));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        let (tx, mut rx) = mpsc::channel::<Vec<Bytes>>(WRITE_QUEUE);
        let writer = tokio::task::spawn_blocking(move || {
            let mut file = file;
            let mut hasher = ContentHasher::new();
            let mut size = 0u64;
            while let Some(batch) = rx.blocking_recv() {
                for chunk in batch {
                    hasher.update(&chunk);
                    file.write_all(&chunk)?;
                    size += chunk.len() as u64;
                }
            }
            Ok(Written {
                file,
                content_hash: hasher.finish(),
                size,
            })
        });
        Ok(Incoming {
            pending: Vec::with_capacity(WRITE_BATCH),
            tx: Some(tx),
            writer: Some(writer),
            temp: TempFile(Some(temp)),
            dir,
        })
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

/// A file being received. Dropping it removes the temporary file.
pub struct Incoming {
    pending: Vec<Bytes>,
    tx: Option<mpsc::Sender<Vec<Bytes>>>,
    writer: Option<JoinHandle<io::Result<Written>>>,
    temp: TempFile,
    dir: PathBuf,
}

impl Incoming {
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
        })
    }
}

/// A completely received but not yet verified file. Dropping it removes
/// the temporary file.
pub struct Received {
    /// Bytes received.
    pub size: u64,
    /// SHA-256 of the bytes received.
    pub content_hash: [u8; HASH_LEN],
    file: File,
    temp: TempFile,
    dir: PathBuf,
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

impl Received {
    /// Publishes the file under `name`, or the first free `stem (N).ext`,
    /// with `record` (whose `stored_as` is filled in). The caller must have
    /// verified the signature first. Returns the name used.
    ///
    /// # Errors
    /// I/O errors; the temporary file is removed and nothing is published.
    pub async fn commit(self, name: &str, record: FileRecord) -> io::Result<String> {
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || self.commit_blocking(&name, record))
            .await
            .map_err(io::Error::other)?
    }

    fn commit_blocking(mut self, name: &str, mut record: FileRecord) -> io::Result<String> {
        validate_file_name(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.file.sync_all()?;
        let temp = self
            .temp
            .0
            .clone()
            .ok_or_else(|| io::Error::other("no temporary file"))?;
        let meta_dir = self.dir.join(META);
        for n in 0..MAX_SUFFIX {
            let candidate = candidate_name(name, n);
            if candidate.len() > 255 {
                break;
            }
            let target = self.dir.join(&candidate);
            if target.exists() {
                continue;
            }
            record.stored_as.clone_from(&candidate);
            let meta_temp = TempFile(Some(temp.with_extension("json")));
            let meta_temp_path = meta_temp.0.clone().unwrap_or_default();
            {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&meta_temp_path)?;
                serde_json::to_writer_pretty(&mut f, &record)?;
                f.write_all(b"\n")?;
                f.sync_all()?;
            }
            let meta_final = meta_dir.join(format!("{candidate}.json"));
            // Hard links fail rather than replace an existing name.
            match fs::hard_link(&meta_temp_path, &meta_final) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
            match fs::hard_link(&temp, &target) {
                Ok(()) => {}
                Err(e) => {
                    let _ = fs::remove_file(&meta_final);
                    if e.kind() == io::ErrorKind::AlreadyExists {
                        continue;
                    }
                    return Err(e);
                }
            }
            drop(meta_temp);
            drop(std::mem::replace(&mut self.temp, TempFile(None)));
            let _ = fs::remove_file(&temp);
            sync_dir(&meta_dir)?;
            sync_dir(&self.dir)?;
            return Ok(candidate);
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free name for the file",
        ))
    }
}

/// `name` for 0, else `stem (n).ext`.
fn candidate_name(name: &str, n: u32) -> String {
    if n == 0 {
        return name.to_owned();
    }
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem} ({n}).{ext}"),
        _ => format!("{name} ({n})"),
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn names_are_checked() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a\\b",
            "/abs",
            ".hidden",
            "nul\0",
            "tab\t",
            "cr\r",
            "esc\u{1b}",
            "c1\u{85}",
            " lead",
            "trail ",
        ] {
            assert!(validate_file_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_file_name(&"x".repeat(201)).is_err());
        for good in [
            "a",
            "IMG_0001.JPG",
            "clip été.mp4",
            "x".repeat(200).as_str(),
            "a..b",
        ] {
            assert!(validate_file_name(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn candidates() {
        assert_eq!(candidate_name("a.jpg", 0), "a.jpg");
        assert_eq!(candidate_name("a.jpg", 2), "a (2).jpg");
        assert_eq!(candidate_name("README", 1), "README (1)");
        assert_eq!(candidate_name("x.tar.gz", 1), "x.tar (1).gz");
    }

    #[tokio::test]
    async fn commit_publishes_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        let mut names = Vec::new();
        for content in [&b"one"[..], b"two", b"three"] {
            let mut inc = store.begin("device-1").unwrap();
            inc.write(Bytes::copy_from_slice(content)).await.unwrap();
            let rec = inc.finish().await.unwrap();
            assert_eq!(rec.size, content.len() as u64);
            names.push(rec.commit("a.jpg", record()).await.unwrap());
        }
        assert_eq!(names, ["a.jpg", "a (1).jpg", "a (2).jpg"]);
        let dev = dir.path().join("device-1");
        assert_eq!(fs::read(dev.join("a.jpg")).unwrap(), b"one");
        assert_eq!(fs::read(dev.join("a (2).jpg")).unwrap(), b"three");
        let meta: serde_json::Value =
            serde_json::from_slice(&fs::read(dev.join(".meta/a (1).jpg.json")).unwrap()).unwrap();
        assert_eq!(meta["stored_as"], "a (1).jpg");
        assert_eq!(fs::read_dir(dev.join(INCOMING)).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn dropped_transfers_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        let mut inc = store.begin("device-1").unwrap();
        inc.write(Bytes::from_static(b"partial")).await.unwrap();
        drop(inc);
        let inc = store.begin("device-1").unwrap();
        let rec = inc.finish().await.unwrap();
        drop(rec); // received but never verified
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let dev = dir.path().join("device-1");
        assert_eq!(fs::read_dir(dev.join(INCOMING)).unwrap().count(), 0);
        assert_eq!(
            fs::read_dir(&dev).unwrap().count(),
            2,
            "only .incoming and .meta"
        );
    }

    #[test]
    fn startup_removes_partials_and_orphan_records() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("device-1");
        fs::create_dir_all(dev.join(INCOMING)).unwrap();
        fs::create_dir_all(dev.join(META)).unwrap();
        fs::write(dev.join(INCOMING).join("x.part"), b"half").unwrap();
        fs::write(dev.join(META).join("gone.jpg.json"), b"{}").unwrap();
        fs::write(dev.join("kept.jpg"), b"k").unwrap();
        fs::write(dev.join(META).join("kept.jpg.json"), b"{}").unwrap();
        let (_, cleanup) = Store::open(dir.path()).unwrap();
        assert_eq!(
            cleanup,
            Cleanup {
                partial_files: 1,
                orphan_records: 1
            }
        );
        assert!(dev.join(META).join("kept.jpg.json").exists());
        assert!(!dev.join(META).join("gone.jpg.json").exists());
    }

    #[test]
    fn device_folders_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path()).unwrap();
        assert!(store.begin("../etc").is_err());
        assert!(store.begin(".meta").is_err());
    }
}
