//! The command line: argument parsing (clap derive) and the adapters from
//! options to library calls. `main.rs` only calls [`main`].

mod admin;
mod demo;
mod device;
mod docs;
mod enroll;
mod fetch;
mod files;
mod pki;
mod serve;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::client::ClientError;
use crate::config::{ConfigError, FileConfig};
use crate::logging::{self, LogFormat};
use crate::pki::PkiError;
use crate::pki::keyfile::{PASSPHRASE_ENV, PassphraseSource};

/// secured: send text and files (images, video, anything) from devices to a
/// server over a mutually authenticated, encrypted protocol.
#[derive(Debug, Parser)]
#[command(name = "secured", version, about, long_about = None, after_help = EXAMPLES)]
pub struct Cli {
    /// TOML configuration file; command-line flags override it.
    #[arg(long, global = true, env = "SECURED_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format: human-readable text or JSON lines (for journald and
    /// pipes); with json, the final error is a JSON line too [default: text].
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `debug` (RUST_LOG takes precedence)
    /// [default: info for serve and demo, warn otherwise].
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Crypto backend for RSA: `aws-lc` or `rustcrypto` [default: aws-lc
    /// when built in, otherwise rustcrypto].
    #[arg(long, global = true, value_name = "BACKEND")]
    crypto: Option<String>,
    /// File whose first line is the passphrase of encrypted private keys,
    /// read only when one is met or written [default: the
    /// SECURED_KEY_PASSPHRASE environment variable, else asked on the
    /// terminal].
    #[arg(long, global = true, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "\
Examples:
  secured pki init                          # CA, server and device-1 certificates in certs/ and keys/
  secured serve                             # listen on 127.0.0.1:7443 with those files
  secured device send-text 'hello'          # as device-1, to 127.0.0.1:7443
  secured device send-file report.pdf       # any file, signed and verified
  secured demo                              # all of the above in a temporary folder
  secured completions bash                  # shell completions; `secured man` for the manual page";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server daemon.
    Serve(serve::ServeArgs),
    /// Act as a device: send to a server.
    Device(device::DeviceArgs),
    /// Manage the private CA and its certificates.
    #[command(subcommand, after_help = pki::EXAMPLES)]
    Pki(pki::PkiCommand),
    /// Operate a server: enrollment tokens, revocation.
    #[command(subcommand, after_help = admin::EXAMPLES)]
    Admin(admin::AdminCommand),
    /// Run a complete demonstration on loopback in a temporary folder.
    Demo(demo::DemoArgs),
    /// Print a shell completion script.
    Completions(docs::CompletionsArgs),
    /// Print the manual page (roff), or write one page per command.
    Man(docs::ManArgs),
}

/// Paths of the PKI folders, shared by several commands.
#[derive(Debug, Args, Clone)]
struct PkiDirs {
    /// Folder of certificates [default: certs].
    #[arg(long, value_name = "DIR")]
    certs_dir: Option<PathBuf>,
    /// Folder of private keys [default: keys].
    #[arg(long, value_name = "DIR")]
    keys_dir: Option<PathBuf>,
}

impl PkiDirs {
    fn resolve(&self, file: &FileConfig) -> crate::pki::PkiPaths {
        crate::pki::PkiPaths {
            certs_dir: self
                .certs_dir
                .clone()
                .or_else(|| file.pki.certs_dir.clone())
                .unwrap_or_else(|| PathBuf::from("certs")),
            keys_dir: self
                .keys_dir
                .clone()
                .or_else(|| file.pki.keys_dir.clone())
                .unwrap_or_else(|| PathBuf::from("keys")),
        }
    }
}

/// Loads our certificate, key and trust anchor, and checks that our own
/// certificate is valid for `role` under that CA now, so a wrong file is
/// reported before any connection.
fn load_own_identity(
    cert: &std::path::Path,
    key: &std::path::Path,
    ca: &std::path::Path,
    role: crate::pki::Role,
) -> Result<(crate::pki::Identity, crate::pki::TrustAnchor), CliError> {
    require_pki_file(ca, PkiFile::Ca)?;
    require_pki_file(cert, PkiFile::Own(role))?;
    require_pki_file(key, PkiFile::Own(role))?;
    refuse_open_key(key)?;
    let provider = provider();
    let anchor = crate::pki::TrustAnchor::load(ca, provider)?;
    let passphrase = Some(passphrase_source());
    crate::pki::complete_key_rotation(cert, key, passphrase, provider)?;
    let identity = crate::pki::Identity::load_with(cert, key, passphrase, provider)?;
    crate::pki::verify_chain(
        &anchor,
        identity.cert_der(),
        identity.chain(),
        role,
        None,
        std::time::SystemTime::now(),
    )
    .map_err(|e| {
        CliError::Other(format!(
            "{} is not a valid {role} certificate for the CA in {}: {e}",
            cert.display(),
            ca.display()
        ))
    })?;
    Ok((identity, anchor))
}

/// Which file of the PKI a command needs.
#[derive(Debug, Clone, Copy)]
enum PkiFile {
    /// The CA certificate.
    Ca,
    /// Our own certificate or private key, in this role.
    Own(crate::pki::Role),
}

/// Refuses a PKI file that does not exist, with how to make one: a
/// missing CA means there is no PKI yet (`secured pki init`); a missing
/// certificate or key next to a CA means this one was not issued.
fn require_pki_file(path: &std::path::Path, which: PkiFile) -> Result<(), CliError> {
    if path.try_exists().unwrap_or(true) {
        // Present, or unknowable: the loader's error will say why.
        return Ok(());
    }
    let p = path.display();
    let hint = match which {
        PkiFile::Ca => "create a PKI with `secured pki init` first, or pass --ca FILE (or --config FILE) to use an existing one".to_owned(),
        PkiFile::Own(crate::pki::Role::Device) => {
            let stem = path.file_stem().map_or("NAME".into(), |s| s.to_string_lossy());
            format!(
                "issue it with `secured pki issue --role device --name {stem}` (after `secured pki init` if there is no PKI yet), or choose another device with --name, or --cert and --key"
            )
        }
        PkiFile::Own(_) => "create the server's files with `secured pki init` (or `secured pki issue --role server --name HOST`), or pass --cert and --key (or --config FILE)".to_owned(),
    };
    Err(CliError::Other(format!("{p} does not exist; {hint}")))
}

/// Refuses a private key that group or others may access, as OpenSSH does:
/// whoever can read it can impersonate us.
fn refuse_open_key(key: &std::path::Path) -> Result<(), CliError> {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(meta) = std::fs::metadata(key) else {
        // The loader reports what is wrong with the file.
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CliError::Other(format!(
            "{k} is accessible to group or others (mode {mode:04o}), but a private key must be readable by its owner only; run `chmod 600 {k}`",
            k = key.display()
        )));
    }
    Ok(())
}

