//! `secured serve`.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytesize::ByteSize;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::CliError;
use crate::config::{DEFAULT_LISTEN, FileConfig, pick_path, server_defaults};
use crate::handshake::ServerConfig;
use crate::pki::{CertificateAuthority, Role};
use crate::server::{self, ServerSettings};
use crate::store::{OpenError, StoreLimits};
use crate::transfer::UploadLimits;

const EXAMPLES: &str = "\
Examples:
  secured serve                                       # 127.0.0.1:7443, certs/server.pem, keys/server.key, certs/ca.pem
  secured serve --listen 0.0.0.0:7443 --data-dir /srv/secured
  secured serve --max-file-size 2GiB --idle-timeout 60
  secured --log-format json serve                     # one JSON object per line, for journald
  secured --config /etc/secured.toml serve";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub(super) struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:7443].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Server certificate (PEM) [default: certs/server.pem].
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// Server private key (PKCS#8 PEM) [default: keys/server.key].
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// CA certificate that issued the device certificates [default: certs/ca.pem].
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Folder for received data: the index of files and their contents [default: data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Seconds a device has to complete the handshake, 1 to 300 [default: 10].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(HANDSHAKE_TIMEOUT_SECS))]
    handshake_timeout: Option<u64>,
    /// Seconds of silence before an established session is closed, 1 to 86400 [default: 300].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(IDLE_TIMEOUT_SECS))]
    idle_timeout: Option<u64>,
    /// Most sessions served at once, 1 to 1000000 [default: 1024].
    #[arg(long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(CONNECTIONS))]
    max_connections: Option<usize>,
    /// Most connections still in the handshake, 1 to 1000000; one more evicts the oldest [default: 128].
    #[arg(long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(CONNECTIONS))]
    max_unauthenticated: Option<usize>,
    /// Seconds that transfers in flight may go on after SIGTERM or SIGINT, 0 to 3600 [default: 30].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(SHUTDOWN_GRACE_SECS))]
    shutdown_grace: Option<u64>,
    /// Largest file a device may upload, at least 1 byte, e.g. 500MiB or 64GiB [default: 64GiB].
    #[arg(long, value_name = "SIZE", value_parser = max_file_size)]
    max_file_size: Option<ByteSize>,
    /// Most bytes one device may store, uploads in flight included [default: 256GiB].
    #[arg(long, value_name = "SIZE")]
    quota_bytes_per_device: Option<ByteSize>,
    /// Most files one device may store, uploads in flight included [default: 100000].
    #[arg(long, value_name = "N")]
    quota_files_per_device: Option<u64>,
    /// Free space to keep on the data folder's file system; uploads that would leave less are refused [default: 1GiB].
    #[arg(long, value_name = "SIZE")]
    min_free_space: Option<ByteSize>,
    /// Publish this file as the server, signed with its key and visible to
    /// every device (repeat for several; the same file again is kept once).
    #[arg(long, value_name = "FILE")]
    publish: Vec<PathBuf>,
    /// Issuing CA certificate, for enrolling and renewing devices
    /// [default: certs/issuing-ca.pem; without it and its key the server
    /// issues nothing].
    #[arg(long, value_name = "FILE")]
    issuing_cert: Option<PathBuf>,
    /// Issuing CA private key [default: keys/issuing-ca.key].
    #[arg(long, value_name = "FILE")]
    issuing_key: Option<PathBuf>,
    /// Certificate revocation list checked at every handshake, reloaded
    /// when it changes, and kept fresh when the server holds the issuing CA
    /// [default: certs/crl.pem].
    #[arg(long, value_name = "FILE")]
    crl: Option<PathBuf>,
    /// Validity of the device certificates the server issues, in days,
    /// 1 to 825 [default: 30].
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=825))]
    device_cert_days: Option<u32>,
    /// Days notices are kept for watchers that reconnect, 1 to 3650 [default: 7].
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u64).range(RETENTION_DAYS))]
    notice_retention_days: Option<u64>,
}

/// Allowed `--notice-retention-days` (and `notice_retention_days`).
const RETENTION_DAYS: RangeInclusive<u64> = 1..=3_650;

