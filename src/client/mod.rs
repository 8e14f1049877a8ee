//! The device API: connect, authenticate, send, list, fetch, watch, close.
//!
//! One session carries the device's requests and, once it watches, the
//! server's notices at the same time (proto-spec.md §13.5): whatever the
//! device waits for, a notice that arrives meanwhile is queued for
//! [`DeviceClient::next_notice`], and a heartbeat answer is taken in passing.

mod fetch;
mod lifecycle;
mod sink;

pub use lifecycle::{EnrollRequest, IssuedCertificate, enroll};

pub use fetch::{
    Destination, DownloadError, Fetched, SERVER_OWNER, Signer, signed_digest, verify_content,
    verify_head,
};

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::crypto::cipher::LANES;
use crate::frame::FrameKind;
use crate::handshake::DeviceConfig;
use crate::message::{
    Ack, AckStatus, AlertCode, FileInfo, FileMsg, Ftch, IMGX_DATA_HEADER_LEN, Imgx, ImgxOpen, List,
    MAX_TEXT_LEN, MediaKind, Message, Note, PROTOCOL_VERSION_2, Scope, Secx, Sharing, StreamId,
    WatchFrom, Wtch,
};
use crate::pki::VerifiedPeer;
use crate::pki::{CertError, Identity, TrustAnchor};
use crate::store::validate_file_name;
use crate::transfer::{open_digest, spawn_reader};

use crate::handshake::HandshakeError;
use crate::session::{DEFAULT_HANDSHAKE_TIMEOUT, IoLimits, Session, SessionError};

/// Time limits of a device.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Limit for the TCP connection.
    pub connect_timeout: Duration,
    /// Limit for the handshake.
    pub handshake_timeout: Duration,
    /// Limit for each answer from the server, and for the server to take
    /// what the device sends.
    pub reply_timeout: Duration,
    /// How long to keep retrying while the server answers `ALRT
    /// unavailable` to the handshake (it is busy or starting up); zero
    /// means no retry.
    pub busy_retry_for: Duration,
    /// The CRL of the CA that issued the server's certificate: a server
    /// whose certificate it lists is refused (proto-spec.md §14.5).
    pub server_crl: Option<Arc<crate::pki::crl::VerifiedCrl>>,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            reply_timeout: Duration::from_secs(30),
            busy_retry_for: Duration::from_secs(60),
            server_crl: None,
        }
    }
}

/// First pause before retrying a busy server; it doubles up to
/// [`RETRY_MAX_DELAY`], and each pause is drawn at random below it so that
/// devices refused together do not come back together.
const RETRY_FIRST_DELAY: Duration = Duration::from_millis(100);
/// Longest pause between retries.
const RETRY_MAX_DELAY: Duration = Duration::from_secs(5);

