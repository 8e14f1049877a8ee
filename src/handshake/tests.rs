//! In-memory handshakes: the state machines driven without sockets, with a
//! hook that can alter any frame in flight.

use std::time::SystemTime;

use super::*;
use crate::crypto::default_provider;
use crate::frame::FrameKind;
use crate::message::{Prem, SUPPORTED_VERSIONS};
use crate::pki::Role;
use crate::testkit::{TestLeaf, TestPki, pki};

/// Which frame of the handshake, in wire order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    DeviceHelo,
    ServerHelo,
    Prem,
    DeviceFini,
    ServerFini,
}

/// Which side failed first, and how.
#[derive(Debug)]
enum Failure {
    Device(HandshakeError),
    Server(HandshakeError),
}

/// Runs a handshake, letting `alter` rewrite each frame before delivery.
fn run(
    device: DeviceConfig,
    server: ServerConfig,
    mut alter: impl FnMut(Step, &mut Frame),
) -> Result<(Established, Established), Failure> {
    let now = SystemTime::now();
    let (d, mut f) = DeviceStart::new(device).start().map_err(Failure::Device)?;
    alter(Step::DeviceHelo, &mut f);
    let (s, mut f) = ExpectDeviceHelo::new(server)
        .handle(f, now)
        .map_err(Failure::Server)?;
    alter(Step::ServerHelo, &mut f);
    let (d, frames) = d.handle(f, now).map_err(Failure::Device)?;
    let [mut prem, mut fini]: [Frame; 2] = frames.try_into().expect("PREM and FINI");
    alter(Step::Prem, &mut prem);
    let s = s.handle(prem).map_err(Failure::Server)?;
    alter(Step::DeviceFini, &mut fini);
    let (server_done, mut f) = s.handle(fini).map_err(Failure::Server)?;
    alter(Step::ServerFini, &mut f);
    let device_done = d.handle(f).map_err(Failure::Device)?;
    Ok((device_done, server_done))
}

#[test]
fn happy_path_yields_matching_record_layers() {
    let p = pki();
    let (mut d, mut s) = run(p.device_config(), p.server_config(), |_, _| {}).unwrap();
    assert_eq!(d.peer.name(), "localhost");
    assert_eq!(d.peer.role(), Role::Server);
    assert_eq!(s.peer.name(), "device-1");
    assert_eq!((d.version, s.version), (3, 3));
    // Both directions carry records; FINI used sequence number 0.
    assert_eq!(d.writer.next_seq(), 1);
    let rec = d.writer.seal_frame(FrameKind::SECX, b"up").unwrap();
    assert_eq!(&s.reader.open(rec).unwrap()[..], b"up");
    let rec = s.writer.seal_frame(FrameKind::ACK, b"down").unwrap();
    assert_eq!(&d.reader.open(rec).unwrap()[..], b"down");
}

#[test]
fn every_flipped_bit_position_class_fails_the_handshake() {
    let p = pki();
    for step in [
        Step::DeviceHelo,
        Step::ServerHelo,
        Step::Prem,
        Step::DeviceFini,
        Step::ServerFini,
    ] {
        // A bit in the first, middle and last byte of the body, and in the type.
        for pos in [0usize, 1, 2, 3] {
            let result = run(p.device_config(), p.server_config(), |at, f| {
                if at != step {
                    return;
                }
                let n = f.body.len();
                match pos {
                    0 => f.body[0] ^= 0x01,
                    1 => f.body[n / 2] ^= 0x10,
                    2 => f.body[n - 1] ^= 0x80,
                    _ => f.kind.0[0] ^= 0x20,
                }
            });
            assert!(
                result.is_err(),
                "tampering {step:?} at {pos} went unnoticed"
            );
        }
    }
}

#[test]
fn tampered_nonce_is_caught_by_the_device_proof() {
    // The device signs the hash of both HELOs, so the server sees that the
    // device's view of the server HELO differs from what it sent.
    let p = pki();
    let r = run(p.device_config(), p.server_config(), |at, f| {
        if at == Step::ServerHelo {
            // role(1) + count(1) + version(2) = offset 4 is the nonce.
            f.body[4] ^= 1;
        }
    });
    assert!(
        matches!(r, Err(Failure::Server(HandshakeError::BadDeviceProof))),
        "{r:?}"
    );
}

