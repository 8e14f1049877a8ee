//! Frames: the unit on the wire (proto-spec.md §3).
//!
//! ```text
//! +----------------+----------------------+------------------+
//! | type: 4 ASCII  | length: u32, BE      | body: length B   |
//! +----------------+----------------------+------------------+
//! ```
//!
//! [`FrameCodec`] is a tokio-util `Decoder`/`Encoder` built on
//! `LengthDelimitedCodec`. A length above [`MAX_BODY_LEN`] is refused as
//! soon as the header arrives, before any buffer grows for it. The codec
//! knows nothing of records or messages; it only cuts the byte stream.

use std::fmt;
use std::io;

use bytes::{BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// Length of the frame header: type and length.
pub const HEADER_LEN: usize = 8;
/// Largest frame body accepted or sent (proto-spec.md §3): a record carrying
/// the maximum plaintext of 65,536 bytes, sealed.
pub const MAX_BODY_LEN: usize = 65_600;

/// The 4-byte ASCII type of a frame. Unknown values are kept, not refused,
/// so the layer above can answer them properly.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameKind(pub [u8; 4]);

impl FrameKind {
    /// Hello: version, nonce and certificate (handshake).
    pub const HELO: Self = Self(*b"HELO");
    /// Wrapped pre-master secret and device proof (handshake).
    pub const PREM: Self = Self(*b"PREM");
    /// Finished: transcript MAC under the new keys (first protected record).
    pub const FINI: Self = Self(*b"FINI");
    /// Text message.
    pub const SECX: Self = Self(*b"SECX");
    /// File stream: an image, a video or any other file.
    pub const IMGX: Self = Self(*b"IMGX");
    /// Acknowledgement with a status.
    pub const ACK: Self = Self(*b"ACK_");
    /// Authenticated end of the session.
    pub const ENDD: Self = Self(*b"ENDD");
    /// Alert: an error code before closing.
    pub const ALRT: Self = Self(*b"ALRT");
    /// Listing request (version 2).
    pub const LIST: Self = Self(*b"LIST");
    /// One file of a listing (version 2).
    pub const ENTR: Self = Self(*b"ENTR");
    /// Download request (version 2).
    pub const FTCH: Self = Self(*b"FTCH");
    /// A downloaded file: head, then content (version 2).
    pub const FILE: Self = Self(*b"FILE");
    /// Subscription to notices (version 2).
    pub const WTCH: Self = Self(*b"WTCH");
    /// A notice of a new file (version 2).
    pub const NOTE: Self = Self(*b"NOTE");
    /// Heartbeat (version 2).
    pub const PING: Self = Self(*b"PING");
    /// Heartbeat answer (version 2).
    pub const PONG: Self = Self(*b"PONG");
    /// Enrollment request with a token proof (version 3).
    pub const ENRQ: Self = Self(*b"ENRQ");
    /// Renewal request (version 3).
    pub const RNEW: Self = Self(*b"RNEW");
    /// An issued certificate and its chain (version 3).
    pub const CERT: Self = Self(*b"CERT");
    /// The frame types version 3 adds.
    pub const VERSION_3: [Self; 3] = [Self::ENRQ, Self::RNEW, Self::CERT];
    /// The frame types version 2 adds.
    pub const VERSION_2: [Self; 8] = [
        Self::LIST,
        Self::ENTR,
        Self::FTCH,
        Self::FILE,
        Self::WTCH,
        Self::NOTE,
        Self::PING,
        Self::PONG,
    ];
    /// Every frame type of protocol version 1.
    pub const VERSION_1: [Self; 8] = [
        Self::HELO,
        Self::PREM,
        Self::FINI,
        Self::SECX,
        Self::IMGX,
        Self::ACK,
        Self::ENDD,
        Self::ALRT,
    ];

    /// The type as text if it is printable ASCII.
    #[must_use]
    pub fn as_str(&self) -> Option<&str> {
        if self.0.iter().all(|b| b.is_ascii_graphic()) {
            std::str::from_utf8(&self.0).ok()
        } else {
            None
        }
    }
}

impl fmt::Display for FrameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_str() {
            Some(s) => f.write_str(s),
            None => write!(f, "0x{}", hex::encode(self.0)),
        }
    }
}

