//! CPU cost of a full handshake, split by step, per crypto backend:
//! `cargo bench --bench handshake`.
//!
//! A mutually authenticated handshake costs one RSA private-key operation on
//! each side (the server's OAEP decryption, the device's PSS signature) and
//! a few public-key operations (certificate signatures, OAEP encryption,
//! the device proof's verification).

use std::hint::black_box;
use std::time::SystemTime;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use secured::crypto::{PreMaster, providers, unwrap_premaster};
use secured::handshake::{DeviceStart, ExpectDeviceHelo};
use secured::pki::{Role, ServerName, TrustAnchor, verify_peer};
use secured::testkit::pki;

fn bench_steps(c: &mut Criterion) {
    let p = pki();
    let mut group = c.benchmark_group("handshake_step");
    for provider in providers() {
        let name = provider.name;
        let server_key = p.server.identity_with(provider).key().clone();
        let device_key = p.device.identity_with(provider).key().clone();
        let server_pub = server_key.public_key();
        let device_pub = device_key.public_key();
        let ct = server_pub.oaep_encrypt(&[7u8; 32]).expect("encrypt");
        let sig = device_key.pss_sign(b"proof").expect("sign");

        group.bench_function(BenchmarkId::new("oaep_decrypt", name), |b| {
            b.iter(|| {
                black_box(unwrap_premaster(
                    server_key.as_ref(),
                    black_box(&ct),
                    PreMaster::from_bytes([0; 32]),
                ))
            });
        });
        group.bench_function(BenchmarkId::new("oaep_encrypt", name), |b| {
            b.iter(|| black_box(server_pub.oaep_encrypt(&[7u8; 32]).expect("encrypt")));
        });
        group.bench_function(BenchmarkId::new("pss_sign", name), |b| {
            b.iter(|| black_box(device_key.pss_sign(b"proof").expect("sign")));
        });
        group.bench_function(BenchmarkId::new("pss_verify", name), |b| {
            b.iter(|| {
                device_pub
                    .pss_verify(b"proof", black_box(&sig))
                    .expect("verify")
            });
        });
        let anchor = TrustAnchor::from_der(p.ca.cert_der(), provider).expect("anchor");
        let server_name = ServerName::Dns("localhost".into());
        group.bench_function(BenchmarkId::new("certificate_verify", name), |b| {
            b.iter(|| {
                black_box(
                    verify_peer(
                        &anchor,
                        black_box(&p.server.cert_der),
                        Role::Server,
                        Some(&server_name),
                        SystemTime::now(),
                    )
                    .expect("verify"),
                )
            });
        });
    }
    group.finish();
}

fn bench_full(c: &mut Criterion) {
    let p = pki();
    let mut group = c.benchmark_group("handshake_full");
    for provider in providers() {
        let device = p.device_config_with(provider);
        let server = p.server_config_with(provider);
        // Both sides in one thread: the CPU one handshake costs in total.
        group.bench_function(BenchmarkId::new("both_sides", provider.name), |b| {
            b.iter(|| {
                let now = SystemTime::now();
                let (d, helo) = DeviceStart::new(device.clone()).start().expect("start");
                let (s, reply) = ExpectDeviceHelo::new(server.clone())
                    .handle(helo, now)
                    .expect("helo");
                let (d, frames) = d.handle(reply, now).expect("server helo");
                let mut frames = frames.into_iter();
                let (prem, fini) = (frames.next().expect("prem"), frames.next().expect("fini"));
                let s = s.handle(prem).expect("prem");
                let (est, server_fini) = s.handle(fini).expect("fini");
                black_box((d.handle(server_fini).expect("server fini"), est))
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_steps, bench_full);
criterion_main!(benches);
