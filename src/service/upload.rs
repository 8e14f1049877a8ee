//! `IMGX` uploads (proto-spec.md §8.3): a device streams a file, signs a
//! digest of its metadata and content, and the server stores it only if
//! that signature verifies under the key of the certificate the device
//! proved it holds.
//!
//! Authorisation: a device stores files as their owner only (named by its
//! certificate), under a name the store checks and never reuses.
//! A session has at most one upload open at a time.

use std::io;
use std::time::Instant;

use super::{Context, Event, Reply, ack};
use crate::index::NewFile;
use crate::message::{AckStatus, AlertCode, Imgx, ImgxOpen, Scope, StreamId};
use crate::store::{Incoming, validate_file_name};
use crate::transfer::open_digest;

/// The upload a session has in progress (at most one, proto-spec.md §8.3.1).
pub struct Upload {
    open: ImgxOpen,
    incoming: Option<Incoming>,
    storage_error: Option<io::Error>,
    received: u64,
    started: Instant,
}

impl Upload {
    /// The stream the file travels on.
    #[must_use]
    pub fn stream(&self) -> StreamId {
        self.open.stream
    }

    /// The name the device proposed.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.open.name
    }
}

/// Handles one `IMGX` message of a session whose upload state is `active`.
/// The stream id of an `OPEN` has been checked by the caller.
pub(super) async fn handle(msg: Imgx, active: &mut Option<Upload>, cx: &Context<'_>) -> Reply {
    match msg {
        Imgx::Open(open) => begin(open, active, cx),
        Imgx::Data { stream, chunk } => {
            let Some(up) = active.as_mut().filter(|u| u.open.stream == stream) else {
                return Reply::Close(
                    AlertCode::UnexpectedMessage,
                    "data for a stream that is not open",
                );
            };
            up.received += chunk.len() as u64;
            if up.received > up.open.size {
                *active = None;
                return Reply::Close(
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
            let Some(up) = active.take_if(|u| u.open.stream == stream) else {
                return Reply::Close(
                    AlertCode::UnexpectedMessage,
                    "abort of a stream that is not open",
                );
            };
            tracing::info!(
                stream = stream.0,
                name = up.open.name.as_str(),
                reason = reason.as_str(),
                "device abandoned a transfer"
            );
            Reply::Send(ack(stream, AckStatus::Aborted, Vec::new()))
        }
        Imgx::Done { stream, signature } => {
            let Some(up) = active.take_if(|u| u.open.stream == stream) else {
                return Reply::Close(
                    AlertCode::UnexpectedMessage,
                    "end of a stream that is not open",
                );
            };
            if up.received != up.open.size {
                return Reply::Close(
                    AlertCode::IllegalParameter,
                    "less data than the declared size",
                );
            }
            finish(up, &signature, cx).await
        }
    }
}

/// Largest distance between a version 2 `OPEN`'s signing time and the
/// server's clock (proto-spec.md §13.3).
pub const MAX_CLOCK_SKEW_SECS: u64 = 600;

/// `OPEN`: checks the name and the limits before any content is sent.
fn begin(open: ImgxOpen, active: &mut Option<Upload>, cx: &Context<'_>) -> Reply {
    if active.is_some() {
        return Reply::Close(
            AlertCode::UnexpectedMessage,
            "a second IMGX stream was opened",
        );
    }
    if let Err(reason) = validate_file_name(&open.name) {
        tracing::warn!(name = open.name.as_str(), reason, "refused file name");
        return Reply::Close(AlertCode::IllegalParameter, reason);
    }
    // Version 2: the signing time must be near the server's clock, so a
    // downloader's check of the certificate at that time means something
    // (proto-spec.md §13.3).
    if let Some(sharing) = &open.sharing {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if sharing.signed_at.abs_diff(now) > MAX_CLOCK_SKEW_SECS {
            tracing::warn!(
                signed_at = sharing.signed_at,
                now,
                "refused a file signed at a time far from the server's clock"
            );
            return Reply::Send(ack(
                open.stream,
                AckStatus::Rejected,
                format!(
                    "the signing time {} is more than {MAX_CLOCK_SKEW_SECS} s from the server's clock ({now}); set the device's clock",
                    sharing.signed_at
                ),
            ));
        }
    }
    let limit = cx.uploads.max_file_size;
    if open.size > limit {
        return Reply::Send(ack(
            open.stream,
            AckStatus::TooLarge,
            format!("the server accepts files up to {limit} bytes"),
        ));
    }
    match cx.store.begin(cx.device.name(), open.size) {
        Ok(incoming) => {
            let stream = open.stream;
            *active = Some(Upload {
                open,
                incoming: Some(incoming),
                storage_error: None,
                received: 0,
                started: Instant::now(),
            });
            Reply::Send(ack(stream, AckStatus::Ok, Vec::new()))
        }
        Err(e) => {
            if e.status() == AckStatus::StorageError {
                tracing::error!(error = %e, "cannot create a temporary file");
            } else {
                tracing::warn!(
                    name = open.name.as_str(),
                    size = open.size,
                    status = e.status().name(),
                    reason = %e,
                    "refused a file"
                );
            }
            Reply::Send(ack(open.stream, e.status(), e.detail()))
        }
    }
}

/// `DONE`: waits for the content on disk, verifies the signature, publishes.
async fn finish(up: Upload, signature: &[u8], cx: &Context<'_>) -> Reply {
    let stream = up.open.stream;
    let storage_failed = || {
        Reply::Send(ack(
            stream,
            AckStatus::StorageError,
            "the server could not write the file",
        ))
    };
    let (Some(incoming), None) = (up.incoming, up.storage_error) else {
        return storage_failed();
    };
    let received = match incoming.finish().await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "writing a received file failed");
            return storage_failed();
        }
    };
    let o = &up.open;
    let digest = open_digest(o, received.size, &received.content_hash);
    if cx
        .device
        .public_key()
        .pss_verify_digest(&digest, signature)
        .is_err()
    {
        tracing::warn!(
            name = o.name.as_str(),
            size = received.size,
            "file signature does not verify; discarded"
        );
        return Reply::Send(ack(
            stream,
            AckStatus::BadSignature,
            "the file signature does not verify",
        ));
    }
    let sha256_hex = hex::encode(received.content_hash);
    let duration = up.started.elapsed();
    let duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    let new = NewFile {
        owner: cx.device.name().to_owned(),
        owner_serial: cx.device.serial_hex(),
        certificate: cx.device.cert_der().to_vec(),
        name: o.name.clone(),
        kind: o.kind,
        size: received.size,
        content_type: o.content_type.clone(),
        sha256: received.content_hash,
        file_digest: digest,
        signature: signature.to_vec(),
        // A version 1 upload signed no scope: it stays private (§13.3).
        signed_version: if o.sharing.is_some() { 2 } else { 1 },
        signed_at: o.sharing.as_ref().map_or(0, |s| s.signed_at),
        scope: o
            .sharing
            .as_ref()
            .map_or(Scope::Private, |s| s.scope.clone()),
        duration_ms,
    };
    let content_hash = received.content_hash;
    let size = received.size;
    let new_scope = new.scope.clone();
    match received.commit(new).await {
        Ok(committed) => {
            let stored_as = committed.stored_as;
            tracing::info!(
                stream = stream.0,
                id = committed.id,
                event = committed.event_id,
                name = o.name.as_str(),
                stored_as = stored_as.as_str(),
                size,
                sha256 = sha256_hex.as_str(),
                content_type = o.content_type.as_str(),
                duration_ms,
                scope = %new_scope,
                "file stored"
            );
            // Wake the watches: the event is in the index now.
            cx.commits.send_if_modified(|newest| {
                let later = committed.event_id > *newest;
                *newest = (*newest).max(committed.event_id);
                later
            });
            cx.events.publish(Event::FileStored {
                device: cx.device.name().to_owned(),
                stream,
                name: o.name.clone(),
                stored_as: stored_as.clone(),
                size,
            });
            let mut detail = content_hash.to_vec();
            detail.extend_from_slice(stored_as.as_bytes());
            Reply::Send(ack(stream, AckStatus::Ok, detail))
        }
        Err(e) => {
            tracing::error!(error = %e, "publishing a received file failed");
            Reply::Send(ack(stream, AckStatus::StorageError, e.detail()))
        }
    }
}
