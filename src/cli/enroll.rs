//! `secured device enroll` and `secured device renew`: a device gets its
//! first certificate with a token, and renews it before it expires
//! (proto-spec.md §14). The key is made here and never leaves the device.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use clap::Args;

use super::CliError;
use super::device::ConnArgs;
use crate::client::{ClientSettings, DeviceClient, EnrollRequest, IssuedCertificate, enroll};
use crate::config::{DEFAULT_LISTEN, FileConfig};
use crate::crypto::RsaPrivateKey;
use crate::pki::{
    EnrollmentToken, Passphrase, PkiPaths, ServerName, generate_key_pair, key_is_encrypted,
    write_cert_chain_pem, write_cert_pem, write_key_pem, write_key_pem_encrypted,
};

/// Options of `device enroll`.
#[derive(Debug, Args)]
pub(super) struct EnrollArgs {
    /// The one-time token `secured admin token` printed (or `-` to read it
    /// from standard input, which keeps it out of the process list).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "SECURED_TOKEN",
        hide_env_values = true
    )]
    token: String,
    /// RSA key size of the device key: 2048, 3072 or 4096.
    #[arg(long, value_name = "BITS", default_value_t = 2048)]
    bits: usize,
    /// Replace an existing key and certificate of that name.
    #[arg(long)]
    force: bool,
    /// Store the new key encrypted with a passphrase (from
    /// --passphrase-file, SECURED_KEY_PASSPHRASE, else asked twice on the
    /// terminal).
    #[arg(long)]
    encrypt_key: bool,
}

/// Options of `device renew`.
#[derive(Debug, Args)]
pub(super) struct RenewArgs {
    /// Make a new key for the new certificate (the old key is replaced
    /// once the certificate is written).
    #[arg(long)]
    new_key: bool,
    /// RSA key size of a new key: 2048, 3072 or 4096.
    #[arg(
        long,
        value_name = "BITS",
        default_value_t = 2048,
        requires = "new_key"
    )]
    bits: usize,
}

/// The PKI folders of a device (the `[pki]` section, else `certs`, `keys`).
fn device_paths(file: &FileConfig) -> PkiPaths {
    PkiPaths {
        certs_dir: file
            .pki
            .certs_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("certs")),
        keys_dir: file
            .pki
            .keys_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("keys")),
    }
}

pub(super) async fn run_enroll(
    conn: &ConnArgs,
    args: EnrollArgs,
    file: &FileConfig,
) -> Result<(), CliError> {
    let text = if args.token == "-" {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map_err(|e| {
            CliError::Other(format!("cannot read the token from standard input: {e}"))
        })?;
        line
    } else {
        args.token.clone()
    };
    let token = EnrollmentToken::parse(&text).map_err(|e| CliError::Usage(e.to_string()))?;
    let name = match conn.name.as_deref().or(file.device.name.as_deref()) {
        Some(n) if n != token.name => {
            return Err(CliError::Usage(format!(
                "the token enrolls device {:?}, not {n:?}; leave --name out or ask for a token for {n:?}",
                token.name
            )));
        }
        _ => token.name.clone(),
    };
    if ![2048, 3072, 4096].contains(&args.bits) {
        return Err(CliError::Usage(
            "the RSA key size must be 2048, 3072 or 4096 bits".into(),
        ));
    }
    let addr = conn
        .server
        .clone()
        .or_else(|| file.device.server.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let server_name: ServerName = conn
        .server_name
        .clone()
        .or_else(|| file.device.server_name.clone())
        .unwrap_or_else(|| super::device::host_of(&addr).to_owned())
        .parse()
        .map_err(CliError::Pki)?;
    let paths = device_paths(file);
    let key_path = paths.key_file(&name);
    let cert_path = paths.cert_file(&name);
    if !args.force {
        for path in [&key_path, &cert_path] {
            if path.exists() {
                return Err(CliError::Other(format!(
                    "{} already exists; this device seems enrolled already (pass --force to replace its key and certificate)",
                    path.display()
                )));
            }
        }
    }
    // Asked for before the token is spent, so a mistyped passphrase costs
    // nothing.
    let passphrase = if args.encrypt_key {
        Some(super::passphrase_source().new_passphrase()?)
    } else {
        None
    };
    let provider = super::provider();
    let (pkcs8, key) = generate_key_pair(args.bits, provider)?;
    let spki = key.public_key_spki_der().to_vec();
    let issued = enroll(EnrollRequest {
        addr: &addr,
        server_name,
        token: &token,
        name: &name,
        key,
        spki_der: &spki,
        provider,
        settings: ClientSettings::default(),
    })
    .await?;

    create_dirs(&paths)?;
    match &passphrase {
        Some(passphrase) => write_key_pem_encrypted(&key_path, &pkcs8, passphrase, args.force)?,
        None => write_key_pem(&key_path, &pkcs8, args.force)?,
    }
    write_cert_chain_pem(&cert_path, &issued.certificate, &issued.chain, args.force)?;
    let root_path = paths.ca_cert();
    match std::fs::read(&root_path) {
        Ok(_) if same_root(&root_path, &issued.root) => {}
        Ok(_) if !args.force => {
            return Err(CliError::Other(format!(
                "{} holds another root than the one the token pins; the new certificate is in {}, but move the old root away (or pass --force) before using it",
                root_path.display(),
                cert_path.display()
            )));
        }
        _ => write_cert_pem(&root_path, &issued.root, true)?,
    }
    println!(
        "enrolled as {name} with {addr}: certificate {} (serial {}, valid {} days), key {}, root {}",
        cert_path.display(),
        issued.serial_hex,
        days_left(issued.not_after),
        key_path.display(),
        root_path.display()
    );
    Ok(())
}

fn same_root(path: &Path, der: &[u8]) -> bool {
    crate::pki::read_cert_chain(path)
        .is_ok_and(|certs| certs.first().map(Vec::as_slice) == Some(der))
}

fn days_left(not_after: SystemTime) -> u64 {
    not_after
        .duration_since(SystemTime::now())
        .map_or(0, |d| d.as_secs().div_ceil(86_400))
}

fn create_dirs(paths: &PkiPaths) -> Result<(), CliError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::create_dir_all(&paths.certs_dir).map_err(|e| {
        CliError::Other(format!("cannot create {}: {e}", paths.certs_dir.display()))
    })?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&paths.keys_dir)
        .map_err(|e| CliError::Other(format!("cannot create {}: {e}", paths.keys_dir.display())))
}

