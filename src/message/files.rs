//! Version 2 messages (proto-spec.md §13): listings (`LIST` → `ENTR`),
//! downloads (`FTCH` → `FILE`), notices (`WTCH` → `NOTE`) and the
//! heartbeat (`PING` → `PONG`), with the [`FileInfo`] they share.

use bytes::{Bytes, BytesMut};

use super::DecodeError;
use super::app::{
    MAX_CHUNK_LEN, MAX_FILE_NAME_LEN, MediaKind, StreamId, read_content_type, read_kind, read_text,
};
use super::codec::{Reader, put_vec_u16};
use super::handshake::MAX_CERT_LEN;
use super::scope::{MAX_DEVICE_NAME_LEN, Scope, read_device_name};

/// Bytes before the chunk in a `FILE` data record: stream id and op.
pub const FILE_DATA_HEADER_LEN: usize = 5;

/// A file as listings, downloads and notices describe it (proto-spec.md
/// §13.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Non-zero, unique on the server, drawn at random.
    pub id: u64,
    /// The uploader, or `server`.
    pub owner: String,
    /// The name the owner signed.
    pub name: String,
    /// The name the server stored it under (unique per owner).
    pub stored_as: String,
    /// Image, video or any other file.
    pub kind: MediaKind,
    /// Bytes.
    pub size: u64,
    /// Media type.
    pub content_type: String,
    /// SHA-256 of the content.
    pub sha256: [u8; 32],
    /// When the owner signed, Unix seconds; 0 for a version 1 upload.
    pub signed_at: u64,
    /// When the server stored it, Unix milliseconds (the server's word).
    pub stored_at: u64,
    /// Who may see it, as signed.
    pub scope: Scope,
}

/// A file name field: UTF-8 within bounds and the rules of §8.3.2.
fn read_file_name(r: &mut Reader<'_>, field: &'static str) -> Result<String, DecodeError> {
    let name = read_text(r, field, MAX_FILE_NAME_LEN)?;
    if crate::store::validate_file_name(&name).is_err() {
        return Err(r.invalid(field, "breaks the file name rules"));
    }
    Ok(name)
}

impl FileInfo {
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let id = r.u64("id")?;
        if id == 0 {
            return Err(r.invalid("id", "must not be 0"));
        }
        let owner = read_device_name(r, "owner")?;
        let name = read_file_name(r, "name")?;
        let stored_as = read_file_name(r, "stored_as")?;
        let kind = read_kind(r)?;
        let size = r.u64("size")?;
        let content_type = read_content_type(r)?;
        let sha256 = r.array("sha256")?;
        let signed_at = r.u64("signed_at")?;
        let stored_at = r.u64("stored_at")?;
        let scope = Scope::read(r)?;
        Ok(Self {
            id,
            owner,
            name,
            stored_as,
            kind,
            size,
            content_type,
            sha256,
            signed_at,
            stored_at,
            scope,
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_be_bytes());
        put_vec_u16(
            out,
            &self.owner.as_bytes()[..self.owner.len().min(MAX_DEVICE_NAME_LEN)],
        );
        put_vec_u16(out, self.name.as_bytes());
        put_vec_u16(out, self.stored_as.as_bytes());
        out.push(self.kind.to_u8());
        out.extend_from_slice(&self.size.to_be_bytes());
        put_vec_u16(out, self.content_type.as_bytes());
        out.extend_from_slice(&self.sha256);
        out.extend_from_slice(&self.signed_at.to_be_bytes());
        out.extend_from_slice(&self.stored_at.to_be_bytes());
        self.scope.encode(out);
    }
}

/// `LIST`: the files this device may see, of one owner or all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List {
    /// The stream this request opens.
    pub stream: StreamId,
    /// Only this owner's files; `None` for every owner.
    pub owner: Option<String>,
}

impl List {
    pub(super) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new("LIST", body);
        let stream = StreamId(r.u32("stream")?);
        let owner = r.vec_u16("owner", 0, MAX_DEVICE_NAME_LEN)?;
        let owner = if owner.is_empty() {
            None
        } else {
            let name = std::str::from_utf8(owner)
                .ok()
                .filter(|n| super::is_device_name(n))
                .ok_or_else(|| r.invalid("owner", "not a device name"))?;
            Some(name.to_owned())
        };
        r.finish()?;
        Ok(Self { stream, owner })
    }

    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.stream.0.to_be_bytes());
        put_vec_u16(out, self.owner.as_deref().unwrap_or("").as_bytes());
    }
}

/// `ENTR`: one file of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entr {
    /// The `LIST` stream.
    pub stream: StreamId,
    /// The file.
    pub info: FileInfo,
}

impl Entr {
    pub(super) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new("ENTR", body);
        let stream = StreamId(r.u32("stream")?);
        let info = FileInfo::read(&mut r)?;
        r.finish()?;
        Ok(Self { stream, info })
    }

    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.stream.0.to_be_bytes());
        self.info.encode(out);
    }
}

/// `FTCH`: download a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ftch {
    /// The stream this request opens.
    pub stream: StreamId,
    /// The file's id.
    pub id: u64,
}

impl Ftch {
    pub(super) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new("FTCH", body);
        let stream = StreamId(r.u32("stream")?);
        let id = r.u64("id")?;
        r.finish()?;
        Ok(Self { stream, id })
    }

    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.stream.0.to_be_bytes());
        out.extend_from_slice(&self.id.to_be_bytes());
    }
}

