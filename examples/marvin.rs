//! Timing of the server's RSA unwrap, in the manner of tlsfuzzer's Marvin
//! analysis (proto-spec.md §5.3 and §11.2).
//!
//! Against a running `secured serve` on a loopback address, each sample is a
//! handshake up to `PREM`: the tool sends `HELO`, gets the server's, and
//! sends a `PREM` whose device proof verifies (the server decrypts only
//! after it) together with a `FINI` of garbage. Whatever the pre-master,
//! the server must then answer the same plaintext `ALRT handshake_failure`
//! at the same point; the sample is the time from sending `PREM` to that
//! alert. The `encrypted_pre_master` comes in six classes:
//!
//! * `valid`: RSA-OAEP-SHA256 of a random 32-byte secret;
//! * `valid2`: the same again, a control: it must show no difference from
//!   `valid`, or the measurement itself is not to be trusted;
//! * `label`: OAEP-SHA256 under a non-empty label, so the padding is wrong
//!   only in its label hash;
//! * `raw`: raw RSA of a random integer below 2^(8(k-1)), which is almost
//!   never OAEP at all (its first byte is not 0);
//! * `len31` and `len48`: valid OAEP of 31 and 48 bytes, the wrong length.
//!
//! Each round sends one sample of every class, in a random order, so that
//! drift and load on a shared machine affect all classes alike. The
//! analysis pairs the classes round by round: a sign test on the
//! differences from `valid`, and bootstrapped confidence intervals of the
//! differences of the median and of low quantiles (noise only ever adds
//! time, so the low quantiles see the least of it). Every class is compared
//! with `valid`, so tests and intervals are corrected for the number of
//! comparisons (Bonferroni: 95% for the family).
//!
//! ```text
//! cargo run --release --example marvin -- --server 127.0.0.1:7443 \
//!     --ca certs/ca.pem --cert certs/device-1.pem --key keys/device-1.key
//! ```
//!
//! `bench/marvin.sh` builds everything, makes a throwaway PKI and measures
//! both RSA backends of the server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use clap::Parser;
use der::{Decode, Encode};
use rsa::traits::PublicKeyParts;
use rsa::{BoxedUint, Oaep, pkcs8::DecodePublicKey, sha2::Sha256};
use secured::crypto::default_provider;
use secured::crypto::hash::sha256;
use secured::frame::{Frame, FrameCodec, FrameKind};
use secured::handshake::device_proof_input;
use secured::message::{AlertCode, Helo, HeloRole, Message, PROTOCOL_VERSION, Prem};
use secured::pki::{Identity, Role, ServerName, TrustAnchor, verify_peer};
use tokio_util::codec::Decoder;

/// The classes of `encrypted_pre_master`, `valid` first.
const CLASSES: [&str; 6] = ["valid", "valid2", "label", "raw", "len31", "len48"];
/// The class that is `valid` again.
const CONTROL: &str = "valid2";
/// Family-wise error rate of the verdict.
const ALPHA: f64 = 0.05;
/// Quantiles compared between classes.
const QUANTILES: [f64; 4] = [0.05, 0.10, 0.25, 0.50];

#[derive(Parser)]
#[command(about = "Times the server's RSA unwrap for valid and malformed pre-masters")]
struct Args {
    /// The server, on a loopback address.
    #[arg(long)]
    server: SocketAddr,
    /// The CA certificate (PEM).
    #[arg(long)]
    ca: PathBuf,
    /// The device certificate (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// The device key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// Rounds measured, each one sample of every class.
    #[arg(long, default_value_t = 2000)]
    rounds: usize,
    /// Rounds run first and not counted.
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// Bootstrap resamples for the confidence intervals.
    #[arg(long, default_value_t = 1000)]
    bootstrap: usize,
    /// A name for the report (the server's backend).
    #[arg(long, default_value = "server")]
    label: String,
    /// Also write the samples, one round per line and one column per class
    /// in seconds (the layout of tlsfuzzer's timing.csv).
    #[arg(long)]
    csv: Option<PathBuf>,
}

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let args = Args::parse();
    if !args.server.ip().is_loopback() {
        return Err("the server must be on a loopback address".into());
    }
    if args.rounds < 10 {
        return Err("at least 10 rounds".into());
    }
    let provider = default_provider();
    let device = Identity::load(&args.cert, &args.key, provider)?;
    let anchor = TrustAnchor::load(&args.ca, provider)?;
    let mut sampler = Sampler::new(&args, device, anchor)?;
    let mut random = Random::new();

    for _ in 0..args.warmup {
        for class in 0..CLASSES.len() {
            sampler.sample(class)?;
        }
    }
    let mut times = vec![Vec::with_capacity(args.rounds); CLASSES.len()];
    for round in 0..args.rounds {
        let mut order: Vec<usize> = (0..CLASSES.len()).collect();
        random.shuffle(&mut order);
        for class in order {
            times[class].push(sampler.sample(class)?.as_nanos() as f64 / 1000.0);
        }
        if (round + 1) % 500 == 0 {
            eprintln!("{}: {} of {} rounds", args.label, round + 1, args.rounds);
        }
    }
    if let Some(path) = &args.csv {
        write_csv(path, &times)?;
    }
    report(&args, &times, &mut random);
    Ok(())
}