impl fmt::Debug for FrameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The 8-byte header for a frame of `kind` with a body of `len` bytes.
///
/// # Panics
/// If `len` exceeds `u32::MAX`; callers check [`MAX_BODY_LEN`] first.
#[must_use]
pub fn header(kind: FrameKind, len: usize) -> [u8; HEADER_LEN] {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&kind.0);
    h[4..].copy_from_slice(&len.to_be_bytes());
    h
}

/// One frame as received, or a plain frame to send.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// The frame type.
    pub kind: FrameKind,
    /// The body: plaintext for handshake frames, a protected record otherwise.
    pub body: BytesMut,
}

impl Frame {
    /// A frame of `kind` with `body`.
    #[must_use]
    pub fn new(kind: FrameKind, body: impl AsRef<[u8]>) -> Self {
        Self {
            kind,
            body: BytesMut::from(body.as_ref()),
        }
    }

    /// This frame's header.
    #[must_use]
    pub fn header(&self) -> [u8; HEADER_LEN] {
        header(self.kind, self.body.len())
    }

    /// The frame exactly as it travels on the wire.
    #[must_use]
    pub fn to_wire(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_LEN + self.body.len());
        v.extend_from_slice(&self.header());
        v.extend_from_slice(&self.body);
        v
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Frame({}, {} bytes)", self.kind, self.body.len())
    }
}

/// Something that can be written as one frame: a plain [`Frame`] or a record
/// sealed straight into the output buffer.
pub trait EncodeFrame {
    /// The frame type.
    fn kind(&self) -> FrameKind;
    /// The exact body length.
    fn body_len(&self) -> usize;
    /// Writes the body into `dst`, which is exactly `body_len()` bytes; the
    /// header already written before it is passed in (records MAC it).
    fn write_body(self, header: &[u8; HEADER_LEN], dst: &mut [u8]);
}

impl EncodeFrame for Frame {
    fn kind(&self) -> FrameKind {
        self.kind
    }
    fn body_len(&self) -> usize {
        self.body.len()
    }
    fn write_body(self, _header: &[u8; HEADER_LEN], dst: &mut [u8]) {
        dst.copy_from_slice(&self.body);
    }
}

/// Errors of the frame layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A length field above [`MAX_BODY_LEN`].
    #[error("frame length exceeds the maximum of {MAX_BODY_LEN} bytes")]
    TooLarge,
    /// The stream ended inside a frame.
    #[error("the connection ended in the middle of a frame")]
    Truncated,
    /// The transport failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The tokio-util codec for frames.
#[derive(Debug)]
pub struct FrameCodec {
    inner: LengthDelimitedCodec,
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameCodec {
    /// A codec enforcing [`MAX_BODY_LEN`].
    #[must_use]
    pub fn new() -> Self {
        let inner = LengthDelimitedCodec::builder()
            .big_endian()
            .length_field_offset(4)
            .length_field_length(4)
            // The length counts the body only; hand back header and body.
            .length_adjustment(HEADER_LEN as isize)
            .num_skip(0)
            .max_frame_length(MAX_BODY_LEN)
            .new_codec();
        Self { inner }
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let whole = match self.inner.decode(src) {
            Ok(Some(whole)) => whole,
            Ok(None) => return Ok(None),
            // The inner codec's only data error is the length limit.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => return Err(FrameError::TooLarge),
            Err(e) => return Err(FrameError::Io(e)),
        };
        let mut body = whole;
        let head = body.split_to(HEADER_LEN);
        let mut kind = [0u8; 4];
        kind.copy_from_slice(&head[..4]);
        Ok(Some(Frame {
            kind: FrameKind(kind),
            body,
        }))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.is_empty() => Ok(None),
            None => Err(FrameError::Truncated),
        }
    }
}

