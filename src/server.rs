//! The daemon: accepts connections, runs one task per session, dispatches
//! application messages.
//!
//! The listener is bound by the caller (the binary binds the configured
//! address, tests bind `127.0.0.1:0`).
//!
//! Resource limits (proto-spec.md §10): at most `max_unauthenticated`
//! connections in the handshake, where one more evicts the oldest one still
//! handshaking (like OpenSSH's MaxStartups, this keeps a flood of silent
//! connections from locking devices out: a real handshake takes
//! milliseconds, so it is never the oldest for long); at most
//! `max_connections` authenticated sessions, beyond which a device that
//! completes its handshake is told `ALRT unavailable`; a time limit on the
//! whole handshake and on silence afterwards; and frames, records and
//! queues bounded in size, so one connection holds at most about 2 MiB
//! (a frame being read, at most 24 chunks of a file queued for the disk
//! writer, and the write buffer); an idle session holds about 25 KiB.
//!
//! Shutdown is a [`CancellationToken`]: the accept loop stops, handshakes
//! and idle sessions are closed with `ALRT unavailable`, and sessions in the
//! middle of a file may finish it within the grace period; after it, they
//! are closed too (their temporary files are removed). [`run`] returns once
//! every task ended.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::handshake::ServerConfig;
use crate::message::{Ack, AckStatus, AlertCode, Imgx, Message, StreamId};
use crate::session::{DEFAULT_HANDSHAKE_TIMEOUT, Session, SessionError};
use crate::store::{Cleanup, Store, StoreLimits};
use crate::transfer::{self, Reply, Sender, Upload, UploadLimits};

/// Operational limits of the daemon.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Limit for a whole handshake.
    pub handshake_timeout: Duration,
    /// Limit for silence between messages of an established session.
    pub idle_timeout: Duration,
    /// Most authenticated sessions at once; a device over the limit is told
    /// `ALRT unavailable` after its handshake.
    pub max_connections: usize,
    /// Most connections still in the handshake; one more evicts the oldest.
    pub max_unauthenticated: usize,
    /// How long transfers in flight may go on after shutdown was requested.
    pub shutdown_grace: Duration,
    /// Where received data is stored, one folder per device.
    pub data_dir: PathBuf,
    /// Limits of file uploads.
    pub uploads: UploadLimits,
    /// Quotas, uploads in flight per device, free-space reserve.
    pub storage: StoreLimits,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: Duration::from_secs(300),
            max_connections: 1024,
            max_unauthenticated: 128,
            shutdown_grace: Duration::from_secs(30),
            data_dir: PathBuf::from("data"),
            uploads: UploadLimits::default(),
            storage: StoreLimits::default(),
        }
    }
}

/// Serves connections from `listener` until `shutdown` is cancelled.
///
/// The data folder is opened first, and what interrupted transfers left
/// there is removed.
///
/// # Errors
/// The data folder cannot be used: the error wraps a
/// [`crate::store::OpenError`]. Accept failures (such as running out of
/// file descriptors) are logged and retried after a pause.
pub async fn run(
    listener: TcpListener,
    config: ServerConfig,
    settings: ServerSettings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let (store, cleanup) =
        Store::open(&settings.data_dir, settings.storage.clone()).map_err(std::io::Error::other)?;
    if cleanup != Cleanup::default() {
        info!(
            partial_files = cleanup.partial_files,
            orphan_records = cleanup.orphan_records,
            "removed what interrupted transfers left behind"
        );
    }
    let stop = CancellationToken::new();
    let shared = Arc::new(Shared {
        config,
        admission: Admission::new(settings.max_unauthenticated),
        sessions: Arc::new(Semaphore::new(settings.max_connections.max(1))),
        settings,
        store,
        shutdown: shutdown.clone(),
        stop: stop.clone(),
    });
    let tracker = TaskTracker::new();
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, provider = shared.config.provider.name, "listening");
    }
    loop {
        let (socket, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    warn!(error = %e, "accept failed; pausing");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let span = info_span!("conn", %peer, device = tracing::field::Empty);
        let shared = shared.clone();
        tracker
            .spawn(async move { serve_connection(socket, peer, &shared).await }.instrument(span));
    }
    drop(listener);
    tracker.close();
    let grace = shared.settings.shutdown_grace;
    info!(
        sessions = tracker.len(),
        grace_secs = grace.as_secs(),
        "no longer accepting connections; letting transfers in flight finish"
    );
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        warn!(
            sessions = tracker.len(),
            "grace period over; closing the remaining sessions"
        );
        stop.cancel();
        tracker.wait().await;
    }
    info!("stopped");
    Ok(())
}

