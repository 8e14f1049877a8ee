//! The record layer (proto-spec.md §7): sequence numbers and the
//! AES-256-CBC + HMAC-SHA256 protection of every frame after the handshake.
//!
//! Each direction has its own keys and its own 64-bit sequence number,
//! starting at 0 with the `FINI` record. The sequence number is never sent:
//! it enters the MAC, so a replayed, reordered or dropped record fails to
//! open. The two halves are separate values so that a session can read and
//! write from different tasks.

use bytes::{BufMut, BytesMut};
use tokio_util::codec::Encoder;

use crate::crypto::cipher::{self, BadRecord, Opener, SealJob, Sealer};
use crate::crypto::kdf::DirectionKeys;
use crate::frame::{self, EncodeFrame, Frame, FrameCodec, FrameError, FrameKind, HEADER_LEN};

/// Largest plaintext carried by one record.
pub const MAX_PLAINTEXT_LEN: usize = 65_536;
/// Records one direction may carry before the session must end: far below
/// the CBC birthday bound for the largest records.
pub const MAX_RECORDS: u64 = 1 << 32;

const _: () = assert!(cipher::sealed_len(MAX_PLAINTEXT_LEN) <= frame::MAX_BODY_LEN);

/// Errors of the record layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// A plaintext over [`MAX_PLAINTEXT_LEN`] was offered for sealing.
    #[error("record plaintext exceeds {MAX_PLAINTEXT_LEN} bytes")]
    TooLarge,
    /// A record failed authentication: tampered, replayed, reordered or
    /// from another session.
    #[error("a record failed authentication (tampered, replayed, reordered or dropped)")]
    BadRecordMac,
    /// A record authenticated, but its plaintext exceeds
    /// [`MAX_PLAINTEXT_LEN`] (proto-spec.md §7): a frame has room for up to
    /// 15 bytes more than the largest plaintext, which no conforming peer
    /// seals.
    #[error("a record's plaintext exceeds {MAX_PLAINTEXT_LEN} bytes")]
    Overflow,
    /// The direction has used up its sequence numbers.
    #[error("the session has reached its record limit and must be renewed")]
    Exhausted,
}

impl From<BadRecord> for RecordError {
    fn from(_: BadRecord) -> Self {
        Self::BadRecordMac
    }
}

/// The sending half.
pub struct RecordWriter {
    sealer: Sealer,
    seq: u64,
}

impl RecordWriter {
    /// A writer starting at sequence number 0.
    #[must_use]
    pub fn new(keys: &DirectionKeys) -> Self {
        Self {
            sealer: Sealer::new(keys),
            seq: 0,
        }
    }

    /// The sequence number the next record will use.
    #[must_use]
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// Claims the next sequence number for a record of `kind` carrying
    /// `plaintext`. The result is sealed directly into the codec's output
    /// buffer when encoded.
    ///
    /// # Errors
    /// [`RecordError::TooLarge`] or [`RecordError::Exhausted`].
    pub fn seal<'a>(
        &'a mut self,
        kind: FrameKind,
        plaintext: &'a [u8],
    ) -> Result<SealedRecord<'a>, RecordError> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(RecordError::TooLarge);
        }
        if self.seq >= MAX_RECORDS {
            return Err(RecordError::Exhausted);
        }
        let seq = self.seq;
        self.seq += 1;
        Ok(SealedRecord {
            sealer: &self.sealer,
            seq,
            kind,
            plaintext,
        })
    }

    /// Claims sequence numbers for several records of `kind`; encoded, they
    /// are sealed in lockstep ([`Sealer::seal_many`]) straight into the
    /// codec's buffer, one frame after another.
    ///
    /// # Errors
    /// [`RecordError::TooLarge`] or [`RecordError::Exhausted`], before any
    /// sequence number is used.
    pub fn seal_batch<'a, P: AsRef<[u8]>>(
        &'a mut self,
        kind: FrameKind,
        plaintexts: &'a [P],
    ) -> Result<SealedBatch<'a, P>, RecordError> {
        if plaintexts
            .iter()
            .any(|p| p.as_ref().len() > MAX_PLAINTEXT_LEN)
        {
            return Err(RecordError::TooLarge);
        }
        let count = plaintexts.len() as u64;
        if self.seq.saturating_add(count) > MAX_RECORDS {
            return Err(RecordError::Exhausted);
        }
        let first_seq = self.seq;
        self.seq += count;
        Ok(SealedBatch {
            sealer: &self.sealer,
            first_seq,
            kind,
            plaintexts,
        })
    }

    /// Seals into a standalone [`Frame`] (handshake and tests; the data path
    /// uses [`RecordWriter::seal`]).
    ///
    /// # Errors
    /// As [`RecordWriter::seal`].
    pub fn seal_frame(&mut self, kind: FrameKind, plaintext: &[u8]) -> Result<Frame, RecordError> {
        let rec = self.seal(kind, plaintext)?;
        let len = rec.body_len();
        let head = frame::header(kind, len);
        let mut body = BytesMut::zeroed(len);
        rec.write_body(&head, &mut body);
        Ok(Frame { kind, body })
    }
}

