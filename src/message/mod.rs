//! Messages: typed frame bodies (proto-spec.md §4 and §8).
//!
//! A [`Message`] is decoded from a frame type and a body — the frame body
//! itself for plaintext handshake frames, the opened record for protected
//! ones. Decoding is total: any byte string yields a message or a
//! [`DecodeError`] naming the message and field, never a panic.

/// Declares a registry of `u16` wire codes: an enum that keeps unknown
/// values, with conversions, the registered name and a phrase for users.
macro_rules! wire_codes {
    (
        $(#[$enum_doc:meta])* $vis:vis enum $ty:ident;
        $($(#[$doc:meta])* $name:ident = $value:literal, $text:literal, $meaning:literal;)*
    ) => {
        $(#[$enum_doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        $vis enum $ty {
            $($(#[$doc])* $name,)*
            /// A value this version does not define.
            Unknown(u16),
        }

        impl $ty {
            /// The wire value.
            #[must_use]
            pub fn to_u16(self) -> u16 {
                match self {
                    $(Self::$name => $value,)*
                    Self::Unknown(v) => v,
                }
            }

            /// The code for a wire value.
            #[must_use]
            pub fn from_u16(v: u16) -> Self {
                match v {
                    $($value => Self::$name,)*
                    other => Self::Unknown(other),
                }
            }

            /// The registered name.
            #[must_use]
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$name => $text,)*
                    Self::Unknown(_) => "unknown",
                }
            }

            /// What the code means, as a phrase for users.
            #[must_use]
            pub fn meaning(self) -> &'static str {
                match self {
                    $(Self::$name => $meaning,)*
                    Self::Unknown(_) => "a code this version does not know",
                }
            }
        }
    };
}

mod alert;
mod app;
pub(crate) mod codec;
mod handshake;

pub use alert::AlertCode;
pub use app::{
    Ack, AckStatus, IMGX_DATA_HEADER_LEN, Imgx, ImgxOpen, MAX_ACK_DETAIL_LEN, MAX_CHUNK_LEN,
    MAX_CONTENT_TYPE_LEN, MAX_FILE_NAME_LEN, MAX_TEXT_LEN, MediaKind, Secx, StreamId,
};
pub use handshake::{
    Extension, Fini, Helo, HeloRole, MAX_CERT_LEN, MAX_EXTENSIONS_LEN, PROTOCOL_VERSION, Prem,
    VERIFY_DATA_LEN,
};

use crate::frame::{Frame, FrameKind};

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The body ended inside a field.
    #[error("{msg} message ends inside field `{field}`")]
    Truncated {
        /// Message type.
        msg: &'static str,
        /// Field being read.
        field: &'static str,
    },
    /// Bytes left after the last field.
    #[error("{msg} message has {len} unexpected bytes after its last field")]
    Trailing {
        /// Message type.
        msg: &'static str,
        /// Number of trailing bytes.
        len: usize,
    },
    /// A field has a value the protocol does not allow.
    #[error("{msg} message field `{field}` is invalid: {reason}")]
    Invalid {
        /// Message type.
        msg: &'static str,
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Every message of protocol version 1.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// `HELO`: version, nonce, certificate.
    Helo(Helo),
    /// `PREM`: wrapped pre-master and device proof.
    Prem(Prem),
    /// `FINI`: Finished MAC.
    Fini(Fini),
    /// `ALRT`: an error code before closing.
    Alert(AlertCode),
    /// `ENDD`: authenticated end of session.
    Endd,
    /// `SECX`: text.
    Secx(Secx),
    /// `ACK_`: acknowledgement of a stream.
    Ack(Ack),
    /// `IMGX`: file stream.
    Imgx(Imgx),
    /// A type this version does not know. Application types carry a stream
    /// id first, so the receiver can answer `ACK_ unsupported` for it.
    Unknown {
        /// The frame type.
        kind: FrameKind,
        /// The stream id, if the body is long enough to hold one.
        stream: Option<StreamId>,
    },
}

impl Message {
    /// The frame type that carries this message.
    #[must_use]
    pub fn kind(&self) -> FrameKind {
        match self {
            Self::Helo(_) => FrameKind::HELO,
            Self::Prem(_) => FrameKind::PREM,
            Self::Fini(_) => FrameKind::FINI,
            Self::Alert(_) => FrameKind::ALRT,
            Self::Endd => FrameKind::ENDD,
            Self::Secx(_) => FrameKind::SECX,
            Self::Ack(_) => FrameKind::ACK,
            Self::Imgx(_) => FrameKind::IMGX,
            Self::Unknown { kind, .. } => *kind,
        }
    }

    /// Decodes the body of a frame of type `kind`.
    ///
    /// # Errors
    /// A [`DecodeError`] naming the message and the field at fault.
    pub fn decode(kind: FrameKind, body: &[u8]) -> Result<Self, DecodeError> {
        Ok(match kind {
            FrameKind::HELO => Self::Helo(Helo::decode(body)?),
            FrameKind::PREM => Self::Prem(Prem::decode(body)?),
            FrameKind::FINI => Self::Fini(Fini::decode(body)?),
            FrameKind::ALRT => Self::Alert(alert::decode(body)?),
            FrameKind::ENDD => {
                codec::Reader::new("ENDD", body).finish()?;
                Self::Endd
            }
            FrameKind::SECX => Self::Secx(Secx::decode(body)?),
            FrameKind::ACK => Self::Ack(Ack::decode(body)?),
            FrameKind::IMGX => Self::Imgx(Imgx::decode(body)?),
            other => Self::Unknown {
                kind: other,
                stream: body
                    .get(..4)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .map(u32::from_be_bytes)
                    .map(StreamId),
            },
        })
    }

    /// Decodes an owned plaintext: as [`Message::decode`], but `IMGX` data
    /// chunks are split off the buffer instead of copied.
    ///
    /// # Errors
    /// As [`Message::decode`].
    pub fn decode_owned(kind: FrameKind, body: bytes::BytesMut) -> Result<Self, DecodeError> {
        if kind == FrameKind::IMGX {
            return Imgx::decode_owned(body).map(Self::Imgx);
        }
        Self::decode(kind, &body)
    }

    /// Appends the encoded body to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Helo(m) => m.encode(out),
            Self::Prem(m) => m.encode(out),
            Self::Fini(m) => m.encode(out),
            Self::Alert(code) => out.extend_from_slice(&code.to_u16().to_be_bytes()),
            Self::Endd => {}
            Self::Secx(m) => m.encode(out),
            Self::Ack(m) => m.encode(out),
            Self::Imgx(m) => m.encode(out),
            Self::Unknown { stream, .. } => {
                if let Some(s) = stream {
                    out.extend_from_slice(&s.0.to_be_bytes());
                }
            }
        }
    }

    /// The encoded body.
    #[must_use]
    pub fn to_body(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// A plaintext frame carrying this message (handshake messages and
    /// alerts sent before keys are confirmed).
    #[must_use]
    pub fn to_plain_frame(&self) -> Frame {
        Frame::new(self.kind(), self.to_body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(m: Message) {
        let body = m.to_body();
        assert_eq!(Message::decode(m.kind(), &body).unwrap(), m);
        // Every strict prefix must fail to decode (or, for free-form tails,
        // decode to something different); never panic.
        for cut in 0..body.len() {
            if let Ok(other) = Message::decode(m.kind(), &body[..cut]) {
                assert_ne!(other, m);
            }
        }
        // A trailing byte is refused, except where the last field runs to the end.
        let mut long = body.clone();
        long.push(0);
        if !matches!(m, Message::Secx(_) | Message::Imgx(Imgx::Data { .. })) {
            assert!(
                Message::decode(m.kind(), &long).is_err(),
                "{m:?} accepted trailing byte"
            );
        }
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(Message::Helo(Helo {
            role: HeloRole::Device,
            versions: vec![PROTOCOL_VERSION, 7],
            nonce: [5u8; 32],
            cert_der: vec![0x30, 0x03, 1, 2, 3],
            extensions: vec![Extension {
                kind: 0xfe01,
                data: vec![1, 2],
            }],
        }));
        round_trip(Message::Prem(Prem {
            encrypted_pre_master: vec![1u8; 256],
            device_signature: vec![2u8; 256],
        }));
        round_trip(Message::Fini(Fini {
            verify_data: [9u8; 32],
        }));
        round_trip(Message::Alert(AlertCode::BadCertificate));
        round_trip(Message::Alert(AlertCode::Unknown(4242)));
        round_trip(Message::Endd);
        round_trip(Message::Secx(Secx {
            stream: StreamId(1),
            text: "héllo".into(),
        }));
        for imgx in [
            Imgx::Open(ImgxOpen {
                stream: StreamId(5),
                kind: MediaKind::Video,
                size: 1 << 40,
                name: "clip é.mp4".into(),
                content_type: "video/mp4".into(),
            }),
            Imgx::Data {
                stream: StreamId(5),
                chunk: bytes::Bytes::from_static(b"\x00\x01\x02"),
            },
            Imgx::Done {
                stream: StreamId(5),
                signature: vec![7; 256],
            },
            Imgx::Abort {
                stream: StreamId(5),
                reason: "file changed while reading".into(),
            },
        ] {
            let body = Message::Imgx(imgx.clone()).to_body();
            let owned = Message::decode_owned(FrameKind::IMGX, bytes::BytesMut::from(&body[..]));
            assert_eq!(owned.unwrap(), Message::Imgx(imgx.clone()));
            round_trip(Message::Imgx(imgx));
        }
        round_trip(Message::Ack(Ack {
            stream: StreamId(3),
            status: AckStatus::Ok,
            detail: vec![1, 2, 3],
        }));
    }

    #[test]
    fn unknown_types_keep_their_stream() {
        let m = Message::decode(FrameKind(*b"LIST"), &[0, 0, 0, 5, 1]).unwrap();
        assert_eq!(
            m,
            Message::Unknown {
                kind: FrameKind(*b"LIST"),
                stream: Some(StreamId(5))
            }
        );
        let m = Message::decode(FrameKind(*b"LIST"), &[0]).unwrap();
        assert!(matches!(m, Message::Unknown { stream: None, .. }));
    }

    #[test]
    fn endd_must_be_empty() {
        assert!(Message::decode(FrameKind::ENDD, &[0]).is_err());
    }
}
