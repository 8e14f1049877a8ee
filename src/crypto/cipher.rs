//! AES-256-CBC + HMAC-SHA256, encrypt-then-MAC: the protection of one record
//! in one direction (proto-spec.md §7). Sequence numbers are kept by the
//! record layer and passed in; this module holds only keys.
//!
//! ```text
//! IV   = AES-256-Encrypt(iv_key, 0x00 * 8 ‖ seq_be64)
//! CT   = AES-256-CBC-Encrypt(enc_key, IV, plaintext ‖ PKCS#7 padding)
//! TAG  = HMAC-SHA256(mac_key, seq_be64 ‖ frame_header ‖ IV ‖ CT)
//! body = IV ‖ CT ‖ TAG
//! ```
//!
//! The IV of every record is distinct (AES is a permutation and sequence
//! numbers never repeat under one key) and unpredictable to anyone without
//! `iv_key`, which is what CBC requires. The receiver checks the tag in
//! constant time before it decrypts anything.
//!
//! Speed. CBC encryption of one record is serial: each block waits for the
//! previous one, so one record runs at the AES instruction's latency, not
//! its throughput. [`Sealer::seal_many`] therefore encrypts up to
//! [`LANES`] independent records in lockstep, one AES call per round of
//! eight blocks, which keeps the AES units busy (what OpenSSL calls
//! multi-buffer). CBC decryption has no such dependency; [`Opener::open`]
//! decrypts whole runs of blocks with the cipher's parallel path and then
//! XORs each block with the previous ciphertext block. Both produce exactly
//! the bytes of the `cbc` crate, which remains the reference: single records
//! are sealed with it, and the tests compare the two on random inputs.

use aes::cipher::block_padding::{Padding, Pkcs7};
use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, BlockModeEncrypt, InnerIvInit, KeyInit};
use aes::{Aes256Dec, Aes256Enc, Block};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::kdf::DirectionKeys;

/// AES block size.
pub const BLOCK_LEN: usize = 16;
/// Length of the explicit IV at the start of a protected body.
pub const IV_LEN: usize = 16;
/// Length of the HMAC-SHA256 tag at the end of a protected body.
pub const TAG_LEN: usize = 32;
/// Smallest protected body: IV, one block of ciphertext, tag.
pub const MIN_SEALED_LEN: usize = IV_LEN + BLOCK_LEN + TAG_LEN;
/// Records encrypted in lockstep by [`Sealer::seal_many`].
pub const LANES: usize = 8;

/// One record for [`Sealer::seal_many`], sealed in place.
pub struct SealJob<'a> {
    /// Its sequence number.
    pub seq: u64,
    /// Its frame header.
    pub header: [u8; 8],
    /// Length of the plaintext.
    pub plaintext_len: usize,
    /// Exactly [`sealed_len`]`(plaintext_len)` bytes, holding the plaintext
    /// at `IV_LEN..IV_LEN + plaintext_len`; becomes the protected body.
    pub out: &'a mut [u8],
}

type HmacSha256 = Hmac<Sha256>;

/// The one failure of [`Opener::open`]. It carries no detail on purpose:
/// a bad tag, a bad length and bad padding look the same to the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("record authentication failed")]
pub struct BadRecord;

/// Length of the protected body for `plaintext_len` bytes of plaintext.
#[must_use]
pub const fn sealed_len(plaintext_len: usize) -> usize {
    IV_LEN + (plaintext_len / BLOCK_LEN + 1) * BLOCK_LEN + TAG_LEN
}

/// Seals records in one direction.
#[derive(Clone)]
pub struct Sealer {
    enc: Aes256Enc,
    iv: Aes256Enc,
    mac: HmacSha256,
}

impl Sealer {
    /// A sealer for the given direction's keys.
    #[must_use]
    pub fn new(keys: &DirectionKeys) -> Self {
        Self {
            enc: Aes256Enc::new(&keys.enc.into()),
            iv: Aes256Enc::new(&keys.iv.into()),
            mac: keyed_mac(&keys.mac),
        }
    }

    /// The IV for sequence number `seq`.
    #[must_use]
    pub fn iv_for(&self, seq: u64) -> [u8; IV_LEN] {
        let mut block = [0u8; BLOCK_LEN];
        block[8..].copy_from_slice(&seq.to_be_bytes());
        let mut block = block.into();
        self.iv.encrypt_block(&mut block);
        block.into()
    }