#[test]
fn device_without_its_private_key_is_refused() {
    // device-1's certificate with device-2's key: the certificate is valid,
    // but the PREM proof is made with the wrong key.
    let p = pki();
    let impostor = TestLeaf {
        cert_der: p.device.cert_der.clone(),
        key_der: p.device2.key_der.clone(),
    };
    // Identity::from_der refuses the mismatch, so build the config by hand.
    let wrong = crate::pki::Identity::from_der(
        impostor.cert_der.clone(),
        &impostor.key_der,
        default_provider(),
    );
    assert!(
        matches!(wrong, Err(crate::pki::PkiError::KeyMismatch { .. })),
        "a key that does not match must be refused locally: {:?}",
        wrong.err()
    );

    // Simulate a device that has the certificate but not the key: sign PREM
    // with another key by swapping the signature from a device-2 handshake.
    let r = run(p.device_config(), p.server_config(), |at, f| {
        if at == Step::Prem {
            let Ok(Message::Prem(mut prem)) = Message::decode(FrameKind::PREM, &f.body) else {
                panic!("PREM decodes");
            };
            prem.device_signature = p.device2.identity().key().pss_sign(b"anything").unwrap();
            *f = Message::Prem(prem).to_plain_frame();
        }
    });
    assert!(
        matches!(r, Err(Failure::Server(HandshakeError::BadDeviceProof))),
        "{r:?}"
    );
}

#[test]
fn undecryptable_pre_master_fails_only_at_finished() {
    // A well-signed PREM whose ciphertext is garbage: the server must go on
    // (implicit rejection) and fail when the device's FINI does not verify,
    // exactly as for a tampered FINI.
    let p = pki();
    let device = p.device.identity();
    let r = run(p.device_config(), p.server_config(), |at, f| {
        if at != Step::Prem {
            return;
        }
        let Ok(Message::Prem(mut prem)) = Message::decode(FrameKind::PREM, &f.body) else {
            panic!("PREM decodes");
        };
        prem.encrypted_pre_master = vec![0x42; prem.encrypted_pre_master.len()];
        let _ = &device;
        *f = Message::Prem(prem).to_plain_frame();
    });
    // The signature covered the old ciphertext, so the proof fails first;
    // re-sign to reach the decryption path.
    assert!(matches!(
        r,
        Err(Failure::Server(HandshakeError::BadDeviceProof))
    ));

    let now = SystemTime::now();
    let (_d, helo) = DeviceStart::new(p.device_config()).start().unwrap();
    let (s, server_helo) = ExpectDeviceHelo::new(p.server_config())
        .handle(helo.clone(), now)
        .unwrap();
    let mut t = crate::crypto::hash::Transcript::new();
    t.add(&helo.to_wire());
    t.add(&server_helo.to_wire());
    let ct = vec![0x42u8; 256];
    let sig = device
        .key()
        .pss_sign(&device_proof_input(&t.hash(), &ct))
        .unwrap();
    let prem = Message::Prem(Prem {
        encrypted_pre_master: ct,
        device_signature: sig,
    })
    .to_plain_frame();
    let s = s
        .handle(prem)
        .expect("server goes on after an undecryptable pre-master");
    let bogus_fini = crate::record::RecordWriter::new(&crate::crypto::kdf::DirectionKeys {
        enc: [0; 32],
        mac: [0; 32],
        iv: [0; 32],
    })
    .seal_frame(FrameKind::FINI, &[0u8; 32])
    .unwrap();
    assert!(matches!(
        s.handle(bogus_fini),
        Err(HandshakeError::FinishedFailed)
    ));
}

