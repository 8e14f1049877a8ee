//! Fuzzing entry points: one function per `fuzz/fuzz_targets/*.rs` target.
//!
//! This module is compiled in every build, not only under `cfg(fuzzing)`,
//! so that `tests/fuzz_corpus.rs` replays the committed corpora through
//! exactly the functions libFuzzer runs. Each function takes arbitrary
//! bytes and must not panic on any of them; along the way it asserts
//! properties of the real library code (codec round trips, seal/open round
//! trips, handshake steps that may fail but never crash). A panic here is a
//! bug in the library, or in the property.
//!
//! Seeds must replay the same way in every process and on every date, so
//! the PKI is fixed (test-only keys in `tests/data/fuzz-pki/`, which the
//! harness hands over with [`set_pki`]: the library itself embeds no key),
//! certificates are checked at [`now`], and the server's random source is
//! a fixed pattern: a device handshake recorded against this server replays
//! through `HELO`, `PREM` and `FINI` to an established session.
//!
//! Not part of the stable API.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use der::Encode;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio_util::codec::{Decoder, Encoder};

use crate::crypto::cipher::{self, IV_LEN, TAG_LEN};
use crate::crypto::hash::HASH_LEN;
use crate::crypto::kdf::{self, DirectionKeys, NONCE_LEN};
use crate::crypto::{
    CryptoError, CryptoProvider, PREMASTER_LEN, PreMaster, RsaPrivateKey, SecureRandom,
    default_provider,
};
use crate::frame::{self, Frame, FrameCodec, FrameError, FrameKind, HEADER_LEN, MAX_BODY_LEN};
use crate::handshake::{
    DeviceConfig, DeviceStart, ExpectDeviceHelo, HandshakeError, ServerConfig, cert_alert,
};
use crate::message::{Message, PROTOCOL_VERSION_2, SUPPORTED_VERSIONS};
use crate::pki::{CertError, Identity, MAX_CERT_LEN, Role, ServerName, TrustAnchor, verify_peer};
use crate::record::{MAX_PLAINTEXT_LEN, RecordError, RecordReader, RecordWriter};

/// The fixed, test-only PKI of the fuzzers (DER certificates and PKCS#8
/// keys from `tests/data/fuzz-pki/`), given by the harness.
#[derive(Debug, Clone, Copy)]
pub struct FixedPki {
    /// The CA certificate.
    pub ca_cert: &'static [u8],
    /// The CA key.
    pub ca_key: &'static [u8],
    /// The server certificate (`localhost`, `127.0.0.1`).
    pub server_cert: &'static [u8],
    /// The server key.
    pub server_key: &'static [u8],
    /// The device certificate (`device-1`).
    pub device_cert: &'static [u8],
    /// The device key.
    pub device_key: &'static [u8],
}

static PKI: OnceLock<FixedPki> = OnceLock::new();

/// Hands the fixed PKI to the targets; call it before any target (later
/// calls are ignored).
pub fn set_pki(pki: FixedPki) {
    let _ = PKI.set(pki);
}

fn fixed_pki() -> FixedPki {
    match PKI.get() {
        Some(pki) => *pki,
        None => panic!("the fuzzing harness must call secured::fuzzing::set_pki first"),
    }
}

/// The frame types a selector byte chooses from.
const KINDS: [FrameKind; 8] = FrameKind::VERSION_1;

/// The moment every certificate check of the fuzzers happens at:
/// 2030-01-01, inside the validity of the fixed PKI.
#[must_use]
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_893_456_000)
}

/// A random source that always yields the same bytes, so that the server's
/// nonce (and with it the transcript a recorded device signed) repeats.
struct FixedRandom;

impl SecureRandom for FixedRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), CryptoError> {
        for (i, b) in dest.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(0x5a);
        }
        Ok(())
    }
}

