//! A load generator for `bench/compare.sh`: it drives a running
//! `secured serve` through the library's device API and prints one-line,
//! machine-readable results. It is a benchmark tool, not a product command.
//!
//! * `handshakes` runs full sessions one after another for a fixed time:
//!   a new TCP connection, the complete handshake (certificates both ways,
//!   RSA-OAEP pre-master, RSA-PSS device proof, Finished), then `ENDD` both
//!   ways. It prints `handshakes=N seconds=T rate=R failed=F`.
//! * `sessions` opens `--count` sessions at once (one tokio task each:
//!   connect, handshake, one `SECX` text answered by an `ACK_`), prints
//!   `ALL_OPEN opened=K failed=F seconds=T` when every attempt has finished,
//!   holds the sessions until a line (or end of file) arrives on standard
//!   input or 120 s pass, then closes each with `ENDD` and prints
//!   `closed=N close_failed=F`.
//!
//! * `flood` opens connections that never complete a handshake, as fast as
//!   it can, from `--source` (a loopback address, 127.0.0.2 by default, so
//!   the server sees another client), for `--seconds`: half stay silent
//!   (up to `--hold` open at once), half send garbage and close. It prints
//!   `flood connections=N garbage=G`.
//! * `paused` starts a device every `--every` seconds for `--seconds`, each
//!   pausing `--pause` seconds between the server's `HELO` and its `PREM`,
//!   and prints `paused attempted=N completed=K` once all have finished.
//!
//! * `notices` connects `--watchers` sessions of `--watcher` (default
//!   `device-2`) that watch for new files, then the device uploads
//!   `--files` small files shared with everyone, one every 100 ms; each
//!   watcher notes, for every notice, the time from the server's commit
//!   (the file's `stored_at`) to its arrival. It prints `notices watchers=N
//!   files=M delivered=D expected=E median_ms=… p99_ms=… max_ms=…`.
//!
//! Failures are counted, the first three are printed to standard error, and
//! the exit status stays 0: the caller reads the counts. Every loop is
//! bounded by a count or a deadline. Point `--server` at a loopback address
//! (`127.0.0.1:PORT`); the benchmark never leaves the machine.
//!
//! ```text
//! cargo run --release --example load -- handshakes --server 127.0.0.1:7443 --seconds 10
//! cargo run --release --example load -- sessions --server 127.0.0.1:7443 --count 10000
//! cargo run --release --example load -- flood --server 127.0.0.1:7443 --seconds 10
//! ```
//!
//! It needs the crate's `test-support` feature (`--features test-support`),
//! which holds the flooder and the paused device.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use secured::client::{ClientSettings, DeviceClient};
use secured::crypto::{provider_by_name, providers};
use secured::handshake::DeviceConfig;
use secured::pki::{Identity, ServerName, TrustAnchor};
use tokio::net::TcpStream;

/// How long `sessions` holds the sessions open at most, waiting for stdin.
const HOLD_LIMIT: Duration = Duration::from_secs(120);
/// How many failure messages are printed.
const SHOWN_ERRORS: usize = 3;