/// Errors of a device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The TCP connection failed.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The session failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The text is over the protocol limit.
    #[error("the text is {len} bytes long; the limit is {MAX_TEXT_LEN} bytes")]
    TextTooLong {
        /// Its length.
        len: usize,
    },
    /// A file name the protocol does not allow.
    #[error("cannot send a file named {name:?}: {reason}")]
    BadFileName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file changed size while it was being sent.
    #[error("{} changed while it was being sent ({expected} bytes expected, {got} read); nothing was stored", path.display())]
    FileChanged {
        /// The file.
        path: PathBuf,
        /// Size announced.
        expected: u64,
        /// Size read.
        got: u64,
    },
    /// The device key could not sign.
    #[error("cannot sign the file: {0}")]
    Sign(#[from] crate::crypto::CryptoError),
    /// The server stayed busy (`ALRT unavailable`) for as long as the device
    /// was willing to retry.
    #[error("the server at {addr} is busy (it answered unavailable {attempts} times over {}s); try again later", waited.as_secs())]
    Busy {
        /// The address dialled.
        addr: String,
        /// Connections tried.
        attempts: u32,
        /// How long the device kept trying.
        waited: Duration,
    },
    /// The request needs protocol version 2 and the server speaks 1.
    #[error("the server speaks protocol version 1, which cannot {what}; upgrade the server")]
    NeedsVersion2 {
        /// What was asked, e.g. "list files".
        what: &'static str,
    },
    /// The request needs protocol version 3 and the server speaks less.
    #[error("the server speaks an older protocol version, which cannot {what}; upgrade the server")]
    NeedsVersion3 {
        /// What was asked, e.g. "renew certificates".
        what: &'static str,
    },
    /// A certificate the server issued does not check out; nothing was
    /// written.
    #[error("the server sent a certificate this device cannot use: {reason}; nothing was written")]
    BadCertificate {
        /// Why.
        reason: String,
    },
    /// The server's certificate is on the device's revocation list.
    #[error("the server's certificate was refused: {reason}")]
    ServerRefused {
        /// Why, one sentence.
        reason: String,
    },
    /// A downloaded file failed verification; nothing was written.
    #[error("refused the download of {name:?}: {error}; nothing was written")]
    Download {
        /// The signed name.
        name: String,
        /// Why.
        error: DownloadError,
    },
    /// The download's destination cannot be written.
    #[error("cannot write {}: {reason}", path.display())]
    Destination {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The destination exists and replacing it was not asked for.
    #[error("{} already exists; pass --force to replace it, or -o to choose another path", path.display())]
    Exists {
        /// The path.
        path: PathBuf,
    },
    /// More notices arrived while the device was busy than it keeps; the
    /// watch must resume from its last acknowledged event.
    #[error(
        "notices arrived faster than they were handled; resume the watch from the last one handled"
    )]
    NoticesOverflowed,
    /// The server answered with a status other than `ok`.
    #[error("the server refused stream {stream}: {status}{}", if reason.is_empty() { String::new() } else { format!(" ({reason})") })]
    Refused {
        /// The stream.
        stream: StreamId,
        /// The status.
        status: AckStatus,
        /// The server's reason, if any.
        reason: String,
    },
}

/// A file to send, with the metadata the device declares for it.
#[derive(Debug, Clone)]
pub struct OutgoingFile {
    /// Where to read it.
    pub path: PathBuf,
    /// The name to propose to the server.
    pub name: String,
    /// Image or video.
    pub kind: MediaKind,
    /// Media type, e.g. `image/png`.
    pub content_type: String,
    /// Size in bytes (the file must not change while it is sent).
    pub size: u64,
    /// Who may see it (signed; version 2 servers only, unless private).
    pub scope: Scope,
}

/// The server's receipt for a stored file.
#[derive(Debug, Clone)]
pub struct FileReceipt {
    /// The stream the file travelled on.
    pub stream: StreamId,
    /// The name the server stored it under.
    pub stored_as: String,
    /// SHA-256 of what the device read and sent.
    pub local_sha256: [u8; 32],
    /// SHA-256 of what the server stored.
    pub server_sha256: [u8; 32],
    /// Bytes sent.
    pub size: u64,
}

impl FileReceipt {
    /// Whether the server stored exactly what was sent.
    #[must_use]
    pub fn verified(&self) -> bool {
        self.local_sha256 == self.server_sha256
    }
}

/// Notices kept while the device waits for something else.
const MAX_QUEUED_NOTICES: usize = 4096;

/// The watch of a session (at most one, proto-spec.md §13.5).
struct WatchState {
    stream: StreamId,
    queue: VecDeque<Note>,
    /// The newest event queued or delivered.
    newest: u64,
    overflowed: bool,
}

/// The server's answer to a `WTCH`: its newest and oldest kept event ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchStart {
    /// The newest event committed so far (0 if none).
    pub last: u64,
    /// The oldest event the server still keeps (0 if none).
    pub oldest: u64,
}

/// An authenticated device session.
pub struct DeviceClient<S> {
    session: Session<S>,
    identity: Arc<Identity>,
    anchor: Arc<TrustAnchor>,
    last_stream: Option<StreamId>,
    settings: ClientSettings,
    watch: Option<WatchState>,
    /// A `PING` is out and its `PONG` has not come back.
    ping_out: bool,
}

