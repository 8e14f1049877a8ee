//! A session over a byte stream: the only module that does protocol I/O.
//!
//! It drives the handshake state machines over a [`Framed`] transport with
//! [`FrameCodec`], then moves application messages through the record layer:
//! `Message` → encode → [`RecordWriter::seal`] (sealed straight into the
//! codec's write buffer) → socket, and socket → `Frame` →
//! [`RecordReader::open`] (in place) → `Message::decode`.
//!
//! Closing rules (proto-spec.md §8.4): a session ends with `ENDD` in both
//! directions. A stream that ends without the peer's `ENDD` is a truncation
//! and is reported as [`SessionError::Truncated`]. On an error, the side
//! that detects it sends `ALRT` (protected once the session is established,
//! plaintext before) and closes.

use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Framed;

use crate::frame::{Frame, FrameCodec, FrameError, FrameKind};
use crate::handshake::{
    DeviceConfig, DeviceStart, Established, ExpectDeviceHelo, HandshakeError, ServerConfig,
};
use crate::message::{AlertCode, DecodeError, Message, StreamId};
use crate::pki::VerifiedPeer;
use crate::record::{RecordError, RecordReader, RecordWriter};

/// Default limit for a whole handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How many bytes of sealed records may wait in the write buffer before
/// the session flushes them to the socket.
const WRITE_BACKPRESSURE: usize = 512 * 1024;

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
    /// The peer closed the connection without `ENDD`.
    #[error("the connection ended without ENDD: the session was truncated")]
    Truncated,
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
    /// The peer sent an alert.
    #[error("the other side closed the session with alert {code}: {meaning}", code = .0, meaning = .0.meaning())]
    PeerAlert(AlertCode),
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
            Self::Frame(_) => Some(AlertCode::RecordOverflow),
            Self::Record(RecordError::TooLarge | RecordError::Exhausted) => {
                Some(AlertCode::InternalError)
            }
            Self::Record(RecordError::Overflow) => Some(AlertCode::RecordOverflow),
            Self::Record(_) => Some(AlertCode::BadRecordMac),
            Self::Decode(_) => Some(AlertCode::DecodeError),
            Self::Unexpected(_) => Some(AlertCode::UnexpectedMessage),
            Self::Truncated | Self::PeerAlert(_) | Self::Io(_) => None,
        }
    }
}

/// An established session.
pub struct Session<S> {
    framed: Framed<S, FrameCodec>,
    writer: RecordWriter,
    reader: RecordReader,
    peer: VerifiedPeer,
    scratch: Vec<u8>,
    sent_endd: bool,
    received_endd: bool,
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

/// Sends a plaintext alert, ignoring failures: the connection is closing.
async fn send_plain_alert<S>(framed: &mut Framed<S, FrameCodec>, code: AlertCode)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = framed.send(Message::Alert(code).to_plain_frame()).await;
    let _ = framed.get_mut().shutdown().await;
}

