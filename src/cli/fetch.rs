//! `secured device list` and `secured device fetch`: what this device may
//! see, and verified downloads of it.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use super::CliError;
use super::device::Resolved;
use super::files::human_size;
use crate::client::{Destination, DeviceClient, Fetched};
use crate::message::FileInfo;

/// `device fetch`.
#[derive(Debug, Args)]
pub(super) struct FetchArgs {
    /// The file: its name as `list` shows it.
    #[arg(value_name = "NAME")]
    file: String,
    /// The owner, when several devices have a file of that name [default: any owner].
    #[arg(long, value_name = "DEVICE")]
    from: Option<String>,
    /// Where to write it: a file, or a folder (ending in / or existing) to
    /// write it in under its signed name [default: the current folder].
    #[arg(short, long, value_name = "PATH")]
    output: Option<PathBuf>,
    /// Replace the destination if it exists.
    #[arg(long)]
    force: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn rfc3339_ms(ms: u64) -> String {
    let t = time::OffsetDateTime::UNIX_EPOCH + Duration::from_millis(ms);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// One file as JSON (list lines, watch lines, fetch reports).
pub(super) fn info_json(f: &FileInfo) -> serde_json::Value {
    json!({
        "id": f.id,
        "owner": f.owner,
        "name": f.name,
        "stored_as": f.stored_as,
        "size": f.size,
        "kind": f.kind.name(),
        "content_type": f.content_type,
        "sha256": hex::encode(f.sha256),
        "signed_at": (f.signed_at != 0).then(|| rfc3339_ms(f.signed_at.saturating_mul(1000))),
        "stored_at": rfc3339_ms(f.stored_at),
        "scope": f.scope.to_string(),
    })
}

async fn connect(resolved: &Resolved) -> Result<DeviceClient<tokio::net::TcpStream>, CliError> {
    Ok(DeviceClient::connect(&resolved.addr, resolved.config.clone(), resolved.settings()).await?)
}

pub(super) async fn list(
    resolved: &Resolved,
    from: Option<&str>,
    json: bool,
) -> Result<(), CliError> {
    let mut client = connect(resolved).await?;
    let files = client.list(from).await?;
    client.close().await?;
    if json {
        for f in &files {
            println!("{}", info_json(f));
        }
        return Ok(());
    }
    if files.is_empty() {
        println!("no files visible to {}", resolved.config.identity.name());
        return Ok(());
    }
    println!(
        "{:<16} {:<32} {:>12} {:<6} {:<20} {:<12} SHA-256",
        "OWNER", "NAME", "SIZE", "KIND", "STORED", "SCOPE"
    );
    for f in &files {
        let stored = rfc3339_ms(f.stored_at);
        println!(
            "{:<16} {:<32} {:>12} {:<6} {:<20} {:<12} {}",
            f.owner,
            f.stored_as,
            f.size,
            f.kind.name(),
            stored.get(..19).unwrap_or(&stored),
            f.scope.to_string(),
            &hex::encode(f.sha256)[..16],
        );
    }
    Ok(())
}

/// The one file `name` (of `from`) among `files`: by the name the server
/// stored it under, else by the name its owner signed.
pub(super) fn pick<'a>(
    files: &'a [FileInfo],
    name: &str,
    from: Option<&str>,
) -> Result<&'a FileInfo, CliError> {
    let by_stored: Vec<&FileInfo> = files.iter().filter(|f| f.stored_as == name).collect();
    let found = if by_stored.is_empty() {
        files.iter().filter(|f| f.name == name).collect()
    } else {
        by_stored
    };
    match found[..] {
        [] => Err(CliError::Other(format!(
            "no file named {name:?}{} is visible to this device; run `secured device list` to see what is",
            from.map(|d| format!(" from {d}")).unwrap_or_default()
        ))),
        [one] => Ok(one),
        ref many => {
            let mut owners: Vec<&str> = many.iter().map(|f| f.owner.as_str()).collect();
            owners.sort_unstable();
            owners.dedup();
            if owners.len() > 1 {
                Err(CliError::Usage(format!(
                    "{} files named {name:?} are visible, from {}; pass --from DEVICE",
                    many.len(),
                    owners.join(", ")
                )))
            } else {
                let stored: Vec<&str> = many.iter().map(|f| f.stored_as.as_str()).collect();
                Err(CliError::Usage(format!(
                    "{} files of {} were sent as {name:?}: {}; fetch one by the name list shows",
                    many.len(),
                    owners[0],
                    stored.join(", ")
                )))
            }
        }
    }
}

