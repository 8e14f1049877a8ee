//! `secured admin …`: the operator's commands on the server host. They act
//! on the server's data folder (its index) and its PKI files, beside a
//! running server, which sees what they change (proto-spec.md §14).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::CliError;
use crate::config::{FileConfig, pick_path, server_defaults};
use crate::index::{Index, now_ms};
use crate::pki::crl::RevocationReason;
use crate::pki::{CertificateAuthority, EnrollmentToken, TrustAnchor, validate_device_name};
use crate::revocation::{self, DEFAULT_CRL_LIFETIME, Target};
use crate::store::INDEX_FILE;

/// Examples for `secured admin --help`.
pub(super) const EXAMPLES: &str = "\
Examples:
  secured admin token --name cam-7                 # one-time token, valid 15 minutes
  secured admin revoke cam-7 --reason key-compromise
  secured admin crl                                # sign a fresh CRL now";

const TOKEN_EXAMPLES: &str = "\
Examples:
  secured admin token --name cam-7
  secured admin token --name cam-7 --ttl 2h
  # then, on the new device:
  secured device enroll --server server.example.net:7443 --token st1.…";

const REVOKE_EXAMPLES: &str = "\
Examples:
  secured admin revoke cam-7                        # every certificate of cam-7
  secured admin revoke 0x5f0c…                      # one certificate, by serial
  secured admin revoke cam-7 --reason key-compromise";

const CRL_EXAMPLES: &str = "\
Examples:
  secured admin crl                                # certs/crl.pem, valid 7 days
  secured admin crl --data-dir /srv/secured --crl /etc/secured/crl.pem";

#[derive(Debug, Subcommand)]
pub(super) enum AdminCommand {
    /// Print a one-time enrollment token for a new device.
    #[command(after_help = TOKEN_EXAMPLES)]
    Token {
        #[command(flatten)]
        place: ServerFiles,
        /// The device name the token enrolls.
        #[arg(long, value_name = "DEVICE")]
        name: String,
        /// How long the token is valid: seconds, minutes, hours or days
        /// (`90s`, `15m`, `2h`, `1d`), at most 7 days.
        #[arg(long, value_name = "TIME", default_value = "15m", value_parser = ttl)]
        ttl: Duration,
    },
    /// Revoke every certificate of a device, or one certificate by
    /// serial, and publish a new CRL; a running server closes the
    /// device's sessions within seconds.
    #[command(after_help = REVOKE_EXAMPLES)]
    Revoke {
        #[command(flatten)]
        place: ServerFiles,
        /// A device name, or a serial number in hex (`0x…`, or the 32 hex
        /// digits `secured pki show` prints).
        #[arg(value_name = "DEVICE|SERIAL")]
        target: String,
        /// Why: unspecified, key-compromise, ca-compromise,
        /// affiliation-changed, superseded or cessation-of-operation
        /// [default: unspecified].
        #[arg(long, value_name = "REASON", value_parser = reason)]
        reason: Option<RevocationReason>,
    },
    /// Sign a fresh CRL now (a running server with the issuing CA does
    /// this by itself before the CRL goes stale).
    #[command(after_help = CRL_EXAMPLES)]
    Crl {
        #[command(flatten)]
        place: ServerFiles,
    },
}

/// The server's files the admin commands use.
#[derive(Debug, Args)]
pub(super) struct ServerFiles {
    /// The server's data folder [default: data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The root CA certificate [default: certs/ca.pem].
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// The issuing CA certificate [default: certs/issuing-ca.pem].
    #[arg(long, value_name = "FILE")]
    issuing_cert: Option<PathBuf>,
    /// The issuing CA private key [default: keys/issuing-ca.key].
    #[arg(long, value_name = "FILE")]
    issuing_key: Option<PathBuf>,
    /// The CRL the server follows [default: certs/crl.pem].
    #[arg(long, value_name = "FILE")]
    crl: Option<PathBuf>,
}

struct Resolved {
    data_dir: PathBuf,
    ca: PathBuf,
    issuing_cert: PathBuf,
    issuing_key: PathBuf,
    crl: PathBuf,
}

impl ServerFiles {
    fn resolve(&self, file: &FileConfig) -> Resolved {
        let f = &file.server;
        let pick = |flag: &Option<PathBuf>, conf: &Option<PathBuf>, default: &str| {
            pick_path(flag.as_ref(), conf.as_ref(), default)
        };
        Resolved {
            data_dir: pick(&self.data_dir, &f.data_dir, server_defaults::DATA_DIR),
            ca: pick(&self.ca, &f.ca, server_defaults::CA),
            issuing_cert: pick(
                &self.issuing_cert,
                &f.issuing_cert,
                server_defaults::ISSUING_CERT,
            ),
            issuing_key: pick(
                &self.issuing_key,
                &f.issuing_key,
                server_defaults::ISSUING_KEY,
            ),
            crl: pick(&self.crl, &f.crl, server_defaults::CRL),
        }
    }
}

/// Longest a token may live.
const MAX_TTL: Duration = Duration::from_secs(7 * 86_400);