/// Everything the targets share, built once per process.
struct Fixture {
    /// The default RSA backend with [`FixedRandom`].
    provider: &'static CryptoProvider,
    anchor: TrustAnchor,
    ca_key: Arc<dyn RsaPrivateKey>,
    /// DER of the RSASSA-PSS-SHA256 AlgorithmIdentifier.
    pss_algorithm: Vec<u8>,
    server: ServerConfig,
    device: DeviceConfig,
    record_keys: DirectionKeys,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let pki = fixed_pki();
        let provider: &'static CryptoProvider = Box::leak(Box::new(CryptoProvider {
            name: "fuzzing",
            rsa: default_provider().rsa,
            random: &FixedRandom,
        }));
        let anchor = TrustAnchor::from_der(pki.ca_cert, provider).expect("fuzzing CA loads");
        let ca_key = provider
            .rsa
            .load_private_key(pki.ca_key)
            .expect("fuzzing CA key loads");
        let pss_algorithm = crate::crypto::x509::pss_sha256_algorithm_identifier()
            .and_then(|alg| alg.to_der().map_err(Into::into))
            .expect("PSS AlgorithmIdentifier encodes");
        let server = ServerConfig {
            identity: Arc::new(
                Identity::from_der(pki.server_cert.to_vec(), pki.server_key, provider)
                    .expect("fuzzing server identity loads"),
            ),
            anchor: Arc::new(anchor.clone()),
            provider,
            versions: crate::message::SUPPORTED_VERSIONS,
        };
        let device_provider = default_provider();
        let device = DeviceConfig {
            identity: Arc::new(
                Identity::from_der(pki.device_cert.to_vec(), pki.device_key, device_provider)
                    .expect("fuzzing device identity loads"),
            ),
            anchor: Arc::new(
                TrustAnchor::from_der(pki.ca_cert, device_provider).expect("fuzzing CA loads"),
            ),
            server_name: ServerName::Dns("localhost".into()),
            provider: device_provider,
            versions: crate::message::SUPPORTED_VERSIONS,
        };
        let record_keys = kdf::derive(
            &PreMaster::from_bytes([0x11; PREMASTER_LEN]),
            &[0x22; NONCE_LEN],
            &[0x33; NONCE_LEN],
            &[0x44; HASH_LEN],
        )
        .device_to_server
        .clone();
        Fixture {
            provider,
            anchor,
            ca_key,
            pss_algorithm,
            server,
            device,
            record_keys,
        }
    })
}

/// The server configuration [`handshake_server`] drives: the fixed PKI's
/// server, with a fixed random source.
#[must_use]
pub fn server_config() -> ServerConfig {
    fixture().server.clone()
}

/// A device (`device-1` of the fixed PKI, dialling `localhost`) whose
/// handshake with [`server_config`] can be recorded as a seed.
#[must_use]
pub fn device_config() -> DeviceConfig {
    fixture().device.clone()
}

/// A record writer under the fixed keys [`record_open`] opens with.
#[must_use]
pub fn record_writer() -> RecordWriter {
    RecordWriter::new(&fixture().record_keys)
}

/// The frame stream `data`, cut by [`FrameCodec`] until it is used up or
/// fails.
fn frames_of(data: &[u8]) -> Vec<Frame> {
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::from(data);
    let mut frames = Vec::new();
    while let Ok(Some(frame)) = codec.decode_eof(&mut buf) {
        frames.push(frame);
    }
    frames
}

