//! `secured pki …`.

use std::path::{Path, PathBuf};

use clap::{Subcommand, ValueEnum};
use time::format_description::well_known::Rfc3339;

use super::{CliError, PkiDirs};
use crate::config::FileConfig;
use crate::pki::{self, InitOptions, IssueOptions, Role, ServerName};

/// Examples for `secured pki --help`.
pub(super) const EXAMPLES: &str = "\
Examples:
  secured pki init                                   # CA, server and device-1 in certs/ and keys/
  secured pki issue --role device --name device-2    # one more device";

const INIT_EXAMPLES: &str = "\
Examples:
  secured pki init                                   # certs/ and keys/ in this folder
                                                     # (then move keys/ca.key offline)
  secured pki init --server-name server.example.net --server-name 192.0.2.10
  secured pki init --certs-dir /etc/secured/certs --keys-dir /etc/secured/keys --device cam-1
  secured pki init --encrypt-keys                    # keys encrypted with a passphrase typed twice";

const ISSUE_EXAMPLES: &str = "\
Examples:
  secured pki issue --role device --name cam-2
  secured pki issue --role server --name server.example.net --san 192.0.2.10
  secured pki issue --role device --name cam-2 --days 90 --force    # replace cam-2's files
  secured pki issue --role device --name cam-3 --encrypt-keys --passphrase-file cam-3.pass";

#[derive(Debug, Subcommand)]
pub(super) enum PkiCommand {
    /// Create a root CA (keep its key offline), an issuing CA for the
    /// server, a server certificate and a device certificate.
    #[command(after_help = INIT_EXAMPLES)]
    Init {
        #[command(flatten)]
        dirs: PkiDirs,
        /// Name the server certificate is valid for (DNS name or IP address);
        /// repeat for several [default: localhost and 127.0.0.1].
        #[arg(long = "server-name", value_name = "NAME")]
        server_names: Vec<ServerName>,
        /// Name of the first device.
        #[arg(long, value_name = "NAME", default_value = "device-1")]
        device: String,
        /// RSA key size of the root and issuing CAs: 2048, 3072 or 4096.
        #[arg(long, value_name = "BITS", default_value_t = 3072, value_parser = rsa_bits)]
        ca_bits: usize,
        /// RSA key size of the server and device keys: 2048, 3072 or 4096.
        #[arg(long, value_name = "BITS", default_value_t = 2048, value_parser = rsa_bits)]
        bits: usize,
        /// Validity of the device certificate, in days (1 to 36500); devices
        /// renew it with `secured device renew`.
        #[arg(long, value_name = "DAYS", default_value_t = pki::DEFAULT_DEVICE_DAYS, value_parser = days())]
        days: u32,
        /// Validity of the server certificate, in days (1 to 36500).
        #[arg(long, value_name = "DAYS", default_value_t = pki::DEFAULT_SERVER_DAYS, value_parser = days())]
        server_days: u32,
        /// Replace existing certificates and keys.
        #[arg(long)]
        force: bool,
        /// Encrypt the private keys with a passphrase (from --passphrase-file,
        /// the SECURED_KEY_PASSPHRASE environment variable, or typed twice on
        /// the terminal).
        #[arg(long)]
        encrypt_keys: bool,
    },
    /// Issue a further server or device certificate with the issuing CA in
    /// the certificate folder.
    #[command(after_help = ISSUE_EXAMPLES)]
    Issue {
        #[command(flatten)]
        dirs: PkiDirs,
        /// What the certificate is for.
        #[arg(long, value_enum)]
        role: IssueRole,
        /// Device name, or the server's primary name (`ca` is reserved, and
        /// `server` for devices).
        #[arg(long, value_name = "NAME")]
        name: String,
        /// Further names of a server certificate (DNS name or IP address); repeatable.
        #[arg(long = "san", value_name = "NAME")]
        sans: Vec<ServerName>,
        /// RSA key size: 2048, 3072 or 4096.
        #[arg(long, value_name = "BITS", default_value_t = 2048, value_parser = rsa_bits)]
        bits: usize,
        /// Validity in days (1 to 36500) [default: 30 for a device, 825 for a server].
        #[arg(long, value_name = "DAYS", value_parser = days())]
        days: Option<u32>,
        /// Replace an existing certificate and key of that name.
        #[arg(long)]
        force: bool,
        /// Encrypt the new private key with a passphrase (from
        /// --passphrase-file, the SECURED_KEY_PASSPHRASE environment variable,
        /// or typed twice on the terminal). An encrypted CA key is read with
        /// the passphrase from the same place, with or without this option.
        #[arg(long)]
        encrypt_keys: bool,
    },
    /// Check a certificate as secured's handshake does: exit 0 when it is
    /// acceptable, else exit 1 with the check that failed.
    #[command(after_help = VERIFY_EXAMPLES)]
    Verify {
        /// The root CA certificate to trust (PEM).
        #[arg(long, value_name = "ROOT.pem")]
        ca: PathBuf,
        /// Intermediate CA certificates (PEM, one or more) [default: those
        /// after the first certificate in CERT.pem].
        #[arg(long, value_name = "CHAIN.pem")]
        untrusted: Option<PathBuf>,
        /// What the certificate must be for.
        #[arg(long, value_enum)]
        role: IssueRole,
        /// The name it must carry: a server's DNS name or IP address (in
        /// subjectAltName), or a device's name [default: any name].
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Check at this time (RFC 3339, e.g. 2027-01-01T00:00:00Z) [default: now].
        #[arg(long, value_name = "RFC3339")]
        at: Option<String>,
        /// A CRL (PEM) of the certificate's issuing CA: refuse a revoked
        /// certificate, and any when the CRL is out of date [default: no
        /// revocation check].
        #[arg(long, value_name = "CRL.pem")]
        crl: Option<PathBuf>,
        /// The certificate (PEM).
        #[arg(value_name = "CERT.pem")]
        cert: PathBuf,
    },
    /// Print a short summary of a certificate.
    #[command(after_help = SHOW_EXAMPLES)]
    Show {
        /// The certificate (PEM); further certificates in the file are
        /// shown too.
        #[arg(value_name = "CERT.pem")]
        cert: PathBuf,
    },
}

