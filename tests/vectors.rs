//! The test vectors of proto-spec.md §12, read from the spec itself, so the
//! document and the implementation cannot drift apart.

use std::collections::BTreeMap;

use secured::crypto::PreMaster;
use secured::crypto::cipher::Sealer;
use secured::crypto::kdf;
use secured::frame::{FrameKind, header};
use secured::message::{Fini, Message, Secx, StreamId};
use secured::record::{RecordReader, RecordWriter};

/// `name = hex` lines of the ```vectors blocks in proto-spec.md.
fn spec_vectors() -> BTreeMap<String, Vec<u8>> {
    let spec = include_str!("../proto-spec.md");
    let mut out = BTreeMap::new();
    let mut inside = false;
    let mut current: Option<String> = None;
    for line in spec.lines() {
        let t = line.trim();
        if t.starts_with("```vectors") {
            inside = true;
            continue;
        }
        if inside && t.starts_with("```") {
            inside = false;
            current = None;
            continue;
        }
        if !inside || t.is_empty() || t.starts_with('#') {
            continue;
        }
        if let Some((name, value)) = t.split_once('=') {
            let name = name.trim().to_owned();
            let bytes = hex::decode(value.split_whitespace().collect::<String>())
                .unwrap_or_else(|e| panic!("vector {name}: {e}"));
            out.insert(name.clone(), bytes);
            current = Some(name);
        } else if let Some(name) = &current {
            // Continuation line of a long value.
            let more = hex::decode(t.split_whitespace().collect::<String>())
                .unwrap_or_else(|e| panic!("vector {name}: {e}"));
            out.get_mut(name).expect("current vector").extend(more);
        }
    }
    out
}

fn v<const N: usize>(vectors: &BTreeMap<String, Vec<u8>>, name: &str) -> [u8; N] {
    let bytes = vectors
        .get(name)
        .unwrap_or_else(|| panic!("proto-spec.md has no vector {name}"));
    bytes
        .as_slice()
        .try_into()
        .unwrap_or_else(|_| panic!("vector {name} has {} bytes, not {N}", bytes.len()))
}

fn check(vectors: &BTreeMap<String, Vec<u8>>, name: &str, computed: &[u8]) {
    let expected = vectors.get(name).unwrap_or_else(|| {
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

#[test]
fn key_schedule_matches_the_spec() {
    let vs = spec_vectors();
    let pre_master = PreMaster::from_bytes(v(&vs, "pre_master"));
    let nonce_d = v(&vs, "nonce_device");
    let nonce_s = v(&vs, "nonce_server");
    let th = v(&vs, "transcript_hash");

    let prk = kdf::extract(&pre_master, &nonce_d, &nonce_s);
    check(&vs, "prk", &*prk);
    let keys = kdf::expand(&prk, &th);
    check(&vs, "d2s_enc_key", &keys.device_to_server.enc);
    check(&vs, "d2s_mac_key", &keys.device_to_server.mac);
    check(&vs, "d2s_iv_key", &keys.device_to_server.iv);
    check(&vs, "s2d_enc_key", &keys.server_to_device.enc);
    check(&vs, "s2d_mac_key", &keys.server_to_device.mac);
    check(&vs, "s2d_iv_key", &keys.server_to_device.iv);
    check(&vs, "device_finished_key", &keys.device_finished);
    check(&vs, "server_finished_key", &keys.server_finished);
    check(
        &vs,
        "device_verify_data",
        &kdf::finished_mac(&keys.device_finished, &th),
    );
    check(
        &vs,
        "server_verify_data",
        &kdf::finished_mac(&keys.server_finished, &th),
    );
}

#[test]
fn file_digest_matches_the_spec() {
    let vs = spec_vectors();
    let content = b"hello, image";
    let content_hash = secured::crypto::hash::sha256(&[content]);
    check(&vs, "file_content_hash", &content_hash);
    let digest = secured::transfer::file_digest(
        secured::message::MediaKind::Image,
        content.len() as u64,
        "hello.png",
        "image/png",
        &content_hash,
    );
    check(&vs, "file_digest", &digest);
    let open = Message::Imgx(secured::message::Imgx::Open(secured::message::ImgxOpen {
        stream: StreamId(3),
        kind: secured::message::MediaKind::Image,
        size: content.len() as u64,
        name: "hello.png".into(),
        content_type: "image/png".into(),
    }))
    .to_body();
    check(&vs, "imgx_open_plaintext", &open);
}

#[test]
fn sealed_records_match_the_spec() {
    let vs = spec_vectors();
    let keys = kdf::derive(
        &PreMaster::from_bytes(v(&vs, "pre_master")),
        &v(&vs, "nonce_device"),
        &v(&vs, "nonce_server"),
        &v(&vs, "transcript_hash"),
    );
    let th = v(&vs, "transcript_hash");

    // Record 0: the device's FINI. Record 1: a SECX.
    let mut writer = RecordWriter::new(&keys.device_to_server);
    let fini_plain = Message::Fini(Fini {
        verify_data: kdf::finished_mac(&keys.device_finished, &th),
    })
    .to_body();
    let fini = writer.seal_frame(FrameKind::FINI, &fini_plain).unwrap();
    check(&vs, "fini_record", &fini.to_wire());

    let secx = Message::Secx(Secx {
        stream: StreamId(1),
        text: "hello, secured".into(),
    })
    .to_body();
    check(&vs, "secx_plaintext", &secx);
    check(
        &vs,
        "secx_iv",
        &Sealer::new(&keys.device_to_server).iv_for(1),
    );
    let record = writer.seal_frame(FrameKind::SECX, &secx).unwrap();
    check(&vs, "secx_record", &record.to_wire());
    assert_eq!(
        &record.to_wire()[..8],
        &header(FrameKind::SECX, record.body.len())
    );

    // And the other direction of the same bytes: the receiver opens them.
    let mut reader = RecordReader::new(&keys.device_to_server);
    assert_eq!(&reader.open(fini).unwrap()[..], &fini_plain[..]);
    assert_eq!(&reader.open(record).unwrap()[..], &secx[..]);
}