impl<T: EncodeFrame> Encoder<T> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), FrameError> {
        let len = item.body_len();
        if len > MAX_BODY_LEN {
            return Err(FrameError::TooLarge);
        }
        let head = header(item.kind(), len);
        dst.reserve(HEADER_LEN + len);
        dst.put_slice(&head);
        let start = dst.len();
        dst.resize(start + len, 0);
        item.write_body(&head, &mut dst[start..]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(frame: Frame) -> BytesMut {
        let mut out = BytesMut::new();
        FrameCodec::new().encode(frame, &mut out).unwrap();
        out
    }

    #[test]
    fn round_trip_and_wire_layout() {
        let wire = encode(Frame::new(FrameKind::SECX, &b"hi"[..]));
        assert_eq!(&wire[..], b"SECX\0\0\0\x02hi");
        let mut buf = wire.clone();
        let f = FrameCodec::new().decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.kind, FrameKind::SECX);
        assert_eq!(&f.body[..], b"hi");
        assert!(buf.is_empty());
        assert_eq!(f.to_wire(), wire.to_vec());
    }

    #[test]
    fn partial_input_waits_byte_by_byte() {
        let wire = encode(Frame::new(FrameKind::HELO, vec![7u8; 300]));
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::new();
        for (i, b) in wire.iter().enumerate() {
            buf.put_u8(*b);
            let got = codec.decode(&mut buf).unwrap();
            assert_eq!(got.is_some(), i == wire.len() - 1);
        }
    }

    #[test]
    fn empty_body_and_back_to_back_frames() {
        let mut buf = encode(Frame::new(FrameKind::ENDD, b""));
        buf.extend_from_slice(&encode(Frame::new(FrameKind::ACK, &b"x"[..])));
        let mut codec = FrameCodec::new();
        assert_eq!(
            codec.decode(&mut buf).unwrap().unwrap().kind,
            FrameKind::ENDD
        );
        assert_eq!(
            codec.decode(&mut buf).unwrap().unwrap().kind,
            FrameKind::ACK
        );
        assert!(codec.decode(&mut buf).unwrap().is_none());
    }

    #[test]
    fn oversize_length_is_refused_before_allocation() {
        let mut buf = BytesMut::from(&b"SECX\xff\xff\xff\xff"[..]);
        let cap = buf.capacity();
        assert!(matches!(
            FrameCodec::new().decode(&mut buf),
            Err(FrameError::TooLarge)
        ));
        assert_eq!(buf.capacity(), cap, "no buffer growth for a refused length");
        let mut ok = BytesMut::from(&header(FrameKind::SECX, MAX_BODY_LEN)[..]);
        assert!(FrameCodec::new().decode(&mut ok).unwrap().is_none());
        let mut over = BytesMut::from(&header(FrameKind::SECX, MAX_BODY_LEN + 1)[..]);
        assert!(FrameCodec::new().decode(&mut over).is_err());
    }

    #[test]
    fn encoder_refuses_oversize_body() {
        let mut out = BytesMut::new();
        let r = FrameCodec::new().encode(
            Frame::new(FrameKind::SECX, vec![0u8; MAX_BODY_LEN + 1]),
            &mut out,
        );
        assert!(matches!(r, Err(FrameError::TooLarge)));
    }

    #[test]
    fn eof_inside_a_frame_is_truncation() {
        let wire = encode(Frame::new(FrameKind::SECX, &b"hello"[..]));
        let mut buf = BytesMut::from(&wire[..wire.len() - 1]);
        assert!(matches!(
            FrameCodec::new().decode_eof(&mut buf),
            Err(FrameError::Truncated)
        ));
        let mut empty = BytesMut::new();
        assert!(FrameCodec::new().decode_eof(&mut empty).unwrap().is_none());
    }

    #[test]
    fn unknown_kinds_are_kept() {
        let mut buf = encode(Frame::new(FrameKind(*b"\x00\x01zz"), b""));
        let f = FrameCodec::new().decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.kind.to_string(), "0x00017a7a");
    }
}
