//! `secured device …`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Subcommand};

use super::CliError;
use crate::client::{ClientSettings, DeviceClient, OutgoingFile};
use crate::config::{DEFAULT_LISTEN, FileConfig};
use crate::handshake::DeviceConfig;
use crate::media::{Detected, OCTET_STREAM, detect_file};
use crate::message::{MediaKind, Scope};
use crate::pki::{Role, ServerName};
use crate::store::validate_file_name;

const EXAMPLES: &str = "\
Examples:
  secured device send-text 'hello'                                  # as device-1, to 127.0.0.1:7443
  secured device --server server.example.net:7443 --name cam-2 send-file clip.mp4";

const SEND_TEXT_EXAMPLES: &str = "\
Examples:
  secured device send-text 'hello'                   # as device-1, to 127.0.0.1:7443
  echo 'from a pipe' | secured device send-text -
  secured device --server 192.0.2.10:7443 --name cam-2 send-text 'door opened'";

const SEND_FILE_EXAMPLES: &str = "\
Examples:
  secured device send-file photo.jpg clip.mp4 report.pdf   # one session; kinds detected
  secured device send-file scan.bin --store-as scan-2024.bin
  secured device send-file frame.raw --kind image           # when the bytes say nothing
  secured device --name cam-2 send-file --json backup.tar.gz";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub(super) struct DeviceArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    action: Action,
}

/// Where and as whom a device connects.
#[derive(Debug, Args)]
pub(super) struct ConnArgs {
    /// Server address, host:port [default: 127.0.0.1:7443].
    #[arg(long, global = true, value_name = "ADDR")]
    pub(super) server: Option<String>,
    /// Name the server's certificate must carry [default: the host part of --server].
    #[arg(long, global = true, value_name = "NAME")]
    pub(super) server_name: Option<String>,
    /// Device name: selects certs/NAME.pem and keys/NAME.key [default: device-1].
    #[arg(long, global = true, value_name = "NAME")]
    pub(super) name: Option<String>,
    /// Device certificate (PEM); overrides the one --name selects [default: certs/NAME.pem].
    #[arg(long, global = true, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// Device private key (PKCS#8 PEM, mode 0600); overrides the one --name
    /// selects [default: keys/NAME.key].
    #[arg(long, global = true, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Root CA certificate the server's certificate must chain to [default: certs/ca.pem].
    #[arg(long, global = true, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// CRL of the CA that issued the server's certificate: a revoked
    /// server is refused [default: none].
    #[arg(long, global = true, value_name = "FILE")]
    crl: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Send a text message (use - to read it from standard input).
    #[command(after_help = SEND_TEXT_EXAMPLES)]
    SendText {
        /// The text, UTF-8, at most 32768 bytes.
        text: String,
    },
    /// Send files (images, video or anything else), signed, over one session.
    #[command(after_help = SEND_FILE_EXAMPLES)]
    SendFile {
        /// The files to send.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Name to store the file under (one file only) [default: its file name].
        #[arg(long, value_name = "NAME")]
        store_as: Option<String>,
        /// What the files are; `auto` decides from magic bytes or the extension.
        #[arg(long, value_enum, default_value_t = KindArg::Auto)]
        kind: KindArg,
        /// Who may see the files: private, everyone, or device names
        /// separated by commas (signed with the file) [default: private, or
        /// `share` in the config file].
        #[arg(long, value_name = "SCOPE")]
        share: Option<String>,
        /// Print the transfer report as JSON (also when the session fails).
        #[arg(long)]
        json: bool,
    },
    /// List the files this device may see.
    #[command(after_help = LIST_EXAMPLES)]
    List {
        /// Only files of this owner (a device name, or `server`) [default: every owner].
        #[arg(long, value_name = "DEVICE")]
        from: Option<String>,
        /// Print JSON lines, one file per line.
        #[arg(long)]
        json: bool,
    },
    /// Download a file, verified against its owner's signature.
    #[command(after_help = FETCH_EXAMPLES)]
    Fetch(super::fetch::FetchArgs),
    /// Stay connected and report every new file this device may see.
    #[command(after_help = WATCH_EXAMPLES)]
    Watch(super::watch::WatchArgs),
    /// Get this device's first certificate with a one-time token from the
    /// server's operator; the key is made here and never leaves.
    #[command(after_help = ENROLL_EXAMPLES)]
    Enroll(super::enroll::EnrollArgs),
    /// Get a new certificate before the current one expires.
    #[command(after_help = RENEW_EXAMPLES)]
    Renew(super::enroll::RenewArgs),
}

const ENROLL_EXAMPLES: &str = "\
Examples:
  secured device enroll --server server.example.net:7443 --token st1.…
  secured admin token --name cam-7 | secured device enroll --server 127.0.0.1:7443 --token -";

const RENEW_EXAMPLES: &str = "\
Examples:
  secured device renew                 # same key, new certificate
  secured device --name cam-7 renew --new-key";

