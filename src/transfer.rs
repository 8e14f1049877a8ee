//! IMGX file streams (proto-spec.md §8.3): the signed file digest, the
//! device's file reader, and the limits of the server's uploads (whose
//! service is [`crate::service::upload`]).
//!
//! Both sides hash the content once, as it streams, on a thread of its own
//! beside the session task: the device while reading the file, the server
//! while writing it (see [`crate::store`]). Memory is bounded by the
//! channels between them, whatever the file size.

use std::io::{self, Read};
use std::path::Path;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::crypto::hash::{ContentHasher, HASH_LEN, sha256};
use crate::message::{
    IMGX_DATA_HEADER_LEN, Imgx, ImgxOpen, MAX_CHUNK_LEN, MediaKind, Sharing, StreamId,
};

/// Context string at the start of the signed file digest (proto-spec.md §8.3.3).
pub const FILE_DIGEST_CONTEXT: &[u8] = b"secured/1 file\0";
/// Context string of the version 2 file digest (proto-spec.md §13.3).
pub const FILE_DIGEST_CONTEXT_V2: &[u8] = b"secured/2 file\0";
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
    digest_of(
        FILE_DIGEST_CONTEXT,
        kind,
        size,
        name,
        content_type,
        &[],
        content_hash,
    )
}

/// The version 2 digest (proto-spec.md §13.3): the version 1 fields, then
/// the signing time and the scope before the content hash.
#[must_use]
pub fn file_digest_v2(
    kind: MediaKind,
    size: u64,
    name: &str,
    content_type: &str,
    sharing: &Sharing,
    content_hash: &[u8; HASH_LEN],
) -> [u8; HASH_LEN] {
    let mut signed = sharing.signed_at.to_be_bytes().to_vec();
    sharing.scope.encode(&mut signed);
    let context = FILE_DIGEST_CONTEXT_V2;
    digest_of(
        context,
        kind,
        size,
        name,
        content_type,
        &signed,
        content_hash,
    )
}

/// SHA-256 of `context ‖ kind ‖ size ‖ name ‖ content_type ‖ extra ‖
/// content_hash`, with the two strings length-prefixed.
fn digest_of(
    context: &[u8],
    kind: MediaKind,
    size: u64,
    name: &str,
    content_type: &str,
    extra: &[u8],
    content_hash: &[u8; HASH_LEN],
) -> [u8; HASH_LEN] {
    let len16 = |s: &str| u16::try_from(s.len()).unwrap_or(u16::MAX).to_be_bytes();
    sha256(&[
        context,
        &[kind.to_u8()],
        &size.to_be_bytes(),
        &len16(name),
        name.as_bytes(),
        &len16(content_type),
        content_type.as_bytes(),
        extra,
        content_hash,
    ])
}

/// The digest an `OPEN` and its content are signed over: version 2 when the
/// `OPEN` carries sharing, version 1 otherwise.
#[must_use]
pub fn open_digest(open: &ImgxOpen, size: u64, content_hash: &[u8; HASH_LEN]) -> [u8; HASH_LEN] {
    match &open.sharing {
        Some(sharing) => file_digest_v2(
            open.kind,
            size,
            &open.name,
            &open.content_type,
            sharing,
            content_hash,
        ),
        None => file_digest(
            open.kind,
            size,
            &open.name,
            &open.content_type,
            content_hash,
        ),
    }
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
