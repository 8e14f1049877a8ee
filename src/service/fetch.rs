//! `FTCH` (proto-spec.md §13.5): a verified download. The server sends the
//! file's head (its metadata, the signer's certificate and signature, as
//! stored at upload) and then its content as `FILE` data records, read on a
//! blocking thread a few chunks ahead of the session; the device verifies
//! everything. A device may have one download in progress per session; the
//! session goes on reading the device's messages between data records.

use std::io::{self, Read};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Context, Reply, ack, file_info};
use crate::crypto::cipher::LANES;
use crate::index::FileEntry;
use crate::message::{
    AckStatus, FILE_DATA_HEADER_LEN, FileHead, FileMsg, Ftch, MAX_CHUNK_LEN, Message, StreamId,
};

/// Chunks read ahead of the session: two lockstep groups.
const READ_AHEAD: usize = 2 * LANES;

/// A download in progress.
pub struct Download {
    stream: StreamId,
    size: u64,
    chunks: mpsc::Receiver<Bytes>,
    reader: Option<JoinHandle<io::Result<u64>>>,
}

/// What a download has next.
pub enum Next {
    /// Data records to seal and send, ready-made plaintexts.
    Data(Vec<Bytes>),
    /// The end: the stream's final `ACK_`.
    Done(Message),
}

impl Download {
    /// The stream it travels on.
    #[must_use]
    pub fn stream(&self) -> StreamId {
        self.stream
    }

    /// Waits for the next chunks (up to one lockstep group), or the end.
    /// Cancel-safe: nothing is lost if the wait is dropped.
    pub async fn next(&mut self) -> Next {
        if let Some(first) = self.chunks.recv().await {
            let mut batch = Vec::with_capacity(LANES);
            batch.push(first);
            while batch.len() < LANES {
                match self.chunks.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            return Next::Data(batch);
        }
        let result = match self.reader.take() {
            Some(r) => r.await.unwrap_or_else(|e| Err(io::Error::other(e))),
            None => Err(io::Error::other("the download already ended")),
        };
        Next::Done(match result {
            Ok(n) if n == self.size => ack(self.stream, AckStatus::Ok, Vec::new()),
            Ok(n) => {
                tracing::error!(
                    stream = self.stream.0,
                    read = n,
                    size = self.size,
                    "stored file is shorter or longer than its record"
                );
                ack(
                    self.stream,
                    AckStatus::StorageError,
                    "the server could not read the whole file",
                )
            }
            Err(e) => {
                tracing::error!(stream = self.stream.0, error = %e, "reading a stored file failed");
                ack(
                    self.stream,
                    AckStatus::StorageError,
                    "the server could not read the file",
                )
            }
        })
    }
}

/// Opens the stored content of `entry` and reads it into `FILE` data
/// plaintexts for `stream`, on a blocking thread, at most `entry.size`
/// bytes. Content that is shorter or longer than its record ends the
/// stream with `storage_error`.
fn spawn_reader(
    store: crate::store::Store,
    entry: FileEntry,
    stream: StreamId,
) -> (mpsc::Receiver<Bytes>, JoinHandle<io::Result<u64>>) {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let header = FileMsg::data_header(stream);
    let size = entry.size;
    let task = tokio::task::spawn_blocking(move || {
        let mut file = store.open_blob(&entry)?;
        let mut sent = 0u64;
        while sent < size {
            let want = (size - sent).min(MAX_CHUNK_LEN as u64);
            let mut buf = Vec::with_capacity(FILE_DATA_HEADER_LEN + MAX_CHUNK_LEN);
            buf.extend_from_slice(&header);
            let n = (&mut file).take(want).read_to_end(&mut buf)?;
            if n == 0 {
                break;
            }
            sent += n as u64;
            if tx.blocking_send(Bytes::from(buf)).is_err() {
                break;
            }
        }
        // One byte more than recorded means the stored file changed.
        let mut extra = [0u8; 1];
        if sent == size && file.read(&mut extra)? > 0 {
            return Ok(size + 1);
        }
        Ok(sent)
    });
    (rx, task)
}

/// Answers a `FTCH` whose stream id the caller has checked; starts the
/// download in `active` if the file is visible.
pub(super) async fn handle(req: Ftch, active: &mut Option<Download>, cx: &Context<'_>) -> Reply {
    let stream = req.stream;
    if active.is_some() {
        return Reply::Send(ack(
            stream,
            AckStatus::Busy,
            "a download is already in progress in this session",
        ));
    }
    let viewer = cx.device.name();
    let entry = match cx.store.index().file_visible(viewer, req.id).await {
        Ok(Some(e)) => e,
        // Missing and invisible are the same answer (§13.5).
        Ok(None) => return Reply::Send(ack(stream, AckStatus::NotFound, "no such file")),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the index for a download");
            return Reply::Send(ack(
                stream,
                AckStatus::StorageError,
                "the server cannot read its index now",
            ));
        }
    };
    let Some(certificate) = entry.certificate.clone() else {
        tracing::warn!(
            id = req.id,
            owner = entry.owner.as_str(),
            "no certificate on record for the owner of a file"
        );
        return Reply::Send(ack(
            stream,
            AckStatus::StorageError,
            "the server has no certificate of the file's owner",
        ));
    };
    let (chunks, reader) = spawn_reader(cx.store.clone(), entry.clone(), stream);
    tracing::info!(
        stream = stream.0,
        id = req.id,
        owner = entry.owner.as_str(),
        name = entry.stored_as.as_str(),
        size = entry.size,
        "download started"
    );
    *active = Some(Download {
        stream,
        size: entry.size,
        chunks,
        reader: Some(reader),
    });
    Reply::Send(Message::File(FileMsg::Head(Box::new(FileHead {
        stream,
        info: file_info(&entry),
        signed_version: entry.signed_version,
        certificate,
        signature: entry.signature.clone(),
    }))))
}
