//! `secured serve`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytesize::ByteSize;
use clap::Args;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::CliError;
use crate::config::{DEFAULT_LISTEN, FileConfig};
use crate::handshake::ServerConfig;
use crate::pki::Role;
use crate::server::{self, ServerSettings};
use crate::store::{OpenError, StoreLimits};
use crate::transfer::UploadLimits;

#[derive(Debug, Args)]
pub(super) struct ServeArgs {
    /// Address to listen on.
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
    /// Folder for received data, one subfolder per device [default: data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Seconds a device has to complete the handshake [default: 10].
    #[arg(long, value_name = "SECS")]
    handshake_timeout: Option<u64>,
    /// Seconds of silence before an established session is closed [default: 300].
    #[arg(long, value_name = "SECS")]
    idle_timeout: Option<u64>,
    /// Most sessions served at once [default: 1024].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Most connections still in the handshake; one more evicts the oldest [default: 128].
    #[arg(long, value_name = "N")]
    max_unauthenticated: Option<usize>,
    /// Seconds that transfers in flight may go on after SIGTERM or SIGINT [default: 30].
    #[arg(long, value_name = "SECS")]
    shutdown_grace: Option<u64>,
    /// Largest file a device may upload, e.g. 500MiB or 64GiB [default: 64GiB].
    #[arg(long, value_name = "SIZE")]
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
    })
}

pub(super) async fn run(args: ServeArgs, file: &FileConfig) -> Result<(), CliError> {
    let f = &file.server;
    let pick = |flag: &Option<PathBuf>, conf: &Option<PathBuf>, default: &str| {
        flag.clone()
            .or_else(|| conf.clone())
            .unwrap_or_else(|| PathBuf::from(default))
    };
    let cert = pick(&args.cert, &f.cert, "certs/server.pem");
    let key = pick(&args.key, &f.key, "keys/server.key");
    let ca = pick(&args.ca, &f.ca, "certs/ca.pem");
    let data_dir = pick(&args.data_dir, &f.data_dir, "data");
    let listen = args
        .listen
        .or_else(|| f.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let defaults = ServerSettings::default();
    let settings = ServerSettings {
        handshake_timeout: args
            .handshake_timeout
            .or(f.handshake_timeout_secs)
            .map_or(defaults.handshake_timeout, Duration::from_secs),
        idle_timeout: args
            .idle_timeout
            .or(f.idle_timeout_secs)
            .map_or(defaults.idle_timeout, Duration::from_secs),
        max_connections: args
            .max_connections
            .or(f.max_connections)
            .unwrap_or(defaults.max_connections),
        max_unauthenticated: args
            .max_unauthenticated
            .or(f.max_unauthenticated)
            .unwrap_or(defaults.max_unauthenticated),
        shutdown_grace: args
            .shutdown_grace
            .or(f.shutdown_grace_secs)
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
    };
    settings
        .storage
        .validate()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if settings.max_connections == 0 {
        return Err(CliError::Usage(
            "--max-connections must be at least 1".into(),
        ));
    }

    let config = load_server_config(&cert, &key, &ca)?;
    let listener = TcpListener::bind(&listen)
        .await
        .map_err(|e| CliError::Other(format!("cannot listen on {listen}: {e}")))?;

    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested (SIGTERM or SIGINT)");
        trigger.cancel();
    });
    server::run(listener, config, settings, shutdown)
        .await
        .map_err(
            |e| match e.get_ref().and_then(|e| e.downcast_ref::<OpenError>()) {
                // Already one sentence naming the folder.
                Some(open) => CliError::Other(open.to_string()),
                None => CliError::Other(format!(
                    "cannot use the data folder {}: {e}",
                    data_dir.display()
                )),
            },
        )
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