/// Feeds `data[1..]` to a [`FrameCodec`] in pieces whose sizes follow from
/// `data[0]`, decoding after each piece, then ends the stream. Every frame
/// must re-encode to exactly the bytes it was cut from, a refused length
/// must really exceed [`MAX_BODY_LEN`], and the end of the stream must be
/// clean or a truncation. Returns the number of frames decoded.
pub fn frame_decoder(data: &[u8]) -> usize {
    let Some((&shape, stream)) = data.split_first() else {
        return 0;
    };
    let mut cut = FrameCut {
        codec: FrameCodec::new(),
        buf: BytesMut::new(),
        stream,
        consumed: 0,
        frames: 0,
    };
    let mut state = shape;
    let mut fed = 0;
    while fed < stream.len() {
        let piece = match state & 7 {
            0 => stream.len(),
            1 => 1,
            2 => 3,
            3 => HEADER_LEN,
            4 => HEADER_LEN + 1,
            5 => 64,
            6 => 4096,
            _ => 17 + usize::from(state),
        };
        state = state.rotate_left(3) ^ 0x35;
        let end = stream.len().min(fed + piece);
        cut.buf.extend_from_slice(&stream[fed..end]);
        fed = end;
        if !cut.drain() {
            return cut.frames;
        }
    }
    loop {
        let before = cut.buf.len();
        match cut.codec.decode_eof(&mut cut.buf) {
            Ok(Some(frame)) => cut.check(&frame, before),
            Ok(None) => {
                assert!(cut.buf.is_empty(), "clean end with bytes left");
                assert_eq!(cut.consumed, stream.len(), "clean end before the end");
                return cut.frames;
            }
            Err(FrameError::Truncated) => {
                assert!(!cut.buf.is_empty(), "truncation without leftovers");
                return cut.frames;
            }
            Err(FrameError::TooLarge) => {
                cut.check_too_large();
                return cut.frames;
            }
            Err(e) => panic!("unexpected frame error: {e}"),
        }
    }
}

/// The state of [`frame_decoder`]: the codec, what it has been fed and not
/// consumed, and where in the stream that starts.
struct FrameCut<'a> {
    codec: FrameCodec,
    buf: BytesMut,
    stream: &'a [u8],
    consumed: usize,
    frames: usize,
}

impl FrameCut<'_> {
    /// Decodes every complete frame in the buffer; false once the codec
    /// failed (the stream is then unusable).
    fn drain(&mut self) -> bool {
        loop {
            let before = self.buf.len();
            match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => self.check(&frame, before),
                Ok(None) => {
                    // Only an incomplete frame may wait for more bytes.
                    if let Some(len) = self.buf.get(4..HEADER_LEN) {
                        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
                        assert!(
                            self.buf.len() < HEADER_LEN + len as usize,
                            "a complete frame was left in the buffer"
                        );
                    }
                    return true;
                }
                Err(FrameError::TooLarge) => {
                    self.check_too_large();
                    return false;
                }
                Err(e) => panic!("unexpected frame error: {e}"),
            }
        }
    }

    /// `frame` was cut from the stream where the buffer, `before` bytes
    /// long, started.
    fn check(&mut self, frame: &Frame, before: usize) {
        let used = before - self.buf.len();
        let wire = &self.stream[self.consumed..self.consumed + used];
        assert!(frame.body.len() <= MAX_BODY_LEN, "oversize frame accepted");
        assert_eq!(
            frame.to_wire(),
            wire,
            "frame does not re-encode to its bytes"
        );
        let mut encoded = BytesMut::new();
        FrameCodec::new()
            .encode(frame.clone(), &mut encoded)
            .expect("a decoded frame encodes");
        assert_eq!(&encoded[..], wire, "encoder disagrees with the decoder");
        self.consumed += used;
        self.frames += 1;
    }

    fn check_too_large(&self) {
        let head = &self.stream[self.consumed..self.consumed + HEADER_LEN];
        let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        assert!(len as usize > MAX_BODY_LEN, "length {len} refused");
    }
}

/// Decodes `data[1..]` as the body of a message whose type `data[0]`
/// selects (one of the eight of version 1, or an unknown type taken from
/// the next four bytes); see [`check_message`]. Returns whether it decoded.
pub fn message(data: &[u8]) -> bool {
    let Some((&select, rest)) = data.split_first() else {
        return false;
    };
    match KINDS.get(usize::from(select) % (KINDS.len() + 1)) {
        Some(&kind) => check_message(kind, rest),
        None => match rest.split_first_chunk::<4>() {
            Some((kind, body)) => check_message(FrameKind(*kind), body),
            None => false,
        },
    }
}

