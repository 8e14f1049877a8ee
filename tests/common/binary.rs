//! The built `secured` binary: running it, a folder with the PKI files of
//! `secured pki init`, a `secured serve` process, and the one-sentence
//! errors it prints.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_secured");

/// How long a command may run before it is taken for hung.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// How long a server process may take to log what a test waits for.
const LOG_LIMIT: Duration = Duration::from_secs(20);

/// The binary, to run in `dir`, with neither `RUST_LOG` nor
/// `SECURED_CONFIG` from the environment.
pub fn command(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("SECURED_CONFIG");
    command
}

/// Runs the binary in `dir` to its end, with neither `RUST_LOG` nor
/// `SECURED_CONFIG` from the environment; kills it and panics if it is
/// still running after a minute (a server that should have refused to
/// start, say).
pub fn secured(dir: &Path, args: &[&str]) -> Output {
    let mut child = command(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run secured");
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + COMMAND_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for secured") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("secured {args:?} was still running after {COMMAND_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Standard error of a finished command, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that the command succeeded, showing its standard error if not.
#[track_caller]
pub fn assert_success(out: &Output) {
    assert!(out.status.success(), "{}", stderr(out));
}

/// A failure is exactly one line on standard error, starting with
/// `error: `, with exit status 1, no panic and no debug dump; it contains
/// each of `needles`.
#[track_caller]
pub fn assert_one_sentence_error(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("{ ") && !err.contains("Os {"),
        "{err}"
    );
    for n in needles {
        assert!(err.contains(n), "missing {n:?} in: {err}");
    }
}

/// A failure whose one line on standard error is `error: {sentence}`.
#[track_caller]
pub fn assert_error_is(out: &Output, sentence: &str) {
    assert_one_sentence_error(out, &[]);
    assert_eq!(stderr(out), format!("error: {sentence}\n"));
}

/// A PKI made once per test binary by `secured pki init`, with extra
/// certificates: `old`, a device certificate that expired yesterday,
/// `device-2`, and in `other/` an unrelated CA with its own `device-1`.
/// Read only: a test that changes files works on a [`workdir`].
pub fn template() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_success(&secured(dir.path(), &["pki", "init", "--ca-bits", "2048"]));
        expired_device_certificate(dir.path(), "old");
        assert_success(&secured(
            dir.path(),
            &["pki", "issue", "--role", "device", "--name", "device-2"],
        ));
        let other = dir.path().join("other");
        std::fs::create_dir(&other).expect("create other/");
        assert_success(&secured(&other, &["pki", "init", "--ca-bits", "2048"]));
        dir
    })
    .path()
}

/// Issues `certs/<name>.pem` and `keys/<name>.key` under the CA in `dir`,
/// valid from two days ago until yesterday (through the library: the CLI
/// refuses to issue a certificate that is not valid for at least a day).
fn expired_device_certificate(dir: &Path, name: &str) {
    use secured::pki::{CertificateAuthority, Role, Validity, write_cert_pem, write_key_pem};
    let ca = CertificateAuthority::load(
        &dir.join("certs/ca.pem"),
        &dir.join("keys/ca.key"),
        secured::crypto::default_provider(),
    )
    .expect("load the CA");
    let day = Duration::from_secs(86_400);
    let now = std::time::SystemTime::now();
    let validity = Validity {
        not_before: now - 2 * day,
        not_after: now - day,
    };
    let leaf = ca
        .issue(Role::Device, name, &[], 2048, validity)
        .expect("issue");
    write_cert_pem(
        &dir.join(format!("certs/{name}.pem")),
        &leaf.cert_der,
        false,
    )
    .expect("write the certificate");
    write_key_pem(
        &dir.join(format!("keys/{name}.key")),
        &leaf.key_pkcs8_der,
        false,
    )
    .expect("write the key");
}

/// A folder of the test's own with a copy of the shared PKI.
pub fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", template().display()))
        .arg(dir.path())
        .status()
        .expect("run cp");
    assert!(status.success());
    dir
}

/// `sh -c` script that runs `secured serve` on 127.0.0.1:0 with JSON logs
/// (`$0` is the binary); extra arguments follow.
pub const SERVE: &str = r#"exec "$0" serve --listen 127.0.0.1:0 --log-format json "$@""#;

/// A `secured serve` process on 127.0.0.1:0; the address is read from its
/// JSON log. Killed when dropped.
pub struct ServerProcess {
    pub child: Child,
    pub addr: String,
    log: std::sync::mpsc::Receiver<String>,
    /// The lines logged up to the listening address.
    pub early: Vec<String>,
}

impl ServerProcess {
    /// `secured serve` in `dir`.
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// `secured serve` in `dir` with `extra` arguments.
    pub fn start_with(dir: &Path, extra: &[&str]) -> Self {
        Self::start_script(dir, SERVE, extra)
    }

    /// The server through `sh -c script`, which ends in `exec` of the
    /// binary (`$0`) with `args` (`$@`): to set limits first, say.
    pub fn start_script(dir: &Path, script: &str, args: &[&str]) -> Self {
        let mut child = Command::new("sh")
            .current_dir(dir)
            .args(["-c", script, BIN])
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("SECURED_CONFIG")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the server");
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let listening = |line: &str| {
            if !line.contains("\"listening\"") {
                return None;
            }
            let (_, after) = line.split_once("\"addr\":\"")?;
            after.split('"').next().map(str::to_owned)
        };
        let mut early = Vec::new();
        loop {
            match rx.recv_timeout(LOG_LIMIT) {
                Ok(line) => {
                    let addr = listening(&line);
                    early.push(line);
                    if let Some(addr) = addr {
                        return Self {
                            child,
                            addr,
                            log: rx,
                            early,
                        };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the server did not start; it logged {early:?}");
                }
            }
        }
    }

    /// Waits (bounded) for a log line containing all of `needles`, and
    /// returns it; panics if none comes.
    pub fn wait_for(&self, needles: &[&str]) -> String {
        let matches = |l: &String| needles.iter().all(|n| l.contains(n));
        if let Some(line) = self.early.iter().find(|l| matches(l)) {
            return line.clone();
        }
        let deadline = Instant::now() + LOG_LIMIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.log.recv_timeout(left) {
                Ok(line) if matches(&line) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no log line with {needles:?} within {LOG_LIMIT:?}");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `secured device send-text --server SERVER ARGS…` in `dir`.
pub fn send_text(dir: &Path, server: &str, args: &[&str]) -> Output {
    let mut all = vec!["device", "send-text", "--server", server];
    all.extend_from_slice(args);
    secured(dir, &all)
}

/// `secured device send-file --server SERVER --json ARGS…` in `dir`: the
/// run, and the JSON report it printed.
pub fn send_files(dir: &Path, server: &str, args: &[&str]) -> (Output, serde_json::Value) {
    let mut all = vec!["device", "send-file", "--server", server, "--json"];
    all.extend_from_slice(args);
    let out = secured(dir, &all);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): {}; stderr: {}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        )
    });
    (out, report)
}
