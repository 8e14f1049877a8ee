//! `secured device send-file`: progress bars and the transfer report.
//!
//! Every file given on the command line appears in the report, with a
//! status: `stored` (and verified), `refused` by the server, `failed` (it
//! could not be read, changed while it was sent, the session died during
//! it, or the server's SHA-256 differs), or `not_sent` (the session never
//! started, or ended before its turn). Sizes and rates are in binary units
//! (KiB, MiB), as on the progress bar, with exact byte counts; the JSON
//! report has the exact numbers only.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::CliError;
use crate::client::{ClientError, ClientSettings, DeviceClient, FileReceipt, OutgoingFile};
use crate::handshake::DeviceConfig;
use crate::session::SessionError;

/// What became of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Status {
    /// Stored, and the server's SHA-256 equals the device's.
    Stored,
    /// The server refused it (`code` is the `ACK_` status).
    Refused,
    /// It was not stored as sent (`code` says why).
    Failed,
    /// It was never sent (`code` is why the session ended or never began).
    NotSent,
}

/// One file of the report.
#[derive(Debug, Serialize)]
pub(super) struct FileReport {
    file: String,
    name: String,
    /// Size in bytes.
    size: u64,
    kind: &'static str,
    content_type: String,
    status: Status,
    /// `ok`, the `ACK_` status of a refusal, or the kind of error.
    code: String,
    /// One sentence about the outcome.
    message: String,
    stored_as: Option<String>,
    sha256: Option<String>,
    server_sha256: Option<String>,
    verified: bool,
    /// Content bytes actually sent.
    bytes_sent: u64,
    seconds: f64,
    /// `bytes_sent` over `seconds`, 0 when nothing was sent.
    bytes_per_second: u64,
}

impl FileReport {
    /// Whether the file was stored exactly as sent.
    pub(super) fn verified(&self) -> bool {
        self.verified
    }
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    device: &'a str,
    /// The server's name from its certificate; `None` if no session started.
    server: Option<&'a str>,
    address: &'a str,
    /// Why the command failed before every file had its turn.
    error: Option<String>,
    files: &'a [FileReport],
}

/// A progress bar of `size` bytes labelled `label`, drawn on standard
/// error only when `animate`.
pub(super) fn progress_bar(size: u64, label: String, animate: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(size),
        if animate {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:20!} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(label);
    bar
}

/// Bytes per second, 0 when nothing was sent or no time passed.
fn rate(bytes: u64, elapsed: Duration) -> u64 {
    let secs = elapsed.as_secs_f64();
    if bytes == 0 || secs <= 0.0 {
        return 0;
    }
    (bytes as f64 / secs).round() as u64
}

/// `n` with a comma every three digits: `12,897,412`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A size as the progress bar shows it, with the exact count:
/// `12.30 MiB (12,897,412 bytes)`, or `512 bytes` under 1 KiB.
pub(super) fn human_size(n: u64) -> String {
    if n < 1024 {
        format!("{n} bytes")
    } else {
        format!("{} ({} bytes)", HumanBytes(n), grouped(n))
    }
}

/// A short, stable name for what stopped a file or a session.
fn error_code(e: &ClientError) -> String {
    let code = match e {
        ClientError::Refused { status, .. } => status.name(),
        ClientError::Connect { .. } => "connect_failed",
        ClientError::Read { .. } => "read_error",
        ClientError::FileChanged { .. } => "file_changed",
        ClientError::BadFileName { .. } => "bad_name",
        ClientError::Sign(_) => "sign_failed",
        ClientError::Session(SessionError::PeerAlert(alert)) => alert.name(),
        ClientError::Session(SessionError::Handshake(_)) => "handshake_failed",
        ClientError::Session(SessionError::Timeout { .. }) => "timeout",
        ClientError::Session(SessionError::Truncated) => "truncated",
        ClientError::Session(SessionError::Io(_)) => "connection_error",
        _ => "session_failed",
    };
    code.to_owned()
}