/// The head of a downloaded file: what it is and who signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHead {
    /// The `FTCH` stream.
    pub stream: StreamId,
    /// The file.
    pub info: FileInfo,
    /// Which digest the signature covers: 1 (§8.3.3) or 2 (§13.3).
    pub signed_version: u16,
    /// The signer's certificate, DER.
    pub certificate: Vec<u8>,
    /// The owner's RSA-PSS signature over the file digest.
    pub signature: Vec<u8>,
}

/// `FILE`: a downloaded file, head then content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileMsg {
    /// op 1: what the file is and who signed it.
    Head(Box<FileHead>),
    /// op 2: the next piece of content.
    Data {
        /// The `FTCH` stream.
        stream: StreamId,
        /// The bytes (a view into the received record).
        chunk: Bytes,
    },
}

impl FileMsg {
    /// The stream of either op.
    #[must_use]
    pub fn stream(&self) -> StreamId {
        match self {
            Self::Head(h) => h.stream,
            Self::Data { stream, .. } => *stream,
        }
    }

    /// The first bytes of a data record for `stream`; the chunk follows.
    #[must_use]
    pub fn data_header(stream: StreamId) -> [u8; FILE_DATA_HEADER_LEN] {
        let mut h = [0u8; FILE_DATA_HEADER_LEN];
        h[..4].copy_from_slice(&stream.0.to_be_bytes());
        h[4] = 2;
        h
    }

    pub(super) fn decode_owned(mut body: BytesMut) -> Result<Self, DecodeError> {
        if body.len() > FILE_DATA_HEADER_LEN && body[4] == 2 {
            let head = body.split_to(FILE_DATA_HEADER_LEN);
            let stream = StreamId(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
            if body.len() > MAX_CHUNK_LEN {
                return Err(DecodeError::Invalid {
                    msg: "FILE",
                    field: "chunk",
                    reason: "longer than 65531 bytes",
                });
            }
            return Ok(Self::Data {
                stream,
                chunk: body.freeze(),
            });
        }
        Self::decode(&body)
    }

    pub(super) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new("FILE", body);
        let stream = StreamId(r.u32("stream")?);
        let msg = match r.u8("op")? {
            1 => {
                let info = FileInfo::read(&mut r)?;
                let signed_version = r.u16("signed_version")?;
                if !(1..=2).contains(&signed_version) {
                    return Err(r.invalid("signed_version", "must be 1 or 2"));
                }
                let certificate = r.vec_u16("certificate", 1, MAX_CERT_LEN)?.to_vec();
                let signature = r.vec_u16("signature", 256, 512)?.to_vec();
                Self::Head(Box::new(FileHead {
                    stream,
                    info,
                    signed_version,
                    certificate,
                    signature,
                }))
            }
            2 => {
                let chunk = r.rest();
                if chunk.is_empty() {
                    return Err(r.invalid("chunk", "empty"));
                }
                if chunk.len() > MAX_CHUNK_LEN {
                    return Err(r.invalid("chunk", "longer than 65531 bytes"));
                }
                Self::Data {
                    stream,
                    chunk: Bytes::copy_from_slice(chunk),
                }
            }
            _ => return Err(r.invalid("op", "must be 1 or 2")),
        };
        r.finish()?;
        Ok(msg)
    }

    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.stream().0.to_be_bytes());
        match self {
            Self::Head(h) => {
                out.push(1);
                h.info.encode(out);
                out.extend_from_slice(&h.signed_version.to_be_bytes());
                put_vec_u16(out, &h.certificate);
                put_vec_u16(out, &h.signature);
            }
            Self::Data { chunk, .. } => {
                out.push(2);
                out.extend_from_slice(chunk);
            }
        }
    }
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchFrom {
    /// Only files committed from now on (`from = 0`).
    Now,
    /// Every kept event with an id greater than this one (`from = 1`).
    After(u64),
}

/// `WTCH`: subscribe to notices of new files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wtch {
    /// The stream this request opens; notices arrive on it.
    pub stream: StreamId,
    /// Where to start.
    pub from: WatchFrom,
}

impl Wtch {
    pub(super) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new("WTCH", body);
        let stream = StreamId(r.u32("stream")?);
        let from = r.u8("from")?;
        let after = r.u64("after")?;
        let from = match (from, after) {
            (0, 0) => WatchFrom::Now,
            (0, _) => return Err(r.invalid("after", "must be 0 when from is 0")),
            (1, after) => WatchFrom::After(after),
            _ => return Err(r.invalid("from", "must be 0 or 1")),
        };
        r.finish()?;
        Ok(Self { stream, from })
    }

    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.stream.0.to_be_bytes());
        let (from, after) = match self.from {
            WatchFrom::Now => (0u8, 0u64),
            WatchFrom::After(a) => (1, a),
        };
        out.push(from);
        out.extend_from_slice(&after.to_be_bytes());
    }
}

/// `NOTE`: a file was committed that the device may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The `WTCH` stream.
    pub stream: StreamId,
    /// The event id: strictly increasing on a stream.
    pub event: u64,
    /// The file.
    pub info: FileInfo,
}

impl Note {
    pub(super) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new("NOTE", body);
        let stream = StreamId(r.u32("stream")?);
        let event = r.u64("event")?;
        let info = FileInfo::read(&mut r)?;
        r.finish()?;
        Ok(Self {
            stream,
            event,
            info,
        })
    }

    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.stream.0.to_be_bytes());
        out.extend_from_slice(&self.event.to_be_bytes());
        self.info.encode(out);
    }
}

/// Decodes the 8-byte body of `PING` or `PONG`.
pub(super) fn decode_heartbeat(msg: &'static str, body: &[u8]) -> Result<u64, DecodeError> {
    let mut r = Reader::new(msg, body);
    let data = r.u64("data")?;
    r.finish()?;
    Ok(data)
}