/// A record ready to be sealed into an output buffer.
pub struct SealedRecord<'a> {
    sealer: &'a Sealer,
    seq: u64,
    kind: FrameKind,
    plaintext: &'a [u8],
}

impl EncodeFrame for SealedRecord<'_> {
    fn kind(&self) -> FrameKind {
        self.kind
    }

    fn body_len(&self) -> usize {
        cipher::sealed_len(self.plaintext.len())
    }

    fn write_body(self, header: &[u8; HEADER_LEN], dst: &mut [u8]) {
        self.sealer.seal(self.seq, header, self.plaintext, dst);
    }
}

/// Several records ready to be sealed together into an output buffer.
pub struct SealedBatch<'a, P> {
    sealer: &'a Sealer,
    first_seq: u64,
    kind: FrameKind,
    plaintexts: &'a [P],
}

impl<P: AsRef<[u8]>> Encoder<SealedBatch<'_, P>> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, batch: SealedBatch<'_, P>, dst: &mut BytesMut) -> Result<(), FrameError> {
        let start = dst.len();
        let total: usize = batch
            .plaintexts
            .iter()
            .map(|p| HEADER_LEN + cipher::sealed_len(p.as_ref().len()))
            .sum();
        dst.reserve(total);
        // Lay out each frame with its plaintext where the ciphertext will
        // be (copying it is the only write of those bytes), then seal in place.
        for p in batch.plaintexts {
            let p = p.as_ref();
            let len = cipher::sealed_len(p.len());
            dst.put_slice(&frame::header(batch.kind, len));
            dst.put_bytes(0, cipher::IV_LEN);
            dst.put_slice(p);
            dst.put_bytes(0, len - cipher::IV_LEN - p.len());
        }
        let mut rest = &mut dst[start..];
        let mut jobs = Vec::with_capacity(batch.plaintexts.len());
        for (i, p) in batch.plaintexts.iter().enumerate() {
            let plaintext_len = p.as_ref().len();
            let len = cipher::sealed_len(plaintext_len);
            let (frame_bytes, tail) = rest.split_at_mut(HEADER_LEN + len);
            rest = tail;
            let (h, out) = frame_bytes.split_at_mut(HEADER_LEN);
            let mut header = [0u8; HEADER_LEN];
            header.copy_from_slice(h);
            jobs.push(SealJob {
                seq: batch.first_seq + i as u64,
                header,
                plaintext_len,
                out,
            });
        }
        batch.sealer.seal_many(&mut jobs);
        Ok(())
    }
}

/// The receiving half.
pub struct RecordReader {
    opener: Opener,
    seq: u64,
}

impl RecordReader {
    /// A reader expecting sequence number 0 next.
    #[must_use]
    pub fn new(keys: &DirectionKeys) -> Self {
        Self {
            opener: Opener::new(keys),
            seq: 0,
        }
    }

