//! `secured demo`: a throwaway PKI, a server on loopback, a device that
//! authenticates, sends text and closes; every step printed.

use std::time::Instant;

use clap::Args;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::CliError;
use super::device::load_device_config;
use super::serve::load_server_config;
use crate::client::{ClientSettings, DeviceClient};
use crate::crypto::default_provider;
use crate::pki::{self, InitOptions, PkiPaths, ServerName};
use crate::server::{self, ServerSettings};

#[derive(Debug, Args)]
pub(super) struct DemoArgs {
    /// The text the device sends.
    #[arg(long, default_value = "hello from device-1")]
    text: String,
    /// Keep the temporary folder (PKI and data) instead of deleting it.
    #[arg(long)]
    keep: bool,
}

fn other(what: &str) -> impl Fn(std::io::Error) -> CliError + '_ {
    move |e| CliError::Other(format!("{what}: {e}"))
}

pub(super) async fn run(args: DemoArgs) -> Result<(), CliError> {
    let dir = tempfile::Builder::new()
        .prefix("secured-demo-")
        .tempdir()
        .map_err(other("cannot create a temporary folder"))?;
    println!("secured demo in {} (loopback only)", dir.path().display());

    // 1. A private CA with a server and a device certificate.
    let started = Instant::now();
    let paths = PkiPaths::under(dir.path());
    let init_paths = paths.clone();
    let written = tokio::task::spawn_blocking(move || {
        pki::init(&init_paths, &InitOptions::default(), default_provider())
    })
    .await
    .map_err(|e| CliError::Other(format!("key generation stopped: {e}")))??;
    println!(
        "[1/4] PKI: {} files (CA RSA-3072, server and device-1 RSA-2048) in {} ms",
        written.len(),
        started.elapsed().as_millis()
    );
    for path in &written {
        println!("        {}", path.display());
    }

    // 2. The server, on an ephemeral loopback port.
    let server_config = load_server_config(
        &paths.cert_file("server"),
        &paths.key_file("server"),
        &paths.ca_cert(),
    )?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(other("cannot listen on 127.0.0.1"))?;
    let addr = listener
        .local_addr()
        .map_err(other("cannot read the listening address"))?;
    let shutdown = CancellationToken::new();
    let settings = ServerSettings {
        data_dir: dir.path().join("data"),
        ..ServerSettings::default()
    };
    let server = tokio::spawn(server::run(
        listener,
        server_config,
        settings,
        shutdown.clone(),
    ));
    println!("[2/4] server listening on {addr}");

    // 3. The device: mutual authentication.
    let device_config = load_device_config(
        &paths.cert_file("device-1"),
        &paths.key_file("device-1"),
        &paths.ca_cert(),
        ServerName::Dns("localhost".into()),
    )?;
    let started = Instant::now();
    let mut client =
        DeviceClient::connect(&addr.to_string(), device_config, ClientSettings::default()).await?;
    println!(
        "[3/4] handshake: device-1 and server {:?} authenticated each other in {} ms \
         (RSA-OAEP pre-master, RSA-PSS proof, HKDF-SHA256 keys, Finished both ways)",
        client.server().name(),
        started.elapsed().as_millis()
    );

    // 4. Text over the record layer, then a clean close.
    let ack = client.send_text(&args.text).await?;
    println!(
        "[4/4] sent {:?} in a SECX record (AES-256-CBC + HMAC-SHA256); server answered ACK_ {}",
        args.text, ack.status
    );
    client.close().await?;
    println!("      session closed with ENDD in both directions");

    shutdown.cancel();
    let _ = server.await;
    if args.keep {
        let kept = dir.keep();
        println!("kept {}", kept.display());
    }
    Ok(())
}