/// `data` as the body of a `HELO`; see [`check_message`].
pub fn handshake_helo(data: &[u8]) -> bool {
    check_message(FrameKind::HELO, data)
}

/// `data` as the body of a `PREM`; see [`check_message`].
pub fn handshake_prem(data: &[u8]) -> bool {
    check_message(FrameKind::PREM, data)
}

/// `data` as the plaintext of a `FINI`; see [`check_message`].
pub fn handshake_fini(data: &[u8]) -> bool {
    check_message(FrameKind::FINI, data)
}

/// Decodes `body` as a message of type `kind` in a session of each
/// protocol version, by reference and owned (the two must agree). A decoded
/// message of a known type must encode back to exactly `body`; any decoded
/// message must decode again from its encoding to itself. Returns whether
/// `body` decoded in some version.
fn check_message(kind: FrameKind, body: &[u8]) -> bool {
    let mut any = false;
    for &version in SUPPORTED_VERSIONS {
        let decoded = Message::decode_in(version, kind, body);
        let owned = Message::decode_owned(version, kind, BytesMut::from(body));
        assert_eq!(owned, decoded, "decode_owned disagrees with decode");
        let Ok(msg) = decoded else {
            continue;
        };
        any = true;
        assert_eq!(msg.kind(), kind);
        let encoded = msg.to_body();
        // An unknown type keeps only its stream id.
        if !matches!(msg, Message::Unknown { .. }) {
            assert_eq!(encoded, body, "{msg:?} does not re-encode to its body");
        }
        assert_eq!(
            Message::decode_in(version, kind, &encoded),
            Ok(msg),
            "no round trip"
        );
    }
    any
}

/// The record layer under fixed keys:
///
/// 1. `data` as a stream of frames, each opened in turn by one
///    [`RecordReader`] and its plaintext decoded as the session would;
/// 2. `data` (cut to [`MAX_PLAINTEXT_LEN`]) sealed and opened again, sealed
///    as a batch in pieces (which must give the same bytes as sealing the
///    pieces one by one), and replayed (which must fail);
/// 3. `data` as IV and ciphertext under a valid tag, so that decryption and
///    padding checks run on arbitrary bytes.
///
/// Returns the number of records opened in step 1.
pub fn record_open(data: &[u8]) -> usize {
    let keys = &fixture().record_keys;
    let mut reader = RecordReader::new(keys);
    let mut opened = 0;
    for frame in frames_of(data) {
        let kind = frame.kind;
        if let Ok(plain) = reader.open(frame) {
            assert!(plain.len() <= MAX_PLAINTEXT_LEN, "oversize plaintext");
            opened += 1;
            let _ = Message::decode_owned(PROTOCOL_VERSION_2, kind, plain);
        }
    }

    let select = data.first().copied().unwrap_or(0);
    let kind = KINDS[usize::from(select) % KINDS.len()];
    let plain = &data[..data.len().min(MAX_PLAINTEXT_LEN)];
    seal_and_open(keys, kind, plain);
    seal_in_batches(keys, kind, plain, 1 + usize::from(select) % 11);
    open_forged(keys, kind, data);
    opened
}

fn seal_and_open(keys: &DirectionKeys, kind: FrameKind, plain: &[u8]) {
    let mut writer = RecordWriter::new(keys);
    let mut reader = RecordReader::new(keys);
    let sealed = writer
        .seal_frame(kind, plain)
        .expect("a plaintext within the limit seals");
    assert_eq!(sealed.body.len(), cipher::sealed_len(plain.len()));
    let mut wire = BytesMut::new();
    FrameCodec::new()
        .encode(sealed.clone(), &mut wire)
        .expect("a sealed record fits in a frame");
    let received = FrameCodec::new()
        .decode(&mut wire)
        .expect("a sealed record decodes")
        .expect("a whole frame");
    assert_eq!(received, sealed);
    let opened = reader.open(received).expect("our own record opens");
    assert_eq!(&opened[..], plain, "seal/open round trip");
    assert_eq!(
        reader.open(sealed),
        Err(RecordError::BadRecordMac),
        "a replayed record opened"
    );
}

