//! The server's application services: one module per service, each owning
//! its messages end to end (decode → authorise → act → reply), the way
//! mini-redis has one file per command.
//!
//! * [`text`]: `SECX` texts (proto-spec.md §8.2).
//! * [`upload`]: `IMGX` file uploads (proto-spec.md §8.3, §13.3).
//! * [`list`]: `LIST` listings (proto-spec.md §13.5).
//! * [`fetch`]: `FTCH` verified downloads (proto-spec.md §13.5).
//! * [`watch`]: `WTCH` notices of new files (proto-spec.md §13.5).
//! * [`renew`]: `RNEW` certificate renewal (proto-spec.md §14.4).
//! * [`enroll`]: enrollment sessions (proto-spec.md §14.3), which never
//!   reach [`dispatch`]: their peer is not a device yet.
//!
//! `PING` is answered here with `PONG`.
//!
//! [`dispatch`] hands a decoded message of an established session to its
//! service; the connection handling in [`crate::server`] knows no service by
//! name. Stream ids are checked here, in one place, for every message that
//! opens a stream (proto-spec.md §8.1), including types this version does
//! not know (§8.6).

pub mod enroll;
pub mod events;
pub mod fetch;
pub mod list;
pub mod renew;
pub mod text;
pub mod upload;
pub mod watch;

pub use events::{Ending, Event, Events};

use crate::index::FileEntry;
use crate::message::{Ack, AckStatus, AlertCode, FileInfo, Imgx, Message, StreamId};
use crate::pki::{CertificateAuthority, VerifiedPeer};
use crate::store::Store;
use crate::transfer::UploadLimits;

/// What a service may use while handling one message.
pub struct Context<'a> {
    /// The device, as its certificate and key proof verified it.
    pub device: &'a VerifiedPeer,
    /// The data folder.
    pub store: &'a Store,
    /// Limits of uploads.
    pub uploads: &'a UploadLimits,
    /// Where services report what they did.
    pub events: &'a Events,
    /// The newest event id committed; watches wait on it.
    pub commits: &'a tokio::sync::watch::Sender<u64>,
    /// The server is shutting down: no new stream is accepted.
    pub draining: bool,
    /// The issuing CA, when the server holds its key (renewal).
    pub issuer: Option<&'a CertificateAuthority>,
    /// Lifetime of the certificates issued, in days.
    pub validity_days: u32,
    /// The crypto backend.
    pub provider: &'static crate::crypto::CryptoProvider,
}

/// What the services remember about one session.
#[derive(Default)]
pub struct SessionState {
    last_stream: Option<StreamId>,
    upload: Option<upload::Upload>,
    /// The download in progress (version 2).
    pub download: Option<fetch::Download>,
    /// The watch (version 2).
    pub watch: Option<watch::Watch>,
}

impl SessionState {
    /// Whether a file upload is in progress.
    #[must_use]
    pub fn upload_in_progress(&self) -> bool {
        self.upload.is_some()
    }

    /// Opens a new device stream (proto-spec.md §8.1): its id must be odd and
    /// greater than every id the device used before.
    fn open_stream(&mut self, stream: StreamId) -> Result<(), &'static str> {
        if !stream.is_device_initiated() {
            return Err("device streams must have odd ids");
        }
        if self.last_stream.is_some_and(|l| stream <= l) {
            return Err("stream ids must increase");
        }
        self.last_stream = Some(stream);
        Ok(())
    }

    /// The device ends the session (`ENDD`): an upload still open is
    /// discarded and answered `ACK_ aborted`, a download in progress is cut
    /// and answered `ACK_ aborted`, and a watch ends with `ACK_ ok`, so every
    /// stream gets exactly one final `ACK_` (proto-spec.md §8.4, §13.5).
    #[must_use]
    pub fn end(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        if let Some(up) = self.upload.take() {
            tracing::info!(
                stream = up.stream().0,
                name = up.name(),
                "session ended with a file in flight; discarded"
            );
            out.push(ack(
                up.stream(),
                AckStatus::Aborted,
                "the session ended before DONE",
            ));
        }
        if let Some(down) = self.download.take() {
            out.push(ack(
                down.stream(),
                AckStatus::Aborted,
                "the session ended during the download",
            ));
        }
        if let Some(w) = self.watch.take() {
            out.push(ack(w.stream(), AckStatus::Ok, Vec::new()));
        }
        out
    }

    /// Whether a transfer (upload or download) is in progress.
    #[must_use]
    pub fn transfer_in_progress(&self) -> bool {
        self.upload.is_some() || self.download.is_some()
    }
}