/// Allowed `--handshake-timeout` (and `handshake_timeout_secs`), in seconds.
const HANDSHAKE_TIMEOUT_SECS: RangeInclusive<u64> = 1..=300;
/// Allowed `--idle-timeout` (and `idle_timeout_secs`), in seconds.
const IDLE_TIMEOUT_SECS: RangeInclusive<u64> = 1..=86_400;
/// Allowed `--max-connections` and `--max-unauthenticated`.
const CONNECTIONS: RangeInclusive<u64> = 1..=1_000_000;
/// Allowed `--shutdown-grace` (and `shutdown_grace_secs`), in seconds; 0
/// closes transfers in flight at once.
const SHUTDOWN_GRACE_SECS: RangeInclusive<u64> = 0..=3_600;

/// Parses `--max-file-size`: a size of at least one byte.
fn max_file_size(value: &str) -> Result<ByteSize, String> {
    let size: ByteSize = value.parse()?;
    if size.as_u64() == 0 {
        return Err("the largest file must be at least 1 byte, e.g. 500MiB or 64GiB".into());
    }
    Ok(size)
}

/// Checks a number from the configuration file against the range its flag
/// allows (clap checks the flag itself).
fn from_file<T: Copy + TryInto<u64>>(
    config: Option<&Path>,
    key: &str,
    value: Option<T>,
    range: RangeInclusive<u64>,
    unit: &str,
) -> Result<Option<T>, CliError> {
    let Some(v) = value else { return Ok(None) };
    match v.try_into() {
        Ok(n) if range.contains(&n) => Ok(Some(v)),
        Ok(n) => Err(CliError::Usage(format!(
            "{}: [server] {key} = {n} is not in {}..={}; set {unit} in that range, or remove it for the default",
            config_name(config),
            range.start(),
            range.end()
        ))),
        Err(_) => Err(CliError::Usage(format!(
            "{}: [server] {key} is too large; set {unit} in {}..={}",
            config_name(config),
            range.start(),
            range.end()
        ))),
    }
}

fn config_name(config: Option<&Path>) -> String {
    config.map_or_else(
        || "the configuration file".to_owned(),
        |p| p.display().to_string(),
    )
}

/// Where the server finds what it trusts and signs with; reloaded on SIGHUP.
#[derive(Debug, Clone)]
pub(super) struct TrustFiles {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    issuing_cert: PathBuf,
    issuing_key: PathBuf,
    crl: PathBuf,
}

impl TrustFiles {
    /// Loads everything; the issuing CA only when both its files exist.
    fn load(&self) -> Result<(ServerConfig, Option<Arc<CertificateAuthority>>), CliError> {
        let config = load_server_config(&self.cert, &self.key, &self.ca)?;
        let issuer = if self.issuing_cert.exists() && self.issuing_key.exists() {
            super::refuse_open_key(&self.issuing_key)?;
            let ca = CertificateAuthority::load_with(
                &self.issuing_cert,
                &self.issuing_key,
                Some(super::passphrase_source()),
                config.provider,
            )?;
            // It must chain to the root the server trusts, or what it
            // issues would be refused by every device.
            let above = ca.chain().get(1..).unwrap_or_default();
            let chained = ca.trust_anchor().cert_der() == config.anchor.cert_der()
                || crate::pki::verify_ca(
                    &config.anchor,
                    ca.cert_der(),
                    above,
                    std::time::SystemTime::now(),
                )
                .is_ok();
            if !chained {
                return Err(CliError::Other(format!(
                    "the issuing CA {} does not chain to the root {}; make both with `secured pki init`, or pass --issuing-cert and --issuing-key of the right CA",
                    self.issuing_cert.display(),
                    self.ca.display()
                )));
            }
            Some(Arc::new(ca))
        } else {
            None
        };
        Ok((config, issuer))
    }
}

