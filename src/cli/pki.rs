//! `secured pki …`.

use clap::{Subcommand, ValueEnum};

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
    /// Create a CA, a server certificate and a device certificate.
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
        /// RSA key size of the CA: 2048, 3072 or 4096.
        #[arg(long, value_name = "BITS", default_value_t = 3072, value_parser = rsa_bits)]
        ca_bits: usize,
        /// RSA key size of the server and device keys: 2048, 3072 or 4096.
        #[arg(long, value_name = "BITS", default_value_t = 2048, value_parser = rsa_bits)]
        bits: usize,
        /// Validity of the server and device certificates, in days (1 to 36500).
        #[arg(long, value_name = "DAYS", default_value_t = 825, value_parser = days())]
        days: u32,
        /// Replace existing certificates and keys.
        #[arg(long)]
        force: bool,
        /// Encrypt the private keys with a passphrase (from --passphrase-file,
        /// the SECURED_KEY_PASSPHRASE environment variable, or typed twice on
        /// the terminal).
        #[arg(long)]
        encrypt_keys: bool,
    },
    /// Issue a further server or device certificate with the CA in the
    /// certificate folder.
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
        /// Validity in days (1 to 36500).
        #[arg(long, value_name = "DAYS", default_value_t = 825, value_parser = days())]
        days: u32,
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
        PkiCommand::Init {
            dirs,
            server_names,
            device,
            ca_bits,
            bits,
            days,
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
                validity_days: days,
                encrypt_key: encrypt_keys.then(|| source.clone()),
                ca_passphrase: Some(source.clone()),
            };
            let paths = dirs.resolve(file);
            super::refuse_open_key(&paths.ca_key())?;
            pki::issue_files(&paths, role, &name, &names, &opts, force, provider)
                .map_err(with_dirs_hint)?
        }
    };
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}