#[derive(Debug, Parser)]
#[command(about = "Load generator for a secured server on loopback (benchmarks only)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sequential full sessions (connect, handshake, ENDD) for a fixed time.
    Handshakes {
        #[command(flatten)]
        conn: Conn,
        /// How long to keep going, in seconds (at most 3600).
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// Single-core record throughput: seal (8 records in lockstep, as the
    /// file path does, and one at a time) and open, 64 KiB records, no I/O.
    Records {
        /// How long to measure each, in seconds (at most 60).
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// Hold many authenticated sessions open at once.
    Sessions {
        #[command(flatten)]
        conn: Conn,
        /// Number of sessions to open concurrently.
        #[arg(long)]
        count: usize,
    },
    /// Connections that never complete a handshake, as fast as possible.
    Flood {
        /// Server address, host:port (loopback).
        #[arg(long, value_name = "ADDR")]
        server: String,
        /// Loopback address to send from.
        #[arg(long, default_value = "127.0.0.2", value_name = "IP")]
        source: std::net::IpAddr,
        /// How long, in seconds (at most 600).
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Silent connections held open at once.
        #[arg(long, default_value_t = 512)]
        hold: usize,
    },
    /// Latency of notices from commit to watcher.
    Notices {
        #[command(flatten)]
        conn: Conn,
        /// Watching sessions.
        #[arg(long, default_value_t = 100)]
        watchers: usize,
        /// Files uploaded (one every 100 ms).
        #[arg(long, default_value_t = 20)]
        files: usize,
        /// The device the watchers are.
        #[arg(long, default_value = "device-2", value_name = "NAME")]
        watcher: String,
    },
    /// Devices that pause between the server's HELO and their PREM.
    Paused {
        #[command(flatten)]
        conn: Conn,
        /// The pause, in seconds.
        #[arg(long, default_value_t = 1.0)]
        pause: f64,
        /// Seconds between two devices.
        #[arg(long, default_value_t = 0.25)]
        every: f64,
        /// How long to keep starting devices, in seconds (at most 600).
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
}

/// Where and as whom to connect.
#[derive(Debug, Args)]
struct Conn {
    /// Server address, host:port (loopback).
    #[arg(long, value_name = "ADDR")]
    server: String,
    /// RSA backend: aws-lc or rustcrypto.
    #[arg(long, default_value = "aws-lc", value_name = "BACKEND")]
    crypto: String,
    /// Folder holding ca.pem and DEVICE.pem.
    #[arg(long, default_value = "certs", value_name = "DIR")]
    certs_dir: PathBuf,
    /// Folder holding DEVICE.key.
    #[arg(long, default_value = "keys", value_name = "DIR")]
    keys_dir: PathBuf,
    /// Device name: selects DEVICE.pem and DEVICE.key.
    #[arg(long, default_value = "device-1", value_name = "NAME")]
    device: String,
}

impl Conn {
    /// Loads the device identity and the CA once; every session shares them.
    fn device_config(&self) -> Result<DeviceConfig, String> {
        let provider = provider_by_name(&self.crypto).ok_or_else(|| {
            let known: Vec<&str> = providers().iter().map(|p| p.name).collect();
            format!(
                "unknown crypto backend {:?} (this build has: {})",
                self.crypto,
                known.join(", ")
            )
        })?;
        let cert = self.certs_dir.join(format!("{}.pem", self.device));
        let key = self.keys_dir.join(format!("{}.key", self.device));
        let identity = Identity::load(&cert, &key, provider).map_err(|e| e.to_string())?;
        let anchor = TrustAnchor::load(&self.certs_dir.join("ca.pem"), provider)
            .map_err(|e| e.to_string())?;
        Ok(DeviceConfig {
            identity: Arc::new(identity),
            anchor: Arc::new(anchor),
            server_name: ServerName::Dns("localhost".into()),
            provider,
            versions: secured::message::SUPPORTED_VERSIONS,
        })
    }
}

/// Counts failures and prints the first few.
#[derive(Default)]
struct Failures {
    count: AtomicUsize,
}

impl Failures {
    fn record(&self, what: &str, err: &dyn std::fmt::Display) {
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        if n < SHOWN_ERRORS {
            eprintln!("load: {what} failed: {err}");
        }
    }

    fn get(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Thousands of sessions need more than the usual 1,024 descriptors.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Handshakes { conn, seconds } => handshakes(&conn, seconds).await,
            Command::Sessions { conn, count } => sessions(&conn, count).await,
            Command::Records { seconds } => records(seconds),
            Command::Flood {
                server,
                source,
                seconds,
                hold,
            } => flood(&server, source, seconds, hold).await,
            Command::Paused {
                conn,
                pause,
                every,
                seconds,
            } => paused(&conn, pause, every, seconds).await,
            Command::Notices {
                conn,
                watchers,
                files,
                watcher,
            } => notices(&conn, watchers, files, &watcher).await,
        }
    });
    // Do not wait for the stdin reader thread, if it is still blocked.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Measures record sealing and opening on one core; prints MB/s
/// (10^6 bytes) of plaintext: `seal_batch=… seal_single=… open=…`.
fn records(seconds: f64) -> Result<(), String> {
    use bytes::BytesMut;
    use secured::crypto::PreMaster;
    use secured::crypto::cipher::LANES;
    use secured::crypto::kdf;
    use secured::frame::{FrameCodec, FrameKind};
    use secured::record::{MAX_PLAINTEXT_LEN, RecordReader, RecordWriter};
    use tokio_util::codec::{Decoder, Encoder};

    let limit = Duration::from_secs_f64(seconds.clamp(0.1, 60.0));
    let keys = kdf::derive(
        &PreMaster::from_bytes([7; 32]),
        &[1; 32],
        &[2; 32],
        &[3; 32],
    );
    let data = vec![0x5au8; MAX_PLAINTEXT_LEN];
    let batch: Vec<&[u8]> = (0..LANES).map(|_| &data[..]).collect();
    let mut codec = FrameCodec::new();
    let mut buf = BytesMut::with_capacity((LANES + 1) * (MAX_PLAINTEXT_LEN + 128));
    let rate = |bytes: usize, t: Duration| bytes as f64 / 1e6 / t.as_secs_f64();

    // Seal, batched, straight into the codec's buffer.
    let mut writer = RecordWriter::new(&keys.device_to_server);
    let (mut bytes, started) = (0usize, Instant::now());
    while started.elapsed() < limit {
        buf.clear();
        let sealed = writer
            .seal_batch(FrameKind::IMGX, &batch)
            .map_err(|e| e.to_string())?;
        codec.encode(sealed, &mut buf).map_err(|e| e.to_string())?;
        bytes += LANES * MAX_PLAINTEXT_LEN;
    }
    let seal_batch = rate(bytes, started.elapsed());

    // Seal, one record at a time.
    let (mut bytes, started) = (0usize, Instant::now());
    while started.elapsed() < limit {
        buf.clear();
        let sealed = writer
            .seal(FrameKind::IMGX, &data)
            .map_err(|e| e.to_string())?;
        codec.encode(sealed, &mut buf).map_err(|e| e.to_string())?;
        bytes += MAX_PLAINTEXT_LEN;
    }
    let seal_single = rate(bytes, started.elapsed());

    // Open: records sealed (untimed) in order, then opened in place (timed).
    let mut writer = RecordWriter::new(&keys.device_to_server);
    let mut reader = RecordReader::new(&keys.device_to_server);
    let (mut bytes, mut spent, started) = (0usize, Duration::ZERO, Instant::now());
    while started.elapsed() < limit * 2 && spent < limit {
        buf.clear();
        let sealed = writer
            .seal_batch(FrameKind::IMGX, &batch)
            .map_err(|e| e.to_string())?;
        codec.encode(sealed, &mut buf).map_err(|e| e.to_string())?;
        let t = Instant::now();
        while let Some(frame) = codec.decode(&mut buf).map_err(|e| e.to_string())? {
            bytes += reader.open(frame).map_err(|e| e.to_string())?.len();
        }
        spent += t.elapsed();
    }
    let open = rate(bytes, spent);
    println!("seal_batch={seal_batch:.1} seal_single={seal_single:.1} open={open:.1}");
    Ok(())
}

/// One complete session: TCP connect, handshake, `ENDD` both ways.
async fn one_session(
    addr: &str,
    config: DeviceConfig,
    settings: ClientSettings,
) -> Result<(), secured::client::ClientError> {
    let client = DeviceClient::connect(addr, config, settings).await?;
    client.close().await
}

async fn handshakes(conn: &Conn, seconds: f64) -> Result<(), String> {
    if !(seconds > 0.0 && seconds <= 3600.0) {
        return Err(format!("--seconds must be in (0, 3600], not {seconds}"));
    }
    let config = conn.device_config()?;
    let settings = ClientSettings::default();
    let failures = Failures::default();
    let limit = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut done = 0u64;
    // Bounded by the deadline; each attempt is bounded by the client's timeouts.
    while start.elapsed() < limit {
        match one_session(&conn.server, config.clone(), settings.clone()).await {
            Ok(()) => done += 1,
            Err(e) => {
                failures.record("session", &e);
                if failures.get() >= 100 && done == 0 {
                    return Err("100 sessions failed and none succeeded; giving up".into());
                }
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "handshakes={done} seconds={elapsed:.3} rate={:.1} failed={}",
        done as f64 / elapsed,
        failures.get()
    );
    Ok(())
}

async fn sessions(conn: &Conn, count: usize) -> Result<(), String> {
    if count == 0 || count > 100_000 {
        return Err(format!("--count must be in 1..=100000, not {count}"));
    }
    let config = conn.device_config()?;
    let settings = ClientSettings::default();
    let failures = Arc::new(Failures::default());

    let start = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let addr = conn.server.clone();
        let config = config.clone();
        let settings = settings.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = DeviceClient::connect(&addr, config, settings).await?;
            client.send_text(&format!("load session {i}")).await?;
            Ok::<_, secured::client::ClientError>(client)
        }));
    }
    let mut open: Vec<DeviceClient<TcpStream>> = Vec::with_capacity(count);
    for task in tasks {
        match task.await {
            Ok(Ok(client)) => open.push(client),
            Ok(Err(e)) => failures.record("session", &e),
            Err(e) => failures.record("session task", &e),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "ALL_OPEN opened={} failed={} seconds={elapsed:.3}",
        open.len(),
        failures.get()
    );
    let _ = std::io::stdout().flush();

    // Hold the sessions until the caller has measured: a line (or EOF) on
    // stdin, or the time limit. A plain thread reads stdin, so that nothing
    // waits for it if the limit passes first.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        let _ = tx.send(());
    });
    if tokio::time::timeout(HOLD_LIMIT, rx).await.is_err() {
        eprintln!(
            "load: no line on stdin within {} s; closing",
            HOLD_LIMIT.as_secs()
        );
    }

    let close_failures = Arc::new(Failures::default());
    let mut closing = Vec::with_capacity(open.len());
    for client in open {
        let close_failures = Arc::clone(&close_failures);
        closing.push(tokio::spawn(async move {
            match client.close().await {
                Ok(()) => true,
                Err(e) => {
                    close_failures.record("close", &e);
                    false
                }
            }
        }));
    }
    let mut closed = 0usize;
    for task in closing {
        if matches!(task.await, Ok(true)) {
            closed += 1;
        }
    }
    println!("closed={closed} close_failed={}", close_failures.get());
    Ok(())
}

