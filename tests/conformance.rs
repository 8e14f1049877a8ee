//! Conformance with proto-spec.md §9.1: every refusal the table lists is
//! provoked against a real server (or, for the device's rows, a real
//! device) on 127.0.0.1, and the answer that comes back on the wire is
//! compared with the table's, which this test reads from the spec itself.
//!
//! The probes speak the protocol by hand: the handshake with the test PKI's
//! device key and a pre-master of their own, so they hold the record keys
//! and can send what no conforming peer sends (bad padding with a valid
//! tag, an oversize plaintext, messages out of order). The device's rows
//! run the real device client against a hand-driven server.
//!
//! [`every_case_is_probed`] fails when the table and the probes disagree on
//! the list of cases.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, KeyInit, Mac};
use secured::client::{ClientSettings, DeviceClient};
use secured::crypto::cipher::{Sealer, sealed_len};
use secured::crypto::hash::{HASH_LEN, sha256};
use secured::crypto::kdf::{self, SessionKeys};
use secured::crypto::{PreMaster, RsaPublicKey};
use secured::frame::{Frame, FrameCodec, FrameKind, header};
use secured::handshake::{ExpectDeviceHelo, device_proof_input};
use secured::message::{
    Ack, AckStatus, AlertCode, Extension, Fini, Helo, HeloRole, Imgx, Message, Prem, StreamId,
};
use secured::pki::{Identity, Role, ServerName, verify_peer};
use secured::record::{RecordReader, RecordWriter};
use secured::testkit::{TestPki, pki};
use sha2::Sha256;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

use common::device::{data, open, secx};
use common::{TestServer, start_server, start_server_with};

/// Longest wait for any answer; a probe that gets none fails instead of
/// hanging.
const WAIT: Duration = Duration::from_secs(10);

/// Every case of §9.1 provoked here.
const PROBED: &[&str] = &[
    "frame-length",
    "frame-cut",
    "peer-alert-plain",
    "record-length",
    "record-tag",
    "record-padding",
    "record-plaintext",
    "peer-alert",
    "handshake-order",
    "helo-decode",
    "helo-role",
    "version-server",
    "version-device",
    "cert-ca",
    "cert-expired",
    "cert-not-yet-valid",
    "cert-role",
    "cert-other",
    "prem-decode",
    "device-proof",
    "pre-master",
    "fini-record",
    "fini-decode",
    "fini-mac",
    "handshake-type-after",
    "unknown-short",
    "secx-decode",
    "imgx-decode",
    "imgx-name-decode",
    "endd-decode",
    "alrt-decode",
    "stream-id",
    "unknown-type",
    "imgx-second-open",
    "imgx-not-open",
    "imgx-name-rule",
    "imgx-size-limit",
    "imgx-too-much",
    "imgx-done-early",
    "imgx-signature",
    "imgx-storage",
    "endd-open-stream",
    "after-endd",
    "device-unexpected",
    "device-endd-cut",
    "hello-timeout",
    "handshake-timeout",
    "idle-timeout",
    "reply-timeout",
    "cert-expired-session",
    "capacity",
    "refused",
    "evicted",
    "shutdown",
    "shutdown-handshake",
];

/// Cases of §9.1 not provoked here, and why.
const NOT_PROBED: &[(&str, &str)] = &[
    (
        "record-count",
        "2^32 records cannot be sent in a test; RecordReader::open refuses past MAX_RECORDS",
    ),
    (
        "handshake-local",
        "a local failure of the random source or RSA cannot be caused by the peer",
    ),
    (
        "cert-algorithm",
        "needs a certificate signed with another algorithm: src/pki/verify.rs tests it, \
         handshake::cert_alert maps it",
    ),
    (
        "write-timeout",
        "needs a peer that stops reading with full buffers: tests/availability.rs floods a \
         server without reading, and stops reading as a server while a device uploads",
    ),
    (
        "device-after-endd",
        "the device reports it as an error and cannot answer: tests/adversarial.rs appends a \
         record after the server's ENDD",
    ),
];

// ---------------------------------------------------------------------------
// The table.

/// The cases of §9.1 and their answers: an alert name, `ACK_ <status>`, or
/// `none`.
fn spec_table() -> BTreeMap<String, String> {
    common::spec::case_table("### 9.1 ")
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// An alert, plaintext or protected.
    Alert(AlertCode),
    /// An acknowledgement.
    Ack(StreamId, AckStatus),
    /// `ENDD`.
    Endd,
    /// Some other frame.
    Frame(FrameKind),
    /// Nothing: the connection closed.
    None,
}

impl Answer {
    /// The answer as §9.1 writes it.
    fn spec_text(&self) -> String {
        match self {
            Self::Alert(code) => code.name().to_owned(),
            Self::Ack(_, status) => format!("ACK_ {}", status.name()),
            Self::Endd => "ENDD".to_owned(),
            Self::Frame(kind) => format!("a {kind} frame"),
            Self::None => "none".to_owned(),
        }
    }
}

/// Asserts that `got` is what §9.1 says for `case`.
#[track_caller]
fn expect(case: &str, got: &Answer) {
    let table = spec_table();
    let want = table
        .get(case)
        .unwrap_or_else(|| panic!("proto-spec.md §9.1 has no case {case}"));
    assert_eq!(
        want,
        &got.spec_text(),
        "case {case}: proto-spec.md §9.1 says {want}, the implementation answered {got:?}"
    );
}

#[test]
fn every_case_is_probed() {
    let not_probed: Vec<&str> = NOT_PROBED.iter().map(|(case, _)| *case).collect();
    common::spec::assert_all_probed("### 9.1 ", PROBED, &not_probed);
}

// ---------------------------------------------------------------------------
// Speaking the protocol by hand.

