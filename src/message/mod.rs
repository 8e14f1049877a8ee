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
mod files;
mod handshake;
mod lifecycle;
mod scope;

pub use alert::AlertCode;
pub use app::{
    Ack, AckStatus, IMGX_DATA_HEADER_LEN, Imgx, ImgxOpen, MAX_ACK_DETAIL_LEN, MAX_CHUNK_LEN,
    MAX_CONTENT_TYPE_LEN, MAX_FILE_NAME_LEN, MAX_TEXT_LEN, MediaKind, Secx, Sharing, StreamId,
};
pub use files::{
    Entr, FILE_DATA_HEADER_LEN, FileHead, FileInfo, FileMsg, Ftch, List, Note, WatchFrom, Wtch,
};
pub use handshake::{
    EXT_CERTIFICATE_CHAIN, Extension, Fini, Helo, HeloRole, MAX_CERT_LEN, MAX_CHAIN_CERT_LEN,
    MAX_EXTENSIONS_LEN, PROTOCOL_VERSION, PROTOCOL_VERSION_2, PROTOCOL_VERSION_3, Prem,
    SUPPORTED_VERSIONS, VERIFY_DATA_LEN, chain_extension,
};
pub use lifecycle::{CertMsg, Enrq, MAX_CERT_CHAIN, Rnew, TOKEN_ID_LEN, TOKEN_PROOF_LEN};
pub use scope::{MAX_DEVICE_NAME_LEN, MAX_SCOPE_DEVICES, Scope, ScopeError, is_device_name};

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