/// Makes connections and times their `PREM`.
struct Sampler {
    server: SocketAddr,
    server_name: ServerName,
    device: Identity,
    anchor: TrustAnchor,
    /// The server's certificate and its key, from the first `HELO`.
    server_cert: Option<(Vec<u8>, rsa::PublicKey)>,
}

impl Sampler {
    fn new(args: &Args, device: Identity, anchor: TrustAnchor) -> Result<Self, Error> {
        Ok(Self {
            server: args.server,
            server_name: ServerName::Ip(args.server.ip()),
            device,
            anchor,
            server_cert: None,
        })
    }

    /// One handshake up to the alert; the time from `PREM` to the alert.
    fn sample(&mut self, class: usize) -> Result<Duration, Error> {
        let mut socket = TcpStream::connect(self.server)?;
        socket.set_nodelay(true)?;
        socket.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = FrameReader::default();

        let mut nonce = [0u8; 32];
        getrandom::fill(&mut nonce)?;
        let device_helo = Message::Helo(Helo {
            role: HeloRole::Device,
            versions: vec![PROTOCOL_VERSION],
            nonce,
            cert_der: self.device.cert_der().to_vec(),
            extensions: Vec::new(),
        })
        .to_plain_frame()
        .to_wire();
        socket.write_all(&device_helo)?;
        let server_helo = reader.next(&mut socket)?;
        let Ok(Message::Helo(helo)) = Message::decode(FrameKind::HELO, &server_helo.body) else {
            return Err(format!("expected the server HELO, got {server_helo:?}").into());
        };
        let server_key = self.server_key(&helo.cert_der)?;

        let encrypted_pre_master = encrypted_pre_master(class, server_key)?;
        let hellos = sha256(&[&device_helo, &server_helo.to_wire()]);
        let proof = device_proof_input(&hellos, &encrypted_pre_master);
        let device_signature = self.device.key().pss_sign(&proof)?;
        let mut flight = Message::Prem(Prem {
            encrypted_pre_master,
            device_signature,
        })
        .to_plain_frame()
        .to_wire();
        flight.extend_from_slice(&Frame::new(FrameKind::FINI, [0u8; 64]).to_wire());

        let start = Instant::now();
        socket.write_all(&flight)?;
        let answer = reader.next(&mut socket)?;
        let elapsed = start.elapsed();
        match Message::decode(answer.kind, &answer.body) {
            Ok(Message::Alert(AlertCode::HandshakeFailure)) if answer.body.len() == 2 => {
                Ok(elapsed)
            }
            _ => Err(format!(
                "class {}: expected a plaintext ALRT handshake_failure, got {answer:?}",
                CLASSES[class]
            )
            .into()),
        }
    }

    /// The server's key, verified once; every later `HELO` must carry the
    /// same certificate.
    fn server_key(&mut self, cert_der: &[u8]) -> Result<&rsa::PublicKey, Error> {
        if self.server_cert.is_none() {
            verify_peer(
                &self.anchor,
                cert_der,
                Role::Server,
                Some(&self.server_name),
                SystemTime::now(),
            )?;
            let cert = x509_cert::Certificate::from_der(cert_der)?;
            let spki = cert.tbs_certificate().subject_public_key_info().to_der()?;
            let key = rsa::PublicKey::from_public_key_der(&spki)?;
            self.server_cert = Some((cert_der.to_vec(), key));
        }
        match &self.server_cert {
            Some((known, key)) if known == cert_der => Ok(key),
            _ => Err("the server changed its certificate".into()),
        }
    }
}