/// Frames over a TCP connection.
struct Raw {
    framed: Framed<TcpStream, FrameCodec>,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Self {
        let socket = TcpStream::connect(addr).await.expect("connect");
        Self::over(socket)
    }

    fn over(socket: TcpStream) -> Self {
        let _ = socket.set_nodelay(true);
        Self {
            framed: Framed::new(socket, FrameCodec::new()),
        }
    }

    async fn send(&mut self, frame: Frame) {
        self.framed.send(frame).await.expect("send a frame");
    }

    /// Writes bytes as they are, frame or not.
    async fn send_bytes(&mut self, bytes: &[u8]) {
        let socket = self.framed.get_mut();
        socket.write_all(bytes).await.expect("write");
        socket.flush().await.expect("flush");
    }

    /// Closes the sending side.
    async fn shutdown(&mut self) {
        self.framed.get_mut().shutdown().await.expect("shutdown");
    }

    /// The next frame, or `None` once the peer closed.
    async fn next(&mut self) -> Option<Frame> {
        match tokio::time::timeout(WAIT, self.framed.next()).await {
            Ok(Some(Ok(frame))) => Some(frame),
            Ok(_) => None,
            Err(_) => panic!("no answer within {WAIT:?}"),
        }
    }

    /// The answer before keys: a plaintext alert, another frame, or none.
    async fn plain_answer(&mut self) -> Answer {
        match self.next().await {
            None => Answer::None,
            Some(frame) => plain(&frame).unwrap_or(Answer::Frame(frame.kind)),
        }
    }
}

/// A plaintext alert, if `frame` is one (§3).
fn plain(frame: &Frame) -> Option<Answer> {
    if frame.kind == FrameKind::ALRT && frame.body.len() == 2 {
        match Message::decode(FrameKind::ALRT, &frame.body) {
            Ok(Message::Alert(code)) => Some(Answer::Alert(code)),
            _ => None,
        }
    } else {
        None
    }
}

/// The answer to a protected record: the next frame, opened.
async fn protected_answer(raw: &mut Raw, reader: &mut RecordReader) -> Answer {
    let Some(frame) = raw.next().await else {
        return Answer::None;
    };
    if let Some(alert) = plain(&frame) {
        return alert;
    }
    let kind = frame.kind;
    let plaintext = reader
        .open(frame)
        .unwrap_or_else(|e| panic!("the peer's {kind} record does not open: {e}"));
    match Message::decode(kind, &plaintext) {
        Ok(Message::Alert(code)) => Answer::Alert(code),
        Ok(Message::Ack(ack)) => Answer::Ack(ack.stream, ack.status),
        Ok(Message::Endd) => Answer::Endd,
        _ => Answer::Frame(kind),
    }
}

const NONCE_D: [u8; 32] = [0xd0; 32];

fn helo(role: HeloRole, versions: Vec<u16>, cert_der: &[u8], extensions: Vec<Extension>) -> Frame {
    Message::Helo(Helo {
        role,
        versions,
        nonce: NONCE_D,
        cert_der: cert_der.to_vec(),
        extensions,
    })
    .to_plain_frame()
}

fn device_helo() -> Frame {
    helo(
        HeloRole::Device,
        vec![1],
        &pki().device.cert_der,
        Vec::new(),
    )
}

/// A connection after the `HELO` exchange.
struct Hello {
    raw: Raw,
    device_helo: Frame,
    server_helo: Frame,
    nonce_s: [u8; 32],
    server_key: Arc<dyn RsaPublicKey>,
    device: Arc<Identity>,
}

async fn hello(addr: SocketAddr) -> Hello {
    let mut raw = Raw::connect(addr).await;
    let device_helo = device_helo();
    raw.send(device_helo.clone()).await;
    let server_helo = raw.next().await.expect("the server HELO");
    let Ok(Message::Helo(h)) = Message::decode(FrameKind::HELO, &server_helo.body) else {
        panic!("expected the server HELO, got {server_helo:?}");
    };
    let server = verify_peer(
        &pki().anchor(),
        &h.cert_der,
        Role::Server,
        Some(&ServerName::Dns("localhost".into())),
        SystemTime::now(),
    )
    .expect("the server certificate verifies");
    Hello {
        raw,
        device_helo,
        server_helo,
        nonce_s: h.nonce,
        server_key: server.public_key().clone(),
        device: pki().device.identity(),
    }
}

impl Hello {
    /// A `PREM` with this ciphertext, signed by the device.
    fn prem_with(&self, encrypted_pre_master: Vec<u8>) -> Frame {
        let hellos = sha256(&[&self.device_helo.to_wire(), &self.server_helo.to_wire()]);
        let proof = device_proof_input(&hellos, &encrypted_pre_master);
        let device_signature = self.device.key().pss_sign(&proof).expect("sign");
        Message::Prem(Prem {
            encrypted_pre_master,
            device_signature,
        })
        .to_plain_frame()
    }

    /// A `PREM` carrying `secret`, encrypted as the spec says.
    fn prem(&self, secret: &[u8]) -> Frame {
        self.prem_with(self.server_key.oaep_encrypt(secret).expect("encrypt"))
    }

    /// The keys and transcript hash once `prem` is sent with `pre_master`.
    fn keys(&self, pre_master: [u8; 32], prem: &Frame) -> (SessionKeys, [u8; HASH_LEN]) {
        let th = sha256(&[
            &self.device_helo.to_wire(),
            &self.server_helo.to_wire(),
            &prem.to_wire(),
        ]);
        let keys = kdf::derive(
            &PreMaster::from_bytes(pre_master),
            &NONCE_D,
            &self.nonce_s,
            &th,
        );
        (keys, th)
    }
}

/// An established session, driven by hand.
struct Established {
    raw: Raw,
    writer: RecordWriter,
    reader: RecordReader,
    keys: SessionKeys,
}