/// Every message of protocol versions 1 to 3.
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
    /// `LIST`: list visible files (version 2).
    List(List),
    /// `ENTR`: one file of a listing (version 2).
    Entr(Box<Entr>),
    /// `FTCH`: download a file (version 2).
    Ftch(Ftch),
    /// `FILE`: a downloaded file (version 2).
    File(FileMsg),
    /// `WTCH`: subscribe to notices (version 2).
    Wtch(Wtch),
    /// `NOTE`: a notice of a new file (version 2).
    Note(Box<Note>),
    /// `PING`: heartbeat (version 2).
    Ping(u64),
    /// `PONG`: heartbeat answer (version 2).
    Pong(u64),
    /// `ENRQ`: enrollment with a token (version 3).
    Enrq(Enrq),
    /// `RNEW`: renewal request (version 3).
    Rnew(Rnew),
    /// `CERT`: an issued certificate (version 3).
    Cert(CertMsg),
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
            Self::List(_) => FrameKind::LIST,
            Self::Entr(_) => FrameKind::ENTR,
            Self::Ftch(_) => FrameKind::FTCH,
            Self::File(_) => FrameKind::FILE,
            Self::Wtch(_) => FrameKind::WTCH,
            Self::Note(_) => FrameKind::NOTE,
            Self::Ping(_) => FrameKind::PING,
            Self::Pong(_) => FrameKind::PONG,
            Self::Enrq(_) => FrameKind::ENRQ,
            Self::Rnew(_) => FrameKind::RNEW,
            Self::Cert(_) => FrameKind::CERT,
            Self::Unknown { kind, .. } => *kind,
        }
    }

    /// Decodes the body of a frame of type `kind` in a version 1 session.
    ///
    /// # Errors
    /// A [`DecodeError`] naming the message and the field at fault.
    pub fn decode(kind: FrameKind, body: &[u8]) -> Result<Self, DecodeError> {
        Self::decode_in(1, kind, body)
    }

    /// Decodes the body of a frame of type `kind` in a session of protocol
    /// `version`: the types of version 2 are unknown types in version 1
    /// (proto-spec.md §13.1).
    ///
    /// # Errors
    /// A [`DecodeError`] naming the message and the field at fault.
    pub fn decode_in(version: u16, kind: FrameKind, body: &[u8]) -> Result<Self, DecodeError> {
        let v2 = version >= 2;
        let v3 = version >= 3;
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
            FrameKind::IMGX => Self::Imgx(Imgx::decode(body, version)?),
            FrameKind::LIST if v2 => Self::List(List::decode(body)?),
            FrameKind::ENTR if v2 => Self::Entr(Box::new(Entr::decode(body)?)),
            FrameKind::FTCH if v2 => Self::Ftch(Ftch::decode(body)?),
            FrameKind::FILE if v2 => Self::File(FileMsg::decode(body)?),
            FrameKind::WTCH if v2 => Self::Wtch(Wtch::decode(body)?),
            FrameKind::NOTE if v2 => Self::Note(Box::new(Note::decode(body)?)),
            FrameKind::PING if v2 => Self::Ping(files::decode_heartbeat("PING", body)?),
            FrameKind::PONG if v2 => Self::Pong(files::decode_heartbeat("PONG", body)?),
            FrameKind::ENRQ if v3 => Self::Enrq(Enrq::decode(body)?),
            FrameKind::RNEW if v3 => Self::Rnew(Rnew::decode(body)?),
            FrameKind::CERT if v3 => Self::Cert(CertMsg::decode(body)?),
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

    /// Decodes an owned plaintext: as [`Message::decode_in`], but `IMGX`
    /// and `FILE` data chunks are split off the buffer instead of copied.
    ///
    /// # Errors
    /// As [`Message::decode_in`].
    pub fn decode_owned(
        version: u16,
        kind: FrameKind,
        body: bytes::BytesMut,
    ) -> Result<Self, DecodeError> {
        if kind == FrameKind::IMGX {
            return Imgx::decode_owned(body, version).map(Self::Imgx);
        }
        if kind == FrameKind::FILE && version >= 2 {
            return FileMsg::decode_owned(body).map(Self::File);
        }
        Self::decode_in(version, kind, &body)
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
            Self::List(m) => m.encode(out),
            Self::Entr(m) => m.encode(out),
            Self::Ftch(m) => m.encode(out),
            Self::File(m) => m.encode(out),
            Self::Wtch(m) => m.encode(out),
            Self::Note(m) => m.encode(out),
            Self::Ping(d) | Self::Pong(d) => out.extend_from_slice(&d.to_be_bytes()),
            Self::Enrq(m) => m.encode(out),
            Self::Rnew(m) => m.encode(out),
            Self::Cert(m) => m.encode(out),
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
                sharing: None,
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
            let owned = Message::decode_owned(1, FrameKind::IMGX, bytes::BytesMut::from(&body[..]));
            assert_eq!(owned.unwrap(), Message::Imgx(imgx.clone()));
            round_trip(Message::Imgx(imgx));
        }
        round_trip(Message::Ack(Ack {
            stream: StreamId(3),
            status: AckStatus::Ok,
            detail: vec![1, 2, 3],
        }));
    }

    fn round_trip_v2(m: Message) {
        let body = m.to_body();
        assert_eq!(Message::decode_in(2, m.kind(), &body).unwrap(), m);
        let owned = Message::decode_owned(2, m.kind(), bytes::BytesMut::from(&body[..]));
        assert_eq!(owned.unwrap(), m);
        for cut in 0..body.len() {
            if let Ok(other) = Message::decode_in(2, m.kind(), &body[..cut]) {
                assert_ne!(other, m);
            }
        }
        let mut long = body.clone();
        long.push(0);
        if !matches!(m, Message::File(FileMsg::Data { .. })) {
            assert!(
                Message::decode_in(2, m.kind(), &long).is_err(),
                "{m:?} accepted trailing byte"
            );
        }
        // In a version 1 session the new types are unknown (§13.1).
        if m.kind() != FrameKind::IMGX {
            assert!(matches!(
                Message::decode_in(1, m.kind(), &body),
                Ok(Message::Unknown { .. })
            ));
        }
    }

    fn info() -> FileInfo {
        FileInfo {
            id: 0x0102_0304_0506_0708,
            owner: "cam-2".into(),
            name: "clip é.mp4".into(),
            stored_as: "clip é (1).mp4".into(),
            kind: MediaKind::Video,
            size: 1 << 33,
            content_type: "video/mp4".into(),
            sha256: [7; 32],
            signed_at: 1_800_000_000,
            stored_at: 1_800_000_000_123,
            scope: Scope::devices(["phone", "laptop"]).unwrap(),
        }
    }

    #[test]
    fn every_version_2_message_round_trips() {
        let open = Imgx::Open(ImgxOpen {
            stream: StreamId(5),
            kind: MediaKind::Image,
            size: 12,
            name: "a.png".into(),
            content_type: "image/png".into(),
            sharing: Some(Sharing {
                signed_at: 1_800_000_000,
                scope: Scope::Everyone,
            }),
        });
        round_trip_v2(Message::Imgx(open.clone()));
        // The same OPEN in a version 1 session has trailing bytes.
        assert!(Message::decode_in(1, FrameKind::IMGX, &Message::Imgx(open).to_body()).is_err());
        round_trip_v2(Message::List(List {
            stream: StreamId(7),
            owner: None,
        }));
        round_trip_v2(Message::List(List {
            stream: StreamId(7),
            owner: Some("cam-2".into()),
        }));
        round_trip_v2(Message::Entr(Box::new(Entr {
            stream: StreamId(7),
            info: info(),
        })));
        round_trip_v2(Message::Ftch(Ftch {
            stream: StreamId(9),
            id: 42,
        }));
        round_trip_v2(Message::File(FileMsg::Head(Box::new(FileHead {
            stream: StreamId(9),
            info: info(),
            signed_version: 2,
            certificate: vec![0x30, 0x03, 1, 2, 3],
            signature: vec![9; 256],
        }))));
        round_trip_v2(Message::File(FileMsg::Data {
            stream: StreamId(9),
            chunk: bytes::Bytes::from_static(b"content"),
        }));
        round_trip_v2(Message::Wtch(Wtch {
            stream: StreamId(11),
            from: WatchFrom::Now,
        }));
        round_trip_v2(Message::Wtch(Wtch {
            stream: StreamId(11),
            from: WatchFrom::After(99),
        }));
        round_trip_v2(Message::Note(Box::new(Note {
            stream: StreamId(11),
            event: 100,
            info: info(),
        })));
        round_trip_v2(Message::Ping(0xdead_beef));
        round_trip_v2(Message::Pong(0xdead_beef));
    }

    #[test]
    fn version_2_fields_are_checked() {
        let bad = |kind: FrameKind, body: &[u8]| Message::decode_in(2, kind, body).is_err();
        // WTCH: from 0 with an id, from 2.
        assert!(bad(FrameKind::WTCH, b"\0\0\0\x01\0\0\0\0\0\0\0\0\x01"));
        assert!(bad(FrameKind::WTCH, b"\0\0\0\x01\x02\0\0\0\0\0\0\0\0"));
        // LIST: an owner that is not a device name.
        assert!(bad(FrameKind::LIST, b"\0\0\0\x01\0\x02.a"));
        // FILE: op 3, an empty chunk, signed_version 3.
        assert!(bad(FrameKind::FILE, b"\0\0\0\x01\x03"));
        assert!(bad(FrameKind::FILE, b"\0\0\0\x01\x02"));
        let mut head = Message::File(FileMsg::Head(Box::new(FileHead {
            stream: StreamId(1),
            info: info(),
            signed_version: 2,
            certificate: vec![1],
            signature: vec![2; 256],
        })))
        .to_body();
        let at = head.len() - 2 - 256 - 2 - 1 - 2;
        head[at..at + 2].copy_from_slice(&3u16.to_be_bytes());
        assert!(bad(FrameKind::FILE, &head));
        // ENTR: id 0, a stored name with a slash.
        let mut e = info();
        e.id = 0;
        let body = Message::Entr(Box::new(Entr {
            stream: StreamId(1),
            info: e,
        }))
        .to_body();
        assert!(bad(FrameKind::ENTR, &body));
        let mut e = info();
        e.stored_as = "../x".into();
        let body = Message::Entr(Box::new(Entr {
            stream: StreamId(1),
            info: e,
        }))
        .to_body();
        assert!(bad(FrameKind::ENTR, &body));
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