const LIST_EXAMPLES: &str = "\
Examples:
  secured device list                     # every file this device may see
  secured device list --from cam-2 --json";

const FETCH_EXAMPLES: &str = "\
Examples:
  secured device fetch clip.mp4                    # into ./clip.mp4, verified
  secured device fetch clip.mp4 --from cam-2 -o ~/Videos/
  secured device fetch firmware.bin --from server --force -o fw.bin";

const WATCH_EXAMPLES: &str = "\
Examples:
  secured device watch                             # print a line per new file
  secured device watch --fetch ~/Inbox             # and download each, verified
  secured device watch --json --exec ./on-new-file.sh";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum KindArg {
    /// A still image.
    Image,
    /// A video.
    Video,
    /// Any other file (a document, an archive, raw bytes).
    File,
    /// Image or video if the content says so, otherwise file.
    Auto,
}

/// The resolved connection settings.
pub(super) struct Resolved {
    pub(super) addr: String,
    pub(super) config: DeviceConfig,
    pub(super) cert_path: PathBuf,
    pub(super) key_path: PathBuf,
    pub(super) ca_path: PathBuf,
    /// The CRL that the server's certificate is checked against, if any.
    pub(super) server_crl: Option<Arc<crate::pki::crl::VerifiedCrl>>,
}

impl Resolved {
    /// Loads the certificate and key again (after a renewal).
    pub(super) fn reload(&mut self) -> Result<(), CliError> {
        self.config = load_device_config(
            &self.cert_path,
            &self.key_path,
            &self.ca_path,
            self.config.server_name.clone(),
        )?;
        Ok(())
    }

    /// The client settings for this device: default limits, and the
    /// server CRL when one was given.
    pub(super) fn settings(&self) -> ClientSettings {
        ClientSettings {
            server_crl: self.server_crl.clone(),
            ..ClientSettings::default()
        }
    }
}

/// Checks a file before connecting and fills in its metadata.
fn prepare_file(
    path: &Path,
    store_as: Option<&str>,
    kind: KindArg,
    scope: &Scope,
) -> Result<OutgoingFile, CliError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| CliError::Other(format!("cannot read {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(CliError::Other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let name = match store_as {
        Some(n) => n.to_owned(),
        None => path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                CliError::Other(format!(
                    "{} has no UTF-8 file name; pass --store-as NAME",
                    path.display()
                ))
            })?
            .to_owned(),
    };
    validate_file_name(&name).map_err(|reason| {
        CliError::Usage(format!("cannot send a file named {name:?}: {reason}"))
    })?;
    let detected = detect_file(path)
        .map_err(|e| CliError::Other(format!("cannot read {}: {e}", path.display())))?;
    let (kind, content_type) = resolve_kind(path, kind, detected)?;
    Ok(OutgoingFile {
        path: path.to_owned(),
        name,
        kind,
        content_type,
        size: meta.len(),
        scope: scope.clone(),
    })
}

/// The kind and content type to declare for a file: what detection found,
/// or the kind the user forced. Forcing `image` or `video` on content whose
/// magic bytes say otherwise is refused; `file` fits anything.
fn resolve_kind(
    path: &Path,
    arg: KindArg,
    detected: Detected,
) -> Result<(MediaKind, String), CliError> {
    let forced = match arg {
        KindArg::Auto => return Ok((detected.kind, detected.content_type)),
        KindArg::File => return Ok((MediaKind::File, detected.content_type)),
        KindArg::Image => MediaKind::Image,
        KindArg::Video => MediaKind::Video,
    };
    if detected.kind == forced {
        Ok((forced, detected.content_type))
    } else if detected.by_magic {
        let (looks, pass) = match detected.kind {
            MediaKind::Image => ("an image", "--kind image"),
            MediaKind::Video => ("a video", "--kind video"),
            MediaKind::File => ("neither an image nor a video", "--kind file"),
        };
        Err(CliError::Usage(format!(
            "{} looks like {looks} ({}), not {}; pass {pass} or leave --kind out",
            path.display(),
            detected.content_type,
            if forced == MediaKind::Image {
                "an image"
            } else {
                "a video"
            },
        )))
    } else {
        // The bytes say nothing and only the extension disagrees: the user
        // knows better, but the extension's type would be a lie.
        Ok((forced, OCTET_STREAM.to_owned()))
    }
}

/// The host part of `host:port` or `[v6]:port`.
pub(super) fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rsplit_once(':') {
        Some((host, _)) => host,
        None => addr,
    }
}