const PRE_MASTER: [u8; 32] = [0x42; 32];

async fn established(addr: SocketAddr) -> Established {
    let mut h = hello(addr).await;
    let prem = h.prem(&PRE_MASTER);
    let (keys, th) = h.keys(PRE_MASTER, &prem);
    let mut writer = RecordWriter::new(&keys.device_to_server);
    let verify_data = kdf::finished_mac(&keys.device_finished, &th);
    let fini = writer.seal_frame(FrameKind::FINI, &verify_data).unwrap();
    h.raw.send(prem).await;
    h.raw.send(fini).await;
    let mut reader = RecordReader::new(&keys.server_to_device);
    let server_fini = h.raw.next().await.expect("the server FINI");
    let plaintext = reader.open(server_fini).expect("the server FINI opens");
    assert_eq!(
        &plaintext[..],
        kdf::finished_mac(&keys.server_finished, &th)
    );
    Established {
        raw: h.raw,
        writer,
        reader,
        keys,
    }
}

impl Established {
    async fn send(&mut self, kind: FrameKind, plaintext: &[u8]) {
        let frame = self.writer.seal_frame(kind, plaintext).expect("seal");
        self.raw.send(frame).await;
    }

    async fn send_msg(&mut self, msg: &Message) {
        self.send(msg.kind(), &msg.to_body()).await;
    }

    async fn answer(&mut self) -> Answer {
        protected_answer(&mut self.raw, &mut self.reader).await
    }

    /// Sends `msg` and returns the answer.
    async fn ask(&mut self, msg: &Message) -> Answer {
        self.send_msg(msg).await;
        self.answer().await
    }

    /// A frame of `kind` whose body is sealed with the cipher directly, at
    /// the next sequence number: anything the record writer would refuse.
    fn sealed_raw(&mut self, kind: FrameKind, plaintext: &[u8]) -> Frame {
        let len = sealed_len(plaintext.len());
        let head = header(kind, len);
        let mut body = bytes::BytesMut::zeroed(len);
        Sealer::new(&self.keys.device_to_server).seal(
            self.writer.next_seq(),
            &head,
            plaintext,
            &mut body,
        );
        Frame { kind, body }
    }
}

/// A session and the answer to one message on it.
async fn answer_to(server: &TestServer, msg: &Message) -> Answer {
    let mut s = established(server.addr).await;
    s.ask(msg).await
}

/// A `DONE` whose signature is no signature.
fn unsigned_done(stream: u32) -> Message {
    Message::Imgx(Imgx::Done {
        stream: StreamId(stream),
        signature: vec![0x5a; 256],
    })
}

fn ack(stream: u32, status: AckStatus) -> Answer {
    Answer::Ack(StreamId(stream), status)
}

/// A session with an `IMGX` stream 1 of `size` bytes open.
async fn uploading(server: &TestServer, size: u64) -> Established {
    let mut s = established(server.addr).await;
    assert_eq!(
        s.ask(&open(1, "probe.png", size)).await,
        ack(1, AckStatus::Ok)
    );
    s
}

// ---------------------------------------------------------------------------
// Frames and records.

#[tokio::test]
async fn frame_length() {
    let server = start_server().await;
    let mut raw = Raw::connect(server.addr).await;
    raw.send_bytes(&header(FrameKind::HELO, 65_601)).await;
    expect("frame-length", &raw.plain_answer().await);
    server.stop().await;
}

#[tokio::test]
async fn frame_cut() {
    let server = start_server().await;
    let mut s = established(server.addr).await;
    let mut partial = header(FrameKind::SECX, 100).to_vec();
    partial.extend_from_slice(&[0; 10]);
    s.raw.send_bytes(&partial).await;
    s.raw.shutdown().await;
    expect("frame-cut", &s.answer().await);
    server.stop().await;
}

/// A device that refuses the server's `FINI` says so in plaintext; the
/// server, which has keys by then, closes without answering.
#[tokio::test]
async fn peer_alert_plain() {
    let server = start_server().await;
    let mut h = hello(server.addr).await;
    let prem = h.prem(&PRE_MASTER);
    let (keys, th) = h.keys(PRE_MASTER, &prem);
    let mut writer = RecordWriter::new(&keys.device_to_server);
    let verify_data = kdf::finished_mac(&keys.device_finished, &th);
    h.raw.send(prem).await;
    h.raw
        .send(writer.seal_frame(FrameKind::FINI, &verify_data).unwrap())
        .await;
    let mut reader = RecordReader::new(&keys.server_to_device);
    assert_eq!(
        protected_answer(&mut h.raw, &mut reader).await,
        Answer::Frame(FrameKind::FINI)
    );
    h.raw
        .send(Message::Alert(AlertCode::HandshakeFailure).to_plain_frame())
        .await;
    expect(
        "peer-alert-plain",
        &protected_answer(&mut h.raw, &mut reader).await,
    );
    server.stop().await;
}

#[tokio::test]
async fn record_length() {
    let server = start_server().await;
    let mut s = established(server.addr).await;
    s.raw.send(Frame::new(FrameKind::SECX, [0u8; 63])).await;
    expect("record-length", &s.answer().await);
    let mut s = established(server.addr).await;
    s.raw.send(Frame::new(FrameKind::SECX, [0u8; 72])).await;
    expect("record-length", &s.answer().await);
    server.stop().await;
}

#[tokio::test]
async fn record_tag() {
    let server = start_server().await;
    let mut s = established(server.addr).await;
    let mut frame = s
        .writer
        .seal_frame(FrameKind::SECX, &secx(1, "hi").to_body())
        .unwrap();
    frame.body[20] ^= 1;
    s.raw.send(frame).await;
    expect("record-tag", &s.answer().await);
    server.stop().await;
}