    /// Seals `plaintext` as record number `seq` under the 8-byte frame
    /// `header`, writing the protected body into `out`, which must be
    /// exactly [`sealed_len`]`(plaintext.len())` bytes long.
    ///
    /// # Panics
    /// If `out` has the wrong length: a caller bug, never input-dependent.
    pub fn seal(&self, seq: u64, header: &[u8; 8], plaintext: &[u8], out: &mut [u8]) {
        assert_eq!(out.len(), sealed_len(plaintext.len()), "sealed buffer size");
        let iv = self.iv_for(seq);
        let (iv_out, rest) = out.split_at_mut(IV_LEN);
        iv_out.copy_from_slice(&iv);
        let ct_len = rest.len() - TAG_LEN;
        let (ct_out, tag_out) = rest.split_at_mut(ct_len);
        let written = cbc::Encryptor::<Aes256Enc>::inner_iv_init(self.enc.clone(), &iv.into())
            .encrypt_padded_b2b::<Pkcs7>(plaintext, ct_out)
            .map(<[u8]>::len);
        debug_assert!(matches!(written, Ok(n) if n == ct_len));

        let mut mac = self.mac.clone();
        mac.update(&seq.to_be_bytes());
        mac.update(header);
        mac.update(&iv);
        mac.update(ct_out);
        tag_out.copy_from_slice(&mac.finalize().into_bytes());
    }
}