impl DeviceClient<TcpStream> {
    /// Connects to `addr` and runs the handshake. While the server answers
    /// `ALRT unavailable` (busy, or starting up), it retries with growing,
    /// randomised pauses for up to [`ClientSettings::busy_retry_for`].
    ///
    /// # Errors
    /// [`ClientError::Connect`], [`ClientError::Busy`] or
    /// [`ClientError::Session`].
    pub async fn connect(
        addr: &str,
        config: DeviceConfig,
        settings: ClientSettings,
    ) -> Result<Self, ClientError> {
        let started = std::time::Instant::now();
        let mut delay = RETRY_FIRST_DELAY;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let err = match Self::connect_once(addr, config.clone(), settings.clone()).await {
                Err(e) if e.is_busy() => e,
                other => return other,
            };
            let pause = random_below(delay);
            if started.elapsed() + pause >= settings.busy_retry_for {
                if settings.busy_retry_for.is_zero() {
                    return Err(err);
                }
                return Err(ClientError::Busy {
                    addr: addr.to_owned(),
                    attempts,
                    waited: started.elapsed(),
                });
            }
            tracing::debug!(
                attempts,
                pause_ms = pause.as_millis() as u64,
                "server busy; retrying"
            );
            tokio::time::sleep(pause).await;
            delay = (delay * 2).min(RETRY_MAX_DELAY);
        }
    }

    async fn connect_once(
        addr: &str,
        config: DeviceConfig,
        settings: ClientSettings,
    ) -> Result<Self, ClientError> {
        let connect_err = |reason: String| ClientError::Connect {
            addr: addr.to_owned(),
            reason,
        };
        let stream = tokio::time::timeout(settings.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| connect_err("timed out".into()))?
            .map_err(|e| connect_err(e.to_string()))?;
        crate::net::tune(&stream, settings.reply_timeout);
        Self::handshake(stream, config, settings).await
    }
}

/// The error for a refusing `ACK_`.
fn refused(a: Ack) -> ClientError {
    ClientError::Refused {
        stream: a.stream,
        status: a.status,
        reason: String::from_utf8_lossy(&a.detail).into_owned(),
    }
}

/// A random duration in `[d/2, d)`.
pub fn random_below(d: Duration) -> Duration {
    let mut b = [0u8; 4];
    let fraction = if getrandom::fill(&mut b).is_ok() {
        f64::from(u32::from_be_bytes(b)) / f64::from(u32::MAX)
    } else {
        0.5
    };
    d.mul_f64(0.5 + fraction / 2.0)
}