/// A valid tag over one block whose decryption, sixteen zero bytes, is not
/// PKCS#7 padding.
#[tokio::test]
async fn record_padding() {
    let server = start_server().await;
    let mut s = established(server.addr).await;
    let sealed = s.sealed_raw(FrameKind::SECX, &[0u8; 16]);
    // IV and the first ciphertext block (the plaintext), without the block
    // of padding that follows it.
    let signed = &sealed.body[..32];
    let head = header(FrameKind::SECX, 64);
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&s.keys.device_to_server.mac)
        .expect("HMAC takes any key");
    mac.update(&s.writer.next_seq().to_be_bytes());
    mac.update(&head);
    mac.update(signed);
    let mut body = signed.to_vec();
    body.extend_from_slice(&mac.finalize().into_bytes());
    assert_eq!(body.len(), 64);
    s.raw.send(Frame::new(FrameKind::SECX, body)).await;
    expect("record-padding", &s.answer().await);
    server.stop().await;
}

/// 65,540 bytes fit a frame once sealed but exceed the record limit.
#[tokio::test]
async fn record_plaintext() {
    let server = start_server().await;
    let mut s = uploading(&server, 1 << 20).await;
    let mut plaintext = Imgx::data_header(StreamId(1)).to_vec();
    plaintext.resize(65_540, 0x61);
    let frame = s.sealed_raw(FrameKind::IMGX, &plaintext);
    assert!(frame.body.len() <= secured::frame::MAX_BODY_LEN);
    s.raw.send(frame).await;
    expect("record-plaintext", &s.answer().await);
    server.stop().await;
}

