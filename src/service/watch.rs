//! `WTCH` (proto-spec.md §13.5): notices of new files. The index is the
//! source of truth: a watch keeps a cursor (the last event id sent) and,
//! whenever a commit is announced, asks the index for the events after it
//! that the device may see. Announcements only wake watches up (a
//! `tokio::sync::watch` of the newest event id, which coalesces and never
//! lags), so nothing is lost however many commits happen at once, and a
//! device that resumes after an id gets every kept event after it.

use tokio::sync::watch;

use super::{Context, Reply, ack, file_info};
use crate::message::{AckStatus, Message, Note, StreamId, WatchFrom, Wtch};

/// Notices sent per query of the index.
const PAGE: u32 = 256;

/// A session's watch.
pub struct Watch {
    stream: StreamId,
    cursor: u64,
    commits: watch::Receiver<u64>,
    /// The last query filled a page: there may be more at once.
    more: bool,
}

impl Watch {
    /// The stream notices travel on.
    #[must_use]
    pub fn stream(&self) -> StreamId {
        self.stream
    }

    /// Waits until there may be new notices. Cancel-safe.
    pub async fn wake(&mut self) {
        if self.more {
            return;
        }
        // A closed channel (the server stopping) never wakes anyone.
        if self.commits.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// The notices after the cursor, one page; advances the cursor.
    ///
    /// # Errors
    /// The index could not be read (the caller ends the session: the
    /// device resumes from its last notice when it reconnects).
    pub async fn poll(
        &mut self,
        cx: &Context<'_>,
    ) -> Result<Vec<Message>, crate::index::IndexError> {
        self.commits.mark_unchanged();
        let events = cx
            .store
            .index()
            .events_after(cx.device.name(), self.cursor, PAGE)
            .await?;
        self.more = events.len() >= PAGE as usize;
        let mut out = Vec::with_capacity(events.len());
        for (event, entry) in events {
            self.cursor = self.cursor.max(event);
            out.push(Message::Note(Box::new(Note {
                stream: self.stream,
                event,
                info: file_info(&entry),
            })));
        }
        Ok(out)
    }
}

/// Answers a `WTCH` whose stream id the caller has checked.
pub(super) async fn handle(req: Wtch, active: &mut Option<Watch>, cx: &Context<'_>) -> Reply {
    if active.is_some() {
        return Reply::Send(ack(
            req.stream,
            AckStatus::BadRequest,
            "this session already watches",
        ));
    }
    // Subscribe before reading the bounds: a commit in between wakes the
    // watch, so it is not missed.
    let commits = cx.commits.subscribe();
    let (last, oldest) = match cx.store.index().event_bounds().await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the index for a watch");
            return Reply::Send(ack(
                req.stream,
                AckStatus::StorageError,
                "the server cannot read its index now",
            ));
        }
    };
    let cursor = match req.from {
        WatchFrom::Now => last,
        WatchFrom::After(after) => after,
    };
    tracing::info!(stream = req.stream.0, cursor, last, "watching");
    *active = Some(Watch {
        stream: req.stream,
        cursor,
        commits,
        // Replay what is kept after the cursor at once.
        more: cursor < last,
    });
    let mut detail = last.to_be_bytes().to_vec();
    detail.extend_from_slice(&oldest.to_be_bytes());
    Reply::Send(ack(req.stream, AckStatus::Ok, detail))
}