fn seal_in_batches(keys: &DirectionKeys, kind: FrameKind, plain: &[u8], pieces: usize) {
    let size = plain.len().div_ceil(pieces).max(1);
    let parts: Vec<&[u8]> = plain.chunks(size).collect();
    let mut batched = BytesMut::new();
    let mut writer = RecordWriter::new(keys);
    let batch = writer
        .seal_batch(kind, &parts)
        .expect("plaintexts within the limit seal");
    FrameCodec::new()
        .encode(batch, &mut batched)
        .expect("a batch encodes");
    let mut single = Vec::new();
    let mut writer = RecordWriter::new(keys);
    for part in &parts {
        let frame = writer.seal_frame(kind, part).expect("a piece seals");
        single.extend_from_slice(&frame.to_wire());
    }
    assert_eq!(&batched[..], &single[..], "batch sealing differs");
}

fn open_forged(keys: &DirectionKeys, kind: FrameKind, data: &[u8]) {
    let signed_len = (data.len().min(MAX_BODY_LEN - TAG_LEN) / 16) * 16;
    if signed_len < IV_LEN + 16 {
        return;
    }
    let signed = &data[..signed_len];
    let header = frame::header(kind, signed_len + TAG_LEN);
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(&keys.mac) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(&0u64.to_be_bytes());
    mac.update(&header);
    mac.update(signed);
    let mut body = BytesMut::from(signed);
    body.extend_from_slice(&mac.finalize().into_bytes());
    let ciphertext_len = signed_len - IV_LEN;
    match RecordReader::new(keys).open(Frame { kind, body }) {
        Ok(plain) => {
            let padding = ciphertext_len - plain.len();
            assert!((1..=16).contains(&padding), "padding of {padding} bytes");
            assert!(plain.len() <= MAX_PLAINTEXT_LEN, "oversize plaintext");
        }
        // Up to 65,551 bytes fit the frame; more than 65,536 are refused.
        Err(RecordError::Overflow) => assert!(
            ciphertext_len > MAX_PLAINTEXT_LEN + 1,
            "a ciphertext of {ciphertext_len} bytes cannot overflow"
        ),
        Err(e) => assert_eq!(e, RecordError::BadRecordMac),
    }
}

/// Certificate verification against the fixed CA. `data[0]` chooses: bit 0
/// whether `data[1..]` is a whole certificate or a TBSCertificate that is
/// first signed with the CA's key (so that every check after the signature
/// is reached), bits 1.. the server name expected (none, a DNS name, an IP
/// address). The certificate is verified for every role and also loaded
/// as a trust anchor. Returns whether it verified for some role.
pub fn certificate(data: &[u8]) -> bool {
    let Some((&mode, rest)) = data.split_first() else {
        return false;
    };
    let fx = fixture();
    let signed;
    let cert = if mode & 1 == 1 {
        match sign_tbs(fx, rest) {
            Some(der) => {
                signed = der;
                &signed[..]
            }
            None => return false,
        }
    } else {
        rest
    };
    let name = match (mode >> 1) % 3 {
        0 => None,
        1 => Some(ServerName::Dns("localhost".into())),
        _ => Some(ServerName::Ip([127, 0, 0, 1].into())),
    };
    let mut verified = false;
    for role in [Role::Device, Role::Server, Role::Ca] {
        match verify_peer(&fx.anchor, cert, role, name.as_ref(), now()) {
            Ok(peer) => {
                assert_ne!(role, Role::Ca, "a peer verified as a CA");
                assert_eq!(peer.role(), role);
                assert_eq!(peer.cert_der(), cert);
                let _ = format!("{peer:?} {}", peer.serial_hex());
                verified = true;
            }
            Err(e) => {
                assert!(role != Role::Ca || matches!(e, CertError::CaRole));
                let _ = (cert_alert(&e), e.to_string());
            }
        }
    }
    if let Err(e) = TrustAnchor::from_der(cert, fx.provider) {
        let _ = e.to_string();
    }
    verified
}

