//! A session over a byte stream: the only module that does protocol I/O.
//!
//! It drives the handshake state machines over a [`Framed`] transport with
//! [`FrameCodec`], then moves application messages through the record layer:
//! `Message` → encode → [`RecordWriter::seal`] (sealed straight into the
//! codec's write buffer) → socket, and socket → `Frame` →
//! [`RecordReader::open`] (in place) → `Message::decode`.
//!
//! **Every wait on the peer has a deadline.** Reads wait at most
//! [`IoLimits::read`], and every write or flush at most [`IoLimits::write`]:
//! a peer that stops reading cannot hold a task (or the kernel's send
//! buffers) for longer than that. Each wait also ends at once when the
//! session's stop token is cancelled, and a read ends when the peer's
//! certificate expires. After a write failed or timed out the session is
//! broken: nothing more is written to it.
//!
//! Closing rules (proto-spec.md §8.4): a session ends with `ENDD` in both
//! directions. A stream that ends without the peer's `ENDD` is a truncation
//! and is reported as [`SessionError::Truncated`]. On an error, the side
//! that detects it sends `ALRT` (protected once the session is established,
//! plaintext before) and closes.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use crate::frame::{Frame, FrameCodec, FrameError, FrameKind};
use crate::handshake::{
    AfterHelo, DeviceConfig, DeviceStart, EnrollConfig, EnrollStart, Established, ExpectDeviceHelo,
    ExpectServerHelo, HandshakeError, ServerConfig,
};
use crate::message::{AlertCode, DecodeError, Message, StreamId};
use crate::pki::{CertifiedPeer, ProvenRequest, Role, VerifiedPeer};
use crate::record::{RecordError, RecordReader, RecordWriter};

/// Default limit for a whole handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit for the first frame of a connection (the device's `HELO`).
pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(3);
/// How many bytes of sealed records may wait in the write buffer before
/// the session flushes them to the socket.
const WRITE_BACKPRESSURE: usize = 512 * 1024;
/// The longest a closing alert may wait for the peer to take it: an alert
/// is a courtesy to a peer that still reads, never a reason to stay.
const ALERT_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// The body length of a plaintext alert. A protected alert is a sealed
/// record of at least 64 bytes, so the two never look alike (proto-spec.md §9).
const PLAIN_ALERT_LEN: usize = 2;

/// Time limits of an established session's I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoLimits {
    /// Longest wait for the next record from the peer.
    pub read: Duration,
    /// Longest wait for the peer to take what this side sends: a write or
    /// flush blocked for longer ends the session.
    pub write: Duration,
}

impl IoLimits {
    /// The same limit for reads and writes.
    #[must_use]
    pub fn uniform(limit: Duration) -> Self {
        Self {
            read: limit,
            write: limit,
        }
    }
}

/// Time limits of the server's side of the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptLimits {
    /// Longest wait for the device's first frame after the connection is
    /// accepted: silent connections leave quickly.
    pub hello: Duration,
    /// Longest time from accepting to the device's verified `FINI`.
    pub handshake: Duration,
}

impl Default for AcceptLimits {
    fn default() -> Self {
        Self {
            hello: DEFAULT_HELLO_TIMEOUT,
            handshake: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// How far a device has come in the server's handshake, reported to the
/// caller of [`Session::accept`] as it happens.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// A complete `HELO` arrived and its certificate verified. The name is
    /// only *claimed*: a certificate is public.
    Hello {
        /// The certificate the device presented.
        claimed: &'a CertifiedPeer,
    },
    /// The device's proof in `PREM` verified: it holds the key of its
    /// certificate.
    Proven {
        /// The device.
        device: &'a VerifiedPeer,
    },
    /// A device enrolling with a request for `name` (only claimed: the
    /// token proves what it may have).
    Enrolling {
        /// The device name requested.
        name: &'a str,
    },
}

/// Errors of a session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The handshake failed.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// A time limit ran out.
    #[error("timed out after {}s waiting for {waiting_for}", after.as_secs_f32())]
    Timeout {
        /// The limit.
        after: Duration,
        /// What was awaited.
        waiting_for: &'static str,
    },
    /// This side stopped the session (shutdown, eviction, capacity).
    #[error("the session was stopped by this side")]
    Stopped,
    /// The peer's certificate expired while the session was open.
    #[error("the other side's certificate expired during the session")]
    PeerCertificateExpired,
    /// The peer closed the connection without `ENDD`.
    #[error("the connection ended without ENDD: the session was truncated")]
    Truncated,
    /// The peer does not speak this protocol.
    #[error(
        "the other side does not speak the secured protocol (it sent {first_bytes}); check that the address is a secured server"
    )]
    NotSecured {
        /// The first bytes received, quoted where printable.
        first_bytes: String,
    },
    /// A frame was oversized or cut off.
    #[error("{0}")]
    Frame(FrameError),
    /// A record failed authentication.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A message did not decode.
    #[error("malformed message: {0}")]
    Decode(#[from] DecodeError),
    /// A message is not allowed at this point.
    #[error("unexpected {0} message")]
    Unexpected(FrameKind),
    /// The peer sent a protected (authenticated) alert.
    #[error("the other side closed the session with alert {code}: {meaning}", code = .0, meaning = .0.meaning())]
    PeerAlert(AlertCode),
    /// The peer sent a plaintext alert after the keys were installed: it
    /// is not authenticated (the peer could not open our records, or
    /// someone on the path forged it), so it only ends the connection.
    #[error("the other side closed the session with unauthenticated alert {code}: {meaning}", code = .0, meaning = .0.meaning())]
    PlaintextAlert(AlertCode),
    /// The transport failed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<FrameError> for SessionError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Truncated => Self::Truncated,
            FrameError::Io(io) => Self::Io(io),
            other => Self::Frame(other),
        }
    }
}