/// What every connection task shares.
struct Shared {
    config: ServerConfig,
    settings: ServerSettings,
    store: Store,
    admission: Admission,
    /// Authenticated session slots.
    sessions: Arc<Semaphore>,
    /// Graceful shutdown requested: no new work.
    shutdown: CancellationToken,
    /// The grace period is over: stop now.
    stop: CancellationToken,
}

/// The connections still in the handshake, oldest first.
struct Admission {
    limit: usize,
    pending: Mutex<(u64, VecDeque<(u64, CancellationToken)>)>,
}

impl Admission {
    fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            pending: Mutex::new((0, VecDeque::new())),
        }
    }

    /// Registers a new handshake, evicting the oldest one if the limit is
    /// reached. Returns its id and the token that evicts it.
    fn admit(&self) -> (u64, CancellationToken) {
        let token = CancellationToken::new();
        let mut guard = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (next, pending) = &mut *guard;
        if pending.len() >= self.limit
            && let Some((_, oldest)) = pending.pop_front()
        {
            oldest.cancel();
        }
        *next += 1;
        pending.push_back((*next, token.clone()));
        (*next, token)
    }

    /// Removes a handshake that ended, one way or the other.
    fn release(&self, id: u64) {
        let mut guard = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.1.retain(|(i, _)| *i != id);
    }
}

async fn serve_connection(socket: TcpStream, peer: SocketAddr, shared: &Shared) {
    let _ = socket.set_nodelay(true);
    debug!(%peer, "connection accepted");
    let span = tracing::Span::current();
    let (admission_id, evicted) = shared.admission.admit();
    let handshake = Session::accept(
        socket,
        shared.config.clone(),
        shared.settings.handshake_timeout,
        |device| {
            span.record("device", device.name());
        },
    );
    let accepted = tokio::select! {
        r = handshake => Some(r),
        () = evicted.cancelled() => {
            warn!("too many connections still in the handshake; dropped the oldest, this one");
            None
        }
        () = shared.shutdown.cancelled() => {
            debug!("shutting down during the handshake");
            None
        }
    };
    shared.admission.release(admission_id);
    let mut session = match accepted {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            warn!(error = %e, "handshake failed");
            return;
        }
        None => return,
    };
    let Ok(_slot) = shared.sessions.clone().try_acquire_owned() else {
        warn!(
            max_connections = shared.settings.max_connections,
            "at capacity; refusing the session"
        );
        session.abort(AlertCode::Unavailable).await;
        return;
    };
    info!(serial = %session.peer().serial_hex(), "device authenticated");
    serve_session(&mut session, shared).await;
}