/// Writes a renewed certificate (and a new key) in place: the new key goes
/// to `<key>.next` first, then the certificate replaces the old one, then
/// the key is renamed into place. A crash in between leaves a certificate
/// whose key is `<key>.next`, which loading the identity completes
/// ([`crate::pki::complete_key_rotation`]). The new key is encrypted with
/// `passphrase` when one is given.
///
/// # Errors
/// Write errors naming the file.
pub(super) fn store_renewed(
    cert_path: &Path,
    key_path: &Path,
    issued: &IssuedCertificate,
    new_key: Option<&[u8]>,
    passphrase: Option<&Passphrase>,
) -> Result<(), CliError> {
    let next = crate::pki::next_key_path(key_path);
    match (new_key, passphrase) {
        (Some(pkcs8), Some(passphrase)) => write_key_pem_encrypted(&next, pkcs8, passphrase, true)?,
        (Some(pkcs8), None) => write_key_pem(&next, pkcs8, true)?,
        (None, _) => {}
    }
    write_cert_chain_pem(cert_path, &issued.certificate, &issued.chain, true)?;
    if new_key.is_some() {
        std::fs::rename(&next, key_path).map_err(|e| {
            CliError::Other(format!(
                "cannot move the new key {} into place: {e}; run the command again",
                next.display()
            ))
        })?;
    }
    Ok(())
}

/// Renews over one session with the key the device holds, or a new one.
pub(super) async fn renew_now<S>(
    client: &mut DeviceClient<S>,
    new_key: bool,
    bits: usize,
) -> Result<(IssuedCertificate, Option<zeroize::Zeroizing<Vec<u8>>>), CliError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let provider = super::provider();
    let (pkcs8, key): (Option<_>, Arc<dyn RsaPrivateKey>) = if new_key {
        let (pkcs8, key) = generate_key_pair(bits, provider)?;
        (Some(pkcs8), key)
    } else {
        (None, Arc::clone(client.identity().key()))
    };
    let spki = key.public_key_spki_der().to_vec();
    let issued = client.renew(&key, &spki).await?;
    Ok((issued, pkcs8))
}

pub(super) async fn run_renew(
    conn: &ConnArgs,
    args: RenewArgs,
    file: &FileConfig,
) -> Result<(), CliError> {
    let resolved = super::device::resolve(conn, file)?;
    // A key that was encrypted stays encrypted, under the same passphrase,
    // asked for before the server issues anything.
    let passphrase = if args.new_key && key_is_encrypted(&resolved.key_path) {
        Some(super::passphrase_source().passphrase_for(&resolved.key_path)?)
    } else {
        None
    };
    let bits = args.bits;
    let settings = resolved.settings();
    let mut client = DeviceClient::connect(&resolved.addr, resolved.config, settings).await?;
    let (issued, pkcs8) = renew_now(&mut client, args.new_key, bits).await?;
    super::files::close_after_receipts(client, true).await?;
    store_renewed(
        &resolved.cert_path,
        &resolved.key_path,
        &issued,
        pkcs8.as_deref().map(Vec::as_slice),
        passphrase.as_ref(),
    )?;
    println!(
        "renewed: {} (serial {}, valid {} days){}",
        resolved.cert_path.display(),
        issued.serial_hex,
        days_left(issued.not_after),
        if args.new_key { ", with a new key" } else { "" }
    );
    Ok(())
}