impl SessionError {
    /// The alert to send to the peer for this error, if any.
    #[must_use]
    pub fn alert(&self) -> Option<AlertCode> {
        match self {
            Self::Handshake(e) => e.alert(),
            Self::Timeout { .. } => Some(AlertCode::Timeout),
            Self::Stopped => Some(AlertCode::Unavailable),
            Self::PeerCertificateExpired => Some(AlertCode::CertificateExpired),
            Self::Frame(_) => Some(AlertCode::RecordOverflow),
            Self::Record(RecordError::TooLarge | RecordError::Exhausted) => {
                Some(AlertCode::InternalError)
            }
            Self::Record(RecordError::Overflow) => Some(AlertCode::RecordOverflow),
            Self::Record(_) => Some(AlertCode::BadRecordMac),
            Self::Decode(_) => Some(AlertCode::DecodeError),
            Self::Unexpected(_) => Some(AlertCode::UnexpectedMessage),
            Self::Truncated
            | Self::NotSecured { .. }
            | Self::PeerAlert(_)
            | Self::PlaintextAlert(_)
            | Self::Io(_) => None,
        }
    }

    /// The alert the peer sent, if this error is one, and whether it was
    /// authenticated.
    #[must_use]
    pub fn peer_alert(&self) -> Option<(AlertCode, bool)> {
        match self {
            Self::PeerAlert(code) => Some((*code, true)),
            Self::PlaintextAlert(code) | Self::Handshake(HandshakeError::PeerAlert(code)) => {
                Some((*code, false))
            }
            _ => None,
        }
    }
}

/// The peer of a session: a verified device or server, or (on the server)
/// a device enrolling with a request whose key it proved.
pub trait SessionPeer {
    /// When the peer's credential stops being valid: the session ends then
    /// (proto-spec.md §8.7).
    fn valid_until(&self) -> SystemTime;
    /// Whether the peer is on the device side of the protocol.
    fn is_device(&self) -> bool;
}

impl SessionPeer for VerifiedPeer {
    fn valid_until(&self) -> SystemTime {
        self.not_after()
    }

    fn is_device(&self) -> bool {
        self.role() == Role::Device
    }
}

/// Longest an enrollment session may last: one request and its answer
/// (proto-spec.md §14.3).
pub const ENROLLMENT_SESSION_LIMIT: Duration = Duration::from_secs(60);

impl SessionPeer for ProvenRequest {
    fn valid_until(&self) -> SystemTime {
        SystemTime::now() + ENROLLMENT_SESSION_LIMIT
    }

    fn is_device(&self) -> bool {
        true
    }
}

/// What the server's handshake established: a device with a certificate,
/// or a device enrolling for one, which only the enrollment service may
/// serve (the types keep it away from every other service).
pub enum Accepted<S> {
    /// A device with a verified certificate.
    Device(Session<S>),
    /// A device that proved the key of its certificate request.
    Enrollee(Session<S, ProvenRequest>),
}

/// An established session.
pub struct Session<S, P = VerifiedPeer> {
    framed: Framed<S, FrameCodec>,
    writer: RecordWriter,
    reader: RecordReader,
    peer: P,
    /// The handshake's transcript hash (proto-spec.md §5.5).
    transcript_hash: [u8; 32],
    scratch: Vec<u8>,
    limits: IoLimits,
    stop: CancellationToken,
    /// Fires when the peer's certificate expires: one timer for the whole
    /// session, not one per record.
    expiry: Pin<Box<Sleep>>,
    /// The negotiated protocol version: it decides how records decode.
    version: u16,
    sent_endd: bool,
    received_endd: bool,
    /// A write failed or timed out: the write buffer can no longer be
    /// trusted to drain, so nothing more is written.
    broken: bool,
}