impl Sealer {
    /// Seals several records in place, encrypting up to [`LANES`] of them
    /// in lockstep. Each body ends up byte for byte as [`Sealer::seal`]
    /// would have made it.
    ///
    /// # Panics
    /// If an `out` has the wrong length: a caller bug.
    pub fn seal_many(&self, jobs: &mut [SealJob<'_>]) {
        for group in jobs.chunks_mut(LANES) {
            // IVs: one parallel call for the whole group.
            let mut ivs = [Block::default(); LANES];
            for (iv, job) in ivs.iter_mut().zip(group.iter()) {
                iv[8..].copy_from_slice(&job.seq.to_be_bytes());
            }
            self.iv.encrypt_blocks(&mut ivs[..group.len()]);
            // IV and padding around the plaintext, then encryption in place.
            for (iv, job) in ivs.iter().zip(group.iter_mut()) {
                assert_eq!(
                    job.out.len(),
                    sealed_len(job.plaintext_len),
                    "sealed buffer size"
                );
                let len = job.plaintext_len;
                let padded = job.out.len() - IV_LEN - TAG_LEN;
                job.out[..IV_LEN].copy_from_slice(iv);
                let last = IV_LEN + len - len % BLOCK_LEN;
                Pkcs7::raw_pad(&mut job.out[last..IV_LEN + padded], len % BLOCK_LEN);
            }
            self.cbc_encrypt_lanes(&ivs, group);
            for job in group.iter_mut() {
                let tag_at = job.out.len() - TAG_LEN;
                let (signed, tag) = job.out.split_at_mut(tag_at);
                let mut mac = self.mac.clone();
                mac.update(&job.seq.to_be_bytes());
                mac.update(&job.header);
                mac.update(signed);
                tag.copy_from_slice(&mac.finalize().into_bytes());
            }
        }
    }

    /// CBC-encrypts the padded plaintexts of `group` (after each IV) in
    /// lockstep: round `i` encrypts block `i` of every record still running
    /// in one call of the cipher's parallel path.
    fn cbc_encrypt_lanes(&self, ivs: &[Block; LANES], group: &mut [SealJob<'_>]) {
        let mut chain = [0u128; LANES];
        let mut blocks = [0usize; LANES];
        for (lane, job) in group.iter().enumerate() {
            chain[lane] = u128::from_ne_bytes(ivs[lane].into());
            blocks[lane] = (job.out.len() - IV_LEN - TAG_LEN) / BLOCK_LEN;
        }
        let rounds = blocks.iter().copied().max().unwrap_or(0);
        let mut batch = [Block::default(); LANES];
        let mut lane_of = [0usize; LANES];
        for i in 0..rounds {
            let at = IV_LEN + i * BLOCK_LEN;
            let mut n = 0;
            for (lane, job) in group.iter().enumerate() {
                if i < blocks[lane] {
                    let mut p = [0u8; BLOCK_LEN];
                    p.copy_from_slice(&job.out[at..at + BLOCK_LEN]);
                    batch[n] = (chain[lane] ^ u128::from_ne_bytes(p)).to_ne_bytes().into();
                    lane_of[n] = lane;
                    n += 1;
                }
            }
            self.enc.encrypt_blocks(&mut batch[..n]);
            for (block, &lane) in batch[..n].iter().zip(&lane_of[..n]) {
                group[lane].out[at..at + BLOCK_LEN].copy_from_slice(block);
                chain[lane] = u128::from_ne_bytes((*block).into());
            }
        }
    }
}

/// CBC decryption in place with the cipher's parallel path: decrypt a run
/// of blocks at once, then XOR each with the ciphertext block before it
/// (kept aside before it is overwritten). `data` is a whole number of blocks.
fn cbc_decrypt_in_place(dec: &Aes256Dec, iv: &[u8; IV_LEN], data: &mut [u8]) {
    const RUN: usize = 32 * BLOCK_LEN;
    let mut prev = *iv;
    let mut saved = [0u8; RUN];
    for run in data.chunks_mut(RUN) {
        let n = run.len();
        saved[..n].copy_from_slice(run);
        let (blocks, _) = Block::slice_as_chunks_mut(run);
        dec.decrypt_blocks(blocks);
        for (b, p) in run[..BLOCK_LEN].iter_mut().zip(prev.iter()) {
            *b ^= p;
        }
        for (b, c) in run[BLOCK_LEN..]
            .iter_mut()
            .zip(saved[..n - BLOCK_LEN].iter())
        {
            *b ^= c;
        }
        prev.copy_from_slice(&saved[n - BLOCK_LEN..n]);
    }
}

/// Opens records in one direction.
#[derive(Clone)]
pub struct Opener {
    dec: Aes256Dec,
    mac: HmacSha256,
}

impl Opener {
    /// An opener for the given direction's keys.
    #[must_use]
    pub fn new(keys: &DirectionKeys) -> Self {
        Self {
            dec: Aes256Dec::new(&keys.enc.into()),
            mac: keyed_mac(&keys.mac),
        }
    }

    /// Verifies and decrypts a protected `body` in place and returns the
    /// plaintext's range within it. The tag is compared in constant time
    /// before any byte is decrypted.
    ///
    /// # Errors
    /// [`BadRecord`] for a short or misaligned body, a wrong tag or bad padding.
    pub fn open(
        &self,
        seq: u64,
        header: &[u8; 8],
        body: &mut [u8],
    ) -> Result<std::ops::Range<usize>, BadRecord> {
        if body.len() < MIN_SEALED_LEN || !(body.len() - IV_LEN - TAG_LEN).is_multiple_of(BLOCK_LEN)
        {
            return Err(BadRecord);
        }
        let tag_at = body.len() - TAG_LEN;
        let (signed, tag) = body.split_at_mut(tag_at);
        let mut mac = self.mac.clone();
        mac.update(&seq.to_be_bytes());
        mac.update(header);
        mac.update(signed);
        // `verify_slice` compares in constant time.
        mac.verify_slice(tag).map_err(|_| BadRecord)?;

        let (iv, ct) = signed.split_at_mut(IV_LEN);
        let iv: [u8; IV_LEN] = (&*iv).try_into().map_err(|_| BadRecord)?;
        cbc_decrypt_in_place(&self.dec, &iv, ct);
        let (blocks, _) = Block::slice_as_chunks(ct);
        let plain_len = Pkcs7::unpad_blocks(blocks).map_err(|_| BadRecord)?.len();
        Ok(IV_LEN..IV_LEN + plain_len)
    }
}

fn keyed_mac(key: &[u8; 32]) -> HmacSha256 {
    match <HmacSha256 as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::KeyIvInit;

    fn keys() -> DirectionKeys {
        DirectionKeys {
            enc: [0x11; 32],
            mac: [0x22; 32],
            iv: [0x33; 32],
        }
    }

    fn seal(seq: u64, header: &[u8; 8], pt: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; sealed_len(pt.len())];
        Sealer::new(&keys()).seal(seq, header, pt, &mut out);
        out
    }

    const H: &[u8; 8] = b"SECX\0\0\0\0";

    #[test]
    fn round_trip_all_lengths_around_blocks() {
        let opener = Opener::new(&keys());
        for len in [0, 1, 15, 16, 17, 31, 32, 33, 1000, 4096] {
            let pt: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut body = seal(7, H, &pt);
            assert_eq!(body.len(), sealed_len(len));
            let range = opener.open(7, H, &mut body).unwrap();
            assert_eq!(&body[range], &pt[..]);
        }
    }

    #[test]
    fn ivs_differ_per_sequence_number() {
        let s = Sealer::new(&keys());
        assert_ne!(s.iv_for(0), s.iv_for(1));
        let a = seal(0, H, b"same");
        let b = seal(1, H, b"same");
        assert_ne!(a[..IV_LEN], b[..IV_LEN]);
        assert_ne!(a[IV_LEN..], b[IV_LEN..]);
    }

    #[test]
    fn any_change_fails() {
        let opener = Opener::new(&keys());
        let body = seal(3, H, b"hello, world");
        // Every single bit flip in the body.
        for i in 0..body.len() * 8 {
            let mut b = body.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert_eq!(opener.open(3, H, &mut b), Err(BadRecord), "bit {i}");
        }
        // Wrong sequence number (replay, reorder) and wrong header.
        assert_eq!(opener.open(4, H, &mut body.clone()), Err(BadRecord));
        assert_eq!(
            opener.open(3, b"IMGX\0\0\0\0", &mut body.clone()),
            Err(BadRecord)
        );
        // Truncated and misaligned bodies.
        assert_eq!(
            opener.open(3, H, &mut body[..body.len() - 1].to_vec()),
            Err(BadRecord)
        );
        assert_eq!(opener.open(3, H, &mut [0u8; 16]), Err(BadRecord));
    }

    /// The parallel forms against the `cbc` crate, on many lengths.
    #[test]
    fn batched_sealing_and_parallel_opening_match_the_reference() {
        use aes::cipher::BlockModeDecrypt;
        let sealer = Sealer::new(&keys());
        let opener = Opener::new(&keys());
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..40 {
            let count = 1 + (next() as usize % 11);
            let plains: Vec<Vec<u8>> = (0..count)
                .map(|_| {
                    let len = match next() % 4 {
                        0 => next() as usize % 40,
                        1 => 16 * (next() as usize % 8),
                        _ => next() as usize % 5000,
                    };
                    (0..len).map(|_| next() as u8).collect()
                })
                .collect();
            let mut outs: Vec<Vec<u8>> = plains
                .iter()
                .map(|p| {
                    let mut o = vec![0u8; sealed_len(p.len())];
                    o[IV_LEN..IV_LEN + p.len()].copy_from_slice(p);
                    o
                })
                .collect();
            let mut jobs: Vec<SealJob<'_>> = plains
                .iter()
                .zip(outs.iter_mut())
                .enumerate()
                .map(|(i, (p, o))| SealJob {
                    seq: 100 * round + i as u64,
                    header: *H,
                    plaintext_len: p.len(),
                    out: o,
                })
                .collect();
            sealer.seal_many(&mut jobs);
            for (i, (p, batched)) in plains.iter().zip(&outs).enumerate() {
                let seq = 100 * round + i as u64;
                let mut single = vec![0u8; sealed_len(p.len())];
                sealer.seal(seq, H, p, &mut single);
                assert_eq!(batched, &single, "round {round} record {i} len {}", p.len());
                // The reference decryption agrees with the parallel one.
                let iv: [u8; 16] = single[..16].try_into().unwrap();
                let ct_end = single.len() - TAG_LEN;
                let mut reference = single[IV_LEN..ct_end].to_vec();
                let plain = cbc::Decryptor::<Aes256Dec>::new(&keys().enc.into(), &iv.into())
                    .decrypt_padded::<Pkcs7>(&mut reference)
                    .unwrap()
                    .to_vec();
                assert_eq!(&plain, p);
                let mut body = single.clone();
                let range = opener.open(seq, H, &mut body).unwrap();
                assert_eq!(&body[range], &p[..]);
            }
        }
    }

    #[test]
    fn wrong_keys_fail() {
        let other = DirectionKeys {
            enc: [0x11; 32],
            mac: [0x23; 32],
            iv: [0x33; 32],
        };
        let mut body = seal(0, H, b"x");
        assert_eq!(Opener::new(&other).open(0, H, &mut body), Err(BadRecord));
    }
}