#[test]
fn server_without_its_key_cannot_finish() {
    // An impostor presents the real server certificate in its HELO but does
    // not hold its key: it cannot decrypt the pre-master, so whatever secret
    // it derives its keys from, its FINI fails the device's check. It skips
    // every server-side check (it would fail the device's FINI itself) and
    // answers with the best FINI it can make.
    let p = pki();
    let now = SystemTime::now();
    let (device, device_helo) = DeviceStart::new(p.device_config()).start().unwrap();
    let nonce_s = [0x5a; 32];
    let server_helo = Message::Helo(crate::message::Helo {
        role: crate::message::HeloRole::Server,
        versions: vec![crate::message::PROTOCOL_VERSION],
        nonce: nonce_s,
        cert_der: p.server.cert_der.clone(),
        extensions: Vec::new(),
    })
    .to_plain_frame();
    let (device, frames) = device.handle(server_helo.clone(), now).unwrap();
    let [prem, _device_fini]: [Frame; 2] = frames.try_into().unwrap();
    let Ok(Message::Helo(h)) = Message::decode(FrameKind::HELO, &device_helo.body) else {
        panic!("the device HELO decodes")
    };
    let th = sha256(&[
        &device_helo.to_wire(),
        &server_helo.to_wire(),
        &prem.to_wire(),
    ]);
    let keys = kdf::derive(
        &crate::crypto::PreMaster::from_bytes([0x42; 32]),
        &h.nonce,
        &nonce_s,
        &th,
    );
    let mut writer = RecordWriter::new(&keys.server_to_device);
    let fini = seal_finished(&mut writer, &keys.server_finished, &th).unwrap();
    let r = device.handle(fini);
    assert!(matches!(r, Err(HandshakeError::FinishedFailed)), "{r:?}");
}

#[test]
fn version_without_overlap_is_refused_with_protocol_version() {
    let p = pki();
    let r = run(p.device_config(), p.server_config(), |at, f| {
        if at == Step::DeviceHelo {
            let Ok(Message::Helo(mut h)) = Message::decode(FrameKind::HELO, &f.body) else {
                panic!()
            };
            h.versions = vec![4, 5];
            *f = Message::Helo(h).to_plain_frame();
        }
    });
    match r {
        Err(Failure::Server(e @ HandshakeError::ProtocolVersion { .. })) => {
            assert_eq!(e.alert(), Some(AlertCode::ProtocolVersion));
        }
        other => panic!("{other:?}"),
    }
}

/// proto-spec.md §5.2, §13.1: the server picks the first version in the
/// device's list that it speaks, so each side meets an older peer on
/// version 1.
#[test]
fn versions_are_negotiated_to_what_both_speak() {
    let p = pki();
    let v1: &'static [u16] = &[1];
    for (device, server, expect) in [(v1, SUPPORTED_VERSIONS, 1), (SUPPORTED_VERSIONS, v1, 1)] {
        let dc = DeviceConfig {
            versions: device,
            ..p.device_config()
        };
        let sc = ServerConfig {
            versions: server,
            ..p.server_config()
        };
        let (d, s) = run(dc, sc, |_, _| {}).unwrap();
        assert_eq!((d.version, s.version), (expect, expect));
    }
    // A device preferring 1 gets 1 even from a server that speaks 2.
    let dc = DeviceConfig {
        versions: &[1, 2],
        ..p.device_config()
    };
    let (d, _) = run(dc, p.server_config(), |_, _| {}).unwrap();
    assert_eq!(d.version, 1);
    // A server that answers a version the device did not offer is refused.
    let dc = DeviceConfig {
        versions: v1,
        ..p.device_config()
    };
    let r = run(dc, p.server_config(), |at, f| {
        if at == Step::ServerHelo {
            let Ok(Message::Helo(mut h)) = Message::decode(FrameKind::HELO, &f.body) else {
                panic!()
            };
            h.versions = vec![2];
            *f = Message::Helo(h).to_plain_frame();
        }
    });
    assert!(
        matches!(
            r,
            Err(Failure::Device(HandshakeError::ProtocolVersion { .. }))
        ),
        "{r:?}"
    );
}

#[test]
fn reflected_helo_is_refused() {
    let p = pki();
    let r = run(p.device_config(), p.server_config(), |at, f| {
        if at == Step::ServerHelo {
            f.body[0] = 1; // role = device
        }
    });
    assert!(matches!(r, Err(Failure::Device(HandshakeError::WrongRole))));
}

