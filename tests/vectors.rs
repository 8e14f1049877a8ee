//! The test vectors of proto-spec.md §12, read from the spec itself, so the
//! document and the implementation cannot drift apart.
//!
//! Each section of §12 has its test. Every value is recomputed from the
//! inputs where it can be (the recorded `PREM` and file signature are
//! checked instead: they verify and decrypt as the spec says), and
//! [`every_vector_is_checked`] fails if the spec holds a value no test reads.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use secured::crypto::cipher::Sealer;
use secured::crypto::hash::sha256;
use secured::crypto::{
    CryptoError, CryptoProvider, PreMaster, SecureRandom, kdf, providers, unwrap_premaster,
};
use secured::frame::{Frame, FrameCodec, FrameKind, header};
use secured::handshake::{
    DEVICE_PROOF_CONTEXT, DeviceConfig, DeviceStart, ExpectDeviceHelo, ServerConfig,
    device_proof_input,
};
use secured::message::{
    Ack, AckStatus, AlertCode, Entr, Extension, FileInfo, FileMsg, Fini, Ftch, Helo, HeloRole,
    Imgx, ImgxOpen, List, MediaKind, Message, Note, Prem, Scope, Secx, Sharing, StreamId,
    WatchFrom, Wtch,
};
use secured::pki::{Identity, Role, ServerName, TrustAnchor, verify_peer};
use secured::record::{RecordReader, RecordWriter};
use tokio_util::codec::Decoder;

/// The `name = hex` values of the ```vectors blocks in `spec`.
///
/// # Panics
/// On any line that is neither a value, its continuation, a comment nor
/// empty, on a name given twice, and on hex that does not decode: a typo in
/// the spec must fail loudly, not drop a value.
fn parse_vectors(spec: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut inside = false;
    let mut current: Option<String> = None;
    for (number, line) in spec.lines().enumerate() {
        let number = number + 1;
        let t = line.trim();
        if !inside {
            inside = t.starts_with("```vectors");
            continue;
        }
        if t.starts_with("```") {
            inside = false;
            current = None;
            continue;
        }
        if t.is_empty() {
            current = None;
            continue;
        }
        if t.starts_with('#') {
            continue;
        }
        let hex_of = |text: &str, name: &str| {
            hex::decode(text.split_whitespace().collect::<String>())
                .unwrap_or_else(|e| panic!("proto-spec.md line {number}, vector {name}: {e}"))
        };
        if let Some((name, value)) = t.split_once('=') {
            let name = name.trim();
            assert!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "proto-spec.md line {number}: {name:?} is not a vector name"
            );
            let bytes = hex_of(value, name);
            assert!(
                out.insert(name.to_owned(), bytes).is_none(),
                "proto-spec.md line {number}: vector {name} is given twice"
            );
            current = Some(name.to_owned());
        } else {
            let name = current.as_deref().unwrap_or_else(|| {
                panic!("proto-spec.md line {number}: continuation line without a value before it")
            });
            assert!(
                line.starts_with(char::is_whitespace),
                "proto-spec.md line {number}: a continuation line must be indented"
            );
            let more = hex_of(t, name);
            out.get_mut(name).expect("current vector").extend(more);
        }
    }
    assert!(!inside, "proto-spec.md: a vectors block is not closed");
    out
}

/// The vectors of proto-spec.md, remembering which ones were read.
struct Vectors {
    values: BTreeMap<String, Vec<u8>>,
    read: RefCell<BTreeSet<String>>,
}

impl Vectors {
    fn from_spec() -> Self {
        Self {
            values: parse_vectors(include_str!("../proto-spec.md")),
            read: RefCell::new(BTreeSet::new()),
        }
    }

    fn get(&self, name: &str) -> &[u8] {
        self.read.borrow_mut().insert(name.to_owned());
        self.values
            .get(name)
            .unwrap_or_else(|| panic!("proto-spec.md has no vector {name}"))
    }

    fn array<const N: usize>(&self, name: &str) -> [u8; N] {
        let bytes = self.get(name);
        bytes
            .try_into()
            .unwrap_or_else(|_| panic!("vector {name} has {} bytes, not {N}", bytes.len()))
    }