/// Everything that can stop a command, as one sentence for the user.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Configuration file problem.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Certificate or key problem.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// Device-side failure.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A bad option value.
    #[error("{0}")]
    Usage(String),
    /// Anything else, already phrased for the user.
    #[error("{0}")]
    Other(String),
}

/// Parses the command line, runs the command and turns the outcome into an
/// exit status: 0 on success, 1 with one sentence on standard error
/// otherwise (2 for unparseable arguments, from clap).
/// With `--log-format json` the error is one JSON object on standard
/// error, like the log lines.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let flag = cli.log_format;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The configuration file may not have been read (it may be what
            // failed): then the flag decides.
            let format = LOG_FORMAT.get().copied().or(flag).unwrap_or_default();
            logging::user_message(format, tracing::Level::ERROR, &e.to_string());
            ExitCode::FAILURE
        }
    }
}

/// The log format of this run, once the configuration file was read.
static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// Tells the user something went wrong that does not fail the command,
/// in the log format of this run.
fn warn_user(message: &str) {
    let format = LOG_FORMAT.get().copied().unwrap_or_default();
    logging::user_message(format, tracing::Level::WARN, message);
}

/// The crypto backend chosen for this run.
static PROVIDER: std::sync::OnceLock<&'static crate::crypto::CryptoProvider> =
    std::sync::OnceLock::new();

/// The crypto backend of this run (`--crypto`, the config file's `crypto`,
/// or the build's default).
fn provider() -> &'static crate::crypto::CryptoProvider {
    PROVIDER
        .get()
        .copied()
        .unwrap_or_else(crate::crypto::default_provider)
}