#[test]
fn certificate_checks_map_to_alerts() {
    let p = pki();
    // Device certificate from another CA.
    let r = run(
        p.device_config_as(p.other_device.identity()),
        p.server_config(),
        |_, _| {},
    );
    let Err(Failure::Server(e)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(e.alert(), Some(AlertCode::UnknownCa));

    // Expired device certificate.
    let expired = p.reissue(&p.device, Role::Device, "device-1", &[], TestPki::expired());
    let r = run(
        p.device_config_as(expired.identity()),
        p.server_config(),
        |_, _| {},
    );
    let Err(Failure::Server(e)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(e.alert(), Some(AlertCode::CertificateExpired));

    // A server certificate used by a device.
    let r = run(
        p.device_config_as(p.server.identity()),
        p.server_config(),
        |_, _| {},
    );
    let Err(Failure::Server(e)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(e.alert(), Some(AlertCode::CertificateRole));

    // Wrong server name.
    let mut cfg = p.device_config();
    cfg.server_name = "elsewhere.example".parse().unwrap();
    let r = run(cfg, p.server_config(), |_, _| {});
    let Err(Failure::Device(e)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(e.alert(), Some(AlertCode::CertificateRole));
}

#[test]
fn alerts_during_the_handshake_are_reported_as_peer_alerts() {
    let p = pki();
    let now = SystemTime::now();
    let (d, _) = DeviceStart::new(p.device_config()).start().unwrap();
    let alert = Message::Alert(AlertCode::UnknownCa).to_plain_frame();
    assert!(matches!(
        d.handle(alert, now),
        Err(HandshakeError::PeerAlert(AlertCode::UnknownCa))
    ));
}

#[test]
fn helo_with_garbage_is_a_decode_error() {
    let p = pki();
    let r = ExpectDeviceHelo::new(p.server_config())
        .handle(Frame::new(FrameKind::HELO, [1u8, 1, 0]), SystemTime::now());
    assert!(matches!(r, Err(HandshakeError::Decode(_))));
}

#[test]
fn every_pair_of_backends_completes_the_handshake() {
    let p = pki();
    for d in crate::crypto::providers() {
        for s in crate::crypto::providers() {
            let (mut dev, mut srv) =
                run(p.device_config_with(d), p.server_config_with(s), |_, _| {})
                    .unwrap_or_else(|e| panic!("device {} / server {}: {e:?}", d.name, s.name));
            let rec = dev.writer.seal_frame(FrameKind::SECX, b"across").unwrap();
            assert_eq!(&srv.reader.open(rec).unwrap()[..], b"across");
            // And every backend refuses a device proof made with the wrong key.
            let r = run(p.device_config_with(d), p.server_config_with(s), |at, f| {
                if at == Step::Prem {
                    let Ok(Message::Prem(mut prem)) = Message::decode(FrameKind::PREM, &f.body)
                    else {
                        panic!("PREM decodes");
                    };
                    prem.device_signature =
                        p.device2.identity_with(d).key().pss_sign(b"x").unwrap();
                    *f = Message::Prem(prem).to_plain_frame();
                }
            });
            assert!(matches!(
                r,
                Err(Failure::Server(HandshakeError::BadDeviceProof))
            ));
        }
    }
}

#[test]
fn every_backend_rejects_an_undecryptable_pre_master_implicitly() {
    let p = pki();
    for s in crate::crypto::providers() {
        let now = SystemTime::now();
        let (_d, helo) = DeviceStart::new(p.device_config()).start().unwrap();
        let (state, server_helo) = ExpectDeviceHelo::new(p.server_config_with(s))
            .handle(helo.clone(), now)
            .unwrap();
        let mut t = crate::crypto::hash::Transcript::new();
        t.add(&helo.to_wire());
        t.add(&server_helo.to_wire());
        let ct = vec![0x42u8; 256];
        let device = p.device.identity();
        let sig = device
            .key()
            .pss_sign(&device_proof_input(&t.hash(), &ct))
            .unwrap();
        let prem = Message::Prem(Prem {
            encrypted_pre_master: ct,
            device_signature: sig,
        })
        .to_plain_frame();
        let state = state
            .handle(prem)
            .unwrap_or_else(|e| panic!("{}: no implicit rejection: {e:?}", s.name));
        let bogus = crate::record::RecordWriter::new(&crate::crypto::kdf::DirectionKeys {
            enc: [0; 32],
            mac: [0; 32],
            iv: [0; 32],
        })
        .seal_frame(FrameKind::FINI, &[0u8; 32])
        .unwrap();
        assert!(matches!(
            state.handle(bogus),
            Err(HandshakeError::FinishedFailed)
        ));
    }
}
