//! Record layer and key schedule: `cargo bench --bench record`.
//!
//! Seal is AES-256-CBC encryption plus HMAC-SHA256 into the output buffer;
//! open is HMAC verification plus decryption in place. "1 MiB" is 1 MiB of
//! data sealed as 16 records of 64 KiB, the way a file travels.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use secured::crypto::PreMaster;
use secured::crypto::kdf::{self, DirectionKeys};
use secured::frame::{Frame, FrameKind};
use secured::record::{MAX_PLAINTEXT_LEN, RecordReader, RecordWriter};

fn keys() -> DirectionKeys {
    kdf::derive(
        &PreMaster::from_bytes([7; 32]),
        &[1; 32],
        &[2; 32],
        &[3; 32],
    )
    .device_to_server
    .clone()
}

const SIZES: [(usize, &str); 4] = [
    (1024, "1KiB"),
    (16 * 1024, "16KiB"),
    (64 * 1024, "64KiB"),
    (1024 * 1024, "1MiB"),
];

fn seal_all(writer: &mut RecordWriter, data: &[u8], out: &mut Vec<Frame>) {
    out.clear();
    for chunk in data.chunks(MAX_PLAINTEXT_LEN) {
        out.push(writer.seal_frame(FrameKind::IMGX, chunk).expect("seal"));
    }
}

fn bench_records(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    for (size, label) in SIZES {
        let data = vec![0x5au8; size];
        group.throughput(Throughput::Bytes(size as u64));

        group.bench_with_input(BenchmarkId::new("seal", label), &data, |b, data| {
            let mut writer = RecordWriter::new(&keys());
            let mut frames = Vec::new();
            b.iter(|| seal_all(&mut writer, black_box(data), &mut frames));
        });

        // Open needs fresh records each time (sequence numbers move on), so
        // a batch is sealed outside the timed part.
        group.bench_with_input(BenchmarkId::new("open", label), &data, |b, data| {
            b.iter_batched(
                || {
                    let mut writer = RecordWriter::new(&keys());
                    let mut frames = Vec::new();
                    seal_all(&mut writer, data, &mut frames);
                    (RecordReader::new(&keys()), frames)
                },
                |(mut reader, frames)| {
                    for f in frames {
                        black_box(reader.open(f).expect("open"));
                    }
                },
                criterion::BatchSize::PerIteration,
            );
        });

        group.bench_with_input(BenchmarkId::new("seal+open", label), &data, |b, data| {
            b.iter_batched(
                || (RecordWriter::new(&keys()), RecordReader::new(&keys())),
                |(mut writer, mut reader)| {
                    for chunk in data.chunks(MAX_PLAINTEXT_LEN) {
                        let f = writer.seal_frame(FrameKind::IMGX, chunk).expect("seal");
                        black_box(reader.open(f).expect("open"));
                    }
                },
                criterion::BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn bench_codec_path(c: &mut Criterion) {
    // The data path's real shape: sealing straight into the codec's buffer.
    use tokio_util::codec::Encoder;
    let mut group = c.benchmark_group("record_into_codec");
    let data = vec![0x5au8; MAX_PLAINTEXT_LEN];
    group.throughput(Throughput::Bytes(8 * data.len() as u64));
    group.bench_function("seal_batch_8x64KiB", |b| {
        let mut writer = RecordWriter::new(&keys());
        let mut codec = secured::frame::FrameCodec::new();
        let mut buf = BytesMut::with_capacity(9 * MAX_PLAINTEXT_LEN);
        let batch: Vec<&[u8]> = (0..8).map(|_| &data[..]).collect();
        b.iter(|| {
            buf.clear();
            let rec = writer.seal_batch(FrameKind::IMGX, &batch).expect("seal");
            codec.encode(rec, &mut buf).expect("encode");
            black_box(&buf);
        });
    });
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("seal_64KiB", |b| {
        let mut writer = RecordWriter::new(&keys());
        let mut codec = secured::frame::FrameCodec::new();
        let mut buf = BytesMut::with_capacity(2 * MAX_PLAINTEXT_LEN);
        b.iter(|| {
            buf.clear();
            let rec = writer.seal(FrameKind::IMGX, &data).expect("seal");
            codec.encode(rec, &mut buf).expect("encode");
            black_box(&buf);
        });
    });
    group.finish();
}

fn bench_kdf(c: &mut Criterion) {
    let pm = PreMaster::from_bytes([7; 32]);
    c.bench_function("kdf/derive", |b| {
        b.iter(|| black_box(kdf::derive(black_box(&pm), &[1; 32], &[2; 32], &[3; 32])));
    });
}

/// The primitives alone, as ceilings for the record numbers.
fn bench_primitives(c: &mut Criterion) {
    use aes::cipher::block_padding::NoPadding;
    use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
    use hmac::{KeyInit, Mac};
    use sha2::Digest;

    let mut group = c.benchmark_group("primitive");
    let mut data = vec![0x5au8; MAX_PLAINTEXT_LEN];
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("sha256_64KiB", |b| {
        b.iter(|| black_box(sha2::Sha256::digest(black_box(&data))));
    });
    group.bench_function("hmac_sha256_64KiB", |b| {
        let mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&[1; 32]).expect("key");
        b.iter(|| {
            let mut m = mac.clone();
            m.update(black_box(&data));
            black_box(m.finalize())
        });
    });
    group.bench_function("aes256cbc_encrypt_64KiB", |b| {
        b.iter(|| {
            let enc = cbc::Encryptor::<aes::Aes256Enc>::new(&[1; 32].into(), &[2; 16].into());
            black_box(
                enc.encrypt_padded::<NoPadding>(&mut data, MAX_PLAINTEXT_LEN)
                    .is_ok(),
            );
        });
    });
    group.bench_function("aes256cbc_decrypt_64KiB", |b| {
        b.iter(|| {
            let dec = cbc::Decryptor::<aes::Aes256Dec>::new(&[1; 32].into(), &[2; 16].into());
            black_box(dec.decrypt_padded::<NoPadding>(&mut data).is_ok());
        });
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_primitives,
    bench_records,
    bench_codec_path,
    bench_kdf
);
criterion_main!(benches);