fn seconds_in(name: &str, value: f64, max: f64) -> Result<Duration, String> {
    if value > 0.0 && value <= max {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(format!("--{name} must be in (0, {max}], not {value}"))
    }
}

async fn flood(
    server: &str,
    source: std::net::IpAddr,
    seconds: f64,
    hold: usize,
) -> Result<(), String> {
    let limit = seconds_in("seconds", seconds, 600.0)?;
    let addr: std::net::SocketAddr = server
        .parse()
        .map_err(|e| format!("--server must be IP:PORT: {e}"))?;
    if !addr.ip().is_loopback() || !source.is_loopback() {
        return Err("the flood stays on loopback: --server and --source must be 127.x.x.x".into());
    }
    let stats = secured::testkit::flood(addr, source, Instant::now() + limit, hold).await;
    println!(
        "flood connections={} garbage={}",
        stats.connections, stats.garbage
    );
    Ok(())
}

async fn paused(conn: &Conn, pause: f64, every: f64, seconds: f64) -> Result<(), String> {
    let pause = if pause == 0.0 {
        Duration::ZERO
    } else {
        seconds_in("pause", pause, 30.0)?
    };
    let every = seconds_in("every", every, 60.0)?;
    let limit = seconds_in("seconds", seconds, 600.0)?;
    let addr: std::net::SocketAddr = conn
        .server
        .parse()
        .map_err(|e| format!("--server must be IP:PORT: {e}"))?;
    let config = conn.device_config()?;
    let failures = Failures::default();
    let started = Instant::now();
    let mut tasks = Vec::new();
    while started.elapsed() < limit {
        tasks.push(tokio::spawn(secured::testkit::handshake_with_pause(
            addr,
            config.clone(),
            pause,
            pause + Duration::from_secs(15),
        )));
        tokio::time::sleep(every).await;
    }
    let attempted = tasks.len();
    let mut completed = 0;
    for task in tasks {
        match task.await {
            Ok(Ok(())) => completed += 1,
            Ok(Err(e)) => failures.record("device", &e),
            Err(e) => failures.record("device task", &e),
        }
    }
    println!("paused attempted={attempted} completed={completed}");
    Ok(())
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The value below which `p` of `sorted` lies.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

async fn notices(conn: &Conn, watchers: usize, files: usize, watcher: &str) -> Result<(), String> {
    if !(1..=10_000).contains(&watchers) || !(1..=10_000).contains(&files) {
        return Err("--watchers and --files must be in 1..=10000".into());
    }
    let uploader = conn.device_config()?;
    let watcher_config = Conn {
        server: conn.server.clone(),
        crypto: conn.crypto.clone(),
        certs_dir: conn.certs_dir.clone(),
        keys_dir: conn.keys_dir.clone(),
        device: watcher.to_owned(),
    }
    .device_config()?;
    let failures = Arc::new(Failures::default());
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(watchers);
    let mut tasks = Vec::with_capacity(watchers);
    for _ in 0..watchers {
        let config = watcher_config.clone();
        let addr = conn.server.clone();
        let ready = ready_tx.clone();
        let failures = failures.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(files);
            let mut client =
                match DeviceClient::connect(&addr, config, ClientSettings::default()).await {
                    Ok(c) => c,
                    Err(e) => {
                        failures.record("a watcher's connection", &e);
                        let _ = ready.send(()).await;
                        return latencies;
                    }
                };
            if let Err(e) = client.watch(secured::message::WatchFrom::Now).await {
                failures.record("a watch", &e);
                let _ = ready.send(()).await;
                return latencies;
            }
            let _ = ready.send(()).await;
            while latencies.len() < files {
                // Bounded: a notice missing for 10 s ends this watcher.
                match tokio::time::timeout(
                    Duration::from_secs(10),
                    client.next_notice(Duration::from_secs(30)),
                )
                .await
                {
                    Ok(Ok(note)) => latencies.push(now_ms().saturating_sub(note.info.stored_at)),
                    Ok(Err(e)) => {
                        failures.record("a watcher", &e);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let _ = client.close().await;
            latencies
        }));
    }
    drop(ready_tx);
    // Every watcher is watching (or has failed) before the first upload.
    for _ in 0..watchers {
        if ready_rx.recv().await.is_none() {
            break;
        }
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut client = DeviceClient::connect(&conn.server, uploader, ClientSettings::default())
        .await
        .map_err(|e| e.to_string())?;
    for i in 0..files {
        let path = dir.path().join(format!("n{i}.bin"));
        std::fs::write(&path, format!("notice {i}")).map_err(|e| e.to_string())?;
        let file = secured::client::OutgoingFile {
            size: std::fs::metadata(&path).map_err(|e| e.to_string())?.len(),
            path,
            name: format!("n{i}.bin"),
            kind: secured::message::MediaKind::File,
            content_type: "application/octet-stream".into(),
            scope: secured::message::Scope::Everyone,
        };
        if let Err(e) = client.send_file(&file, |_| {}).await {
            failures.record("an upload", &e);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = client.close().await;
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())?);
    }
    all.sort_unstable();
    println!(
        "notices watchers={watchers} files={files} delivered={} expected={} median_ms={} p99_ms={} max_ms={} failed={}",
        all.len(),
        watchers * files,
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or(0),
        failures.get()
    );
    Ok(())
}