/// Warns when the root CA's private key sits beside the server's keys:
/// whoever takes the server host would take the root too.
fn warn_if_root_key_readable(files: &TrustFiles) {
    let Some(keys_dir) = files.key.parent() else {
        return;
    };
    let root_key = keys_dir.join("ca.key");
    if std::fs::File::open(&root_key).is_ok() {
        tracing::warn!(
            root_key = %root_key.display(),
            "the root CA's private key is readable by the server; move it offline (the server needs only the issuing CA's key)"
        );
    }
}

/// Loads and cross-checks the server's certificate, key and CA.
pub(super) fn load_server_config(
    cert: &std::path::Path,
    key: &std::path::Path,
    ca: &std::path::Path,
) -> Result<ServerConfig, CliError> {
    let (identity, anchor) = super::load_own_identity(cert, key, ca, Role::Server)?;
    Ok(ServerConfig {
        identity: Arc::new(identity),
        anchor: Arc::new(anchor),
        provider: super::provider(),
        versions: crate::message::SUPPORTED_VERSIONS,
    })
}

pub(super) async fn run(
    args: ServeArgs,
    file: &FileConfig,
    config_path: Option<&Path>,
) -> Result<(), CliError> {
    let f = &file.server;
    let conf = config_path;
    let handshake_timeout = from_file(
        conf,
        "handshake_timeout_secs",
        f.handshake_timeout_secs,
        HANDSHAKE_TIMEOUT_SECS,
        "a number of seconds",
    )?;
    let idle_timeout = from_file(
        conf,
        "idle_timeout_secs",
        f.idle_timeout_secs,
        IDLE_TIMEOUT_SECS,
        "a number of seconds",
    )?;
    let max_connections = from_file(
        conf,
        "max_connections",
        f.max_connections,
        CONNECTIONS,
        "a number of sessions",
    )?;
    let max_unauthenticated = from_file(
        conf,
        "max_unauthenticated",
        f.max_unauthenticated,
        CONNECTIONS,
        "a number of connections",
    )?;
    let hello_timeout = from_file(
        conf,
        "hello_timeout_secs",
        f.hello_timeout_secs,
        HANDSHAKE_TIMEOUT_SECS,
        "a number of seconds",
    )?;
    let per_source = from_file(
        conf,
        "max_unauthenticated_per_source",
        f.max_unauthenticated_per_source,
        CONNECTIONS,
        "a number of connections",
    )?;
    let early_drop_start = from_file(
        conf,
        "early_drop_start",
        f.early_drop_start,
        CONNECTIONS,
        "a number of connections",
    )?;
    let early_drop_percent = from_file(
        conf,
        "early_drop_percent",
        f.early_drop_percent,
        0..=100,
        "a percentage",
    )?;
    let shutdown_grace = from_file(
        conf,
        "shutdown_grace_secs",
        f.shutdown_grace_secs,
        SHUTDOWN_GRACE_SECS,
        "a number of seconds",
    )?;
    let retention = from_file(
        conf,
        "notice_retention_days",
        f.notice_retention_days,
        RETENTION_DAYS,
        "a number of days",
    )?;
    let mut publish = args.publish.clone();
    publish.extend(f.publish.iter().flatten().cloned());
    for path in &publish {
        if !path.is_file() {
            return Err(CliError::Usage(format!(
                "--publish {}: there is no such file; give the path of a file to publish",
                path.display()
            )));
        }
    }
    if f.max_file_size.is_some_and(|b| b.as_u64() == 0) {
        return Err(CliError::Usage(format!(
            "{}: [server] max_file_size is 0 bytes; set a size of at least 1 byte, e.g. \"64GiB\", or remove it for the default",
            config_name(conf)
        )));
    }
    let pick = |flag: &Option<PathBuf>, conf: &Option<PathBuf>, default: &str| {
        pick_path(flag.as_ref(), conf.as_ref(), default)
    };
    let cert = pick(&args.cert, &f.cert, server_defaults::CERT);
    let key = pick(&args.key, &f.key, server_defaults::KEY);
    let ca = pick(&args.ca, &f.ca, server_defaults::CA);
    let data_dir = pick(&args.data_dir, &f.data_dir, server_defaults::DATA_DIR);
    let files = TrustFiles {
        cert: cert.clone(),
        key: key.clone(),
        ca: ca.clone(),
        issuing_cert: pick(
            &args.issuing_cert,
            &f.issuing_cert,
            server_defaults::ISSUING_CERT,
        ),
        issuing_key: pick(
            &args.issuing_key,
            &f.issuing_key,
            server_defaults::ISSUING_KEY,
        ),
        crl: pick(&args.crl, &f.crl, server_defaults::CRL),
    };
    let crl_path = files.crl.clone();
    let listen = args
        .listen
        .or_else(|| f.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let defaults = ServerSettings::default();
    let settings = ServerSettings {
        handshake_timeout: args
            .handshake_timeout
            .or(handshake_timeout)
            .map_or(defaults.handshake_timeout, Duration::from_secs),
        idle_timeout: args
            .idle_timeout
            .or(idle_timeout)
            .map_or(defaults.idle_timeout, Duration::from_secs),
        max_connections: args
            .max_connections
            .or(max_connections)
            .unwrap_or(defaults.max_connections),
        max_unauthenticated: args
            .max_unauthenticated
            .or(max_unauthenticated)
            .unwrap_or(defaults.max_unauthenticated),
        hello_timeout: hello_timeout.map_or(defaults.hello_timeout, Duration::from_secs),
        max_unauthenticated_per_source: per_source
            .unwrap_or(defaults.max_unauthenticated_per_source),
        early_drop_start: early_drop_start.unwrap_or(defaults.early_drop_start),
        early_drop_percent: early_drop_percent.unwrap_or(defaults.early_drop_percent),
        shutdown_grace: args
            .shutdown_grace
            .or(shutdown_grace)
            .map_or(defaults.shutdown_grace, Duration::from_secs),
        data_dir: data_dir.clone(),
        uploads: UploadLimits {
            max_file_size: args
                .max_file_size
                .or(f.max_file_size)
                .map_or(defaults.uploads.max_file_size, |b| b.as_u64()),
        },
        storage: StoreLimits {
            quota_bytes_per_device: args
                .quota_bytes_per_device
                .or(f.quota_bytes_per_device)
                .map_or(defaults.storage.quota_bytes_per_device, |b| b.as_u64()),
            quota_files_per_device: args
                .quota_files_per_device
                .or(f.quota_files_per_device)
                .unwrap_or(defaults.storage.quota_files_per_device),
            max_uploads_per_device: f
                .max_uploads_per_device
                .unwrap_or(defaults.storage.max_uploads_per_device),
            min_free_space: args
                .min_free_space
                .or(f.min_free_space)
                .map_or(defaults.storage.min_free_space, |b| b.as_u64()),
        },
        publish,
        notice_retention: args
            .notice_retention_days
            .or(retention)
            .map_or(defaults.notice_retention, |d| {
                Duration::from_secs(d * 86_400)
            }),
        device_validity_days: args
            .device_cert_days
            .or(f.device_cert_days)
            .unwrap_or(defaults.device_validity_days),
        ..defaults
    };
    settings
        .storage
        .validate()
        .map_err(|e| CliError::Usage(e.to_string()))?;

    let (config, issuer) = files.load()?;
    warn_if_root_key_readable(&files);
    let mut settings = settings;
    // Revocation is on when there is a CRL, or an issuing CA to sign one.
    settings.crl_path = (issuer.is_some() || crl_path.exists()).then_some(crl_path);
    if issuer.is_none() {
        tracing::info!(
            issuing_cert = %files.issuing_cert.display(),
            "no issuing CA key: enrollment and renewal are off"
        );
    }
    settings.issuer = issuer;
    raise_file_limit(&settings);
    let listener = crate::net::bind(&listen)
        .await
        .map_err(|e| CliError::Other(format!("cannot listen on {listen}: {e}")))?;

    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested (SIGTERM or SIGINT)");
        trigger.cancel();
    });
    let server = server::Server::new(config, settings);
    let trust = server.trust().clone();
    tokio::spawn(reload_on_hangup(trust, files));
    server.run(listener, shutdown).await.map_err(|e| {
        match e.get_ref().and_then(|e| e.downcast_ref::<OpenError>()) {
            // Already one sentence naming the folder.
            Some(open) => CliError::Other(open.to_string()),
            None if e.get_ref().is_some_and(|e| e.is::<server::PublishError>()) => {
                CliError::Other(e.to_string())
            }
            None => CliError::Other(format!(
                "cannot use the data folder {}: {e}",
                data_dir.display()
            )),
        }
    })
}