impl ClientError {
    /// Whether the server refused the handshake because it is busy.
    #[must_use]
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            Self::Session(SessionError::Handshake(HandshakeError::PeerAlert(
                AlertCode::Unavailable
            )))
        )
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> DeviceClient<S> {
    /// Runs the handshake over an existing stream.
    ///
    /// # Errors
    /// [`ClientError::Session`].
    pub async fn handshake(
        io: S,
        config: DeviceConfig,
        settings: ClientSettings,
    ) -> Result<Self, ClientError> {
        let identity = config.identity.clone();
        let anchor = config.anchor.clone();
        let mut session = Session::connect(io, config, settings.handshake_timeout).await?;
        session.set_limits(IoLimits::uniform(settings.reply_timeout));
        if let Some(crl) = &settings.server_crl
            && let Err(e) = crl.check_serial(session.peer().serial(), SystemTime::now())
        {
            let code = match e {
                crate::pki::crl::CrlError::Revoked { .. } => AlertCode::CertificateRevoked,
                _ => AlertCode::RevocationStale,
            };
            session.abort(code).await;
            return Err(ClientError::ServerRefused {
                reason: e.to_string(),
            });
        }
        Ok(Self {
            session,
            identity,
            anchor,
            last_stream: None,
            settings,
            watch: None,
            ping_out: false,
        })
    }

    /// This device's certificate and key.
    #[must_use]
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    /// The server, as its certificate proved it.
    #[must_use]
    pub fn server(&self) -> &VerifiedPeer {
        self.session.peer()
    }

    /// The negotiated protocol version.
    #[must_use]
    pub fn version(&self) -> u16 {
        self.session.version()
    }

    fn require_v2(&self, what: &'static str) -> Result<(), ClientError> {
        if self.session.version() >= PROTOCOL_VERSION_2 {
            Ok(())
        } else {
            Err(ClientError::NeedsVersion2 { what })
        }
    }

    fn open_stream(&mut self) -> StreamId {
        let id = Session::<S>::next_device_stream(self.last_stream);
        self.last_stream = Some(id);
        id
    }

    /// Sends a text message and waits for the server's `ACK_`.
    ///
    /// # Errors
    /// [`ClientError::TextTooLong`] before anything is sent;
    /// [`ClientError::Refused`] if the server does not accept it.
    pub async fn send_text(&mut self, text: &str) -> Result<Ack, ClientError> {
        if text.len() > MAX_TEXT_LEN {
            return Err(ClientError::TextTooLong { len: text.len() });
        }
        let stream = self.open_stream();
        self.session
            .send(&Message::Secx(Secx {
                stream,
                text: text.to_owned(),
            }))
            .await?;
        self.await_ack(stream, self.settings.reply_timeout).await
    }

    /// Streams a file (proto-spec.md §8.3): `OPEN`, then the content in
    /// chunks as it is read, then `DONE` with the device's signature over
    /// the file digest. `progress` is called with each chunk's size. Memory
    /// use does not depend on the file's size.
    ///
    /// # Errors
    /// [`ClientError::BadFileName`] before anything is sent;
    /// [`ClientError::Read`] or [`ClientError::FileChanged`] (the stream is
    /// aborted, nothing is stored); [`ClientError::Refused`] if the server
    /// refuses the file; session errors.
    pub async fn send_file(
        &mut self,
        file: &OutgoingFile,
        mut progress: impl FnMut(u64),
    ) -> Result<FileReceipt, ClientError> {
        validate_file_name(&file.name).map_err(|reason| ClientError::BadFileName {
            name: file.name.clone(),
            reason,
        })?;
        let sharing = if self.session.version() >= PROTOCOL_VERSION_2 {
            let signed_at = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            Some(Sharing {
                signed_at,
                scope: file.scope.clone(),
            })
        } else if file.scope == Scope::Private {
            None
        } else {
            return Err(ClientError::NeedsVersion2 {
                what: "share files (send them with --share private)",
            });
        };
        let read_error = |source| ClientError::Read {
            path: file.path.clone(),
            source,
        };
        let stream = self.open_stream();
        let (mut chunks, reader) = spawn_reader(&file.path, stream).map_err(read_error)?;
        let open = ImgxOpen {
            stream,
            kind: file.kind,
            size: file.size,
            name: file.name.clone(),
            content_type: file.content_type.clone(),
            sharing,
        };
        self.session
            .send(&Message::Imgx(Imgx::Open(open.clone())))
            .await?;
        // The server answers OPEN before any data: a refusal costs no upload.
        self.await_ack(stream, self.settings.reply_timeout).await?;

        let changed = |got| ClientError::FileChanged {
            path: file.path.clone(),
            expected: file.size,
            got,
        };
        let mut sent = 0u64;
        let mut batch = Vec::with_capacity(LANES);
        while let Some(first) = chunks.recv().await {
            // Take what the reader has ready, up to one lockstep group.
            batch.clear();
            batch.push(first);
            while batch.len() < LANES {
                match chunks.try_recv() {
                    Ok(chunk) => batch.push(chunk),
                    Err(_) => break,
                }
            }
            let len: u64 = batch
                .iter()
                .map(|c| (c.len() - IMGX_DATA_HEADER_LEN) as u64)
                .sum();
            if sent + len > file.size {
                // The file grew: never send more than was declared.
                drop(chunks);
                let _ = reader.await;
                return Err(self.abort_stream(stream, changed(sent + len)).await);
            }
            self.session.feed_raw_batch(FrameKind::IMGX, &batch).await?;
            sent += len;
            progress(len);
        }
        let read = match reader.await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(self.abort_stream(stream, read_error(e)).await),
            Err(e) => {
                let e = read_error(std::io::Error::other(e));
                return Err(self.abort_stream(stream, e).await);
            }
        };
        if read.size != file.size {
            return Err(self.abort_stream(stream, changed(read.size)).await);
        }
        let digest = open_digest(&open, read.size, &read.content_hash);
        let signature = self.identity.key().pss_sign_digest(&digest)?;
        self.session
            .send(&Message::Imgx(Imgx::Done { stream, signature }))
            .await?;
        // The server fsyncs before answering: allow for the disk.
        let timeout = self.settings.reply_timeout + Duration::from_secs(file.size / (50 << 20));
        let ack = self.await_ack(stream, timeout).await?;
        let (hash, name) = ack.detail.split_at(ack.detail.len().min(32));
        let mut server_sha256 = [0u8; 32];
        if hash.len() == 32 {
            server_sha256.copy_from_slice(hash);
        }
        Ok(FileReceipt {
            stream,
            stored_as: String::from_utf8_lossy(name).into_owned(),
            local_sha256: read.content_hash,
            server_sha256,
            size: read.size,
        })
    }

    /// Abandons an open `IMGX` stream and returns `err`.
    async fn abort_stream(&mut self, stream: StreamId, err: ClientError) -> ClientError {
        let abort = Message::Imgx(Imgx::Abort {
            stream,
            reason: err.to_string(),
        });
        if let Err(e) = self.session.send(&abort).await {
            return e.into();
        }
        match self.await_ack(stream, self.settings.reply_timeout).await {
            Ok(_) | Err(ClientError::Refused { .. }) => err,
            Err(e) => e,
        }
    }

    /// Receives the next message that is not a notice for the watch or a
    /// heartbeat answer (those are queued or taken in passing), within
    /// `timeout` in all.
    async fn recv_reply(
        &mut self,
        timeout: Duration,
        waiting_for: &'static str,
    ) -> Result<Message, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = match self.session.recv_within(left).await {
                Ok(msg) => msg,
                Err(SessionError::Timeout { after, .. }) => {
                    let e = SessionError::Timeout {
                        after: after.max(timeout),
                        waiting_for,
                    };
                    return Err(self.fail(e).await);
                }
                Err(e) => return Err(self.fail(e).await),
            };
            self.ping_out = false;
            match msg {
                Message::Note(note) if self.is_watch(note.stream) => self.queue_notice(*note),
                Message::Pong(_) => {}
                other => return Ok(other),
            }
        }
    }

    fn is_watch(&self, stream: StreamId) -> bool {
        self.watch.as_ref().is_some_and(|w| w.stream == stream)
    }

    fn queue_notice(&mut self, note: Note) {
        let Some(w) = self.watch.as_mut() else {
            return;
        };
        if note.event <= w.newest {
            return;
        }
        if w.queue.len() >= MAX_QUEUED_NOTICES {
            // Keep what is queued; the rest is replayed when the watch
            // resumes from the last event handled.
            w.overflowed = true;
            return;
        }
        w.newest = note.event;
        w.queue.push_back(note);
    }

    /// Closes the session with `unexpected_message` for `msg`.
    async fn unexpected(&mut self, msg: &Message) -> ClientError {
        self.session.abort(AlertCode::UnexpectedMessage).await;
        SessionError::Unexpected(msg.kind()).into()
    }

    /// Closes the session with `illegal_parameter` and returns `err`.
    async fn illegal(&mut self, err: ClientError) -> ClientError {
        self.session.abort(AlertCode::IllegalParameter).await;
        err
    }

    /// Waits for the `ACK_` of `stream`.
    async fn await_ack(&mut self, stream: StreamId, timeout: Duration) -> Result<Ack, ClientError> {
        let msg = self.recv_reply(timeout, "the server's ACK_").await?;
        match msg {
            Message::Ack(ack) if ack.stream == stream => {
                if ack.status == AckStatus::Ok {
                    Ok(ack)
                } else {
                    Err(ClientError::Refused {
                        stream,
                        status: ack.status,
                        reason: String::from_utf8_lossy(&ack.detail).into_owned(),
                    })
                }
            }
            other => Err(self.unexpected(&other).await),
        }
    }

    /// Tells the server why the session ends (a protected alert, when the
    /// error has one) and returns the error.
    async fn fail(&mut self, e: SessionError) -> ClientError {
        if let Some(code) = e.alert() {
            self.session.abort(code).await;
        }
        e.into()
    }

    /// Ends the session with `ENDD` in both directions. A watch ends with
    /// it: its final `ACK_` and any notice still in flight are taken in
    /// passing (notices not handled yet are replayed by the next watch).
    ///
    /// # Errors
    /// [`ClientError::Session`] if the server does not close cleanly.
    pub async fn close(mut self) -> Result<(), ClientError> {
        let watch = self.watch.as_ref().map(|w| w.stream);
        self.session
            .close_passing(self.settings.reply_timeout, |msg| match msg {
                Message::Note(n) => Some(n.stream) == watch,
                Message::Ack(a) => Some(a.stream) == watch && a.status == AckStatus::Ok,
                Message::Pong(_) => true,
                _ => false,
            })
            .await?;
        Ok(())
    }

    /// The files this device may see, of `owner` only if given, in the
    /// server's id order (proto-spec.md §13.5 `LIST`).
    ///
    /// # Errors
    /// [`ClientError::NeedsVersion2`] before anything is sent to a version
    /// 1 server; session errors.
    pub async fn list(&mut self, owner: Option<&str>) -> Result<Vec<FileInfo>, ClientError> {
        self.require_v2("list files")?;
        let stream = self.open_stream();
        self.session
            .send(&Message::List(List {
                stream,
                owner: owner.map(str::to_owned),
            }))
            .await?;
        let mut files = Vec::new();
        loop {
            match self
                .recv_reply(self.settings.reply_timeout, "the server's listing")
                .await?
            {
                Message::Entr(e) if e.stream == stream => files.push(e.info),
                Message::Ack(a) if a.stream == stream => {
                    return if a.status == AckStatus::Ok {
                        Ok(files)
                    } else {
                        Err(refused(a))
                    };
                }
                other => return Err(self.unexpected(&other).await),
            }
        }
    }

    /// Downloads file `id` to `to`, verified (proto-spec.md §13.5): nothing
    /// is visible at the destination before the certificate, scope, size,
    /// hash and signature all checked out. `progress` hears of each chunk.
    ///
    /// # Errors
    /// [`ClientError::Refused`] with `not_found` for a file this device may
    /// not see; [`ClientError::Download`] when verification fails;
    /// [`ClientError::Exists`] when the destination exists without
    /// `force`; [`ClientError::Destination`]; session errors.
    pub async fn fetch(
        &mut self,
        id: u64,
        to: &Destination,
        mut progress: impl FnMut(u64),
    ) -> Result<Fetched, ClientError> {
        self.require_v2("download files")?;
        let started = Instant::now();
        if !to.is_dir && !to.force && std::fs::symlink_metadata(&to.path).is_ok() {
            return Err(ClientError::Exists {
                path: to.path.clone(),
            });
        }
        let stream = self.open_stream();
        self.session
            .send(&Message::Ftch(Ftch { stream, id }))
            .await?;
        let timeout = self.settings.reply_timeout;
        let head = match self.recv_reply(timeout, "the server's FILE").await? {
            Message::File(FileMsg::Head(h)) if h.stream == stream => h,
            Message::Ack(a) if a.stream == stream && a.status != AckStatus::Ok => {
                return Err(refused(a));
            }
            other => return Err(self.unexpected(&other).await),
        };
        let dest = to.file_for(&head.info);
        let bad = |error| ClientError::Download {
            name: head.info.name.clone(),
            error,
        };
        // The signer's certificate comes alone: its issuing CA is the one
        // of this device's chain, else the one of the server's verified
        // path (proto-spec.md §13.5), as after an issuing CA was replaced.
        let me = self.identity.name();
        let signer =
            verify_head(&head, &self.anchor, self.identity.chain(), me).or_else(|e| match e {
                DownloadError::Certificate {
                    error: CertError::UnknownIssuer { .. },
                    ..
                } => verify_head(&head, &self.anchor, self.server().intermediates(), me),
                e => Err(e),
            });
        let signer = match signer {
            Ok(s) => s,
            // The head alone condemns the file: stop the transfer.
            Err(e) => {
                self.session.abort(AlertCode::BadCertificate).await;
                return Err(bad(e));
            }
        };
        let folder = Destination::folder_of(&dest);
        let dest_error = |e: std::io::Error| ClientError::Destination {
            path: dest.clone(),
            reason: e.to_string(),
        };
        let mut sink = sink::Sink::create(&folder).map_err(|e| ClientError::Destination {
            path: folder.clone(),
            reason: e.to_string(),
        })?;
        let size = head.info.size;
        let mut got = 0u64;
        loop {
            match self.recv_reply(timeout, "the file's content").await? {
                Message::File(FileMsg::Data { stream: s, chunk }) if s == stream => {
                    got += chunk.len() as u64;
                    if got > size {
                        return Err(self
                            .illegal(bad(DownloadError::Size { signed: size, got }))
                            .await);
                    }
                    let len = chunk.len() as u64;
                    sink.write(chunk).await.map_err(dest_error)?;
                    progress(len);
                }
                Message::Ack(a) if a.stream == stream => {
                    if a.status != AckStatus::Ok {
                        return Err(refused(a));
                    }
                    if got != size {
                        return Err(self
                            .illegal(bad(DownloadError::Size { signed: size, got }))
                            .await);
                    }
                    break;
                }
                other @ Message::File(FileMsg::Head(_)) => {
                    let _ = self.unexpected(&other).await;
                    return Err(SessionError::Unexpected(other.kind()).into());
                }
                other => return Err(self.unexpected(&other).await),
            }
        }
        let written = sink.finish().await.map_err(dest_error)?;
        verify_content(&head, &signer, written.size, &written.sha256).map_err(bad)?;
        written.persist(&dest, to.force).map_err(|e| match e {
            sink::PersistError::Exists(path) => ClientError::Exists { path },
            sink::PersistError::Io(e) => dest_error(e),
        })?;
        Ok(Fetched {
            signer: signer.peer.name().to_owned(),
            signed_version: head.signed_version,
            time_signed: signer.time_signed,
            info: head.info,
            path: dest,
            elapsed: started.elapsed(),
        })
    }

    /// Subscribes to notices of new files (proto-spec.md §13.5 `WTCH`).
    ///
    /// # Errors
    /// [`ClientError::NeedsVersion2`]; a refusal; session errors.
    pub async fn watch(&mut self, from: WatchFrom) -> Result<WatchStart, ClientError> {
        self.require_v2("send notices")?;
        let stream = self.open_stream();
        self.session
            .send(&Message::Wtch(Wtch { stream, from }))
            .await?;
        let newest = match from {
            WatchFrom::Now => 0,
            WatchFrom::After(a) => a,
        };
        self.watch = Some(WatchState {
            stream,
            queue: VecDeque::new(),
            newest,
            overflowed: false,
        });
        let ack = self.await_ack(stream, self.settings.reply_timeout).await?;
        let word = |i: usize| {
            ack.detail
                .get(i * 8..i * 8 + 8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(0, u64::from_be_bytes)
        };
        Ok(WatchStart {
            last: word(0),
            oldest: word(1),
        })
    }

    /// The next notice of the watch: a queued one, or the next to arrive.
    /// When nothing arrives for `heartbeat`, sends a `PING`; a server that
    /// then sends nothing within the reply time is dead.
    ///
    /// # Errors
    /// [`ClientError::NoticesOverflowed`] once the queue is drained after an
    /// overflow; [`SessionError::Timeout`] for a dead server; session errors.
    pub async fn next_notice(&mut self, heartbeat: Duration) -> Result<Note, ClientError> {
        loop {
            let Some(w) = self.watch.as_mut() else {
                return Err(ClientError::NoticesOverflowed);
            };
            if let Some(n) = w.queue.pop_front() {
                return Ok(n);
            }
            if w.overflowed {
                return Err(ClientError::NoticesOverflowed);
            }
            let wait = if self.ping_out {
                self.settings.reply_timeout
            } else {
                heartbeat
            };
            match self.session.recv_within(wait).await {
                Ok(Message::Note(n)) if self.is_watch(n.stream) => {
                    self.ping_out = false;
                    self.queue_notice(*n);
                }
                Ok(Message::Pong(_)) => self.ping_out = false,
                Ok(other) => return Err(self.unexpected(&other).await),
                Err(SessionError::Timeout { .. }) if !self.ping_out => {
                    let mut data = [0u8; 8];
                    getrandom::fill(&mut data).map_err(|e| {
                        ClientError::Session(SessionError::Io(std::io::Error::other(e)))
                    })?;
                    self.session
                        .send(&Message::Ping(u64::from_be_bytes(data)))
                        .await?;
                    self.ping_out = true;
                }
                Err(SessionError::Timeout { after, .. }) => {
                    let e = SessionError::Timeout {
                        after,
                        waiting_for: "the server's heartbeat answer",
                    };
                    return Err(self.fail(e).await);
                }
                Err(e) => return Err(self.fail(e).await),
            }
        }
    }
}
