//! Application messages: `SECX`, `ACK_` (proto-spec.md §8).
//!
//! Every application message body starts with a 32-bit stream id. Devices
//! open odd ids, the server even ones (for later server-initiated streams
//! such as notifications); each side's ids strictly increase. A receiver
//! that does not know a message type answers `ACK_ unsupported` for its
//! stream and carries on, so later message types need no version change.

use std::fmt;

use super::DecodeError;
use super::codec::{Reader, put_vec_u16};

/// Largest `SECX` text, in bytes of UTF-8.
pub const MAX_TEXT_LEN: usize = 32 * 1024;
/// Largest `ACK_` detail field.
pub const MAX_ACK_DETAIL_LEN: usize = 1024;

/// A stream id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(pub u32);

impl StreamId {
    /// Whether a device opened this stream (odd ids).
    #[must_use]
    pub fn is_device_initiated(self) -> bool {
        self.0 % 2 == 1
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `SECX`: a UTF-8 text message from the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secx {
    /// The stream this message opens.
    pub stream: StreamId,
    /// The text, at most [`MAX_TEXT_LEN`] bytes.
    pub text: String,
}

impl Secx {
    pub(super) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new("SECX", body);
        let stream = StreamId(r.u32("stream")?);
        let text = r.rest();
        if text.len() > MAX_TEXT_LEN {
            return Err(r.invalid("text", "longer than 32768 bytes"));
        }
        let text = std::str::from_utf8(text)
            .map_err(|_| r.invalid("text", "not valid UTF-8"))?
            .to_owned();
        Ok(Self { stream, text })
    }

    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.stream.0.to_be_bytes());
        out.extend_from_slice(self.text.as_bytes());
    }
}

wire_codes! {
    /// The status of an `ACK_` (proto-spec.md §8.5). Unknown values are kept.
    pub enum AckStatus;
    /// Accepted (and, for files, stored).
    Ok = 0, "ok", "accepted";
    /// The request was malformed.
    BadRequest = 1, "bad_request", "the request was malformed";
    /// Refused by policy (for example, a file of that name exists).
    Rejected = 2, "rejected", "refused by the server's policy";
    /// The message type is not supported by the receiver.
    Unsupported = 3, "unsupported", "the server does not support this request";
    /// Over a size limit.
    TooLarge = 4, "too_large", "over a size limit";
    /// A signature or hash did not verify.
    BadSignature = 5, "bad_signature", "a signature or hash did not verify";
    /// The receiver could not store the data.
    StorageError = 6, "storage_error", "the server could not store the data";
    /// A name was refused (path traversal, control characters, length).
    BadName = 7, "bad_name", "the name was refused";
    /// The device abandoned the stream; nothing was kept.
    Aborted = 8, "aborted", "the transfer was abandoned and nothing was stored";
    /// Over the device's storage quota, in bytes or in files.
    QuotaExceeded = 9, "quota_exceeded", "the device's storage quota is used up";
    /// The server's disk would go below its reserve of free space.
    InsufficientStorage = 10, "insufficient_storage", "the server does not have enough free space";
    /// Too many uploads of this device in flight, or a download already
    /// in progress in the session; retry later.
    Busy = 11, "busy", "too many transfers in progress; retry later";
    /// No such file, or the device may not see it (version 2).
    NotFound = 12, "not_found", "no such file is visible to this device";
}

impl fmt::Display for AckStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `ACK_`: the answer to a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The stream answered.
    pub stream: StreamId,
    /// Outcome.
    pub status: AckStatus,
    /// Status-specific detail: a SHA-256 for stored files, a short UTF-8
    /// reason for refusals, empty otherwise.
    pub detail: Vec<u8>,
}

impl Ack {
    pub(super) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new("ACK_", body);
        let stream = StreamId(r.u32("stream")?);
        let status = AckStatus::from_u16(r.u16("status")?);
        let detail = r.vec_u16("detail", 0, MAX_ACK_DETAIL_LEN)?.to_vec();
        r.finish()?;
        Ok(Self {
            stream,
            status,
            detail,
        })
    }

    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.stream.0.to_be_bytes());
        out.extend_from_slice(&self.status.to_u16().to_be_bytes());
        put_vec_u16(
            out,
            &self.detail[..self.detail.len().min(MAX_ACK_DETAIL_LEN)],
        );
    }
}

/// Longest file name in an `IMGX` open, in bytes of UTF-8. Shorter than
/// file systems allow, so the server can add a suffix on a name collision.
pub const MAX_FILE_NAME_LEN: usize = 200;
/// Longest media type in an `IMGX` open.
pub const MAX_CONTENT_TYPE_LEN: usize = 127;
/// Bytes before the chunk in an `IMGX` data record: stream id and op.
pub const IMGX_DATA_HEADER_LEN: usize = 5;
/// Largest chunk in one `IMGX` data record.
pub const MAX_CHUNK_LEN: usize = crate::record::MAX_PLAINTEXT_LEN - IMGX_DATA_HEADER_LEN;