/// An `encrypted_pre_master` of `class`.
fn encrypted_pre_master(class: usize, key: &rsa::PublicKey) -> Result<Vec<u8>, Error> {
    let mut rng = getrandom::SysRng;
    let secret = |len: usize| -> Result<Vec<u8>, Error> {
        let mut s = vec![0u8; len];
        getrandom::fill(&mut s)?;
        Ok(s)
    };
    Ok(match CLASSES[class] {
        "valid" | "valid2" => key.encrypt(&mut rng, Oaep::<Sha256>::new(), &secret(32)?)?,
        "label" => key.encrypt(
            &mut rng,
            Oaep::<Sha256>::new_with_label(&b"secured/1 marvin"[..]),
            &secret(32)?,
        )?,
        "raw" => {
            let k = key.size();
            let mut m = secret(k)?;
            m[0] = 0;
            let m = BoxedUint::from_be_slice(&m, key.n().bits_precision())
                .map_err(|e| format!("{e:?}"))?;
            let c = rsa::hazmat::rsa_encrypt(key, &m)?.to_be_bytes();
            c[c.len() - k..].to_vec()
        }
        "len31" => key.encrypt(&mut rng, Oaep::<Sha256>::new(), &secret(31)?)?,
        "len48" => key.encrypt(&mut rng, Oaep::<Sha256>::new(), &secret(48)?)?,
        other => unreachable!("class {other}"),
    })
}

/// Frames from a blocking socket, cut by the protocol's frame codec.
#[derive(Default)]
struct FrameReader {
    codec: FrameCodec,
    buf: BytesMut,
}

impl FrameReader {
    fn next(&mut self, socket: &mut TcpStream) -> Result<Frame, Error> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buf)? {
                return Ok(frame);
            }
            let mut chunk = [0u8; 4096];
            let n = socket.read(&mut chunk)?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Random numbers for shuffling and resampling, drawn from the operating
/// system in blocks.
struct Random {
    block: Vec<u8>,
    used: usize,
}

impl Random {
    fn new() -> Self {
        Self {
            block: vec![0; 1 << 16],
            used: 1 << 16,
        }
    }

    /// A uniform index below `n` (the bias of the multiply-shift method is
    /// below n / 2^32, nothing at these sizes).
    fn below(&mut self, n: usize) -> usize {
        if self.used + 4 > self.block.len() {
            getrandom::fill(&mut self.block).expect("the system random source works");
            self.used = 0;
        }
        let mut word = [0u8; 4];
        word.copy_from_slice(&self.block[self.used..self.used + 4]);
        self.used += 4;
        ((u64::from(u32::from_le_bytes(word)) * n as u64) >> 32) as usize
    }

