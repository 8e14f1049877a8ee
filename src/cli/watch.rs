//! `secured device watch`: stay connected, report every new file this
//! device may see, optionally download each one (verified) and run a
//! program per notice. At least once: the id of the last notice handled is
//! kept on disk and the watch resumes after it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::CliError;
use super::device::Resolved;
use super::fetch::{info_json, report};
use crate::client::{ClientError, Destination, DeviceClient, Fetched};
use crate::config::FileConfig;
use crate::message::{Note, WatchFrom};
use crate::session::SessionError;

/// Time without any message before the device sends a heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(30);
/// First pause before reconnecting; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest pause between reconnections.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// `device watch`.
#[derive(Debug, Args)]
pub(super) struct WatchArgs {
    /// Print one JSON object per notice.
    #[arg(long)]
    json: bool,
    /// Run this program for each notice (no shell; the file's fields are in
    /// SECURED_* environment variables).
    #[arg(long, value_name = "PROGRAM")]
    exec: Option<PathBuf>,
    /// Download each new file into this folder, verified, under its signed
    /// name (an existing file is kept and reported).
    #[arg(long, value_name = "DIR")]
    fetch: Option<PathBuf>,
    /// Where to keep the id of the last notice handled [default:
    /// .secured-watch-NAME in the current folder].
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Stop after this many notices (for scripts and tests).
    #[arg(long, value_name = "N", hide = true)]
    count: Option<u64>,
}