/// Adds the options that choose the PKI folders to a missing-CA error.
fn with_dirs_hint(e: pki::PkiError) -> CliError {
    match e {
        pki::PkiError::NoCa { path } => CliError::Other(format!(
            "no CA certificate at {}; create one with `secured pki init`, or pass --certs-dir and --keys-dir (or --config FILE) for the folders that hold ca.pem and ca.key",
            path.display()
        )),
        pki::PkiError::Read { kind, path, source }
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            CliError::Other(format!(
                "the CA's {kind} file {} does not exist; pass --keys-dir (or --config FILE) for the folder that holds ca.key, or create a new PKI with `secured pki init`",
                path.display()
            ))
        }
        other => other.into(),
    }
}

/// The RSA key sizes both crypto backends generate.
const RSA_KEY_SIZES: [usize; 3] = [2048, 3072, 4096];

/// Parses `--bits` and `--ca-bits`.
fn rsa_bits(value: &str) -> Result<usize, String> {
    value
        .parse()
        .ok()
        .filter(|bits| RSA_KEY_SIZES.contains(bits))
        .ok_or_else(|| "the RSA key size must be 2048, 3072 or 4096 bits".to_owned())
}

/// Parses `--days`: at least a day, at most a century.
fn days() -> impl clap::builder::TypedValueParser<Value = u32> {
    clap::value_parser!(u32).range(1..=36_500)
}

const VERIFY_EXAMPLES: &str = "\
Examples:
  secured pki verify --ca certs/ca.pem --role device certs/device-1.pem
  secured pki verify --ca root.pem --untrusted issuing.pem --role server --name host.example.net srv.pem
  secured pki verify --ca certs/ca.pem --crl certs/crl.pem --at 2027-01-01T00:00:00Z --role device cam.pem";

const SHOW_EXAMPLES: &str = "\
Examples:
  secured pki show certs/server.pem          # the server's certificate, then its issuing CA
  secured pki show certs/ca.pem";

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum IssueRole {
    /// A server certificate (serverAuth).
    Server,
    /// A device certificate (clientAuth).
    Device,
}

