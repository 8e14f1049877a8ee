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