/// Reads the last event handled; `None` when there is no state yet.
fn read_state(path: &Path) -> Result<Option<u64>, CliError> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse().map(Some).map_err(|_| {
            CliError::Other(format!(
                "{} does not hold an event id; remove it to start watching from now",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CliError::Other(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// Records `event` as handled: written beside, synced, renamed over.
fn write_state(path: &Path, event: u64) -> Result<(), CliError> {
    let fail = |e: std::io::Error| CliError::Other(format!("cannot write {}: {e}", path.display()));
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(&folder).map_err(fail)?;
    std::io::Write::write_all(&mut tmp, format!("{event}\n").as_bytes()).map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    std::fs::File::open(&folder)
        .and_then(|d| d.sync_all())
        .map_err(fail)
}

/// Whether an error ends the watch for good (the device or the server must
/// change first) rather than calling for a reconnection.
fn is_fatal(e: &ClientError) -> bool {
    match e {
        ClientError::NeedsVersion2 { .. } | ClientError::Destination { .. } => true,
        ClientError::Session(SessionError::Handshake(h)) => !matches!(
            h.alert(),
            Some(crate::message::AlertCode::Unavailable | crate::message::AlertCode::Timeout)
        ),
        _ => false,
    }
}

/// Runs the program for a notice, the fields in its environment.
async fn exec(program: &Path, note: &Note, fetched: Option<&Fetched>) {
    let f = &note.info;
    let mut cmd = tokio::process::Command::new(program);
    cmd.env("SECURED_EVENT", note.event.to_string())
        .env("SECURED_FILE_ID", f.id.to_string())
        .env("SECURED_OWNER", &f.owner)
        .env("SECURED_NAME", &f.name)
        .env("SECURED_STORED_AS", &f.stored_as)
        .env("SECURED_SIZE", f.size.to_string())
        .env("SECURED_KIND", f.kind.name())
        .env("SECURED_CONTENT_TYPE", &f.content_type)
        .env("SECURED_SHA256", hex::encode(f.sha256))
        .env("SECURED_SIGNED_AT", f.signed_at.to_string())
        .env("SECURED_STORED_AT_MS", f.stored_at.to_string())
        .env("SECURED_SCOPE", f.scope.to_string())
        // The program has no use for the keys' passphrase.
        .env_remove(crate::pki::keyfile::PASSPHRASE_ENV)
        .stdin(std::process::Stdio::null());
    if let Some(done) = fetched {
        cmd.env("SECURED_PATH", &done.path);
    }
    match cmd.status().await {
        Ok(status) if status.success() => {}
        Ok(status) => {
            tracing::warn!(program = %program.display(), %status, "the --exec program failed")
        }
        Err(e) => {
            tracing::warn!(program = %program.display(), error = %e, "cannot run the --exec program")
        }
    }
}

/// Handles one notice: print, download, run.
async fn handle(
    client: &mut DeviceClient<tokio::net::TcpStream>,
    note: &Note,
    args: &WatchArgs,
) -> Result<(), ClientError> {
    let mut fetched = None;
    if let Some(dir) = &args.fetch {
        let to = Destination {
            path: dir.clone(),
            is_dir: true,
            force: false,
        };
        match client.fetch(note.info.id, &to, |_| {}).await {
            Ok(done) => fetched = Some(done),
            Err(ClientError::Exists { path }) => {
                eprintln!("kept the existing {}; not downloaded again", path.display());
            }
            Err(e @ (ClientError::Download { .. } | ClientError::Refused { .. })) => {
                eprintln!("{e}");
            }
            Err(e) => return Err(e),
        }
    }
    if args.json {
        let mut v = info_json(&note.info);
        v["event"] = serde_json::json!(note.event);
        if let Some(done) = &fetched {
            v["path"] = serde_json::json!(done.path.display().to_string());
            v["verified"] = serde_json::json!(true);
        }
        println!("{v}");
    } else {
        let f = &note.info;
        println!(
            "new file {} from {}: {} bytes, {}, SHA-256 {} (event {})",
            f.stored_as,
            f.owner,
            f.size,
            f.content_type,
            hex::encode(f.sha256),
            note.event
        );
        if let Some(done) = &fetched {
            println!("  {}", report(done, false).replace('\n', "\n  "));
        }
    }
    if let Some(program) = &args.exec {
        exec(program, note, fetched.as_ref()).await;
    }
    Ok(())
}

/// One connection's worth of watching; returns when `count` notices were
/// handled (`Ok(true)`), or with the error that ended the connection.
async fn watch_once(
    resolved: &Resolved,
    args: &WatchArgs,
    state: &Path,
    handled: &mut u64,
) -> Result<bool, ClientError> {
    let mut client =
        DeviceClient::connect(&resolved.addr, resolved.config.clone(), resolved.settings()).await?;
    let cursor = read_state(state).map_err(|e| ClientError::Destination {
        path: state.to_owned(),
        reason: e.to_string(),
    })?;
    let from = cursor.map_or(WatchFrom::Now, WatchFrom::After);
    let start = client.watch(from).await?;
    match cursor {
        None => {
            write_state(state, start.last).map_err(|e| ClientError::Destination {
                path: state.to_owned(),
                reason: e.to_string(),
            })?;
        }
        Some(after) if start.oldest > after.saturating_add(1) => eprintln!(
            "notices {}..{} are older than the server keeps; run `secured device list` to see every file",
            after + 1,
            start.oldest - 1
        ),
        Some(_) => {}
    }
    tracing::info!(last = start.last, "watching");
    // A long watch renews the certificate when two thirds of its life
    // have passed (proto-spec.md §14.4); the next connection uses it.
    let renew_at = client.identity().renew_after();
    let mut renewed = false;
    loop {
        if args.count.is_some_and(|c| *handled >= c) {
            client.close().await?;
            return Ok(true);
        }
        let due = renew_at
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        let note = tokio::select! {
            n = client.next_notice(HEARTBEAT) => n?,
            () = tokio::time::sleep(due), if !renewed && client.version() >= 3 => {
                renewed = true;
                match super::enroll::renew_now(&mut client, false, 2048).await {
                    Ok((issued, _)) => match super::enroll::store_renewed(
                        &resolved.cert_path,
                        &resolved.key_path,
                        &issued,
                        None,
                        None,
                    ) {
                        Ok(()) => eprintln!(
                            "renewed this device's certificate (serial {}); it is used from the next connection",
                            issued.serial_hex
                        ),
                        Err(e) => eprintln!("renewed the certificate but cannot store it: {e}"),
                    },
                    Err(CliError::Client(e)) => return Err(e),
                    Err(e) => eprintln!("cannot renew the certificate: {e}"),
                }
                continue;
            }
        };
        handle(&mut client, &note, args).await?;
        write_state(state, note.event).map_err(|e| ClientError::Destination {
            path: state.to_owned(),
            reason: e.to_string(),
        })?;
        *handled += 1;
    }
}

pub(super) async fn run(
    mut resolved: Resolved,
    args: WatchArgs,
    file: &FileConfig,
) -> Result<(), CliError> {
    if let Some(dir) = &args.fetch
        && !dir.is_dir()
    {
        return Err(CliError::Usage(format!(
            "--fetch {} is not a folder; create it first",
            dir.display()
        )));
    }
    let name = resolved.config.identity.name().to_owned();
    let state = args
        .state
        .clone()
        .or_else(|| file.device.watch_state.clone())
        .unwrap_or_else(|| PathBuf::from(format!(".secured-watch-{name}")));
    read_state(&state)?;
    let mut handled = 0;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let before = handled;
        let ended = tokio::select! {
            r = watch_once(&resolved, &args, &state, &mut handled) => r,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        match ended {
            Ok(_) => return Ok(()),
            Err(e) if is_fatal(&e) => return Err(e.into()),
            Err(ClientError::NoticesOverflowed) => continue,
            Err(e) => {
                if handled > before {
                    // That connection worked: start the backoff over.
                    backoff = FIRST_BACKOFF;
                }
                // A certificate renewed meanwhile is used from now on.
                if let Err(e) = resolved.reload() {
                    eprintln!("keeping the loaded certificate: {e}");
                }
                let pause = crate::client::random_below(backoff);
                eprintln!(
                    "watch interrupted: {e}; reconnecting in {:.1} s",
                    pause.as_secs_f32()
                );
                tokio::time::sleep(pause).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
