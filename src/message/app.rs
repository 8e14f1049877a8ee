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

macro_rules! ack_statuses {
    ($($(#[$doc:meta])* $name:ident = $value:literal, $text:literal;)*) => {
        /// The status of an `ACK_`. Unknown values are kept.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum AckStatus {
            $($(#[$doc])* $name,)*
            /// A status this version does not define.
            Unknown(u16),
        }

        impl AckStatus {
            /// The wire value.
            #[must_use]
            pub fn to_u16(self) -> u16 {
                match self {
                    $(Self::$name => $value,)*
                    Self::Unknown(v) => v,
                }
            }

            /// The status for a wire value.
            #[must_use]
            pub fn from_u16(v: u16) -> Self {
                match v {
                    $($value => Self::$name,)*
                    other => Self::Unknown(other),
                }
            }

            /// The registered name, e.g. `ok`.
            #[must_use]
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$name => $text,)*
                    Self::Unknown(_) => "unknown",
                }
            }
        }
    };
}

ack_statuses! {
    /// Accepted (and, for files, stored).
    Ok = 0, "ok";
    /// The request was malformed.
    BadRequest = 1, "bad_request";
    /// Refused by policy (for example, a file of that name exists).
    Rejected = 2, "rejected";
    /// The message type is not supported by the receiver.
    Unsupported = 3, "unsupported";
    /// Over a size limit.
    TooLarge = 4, "too_large";
    /// A signature or hash did not verify.
    BadSignature = 5, "bad_signature";
    /// The receiver could not store the data.
    StorageError = 6, "storage_error";
    /// A name was refused (path traversal, control characters, length).
    BadName = 7, "bad_name";
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