pub(super) fn run(cmd: PkiCommand, file: &FileConfig) -> Result<(), CliError> {
    let provider = super::provider();
    let written = match cmd {
        PkiCommand::Verify {
            ca,
            untrusted,
            role,
            name,
            at,
            crl,
            cert,
        } => {
            return verify(
                &ca,
                untrusted.as_deref(),
                role,
                name.as_deref(),
                at.as_deref(),
                crl.as_deref(),
                &cert,
            );
        }
        PkiCommand::Show { cert } => {
            let now = std::time::SystemTime::now();
            let certs = pki::read_cert_chain(&cert)?;
            for (i, der) in certs.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                println!("{}", pki::CertSummary::of(der, provider, now)?);
            }
            return Ok(());
        }
        PkiCommand::Init {
            dirs,
            server_names,
            device,
            ca_bits,
            bits,
            days,
            server_days,
            force,
            encrypt_keys,
        } => {
            let defaults = InitOptions::default();
            let opts = InitOptions {
                server_names: if server_names.is_empty() {
                    defaults.server_names.clone()
                } else {
                    server_names
                },
                device_name: device,
                ca_bits,
                leaf_bits: bits,
                validity_days: days,
                server_validity_days: server_days,
                force,
                encrypt_keys: encrypt_keys.then(|| super::passphrase_source().clone()),
                ..defaults
            };
            pki::init(&dirs.resolve(file), &opts, provider)?
        }
        PkiCommand::Issue {
            dirs,
            role,
            name,
            sans,
            bits,
            days,
            force,
            encrypt_keys,
        } => {
            let role = match role {
                IssueRole::Server => Role::Server,
                IssueRole::Device => Role::Device,
            };
            let mut names = Vec::new();
            if role == Role::Server {
                let primary: ServerName = name.parse().map_err(CliError::Pki)?;
                names.push(primary);
                names.extend(sans);
            } else if !sans.is_empty() {
                return Err(CliError::Usage(
                    "--san applies to server certificates only".into(),
                ));
            }
            let source = super::passphrase_source();
            let opts = IssueOptions {
                bits,
                validity_days: days.unwrap_or(if role == Role::Server {
                    pki::DEFAULT_SERVER_DAYS
                } else {
                    pki::DEFAULT_DEVICE_DAYS
                }),
                encrypt_key: encrypt_keys.then(|| source.clone()),
                ca_passphrase: Some(source.clone()),
            };
            let paths = dirs.resolve(file);
            let signing_key = if paths.issuing_cert().exists() {
                paths.issuing_key()
            } else {
                paths.ca_key()
            };
            super::refuse_open_key(&signing_key)?;
            pki::issue_files(&paths, role, &name, &names, &opts, force, provider)
                .map_err(with_dirs_hint)?
        }
    };
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// `secured pki verify`: the handshake's profile on one certificate.
fn verify(
    ca: &Path,
    untrusted: Option<&Path>,
    role: IssueRole,
    name: Option<&str>,
    at: Option<&str>,
    crl: Option<&Path>,
    cert: &Path,
) -> Result<(), CliError> {
    let provider = super::provider();
    let now = match at {
        None => std::time::SystemTime::now(),
        Some(text) => time::OffsetDateTime::parse(text, &Rfc3339)
            .map(std::time::SystemTime::from)
            .map_err(|_| {
                CliError::Usage(format!(
                    "--at {text:?} is not an RFC 3339 time; write it like 2027-01-01T00:00:00Z"
                ))
            })?,
    };
    let anchor = pki::TrustAnchor::load(ca, provider)?;
    let mut certs = pki::read_cert_chain(cert)?.into_iter();
    let leaf = certs.next().unwrap_or_default();
    let mut chain: Vec<Vec<u8>> = certs.collect();
    if let Some(path) = untrusted {
        chain = pki::read_cert_chain(path)?;
    }
    let role = match role {
        IssueRole::Server => Role::Server,
        IssueRole::Device => Role::Device,
    };
    let server_name = match (role, name) {
        (Role::Server, Some(n)) => Some(n.parse::<ServerName>().map_err(CliError::Pki)?),
        _ => None,
    };
    let refused =
        |reason: String| CliError::Other(format!("{} is not acceptable: {reason}", cert.display()));
    let peer = pki::verify_chain(&anchor, &leaf, &chain, role, server_name.as_ref(), now)
        .map_err(|e| refused(e.to_string()))?;
    if role == Role::Device
        && let Some(wanted) = name
        && peer.name() != wanted
    {
        return Err(refused(format!(
            "it is the certificate of device {:?}, not {wanted:?}",
            peer.name()
        )));
    }
    if let Some(path) = crl {
        let issuer = pki::crl_issuer_for(&anchor, &leaf, &chain, provider)
            .map_err(|e| refused(e.to_string()))?;
        let list = pki::crl::VerifiedCrl::load(path, &issuer, now)?;
        list.check_serial(peer.serial(), now)
            .map_err(|e| refused(e.to_string()))?;
    }
    println!(
        "{}: OK, a valid {role} certificate for {} (serial {}), chained to {}",
        cert.display(),
        peer.name(),
        peer.serial_hex(),
        anchor.name()
    );
    Ok(())
}