/// The report of a file that had its turn: `outcome` is the receipt, or
/// the error that ended its stream (or the session).
fn report(
    file: &OutgoingFile,
    bytes_sent: u64,
    elapsed: Duration,
    outcome: Result<&FileReceipt, &ClientError>,
) -> FileReport {
    let mut r = FileReport {
        file: file.path.display().to_string(),
        name: file.name.clone(),
        size: file.size,
        kind: file.kind.name(),
        content_type: file.content_type.clone(),
        status: Status::Failed,
        code: String::new(),
        message: String::new(),
        stored_as: None,
        sha256: None,
        server_sha256: None,
        verified: false,
        bytes_sent,
        seconds: elapsed.as_secs_f64(),
        bytes_per_second: rate(bytes_sent, elapsed),
    };
    match outcome {
        Ok(receipt) => {
            r.verified = receipt.verified();
            r.stored_as = Some(receipt.stored_as.clone());
            r.sha256 = Some(hex::encode(receipt.local_sha256));
            r.server_sha256 = Some(hex::encode(receipt.server_sha256));
            if r.verified {
                r.status = Status::Stored;
                r.code = "ok".into();
                r.message = format!(
                    "stored as {:?}; the server's SHA-256 matches",
                    receipt.stored_as
                );
            } else {
                r.code = "sha256_mismatch".into();
                r.message = format!(
                    "stored as {:?}, but the server's SHA-256 differs from the device's",
                    receipt.stored_as
                );
            }
        }
        Err(e) => {
            if matches!(e, ClientError::Refused { .. }) {
                r.status = Status::Refused;
            }
            r.code = error_code(e);
            r.message = e.to_string();
        }
    }
    r
}

/// The report of a file that never had its turn.
fn not_sent(file: &OutgoingFile, why: &CliError) -> FileReport {
    let code = match why {
        CliError::Client(e) => error_code(e),
        _ => "not_sent".to_owned(),
    };
    FileReport {
        file: file.path.display().to_string(),
        name: file.name.clone(),
        size: file.size,
        kind: file.kind.name(),
        content_type: file.content_type.clone(),
        status: Status::NotSent,
        code,
        message: format!("not sent: {why}"),
        stored_as: None,
        sha256: None,
        server_sha256: None,
        verified: false,
        bytes_sent: 0,
        seconds: 0.0,
        bytes_per_second: 0,
    }
}

fn print_text(r: &FileReport) {
    println!(
        "{}: {}, {} ({})",
        r.file,
        human_size(r.size),
        r.content_type,
        r.kind
    );
    if r.bytes_sent == r.size && r.sha256.is_some() {
        println!(
            "  sent in {:.2} s, {}/s",
            r.seconds,
            HumanBytes(r.bytes_per_second)
        );
    } else if r.bytes_sent > 0 {
        println!(
            "  sent {} of it in {:.2} s, {}/s",
            human_size(r.bytes_sent),
            r.seconds,
            HumanBytes(r.bytes_per_second)
        );
    }
    if let Some(sha) = &r.sha256 {
        println!("  sha256 {sha}");
    }
    match (r.status, &r.stored_as) {
        (Status::Stored, Some(name)) => {
            println!("  server: stored as {name:?}; its SHA-256 matches");
        }
        (_, Some(name)) => println!("  server: stored as {name:?}; its SHA-256 DIFFERS"),
        (Status::Refused, None) => println!("  server: refused ({}): {}", r.code, r.message),
        (Status::NotSent, None) => println!("  {}", r.message),
        (_, None) => println!("  failed ({}): {}", r.code, r.message),
    }
}