/// What a streamed file is (proto-spec.md §8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// A still image (value 1).
    Image,
    /// A video (value 2).
    Video,
    /// Any other content: a document, an archive, raw bytes (value 3).
    File,
}

impl MediaKind {
    /// The wire value.
    #[must_use]
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Image => 1,
            Self::Video => 2,
            Self::File => 3,
        }
    }

    /// The kind of a wire value; `None` for values this version does not
    /// define (a receiver refuses those with `decode_error`).
    #[must_use]
    pub fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Image),
            2 => Some(Self::Video),
            3 => Some(Self::File),
            _ => None,
        }
    }

    /// The name used in reports and metadata.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Video => "video",
            Self::File => "file",
        }
    }
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A UTF-8 text field with a u16 length in `1..=max`.
pub(super) fn read_text(
    r: &mut Reader<'_>,
    field: &'static str,
    max: usize,
) -> Result<String, DecodeError> {
    let bytes = r.vec_u16(field, 1, max)?;
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| r.invalid(field, "not valid UTF-8"))
}

/// A media type: 1..127 bytes of 0x21..0x7E.
pub(super) fn read_content_type(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    let ct = r.vec_u16("content_type", 1, MAX_CONTENT_TYPE_LEN)?;
    if !ct.iter().all(u8::is_ascii_graphic) {
        return Err(r.invalid("content_type", "not printable ASCII"));
    }
    Ok(String::from_utf8_lossy(ct).into_owned())
}

/// A [`MediaKind`]; values this version does not define do not decode.
pub(super) fn read_kind(r: &mut Reader<'_>) -> Result<MediaKind, DecodeError> {
    MediaKind::from_u8(r.u8("kind")?)
        .ok_or_else(|| r.invalid("kind", "must be 1 (image), 2 (video) or 3 (file)"))
}

/// The first message of an `IMGX` stream: what is coming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImgxOpen {
    /// The stream this file travels on.
    pub stream: StreamId,
    /// Image, video or any other file.
    pub kind: MediaKind,
    /// Exact number of content bytes that follow.
    pub size: u64,
    /// The file name the device proposes (checked by the server).
    pub name: String,
    /// The media type, e.g. `image/png`.
    pub content_type: String,
    /// Version 2 only (proto-spec.md §13.3): the signing time and scope,
    /// both covered by the signature. `None` in a version 1 session.
    pub sharing: Option<Sharing>,
}

/// What a version 2 `OPEN` adds: when the device signs and who may see the
/// file (proto-spec.md §13.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sharing {
    /// Unix time in seconds at which the device signs.
    pub signed_at: u64,
    /// Who may see the file.
    pub scope: super::Scope,
}

/// `IMGX`: a signed file stream from the device (proto-spec.md §8.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Imgx {
    /// op 1: metadata.
    Open(ImgxOpen),
    /// op 2: the next piece of content.
    Data {
        /// The stream.
        stream: StreamId,
        /// The bytes (a view into the received record: no copy).
        chunk: bytes::Bytes,
    },
    /// op 3: the end, with the device's signature.
    Done {
        /// The stream.
        stream: StreamId,
        /// RSA-PSS signature over the file digest.
        signature: Vec<u8>,
    },
    /// op 4: the device abandons the stream.
    Abort {
        /// The stream.
        stream: StreamId,
        /// Why, for the server's log.
        reason: String,
    },
}

impl Imgx {
    /// The stream of any `IMGX` message.
    #[must_use]
    pub fn stream(&self) -> StreamId {
        match self {
            Self::Open(o) => o.stream,
            Self::Data { stream, .. } | Self::Done { stream, .. } | Self::Abort { stream, .. } => {
                *stream
            }
        }
    }

    /// The first bytes of a data record for `stream`; the chunk follows.
    #[must_use]
    pub fn data_header(stream: StreamId) -> [u8; IMGX_DATA_HEADER_LEN] {
        let mut h = [0u8; IMGX_DATA_HEADER_LEN];
        h[..4].copy_from_slice(&stream.0.to_be_bytes());
        h[4] = 2;
        h
    }