#[tokio::test]
async fn peer_alert() {
    let server = start_server().await;
    let answer = answer_to(&server, &Message::Alert(AlertCode::InternalError)).await;
    expect("peer-alert", &answer);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// The handshake, server side.

/// Sends `frame` as the device's first frame and returns the answer.
async fn answer_to_first(server: &TestServer, frame: Frame) -> Answer {
    let mut raw = Raw::connect(server.addr).await;
    raw.send(frame).await;
    raw.plain_answer().await
}

#[tokio::test]
async fn handshake_order() {
    let server = start_server().await;
    let prem = Message::Prem(Prem {
        encrypted_pre_master: vec![1; 256],
        device_signature: vec![2; 256],
    });
    expect(
        "handshake-order",
        &answer_to_first(&server, prem.to_plain_frame()).await,
    );
    let long_alert = Frame::new(FrameKind::ALRT, [0, 40, 0]);
    expect(
        "handshake-order",
        &answer_to_first(&server, long_alert).await,
    );
    // After the HELOs, a FINI where the PREM belongs.
    let mut h = hello(server.addr).await;
    h.raw.send(Frame::new(FrameKind::FINI, [0u8; 64])).await;
    expect("handshake-order", &h.raw.plain_answer().await);
    server.stop().await;
}

#[tokio::test]
async fn helo_decode() {
    let server = start_server().await;
    let cert = &pki().device.cert_der;
    let extensions = |n: u16| -> Vec<Extension> {
        (0..n)
            .map(|kind| Extension {
                kind: 0x100 + kind,
                data: Vec::new(),
            })
            .collect()
    };
    let at_limit = helo(HeloRole::Device, vec![1], cert, extensions(32));
    assert_eq!(
        answer_to_first(&server, at_limit).await,
        Answer::Frame(FrameKind::HELO),
        "32 extensions are fine"
    );
    let over = helo(HeloRole::Device, vec![1], cert, extensions(33));
    expect("helo-decode", &answer_to_first(&server, over).await);
    let twice = helo(
        HeloRole::Device,
        vec![1],
        cert,
        vec![
            Extension {
                kind: 9,
                data: vec![1],
            },
            Extension {
                kind: 9,
                data: vec![2],
            },
        ],
    );
    expect("helo-decode", &answer_to_first(&server, twice).await);
    let mut bad_role = device_helo();
    bad_role.body[0] = 4;
    expect("helo-decode", &answer_to_first(&server, bad_role).await);
    server.stop().await;
}

#[tokio::test]
async fn helo_role() {
    let server = start_server().await;
    let reflected = helo(
        HeloRole::Server,
        vec![1],
        &pki().device.cert_der,
        Vec::new(),
    );
    expect("helo-role", &answer_to_first(&server, reflected).await);
    server.stop().await;
}

#[tokio::test]
async fn version_server() {
    let server = start_server().await;
    let v2 = helo(
        HeloRole::Device,
        vec![4, 5],
        &pki().device.cert_der,
        Vec::new(),
    );
    expect("version-server", &answer_to_first(&server, v2).await);
    server.stop().await;
}

/// Sends a device `HELO` with `cert_der` and returns the answer.
async fn answer_to_certificate(server: &TestServer, cert_der: &[u8]) -> Answer {
    answer_to_first(
        server,
        helo(HeloRole::Device, vec![1], cert_der, Vec::new()),
    )
    .await
}

#[tokio::test]
async fn certificates() {
    let server = start_server().await;
    let p = pki();
    expect(
        "cert-ca",
        &answer_to_certificate(&server, &p.other_device.cert_der).await,
    );
    let expired = p.reissue(&p.device, Role::Device, "device-1", &[], TestPki::expired());
    expect(
        "cert-expired",
        &answer_to_certificate(&server, &expired.cert_der).await,
    );
    let early = p.reissue(
        &p.device,
        Role::Device,
        "device-1",
        &[],
        TestPki::not_yet_valid(),
    );
    expect(
        "cert-not-yet-valid",
        &answer_to_certificate(&server, &early.cert_der).await,
    );
    expect(
        "cert-role",
        &answer_to_certificate(&server, &p.server.cert_der).await,
    );
    expect(
        "cert-role",
        &answer_to_certificate(&server, p.ca.cert_der()).await,
    );
    expect(
        "cert-other",
        &answer_to_certificate(&server, &[0x30, 0x03, 0x02, 0x01, 0x07]).await,
    );
    server.stop().await;
}

#[tokio::test]
async fn prem_decode() {
    let server = start_server().await;
    let mut h = hello(server.addr).await;
    let prem = Message::Prem(Prem {
        encrypted_pre_master: vec![1; 255],
        device_signature: vec![2; 256],
    });
    h.raw.send(prem.to_plain_frame()).await;
    expect("prem-decode", &h.raw.plain_answer().await);
    server.stop().await;
}

#[tokio::test]
async fn device_proof() {
    let server = start_server().await;
    let mut h = hello(server.addr).await;
    let good = h.prem(&PRE_MASTER);
    let Ok(Message::Prem(mut prem)) = Message::decode(FrameKind::PREM, &good.body) else {
        unreachable!()
    };
    prem.device_signature[100] ^= 1;
    h.raw.send(Message::Prem(prem).to_plain_frame()).await;
    expect("device-proof", &h.raw.plain_answer().await);
    server.stop().await;
}

/// A pre-master of the wrong length (and a ciphertext that is no OAEP at
/// all): nothing at `PREM`, `handshake_failure` at the `FINI`, even one
/// made with keys from the secret the device encrypted.
#[tokio::test]
async fn pre_master() {
    let server = start_server().await;
    for secret in [&[0x42u8; 31][..], &[0x42u8; 48][..]] {
        let mut h = hello(server.addr).await;
        let prem = h.prem(secret);
        let mut guess = [0u8; 32];
        let n = secret.len().min(32);
        guess[..n].copy_from_slice(&secret[..n]);
        let (keys, th) = h.keys(guess, &prem);
        let fini = RecordWriter::new(&keys.device_to_server)
            .seal_frame(
                FrameKind::FINI,
                &kdf::finished_mac(&keys.device_finished, &th),
            )
            .unwrap();
        h.raw.send(prem).await;
        h.raw.send(fini).await;
        expect("pre-master", &h.raw.plain_answer().await);
    }
    let mut h = hello(server.addr).await;
    let not_oaep = h.prem_with(vec![0x01; 256]);
    h.raw.send(not_oaep).await;
    h.raw.send(Frame::new(FrameKind::FINI, [0u8; 64])).await;
    expect("pre-master", &h.raw.plain_answer().await);
    server.stop().await;
}

/// After a valid `PREM`, sends the `FINI` that `fini` makes from the keys
/// and transcript hash, and returns the answer.
async fn answer_to_fini(
    server: &TestServer,
    fini: impl FnOnce(&SessionKeys, &[u8; HASH_LEN]) -> Frame,
) -> Answer {
    let mut h = hello(server.addr).await;
    let prem = h.prem(&PRE_MASTER);
    let (keys, th) = h.keys(PRE_MASTER, &prem);
    let fini = fini(&keys, &th);
    h.raw.send(prem).await;
    h.raw.send(fini).await;
    h.raw.plain_answer().await
}

#[tokio::test]
async fn fini_record() {
    let server = start_server().await;
    let garbage = answer_to_fini(&server, |_, _| Frame::new(FrameKind::FINI, [7u8; 64])).await;
    expect("fini-record", &garbage);
    // Sealed under the server's direction: the tag does not verify.
    let wrong_keys = answer_to_fini(&server, |keys, th| {
        RecordWriter::new(&keys.server_to_device)
            .seal_frame(
                FrameKind::FINI,
                &kdf::finished_mac(&keys.device_finished, th),
            )
            .unwrap()
    })
    .await;
    expect("fini-record", &wrong_keys);
    server.stop().await;
}

#[tokio::test]
async fn fini_decode() {
    let server = start_server().await;
    let short = answer_to_fini(&server, |keys, th| {
        let verify_data = kdf::finished_mac(&keys.device_finished, th);
        RecordWriter::new(&keys.device_to_server)
            .seal_frame(FrameKind::FINI, &verify_data[..31])
            .unwrap()
    })
    .await;
    expect("fini-decode", &short);
    server.stop().await;
}

#[tokio::test]
async fn fini_mac() {
    let server = start_server().await;
    let wrong = answer_to_fini(&server, |keys, th| {
        let mut fini = Fini {
            verify_data: kdf::finished_mac(&keys.device_finished, th),
        };
        fini.verify_data[0] ^= 1;
        RecordWriter::new(&keys.device_to_server)
            .seal_frame(FrameKind::FINI, &Message::Fini(fini).to_body())
            .unwrap()
    })
    .await;
    expect("fini-mac", &wrong);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// After the handshake, the server.

/// Handshake types, and `ACK_`, with bodies that decode.
#[tokio::test]
async fn handshake_types_after_the_handshake() {
    let server = start_server().await;
    let prem = Message::Prem(Prem {
        encrypted_pre_master: vec![1; 256],
        device_signature: vec![2; 256],
    });
    let fini = Message::Fini(Fini {
        verify_data: [3; 32],
    });
    let ack = Message::Ack(Ack {
        stream: StreamId(1),
        status: AckStatus::Ok,
        detail: Vec::new(),
    });
    let helo = Message::decode(FrameKind::HELO, &device_helo().body).unwrap();
    for msg in [helo, prem, fini, ack] {
        expect("handshake-type-after", &answer_to(&server, &msg).await);
    }
    server.stop().await;
}

/// The type decides, not the body.
#[tokio::test]
async fn handshake_types_after_the_handshake_whatever_the_body() {
    let server = start_server().await;
    for kind in [
        FrameKind::HELO,
        FrameKind::PREM,
        FrameKind::FINI,
        FrameKind::ACK,
    ] {
        let mut s = established(server.addr).await;
        s.send(kind, &[1]).await;
        expect("handshake-type-after", &s.answer().await);
    }
    server.stop().await;
}

#[tokio::test]
async fn unknown_short() {
    let server = start_server().await;
    let mut s = established(server.addr).await;
    s.send(FrameKind(*b"LIST"), &[0, 0, 1]).await;
    expect("unknown-short", &s.answer().await);
    server.stop().await;
}

#[tokio::test]
async fn secx_decode() {
    let server = start_server().await;
    for plaintext in [&b"\x00\x00\x01"[..], b"\x00\x00\x00\x01\xff"] {
        let mut s = established(server.addr).await;
        s.send(FrameKind::SECX, plaintext).await;
        expect("secx-decode", &s.answer().await);
    }
    let mut s = established(server.addr).await;
    let mut long = 1u32.to_be_bytes().to_vec();
    long.resize(4 + 32 * 1024 + 1, b'a');
    s.send(FrameKind::SECX, &long).await;
    expect("secx-decode", &s.answer().await);
    server.stop().await;
}

#[tokio::test]
async fn imgx_decode() {
    let server = start_server().await;
    let mut bad_kind = open(1, "a.png", 1).to_body();
    bad_kind[5] = 9;
    let mut spaced = open(1, "a.png", 1).to_body();
    let at = spaced.len() - 4;
    spaced[at] = b' ';
    let mut short_signature = vec![0, 0, 0, 1, 3, 0, 255];
    short_signature.extend_from_slice(&[0; 255]);
    for plaintext in [
        &b"\x00\x00\x00\x01"[..],
        b"\x00\x00\x00\x01\x09",
        &bad_kind,
        &spaced,
        b"\x00\x00\x00\x01\x02",
        &short_signature,
        b"\x00\x00\x00\x01\x04\x00\x01\xff",
    ] {
        let mut s = established(server.addr).await;
        s.send(FrameKind::IMGX, plaintext).await;
        expect("imgx-decode", &s.answer().await);
    }
    server.stop().await;
}

/// Names outside `name<1..200>` do not decode; §8.3.2 is for names inside.
#[tokio::test]
async fn imgx_name_decode() {
    let server = start_server().await;
    expect(
        "imgx-name-decode",
        &answer_to(&server, &open(1, "", 1)).await,
    );
    let long = "a".repeat(201);
    expect(
        "imgx-name-decode",
        &answer_to(&server, &open(1, &long, 1)).await,
    );
    server.stop().await;
}

#[tokio::test]
async fn endd_decode() {
    let server = start_server().await;
    let mut s = established(server.addr).await;
    s.send(FrameKind::ENDD, &[0]).await;
    expect("endd-decode", &s.answer().await);
    server.stop().await;
}

#[tokio::test]
async fn alrt_decode() {
    let server = start_server().await;
    let mut s = established(server.addr).await;
    s.send(FrameKind::ALRT, &[0, 40, 0]).await;
    expect("alrt-decode", &s.answer().await);
    server.stop().await;
}

#[tokio::test]
async fn stream_id() {
    let server = start_server().await;
    let mut s = established(server.addr).await;
    assert_eq!(s.ask(&secx(3, "three")).await, ack(3, AckStatus::Ok));
    for (msg, id) in [
        (secx(3, "again"), 3),
        (secx(1, "lower"), 1),
        (secx(4, "even"), 4),
        (open(2, "even.png", 1), 2),
        (open(3, "again.png", 1), 3),
    ] {
        let answer = s.ask(&msg).await;
        assert_eq!(answer, ack(id, AckStatus::BadRequest));
        expect("stream-id", &answer);
    }
    // The refused ids opened nothing: 5 is still new.
    assert_eq!(s.ask(&secx(5, "five")).await, ack(5, AckStatus::Ok));
    server.stop().await;
}

/// Unknown types open streams too (§8.1).
#[tokio::test]
async fn stream_ids_of_unknown_types() {
    let server = start_server().await;
    let mut s = established(server.addr).await;
    let list = FrameKind(*b"LIST");
    s.send(list, &4u32.to_be_bytes()).await;
    expect("stream-id", &s.answer().await);
    s.send(list, &5u32.to_be_bytes()).await;
    assert_eq!(s.answer().await, ack(5, AckStatus::Unsupported));
    let answer = s.ask(&secx(5, "five again")).await;
    assert_eq!(answer, ack(5, AckStatus::BadRequest));
    s.send(list, &5u32.to_be_bytes()).await;
    assert_eq!(s.answer().await, ack(5, AckStatus::BadRequest));
    assert_eq!(s.ask(&secx(7, "seven")).await, ack(7, AckStatus::Ok));
    server.stop().await;
}

#[tokio::test]
async fn unknown_type() {
    let server = start_server().await;
    let mut s = established(server.addr).await;
    s.send(FrameKind(*b"LIST"), &[0, 0, 0, 5, 1, 2]).await;
    let answer = s.answer().await;
    assert_eq!(answer, ack(5, AckStatus::Unsupported));
    expect("unknown-type", &answer);
    // The session goes on.
    assert_eq!(s.ask(&secx(7, "after")).await, ack(7, AckStatus::Ok));
    server.stop().await;
}

#[tokio::test]
async fn imgx_second_open() {
    let server = start_server().await;
    let mut s = uploading(&server, 10).await;
    expect("imgx-second-open", &s.ask(&open(3, "b.png", 1)).await);
    server.stop().await;
}

#[tokio::test]
async fn imgx_not_open() {
    let server = start_server().await;
    expect("imgx-not-open", &answer_to(&server, &data(1, b"x")).await);
    expect(
        "imgx-not-open",
        &answer_to(&server, &unsigned_done(1)).await,
    );
    let abort = Message::Imgx(Imgx::Abort {
        stream: StreamId(1),
        reason: String::new(),
    });
    expect("imgx-not-open", &answer_to(&server, &abort).await);
    let mut s = uploading(&server, 10).await;
    expect("imgx-not-open", &s.ask(&data(3, b"x")).await);
    server.stop().await;
}

#[tokio::test]
async fn imgx_name_rule() {
    let server = start_server().await;
    for name in ["../x.png", "a/b.png", "nul\0.png"] {
        expect(
            "imgx-name-rule",
            &answer_to(&server, &open(1, name, 1)).await,
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn imgx_size_limit() {
    let server = start_server().await;
    let answer = answer_to(&server, &open(1, "huge.png", u64::MAX)).await;
    assert_eq!(answer, ack(1, AckStatus::TooLarge));
    expect("imgx-size-limit", &answer);
    server.stop().await;
}

#[tokio::test]
async fn imgx_too_much() {
    let server = start_server().await;
    let mut s = uploading(&server, 3).await;
    expect("imgx-too-much", &s.ask(&data(1, b"four")).await);
    server.stop().await;
}

#[tokio::test]
async fn imgx_done_early() {
    let server = start_server().await;
    let mut s = uploading(&server, 3).await;
    s.send_msg(&data(1, b"x")).await;
    expect("imgx-done-early", &s.ask(&unsigned_done(1)).await);
    server.stop().await;
}

#[tokio::test]
async fn imgx_signature() {
    let server = start_server().await;
    let mut s = uploading(&server, 1).await;
    s.send_msg(&data(1, b"x")).await;
    let answer = s.ask(&unsigned_done(1)).await;
    assert_eq!(answer, ack(1, AckStatus::BadSignature));
    expect("imgx-signature", &answer);
    server.stop().await;
}

/// The data folder is replaced by a file once the server runs: nothing can
/// be stored under it.
#[tokio::test]
async fn imgx_storage() {
    let server = start_server().await;
    let data_dir = server.data().to_owned();
    let mut s = established(server.addr).await;
    std::fs::remove_dir_all(&data_dir).unwrap();
    std::fs::write(&data_dir, b"not a folder").unwrap();
    let answer = s.ask(&open(1, "a.png", 1)).await;
    std::fs::remove_file(&data_dir).unwrap();
    std::fs::create_dir(&data_dir).unwrap();
    assert_eq!(answer, ack(1, AckStatus::StorageError));
    expect("imgx-storage", &answer);
    server.stop().await;
}

#[tokio::test]
async fn endd_open_stream() {
    let server = start_server().await;
    let mut s = uploading(&server, 10).await;
    s.send_msg(&data(1, b"abc")).await;
    let answer = s.ask(&Message::Endd).await;
    assert_eq!(answer, ack(1, AckStatus::Aborted));
    expect("endd-open-stream", &answer);
    assert_eq!(s.answer().await, Answer::Endd);
    // The device closes after ENDD both ways; the server waits for that.
    drop(s);
    server.stop().await;
}

#[tokio::test]
async fn after_endd() {
    let server = start_server().await;
    let mut s = established(server.addr).await;
    assert_eq!(s.ask(&Message::Endd).await, Answer::Endd);
    expect("after-endd", &s.ask(&secx(1, "too late")).await);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// After the handshake, the device: the real client against a server
// driven by hand.

/// A listener, and the real device connecting to it in a task that runs
/// `then` on the established client.
async fn device_against_raw_server<F, Fut>(settings: ClientSettings, then: F) -> Raw
where
    F: FnOnce(DeviceClient<TcpStream>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let stream = TcpStream::connect(addr).await.unwrap();
        if let Ok(client) = DeviceClient::handshake(stream, pki().device_config(), settings).await {
            then(client).await;
        }
    });
    let (socket, _) = listener.accept().await.unwrap();
    Raw::over(socket)
}

/// The server's side of the handshake, by the state machine.
async fn serve_handshake(raw: &mut Raw) -> (RecordWriter, RecordReader) {
    let device_helo = raw.next().await.expect("device HELO");
    let (state, reply) = ExpectDeviceHelo::new(pki().server_config())
        .handle(device_helo, SystemTime::now())
        .unwrap();
    raw.send(reply).await;
    let state = state.handle(raw.next().await.expect("PREM")).unwrap();
    let (established, fini) = state.handle(raw.next().await.expect("FINI")).unwrap();
    raw.send(fini).await;
    (established.writer, established.reader)
}

#[tokio::test]
async fn version_device() {
    let mut raw = device_against_raw_server(ClientSettings::default(), |_| async {}).await;
    let device_helo = raw.next().await.expect("device HELO");
    assert_eq!(device_helo.kind, FrameKind::HELO);
    let reply = helo(
        HeloRole::Server,
        vec![1, 2],
        &pki().server.cert_der,
        Vec::new(),
    );
    raw.send(reply).await;
    expect("version-device", &raw.plain_answer().await);
}

#[tokio::test]
async fn device_unexpected() {
    let mut raw = device_against_raw_server(ClientSettings::default(), |mut client| async move {
        let _ = client.send_text("hello").await;
    })
    .await;
    let (mut writer, mut reader) = serve_handshake(&mut raw).await;
    let text = raw.next().await.expect("the device's SECX");
    assert_eq!(text.kind, FrameKind::SECX);
    reader.open(text).unwrap();
    // A SECX from the server instead of the ACK_.
    let frame = writer
        .seal_frame(FrameKind::SECX, &secx(2, "unexpected").to_body())
        .unwrap();
    raw.send(frame).await;
    expect(
        "device-unexpected",
        &protected_answer(&mut raw, &mut reader).await,
    );
}

#[tokio::test]
async fn device_endd_cut() {
    let mut raw = device_against_raw_server(ClientSettings::default(), |client| async move {
        let _ = client.close().await;
    })
    .await;
    let (_writer, mut reader) = serve_handshake(&mut raw).await;
    let endd = raw.next().await.expect("the device's ENDD");
    assert_eq!(endd.kind, FrameKind::ENDD);
    reader.open(endd).unwrap();
    raw.shutdown().await;
    expect(
        "device-endd-cut",
        &protected_answer(&mut raw, &mut reader).await,
    );
}

#[tokio::test]
async fn reply_timeout() {
    let settings = ClientSettings {
        reply_timeout: Duration::from_millis(300),
        ..ClientSettings::default()
    };
    let mut raw = device_against_raw_server(settings, |mut client| async move {
        let _ = client.send_text("hello").await;
    })
    .await;
    let (_writer, mut reader) = serve_handshake(&mut raw).await;
    let text = raw.next().await.expect("the device's SECX");
    reader.open(text).unwrap();
    expect(
        "reply-timeout",
        &protected_answer(&mut raw, &mut reader).await,
    );
}

// ---------------------------------------------------------------------------
// Time limits and capacity.

#[tokio::test]
async fn handshake_timeout() {
    let server = start_server_with(pki().server_config(), |s| {
        s.handshake_timeout = Duration::from_millis(300);
        // Only the handshake's limit can end it, not the first frame's.
        s.hello_timeout = Duration::from_secs(60);
    })
    .await;
    let mut raw = Raw::connect(server.addr).await;
    expect("handshake-timeout", &raw.plain_answer().await);
    server.stop().await;
}

#[tokio::test]
async fn idle_timeout() {
    let server = start_server_with(pki().server_config(), |s| {
        s.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let mut s = established(server.addr).await;
    expect("idle-timeout", &s.answer().await);
    // Also after the server's ENDD, while it waits for the device to close.
    let mut s = established(server.addr).await;
    assert_eq!(s.ask(&Message::Endd).await, Answer::Endd);
    expect("idle-timeout", &s.answer().await);
    server.stop().await;
}

#[tokio::test]
async fn capacity() {
    let server = start_server_with(pki().server_config(), |s| {
        s.max_connections = 1;
    })
    .await;
    let mut first = established(server.addr).await;
    // A round trip: the server has given the first session its slot.
    assert_eq!(first.ask(&secx(1, "first")).await, ack(1, AckStatus::Ok));
    // The next connection is told at once, before its handshake.
    let mut second = Raw::connect(server.addr).await;
    expect("capacity", &second.plain_answer().await);
    assert_eq!(second.next().await, None, "then closed");
    server.stop().await;
}

#[tokio::test]
async fn evicted() {
    let server = start_server_with(pki().server_config(), |s| {
        s.max_unauthenticated = 1;
    })
    .await;
    // A connection that has sent nothing is evicted by the next one.
    let mut silent = Raw::connect(server.addr).await;
    let _newer = Raw::connect(server.addr).await;
    expect("evicted", &silent.plain_answer().await);
    server.stop().await;
}

#[tokio::test]
async fn refused() {
    let server = start_server_with(pki().server_config(), |s| {
        s.max_unauthenticated = 1;
    })
    .await;
    // Once the server answered its HELO, the first connection is making
    // progress and is never evicted: the next one is refused instead.
    let mut first = hello(server.addr).await;
    let mut second = Raw::connect(server.addr).await;
    expect("refused", &second.plain_answer().await);
    // The first one is still in its handshake, and completes it.
    let prem = first.prem(&PRE_MASTER);
    let (keys, th) = first.keys(PRE_MASTER, &prem);
    let mut writer = RecordWriter::new(&keys.device_to_server);
    let fini = writer
        .seal_frame(
            FrameKind::FINI,
            &kdf::finished_mac(&keys.device_finished, &th),
        )
        .unwrap();
    first.raw.send(prem).await;
    first.raw.send(fini).await;
    let server_fini = first.raw.next().await.expect("the server FINI");
    assert_eq!(server_fini.kind, FrameKind::FINI);
    server.stop().await;
}

#[tokio::test]
async fn hello_timeout() {
    let server = start_server_with(pki().server_config(), |s| {
        s.hello_timeout = Duration::from_millis(300);
    })
    .await;
    // Half a frame header, then nothing.
    let mut raw = Raw::connect(server.addr).await;
    raw.send_bytes(b"HELO").await;
    let started = std::time::Instant::now();
    expect("hello-timeout", &raw.plain_answer().await);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "within the first-frame limit, not the handshake's"
    );
    server.stop().await;
}

#[tokio::test]
async fn cert_expired_session() {
    // A device certificate that expires two seconds from now.
    let p = pki();
    let now = SystemTime::now();
    let leaf = p.reissue(
        &p.device,
        Role::Device,
        "device-1",
        &[],
        secured::pki::Validity {
            not_before: now - Duration::from_secs(60),
            not_after: now + Duration::from_secs(2),
        },
    );
    let server = start_server().await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let mut session = secured::session::Session::connect(
        stream,
        p.device_config_as(leaf.identity()),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    session.set_limits(secured::session::IoLimits::uniform(Duration::from_secs(10)));
    let got = match session.recv().await {
        Err(secured::session::SessionError::PeerAlert(code)) => Answer::Alert(code),
        other => panic!("expected an alert, got {other:?}"),
    };
    expect("cert-expired-session", &got);
    server.stop().await;
}

#[tokio::test]
async fn shutdown() {
    let server = start_server().await;
    let mut s = established(server.addr).await;
    assert_eq!(s.ask(&secx(1, "before")).await, ack(1, AckStatus::Ok));
    server.shutdown.cancel();
    expect("shutdown", &s.answer().await);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_handshake() {
    let server = start_server().await;
    let mut h = hello(server.addr).await;
    server.shutdown.cancel();
    expect("shutdown-handshake", &h.raw.plain_answer().await);
    server.stop().await;
}