    /// Fisher–Yates.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

fn write_csv(path: &std::path::Path, times: &[Vec<f64>]) -> Result<(), Error> {
    let mut out = CLASSES.join(",");
    out.push('\n');
    for round in 0..times[0].len() {
        let row: Vec<String> = times
            .iter()
            .map(|t| format!("{:.9}", t[round] / 1e6))
            .collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    std::fs::write(path, out)?;
    Ok(())
}

/// The `q` quantile of sorted `xs` (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn sorted(mut xs: Vec<f64>) -> Vec<f64> {
    xs.sort_unstable_by(f64::total_cmp);
    xs
}

/// Two-sided sign test: the probability, with no difference, of a split
/// of `plus` against `minus` at least this uneven.
fn sign_test(plus: usize, minus: usize) -> f64 {
    let n = plus + minus;
    if n == 0 {
        return 1.0;
    }
    let k = plus.min(minus);
    // P(X <= k) for X ~ Binomial(n, 1/2), summed in log space.
    let ln2n = n as f64 * std::f64::consts::LN_2;
    let mut ln_choose = 0.0f64;
    let mut terms = Vec::with_capacity(k + 1);
    for i in 0..=k {
        if i > 0 {
            ln_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        terms.push(ln_choose - ln2n);
    }
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let tail = max.exp() * terms.iter().map(|t| (t - max).exp()).sum::<f64>();
    (2.0 * tail).min(1.0)
}

/// One class against `valid`.
struct Comparison {
    plus: usize,
    minus: usize,
    p: f64,
    /// Per quantile: the difference and its interval at `1 - alpha`, in µs.
    diffs: Vec<(f64, f64, f64)>,
}

fn compare(
    valid: &[f64],
    other: &[f64],
    alpha: f64,
    bootstrap: usize,
    random: &mut Random,
) -> Comparison {
    let n = valid.len();
    let (mut plus, mut minus) = (0, 0);
    for (v, o) in valid.iter().zip(other) {
        if o > v {
            plus += 1;
        } else if o < v {
            minus += 1;
        }
    }
    let (sv, so) = (sorted(valid.to_vec()), sorted(other.to_vec()));
    let point: Vec<f64> = QUANTILES
        .iter()
        .map(|&q| quantile(&so, q) - quantile(&sv, q))
        .collect();
    // Resample whole rounds, so each resample keeps the pairing.
    let mut boot = vec![Vec::with_capacity(bootstrap); QUANTILES.len()];
    let (mut rv, mut ro) = (vec![0.0; n], vec![0.0; n]);
    for _ in 0..bootstrap {
        for i in 0..n {
            let j = random.below(n);
            rv[i] = valid[j];
            ro[i] = other[j];
        }
        rv.sort_unstable_by(f64::total_cmp);
        ro.sort_unstable_by(f64::total_cmp);
        for (b, &q) in boot.iter_mut().zip(&QUANTILES) {
            b.push(quantile(&ro, q) - quantile(&rv, q));
        }
    }
    let diffs = boot
        .into_iter()
        .zip(point)
        .map(|(b, d)| {
            let b = sorted(b);
            (
                d,
                quantile(&b, alpha / 2.0),
                quantile(&b, 1.0 - alpha / 2.0),
            )
        })
        .collect();
    Comparison {
        plus,
        minus,
        p: sign_test(plus, minus),
        diffs,
    }
}

fn report(args: &Args, times: &[Vec<f64>], random: &mut Random) {
    let n = times[0].len();
    let others = CLASSES.len() - 1;
    let alpha = ALPHA / others as f64;
    println!(
        "backend {}: {} rounds of {} classes in random order ({} warm-up rounds not counted), \
         time from PREM sent to ALRT received",
        args.label,
        n,
        CLASSES.len(),
        args.warmup
    );
    println!();
    println!(
        "{:<7} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "class", "p5 µs", "p10 µs", "p25 µs", "median µs", "mean µs"
    );
    for (name, t) in CLASSES.iter().zip(times) {
        let s = sorted(t.clone());
        let mean = t.iter().sum::<f64>() / t.len() as f64;
        println!(
            "{:<7} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
            name,
            quantile(&s, 0.05),
            quantile(&s, 0.10),
            quantile(&s, 0.25),
            quantile(&s, 0.50),
            mean
        );
    }
    println!();
    println!(
        "difference from valid in µs, with bootstrapped {:.2}% intervals ({} resamples of \
         rounds; {:.0}% for the {others} comparisons together); sign test over the {n} rounds \
         (slower/faster than valid in the same round)",
        100.0 * (1.0 - alpha),
        args.bootstrap,
        100.0 * (1.0 - ALPHA)
    );
    println!(
        "{:<7} {:>11} {:>8} {:>22} {:>22} {:>22} {:>22}",
        "class", "slower/fast", "p", "p5", "p10", "p25", "median"
    );
    let mut detected = Vec::new();
    let mut control_differs = false;
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for (name, t) in CLASSES.iter().zip(times).skip(1) {
        let c = compare(&times[0], t, alpha, args.bootstrap, random);
        let cells: Vec<String> = c
            .diffs
            .iter()
            .map(|(d, l, h)| format!("{d:+.2} [{l:+.2}, {h:+.2}]"))
            .collect();
        println!(
            "{:<7} {:>11} {:>8.3} {:>22} {:>22} {:>22} {:>22}",
            name,
            format!("{}/{}", c.plus, c.minus),
            c.p,
            cells[0],
            cells[1],
            cells[2],
            cells[3]
        );
        let (_, l, h) = c.diffs[QUANTILES.len() - 1];
        let differs = c.p < alpha || l > 0.0 || h < 0.0;
        if *name == CONTROL {
            control_differs = differs;
        } else {
            lo = lo.min(l);
            hi = hi.max(h);
            if differs {
                detected.push(*name);
            }
        }
    }
    println!();
    let level = 100.0 * (1.0 - alpha);
    if detected.is_empty() {
        println!(
            "verdict ({}): no difference detected at this resolution: CI of median difference \
             [{lo:+.2}, {hi:+.2}] µs ({level:.2}% intervals, sign tests at {alpha:.3})",
            args.label
        );
    } else {
        println!(
            "verdict ({}): DIFFERENCE DETECTED for {} (a sign test below {alpha:.3}, or a \
             {level:.2}% interval of the median difference that excludes 0); intervals of \
             median differences within [{lo:+.2}, {hi:+.2}] µs",
            args.label,
            detected.join(", ")
        );
    }
    if control_differs {
        println!(
            "warning ({}): the control class {CONTROL} differs from valid although its inputs \
             are of the same kind: the noise of this run is not what the tests assume",
            args.label
        );
    }
}