/// Parses `--ttl`: a number and a unit, s, m, h or d.
fn ttl(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a time; write it like 90s, 15m, 2h or 1d (at most 7d)");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let secs = n.checked_mul(unit_secs).ok_or_else(bad)?;
    let d = Duration::from_secs(secs);
    if d.is_zero() || d > MAX_TTL {
        return Err(bad());
    }
    Ok(d)
}

fn reason(text: &str) -> Result<RevocationReason, String> {
    text.parse()
        .map_err(|e: crate::pki::crl::CrlError| e.to_string())
}

async fn open_index(data_dir: &std::path::Path) -> Result<Index, CliError> {
    let path = data_dir.join(INDEX_FILE);
    if !path.exists() {
        return Err(CliError::Other(format!(
            "there is no server index at {}; run `secured serve` once with --data-dir {}, or pass the --data-dir the server uses",
            path.display(),
            data_dir.display()
        )));
    }
    Index::open(&path)
        .await
        .map_err(|e| CliError::Other(e.to_string()))
}

fn load_issuer(r: &Resolved) -> Result<CertificateAuthority, CliError> {
    if !r.issuing_cert.exists() {
        return Err(CliError::Other(format!(
            "there is no issuing CA at {}; create the PKI with `secured pki init`, or pass --issuing-cert and --issuing-key",
            r.issuing_cert.display()
        )));
    }
    super::refuse_open_key(&r.issuing_key)?;
    Ok(CertificateAuthority::load_with(
        &r.issuing_cert,
        &r.issuing_key,
        Some(super::passphrase_source()),
        super::provider(),
    )?)
}

pub(super) async fn run(cmd: AdminCommand, file: &FileConfig) -> Result<(), CliError> {
    match cmd {
        AdminCommand::Token { place, name, ttl } => {
            let r = place.resolve(file);
            validate_device_name(&name)?;
            if name == "server" {
                return Err(CliError::Usage(
                    "\"server\" names the server's own files; choose another device name".into(),
                ));
            }
            let root = TrustAnchor::load(&r.ca, super::provider())?;
            let index = open_index(&r.data_dir).await?;
            let token = EnrollmentToken::generate(super::provider(), root.fingerprint(), &name)
                .map_err(|e| CliError::Other(format!("cannot draw a token: {e}")))?;
            let now = now_ms();
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            index
                .add_token(
                    &token.id,
                    &crate::crypto::token::token_key(&token.secret),
                    &name,
                    now,
                    now.saturating_add(ttl_ms),
                )
                .await
                .map_err(|e| CliError::Other(e.to_string()))?;
            println!("{}", token.to_text().as_str());
            eprintln!(
                "one-time token for device {name}, valid for {}; on the device run: secured device enroll --server ADDR --token TOKEN",
                humane(ttl)
            );
            Ok(())
        }
        AdminCommand::Revoke {
            place,
            target,
            reason,
        } => {
            let r = place.resolve(file);
            let issuer = load_issuer(&r)?;
            let index = open_index(&r.data_dir).await?;
            let target = Target::parse(&target);
            let revoked = revocation::revoke(&index, &target, reason)
                .await
                .map_err(|e| CliError::Other(e.to_string()))?;
            let listed = revocation::publish(&index, &issuer, &r.crl, DEFAULT_CRL_LIFETIME)
                .await
                .map_err(|e| CliError::Other(e.to_string()))?;
            for serial in &revoked {
                println!("revoked {serial}");
            }
            if revoked.is_empty() {
                println!("already revoked");
            }
            println!("wrote {} ({listed} revoked certificates)", r.crl.display());
            Ok(())
        }
        AdminCommand::Crl { place } => {
            let r = place.resolve(file);
            let issuer = load_issuer(&r)?;
            let index = open_index(&r.data_dir).await?;
            let listed = revocation::publish(&index, &issuer, &r.crl, DEFAULT_CRL_LIFETIME)
                .await
                .map_err(|e| CliError::Other(e.to_string()))?;
            println!("wrote {} ({listed} revoked certificates)", r.crl.display());
            Ok(())
        }
    }
}

/// `15 minutes`, `2 hours`, …
fn humane(d: Duration) -> String {
    let s = d.as_secs();
    let (n, unit) = if s.is_multiple_of(86_400) {
        (s / 86_400, "day")
    } else if s.is_multiple_of(3600) {
        (s / 3600, "hour")
    } else if s.is_multiple_of(60) {
        (s / 60, "minute")
    } else {
        (s, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls() {
        assert_eq!(ttl("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(ttl("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(ttl("7d").unwrap(), MAX_TTL);
        for bad in [
            "",
            "15",
            "m",
            "0m",
            "8d",
            "1w",
            "-1m",
            "99999999999999999999d",
        ] {
            assert!(ttl(bad).is_err(), "{bad}");
        }
        assert_eq!(humane(Duration::from_secs(900)), "15 minutes");
        assert_eq!(humane(Duration::from_secs(3600)), "1 hour");
    }
}