    /// Opens a protected frame in place and returns its plaintext (a view
    /// into the frame's own buffer: no copy).
    ///
    /// # Errors
    /// [`RecordError::BadRecordMac`] for any authentication failure
    /// (length, tag, padding), [`RecordError::Overflow`] for a plaintext
    /// over [`MAX_PLAINTEXT_LEN`] (checked once the tag verified and the
    /// padding is removed), [`RecordError::Exhausted`] past [`MAX_RECORDS`].
    pub fn open(&mut self, frame: Frame) -> Result<BytesMut, RecordError> {
        if self.seq >= MAX_RECORDS {
            return Err(RecordError::Exhausted);
        }
        let head = frame.header();
        let mut body = frame.body;
        let range = self.opener.open(self.seq, &head, &mut body)?;
        self.seq += 1;
        if range.len() > MAX_PLAINTEXT_LEN {
            return Err(RecordError::Overflow);
        }
        body.truncate(range.end);
        let _ = body.split_to(range.start);
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (RecordWriter, RecordReader) {
        let keys = DirectionKeys {
            enc: [1; 32],
            mac: [2; 32],
            iv: [3; 32],
        };
        (RecordWriter::new(&keys), RecordReader::new(&keys))
    }

    #[test]
    fn in_order_records_open() {
        let (mut w, mut r) = pair();
        for i in 0..5u8 {
            let f = w.seal_frame(FrameKind::SECX, &[i; 40]).unwrap();
            assert_eq!(&r.open(f).unwrap()[..], &[i; 40]);
        }
        assert_eq!(w.next_seq(), 5);
    }

    #[test]
    fn replay_reorder_and_drop_fail() {
        let (mut w, mut r) = pair();
        let a = w.seal_frame(FrameKind::SECX, b"a").unwrap();
        let b = w.seal_frame(FrameKind::SECX, b"b").unwrap();
        let c = w.seal_frame(FrameKind::SECX, b"c").unwrap();
        assert_eq!(&r.open(a.clone()).unwrap()[..], b"a");
        // Replay of a.
        assert_eq!(r.clone_for_test().open(a), Err(RecordError::BadRecordMac));
        // c before b (b dropped or reordered).
        assert_eq!(
            r.clone_for_test().open(c.clone()),
            Err(RecordError::BadRecordMac)
        );
        assert_eq!(&r.open(b).unwrap()[..], b"b");
        assert_eq!(&r.open(c).unwrap()[..], b"c");
    }

    #[test]
    fn batches_open_in_order_like_single_records() {
        use tokio_util::codec::Decoder;
        let (mut w, mut r) = pair();
        let plains: Vec<Vec<u8>> = (0..11).map(|i| vec![i as u8; 1000 * i + 3]).collect();
        let mut buf = BytesMut::new();
        let mut codec = FrameCodec::new();
        codec
            .encode(w.seal_frame(FrameKind::SECX, b"before").unwrap(), &mut buf)
            .unwrap();
        codec
            .encode(w.seal_batch(FrameKind::IMGX, &plains).unwrap(), &mut buf)
            .unwrap();
        codec
            .encode(w.seal_frame(FrameKind::SECX, b"after").unwrap(), &mut buf)
            .unwrap();
        assert_eq!(w.next_seq(), 13);
        let f = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(&r.open(f).unwrap()[..], b"before");
        for p in &plains {
            let f = codec.decode(&mut buf).unwrap().unwrap();
            assert_eq!(f.kind, FrameKind::IMGX);
            assert_eq!(&r.open(f).unwrap()[..], &p[..]);
        }
        let f = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(&r.open(f).unwrap()[..], b"after");
        assert!(buf.is_empty());
    }

    #[test]
    fn type_is_authenticated() {
        let (mut w, mut r) = pair();
        let mut f = w.seal_frame(FrameKind::SECX, b"a").unwrap();
        f.kind = FrameKind::ACK;
        assert_eq!(r.open(f), Err(RecordError::BadRecordMac));
    }

    #[test]
    fn oversize_plaintext_is_refused() {
        let (mut w, _) = pair();
        assert!(w.seal(FrameKind::SECX, &vec![0; MAX_PLAINTEXT_LEN]).is_ok());
        assert!(matches!(
            w.seal(FrameKind::SECX, &vec![0; MAX_PLAINTEXT_LEN + 1]),
            Err(RecordError::TooLarge)
        ));
    }

    /// A frame has room for 65,551 bytes of plaintext (65,536 padded to
    /// 65,552 is the largest body, and 65,537 to 65,551 pad to the same
    /// size), but a record carries at most 65,536 (proto-spec.md §7). The
    /// writer refuses to seal more, so the record is sealed here with the
    /// cipher directly, as a peer that ignores the limit would.
    #[test]
    fn opened_plaintext_over_the_limit_is_refused() {
        let keys = DirectionKeys {
            enc: [1; 32],
            mac: [2; 32],
            iv: [3; 32],
        };
        let sealer = Sealer::new(&keys);
        let sealed = |seq: u64, len: usize| {
            let body_len = cipher::sealed_len(len);
            assert!(body_len <= frame::MAX_BODY_LEN);
            let head = frame::header(FrameKind::IMGX, body_len);
            let mut body = BytesMut::zeroed(body_len);
            sealer.seal(seq, &head, &vec![0x5a; len], &mut body);
            Frame {
                kind: FrameKind::IMGX,
                body,
            }
        };
        assert_eq!(
            cipher::sealed_len(MAX_PLAINTEXT_LEN + 15),
            frame::MAX_BODY_LEN
        );
        let mut r = RecordReader::new(&keys);
        assert_eq!(r.open(sealed(0, MAX_PLAINTEXT_LEN)).unwrap().len(), 65_536);
        assert_eq!(r.open(sealed(1, 65_540)), Err(RecordError::Overflow));
        let mut r = RecordReader::new(&keys);
        assert_eq!(
            r.open(sealed(0, MAX_PLAINTEXT_LEN + 15)),
            Err(RecordError::Overflow)
        );
    }

    impl RecordReader {
        fn clone_for_test(&self) -> Self {
            Self {
                opener: self.opener.clone(),
                seq: self.seq,
            }
        }
    }
}
