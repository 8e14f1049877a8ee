//! The daemon: accepts connections, runs one task per session, dispatches
//! application messages.
//!
//! The listener is bound by the caller (the binary binds the configured
//! address, tests bind `127.0.0.1:0`), and shutdown is a
//! [`CancellationToken`]: the accept loop stops, sessions in flight are
//! told with `ALRT unavailable`, and [`run`] returns once every task ended.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::handshake::ServerConfig;
use crate::message::{Ack, AckStatus, AlertCode, Imgx, Message, StreamId};
use crate::session::{DEFAULT_HANDSHAKE_TIMEOUT, Session, SessionError};
use crate::store::{Cleanup, Store};
use crate::transfer::{self, Reply, Sender, Upload, UploadLimits};

/// Operational limits of the daemon.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Limit for a whole handshake.
    pub handshake_timeout: Duration,
    /// Limit for silence between messages of an established session.
    pub idle_timeout: Duration,
    /// Most sessions served at once; further connections wait in the
    /// kernel's accept queue.
    pub max_connections: usize,
    /// Where received data is stored, one folder per device.
    pub data_dir: PathBuf,
    /// Limits of file uploads.
    pub uploads: UploadLimits,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: Duration::from_secs(300),
            max_connections: 1024,
            data_dir: PathBuf::from("data"),
            uploads: UploadLimits::default(),
        }
    }
}

/// Serves connections from `listener` until `shutdown` is cancelled.
///
/// The data folder is opened first, and what interrupted transfers left
/// there is removed.
///
/// # Errors
/// The data folder cannot be created or read. Accept failures (such as
/// running out of file descriptors) are logged and retried after a pause.
pub async fn run(
    listener: TcpListener,
    config: ServerConfig,
    settings: ServerSettings,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let (store, cleanup) = Store::open(&settings.data_dir)?;
    if cleanup != Cleanup::default() {
        info!(
            partial_files = cleanup.partial_files,
            orphan_records = cleanup.orphan_records,
            "removed what interrupted transfers left behind"
        );
    }
    let settings = Arc::new(settings);
    let limit = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let tracker = TaskTracker::new();
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, provider = config.provider.name, "listening");
    }
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
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
        let config = config.clone();
        let settings = settings.clone();
        let shutdown = shutdown.clone();
        let store = store.clone();
        tracker.spawn(
            async move {
                serve_connection(socket, peer, config, &settings, &store, shutdown).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
    info!("no longer accepting connections; waiting for sessions to end");
    tracker.close();
    tracker.wait().await;
    info!("stopped");
    Ok(())
}

async fn serve_connection(
    socket: TcpStream,
    peer: SocketAddr,
    config: ServerConfig,
    settings: &ServerSettings,
    store: &Store,
    shutdown: CancellationToken,
) {
    let _ = socket.set_nodelay(true);
    debug!(%peer, "connection accepted");
    let span = tracing::Span::current();
    let accepted = Session::accept(socket, config, settings.handshake_timeout, |device| {
        span.record("device", device.name());
    })
    .await;
    let mut session = match accepted {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "handshake failed");
            return;
        }
    };
    info!(serial = %session.peer().serial_hex(), "device authenticated");

    let mut last_stream: Option<StreamId> = None;
    let mut upload: Option<Upload> = None;
    loop {
        let next = tokio::select! {
            r = tokio::time::timeout(settings.idle_timeout, session.recv()) => r,
            () = shutdown.cancelled() => {
                info!("server shutting down; closing session");
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
                match transfer::handle(imgx, &mut upload, store, &settings.uploads, &sender).await {
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
                match session.finish_close().await {
                    Ok(()) => info!("session closed"),
                    Err(e) => debug!(error = %e, "closing after ENDD failed"),
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
