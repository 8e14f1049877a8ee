//! IMGX file streams (proto-spec.md §8.3): the signed file digest, the
//! device's file reader, and the server's per-session upload state.
//!
//! Both sides hash the content once, as it streams, on a thread of its own
//! beside the session task: the device while reading the file, the server
//! while writing it (see [`crate::store`]). Memory is bounded by the
//! channels between them, whatever the file size.

use std::io::{self, Read};
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::crypto::RsaPublicKey;
use crate::crypto::hash::{ContentHasher, HASH_LEN, sha256};
use crate::message::{
    Ack, AckStatus, AlertCode, IMGX_DATA_HEADER_LEN, Imgx, ImgxOpen, MAX_CHUNK_LEN, MediaKind,
    Message, StreamId,
};
use crate::store::{FileRecord, Incoming, Store, validate_file_name};

/// Context string at the start of the signed file digest (proto-spec.md §8.3.3).
pub const FILE_DIGEST_CONTEXT: &[u8] = b"secured/1 file\0";
/// Chunks read ahead of the session by the device's reader thread: two
/// lockstep groups, so the session finds a full group ready.
const READ_AHEAD: usize = 2 * crate::crypto::cipher::LANES;

/// The digest the device signs: it binds the metadata of the `OPEN` and
/// the SHA-256 of the content (proto-spec.md §8.3.3).
#[must_use]
pub fn file_digest(
    kind: MediaKind,
    size: u64,
    name: &str,
    content_type: &str,
    content_hash: &[u8; HASH_LEN],
) -> [u8; HASH_LEN] {
    let len16 = |s: &str| u16::try_from(s.len()).unwrap_or(u16::MAX).to_be_bytes();
    sha256(&[
        FILE_DIGEST_CONTEXT,
        &[kind.to_u8()],
        &size.to_be_bytes(),
        &len16(name),
        name.as_bytes(),
        &len16(content_type),
        content_type.as_bytes(),
        content_hash,
    ])
}

/// The result of reading a file to the end.
#[derive(Debug, Clone, Copy)]
pub struct ReadResult {
    /// SHA-256 of everything read.
    pub content_hash: [u8; HASH_LEN],
    /// Bytes read.
    pub size: u64,
}

/// Reads `path` on a blocking thread into ready-to-seal `IMGX` data
/// plaintexts for `stream` (header included), hashing as it goes. At most
/// a few chunks are in flight, so memory does not depend on the file size.
///
/// # Errors
/// The file cannot be opened (reported before any chunk).
pub fn spawn_reader(
    path: &Path,
    stream: StreamId,
) -> io::Result<(mpsc::Receiver<Bytes>, JoinHandle<io::Result<ReadResult>>)> {
    let mut file = std::fs::File::open(path)?;
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let header = Imgx::data_header(stream);
    let task = tokio::task::spawn_blocking(move || {
        let mut hasher = ContentHasher::new();
        let mut size = 0u64;
        loop {
            // read_to_end fills spare capacity without zeroing it first.
            let mut buf = Vec::with_capacity(IMGX_DATA_HEADER_LEN + MAX_CHUNK_LEN);
            buf.extend_from_slice(&header);
            let n = (&mut file)
                .take(MAX_CHUNK_LEN as u64)
                .read_to_end(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[IMGX_DATA_HEADER_LEN..]);
            size += n as u64;
            if tx.blocking_send(Bytes::from(buf)).is_err() {
                // The session stopped listening; stop reading.
                break;
            }
        }
        Ok(ReadResult {
            content_hash: hasher.finish(),
            size,
        })
    });
    Ok((rx, task))
}

/// Settings of the server's uploads.
#[derive(Debug, Clone)]
pub struct UploadLimits {
    /// Largest file accepted, in bytes.
    pub max_file_size: u64,
}

impl Default for UploadLimits {
    fn default() -> Self {
        Self {
            max_file_size: 64 << 30,
        }
    }
}