    /// Asserts that vector `name` is exactly `computed`.
    fn check(&self, name: &str, computed: &[u8]) {
        self.read.borrow_mut().insert(name.to_owned());
        let expected = self.values.get(name).unwrap_or_else(|| {
            panic!(
                "proto-spec.md has no vector {name}; computed {}",
                hex::encode(computed)
            )
        });
        assert_eq!(
            hex::encode(expected),
            hex::encode(computed),
            "vector {name} disagrees with the implementation"
        );
    }

    /// The frame a vector holds, cut by the frame codec (which must use it
    /// up exactly).
    fn frame(&self, name: &str) -> Frame {
        let mut buf = BytesMut::from(self.get(name));
        let frame = FrameCodec::new()
            .decode(&mut buf)
            .unwrap_or_else(|e| panic!("vector {name} is not a frame: {e}"))
            .unwrap_or_else(|| panic!("vector {name} is not a whole frame"));
        assert!(buf.is_empty(), "vector {name} has bytes after its frame");
        frame
    }
}

/// The test-only PKI of §12.4.
struct FuzzPki {
    ca: &'static [u8],
    server: &'static [u8],
    server_key: &'static [u8],
    device: &'static [u8],
    device_key: &'static [u8],
}

const FUZZ_PKI: FuzzPki = FuzzPki {
    ca: include_bytes!("data/fuzz-pki/ca.der"),
    server: include_bytes!("data/fuzz-pki/server.der"),
    server_key: include_bytes!("data/fuzz-pki/server.key.der"),
    device: include_bytes!("data/fuzz-pki/device.der"),
    device_key: include_bytes!("data/fuzz-pki/device.key.der"),
};

/// 2030-01-01T00:00:00Z, inside the validity of the fixed PKI.
fn pki_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_893_456_000)
}

/// A random source that hands out given byte strings in order, so that the
/// handshake's nonces are the vector's.
struct Scripted(Mutex<Vec<Vec<u8>>>);

impl SecureRandom for Scripted {
    fn fill(&self, dest: &mut [u8]) -> Result<(), CryptoError> {
        let mut script = self.0.lock().unwrap();
        assert!(
            !script.is_empty(),
            "more randomness asked for than scripted"
        );
        let next = script.remove(0);
        assert_eq!(
            next.len(),
            dest.len(),
            "randomness of another length asked for"
        );
        dest.copy_from_slice(&next);
        Ok(())
    }
}