/// `tbs` wrapped into a Certificate with an RSASSA-PSS signature by the
/// fixed CA.
fn sign_tbs(fx: &Fixture, tbs: &[u8]) -> Option<Vec<u8>> {
    if tbs.len() > MAX_CERT_LEN {
        return None;
    }
    let signature = fx.ca_key.pss_sign(tbs).ok()?;
    let bits = der::asn1::BitString::from_bytes(&signature)
        .ok()?
        .to_der()
        .ok()?;
    let len = tbs.len() + fx.pss_algorithm.len() + bits.len();
    let mut der = Vec::with_capacity(len + 4);
    der.push(0x30);
    // DER length: short form below 128, else one or two length bytes.
    match len {
        0..=0x7f => der.push(len as u8),
        0x80..=0xff => der.extend_from_slice(&[0x81, len as u8]),
        _ => der.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
    }
    der.extend_from_slice(tbs);
    der.extend_from_slice(&fx.pss_algorithm);
    der.extend_from_slice(&bits);
    Some(der)
}

/// The server's handshake driven by the frames in `data`: the first is
/// handled as the device `HELO`, the second as `PREM`, the third as the
/// device's `FINI`; once established, the rest are opened as records and
/// decoded. Any error is fine, a panic is not. Returns how many of the
/// three handshake steps passed.
pub fn handshake_server(data: &[u8]) -> usize {
    let fx = fixture();
    let mut frames = frames_of(data).into_iter();
    let Some(helo) = frames.next() else {
        return 0;
    };
    let (state, reply) = match ExpectDeviceHelo::new(fx.server.clone()).handle(helo, now()) {
        Ok(next) => next,
        Err(e) => return failed(&e, 0),
    };
    assert_eq!(reply.kind, FrameKind::HELO);
    assert_eq!(state.claimed().role(), Role::Device);
    let Some(prem) = frames.next() else {
        return 1;
    };
    let state = match state.handle(prem) {
        Ok(next) => next,
        Err(e) => return failed(&e, 1),
    };
    let Some(fini) = frames.next() else {
        return 2;
    };
    let (mut established, reply) = match state.handle(fini) {
        Ok(next) => next,
        Err(e) => return failed(&e, 2),
    };
    assert_eq!(reply.kind, FrameKind::FINI);
    assert_eq!(established.peer.role(), Role::Device);
    for frame in frames {
        let kind = frame.kind;
        match established.reader.open(frame) {
            Ok(plain) => {
                let _ = Message::decode_owned(PROTOCOL_VERSION_2, kind, plain);
            }
            Err(_) => break,
        }
    }
    3
}

/// The device's side of the handshake: the device makes its `HELO`, then
/// `data` supplies what the server would send (its `HELO`, then a `FINI`
/// record, or alerts). Server certificate and name checks, the version
/// check, the creation of `PREM` and the `FINI` check may fail, never
/// panic. Returns how many steps succeeded: 1 means the server `HELO` was
/// accepted and `PREM` made.
pub fn handshake_device(data: &[u8]) -> usize {
    let fx = fixture();
    let Ok((state, helo)) = DeviceStart::new(fx.device.clone()).start() else {
        return 0;
    };
    assert_eq!(helo.kind, FrameKind::HELO);
    let mut frames = frames_of(data).into_iter();
    let Some(server_helo) = frames.next() else {
        return 0;
    };
    let (state, out) = match state.handle(server_helo, now()) {
        Ok(next) => next,
        Err(e) => return failed(&e, 0),
    };
    let kinds: Vec<FrameKind> = out.iter().map(|f| f.kind).collect();
    assert_eq!(kinds, [FrameKind::PREM, FrameKind::FINI]);
    let Some(fini) = frames.next() else {
        return 1;
    };
    match state.handle(fini) {
        Ok(established) => {
            assert_eq!(established.peer.role(), Role::Server);
            2
        }
        Err(e) => failed(&e, 1),
    }
}