/// What the server sends back after an `IMGX` message, if anything.
#[derive(Debug)]
pub enum Reply {
    /// Nothing (data chunks).
    None,
    /// An `ACK_`.
    Ack(Message),
    /// A fatal protocol violation: send this alert and close.
    Fatal(AlertCode, &'static str),
}

/// The upload a session has in progress (at most one, proto-spec.md §8.3.1).
pub struct Upload {
    open: ImgxOpen,
    incoming: Option<Incoming>,
    storage_error: Option<io::Error>,
    received: u64,
    started: Instant,
}

fn ack(stream: StreamId, status: AckStatus, detail: impl Into<Vec<u8>>) -> Reply {
    Reply::Ack(Message::Ack(Ack {
        stream,
        status,
        detail: detail.into(),
    }))
}

/// The sender of an upload, as its certificate names it.
pub struct Sender<'a> {
    /// Device name (storage folder).
    pub device: &'a str,
    /// Certificate serial, hex.
    pub serial: String,
    /// The key its file signatures must verify under.
    pub key: &'a dyn RsaPublicKey,
}

/// Handles one `IMGX` message of a session whose upload state is `active`.
pub async fn handle(
    msg: Imgx,
    active: &mut Option<Upload>,
    store: &Store,
    limits: &UploadLimits,
    sender: &Sender<'_>,
) -> Reply {
    match msg {
        Imgx::Open(open) => {
            if active.is_some() {
                return Reply::Fatal(
                    AlertCode::UnexpectedMessage,
                    "a second IMGX stream was opened",
                );
            }
            if let Err(reason) = validate_file_name(&open.name) {
                tracing::warn!(name = ?open.name, reason, "refused file name");
                return Reply::Fatal(AlertCode::IllegalParameter, reason);
            }
            if open.size > limits.max_file_size {
                return ack(
                    open.stream,
                    AckStatus::TooLarge,
                    format!(
                        "the server accepts files up to {} bytes",
                        limits.max_file_size
                    ),
                );
            }
            match store.begin(sender.device, open.size) {
                Ok(incoming) => {
                    let stream = open.stream;
                    *active = Some(Upload {
                        open,
                        incoming: Some(incoming),
                        storage_error: None,
                        received: 0,
                        started: Instant::now(),
                    });
                    ack(stream, AckStatus::Ok, Vec::new())
                }
                Err(e) => {
                    if e.status() == AckStatus::StorageError {
                        tracing::error!(error = %e, "cannot create a temporary file");
                    } else {
                        tracing::warn!(name = ?open.name, size = open.size, status = %e.status(), reason = %e, "refused a file");
                    }
                    ack(open.stream, e.status(), e.detail())
                }
            }
        }
        Imgx::Data { stream, chunk } => {
            let Some(up) = active.as_mut().filter(|u| u.open.stream == stream) else {
                return Reply::Fatal(
                    AlertCode::UnexpectedMessage,
                    "data for a stream that is not open",
                );
            };
            up.received += chunk.len() as u64;
            if up.received > up.open.size {
                *active = None;
                return Reply::Fatal(
                    AlertCode::IllegalParameter,
                    "more data than the declared size",
                );
            }
            if let Some(incoming) = up.incoming.as_mut()
                && let Err(e) = incoming.write(chunk).await
            {
                tracing::error!(error = %e, "writing a received file failed");
                up.incoming = None;
                up.storage_error = Some(e);
            }
            Reply::None
        }
        Imgx::Abort { stream, reason } => {
            if active.as_ref().is_none_or(|u| u.open.stream != stream) {
                return Reply::Fatal(
                    AlertCode::UnexpectedMessage,
                    "abort of a stream that is not open",
                );
            }
            let up = active.take();
            tracing::info!(name = ?up.map(|u| u.open.name), reason = ?reason, "device abandoned a transfer");
            ack(stream, AckStatus::Aborted, Vec::new())
        }
        Imgx::Done { stream, signature } => {
            let Some(up) = active.take_if(|u| u.open.stream == stream) else {
                return Reply::Fatal(
                    AlertCode::UnexpectedMessage,
                    "end of a stream that is not open",
                );
            };
            if up.received != up.open.size {
                return Reply::Fatal(
                    AlertCode::IllegalParameter,
                    "less data than the declared size",
                );
            }
            finish(up, &signature, sender).await
        }
    }
}