    /// Decodes from an owned plaintext; data chunks are split off without
    /// copying.
    pub(super) fn decode_owned(
        mut body: bytes::BytesMut,
        version: u16,
    ) -> Result<Self, DecodeError> {
        if body.len() > IMGX_DATA_HEADER_LEN && body[4] == 2 {
            let head = body.split_to(IMGX_DATA_HEADER_LEN);
            let stream = StreamId(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
            return Ok(Self::Data {
                stream,
                chunk: body.freeze(),
            });
        }
        Self::decode(&body, version)
    }

    pub(super) fn decode(body: &[u8], version: u16) -> Result<Self, DecodeError> {
        let mut r = Reader::new("IMGX", body);
        let stream = StreamId(r.u32("stream")?);
        let msg = match r.u8("op")? {
            1 => {
                let kind = read_kind(&mut r)?;
                let size = r.u64("size")?;
                let name = read_text(&mut r, "name", MAX_FILE_NAME_LEN)?;
                let content_type = read_content_type(&mut r)?;
                let sharing = if version >= 2 {
                    let signed_at = r.u64("signed_at")?;
                    let scope = super::Scope::read(&mut r)?;
                    Some(Sharing { signed_at, scope })
                } else {
                    None
                };
                Self::Open(ImgxOpen {
                    stream,
                    kind,
                    size,
                    name,
                    content_type,
                    sharing,
                })
            }
            2 => {
                let chunk = r.rest();
                if chunk.is_empty() {
                    return Err(r.invalid("chunk", "empty"));
                }
                Self::Data {
                    stream,
                    chunk: bytes::Bytes::copy_from_slice(chunk),
                }
            }
            3 => Self::Done {
                stream,
                signature: r.vec_u16("signature", 256, 512)?.to_vec(),
            },
            4 => {
                // Strict, like every other text field: a lossy decode
                // would not encode back to the bytes received.
                let reason = r.vec_u16("reason", 0, MAX_ACK_DETAIL_LEN)?;
                let reason = std::str::from_utf8(reason)
                    .map_err(|_| r.invalid("reason", "not valid UTF-8"))?
                    .to_owned();
                Self::Abort { stream, reason }
            }
            _ => return Err(r.invalid("op", "must be 1 to 4")),
        };
        r.finish()?;
        Ok(msg)
    }

    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.stream().0.to_be_bytes());
        match self {
            Self::Open(o) => {
                out.push(1);
                out.push(o.kind.to_u8());
                out.extend_from_slice(&o.size.to_be_bytes());
                put_vec_u16(out, o.name.as_bytes());
                put_vec_u16(out, o.content_type.as_bytes());
                if let Some(sh) = &o.sharing {
                    out.extend_from_slice(&sh.signed_at.to_be_bytes());
                    sh.scope.encode(out);
                }
            }
            Self::Data { chunk, .. } => {
                out.push(2);
                out.extend_from_slice(chunk);
            }
            Self::Done { signature, .. } => {
                out.push(3);
                put_vec_u16(out, signature);
            }
            Self::Abort { reason, .. } => {
                out.push(4);
                // Cut an over-long reason at a character boundary, so that
                // what is sent is still UTF-8.
                let mut end = reason.len().min(MAX_ACK_DETAIL_LEN);
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                put_vec_u16(out, &reason.as_bytes()[..end]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `message` fuzzer: an `ABORT` reason that is not UTF-8
    /// was decoded lossily, so the message did not encode back to its body
    /// (and a long one, expanded by replacement characters, was then cut in
    /// the middle of a character).
    #[test]
    fn abort_reason_must_be_utf8() {
        let body = b"\x00\x00\x00\x05\x04\x00\x04ab\xe0\x84";
        assert!(matches!(
            Imgx::decode(body, 1),
            Err(DecodeError::Invalid {
                field: "reason",
                ..
            })
        ));
        let body = b"\x00\x00\x00\x05\x04\x00\x04ab\xc3\xa9";
        let msg = Imgx::decode(body, 1).unwrap();
        let mut out = Vec::new();
        msg.encode(&mut out);
        assert_eq!(out, body);
    }

    fn open_body(kind: u8) -> Vec<u8> {
        let mut body = b"\x00\x00\x00\x01\x01".to_vec();
        body.push(kind);
        body.extend_from_slice(&7u64.to_be_bytes());
        body.extend_from_slice(b"\x00\x05a.pdf\x00\x0fapplication/pdf");
        body
    }

    /// Kind 3 is a generic file (proto-spec.md §8.3), and survives a round
    /// trip; every value the spec does not define is refused.
    #[test]
    fn open_kinds() {
        let body = open_body(3);
        let msg = Imgx::decode(&body, 1).unwrap();
        let Imgx::Open(open) = &msg else {
            panic!("not an open");
        };
        assert_eq!(open.kind, MediaKind::File);
        assert_eq!(open.kind.name(), "file");
        let mut out = Vec::new();
        msg.encode(&mut out);
        assert_eq!(out, body);
        for (value, kind) in [(1, MediaKind::Image), (2, MediaKind::Video)] {
            assert_eq!(MediaKind::from_u8(value), Some(kind));
            assert_eq!(kind.to_u8(), value);
        }
        for bad in [0u8, 4, 255] {
            assert!(
                matches!(
                    Imgx::decode(&open_body(bad), 1),
                    Err(DecodeError::Invalid { field: "kind", .. })
                ),
                "kind {bad}"
            );
        }
    }

    /// An over-long reason is cut at a character boundary, so the peer can
    /// still decode it.
    #[test]
    fn long_abort_reason_is_cut_between_characters() {
        let reason = format!("x{}", "é".repeat(MAX_ACK_DETAIL_LEN));
        let msg = Imgx::Abort {
            stream: StreamId(1),
            reason,
        };
        let mut out = Vec::new();
        msg.encode(&mut out);
        let Imgx::Abort { reason, .. } = Imgx::decode(&out, 1).unwrap() else {
            panic!("not an abort");
        };
        assert_eq!(reason.len(), MAX_ACK_DETAIL_LEN - 1);
        assert!(reason.starts_with("xé"));
    }
}