/// What the session sends back after a message, if anything.
#[derive(Debug)]
pub enum Reply {
    /// Nothing (file data).
    None,
    /// A message, usually an `ACK_`.
    Send(Message),
    /// Several messages in order (a listing).
    Many(Vec<Message>),
    /// A fatal protocol violation or a refusal that ends the session: send
    /// this alert and close.
    Close(AlertCode, &'static str),
}

/// An `ACK_` message.
#[must_use]
pub fn ack(stream: StreamId, status: AckStatus, detail: impl Into<Vec<u8>>) -> Message {
    Message::Ack(Ack {
        stream,
        status,
        detail: detail.into(),
    })
}

/// A file as the protocol describes it (proto-spec.md §13.4).
#[must_use]
pub fn file_info(e: &FileEntry) -> FileInfo {
    FileInfo {
        id: e.id,
        owner: e.owner.clone(),
        name: e.name.clone(),
        stored_as: e.stored_as.clone(),
        kind: e.kind,
        size: e.size,
        content_type: e.content_type.clone(),
        sha256: e.sha256,
        signed_at: e.signed_at,
        stored_at: e.stored_at_ms,
        scope: e.scope.clone(),
    }
}

/// The refusal of a stream whose id breaks the rules of §8.1.
fn bad_stream(stream: StreamId, reason: &'static str) -> Reply {
    tracing::warn!(stream = stream.0, reason, "refused a stream id");
    Reply::Send(ack(stream, AckStatus::BadRequest, reason))
}

/// Hands one message of an established session (anything but `ENDD`,
/// which the session loop handles) to its service.
pub async fn dispatch(msg: Message, state: &mut SessionState, cx: &Context<'_>) -> Reply {
    let opens = match &msg {
        Message::Secx(m) => Some(m.stream),
        Message::Imgx(Imgx::Open(o)) => Some(o.stream),
        Message::List(m) => Some(m.stream),
        Message::Ftch(m) => Some(m.stream),
        Message::Wtch(m) => Some(m.stream),
        Message::Rnew(m) => Some(m.stream),
        Message::Unknown {
            stream: Some(s), ..
        } => Some(*s),
        _ => None,
    };
    if let Some(stream) = opens {
        if cx.draining {
            return Reply::Close(
                AlertCode::Unavailable,
                "the server is shutting down; no new stream",
            );
        }
        if let Err(reason) = state.open_stream(stream) {
            return bad_stream(stream, reason);
        }
    }
    match msg {
        Message::Secx(secx) => text::handle(secx, cx),
        Message::Imgx(imgx) => upload::handle(imgx, &mut state.upload, cx).await,
        Message::List(m) => list::handle(m, cx).await,
        Message::Ftch(m) => fetch::handle(m, &mut state.download, cx).await,
        Message::Wtch(m) => watch::handle(m, &mut state.watch, cx).await,
        Message::Rnew(m) => renew::handle(m, cx).await,
        Message::Ping(data) => Reply::Send(Message::Pong(data)),
        Message::Unknown {
            kind,
            stream: Some(stream),
        } => {
            tracing::debug!(%kind, stream = stream.0, "unsupported message type");
            Reply::Send(ack(
                stream,
                AckStatus::Unsupported,
                "message type not supported",
            ))
        }
        // An unknown type too short to carry a stream id, an ACK_ (the
        // server opens no streams in version 1), or anything else.
        _ => Reply::Close(AlertCode::UnexpectedMessage, "a message not allowed here"),
    }
}