/// A provider with `backend`'s RSA and a random source that returns
/// `script` in order.
fn scripted(backend: &'static CryptoProvider, script: Vec<Vec<u8>>) -> &'static CryptoProvider {
    Box::leak(Box::new(CryptoProvider {
        name: backend.name,
        rsa: backend.rsa,
        random: Box::leak(Box::new(Scripted(Mutex::new(script)))),
    }))
}

fn key_schedule(vs: &Vectors) {
    let pre_master = PreMaster::from_bytes(vs.array("pre_master"));
    let nonce_d = vs.array("nonce_device");
    let nonce_s = vs.array("nonce_server");
    let th = vs.array("transcript_hash");

    let prk = kdf::extract(&pre_master, &nonce_d, &nonce_s);
    vs.check("prk", &*prk);
    let keys = kdf::expand(&prk, &th);
    vs.check("d2s_enc_key", &keys.device_to_server.enc);
    vs.check("d2s_mac_key", &keys.device_to_server.mac);
    vs.check("d2s_iv_key", &keys.device_to_server.iv);
    vs.check("s2d_enc_key", &keys.server_to_device.enc);
    vs.check("s2d_mac_key", &keys.server_to_device.mac);
    vs.check("s2d_iv_key", &keys.server_to_device.iv);
    vs.check("device_finished_key", &keys.device_finished);
    vs.check("server_finished_key", &keys.server_finished);
    vs.check(
        "device_verify_data",
        &kdf::finished_mac(&keys.device_finished, &th),
    );
    vs.check(
        "server_verify_data",
        &kdf::finished_mac(&keys.server_finished, &th),
    );
}

fn sealed_records(vs: &Vectors) {
    let th = vs.array("transcript_hash");
    let keys = kdf::derive(
        &PreMaster::from_bytes(vs.array("pre_master")),
        &vs.array("nonce_device"),
        &vs.array("nonce_server"),
        &th,
    );

    // Record 0: the device's FINI. Record 1: a SECX.
    let mut writer = RecordWriter::new(&keys.device_to_server);
    let fini_plain = Message::Fini(Fini {
        verify_data: kdf::finished_mac(&keys.device_finished, &th),
    })
    .to_body();
    let fini = writer.seal_frame(FrameKind::FINI, &fini_plain).unwrap();
    vs.check("fini_record", &fini.to_wire());

    let secx = Message::Secx(Secx {
        stream: StreamId(1),
        text: "hello, secured".into(),
    })
    .to_body();
    vs.check("secx_plaintext", &secx);
    vs.check("secx_iv", &Sealer::new(&keys.device_to_server).iv_for(1));
    let record = writer.seal_frame(FrameKind::SECX, &secx).unwrap();
    vs.check("secx_record", &record.to_wire());
    assert_eq!(
        &record.to_wire()[..8],
        &header(FrameKind::SECX, record.body.len())
    );

    // And the other direction of the same bytes: the receiver opens them.
    let mut reader = RecordReader::new(&keys.device_to_server);
    assert_eq!(
        &reader.open(vs.frame("fini_record")).unwrap()[..],
        &fini_plain[..]
    );
    assert_eq!(
        &reader.open(vs.frame("secx_record")).unwrap()[..],
        &secx[..]
    );
}

/// Decodes `body` as a message of type `kind`, checks that it is `expected`
/// and that it encodes back to exactly `body`.
fn decodes_to(kind: FrameKind, body: &[u8], expected: &Message) {
    decodes_in(1, kind, body, expected);
}

/// The vector decodes, in a session of `version`, to `expected` and
/// encodes back to itself.
fn decodes_in(version: u16, kind: FrameKind, body: &[u8], expected: &Message) {
    let decoded = Message::decode_in(version, kind, body).expect("the vector decodes");
    assert_eq!(&decoded, expected);
    assert_eq!(
        decoded.to_body(),
        body,
        "{kind} does not re-encode to the vector"
    );
}

fn file_stream(vs: &Vectors) {
    let content = b"hello, image";
    let stream = StreamId(3);
    let content_hash = sha256(&[content]);
    vs.check("file_content_hash", &content_hash);
    let digest = secured::transfer::file_digest(
        MediaKind::Image,
        content.len() as u64,
        "hello.png",
        "image/png",
        &content_hash,
    );
    vs.check("file_digest", &digest);

    let open = Message::Imgx(Imgx::Open(ImgxOpen {
        stream,
        kind: MediaKind::Image,
        size: content.len() as u64,
        name: "hello.png".into(),
        content_type: "image/png".into(),
        sharing: None,
    }));
    vs.check("imgx_open_plaintext", &open.to_body());
    decodes_to(FrameKind::IMGX, vs.get("imgx_open_plaintext"), &open);

    let data = Message::Imgx(Imgx::Data {
        stream,
        chunk: bytes::Bytes::from_static(content),
    });
    vs.check("imgx_data_plaintext", &data.to_body());
    decodes_to(FrameKind::IMGX, vs.get("imgx_data_plaintext"), &data);

    // DONE carries a recorded signature: it must verify under the device
    // certificate's key over the file digest, with every backend.
    let done = vs.get("imgx_done_plaintext");
    let Ok(Message::Imgx(Imgx::Done {
        stream: done_stream,
        signature,
    })) = Message::decode(FrameKind::IMGX, done)
    else {
        panic!("imgx_done_plaintext is not an IMGX DONE");
    };
    assert_eq!(done_stream, stream);
    for provider in providers() {
        let device = device_peer(provider);
        device
            .public_key()
            .pss_verify_digest(&digest, &signature)
            .unwrap_or_else(|_| panic!("the DONE signature does not verify ({})", provider.name));
        let mut other = digest;
        other[0] ^= 1;
        assert_eq!(
            device.public_key().pss_verify_digest(&other, &signature),
            Err(secured::crypto::CryptoError::BadSignature)
        );
    }
    let done_msg = Message::Imgx(Imgx::Done { stream, signature });
    decodes_to(FrameKind::IMGX, done, &done_msg);

    let mut detail = content_hash.to_vec();
    detail.extend_from_slice(b"hello.png");
    let ack = Message::Ack(Ack {
        stream,
        status: AckStatus::Ok,
        detail,
    });
    vs.check("ack_plaintext", &ack.to_body());
    decodes_to(FrameKind::ACK, vs.get("ack_plaintext"), &ack);
}

fn encodings(vs: &Vectors) {
    let nonce: [u8; 32] = std::array::from_fn(|i| i as u8);
    let helo = Message::Helo(Helo {
        role: HeloRole::Device,
        versions: vec![2, 1],
        nonce,
        cert_der: vec![0x30, 0x03, 0x02, 0x01, 0x07],
        extensions: vec![Extension {
            kind: 0xfe01,
            data: vec![1, 2, 3],
        }],
    });
    vs.check("helo_frame", &helo.to_plain_frame().to_wire());
    let frame = vs.frame("helo_frame");
    decodes_to(frame.kind, &frame.body, &helo);

    let prem = Message::Prem(Prem {
        encrypted_pre_master: (0..=255).collect(),
        device_signature: (0..=255).rev().collect(),
    });
    vs.check("prem_frame", &prem.to_plain_frame().to_wire());
    let frame = vs.frame("prem_frame");
    decodes_to(frame.kind, &frame.body, &prem);

    let alert = Message::Alert(AlertCode::HandshakeFailure);
    vs.check("alrt_frame", &alert.to_plain_frame().to_wire());
    let frame = vs.frame("alrt_frame");
    decodes_to(frame.kind, &frame.body, &alert);
}

/// The device certificate of the fixed PKI, verified with `provider`.
fn device_peer(provider: &'static CryptoProvider) -> secured::pki::CertifiedPeer {
    let anchor = TrustAnchor::from_der(FUZZ_PKI.ca, provider).unwrap();
    verify_peer(&anchor, FUZZ_PKI.device, Role::Device, None, pki_time()).unwrap()
}

fn server_config(provider: &'static CryptoProvider) -> ServerConfig {
    ServerConfig {
        identity: Arc::new(
            Identity::from_der(FUZZ_PKI.server.to_vec(), FUZZ_PKI.server_key, provider).unwrap(),
        ),
        anchor: Arc::new(TrustAnchor::from_der(FUZZ_PKI.ca, provider).unwrap()),
        provider,
        versions: &[secured::message::PROTOCOL_VERSION],
    }
}

fn device_config(provider: &'static CryptoProvider) -> DeviceConfig {
    DeviceConfig {
        identity: Arc::new(
            Identity::from_der(FUZZ_PKI.device.to_vec(), FUZZ_PKI.device_key, provider).unwrap(),
        ),
        anchor: Arc::new(TrustAnchor::from_der(FUZZ_PKI.ca, provider).unwrap()),
        server_name: ServerName::Dns("localhost".into()),
        provider,
        // §12.4 is a version 1 handshake.
        versions: &[secured::message::PROTOCOL_VERSION],
    }
}

fn handshake(vs: &Vectors, backend: &'static CryptoProvider) {
    vs.check("hs_ca_der_sha256", &sha256(&[FUZZ_PKI.ca]));
    vs.check("hs_server_der_sha256", &sha256(&[FUZZ_PKI.server]));
    vs.check("hs_server_key_der_sha256", &sha256(&[FUZZ_PKI.server_key]));
    vs.check("hs_device_der_sha256", &sha256(&[FUZZ_PKI.device]));
    vs.check("hs_device_key_der_sha256", &sha256(&[FUZZ_PKI.device_key]));
    let nonce_d: [u8; 32] = vs.array("hs_nonce_device");
    let nonce_s: [u8; 32] = vs.array("hs_nonce_server");
    let pre_master: [u8; 32] = vs.array("hs_pre_master");

    // The HELOs, from their fields.
    let helo = |role, nonce, cert: &[u8]| {
        Message::Helo(Helo {
            role,
            versions: vec![1],
            nonce,
            cert_der: cert.to_vec(),
            extensions: Vec::new(),
        })
        .to_plain_frame()
        .to_wire()
    };
    let device_helo = helo(HeloRole::Device, nonce_d, FUZZ_PKI.device);
    let server_helo = helo(HeloRole::Server, nonce_s, FUZZ_PKI.server);
    vs.check("hs_device_helo", &device_helo);
    vs.check("hs_server_helo", &server_helo);
    let hellos_hash = sha256(&[&device_helo, &server_helo]);
    vs.check("hs_hellos_hash", &hellos_hash);

    // The recorded PREM: the proof it signs, its signature, its secret.
    let prem_frame = vs.frame("hs_prem");
    let Ok(Message::Prem(prem)) = Message::decode(FrameKind::PREM, &prem_frame.body) else {
        panic!("hs_prem is not a PREM");
    };
    let proof = [
        DEVICE_PROOF_CONTEXT,
        &hellos_hash,
        &sha256(&[&prem.encrypted_pre_master]),
    ]
    .concat();
    assert_eq!(DEVICE_PROOF_CONTEXT, b"secured/1 device proof\0");
    vs.check("hs_device_proof", &proof);
    assert_eq!(
        device_proof_input(&hellos_hash, &prem.encrypted_pre_master),
        proof
    );
    device_peer(backend)
        .public_key()
        .pss_verify(&proof, &prem.device_signature)
        .expect("the recorded device signature verifies over the proof");
    let server_key = backend.rsa.load_private_key(FUZZ_PKI.server_key).unwrap();
    let decrypted = server_key
        .oaep_decrypt(&prem.encrypted_pre_master)
        .expect("the recorded pre-master decrypts");
    assert_eq!(decrypted.as_slice(), &pre_master);
    let unwrapped = unwrap_premaster(
        server_key.as_ref(),
        &prem.encrypted_pre_master,
        PreMaster::from_bytes([0; 32]),
    );
    assert_eq!(unwrapped.as_bytes(), &pre_master);

    // The transcript and the key schedule.
    let th = sha256(&[&device_helo, &server_helo, &prem_frame.to_wire()]);
    vs.check("hs_transcript_hash", &th);
    let prk = kdf::extract(&PreMaster::from_bytes(pre_master), &nonce_d, &nonce_s);
    vs.check("hs_prk", &*prk);
    let keys = kdf::expand(&prk, &th);
    vs.check("hs_d2s_enc_key", &keys.device_to_server.enc);
    vs.check("hs_d2s_mac_key", &keys.device_to_server.mac);
    vs.check("hs_d2s_iv_key", &keys.device_to_server.iv);
    vs.check("hs_s2d_enc_key", &keys.server_to_device.enc);
    vs.check("hs_s2d_mac_key", &keys.server_to_device.mac);
    vs.check("hs_s2d_iv_key", &keys.server_to_device.iv);
    vs.check("hs_device_finished_key", &keys.device_finished);
    vs.check("hs_server_finished_key", &keys.server_finished);
    let device_vd = kdf::finished_mac(&keys.device_finished, &th);
    let server_vd = kdf::finished_mac(&keys.server_finished, &th);
    vs.check("hs_device_verify_data", &device_vd);
    vs.check("hs_server_verify_data", &server_vd);
    let device_fini = RecordWriter::new(&keys.device_to_server)
        .seal_frame(FrameKind::FINI, &device_vd)
        .unwrap();
    vs.check("hs_device_fini", &device_fini.to_wire());
    let server_fini = RecordWriter::new(&keys.server_to_device)
        .seal_frame(FrameKind::FINI, &server_vd)
        .unwrap();
    vs.check("hs_server_fini", &server_fini.to_wire());

    // The implementation's own handshake on these frames. The device side
    // makes exactly the vector's HELO from its nonce (its PREM is random)
    // and accepts the server's HELO.
    let device = scripted(backend, vec![nonce_d.to_vec(), vec![0x77; 32]]);
    let (state, helo) = DeviceStart::new(device_config(device)).start().unwrap();
    assert_eq!(helo.to_wire(), vs.get("hs_device_helo"));
    state
        .handle(vs.frame("hs_server_helo"), pki_time())
        .expect("the device accepts the server HELO");
    // The server side answers exactly the vector's HELO and FINI. Its
    // second draw is the fallback secret of implicit rejection, unused here.
    let server = scripted(backend, vec![nonce_s.to_vec(), vec![0x55; 32]]);
    let (state, reply) = ExpectDeviceHelo::new(server_config(server))
        .handle(vs.frame("hs_device_helo"), pki_time())
        .unwrap();
    assert_eq!(reply.to_wire(), vs.get("hs_server_helo"));
    let state = state.handle(vs.frame("hs_prem")).unwrap();
    let (established, fini) = state.handle(vs.frame("hs_device_fini")).unwrap();
    assert_eq!(fini.to_wire(), vs.get("hs_server_fini"));
    assert_eq!(established.peer.name(), "device-1");
}

/// §13.11: a version 2 upload and the messages of listings, downloads and
/// notices, with the file of §12.2.
fn version_2(vs: &Vectors) {
    let content = b"hello, image";
    let content_hash = sha256(&[content]);
    let scope = Scope::devices(["phone", "device-2"]).unwrap();
    let mut scope_bytes = Vec::new();
    scope.encode(&mut scope_bytes);
    vs.check("v2_scope", &scope_bytes);
    let sharing = Sharing {
        signed_at: 1_893_456_000,
        scope: scope.clone(),
    };
    let digest = secured::transfer::file_digest_v2(
        MediaKind::Image,
        content.len() as u64,
        "hello.png",
        "image/png",
        &sharing,
        &content_hash,
    );
    vs.check("v2_file_digest", &digest);
    let open = Message::Imgx(Imgx::Open(ImgxOpen {
        stream: StreamId(3),
        kind: MediaKind::Image,
        size: content.len() as u64,
        name: "hello.png".into(),
        content_type: "image/png".into(),
        sharing: Some(sharing),
    }));
    vs.check("v2_imgx_open_plaintext", &open.to_body());
    decodes_in(2, FrameKind::IMGX, vs.get("v2_imgx_open_plaintext"), &open);

    let info = FileInfo {
        id: 0x1122_3344_5566_7788,
        owner: "device-1".into(),
        name: "hello.png".into(),
        stored_as: "hello (1).png".into(),
        kind: MediaKind::Image,
        size: content.len() as u64,
        content_type: "image/png".into(),
        sha256: content_hash,
        signed_at: 1_893_456_000,
        stored_at: 1_893_456_000_250,
        scope,
    };
    let list = Message::List(List {
        stream: StreamId(5),
        owner: Some("device-1".into()),
    });
    vs.check("v2_list_plaintext", &list.to_body());
    decodes_in(2, FrameKind::LIST, vs.get("v2_list_plaintext"), &list);
    let entr = Message::Entr(Box::new(Entr {
        stream: StreamId(5),
        info: info.clone(),
    }));
    vs.check("v2_entr_plaintext", &entr.to_body());
    decodes_in(2, FrameKind::ENTR, vs.get("v2_entr_plaintext"), &entr);
    let ftch = Message::Ftch(Ftch {
        stream: StreamId(7),
        id: info.id,
    });
    vs.check("v2_ftch_plaintext", &ftch.to_body());
    decodes_in(2, FrameKind::FTCH, vs.get("v2_ftch_plaintext"), &ftch);

    // FILE HEAD carries the recorded signature of device-1 (§12.4's device
    // key) over the digest: it verifies, and with the real certificate in
    // place of the stand-in a downloader accepts the file.
    let head_body = vs.get("v2_file_head_plaintext");
    let Ok(Message::File(FileMsg::Head(head))) = Message::decode_in(2, FrameKind::FILE, head_body)
    else {
        panic!("v2_file_head_plaintext is not a FILE HEAD");
    };
    assert_eq!(head.info, info);
    assert_eq!(head.certificate, [0x30, 0x03, 0x02, 0x01, 0x07]);
    decodes_in(
        2,
        FrameKind::FILE,
        head_body,
        &Message::File(FileMsg::Head(head.clone())),
    );
    assert_eq!(secured::client::signed_digest(&head), digest);
    for provider in providers() {
        let mut real = (*head).clone();
        real.certificate = FUZZ_PKI.device.to_vec();
        let anchor = TrustAnchor::from_der(FUZZ_PKI.ca, provider).unwrap();
        let signer = secured::client::verify_head(&real, &anchor, &[], "device-2").unwrap();
        secured::client::verify_content(&real, &signer, content.len() as u64, &content_hash)
            .unwrap_or_else(|e| {
                panic!(
                    "the FILE HEAD signature does not verify ({}): {e}",
                    provider.name
                )
            });
        // Not in the signed scope: refused.
        assert!(secured::client::verify_head(&real, &anchor, &[], "device-3").is_err());
    }
    let data = Message::File(FileMsg::Data {
        stream: StreamId(7),
        chunk: bytes::Bytes::from_static(content),
    });
    vs.check("v2_file_data_plaintext", &data.to_body());
    decodes_in(2, FrameKind::FILE, vs.get("v2_file_data_plaintext"), &data);

    let wtch = Message::Wtch(Wtch {
        stream: StreamId(9),
        from: WatchFrom::After(41),
    });
    vs.check("v2_wtch_plaintext", &wtch.to_body());
    decodes_in(2, FrameKind::WTCH, vs.get("v2_wtch_plaintext"), &wtch);
    let mut detail = 42u64.to_be_bytes().to_vec();
    detail.extend_from_slice(&7u64.to_be_bytes());
    let watch_ack = Message::Ack(Ack {
        stream: StreamId(9),
        status: AckStatus::Ok,
        detail,
    });
    vs.check("v2_wtch_ack_plaintext", &watch_ack.to_body());
    let note = Message::Note(Box::new(Note {
        stream: StreamId(9),
        event: 42,
        info,
    }));
    vs.check("v2_note_plaintext", &note.to_body());
    decodes_in(2, FrameKind::NOTE, vs.get("v2_note_plaintext"), &note);
    let ping = Message::Ping(0x0102_0304_0506_0708);
    vs.check("v2_ping_plaintext", &ping.to_body());
    decodes_in(2, FrameKind::PING, vs.get("v2_ping_plaintext"), &ping);
}

/// §14.8: the enrollment token, its key and proof, and the version 3
/// messages.
fn version_3(vs: &Vectors) {
    use secured::crypto::token::{enroll_proof, token_key};
    use secured::message::{CertMsg, Enrq, Rnew, chain_extension};
    use secured::pki::EnrollmentToken;

    let id: [u8; 16] = std::array::from_fn(|i| i as u8);
    let secret: [u8; 32] = std::array::from_fn(|i| 0x20 + i as u8);
    let root = [0x30, 0x03, 0x02, 0x01, 0x07];
    let fingerprint = sha256(&[&root]);
    vs.check("v3_root_fingerprint", &fingerprint);
    let token = EnrollmentToken {
        id,
        secret: zeroize::Zeroizing::new(secret),
        root_fingerprint: fingerprint,
        name: "cam-7".to_owned(),
    };
    let mut raw = Vec::new();
    raw.extend_from_slice(&id);
    raw.extend_from_slice(&secret);
    raw.extend_from_slice(&fingerprint);
    raw.extend_from_slice(b"cam-7");
    vs.check("v3_token_bytes", &raw);
    let spec = include_str!("../proto-spec.md");
    let text_line = spec
        .lines()
        .find(|l| l.starts_with("st1.A"))
        .expect("the spec shows the token's text");
    assert_eq!(token.to_text().as_str(), text_line);
    let parsed = EnrollmentToken::parse(text_line).unwrap();
    assert_eq!(
        (parsed.id, *parsed.secret, parsed.name.as_str()),
        (id, secret, "cam-7")
    );

    let key = token_key(&secret);
    vs.check("v3_token_key", key.as_ref());
    let th: [u8; 32] = std::array::from_fn(|i| 0x40 + i as u8);
    let request = [0x30, 0x03, 0x02, 0x01, 0x09];
    let proof = enroll_proof(&key, &th, &request);
    vs.check("v3_enroll_proof", &proof);

    let enrq = Message::Enrq(Enrq {
        stream: StreamId(1),
        token_id: id,
        proof,
    });
    vs.check("v3_enrq_plaintext", &enrq.to_body());
    decodes_in(3, FrameKind::ENRQ, vs.get("v3_enrq_plaintext"), &enrq);
    let rnew = Message::Rnew(Rnew {
        stream: StreamId(3),
        request: request.to_vec(),
    });
    vs.check("v3_rnew_plaintext", &rnew.to_body());
    decodes_in(3, FrameKind::RNEW, vs.get("v3_rnew_plaintext"), &rnew);
    let issuing = vec![0x30, 0x03, 0x02, 0x01, 0x0a];
    let cert = Message::Cert(CertMsg {
        stream: StreamId(1),
        certificate: vec![0x30, 0x03, 0x02, 0x01, 0x08],
        chain: vec![issuing.clone(), root.to_vec()],
    });
    vs.check("v3_cert_plaintext", &cert.to_body());
    decodes_in(3, FrameKind::CERT, vs.get("v3_cert_plaintext"), &cert);
    // Version 2 sessions do not know the version 3 types.
    assert!(matches!(
        Message::decode_in(2, FrameKind::CERT, vs.get("v3_cert_plaintext")).unwrap(),
        Message::Unknown { .. }
    ));

    let ext = chain_extension(std::slice::from_ref(&issuing)).unwrap();
    let mut block = ext.kind.to_be_bytes().to_vec();
    block.extend_from_slice(&(ext.data.len() as u16).to_be_bytes());
    block.extend_from_slice(&ext.data);
    vs.check("v3_chain_extensions", &block);
    let helo = Helo {
        role: HeloRole::Device,
        versions: vec![3],
        nonce: [0; 32],
        cert_der: vec![0x30, 0x03, 0x02, 0x01, 0x08],
        extensions: vec![ext],
    };
    assert_eq!(helo.chain().unwrap(), vec![issuing]);
}

#[test]
fn version_3_matches_the_spec() {
    version_3(&Vectors::from_spec());
}

#[test]
fn version_2_matches_the_spec() {
    version_2(&Vectors::from_spec());
}

#[test]
fn key_schedule_matches_the_spec() {
    key_schedule(&Vectors::from_spec());
}

#[test]
fn sealed_records_match_the_spec() {
    sealed_records(&Vectors::from_spec());
}

#[test]
fn file_stream_matches_the_spec() {
    file_stream(&Vectors::from_spec());
}

#[test]
fn encodings_match_the_spec() {
    encodings(&Vectors::from_spec());
}

/// §12.4 with every RSA backend compiled in.
#[test]
fn a_real_handshake_matches_the_spec() {
    let vs = Vectors::from_spec();
    for backend in providers() {
        handshake(&vs, backend);
    }
}

#[test]
fn every_vector_is_checked() {
    let vs = Vectors::from_spec();
    key_schedule(&vs);
    sealed_records(&vs);
    file_stream(&vs);
    encodings(&vs);
    version_2(&vs);
    version_3(&vs);
    handshake(&vs, secured::crypto::default_provider());
    let unread: Vec<&String> = vs
        .values
        .keys()
        .filter(|name| !vs.read.borrow().contains(*name))
        .collect();
    assert!(unread.is_empty(), "vectors no test checks: {unread:?}");
}

/// The parser refuses what would silently lose or corrupt a value.
#[test]
fn the_vector_format_is_strict() {
    let ok = "```vectors\na = 0102\n    0304\n\n# note\nb = ff\n```\n";
    let v = parse_vectors(ok);
    assert_eq!(v["a"], [1, 2, 3, 4]);
    assert_eq!(v["b"], [0xff]);
    for bad in [
        "```vectors\na = 01\na = 02\n```\n",
        "```vectors\na = 0g\n```\n",
        "```vectors\na = 010\n```\n",
        "```vectors\na = 01\n\n    02\n```\n",
        "```vectors\na = 01\n02\n```\n",
        "```vectors\nA b = 01\n```\n",
        "```vectors\na = 01\n",
    ] {
        assert!(
            std::panic::catch_unwind(|| parse_vectors(bad)).is_err(),
            "accepted {bad:?}"
        );
    }
}
