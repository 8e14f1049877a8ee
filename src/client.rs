//! The device API: connect, authenticate, send, close.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::crypto::cipher::LANES;
use crate::frame::FrameKind;
use crate::handshake::DeviceConfig;
use crate::message::{
    Ack, AckStatus, AlertCode, IMGX_DATA_HEADER_LEN, Imgx, ImgxOpen, MAX_TEXT_LEN, MediaKind,
    Message, Secx, StreamId,
};
use crate::pki::Identity;
use crate::pki::VerifiedPeer;
use crate::store::validate_file_name;
use crate::transfer::{file_digest, spawn_reader};

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
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            reply_timeout: Duration::from_secs(30),
            busy_retry_for: Duration::from_secs(60),
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

/// An authenticated device session.
pub struct DeviceClient<S> {
    session: Session<S>,
    identity: Arc<Identity>,
    last_stream: Option<StreamId>,
    settings: ClientSettings,
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

/// A random duration in `[d/2, d)`.
fn random_below(d: Duration) -> Duration {
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
        let mut session = Session::connect(io, config, settings.handshake_timeout).await?;
        session.set_limits(IoLimits::uniform(settings.reply_timeout));
        Ok(Self {
            session,
            identity,
            last_stream: None,
            settings,
        })
    }

    /// The server, as its certificate proved it.
    #[must_use]
    pub fn server(&self) -> &VerifiedPeer {
        self.session.peer()
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
        let read_error = |source| ClientError::Read {
            path: file.path.clone(),
            source,
        };
        let stream = self.open_stream();
        let (mut chunks, reader) = spawn_reader(&file.path, stream).map_err(read_error)?;
        self.session
            .send(&Message::Imgx(Imgx::Open(ImgxOpen {
                stream,
                kind: file.kind,
                size: file.size,
                name: file.name.clone(),
                content_type: file.content_type.clone(),
            })))
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
        let digest = file_digest(
            file.kind,
            read.size,
            &file.name,
            &file.content_type,
            &read.content_hash,
        );
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

    /// Waits for the `ACK_` of `stream`.
    async fn await_ack(&mut self, stream: StreamId, timeout: Duration) -> Result<Ack, ClientError> {
        let msg = match self.session.recv_within(timeout).await {
            Ok(msg) => msg,
            Err(SessionError::Timeout { after, .. }) => {
                let e = SessionError::Timeout {
                    after,
                    waiting_for: "the server's ACK_",
                };
                return Err(self.fail(e).await);
            }
            Err(e) => return Err(self.fail(e).await),
        };
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
            other => {
                let kind = other.kind();
                self.session.abort(AlertCode::UnexpectedMessage).await;
                Err(SessionError::Unexpected(kind).into())
            }
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

    /// Ends the session with `ENDD` in both directions.
    ///
    /// # Errors
    /// [`ClientError::Session`] if the server does not close cleanly.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.session.close(self.settings.reply_timeout).await?;
        Ok(())
    }
}