/// Serves an established session until it ends.
async fn serve_session(session: &mut Session<TcpStream>, shared: &Shared) {
    let settings = &shared.settings;
    let mut last_stream: Option<StreamId> = None;
    let mut upload: Option<Upload> = None;
    loop {
        // Once shutdown is requested, a session goes on only while a file
        // is in flight, and never past the grace period.
        if shared.shutdown.is_cancelled() && upload.is_none() {
            info!("server shutting down; closing the session");
            session.abort(AlertCode::Unavailable).await;
            return;
        }
        let next = tokio::select! {
            r = tokio::time::timeout(settings.idle_timeout, session.recv()) => r,
            () = shared.shutdown.cancelled(), if upload.is_none() => continue,
            () = shared.stop.cancelled() => {
                warn!(transfer_in_flight = upload.is_some(), "grace period over; closing the session");
                session.abort(AlertCode::Unavailable).await;
                return;
            }
        };
        let msg = match next {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                report_session_error(&e);
                if let Some(code) = e.alert() {
                    session.abort(code).await;
                }
                return;
            }
            Err(_) => {
                warn!(idle_secs = settings.idle_timeout.as_secs(), "idle timeout");
                session.abort(AlertCode::Timeout).await;
                return;
            }
        };
        let result = match msg {
            Message::Secx(secx) => {
                let ack = match check_stream(last_stream, secx.stream) {
                    Ok(()) => {
                        last_stream = Some(secx.stream);
                        info!(stream = %secx.stream, bytes = secx.text.len(), text = ?secx.text, "text received");
                        ack(secx.stream, AckStatus::Ok, "")
                    }
                    Err(reason) => ack(secx.stream, AckStatus::BadRequest, reason),
                };
                session.send(&ack).await
            }
            Message::Imgx(imgx) => {
                if let Imgx::Open(open) = &imgx {
                    if shared.shutdown.is_cancelled() {
                        info!("server shutting down; refusing a new file");
                        session.abort(AlertCode::Unavailable).await;
                        return;
                    }
                    if let Err(reason) = check_stream(last_stream, open.stream) {
                        let reply = ack(open.stream, AckStatus::BadRequest, reason);
                        if let Err(e) = session.send(&reply).await {
                            report_session_error(&e);
                            return;
                        }
                        continue;
                    }
                    last_stream = Some(open.stream);
                }
                let device = session.peer().name().to_owned();
                let sender = Sender {
                    device: &device,
                    serial: session.peer().serial_hex(),
                    key: session.peer().public_key().as_ref(),
                };
                match transfer::handle(imgx, &mut upload, &shared.store, &settings.uploads, &sender)
                    .await
                {
                    Reply::None => Ok(()),
                    Reply::Ack(msg) => session.send(&msg).await,
                    Reply::Fatal(code, reason) => {
                        warn!(alert = %code, reason, "closing the session");
                        session.abort(code).await;
                        return;
                    }
                }
            }
            Message::Endd => {
                match session.finish_close(settings.idle_timeout).await {
                    Ok(()) => info!("session closed"),
                    Err(e) => {
                        warn!(error = %e, "the device did not end the session cleanly after ENDD")
                    }
                }
                return;
            }
            Message::Unknown {
                kind,
                stream: Some(stream),
            } if stream.is_device_initiated() => {
                debug!(%kind, %stream, "unsupported message type");
                session
                    .send(&ack(
                        stream,
                        AckStatus::Unsupported,
                        "message type not supported",
                    ))
                    .await
            }
            other => {
                warn!(kind = %other.kind(), "unexpected message");
                session.abort(AlertCode::UnexpectedMessage).await;
                return;
            }
        };
        if let Err(e) = result {
            report_session_error(&e);
            return;
        }
    }
}

fn ack(stream: StreamId, status: AckStatus, reason: &str) -> Message {
    Message::Ack(Ack {
        stream,
        status,
        detail: reason.as_bytes().to_vec(),
    })
}

/// Device streams are odd and strictly increasing (proto-spec.md §8.1).
fn check_stream(last: Option<StreamId>, stream: StreamId) -> Result<(), &'static str> {
    if !stream.is_device_initiated() {
        return Err("device streams must have odd ids");
    }
    if last.is_some_and(|l| stream <= l) {
        return Err("stream ids must increase");
    }
    Ok(())
}

fn report_session_error(e: &SessionError) {
    match e {
        SessionError::Truncated => {
            warn!("session truncated: the connection closed without ENDD");
        }
        SessionError::PeerAlert(code) => warn!(alert = %code, "device sent an alert"),
        other => warn!(error = %other, "session failed"),
    }
}
