//! `secured pki show`: a short human summary of a certificate.

use std::fmt;
use std::time::SystemTime;

use x509_cert::ext::pkix::KeyUsages;

use super::PkiError;
use super::error::fmt_time;
use super::parse::parse;
use crate::crypto::CryptoProvider;
use crate::crypto::hash::sha256;

/// What `pki show` prints.
#[derive(Debug, Clone)]
pub struct CertSummary {
    subject: String,
    issuer: String,
    sans: Vec<String>,
    serial_hex: String,
    not_before: SystemTime,
    not_after: SystemTime,
    key_bits: Option<usize>,
    ca: Option<Option<u8>>,
    key_usage: Vec<&'static str>,
    ext_key_usage: Vec<String>,
    sha256: [u8; 32],
    now: SystemTime,
}

impl CertSummary {
    /// Summarises a certificate (DER) as of `now`.
    ///
    /// # Errors
    /// [`PkiError::Cert`] when it does not parse under the rules of
    /// [`super::verify_peer`].
    pub fn of(der: &[u8], provider: &CryptoProvider, now: SystemTime) -> Result<Self, PkiError> {
        let parsed = parse(der).map_err(|source| PkiError::Cert {
            origin: "the certificate".to_owned(),
            source,
        })?;
        let tbs = parsed.tbs();
        let key_usage = parsed
            .ext
            .key_usage
            .map(|ku| {
                [
                    (KeyUsages::DigitalSignature, "digitalSignature"),
                    (KeyUsages::KeyEncipherment, "keyEncipherment"),
                    (KeyUsages::KeyCertSign, "keyCertSign"),
                    (KeyUsages::CRLSign, "cRLSign"),
                ]
                .into_iter()
                .filter(|(bit, _)| ku.0.contains(*bit))
                .map(|(_, name)| name)
                .collect()
            })
            .unwrap_or_default();
        let ext_key_usage = parsed
            .ext
            .ext_key_usage
            .as_ref()
            .map(|eku| {
                eku.0
                    .iter()
                    .map(|oid| match *oid {
                        const_oid::db::rfc5280::ID_KP_SERVER_AUTH => "serverAuth".to_owned(),
                        const_oid::db::rfc5280::ID_KP_CLIENT_AUTH => "clientAuth".to_owned(),
                        other => other.to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            subject: tbs.subject().to_string(),
            issuer: tbs.issuer().to_string(),
            sans: parsed.san_strings(),
            serial_hex: hex::encode(parsed.serial()),
            not_before: parsed.not_before(),
            not_after: parsed.not_after(),
            key_bits: parsed.public_key(provider).ok().map(|k| k.bits()),
            ca: parsed.is_ca().then(|| parsed.path_len()),
            key_usage,
            ext_key_usage,
            sha256: sha256(&[der]),
            now,
        })
    }
}

impl fmt::Display for CertSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |items: &[String]| {
            if items.is_empty() {
                "none".to_owned()
            } else {
                items.join(", ")
            }
        };
        writeln!(f, "subject:      {}", self.subject)?;
        writeln!(f, "names (SAN):  {}", list(&self.sans))?;
        writeln!(f, "issuer:       {}", self.issuer)?;
        writeln!(f, "serial:       {}", self.serial_hex)?;
        let left = match self.not_after.duration_since(self.now) {
            Ok(d) => format!("{} days left", d.as_secs() / 86_400),
            Err(_) => "EXPIRED".to_owned(),
        };
        let started = if self.now < self.not_before {
            " (NOT YET VALID)"
        } else {
            ""
        };
        writeln!(
            f,
            "valid:        {} to {}{started} ({left})",
            fmt_time(self.not_before),
            fmt_time(self.not_after)
        )?;
        match self.key_bits {
            Some(bits) => writeln!(f, "key:          RSA {bits} bits")?,
            None => writeln!(f, "key:          not an RSA key secured accepts")?,
        }
        match self.ca {
            Some(Some(n)) => writeln!(f, "CA:           yes, path length {n}")?,
            Some(None) => writeln!(f, "CA:           yes, no path length limit")?,
            None => writeln!(f, "CA:           no")?,
        }
        let usage: Vec<String> = self.key_usage.iter().map(|s| (*s).to_owned()).collect();
        writeln!(f, "key usage:    {}", list(&usage))?;
        writeln!(f, "ext. usage:   {}", list(&self.ext_key_usage))?;
        write!(f, "SHA-256:      {}", hex::encode(self.sha256))
    }
}