/// Runs `steps` over a new framed transport within `timeout`; on failure
/// sends the error's alert in plaintext (keys are not confirmed yet) and
/// closes.
async fn handshake<S>(
    io: S,
    timeout: Duration,
    steps: impl AsyncFnOnce(&mut Framed<S, FrameCodec>) -> Result<Established, SessionError>,
) -> Result<Session<S>, SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut framed = Framed::new(io, FrameCodec::new());
    framed.set_backpressure_boundary(WRITE_BACKPRESSURE);
    let result = match tokio::time::timeout(timeout, steps(&mut framed)).await {
        Ok(r) => r,
        Err(_) => Err(SessionError::Timeout {
            after: timeout,
            waiting_for: "the handshake",
        }),
    };
    match result {
        Ok(est) => Ok(Session::new(framed, est)),
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
    /// Runs the device side of the handshake over `io`.
    ///
    /// # Errors
    /// Any [`SessionError`]; on failure an alert has been sent when one applies.
    pub async fn connect(
        io: S,
        config: DeviceConfig,
        timeout: Duration,
    ) -> Result<Self, SessionError> {
        handshake(io, timeout, async |framed| {
            let (state, helo) = DeviceStart::new(config).start()?;
            framed.send(helo).await?;
            let frame = next_frame(framed, "the server HELO").await?;
            let (state, frames) = state.handle(frame, SystemTime::now())?;
            for f in frames {
                framed.feed(f).await?;
            }
            SinkExt::<Frame>::flush(framed).await?;
            let frame = next_frame(framed, "the server FINI").await?;
            Ok(state.handle(frame)?)
        })
        .await
    }

    /// Runs the server side of the handshake over `io`. `on_device` is
    /// called once the device's certificate has verified (before its key
    /// possession is proven), so that logs can name it early.
    ///
    /// # Errors
    /// Any [`SessionError`]; on failure an alert has been sent when one applies.
    pub async fn accept(
        io: S,
        config: ServerConfig,
        timeout: Duration,
        on_device: impl FnOnce(&VerifiedPeer),
    ) -> Result<Self, SessionError> {
        handshake(io, timeout, async |framed| {
            let frame = next_frame(framed, "the device HELO").await?;
            let (state, reply) = ExpectDeviceHelo::new(config).handle(frame, SystemTime::now())?;
            on_device(state.device());
            framed.send(reply).await?;
            let frame = next_frame(framed, "the device PREM").await?;
            let state = state.handle(frame)?;
            let frame = next_frame(framed, "the device FINI").await?;
            let (est, fini) = state.handle(frame)?;
            framed.send(fini).await?;
            Ok(est)
        })
        .await
    }

    fn new(framed: Framed<S, FrameCodec>, est: Established) -> Self {
        Self {
            framed,
            writer: est.writer,
            reader: est.reader,
            peer: est.peer,
            scratch: Vec::with_capacity(1024),
            sent_endd: false,
            received_endd: false,
        }
    }

    /// The verified peer.
    #[must_use]
    pub fn peer(&self) -> &VerifiedPeer {
        &self.peer
    }

    /// Seals `msg` into the write buffer without flushing.
    ///
    /// # Errors
    /// [`SessionError::Record`] for an oversize message, or I/O errors.
    pub async fn feed(&mut self, msg: &Message) -> Result<(), SessionError> {
        self.scratch.clear();
        msg.encode(&mut self.scratch);
        let record = self.writer.seal(msg.kind(), &self.scratch)?;
        if let Err(e) = self.framed.feed(record).await {
            return Err(self.explain_write_error(e.into()).await);
        }
        Ok(())
    }

    /// Seals raw `plaintext` as a record of `kind` without flushing (the
    /// file data path, which builds bodies without a `Message`).
    ///
    /// # Errors
    /// As [`Session::feed`].
    pub async fn feed_raw(
        &mut self,
        kind: FrameKind,
        plaintext: &[u8],
    ) -> Result<(), SessionError> {
        let record = self.writer.seal(kind, plaintext)?;
        if let Err(e) = self.framed.feed(record).await {
            return Err(self.explain_write_error(e.into()).await);
        }
        Ok(())
    }

    /// Seals several raw plaintexts as consecutive records of `kind`,
    /// encrypted in lockstep, without flushing (the file data path).
    ///
    /// # Errors
    /// As [`Session::feed`].
    pub async fn feed_raw_batch<P: AsRef<[u8]>>(
        &mut self,
        kind: FrameKind,
        plaintexts: &[P],
    ) -> Result<(), SessionError> {
        let batch = self.writer.seal_batch(kind, plaintexts)?;
        if let Err(e) = self.framed.feed(batch).await {
            return Err(self.explain_write_error(e.into()).await);
        }
        Ok(())
    }

    /// Flushes buffered records to the socket.
    ///
    /// # Errors
    /// I/O errors.
    pub async fn flush(&mut self) -> Result<(), SessionError> {
        if let Err(e) = SinkExt::<Frame>::flush(&mut self.framed).await {
            return Err(self.explain_write_error(e.into()).await);
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
        match tokio::time::timeout(Duration::from_millis(500), self.recv_raw()).await {
            Ok(Ok((FrameKind::ALRT, plain))) => match Message::decode(FrameKind::ALRT, &plain) {
                Ok(Message::Alert(code)) => SessionError::PeerAlert(code),
                _ => error,
            },
            _ => error,
        }
    }

    /// Receives the next record's type and plaintext, opened in place.
    ///
    /// # Errors
    /// [`SessionError::Truncated`] when the stream ends without `ENDD`,
    /// [`SessionError::Record`] for any record that fails authentication.
    pub async fn recv_raw(&mut self) -> Result<(FrameKind, BytesMut), SessionError> {
        if self.received_endd {
            return Err(SessionError::Unexpected(FrameKind::ENDD));
        }
        let frame = next_frame(&mut self.framed, "the next record").await?;
        let kind = frame.kind;
        let plain = self.reader.open(frame)?;
        Ok((kind, plain))
    }

    /// Receives the next message. A peer alert becomes
    /// [`SessionError::PeerAlert`]; `ENDD` is returned as
    /// [`Message::Endd`] and recorded.
    ///
    /// # Errors
    /// As [`Session::recv_raw`], plus decode errors.
    pub async fn recv(&mut self) -> Result<Message, SessionError> {
        let (kind, plain) = self.recv_raw().await?;
        match Message::decode_owned(kind, plain)? {
            Message::Alert(code) => Err(SessionError::PeerAlert(code)),
            Message::Endd => {
                self.received_endd = true;
                Ok(Message::Endd)
            }
            m @ (Message::Helo(_) | Message::Prem(_) | Message::Fini(_)) => {
                Err(SessionError::Unexpected(m.kind()))
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
        if !self.sent_endd {
            self.sent_endd = true;
            self.send(&Message::Endd).await?;
        }
        if !self.received_endd {
            let reply = match tokio::time::timeout(timeout, self.recv()).await {
                Ok(Ok(Message::Endd)) => Ok(()),
                Ok(Ok(other)) => Err(SessionError::Unexpected(other.kind())),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(SessionError::Timeout {
                    after: timeout,
                    waiting_for: "the peer's ENDD",
                }),
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
        self.framed.get_mut().shutdown().await?;
        self.drain_until_eof(timeout).await
    }

    /// Answers the peer's `ENDD` with ours, then reads until the peer closes
    /// its side; a record instead is answered with `ALRT
    /// unexpected_message`. Bounded by `timeout`.
    ///
    /// # Errors
    /// I/O errors, [`SessionError::Unexpected`] for data after `ENDD`, or
    /// [`SessionError::Timeout`].
    pub async fn finish_close(&mut self, timeout: Duration) -> Result<(), SessionError> {
        if !self.sent_endd {
            self.sent_endd = true;
            self.send(&Message::Endd).await?;
        }
        if let Err(e) = self.drain_until_eof(timeout).await {
            if let Some(code) = e.alert() {
                self.abort(code).await;
            }
            return Err(e);
        }
        self.framed.get_mut().shutdown().await?;
        Ok(())
    }

    /// After both `ENDD`s: the only acceptable thing left is the end of the
    /// stream.
    async fn drain_until_eof(&mut self, timeout: Duration) -> Result<(), SessionError> {
        let next = tokio::time::timeout(timeout, self.framed.next())
            .await
            .map_err(|_| SessionError::Timeout {
                after: timeout,
                waiting_for: "the peer to close the connection after ENDD",
            })?;
        match next {
            None => Ok(()),
            Some(Err(e)) => Err(e.into()),
            Some(Ok(frame)) => {
                let kind = frame.kind;
                let plain = self.reader.open(frame)?;
                match Message::decode(kind, &plain) {
                    Ok(Message::Alert(code)) => Err(SessionError::PeerAlert(code)),
                    _ => Err(SessionError::Unexpected(kind)),
                }
            }
        }
    }

    /// Sends a protected alert and shuts the stream down, ignoring failures.
    pub async fn abort(&mut self, code: AlertCode) {
        let _ = self.send(&Message::Alert(code)).await;
        let _ = self.framed.get_mut().shutdown().await;
    }

    /// The next stream id a device should use, given the last one.
    #[must_use]
    pub fn next_device_stream(last: Option<StreamId>) -> StreamId {
        StreamId(last.map_or(1, |s| s.0.saturating_add(2)))
    }
}
