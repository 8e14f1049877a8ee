//! Revocation (proto-spec.md §14.5): the revocations the index records,
//! and the CRL the issuing CA signs from them.
//!
//! `secured admin revoke` records a revocation and publishes a new CRL at
//! once; a running server sees the file change within a second, loads it
//! and closes the revoked device's sessions. A server that holds the
//! issuing CA's key also re-signs the CRL before it goes stale.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::index::{Index, IndexError, now_ms};
use crate::pki::crl::{CrlError, RevocationReason, RevokedEntry, write_crl_pem};
use crate::pki::{CertificateAuthority, PkiError};

/// Default lifetime of a CRL: a device or server fails closed a week after
/// the last one was signed.
pub const DEFAULT_CRL_LIFETIME: Duration = Duration::from_secs(7 * 86_400);

/// Why revoking or publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    /// The index could not be read or written.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The CRL could not be built.
    #[error("cannot sign the CRL: {0}")]
    Crl(#[from] CrlError),
    /// The CRL could not be written.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// Nothing known matches what was to be revoked.
    #[error(
        "no certificate of {0:?} is known to this server; give its serial number (`secured pki show CERT.pem` prints it) to revoke it anyway"
    )]
    Unknown(String),
    /// A serial number that is not hex.
    #[error(
        "{0:?} is not a serial number: give it in hexadecimal, as `secured pki show` prints it"
    )]
    BadSerial(String),
}

/// What to revoke: every certificate of a device, or one serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every certificate known for this device name.
    Device(String),
    /// One certificate, by serial (lowercase hex).
    Serial(String),
}

impl Target {
    /// A device name, or a serial when the text is hex with a `0x` prefix
    /// or 16 bytes or more of hex (device names are short words; a serial
    /// is 32 hex digits).
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let hexish = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
        if let Some(rest) = text.strip_prefix("0x")
            && hexish(rest)
        {
            return Self::Serial(rest.to_ascii_lowercase());
        }
        if text.len() >= 32 && hexish(text) {
            return Self::Serial(text.to_ascii_lowercase());
        }
        Self::Device(text.to_owned())
    }
}

/// Records the revocation of `target` in the index; returns the serials
/// newly revoked (already revoked ones are left as they were).
///
/// # Errors
/// [`RevocationError::Unknown`] when the index knows no certificate of the
/// device; index errors.
pub async fn revoke(
    index: &Index,
    target: &Target,
    reason: Option<RevocationReason>,
) -> Result<Vec<String>, RevocationError> {
    let now = now_ms();
    let (name, serials) = match target {
        Target::Device(name) => {
            let serials = index.certificates_of(name).await?;
            if serials.is_empty() {
                return Err(RevocationError::Unknown(name.clone()));
            }
            (name.clone(), serials)
        }
        Target::Serial(serial) => {
            if hex::decode(serial).is_err() {
                return Err(RevocationError::BadSerial(serial.clone()));
            }
            let name = index
                .name_of_serial(serial)
                .await?
                .unwrap_or_else(|| "(unknown)".to_owned());
            (name, vec![serial.clone()])
        }
    };
    // Kept on the CRL for as long as any certificate could still be valid:
    // the index does not always know the expiry, so a century.
    let keep_until = now.saturating_add(100 * 365 * 86_400_000);
    let mut newly = Vec::new();
    for serial in serials {
        if index
            .revoke(
                &serial,
                &name,
                reason.map(RevocationReason::as_str),
                now,
                keep_until,
            )
            .await?
        {
            newly.push(serial);
        }
    }
    Ok(newly)
}

/// Signs a CRL of every revocation in the index with `issuer`, valid for
/// `lifetime`, and writes it to `path` (atomically, replacing the old
/// one). Returns how many certificates it lists.
///
/// # Errors
/// Index, signing and write errors.
pub async fn publish(
    index: &Index,
    issuer: &CertificateAuthority,
    path: &Path,
    lifetime: Duration,
) -> Result<usize, RevocationError> {
    let now = SystemTime::now();
    let entries: Vec<RevokedEntry> = index
        .revocations(now_ms())
        .await?
        .into_iter()
        .filter_map(|r| {
            Some(RevokedEntry {
                serial: hex::decode(&r.serial).ok()?,
                revoked_at: UNIX_EPOCH + Duration::from_millis(r.revoked_at_ms),
                reason: r.reason.as_deref().and_then(|w| w.parse().ok()),
            })
        })
        .collect();
    let number = index.next_crl_number().await?;
    let der = issuer.sign_crl(number, now, now + lifetime, &entries)?;
    write_crl_pem(path, &der, true)?;
    Ok(entries.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(Target::parse("cam-1"), Target::Device("cam-1".into()));
        assert_eq!(Target::parse("beef"), Target::Device("beef".into()));
        assert_eq!(Target::parse("0xBEEF"), Target::Serial("beef".into()));
        let serial = "0123456789abcdef0123456789ABCDEF";
        assert_eq!(
            Target::parse(serial),
            Target::Serial(serial.to_ascii_lowercase())
        );
    }
}