/// The destination for `-o PATH`: a folder if it exists as one or ends in
/// `/`, else a file path.
pub(super) fn destination(output: Option<PathBuf>, force: bool) -> Destination {
    let path = output.unwrap_or_else(|| PathBuf::from("."));
    let is_dir = path.is_dir() || path.as_os_str().to_string_lossy().ends_with('/');
    Destination {
        path,
        is_dir,
        force,
    }
}

/// The report of a verified download, as text or JSON.
pub(super) fn report(fetched: &Fetched, json: bool) -> String {
    let f = &fetched.info;
    let secs = fetched.elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        f.size as f64 / secs / 1e6
    } else {
        0.0
    };
    let signed = if fetched.time_signed {
        rfc3339_ms(f.signed_at.saturating_mul(1000))
    } else {
        format!(
            "{} (version 1 upload: the server's time)",
            rfc3339_ms(f.stored_at)
        )
    };
    if json {
        let mut v = info_json(f);
        v["path"] = json!(fetched.path.display().to_string());
        v["signer"] = json!(fetched.signer);
        v["verified"] = json!(true);
        v["duration_ms"] = json!(u64::try_from(fetched.elapsed.as_millis()).unwrap_or(u64::MAX));
        v["mb_per_s"] = json!((rate * 10.0).round() / 10.0);
        return v.to_string();
    }
    format!(
        "fetched {} from {} to {}: {}, {}, SHA-256 {}\n  signature of {} verified (signed {}, scope {}); {:.1} MB/s in {} ms",
        f.stored_as,
        f.owner,
        fetched.path.display(),
        human_size(f.size),
        f.content_type,
        hex::encode(f.sha256),
        fetched.signer,
        signed,
        f.scope,
        rate,
        fetched.elapsed.as_millis(),
    )
}

pub(super) async fn run(resolved: &Resolved, args: FetchArgs) -> Result<(), CliError> {
    let to = destination(args.output, args.force);
    let mut client = connect(resolved).await?;
    let files = client.list(args.from.as_deref()).await?;
    let file = pick(&files, &args.file, args.from.as_deref())?.clone();
    let animate = !args.json && std::io::stderr().is_terminal();
    let progress = super::files::progress_bar(file.size, file.stored_as.clone(), animate);
    let fetched = client.fetch(file.id, &to, |n| progress.inc(n)).await;
    progress.finish_and_clear();
    let fetched = fetched?;
    client.close().await?;
    println!("{}", report(&fetched, args.json));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{MediaKind, Scope};

    fn info(id: u64, owner: &str, name: &str, stored_as: &str) -> FileInfo {
        FileInfo {
            id,
            owner: owner.into(),
            name: name.into(),
            stored_as: stored_as.into(),
            kind: MediaKind::File,
            size: 1,
            content_type: "text/plain".into(),
            sha256: [0; 32],
            signed_at: 0,
            stored_at: 0,
            scope: Scope::Everyone,
        }
    }

    #[test]
    fn picking_a_file_by_name() {
        let files = [
            info(1, "a", "x.txt", "x.txt"),
            info(2, "a", "x.txt", "x (1).txt"),
            info(3, "b", "y.txt", "y.txt"),
            info(4, "c", "y.txt", "y.txt"),
        ];
        assert_eq!(pick(&files, "x (1).txt", None).unwrap().id, 2);
        assert_eq!(pick(&files, "x.txt", None).unwrap().id, 1);
        assert_eq!(
            pick(&files, "y.txt", None).unwrap_err().to_string(),
            "2 files named \"y.txt\" are visible, from b, c; pass --from DEVICE"
        );
        assert_eq!(
            pick(&files, "z", Some("b")).unwrap_err().to_string(),
            "no file named \"z\" from b is visible to this device; run `secured device list` to see what is"
        );
        let same_owner = [
            info(1, "a", "p.jpg", "p (1).jpg"),
            info(2, "a", "p.jpg", "p (2).jpg"),
        ];
        assert_eq!(
            pick(&same_owner, "p.jpg", None).unwrap_err().to_string(),
            "2 files of a were sent as \"p.jpg\": p (1).jpg, p (2).jpg; fetch one by the name list shows"
        );
    }
}