fn failed(e: &HandshakeError, steps: usize) -> usize {
    let _ = (e.alert(), e.to_string());
    steps
}

/// The fixed PKI, for the tests of this module.
#[cfg(test)]
pub(crate) fn test_pki() -> FixedPki {
    FixedPki {
        ca_cert: include_bytes!("../tests/data/fuzz-pki/ca.der"),
        ca_key: include_bytes!("../tests/data/fuzz-pki/ca.key.der"),
        server_cert: include_bytes!("../tests/data/fuzz-pki/server.der"),
        server_key: include_bytes!("../tests/data/fuzz-pki/server.key.der"),
        device_cert: include_bytes!("../tests/data/fuzz-pki/device.der"),
        device_key: include_bytes!("../tests/data/fuzz-pki/device.key.der"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handshake recorded from the fixed device replays through the
    /// fixed server to the end, and the same bytes replay again.
    #[test]
    fn recorded_handshake_replays() {
        set_pki(test_pki());
        let (device, helo) = DeviceStart::new(device_config()).start().unwrap();
        let (_, reply) = ExpectDeviceHelo::new(server_config())
            .handle(helo.clone(), now())
            .unwrap();
        let (_, frames) = device.handle(reply, now()).unwrap();
        let mut seed = helo.to_wire();
        for f in &frames {
            seed.extend_from_slice(&f.to_wire());
        }
        let record = record_writer().seal_frame(FrameKind::SECX, b"x").unwrap();
        seed.extend_from_slice(&record.to_wire());
        assert_eq!(handshake_server(&seed), 3);
        assert_eq!(handshake_server(&seed), 3);
        assert_eq!(handshake_server(&seed[..seed.len() - 1]), 3);
        assert_eq!(handshake_server(&helo.to_wire()), 1);
    }

    #[test]
    fn targets_accept_empty_and_tiny_inputs() {
        set_pki(test_pki());
        for data in [&[][..], &[0], &[1], &[0xff; 9]] {
            frame_decoder(data);
            message(data);
            handshake_helo(data);
            handshake_prem(data);
            handshake_fini(data);
            record_open(data);
            certificate(data);
            handshake_server(data);
        }
    }

    /// The fixed server's answer to any device HELO is the same bytes, so a
    /// recorded server HELO is a seed the device side accepts.
    #[test]
    fn a_recorded_server_helo_is_accepted_by_the_device() {
        set_pki(test_pki());
        let fx = fixture();
        let (_, helo) = DeviceStart::new(fx.device.clone()).start().unwrap();
        let (_, reply) = ExpectDeviceHelo::new(fx.server.clone())
            .handle(helo, now())
            .unwrap();
        assert_eq!(handshake_device(&reply.to_wire()), 1);
        let mut with_fini = reply.to_wire();
        with_fini.extend_from_slice(b"FINI\0\0\0\x40");
        with_fini.extend_from_slice(&[0u8; 64]);
        assert_eq!(handshake_device(&with_fini), 1, "a bogus FINI is refused");
    }

    #[test]
    fn certificates_of_the_fixed_pki_verify() {
        set_pki(test_pki());
        let pki = test_pki();
        let mut device = vec![0u8];
        device.extend_from_slice(pki.device_cert);
        assert!(certificate(&device));
        let mut server = vec![2u8];
        server.extend_from_slice(pki.server_cert);
        assert!(certificate(&server));
    }
}
