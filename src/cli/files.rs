//! `secured device send-file`: progress bars and the transfer report.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::CliError;
use crate::client::{ClientError, ClientSettings, DeviceClient, FileReceipt, OutgoingFile};
use crate::handshake::DeviceConfig;

/// One line of the report.
#[derive(Debug, Serialize)]
pub(super) struct FileReport {
    file: String,
    name: String,
    size: u64,
    kind: &'static str,
    content_type: String,
    /// `stored`, or the reason nothing was stored.
    verdict: String,
    stored_as: Option<String>,
    sha256: Option<String>,
    server_sha256: Option<String>,
    verified: bool,
    seconds: f64,
    mb_per_s: f64,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    device: &'a str,
    server: &'a str,
    address: &'a str,
    files: &'a [FileReport],
}

fn progress_bar(file: &OutgoingFile, animate: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(file.size),
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
    bar.set_message(file.name.clone());
    bar
}

fn rate(size: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        size as f64 / 1e6 / secs
    } else {
        0.0
    }
}

fn report(
    file: &OutgoingFile,
    elapsed: Duration,
    outcome: Result<&FileReceipt, String>,
) -> FileReport {
    let (verdict, stored_as, sha256, server_sha256, verified) = match outcome {
        Ok(r) => (
            if r.verified() {
                "stored".to_owned()
            } else {
                "stored, but the server's SHA-256 differs from the device's".to_owned()
            },
            Some(r.stored_as.clone()),
            Some(hex::encode(r.local_sha256)),
            Some(hex::encode(r.server_sha256)),
            r.verified(),
        ),
        Err(reason) => (reason, None, None, None, false),
    };
    FileReport {
        file: file.path.display().to_string(),
        name: file.name.clone(),
        size: file.size,
        kind: file.kind.name(),
        content_type: file.content_type.clone(),
        verdict,
        stored_as,
        sha256,
        server_sha256,
        verified,
        seconds: elapsed.as_secs_f64(),
        mb_per_s: rate(file.size, elapsed),
    }
}

fn print_text(r: &FileReport) {
    println!(
        "{}: {} bytes, {} ({}), {:.2} s, {:.1} MB/s",
        r.file, r.size, r.content_type, r.kind, r.seconds, r.mb_per_s
    );
    if let Some(sha) = &r.sha256 {
        println!("  sha256 {sha}");
    }
    match (&r.stored_as, r.verified) {
        (Some(name), true) => println!("  server: stored as {name:?}; its SHA-256 matches"),
        (Some(name), false) => println!("  server: stored as {name:?}; its SHA-256 DIFFERS"),
        (None, _) => println!("  server: not stored: {}", r.verdict),
    }
}

/// Sends `files` over an established session, printing a text report for
/// each unless `json`; refused or unreadable files are reported and
/// skipped. Returns the reports.
pub(super) async fn send_over<S>(
    client: &mut DeviceClient<S>,
    files: &[OutgoingFile],
    json: bool,
) -> Result<Vec<FileReport>, CliError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let animate = std::io::stdout().is_terminal() && !json;
    let mut reports = Vec::with_capacity(files.len());
    for file in files {
        let bar = progress_bar(file, animate);
        let started = Instant::now();
        let result = client.send_file(file, |n| bar.inc(n)).await;
        bar.finish_and_clear();
        let elapsed = started.elapsed();
        let report = match result {
            Ok(receipt) => report(file, elapsed, Ok(&receipt)),
            // Refused or unreadable: the stream ended cleanly; go on with the next file.
            Err(
                e @ (ClientError::Refused { .. }
                | ClientError::Read { .. }
                | ClientError::FileChanged { .. }),
            ) => report(file, elapsed, Err(e.to_string())),
            Err(e) => return Err(e.into()),
        };
        if !json {
            print_text(&report);
        }
        reports.push(report);
    }
    Ok(reports)
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

/// Sends `files` over one session and reports on each.
pub(super) async fn send_files(
    addr: &str,
    config: DeviceConfig,
    files: &[OutgoingFile],
    json: bool,
) -> Result<(), CliError> {
    let device = config.identity.name().to_owned();
    let mut client = DeviceClient::connect(addr, config, ClientSettings::default()).await?;
    let server = client.server().name().to_owned();
    let reports = send_over(&mut client, files, json).await?;
    close_after_receipts(client, reports.iter().all(|r| r.verified)).await?;
    if json {
        let doc = Report {
            device: &device,
            server: &server,
            address: addr,
            files: &reports,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&doc)
                .map_err(|e| CliError::Other(format!("cannot format the report: {e}")))?
        );
    }
    check_reports(&reports)
}