/// Sends `files` over an established session, in order, adding a report
/// for each to `reports` (and printing it as text unless `json`). Refused
/// or unreadable files are reported and skipped.
///
/// # Errors
/// The error that ended the session; the file it interrupted is reported
/// as failed, and the files after it get no report here.
pub(super) async fn send_over<S>(
    client: &mut DeviceClient<S>,
    files: &[OutgoingFile],
    json: bool,
    reports: &mut Vec<FileReport>,
) -> Result<(), CliError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let animate = std::io::stdout().is_terminal() && !json;
    for file in files {
        let bar = progress_bar(file.size, file.name.clone(), animate);
        let started = Instant::now();
        let mut sent = 0u64;
        let result = client
            .send_file(file, |n| {
                sent += n;
                bar.inc(n);
            })
            .await;
        bar.finish_and_clear();
        let elapsed = started.elapsed();
        let (report, fatal) = match result {
            Ok(receipt) => (report(file, receipt.size, elapsed, Ok(&receipt)), None),
            // Refused or unreadable: the stream ended cleanly; go on with the next file.
            Err(
                e @ (ClientError::Refused { .. }
                | ClientError::Read { .. }
                | ClientError::FileChanged { .. }),
            ) => (report(file, sent, elapsed, Err(&e)), None),
            Err(e) => (report(file, sent, elapsed, Err(&e)), Some(e)),
        };
        if !json {
            print_text(&report);
        }
        reports.push(report);
        if let Some(e) = fatal {
            return Err(e.into());
        }
    }
    Ok(())
}

/// The error for reports with files that were not stored as sent.
pub(super) fn check_reports(reports: &[FileReport]) -> Result<(), CliError> {
    let failed = reports.iter().filter(|r| !r.verified).count();
    if failed > 0 {
        return Err(CliError::Other(format!(
            "{failed} of {} files were not stored as sent (see the report above)",
            reports.len()
        )));
    }
    Ok(())
}

/// Ends the session. When every request already has its authenticated
/// receipt, a session the server ends otherwise (for example with
/// `ALRT unavailable` because it is shutting down) loses nothing: that is a
/// warning, not a failure.
pub(super) async fn close_after_receipts<S>(
    client: DeviceClient<S>,
    all_acknowledged: bool,
) -> Result<(), CliError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match client.close().await {
        Ok(()) => Ok(()),
        Err(e) if all_acknowledged => {
            super::warn_user(&format!(
                "everything was acknowledged, but the session did not end cleanly: {e}"
            ));
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Sends `files` over one session and reports on each, also when the
/// session fails to start or dies: then the files it did not reach are
/// listed as not sent, and with `json` the report still appears, with the
/// error.
pub(super) async fn send_files(
    addr: &str,
    config: DeviceConfig,
    settings: ClientSettings,
    files: &[OutgoingFile],
    json: bool,
) -> Result<(), CliError> {
    let device = config.identity.name().to_owned();
    let mut server = None;
    let mut reports = Vec::with_capacity(files.len());
    let outcome = async {
        let mut client = DeviceClient::connect(addr, config, settings).await?;
        server = Some(client.server().name().to_owned());
        send_over(&mut client, files, json, &mut reports).await?;
        close_after_receipts(client, reports.iter().all(FileReport::verified)).await
    }
    .await;
    let error = outcome.err();
    if let Some(e) = &error {
        for file in &files[reports.len()..] {
            let r = not_sent(file, e);
            if !json {
                print_text(&r);
            }
            reports.push(r);
        }
    }
    if json {
        let doc = Report {
            device: &device,
            server: server.as_deref(),
            address: addr,
            error: error.as_ref().map(ToString::to_string),
            files: &reports,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&doc)
                .map_err(|e| CliError::Other(format!("cannot format the report: {e}")))?
        );
    }
    match error {
        Some(e) => Err(e),
        None => check_reports(&reports),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_binary_units_with_exact_bytes() {
        assert_eq!(human_size(0), "0 bytes");
        assert_eq!(human_size(1023), "1023 bytes");
        assert_eq!(human_size(1024), "1.00 KiB (1,024 bytes)");
        assert_eq!(human_size(12_897_412), "12.30 MiB (12,897,412 bytes)");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(grouped(u64::MAX), "18,446,744,073,709,551,615");
    }

    #[test]
    fn the_rate_counts_what_was_sent() {
        assert_eq!(rate(0, Duration::from_millis(1)), 0);
        assert_eq!(rate(1 << 20, Duration::ZERO), 0);
        assert_eq!(rate(3 << 20, Duration::from_secs(2)), 3 << 19);
    }
}
