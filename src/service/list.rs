//! `LIST` (proto-spec.md §13.5): the files the device may see, one `ENTR`
//! each in id order, then `ACK_ ok`. Visibility is decided by the index's
//! query, never by filtering afterwards, so a file the device may not see
//! is never even loaded for its session.

use super::{Context, Reply, ack, file_info};
use crate::message::{AckStatus, Entr, List, Message};

/// Answers a `LIST` whose stream id the caller has checked.
pub(super) async fn handle(list: List, cx: &Context<'_>) -> Reply {
    let viewer = cx.device.name();
    match cx
        .store
        .index()
        .visible_files(viewer, list.owner.as_deref())
        .await
    {
        Ok(files) => {
            tracing::debug!(files = files.len(), owner = ?list.owner, "listing");
            let mut out: Vec<Message> = files
                .iter()
                .map(|f| {
                    Message::Entr(Box::new(Entr {
                        stream: list.stream,
                        info: file_info(f),
                    }))
                })
                .collect();
            out.push(ack(list.stream, AckStatus::Ok, Vec::new()));
            Reply::Many(out)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read the index for a listing");
            Reply::Send(ack(
                list.stream,
                AckStatus::StorageError,
                "the server cannot read its index now",
            ))
        }
    }
}