pub(super) fn resolve(args: &ConnArgs, file: &FileConfig) -> Result<Resolved, CliError> {
    let f = &file.device;
    let addr = args
        .server
        .clone()
        .or_else(|| f.server.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let name = args
        .name
        .clone()
        .or_else(|| f.name.clone())
        .unwrap_or_else(|| "device-1".to_owned());
    let certs = file
        .pki
        .certs_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("certs"));
    let keys = file
        .pki
        .keys_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("keys"));
    let cert = args
        .cert
        .clone()
        .or_else(|| f.cert.clone())
        .unwrap_or_else(|| certs.join(format!("{name}.pem")));
    let key = args
        .key
        .clone()
        .or_else(|| f.key.clone())
        .unwrap_or_else(|| keys.join(format!("{name}.key")));
    let ca = args
        .ca
        .clone()
        .or_else(|| f.ca.clone())
        .unwrap_or_else(|| certs.join("ca.pem"));
    let server_name_text = args
        .server_name
        .clone()
        .or_else(|| f.server_name.clone())
        .unwrap_or_else(|| host_of(&addr).to_owned());
    let server_name: ServerName = server_name_text.parse().map_err(CliError::Pki)?;
    let config = load_device_config(&cert, &key, &ca, server_name)?;
    let server_crl = match args.crl.clone().or_else(|| f.crl.clone()) {
        None => None,
        Some(path) => {
            // The CRL of the CA that issued the server: the device's own
            // issuing CA (one CA issues both), else the root.
            let issuer = crate::pki::crl_issuer_for(
                &config.anchor,
                config.identity.cert_der(),
                config.identity.chain(),
                config.provider,
            )
            .map_err(|e| CliError::Other(format!("cannot use the CRL {}: {e}", path.display())))?;
            let crl =
                crate::pki::crl::VerifiedCrl::load(&path, &issuer, std::time::SystemTime::now())?;
            Some(Arc::new(crl))
        }
    };

    Ok(Resolved {
        addr,
        config,
        cert_path: cert,
        key_path: key,
        ca_path: ca,
        server_crl,
    })
}

/// Loads and cross-checks the device's certificate, key and CA.
pub(super) fn load_device_config(
    cert: &Path,
    key: &Path,
    ca: &Path,
    server_name: ServerName,
) -> Result<DeviceConfig, CliError> {
    let (identity, anchor) = super::load_own_identity(cert, key, ca, Role::Device)?;
    Ok(DeviceConfig {
        identity: Arc::new(identity),
        anchor: Arc::new(anchor),
        server_name,
        provider: super::provider(),
        versions: crate::message::SUPPORTED_VERSIONS,
    })
}

pub(super) async fn run(args: DeviceArgs, file: &FileConfig) -> Result<(), CliError> {
    match args.action {
        Action::SendFile {
            paths,
            store_as,
            kind,
            share,
            json,
        } => {
            let share = share.or_else(|| file.device.share.clone());
            let scope = match share.as_deref() {
                None => Scope::Private,
                Some(text) => Scope::parse(text).map_err(|e| {
                    CliError::Usage(format!(
                        "--share {text:?} is not a scope: {e}; use private, everyone, or device names separated by commas"
                    ))
                })?,
            };
            if store_as.is_some() && paths.len() > 1 {
                return Err(CliError::Usage(
                    "--store-as applies to a single file; send the files one by one to rename them"
                        .into(),
                ));
            }
            let files = paths
                .iter()
                .map(|p| prepare_file(p, store_as.as_deref(), kind, &scope))
                .collect::<Result<Vec<_>, _>>()?;
            let resolved = resolve(&args.conn, file)?;
            let settings = resolved.settings();
            super::files::send_files(&resolved.addr, resolved.config, settings, &files, json).await
        }
        Action::List { from, json } => {
            let resolved = resolve(&args.conn, file)?;
            super::fetch::list(&resolved, from.as_deref(), json).await
        }
        Action::Fetch(fetch) => {
            let resolved = resolve(&args.conn, file)?;
            super::fetch::run(&resolved, fetch).await
        }
        Action::Watch(watch) => {
            let resolved = resolve(&args.conn, file)?;
            super::watch::run(resolved, watch, file).await
        }
        Action::Enroll(enroll) => super::enroll::run_enroll(&args.conn, enroll, file).await,
        Action::Renew(renew) => super::enroll::run_renew(&args.conn, renew, file).await,
        Action::SendText { text } => {
            let text = if text == "-" {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s).map_err(|e| {
                    CliError::Other(format!("cannot read the text from standard input: {e}"))
                })?;
                s
            } else {
                text
            };
            let resolved = resolve(&args.conn, file)?;
            let device = resolved.config.identity.name().to_owned();
            let started = Instant::now();
            let settings = resolved.settings();
            let mut client =
                DeviceClient::connect(&resolved.addr, resolved.config, settings).await?;
            let server = client.server().name().to_owned();
            let ack = client.send_text(&text).await?;
            super::files::close_after_receipts(client, true).await?;
            println!(
                "sent {} bytes as {device} to {server} ({}), stream {}: {} in {} ms",
                text.len(),
                resolved.addr,
                ack.stream,
                ack.status,
                started.elapsed().as_millis()
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn host_part() {
        assert_eq!(host_of("127.0.0.1:7443"), "127.0.0.1");
        assert_eq!(host_of("example.net:1"), "example.net");
        assert_eq!(host_of("[::1]:7443"), "::1");
        assert_eq!(host_of("example.net"), "example.net");
    }
}