/// Where this run takes the passphrase of encrypted keys from.
static PASSPHRASE: std::sync::OnceLock<PassphraseSource> = std::sync::OnceLock::new();

/// Where this run takes the passphrase of encrypted keys from:
/// `--passphrase-file`, else the environment variable when it is set, else
/// the terminal.
fn passphrase_source() -> &'static PassphraseSource {
    PASSPHRASE.get_or_init(|| choose_passphrase_source(None))
}

fn choose_passphrase_source(file: Option<PathBuf>) -> PassphraseSource {
    match file {
        Some(path) => PassphraseSource::File(path),
        None if std::env::var_os(PASSPHRASE_ENV).is_some() => {
            PassphraseSource::Env(PASSPHRASE_ENV.to_owned())
        }
        None => PassphraseSource::Prompt,
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    // Documentation needs neither the configuration file nor a runtime.
    match &cli.command {
        Command::Completions(args) => return docs::completions(args),
        Command::Man(args) => return docs::man(args),
        _ => {}
    }
    let file = match &cli.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    if let Some(name) = cli.crypto.as_deref().or(file.crypto.as_deref()) {
        let chosen = crate::crypto::provider_by_name(name).ok_or_else(|| {
            let known: Vec<&str> = crate::crypto::providers().iter().map(|p| p.name).collect();
            CliError::Usage(format!(
                "unknown crypto backend {name:?}; this build has {}",
                known.join(" and ")
            ))
        })?;
        let _ = PROVIDER.set(chosen);
    }
    let default_level = match cli.command {
        Command::Serve(_) | Command::Demo(_) => "info",
        _ => "warn",
    };
    let format = cli.log_format.or(file.log.format).unwrap_or_default();
    let _ = LOG_FORMAT.set(format);
    let _ = PASSPHRASE.set(choose_passphrase_source(cli.passphrase_file.clone()));
    let level = cli
        .log_level
        .clone()
        .or_else(|| file.log.level.clone())
        .unwrap_or_else(|| default_level.to_owned());
    logging::init(format, &level);

    let config_path = cli.config.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args, &file, config_path.as_deref()).await,
            Command::Device(args) => device::run(args, &file).await,
            Command::Pki(cmd) => pki::run(cmd, &file),
            Command::Admin(cmd) => admin::run(cmd, &file).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Completions(_) | Command::Man(_) => Ok(()),
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    fn all_commands(command: &clap::Command, path: &str, out: &mut Vec<(String, clap::Command)>) {
        let path = format!("{path} {}", command.get_name());
        for sub in command.get_subcommands() {
            all_commands(sub, &path, out);
        }
        out.push((path, command.clone()));
    }

    /// Every command's help ends with examples.
    #[test]
    fn every_command_has_examples() {
        let mut commands = Vec::new();
        all_commands(&Cli::command(), "", &mut commands);
        assert!(commands.len() >= 11, "{}", commands.len());
        for (path, command) in &commands {
            let after = command
                .get_after_help()
                .map(ToString::to_string)
                .unwrap_or_default();
            assert!(
                after.starts_with("Examples:\n  secured"),
                "{path}: {after:?}"
            );
        }
    }

    /// Every optional option that takes a value shows its default, from
    /// clap or as `[default: …]` in its help, unless it has none.
    #[test]
    fn every_option_shows_its_default() {
        let without_default = [
            "--config",
            "--san",
            "--publish",
            "--exec",
            "--fetch",
            "--count",
        ];
        let mut commands = Vec::new();
        all_commands(&Cli::command(), "", &mut commands);
        let mut missing = Vec::new();
        for (path, command) in &commands {
            for arg in command.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if !arg.get_action().takes_values() || arg.is_required_set() {
                    continue;
                }
                let help = arg
                    .get_long_help()
                    .or(arg.get_help())
                    .map(ToString::to_string)
                    .unwrap_or_default();
                let flag = format!("--{long}");
                let shown = !arg.get_default_values().is_empty() || help.contains("[default: ");
                let exempt = without_default.contains(&flag.as_str());
                if !shown && !exempt {
                    missing.push(format!("{path} {flag}"));
                }
            }
        }
        assert!(missing.is_empty(), "no default shown: {missing:?}");
    }
}