async fn next_frame<S>(
    framed: &mut Framed<S, FrameCodec>,
    waiting_for: &'static str,
) -> Result<Frame, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match framed.next().await {
        Some(Ok(frame)) => Ok(frame),
        Some(Err(e)) => Err(e.into()),
        None => {
            tracing::debug!(waiting_for, "connection closed by peer");
            Err(SessionError::Truncated)
        }
    }
}

/// Runs one write step within `limit`, ending early if `stop` is cancelled.
async fn bounded<T>(
    step: impl Future<Output = Result<T, FrameError>>,
    limit: Duration,
    stop: &CancellationToken,
    waiting_for: &'static str,
) -> Result<T, SessionError> {
    tokio::select! {
        biased;
        () = stop.cancelled() => Err(SessionError::Stopped),
        r = tokio::time::timeout(limit, step) => match r {
            Ok(r) => r.map_err(SessionError::from),
            Err(_) => Err(SessionError::Timeout { after: limit, waiting_for }),
        },
    }
}

/// Sends a plaintext alert and closes our sending side, within
/// [`ALERT_WRITE_TIMEOUT`], ignoring failures: the connection is closing.
async fn send_plain_alert<S>(framed: &mut Framed<S, FrameCodec>, code: AlertCode)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(ALERT_WRITE_TIMEOUT, async {
        let _ = framed.send(Message::Alert(code).to_plain_frame()).await;
        let _ = framed.get_mut().shutdown().await;
    })
    .await;
}

/// The first bytes of the read buffer, for telling the user what a peer
/// that does not speak the protocol sent.
fn describe_first_bytes(buf: &[u8]) -> String {
    let head = &buf[..buf.len().min(16)];
    if !head.is_empty() && head.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}", String::from_utf8_lossy(head))
    } else {
        format!("bytes {}", hex::encode(head))
    }
}

/// Whether `buf` holds bytes that cannot begin a frame of one of `kinds`.
fn starts_foreign(buf: &[u8], kinds: &[FrameKind]) -> bool {
    let head = &buf[..buf.len().min(4)];
    !head.is_empty() && !kinds.iter().any(|k| k.0.starts_with(head))
}

/// The device's first read: a server of this protocol answers with `HELO`
/// (or an alert). A frame type this protocol does not have, or a length
/// over the limit, is a peer that speaks something else.
async fn server_first_frame<S>(framed: &mut Framed<S, FrameCodec>) -> Result<Frame, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    const OURS: [FrameKind; 8] = FrameKind::VERSION_1;
    match next_frame(framed, "the server HELO").await {
        // A frame of this protocol, if not the one expected, is for the
        // handshake to refuse.
        Ok(frame) if OURS.contains(&frame.kind) => Ok(frame),
        Ok(frame) => Err(SessionError::NotSecured {
            first_bytes: describe_first_bytes(&frame.to_wire()),
        }),
        Err(SessionError::Frame(FrameError::TooLarge)) => Err(SessionError::NotSecured {
            first_bytes: describe_first_bytes(framed.read_buffer()),
        }),
        // A few bytes, not even a frame header of ours, then the end.
        Err(SessionError::Truncated) if starts_foreign(framed.read_buffer(), &OURS) => {
            Err(SessionError::NotSecured {
                first_bytes: describe_first_bytes(framed.read_buffer()),
            })
        }
        Err(e) => Err(e),
    }
}