/// Raises the soft limit on open files to the hard limit: every session
/// and every pending handshake holds a descriptor. Warns when even that is
/// below what the limits allow.
fn raise_file_limit(settings: &ServerSettings) {
    let wanted = (settings.max_connections + 2 * settings.max_unauthenticated + 64) as u64;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < wanted => tracing::warn!(
            open_files = limit,
            wanted,
            "the open-file limit is below what max_connections and max_unauthenticated allow; raise it (ulimit -n, or LimitNOFILE= for a service)"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

/// Reloads the certificates, keys and CRL on every SIGHUP, without
/// dropping sessions; a reload that fails keeps what was loaded.
async fn reload_on_hangup(trust: server::TrustHandle, files: TrustFiles) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hangup.recv().await.is_some() {
        // Blocking work, off the runtime: files, a passphrase (perhaps from
        // the terminal), scrypt for an encrypted key, RSA and CRL checks.
        let (trust, files) = (trust.clone(), files.clone());
        let _ = tokio::task::spawn_blocking(move || reload(&trust, &files)).await;
    }
}

/// One SIGHUP reload; a reload that fails keeps what was loaded.
fn reload(trust: &server::TrustHandle, files: &TrustFiles) {
    match files.load() {
        Ok((config, issuer)) => {
            let crl = trust.current().crl.clone();
            trust.replace(server::Trust {
                config,
                issuer,
                crl,
            });
            tracing::info!("reloaded the certificates and keys (SIGHUP)");
            if files.crl.exists() {
                let _ = server::trust::load_into(trust, &files.crl);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "reload failed (SIGHUP); keeping the previous certificates")
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Args;

    use super::*;

    /// The defaults the help shows are the ones the server uses.
    #[test]
    fn help_shows_the_real_defaults() {
        let mut command = ServeArgs::augment_args(clap::Command::new("serve"));
        let help = command.render_long_help().to_string();
        let d = ServerSettings::default();
        for (flag, default) in [
            (
                "--handshake-timeout",
                d.handshake_timeout.as_secs().to_string(),
            ),
            ("--idle-timeout", d.idle_timeout.as_secs().to_string()),
            ("--max-connections", d.max_connections.to_string()),
            ("--max-unauthenticated", d.max_unauthenticated.to_string()),
            ("--shutdown-grace", d.shutdown_grace.as_secs().to_string()),
            ("--listen", DEFAULT_LISTEN.to_owned()),
        ] {
            let start = help
                .find(&format!("{flag} <"))
                .unwrap_or_else(|| panic!("no {flag} in {help}"));
            let entry = &help[start..];
            let entry = &entry[..entry.find("\n      -").unwrap_or(entry.len())];
            assert!(
                entry.contains(&format!("[default: {default}]")),
                "{flag}: {entry}"
            );
        }
        assert_eq!(d.uploads.max_file_size, 64 << 30);
        assert!(help.contains("[default: 64GiB]"), "{help}");
    }

    #[test]
    fn configuration_values_outside_the_flag_range_are_refused() {
        let conf = Some(Path::new("s.toml"));
        assert_eq!(
            from_file(conf, "k", Some(5u64), 1..=300, "seconds").unwrap(),
            Some(5)
        );
        assert_eq!(
            from_file::<u64>(conf, "k", None, 1..=300, "seconds").unwrap(),
            None
        );
        let err = from_file(conf, "k", Some(0usize), 1..=300, "a number of seconds")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "s.toml: [server] k = 0 is not in 1..=300; set a number of seconds in that range, or remove it for the default"
        );
    }
}