async fn finish(up: Upload, signature: &[u8], sender: &Sender<'_>) -> Reply {
    let stream = up.open.stream;
    let (Some(incoming), None) = (up.incoming, up.storage_error) else {
        return ack(
            stream,
            AckStatus::StorageError,
            "the server could not write the file",
        );
    };
    let received = match incoming.finish().await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "writing a received file failed");
            return ack(
                stream,
                AckStatus::StorageError,
                "the server could not write the file",
            );
        }
    };
    let o = &up.open;
    let digest = file_digest(
        o.kind,
        received.size,
        &o.name,
        &o.content_type,
        &received.content_hash,
    );
    if sender.key.pss_verify_digest(&digest, signature).is_err() {
        tracing::warn!(name = ?o.name, size = received.size, "file signature does not verify; discarded");
        return ack(
            stream,
            AckStatus::BadSignature,
            "the file signature does not verify",
        );
    }
    let sha256_hex = hex::encode(received.content_hash);
    let duration = up.started.elapsed();
    let record = FileRecord {
        name: o.name.clone(),
        stored_as: String::new(),
        device: sender.device.to_owned(),
        device_cert_serial: sender.serial.clone(),
        size: received.size,
        kind: o.kind.name().to_owned(),
        content_type: o.content_type.clone(),
        sha256: sha256_hex.clone(),
        file_digest: hex::encode(digest),
        signature: hex::encode(signature),
        received_at: now_rfc3339(),
        duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
    };
    let content_hash = received.content_hash;
    let size = received.size;
    match received.commit(&o.name, record).await {
        Ok(stored_as) => {
            tracing::info!(
                name = ?o.name,
                stored_as = ?stored_as,
                size,
                sha256 = %sha256_hex,
                content_type = %o.content_type,
                duration_ms = duration.as_millis() as u64,
                "file stored"
            );
            let mut detail = content_hash.to_vec();
            detail.extend_from_slice(stored_as.as_bytes());
            ack(stream, AckStatus::Ok, detail)
        }
        Err(e) => {
            tracing::error!(error = %e, "publishing a received file failed");
            ack(stream, AckStatus::StorageError, e.detail())
        }
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_binds_every_field() {
        let base = file_digest(MediaKind::Image, 3, "a.png", "image/png", &[1; 32]);
        for other in [
            file_digest(MediaKind::Video, 3, "a.png", "image/png", &[1; 32]),
            file_digest(MediaKind::Image, 4, "a.png", "image/png", &[1; 32]),
            file_digest(MediaKind::Image, 3, "b.png", "image/png", &[1; 32]),
            file_digest(MediaKind::Image, 3, "a.png", "image/jpeg", &[1; 32]),
            file_digest(MediaKind::Image, 3, "a.png", "image/png", &[2; 32]),
            // Moving bytes between name and type must change the digest.
            file_digest(MediaKind::Image, 3, "a.pngi", "mage/png", &[1; 32]),
        ] {
            assert_ne!(base, other);
        }
    }

    #[tokio::test]
    async fn reader_chunks_hash_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let content: Vec<u8> = (0..(MAX_CHUNK_LEN * 2 + 7))
            .map(|i| (i * 31) as u8)
            .collect();
        std::fs::write(&path, &content).unwrap();
        let (mut rx, task) = spawn_reader(&path, StreamId(9)).unwrap();
        let mut got = Vec::new();
        let mut chunks = 0;
        while let Some(c) = rx.recv().await {
            assert_eq!(&c[..IMGX_DATA_HEADER_LEN], &Imgx::data_header(StreamId(9)));
            got.extend_from_slice(&c[IMGX_DATA_HEADER_LEN..]);
            chunks += 1;
        }
        let result = task.await.unwrap().unwrap();
        assert_eq!(chunks, 3);
        assert_eq!(got, content);
        assert_eq!(result.size, content.len() as u64);
        assert_eq!(result.content_hash, sha256(&[&content]));
    }
}