/// Runs `steps` over a new framed transport within `timeout`, unless
/// `interrupt` completes first; on failure sends the error's alert in
/// plaintext (keys are not confirmed yet) and closes.
async fn handshake<S, T>(
    io: S,
    timeout: Duration,
    interrupt: impl Future<Output = ()>,
    steps: impl AsyncFnOnce(&mut Framed<S, FrameCodec>) -> Result<T, SessionError>,
) -> Result<(Framed<S, FrameCodec>, T), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut framed = Framed::new(io, FrameCodec::new());
    framed.set_backpressure_boundary(WRITE_BACKPRESSURE);
    let result = tokio::select! {
        r = tokio::time::timeout(timeout, steps(&mut framed)) => match r {
            Ok(r) => r,
            Err(_) => Err(SessionError::Timeout {
                after: timeout,
                waiting_for: "the handshake",
            }),
        },
        () = interrupt => Err(SessionError::Stopped),
    };
    match result {
        Ok(est) => Ok((framed, est)),
        Err(e) => {
            if let Some(code) = e.alert() {
                send_plain_alert(&mut framed, code).await;
            }
            Err(e)
        }
    }
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Runs the device side of the handshake over `io`. The session's I/O
    /// limits start at `timeout`; see [`Session::set_limits`].
    ///
    /// # Errors
    /// Any [`SessionError`]; [`SessionError::NotSecured`] when the peer
    /// answers with something that is not this protocol. On failure an
    /// alert has been sent when one applies.
    pub async fn connect(
        io: S,
        config: DeviceConfig,
        timeout: Duration,
    ) -> Result<Self, SessionError> {
        let start = DeviceStart::new(config).start();
        Self::connect_from(io, start, timeout).await
    }

    /// Runs an enrolling device's handshake over `io` (proto-spec.md
    /// §14.2): the server is authenticated against the pinned root, the
    /// device proves the key of its request.
    ///
    /// # Errors
    /// As [`Session::connect`].
    pub async fn connect_enroll(
        io: S,
        config: EnrollConfig,
        timeout: Duration,
    ) -> Result<Self, SessionError> {
        let start = EnrollStart::new(config).start();
        Self::connect_from(io, start, timeout).await
    }

    async fn connect_from(
        io: S,
        start: Result<(ExpectServerHelo, Frame), HandshakeError>,
        timeout: Duration,
    ) -> Result<Self, SessionError> {
        let (framed, est) = handshake(io, timeout, std::future::pending(), async |framed| {
            let (state, helo) = start?;
            framed.send(helo).await?;
            let frame = server_first_frame(framed).await?;
            let (state, frames) = state.handle(frame, SystemTime::now())?;
            for f in frames {
                framed.feed(f).await?;
            }
            SinkExt::<Frame>::flush(framed).await?;
            let frame = next_frame(framed, "the server FINI").await?;
            Ok(state.handle(frame)?)
        })
        .await?;
        Ok(Session::new(framed, est, IoLimits::uniform(timeout)))
    }

    /// Runs the server side of the handshake over `io` within `limits`,
    /// for a device with a certificate; an enrolling device is refused
    /// (see [`Session::accept_any`]). `progress` hears of each step as it
    /// happens (to name the claimed device in logs, to stop counting a
    /// proven device as a possible flood, and to refuse a revoked
    /// certificate before any private-key operation: an error it returns
    /// ends the handshake with that error's alert). If `interrupt` completes first,
    /// the device is told `ALRT unavailable` and [`SessionError::Stopped`]
    /// is returned.
    ///
    /// # Errors
    /// Any [`SessionError`]; on failure an alert has been sent when one applies.
    pub async fn accept(
        io: S,
        config: ServerConfig,
        limits: AcceptLimits,
        interrupt: impl Future<Output = ()>,
        progress: impl FnMut(Progress<'_>) -> Result<(), HandshakeError>,
    ) -> Result<Self, SessionError> {
        match Self::accept_with(io, config, limits, interrupt, progress, false).await? {
            Accepted::Device(session) => Ok(session),
            Accepted::Enrollee(_) => Err(SessionError::Handshake(HandshakeError::WrongRole)),
        }
    }

    /// As [`Session::accept`], and also accepts a device that enrolls
    /// with a certificate request (proto-spec.md §14.2).
    ///
    /// # Errors
    /// As [`Session::accept`].
    pub async fn accept_any(
        io: S,
        config: ServerConfig,
        limits: AcceptLimits,
        interrupt: impl Future<Output = ()>,
        progress: impl FnMut(Progress<'_>) -> Result<(), HandshakeError>,
    ) -> Result<Accepted<S>, SessionError> {
        Self::accept_with(io, config, limits, interrupt, progress, true).await
    }

    async fn accept_with(
        io: S,
        config: ServerConfig,
        limits: AcceptLimits,
        interrupt: impl Future<Output = ()>,
        mut progress: impl FnMut(Progress<'_>) -> Result<(), HandshakeError>,
        enrollment: bool,
    ) -> Result<Accepted<S>, SessionError> {
        let (framed, est) = handshake(io, limits.handshake, interrupt, async |framed| {
            let frame = tokio::time::timeout(limits.hello, next_frame(framed, "the device HELO"))
                .await
                .map_err(|_| SessionError::Timeout {
                    after: limits.hello,
                    waiting_for: "the device's HELO",
                })??;
            let (state, reply) =
                ExpectDeviceHelo::new(config).handle_any(frame, SystemTime::now(), enrollment)?;
            match state {
                AfterHelo::Device(state) => {
                    progress(Progress::Hello {
                        claimed: state.claimed(),
                    })?;
                    framed.send(reply).await?;
                    let frame = next_frame(framed, "the device PREM").await?;
                    let state = state.handle(frame)?;
                    progress(Progress::Proven {
                        device: state.device(),
                    })?;
                    let frame = next_frame(framed, "the device FINI").await?;
                    let (est, fini) = state.handle(frame)?;
                    framed.send(fini).await?;
                    Ok(Either::Device(est))
                }
                AfterHelo::Enrollee(state) => {
                    progress(Progress::Enrolling {
                        name: state.claimed().name(),
                    })?;
                    framed.send(reply).await?;
                    let frame = next_frame(framed, "the device PREM").await?;
                    let state = state.handle(frame)?;
                    let frame = next_frame(framed, "the device FINI").await?;
                    let (est, fini) = state.handle(frame)?;
                    framed.send(fini).await?;
                    Ok(Either::Enrollee(est))
                }
            }
        })
        .await?;
        let limits = IoLimits::uniform(limits.handshake);
        Ok(match est {
            Either::Device(est) => Accepted::Device(Session::new(framed, est, limits)),
            Either::Enrollee(est) => Accepted::Enrollee(Session::new(framed, est, limits)),
        })
    }
}

/// The two outcomes of the server's handshake, before they become sessions.
enum Either {
    Device(Established),
    Enrollee(Established<ProvenRequest>),
}

impl<S, P> Session<S, P>
where
    S: AsyncRead + AsyncWrite + Unpin,
    P: SessionPeer,
{
    fn new(framed: Framed<S, FrameCodec>, est: Established<P>, limits: IoLimits) -> Self {
        // A certificate valid for longer than this is treated as valid for
        // the session's whole life.
        const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        let left = est
            .peer
            .valid_until()
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .min(FAR);
        Self {
            framed,
            writer: est.writer,
            reader: est.reader,
            peer: est.peer,
            transcript_hash: est.transcript_hash,
            scratch: Vec::with_capacity(1024),
            limits,
            stop: CancellationToken::new(),
            expiry: Box::pin(tokio::time::sleep_until(Instant::now() + left)),
            version: est.version,
            sent_endd: false,
            received_endd: false,
            broken: false,
        }
    }

    /// Sets the time limits of reads and writes from now on.
    pub fn set_limits(&mut self, limits: IoLimits) {
        self.limits = limits;
    }

    /// The time limits of reads and writes.
    #[must_use]
    pub fn limits(&self) -> IoLimits {
        self.limits
    }

    /// Ends every wait of this session at once (with
    /// [`SessionError::Stopped`]) when `stop` is cancelled.
    pub fn set_stop(&mut self, stop: CancellationToken) {
        self.stop = stop;
    }

    /// The verified peer.
    #[must_use]
    pub fn peer(&self) -> &P {
        &self.peer
    }

    /// The handshake's transcript hash `th` (proto-spec.md §5.5).
    #[must_use]
    pub fn transcript_hash(&self) -> &[u8; 32] {
        &self.transcript_hash
    }

    /// The negotiated protocol version.
    #[must_use]
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The transport underneath (e.g. to set socket options).
    #[must_use]
    pub fn transport(&self) -> &S {
        self.framed.get_ref()
    }

    /// Whether a write failed or timed out (nothing more is written).
    #[must_use]
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Marks the session broken after a failed write, and explains an I/O
    /// failure by the alert the peer may have sent first.
    async fn write_failed(&mut self, error: SessionError) -> SessionError {
        self.broken = true;
        self.explain_write_error(error).await
    }

    fn check_writable(&self) -> Result<(), SessionError> {
        if self.broken {
            return Err(SessionError::Io(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "an earlier write on this session failed",
            )));
        }
        Ok(())
    }

    /// Seals `msg` into the write buffer; writes to the socket only when
    /// the buffer is over its bound.
    ///
    /// # Errors
    /// [`SessionError::Record`] for an oversize message, I/O errors,
    /// [`SessionError::Timeout`] when the peer does not take the bytes
    /// within the write limit, [`SessionError::Stopped`].
    pub async fn feed(&mut self, msg: &Message) -> Result<(), SessionError> {
        self.check_writable()?;
        self.scratch.clear();
        msg.encode(&mut self.scratch);
        let record = self.writer.seal(msg.kind(), &self.scratch)?;
        let step = self.framed.feed(record);
        if let Err(e) = bounded(step, self.limits.write, &self.stop, "the peer to read").await {
            return Err(self.write_failed(e).await);
        }
        Ok(())
    }

    /// Seals several raw plaintexts as consecutive records of `kind`,
    /// encrypted in lockstep, into the write buffer (the file data path,
    /// which builds bodies without a `Message`).
    ///
    /// # Errors
    /// As [`Session::feed`].
    pub async fn feed_raw_batch<B: AsRef<[u8]>>(
        &mut self,
        kind: FrameKind,
        plaintexts: &[B],
    ) -> Result<(), SessionError> {
        self.check_writable()?;
        let batch = self.writer.seal_batch(kind, plaintexts)?;
        let step = self.framed.feed(batch);
        if let Err(e) = bounded(step, self.limits.write, &self.stop, "the peer to read").await {
            return Err(self.write_failed(e).await);
        }
        Ok(())
    }

    /// Writes buffered records to the socket.
    ///
    /// # Errors
    /// As [`Session::feed`].
    pub async fn flush(&mut self) -> Result<(), SessionError> {
        self.check_writable()?;
        let step = SinkExt::<Frame>::flush(&mut self.framed);
        if let Err(e) = bounded(step, self.limits.write, &self.stop, "the peer to read").await {
            return Err(self.write_failed(e).await);
        }
        Ok(())
    }

    /// Sends `msg` and flushes.
    ///
    /// # Errors
    /// As [`Session::feed`].
    pub async fn send(&mut self, msg: &Message) -> Result<(), SessionError> {
        self.feed(msg).await?;
        self.flush().await
    }

    /// A write failed because the peer closed the connection: it usually
    /// said why first. Reads briefly for that alert, so that the error names
    /// the peer's reason ("unavailable") rather than a broken pipe.
    async fn explain_write_error(&mut self, error: SessionError) -> SessionError {
        if !matches!(error, SessionError::Io(_)) {
            return error;
        }
        match self
            .recv_raw(Duration::from_millis(500))
            .await
            .and_then(|(kind, plain)| Ok(Message::decode(kind, &plain)?))
        {
            Ok(Message::Alert(code)) => SessionError::PeerAlert(code),
            Err(e @ SessionError::PlaintextAlert(_)) => e,
            _ => error,
        }
    }

    /// Receives the next record's type and plaintext, opened in place,
    /// waiting at most `limit`.
    async fn recv_raw(&mut self, limit: Duration) -> Result<(FrameKind, BytesMut), SessionError> {
        if self.received_endd {
            return Err(SessionError::Unexpected(FrameKind::ENDD));
        }
        let frame = tokio::select! {
            biased;
            () = self.stop.cancelled() => return Err(SessionError::Stopped),
            () = &mut self.expiry => {
                return Err(SessionError::PeerCertificateExpired);
            }
            r = tokio::time::timeout(limit, next_frame(&mut self.framed, "the next record")) => {
                r.map_err(|_| SessionError::Timeout {
                    after: limit,
                    waiting_for: "the next record",
                })??
            }
        };
        let kind = frame.kind;
        if kind == FrameKind::ALRT && frame.body.len() == PLAIN_ALERT_LEN {
            // proto-spec.md §9: a 2-byte alert is plaintext at any point.
            return match Message::decode(kind, &frame.body)? {
                Message::Alert(code) => Err(SessionError::PlaintextAlert(code)),
                _ => Err(SessionError::Unexpected(kind)),
            };
        }
        let plain = self.reader.open(frame)?;
        Ok((kind, plain))
    }

    /// Receives the next message, waiting at most the read limit. A peer
    /// alert becomes [`SessionError::PeerAlert`] (or
    /// [`SessionError::PlaintextAlert`]); `ENDD` is returned as
    /// [`Message::Endd`] and recorded.
    ///
    /// # Errors
    /// [`SessionError::Truncated`] when the stream ends without `ENDD`,
    /// [`SessionError::Record`] for any record that fails authentication,
    /// decode errors, [`SessionError::Timeout`], [`SessionError::Stopped`],
    /// [`SessionError::PeerCertificateExpired`].
    pub async fn recv(&mut self) -> Result<Message, SessionError> {
        self.recv_within(self.limits.read).await
    }

    /// As [`Session::recv`], waiting at most `limit`.
    ///
    /// # Errors
    /// As [`Session::recv`].
    pub async fn recv_within(&mut self, limit: Duration) -> Result<Message, SessionError> {
        let (kind, plain) = self.recv_raw(limit).await?;
        // The type alone decides (proto-spec.md §9.1): handshake messages
        // never come after the handshake, and a device never answers a
        // stream in version 1, since the server opens none.
        // In version 2 the same holds for the server's answers (§13.6).
        let from_device = self.peer.is_device();
        let server_only = kind == FrameKind::ACK
            || (self.version >= 2
                && matches!(
                    kind,
                    FrameKind::ENTR | FrameKind::FILE | FrameKind::NOTE | FrameKind::PONG
                ))
            || (self.version >= 3 && kind == FrameKind::CERT);
        if matches!(kind, FrameKind::HELO | FrameKind::PREM | FrameKind::FINI)
            || (from_device && server_only)
        {
            return Err(SessionError::Unexpected(kind));
        }
        match Message::decode_owned(self.version, kind, plain)? {
            Message::Alert(code) => Err(SessionError::PeerAlert(code)),
            Message::Endd => {
                self.received_endd = true;
                Ok(Message::Endd)
            }
            m => Ok(m),
        }
    }

    /// Ends the session cleanly (proto-spec.md §8.4), as the side that
    /// closes first: sends `ENDD`, waits for the peer's `ENDD`, closes its
    /// sending side, and reads until the peer closes too. Anything that
    /// arrives after the peer's `ENDD` is an error, so nothing appended to
    /// the session goes unnoticed. Bounded by `timeout` per step.
    ///
    /// # Errors
    /// [`SessionError::Truncated`] if the peer closes without `ENDD`, a
    /// receive error, [`SessionError::Unexpected`] for messages instead of
    /// `ENDD` or after it, or [`SessionError::Timeout`].
    pub async fn close(&mut self, timeout: Duration) -> Result<(), SessionError> {
        self.close_passing(timeout, |_| false).await
    }

    /// As [`Session::close`], but messages for which `passing` is true may
    /// arrive before the peer's `ENDD` (in version 2, what the server sends
    /// on a watch until it sees the device's `ENDD`) and are dropped.
    ///
    /// # Errors
    /// As [`Session::close`].
    pub async fn close_passing(
        &mut self,
        timeout: Duration,
        mut passing: impl FnMut(&Message) -> bool,
    ) -> Result<(), SessionError> {
        if !self.sent_endd {
            self.sent_endd = true;
            self.send(&Message::Endd).await?;
        }
        if !self.received_endd {
            let deadline = Instant::now() + timeout;
            let reply = loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.recv_within(left).await {
                    Ok(m) if m != Message::Endd && passing(&m) => {}
                    other => break other,
                }
            };
            let reply = match reply {
                Ok(Message::Endd) => Ok(()),
                Ok(other) => Err(SessionError::Unexpected(other.kind())),
                Err(SessionError::Timeout { after, .. }) => Err(SessionError::Timeout {
                    after,
                    waiting_for: "the peer's ENDD",
                }),
                Err(e) => Err(e),
            };
            if let Err(e) = reply {
                // Our sending side is still open: say why we stop. A stream
                // cut inside the peer's ENDD is worth an alert here too: the
                // peer may well be alive and waiting for our close.
                let code = match &e {
                    SessionError::Truncated => Some(AlertCode::DecodeError),
                    other => other.alert(),
                };
                if let Some(code) = code {
                    self.abort(code).await;
                }
                return Err(e);
            }
        }
        self.shutdown_write().await?;
        self.drain_until_eof(timeout).await
    }

    /// Answers the peer's `ENDD` with ours, then reads until the peer closes
    /// its side; a record instead is answered with `ALRT
    /// unexpected_message`. Bounded by `timeout`; if `enough` completes
    /// first (the server shutting down), waiting for the peer's close ends
    /// there: both `ENDD`s are exchanged, so nothing is lost by closing.
    ///
    /// # Errors
    /// I/O errors, [`SessionError::Unexpected`] for data after `ENDD`, or
    /// [`SessionError::Timeout`].
    pub async fn finish_close(
        &mut self,
        timeout: Duration,
        enough: impl Future<Output = ()>,
    ) -> Result<(), SessionError> {
        if !self.sent_endd {
            self.sent_endd = true;
            self.send(&Message::Endd).await?;
        }
        let drained = tokio::select! {
            r = self.drain_until_eof(timeout) => r,
            () = enough => Ok(()),
        };
        if let Err(e) = drained {
            if let Some(code) = e.alert() {
                self.abort(code).await;
            }
            return Err(e);
        }
        self.shutdown_write().await
    }

    /// Closes our sending side (TCP FIN), within the write limit.
    async fn shutdown_write(&mut self) -> Result<(), SessionError> {
        let limit = self.limits.write;
        match tokio::time::timeout(limit, self.framed.get_mut().shutdown()).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(SessionError::Timeout {
                after: limit,
                waiting_for: "the peer to read",
            }),
        }
    }

    /// After both `ENDD`s: the only acceptable thing left is the end of the
    /// stream.
    async fn drain_until_eof(&mut self, timeout: Duration) -> Result<(), SessionError> {
        let next = tokio::select! {
            biased;
            () = self.stop.cancelled() => return Err(SessionError::Stopped),
            r = tokio::time::timeout(timeout, self.framed.next()) => {
                r.map_err(|_| SessionError::Timeout {
                    after: timeout,
                    waiting_for: "the peer to close the connection after ENDD",
                })?
            }
        };
        match next {
            None => Ok(()),
            Some(Err(e)) => Err(e.into()),
            Some(Ok(frame)) => {
                let kind = frame.kind;
                if kind == FrameKind::ALRT
                    && frame.body.len() == PLAIN_ALERT_LEN
                    && let Ok(Message::Alert(code)) = Message::decode(kind, &frame.body)
                {
                    return Err(SessionError::PlaintextAlert(code));
                }
                let plain = self.reader.open(frame)?;
                match Message::decode(kind, &plain) {
                    Ok(Message::Alert(code)) => Err(SessionError::PeerAlert(code)),
                    _ => Err(SessionError::Unexpected(kind)),
                }
            }
        }
    }

    /// Sends a protected alert and closes our sending side, within
    /// [`ALERT_WRITE_TIMEOUT`] and ignoring failures; nothing is sent on a
    /// broken session.
    pub async fn abort(&mut self, code: AlertCode) {
        if !self.broken {
            self.broken = true;
            let _ = tokio::time::timeout(ALERT_WRITE_TIMEOUT, async {
                self.scratch.clear();
                Message::Alert(code).encode(&mut self.scratch);
                if let Ok(record) = self.writer.seal(FrameKind::ALRT, &self.scratch) {
                    let _ = self.framed.send(record).await;
                }
                let _ = self.framed.get_mut().shutdown().await;
            })
            .await;
        }
    }

    /// The next stream id a device should use, given the last one.
    #[must_use]
    pub fn next_device_stream(last: Option<StreamId>) -> StreamId {
        StreamId(last.map_or(1, |s| s.0.saturating_add(2)))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::testkit::pki;

    /// What a device says when it dials something that is not a secured
    /// server: the peer's first bytes, not a frame-length complaint.
    #[tokio::test]
    async fn a_peer_that_speaks_another_protocol_is_named_as_such() {
        for (answer, shown) in [
            (
                &b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"[..],
                "\"HTTP/1.1 400 Bad\"",
            ),
            (&b"SSH-2.0-OpenSSH_9.2\r\n"[..], "\"SSH-2.0-OpenSSH_\""),
            (&b"\x15\x03\x01\x00\x02\x02\x46"[..], "bytes 15030100020246"),
        ] {
            let (device_end, mut other_end) = tokio::io::duplex(64 * 1024);
            other_end.write_all(answer).await.unwrap();
            other_end.shutdown().await.unwrap();
            let err = Session::connect(device_end, pki().device_config(), Duration::from_secs(5))
                .await
                .err()
                .expect("refused");
            match &err {
                SessionError::NotSecured { first_bytes } => assert_eq!(first_bytes, shown),
                other => panic!("{other}"),
            }
            assert!(
                err.to_string()
                    .starts_with("the other side does not speak the secured protocol (it sent "),
                "{err}"
            );
        }
    }

    /// A server of this protocol that dies inside its HELO is a truncation.
    #[tokio::test]
    async fn a_helo_cut_short_is_a_truncation() {
        let (device_end, mut other_end) = tokio::io::duplex(64 * 1024);
        other_end.write_all(b"HELO\0\0\x01").await.unwrap();
        other_end.shutdown().await.unwrap();
        let err = Session::connect(device_end, pki().device_config(), Duration::from_secs(5))
            .await
            .err()
            .expect("refused");
        assert!(matches!(err, SessionError::Truncated), "{err}");
    }

    /// A frame of a known kind that is not the server's answer stays a
    /// protocol error of the handshake, not a foreign protocol.
    #[tokio::test]
    async fn a_secured_peer_with_the_wrong_frame_is_not_called_foreign() {
        let (device_end, mut other_end) = tokio::io::duplex(64 * 1024);
        other_end.write_all(b"ENDD\0\0\0\0").await.unwrap();
        let err = Session::connect(device_end, pki().device_config(), Duration::from_secs(5))
            .await
            .err()
            .expect("refused");
        assert!(
            matches!(
                err,
                SessionError::Handshake(HandshakeError::Unexpected {
                    expected: FrameKind::HELO,
                    got: FrameKind::ENDD
                })
            ),
            "{err}"
        );
    }
}
