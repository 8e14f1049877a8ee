//! Certificate revocation lists (RFC 5280 §5): signed by the CA with
//! [`CertificateAuthority::sign_crl`], checked into a [`VerifiedCrl`].
//!
//! The profile, produced and accepted:
//!
//! * X.509 v2 CRL, strict DER, at most [`MAX_CRL_LEN`] bytes and
//!   [`MAX_CRL_ENTRIES`] entries, signed with RSASSA-PSS-SHA256
//!   (MGF1-SHA256, 32-byte salt: the certificates' AlgorithmIdentifier, in
//!   `signature` and `signatureAlgorithm`) by the CA whose subject is the
//!   CRL's issuer.
//! * thisUpdate, and a nextUpdate, which is required. A CRL whose thisUpdate
//!   is more than five minutes ahead of the clock is refused; one past its
//!   nextUpdate still loads but is *stale*: [`VerifiedCrl::check_fresh`] and
//!   [`VerifiedCrl::check_serial`] fail with [`CrlError::Stale`], so a
//!   caller fails closed and says why.
//! * CRL extensions: cRLNumber (required, at most 2^64 − 1) and
//!   authorityKeyIdentifier (always produced; when present, its key
//!   identifier must be the CA's). Entry extension: reasonCode, with the
//!   reasons of [`RevocationReason`]; `unspecified` is written as no
//!   reasonCode at all (RFC 5280 §5.3.1). Unknown critical extensions, in the
//!   CRL or in an entry, duplicate extensions, duplicate serial numbers and
//!   other reason codes (certificateHold, removeFromCRL, ...) are refused.
//!
//! certificateHold is left out on purpose: a hold can be lifted, so a
//! certificate on hold is neither valid nor revoked for good, and a peer
//! holding an older CRL would disagree with one holding a newer one about
//! whether the same device may connect. Revocation here is final; a device
//! to be suspended for a while is better refused by the server's own
//! configuration.
//!
//! A [`VerifiedCrl`] is obtained only through [`VerifiedCrl::verify`] (or
//! [`VerifiedCrl::load`]); lookups by serial number are O(1).
//!
//! Serial numbers are compared as the content octets of the DER INTEGER,
//! exactly as they appear in the certificate (a positive serial whose first
//! byte is 0x80 or more starts with a 0x00 byte).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use const_oid::{AssociatedOid, ObjectIdentifier};
use der::pem::{self, LineEnding, PemLabel};
use der::referenced::OwnedToRef;
use der::{Decode, Encode, ErrorKind, Reader, SliceReader, Tag};
use x509_cert::Certificate;
use x509_cert::builder::{Builder, CrlBuilder};
use x509_cert::certificate::Version;
use x509_cert::crl::{CertificateList, RevokedCert};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, CrlNumber, CrlReason, KeyUsages, SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, ToExtension};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Time;

use super::error::fmt_time;
use super::issue::CLOCK_SKEW_ALLOWANCE;
use super::parse::{ParsedCert, parse, tbs_slice};
use super::{CertError, CertificateAuthority, PkiError, TrustAnchor, store};
use crate::crypto::x509::{PssSha256Signer, PssSignature, pss_sha256_algorithm_identifier};
use crate::crypto::{CryptoProvider, RsaPublicKey};

/// Largest CRL accepted, in DER bytes; longer input is refused before it is
/// parsed.
pub const MAX_CRL_LEN: usize = 1024 * 1024;
/// Most revoked entries a CRL may list. The size limit alone allows about
/// 50 000 minimal entries; this bounds the index whatever the encoding.
pub const MAX_CRL_ENTRIES: usize = 50_000;
/// Largest CRL PEM file read, in bytes: [`MAX_CRL_LEN`] in base64 with line
/// breaks fits with room to spare.
const MAX_CRL_PEM_FILE_LEN: u64 = 2 * 1024 * 1024;
/// The PEM label of a CRL, as OpenSSL writes it.
const CRL_LABEL: &str = <CertificateList as PemLabel>::PEM_LABEL;

/// Why a certificate was revoked: the reasons of RFC 5280 §5.3.1 this
/// profile uses, named on the command line as `unspecified`,
/// `key-compromise`, `ca-compromise`, `affiliation-changed`, `superseded`
/// and `cessation-of-operation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RevocationReason {
    /// No reason given (written as no reasonCode extension).
    Unspecified,
    /// The certificate's private key was, or may have been, disclosed.
    KeyCompromise,
    /// The CA's private key was, or may have been, disclosed.
    CaCompromise,
    /// The subject's name or other information changed.
    AffiliationChanged,
    /// A new certificate replaces this one.
    Superseded,
    /// The certificate is no longer needed (a device retired).
    CessationOfOperation,
}

impl RevocationReason {
    /// Every reason, in reasonCode order.
    pub const ALL: [Self; 6] = [
        Self::Unspecified,
        Self::KeyCompromise,
        Self::CaCompromise,
        Self::AffiliationChanged,
        Self::Superseded,
        Self::CessationOfOperation,
    ];

    /// The command-line word, e.g. `key-compromise`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::KeyCompromise => "key-compromise",
            Self::CaCompromise => "ca-compromise",
            Self::AffiliationChanged => "affiliation-changed",
            Self::Superseded => "superseded",
            Self::CessationOfOperation => "cessation-of-operation",
        }
    }

    fn to_x509(self) -> CrlReason {
        match self {
            Self::Unspecified => CrlReason::Unspecified,
            Self::KeyCompromise => CrlReason::KeyCompromise,
            Self::CaCompromise => CrlReason::CaCompromise,
            Self::AffiliationChanged => CrlReason::AffiliationChanged,
            Self::Superseded => CrlReason::Superseded,
            Self::CessationOfOperation => CrlReason::CessationOfOperation,
        }
    }

    fn from_x509(reason: CrlReason) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.to_x509() == reason)
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RevocationReason {
    type Err = CrlError;

    fn from_str(word: &str) -> Result<Self, CrlError> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == word)
            .ok_or_else(|| CrlError::UnknownReason {
                word: word.to_owned(),
            })
    }
}

/// A certificate to list in a CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedEntry {
    /// The certificate's serial number: the content octets of its DER
    /// INTEGER as in the certificate (a leading 0x00 may be left out).
    pub serial: Vec<u8>,
    /// When the certificate was revoked (stored to the second).
    pub revoked_at: SystemTime,
    /// Why, if known.
    pub reason: Option<RevocationReason>,
}

/// What a CRL says about a revoked serial number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    /// The entry's revocationDate.
    pub revoked_at: SystemTime,
    /// The entry's reasonCode; `None` when it has none.
    pub reason: Option<RevocationReason>,
}

impl CertificateAuthority {
    /// Signs a CRL with the CA key: number `crl_number` (the cRLNumber
    /// extension; each new CRL must have a larger one), valid from
    /// `this_update` until `next_update`, listing `entries`. Returns DER.
    ///
    /// The result is checked with [`VerifiedCrl::verify`] before it is
    /// returned, so a CRL this CA signs is one its peers accept.
    ///
    /// # Errors
    /// [`CrlError::IssuerMayNotSignCrls`] when the CA certificate lacks
    /// cRLSign, [`CrlError::InvalidUpdateTimes`],
    /// [`CrlError::UnrepresentableTime`], [`CrlError::InvalidSerial`],
    /// [`CrlError::DuplicateSerial`], [`CrlError::TooManyEntries`] or
    /// [`CrlError::Build`].
    pub fn sign_crl(
        &self,
        crl_number: u64,
        this_update: SystemTime,
        next_update: SystemTime,
        entries: &[RevokedEntry],
    ) -> Result<Vec<u8>, CrlError> {
        let issuer = CrlIssuer::from_anchor(self.trust_anchor())?;
        if entries.len() > MAX_CRL_ENTRIES {
            return Err(CrlError::TooManyEntries {
                count: entries.len(),
                max: MAX_CRL_ENTRIES,
            });
        }
        let this = to_time(this_update, "this update")?;
        let next = to_time(next_update, "next update")?;
        // Compared as encoded, to the second.
        if next.to_system_time() <= this.to_system_time() {
            return Err(CrlError::InvalidUpdateTimes {
                this_update: this.to_system_time(),
                next_update: next.to_system_time(),
            });
        }
        let mut seen = HashSet::with_capacity(entries.len());
        let revoked = entries
            .iter()
            .map(|entry| revoked_cert(entry, &issuer.subject, &mut seen))
            .collect::<Result<Vec<_>, _>>()?;

        // CrlBuilder adds cRLNumber and authorityKeyIdentifier; see
        // `crl_builder_issuer` for why an intermediate passes a stand-in.
        // The check below refuses the CRL if it ever names another key.
        let stand_in = self.crl_builder_issuer().map_err(|e| CrlError::Build {
            reason: e.to_string(),
        })?;
        let ca_cert = Certificate::from_der(&stand_in).map_err(build_error)?;
        let number = CrlNumber::try_from(crl_number).map_err(build_error)?;
        let mut builder = CrlBuilder::new_with_this_update(&ca_cert, number, this)
            .map_err(build_error)?
            .with_next_update(Some(next));
        // RFC 5280 §5.1.2.6: no revoked certificates, no list at all.
        if !revoked.is_empty() {
            builder = builder.with_certificates(revoked.into_iter());
        }
        let signer = PssSha256Signer::new(Arc::clone(self.signing_key()));
        let crl = builder
            .build::<_, PssSignature>(&signer)
            .map_err(|e| CrlError::Build {
                reason: e.to_string(),
            })?;
        let der = crl.to_der().map_err(build_error)?;
        VerifiedCrl::verify(&der, &issuer, this.to_system_time()).map_err(|e| CrlError::Build {
            reason: format!("the signed CRL fails its own check: {e}"),
        })?;
        Ok(der)
    }
}

/// One entry of a CRL being built; `seen` holds the serials so far.
fn revoked_cert(
    entry: &RevokedEntry,
    issuer: &Name,
    seen: &mut HashSet<Vec<u8>>,
) -> Result<RevokedCert, CrlError> {
    let invalid = |reason: &'static str| CrlError::InvalidSerial {
        serial: hex::encode(&entry.serial),
        reason,
    };
    if entry.serial.iter().all(|b| *b == 0) {
        return Err(invalid("a serial number is a positive integer, not zero"));
    }
    let serial_number = SerialNumber::new(&entry.serial)
        .map_err(|_| invalid("a serial number is at most 20 bytes long"))?;
    if !seen.insert(serial_number.as_bytes().to_vec()) {
        return Err(CrlError::DuplicateSerial {
            serial: hex::encode(serial_number.as_bytes()),
        });
    }
    let crl_entry_extensions = match entry.reason {
        // RFC 5280 §5.3.1: unspecified is written as no reasonCode.
        None | Some(RevocationReason::Unspecified) => None,
        Some(reason) => Some(vec![
            (&reason.to_x509())
                .to_extension(issuer, &[])
                .map_err(build_error)?,
        ]),
    };
    Ok(RevokedCert {
        serial_number,
        revocation_date: to_time(entry.revoked_at, "revocation time")?,
        crl_entry_extensions,
    })
}

fn to_time(t: SystemTime, what: &'static str) -> Result<Time, CrlError> {
    Time::try_from(t).map_err(|_| CrlError::UnrepresentableTime { what })
}

fn build_error(e: der::Error) -> CrlError {
    CrlError::Build {
        reason: e.to_string(),
    }
}

/// The CA a CRL must come from: its subject, public key and key identifier.
#[derive(Clone)]
pub struct CrlIssuer {
    subject: Name,
    public_key: Arc<dyn RsaPublicKey>,
    key_id: Vec<u8>,
}

impl CrlIssuer {
    /// The trusted CA itself.
    ///
    /// # Errors
    /// [`CrlError::IssuerMayNotSignCrls`] when its keyUsage lacks cRLSign.
    pub fn from_anchor(anchor: &TrustAnchor) -> Result<Self, CrlError> {
        let parsed = parse(anchor.cert_der()).map_err(|source| CrlError::IssuerCert { source })?;
        check_crl_sign(&parsed)?;
        Ok(Self {
            subject: anchor.subject().clone(),
            public_key: Arc::clone(anchor.public_key()),
            key_id: anchor.key_id().to_vec(),
        })
    }

    /// A CA certificate (DER) that the caller has already verified, e.g. an
    /// intermediate CA checked against the trust anchor. Only its profile
    /// is checked here (strict DER, v3, RSASSA-PSS-SHA256, CA:TRUE, cRLSign
    /// when it has a keyUsage, an acceptable RSA key), not its signature or
    /// validity period.
    ///
    /// # Errors
    /// [`CrlError::IssuerCert`], [`CrlError::IssuerNotCa`] or
    /// [`CrlError::IssuerMayNotSignCrls`].
    pub fn from_verified_ca_cert(der: &[u8], provider: &CryptoProvider) -> Result<Self, CrlError> {
        let parsed = parse(der).map_err(|source| CrlError::IssuerCert { source })?;
        if !parsed.is_ca() {
            return Err(CrlError::IssuerNotCa {
                issuer: parsed.tbs().subject().to_string(),
            });
        }
        check_crl_sign(&parsed)?;
        let public_key = parsed
            .public_key(provider)
            .map_err(|source| CrlError::IssuerCert { source })?;
        let key_id = match &parsed.ext.subject_key_id {
            Some(ski) => ski.0.as_bytes().to_vec(),
            None => SubjectKeyIdentifier::try_from(
                parsed.tbs().subject_public_key_info().owned_to_ref(),
            )
            .map_err(|_| CrlError::IssuerCert {
                source: CertError::BadPublicKey,
            })?
            .0
            .as_bytes()
            .to_vec(),
        };
        Ok(Self {
            subject: parsed.tbs().subject().clone(),
            public_key,
            key_id,
        })
    }

    /// The issuer's subject name, as `CN=...,O=...`.
    #[must_use]
    pub fn name(&self) -> String {
        self.subject.to_string()
    }
}

impl fmt::Debug for CrlIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrlIssuer")
            .field("subject", &self.subject.to_string())
            .field("key_id", &hex::encode(&self.key_id))
            .finish_non_exhaustive()
    }
}

/// RFC 5280 §6.3.3 (f): a keyUsage, when present, must allow cRLSign.
fn check_crl_sign(parsed: &ParsedCert<'_>) -> Result<(), CrlError> {
    match parsed.ext.key_usage {
        Some(ku) if !ku.0.contains(KeyUsages::CRLSign) => Err(CrlError::IssuerMayNotSignCrls {
            issuer: parsed.tbs().subject().to_string(),
        }),
        _ => Ok(()),
    }
}

/// A CRL that passed every check of [`VerifiedCrl::verify`]; nothing else
/// can build one. Whether it is still fresh depends on the time: see
/// [`Self::check_fresh`].
#[derive(Clone)]
pub struct VerifiedCrl {
    der: Vec<u8>,
    issuer: String,
    crl_number: u64,
    this_update: SystemTime,
    next_update: SystemTime,
    revoked: HashMap<Vec<u8>, Revocation>,
}

impl VerifiedCrl {
    /// Checks a DER CRL against the CA that must have issued it, at time
    /// `now`: everything in the module docs except staleness, which a
    /// loaded CRL reports through [`Self::check_fresh`] and
    /// [`Self::check_serial`].
    ///
    /// # Errors
    /// The [`CrlError`] of the first check that fails: size, DER, version,
    /// algorithm, issuer name, extensions, issuer key, signature, dates,
    /// cRLNumber, then the entries.
    pub fn verify(der: &[u8], issuer: &CrlIssuer, now: SystemTime) -> Result<Self, CrlError> {
        if der.len() > MAX_CRL_LEN {
            return Err(CrlError::TooLarge {
                len: der.len(),
                max: MAX_CRL_LEN,
            });
        }
        let crl: CertificateList =
            CertificateList::from_der(der).map_err(|e| decode_error(der, &e))?;
        let tbs_der = tbs_slice(der).map_err(|e| malformed(&e))?;
        // Strict DER: the decoder refuses most non-canonical encodings;
        // re-encoding catches the rest (e.g. an explicit DEFAULT value).
        if crl.to_der().map_err(|e| malformed(&e))? != der {
            return Err(CrlError::Malformed {
                reason: "it is not in canonical DER form".to_owned(),
            });
        }
        let tbs = &crl.tbs_cert_list;
        match tbs.version {
            Version::V2 => {}
            Version::V1 => return Err(CrlError::NotV2 { version: "v1" }),
            Version::V3 => return Err(CrlError::NotV2 { version: "v3" }),
        }
        let expected = pss_sha256_algorithm_identifier().map_err(|e| CrlError::Malformed {
            reason: e.to_string(),
        })?;
        if crl.signature_algorithm != expected {
            return Err(CrlError::UnsupportedAlgorithm {
                field: "signatureAlgorithm",
                oid: crl.signature_algorithm.oid.to_string(),
            });
        }
        if tbs.signature != expected {
            return Err(CrlError::UnsupportedAlgorithm {
                field: "tbsCertList.signature",
                oid: tbs.signature.oid.to_string(),
            });
        }
        if tbs.issuer != issuer.subject {
            return Err(CrlError::WrongIssuer {
                issuer: tbs.issuer.to_string(),
                expected: issuer.name(),
            });
        }

        let ext = crl_extensions(tbs.crl_extensions.as_deref().unwrap_or(&[]))?;
        if let Some(key_id) = &ext.authority_key_id
            && *key_id != issuer.key_id
        {
            return Err(CrlError::WrongIssuerKey {
                issuer: issuer.name(),
                key_id: hex::encode(key_id),
                expected: hex::encode(&issuer.key_id),
            });
        }
        let signature = crl.signature.as_bytes().ok_or(CrlError::BadSignature {
            issuer: issuer.name(),
        })?;
        issuer
            .public_key
            .pss_verify(tbs_der, signature)
            .map_err(|_| CrlError::BadSignature {
                issuer: issuer.name(),
            })?;

        let this_update = tbs.this_update.to_system_time();
        let next_update = tbs
            .next_update
            .as_ref()
            .ok_or(CrlError::NoNextUpdate)?
            .to_system_time();
        if next_update < this_update {
            return Err(CrlError::InvalidUpdateTimes {
                this_update,
                next_update,
            });
        }
        if this_update > now.checked_add(CLOCK_SKEW_ALLOWANCE).unwrap_or(now) {
            return Err(CrlError::NotYetValid { this_update, now });
        }
        let crl_number = ext.crl_number.ok_or(CrlError::MissingCrlNumber)?;

        let entries = tbs.revoked_certificates.as_deref().unwrap_or(&[]);
        if entries.len() > MAX_CRL_ENTRIES {
            return Err(CrlError::TooManyEntries {
                count: entries.len(),
                max: MAX_CRL_ENTRIES,
            });
        }
        let mut revoked = HashMap::with_capacity(entries.len());
        for entry in entries {
            let serial = entry.serial_number.as_bytes();
            let revocation = Revocation {
                revoked_at: entry.revocation_date.to_system_time(),
                reason: entry_reason(serial, entry.crl_entry_extensions.as_deref())?,
            };
            if revoked.insert(serial.to_vec(), revocation).is_some() {
                return Err(CrlError::DuplicateSerial {
                    serial: hex::encode(serial),
                });
            }
        }

        Ok(Self {
            der: der.to_vec(),
            issuer: issuer.name(),
            crl_number,
            this_update,
            next_update,
            revoked,
        })
    }

    /// Reads a PEM CRL file (label `X509 CRL`) and verifies it as
    /// [`Self::verify`] does; errors name the file.
    ///
    /// # Errors
    /// [`PkiError::Read`], [`PkiError::FileTooLarge`], [`PkiError::NotPem`]
    /// or [`PkiError::Crl`].
    pub fn load(path: &Path, issuer: &CrlIssuer, now: SystemTime) -> Result<Self, PkiError> {
        let der = read_crl_pem(path)?;
        Self::verify(&der, issuer, now).map_err(|source| PkiError::Crl {
            origin: path.display().to_string(),
            source,
        })
    }

    /// Fails with [`CrlError::Stale`] when `now` is past the CRL's
    /// nextUpdate: a newer CRL may list certificates this one does not.
    ///
    /// # Errors
    /// [`CrlError::Stale`].
    pub fn check_fresh(&self, now: SystemTime) -> Result<(), CrlError> {
        if now > self.next_update {
            Err(CrlError::Stale {
                next_update: self.next_update,
                now,
            })
        } else {
            Ok(())
        }
    }

    /// The check for a handshake: fails with [`CrlError::Revoked`] when the
    /// CRL lists `serial` (even if the CRL is stale: a revocation is
    /// final), otherwise with [`CrlError::Stale`] when the CRL is past its
    /// nextUpdate.
    ///
    /// # Errors
    /// [`CrlError::Revoked`] or [`CrlError::Stale`].
    pub fn check_serial(&self, serial: &[u8], now: SystemTime) -> Result<(), CrlError> {
        if let Some(revocation) = self.is_revoked(serial) {
            return Err(CrlError::Revoked {
                serial: hex::encode(serial),
                revoked_at: revocation.revoked_at,
                reason: revocation.reason,
            });
        }
        self.check_fresh(now)
    }

    /// The entry for `serial` (the content octets of the certificate's
    /// serial number INTEGER), if the CRL lists it. Says nothing about
    /// freshness: see [`Self::check_serial`].
    #[must_use]
    pub fn is_revoked(&self, serial: &[u8]) -> Option<Revocation> {
        self.revoked.get(serial).copied()
    }

    /// The cRLNumber.
    #[must_use]
    pub fn crl_number(&self) -> u64 {
        self.crl_number
    }

    /// thisUpdate: when the CRL was issued.
    #[must_use]
    pub fn this_update(&self) -> SystemTime {
        self.this_update
    }

    /// nextUpdate: when a newer CRL is due, and this one goes stale.
    #[must_use]
    pub fn next_update(&self) -> SystemTime {
        self.next_update
    }

    /// How many certificates the CRL lists.
    #[must_use]
    pub fn entry_count(&self) -> usize {
        self.revoked.len()
    }

    /// The issuer's subject name, as `CN=...,O=...`.
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The CRL, DER, exactly as verified.
    #[must_use]
    pub fn der(&self) -> &[u8] {
        &self.der
    }
}

impl fmt::Debug for VerifiedCrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedCrl")
            .field("issuer", &self.issuer)
            .field("crl_number", &self.crl_number)
            .field("this_update", &fmt_time(self.this_update))
            .field("next_update", &fmt_time(self.next_update))
            .field("entries", &self.revoked.len())
            .finish_non_exhaustive()
    }
}

/// The CRL extensions this profile knows.
#[derive(Default)]
struct CrlExtensions {
    crl_number: Option<u64>,
    authority_key_id: Option<Vec<u8>>,
}

/// Decodes cRLNumber and authorityKeyIdentifier, refusing duplicates and
/// unknown critical extensions.
fn crl_extensions(extensions: &[Extension]) -> Result<CrlExtensions, CrlError> {
    let scope = || "the CRL".to_owned();
    check_extension_set(
        extensions,
        &[CrlNumber::OID, AuthorityKeyIdentifier::OID],
        scope,
    )?;
    let mut known = CrlExtensions::default();
    for ext in extensions {
        match ext.extn_id {
            CrlNumber::OID => {
                let number: CrlNumber = decode_ext(ext, "cRLNumber", scope)?;
                let bytes = number.0.as_bytes();
                let bytes = match bytes.iter().position(|b| *b != 0) {
                    Some(first) => &bytes[first..],
                    None => &[],
                };
                if bytes.len() > 8 {
                    return Err(CrlError::CrlNumberTooLarge {
                        hex: hex::encode(bytes),
                    });
                }
                let mut be = [0u8; 8];
                be[8 - bytes.len()..].copy_from_slice(bytes);
                known.crl_number = Some(u64::from_be_bytes(be));
            }
            AuthorityKeyIdentifier::OID => {
                let aki: AuthorityKeyIdentifier = decode_ext(ext, "authorityKeyIdentifier", scope)?;
                known.authority_key_id = aki.key_identifier.map(|k| k.as_bytes().to_vec());
            }
            _ => {}
        }
    }
    Ok(known)
}

/// The reasonCode of an entry, refusing duplicates, unknown critical
/// extensions and reasons outside [`RevocationReason`].
fn entry_reason(
    serial: &[u8],
    extensions: Option<&[Extension]>,
) -> Result<Option<RevocationReason>, CrlError> {
    let Some(extensions) = extensions else {
        return Ok(None);
    };
    let scope = || format!("the CRL entry for serial {}", hex::encode(serial));
    check_extension_set(extensions, &[CrlReason::OID], scope)?;
    let Some(ext) = extensions.iter().find(|e| e.extn_id == CrlReason::OID) else {
        return Ok(None);
    };
    let code: CrlReason = decode_ext(ext, "reasonCode", scope)?;
    RevocationReason::from_x509(code)
        .map(Some)
        .ok_or_else(|| CrlError::UnsupportedReason {
            serial: hex::encode(serial),
            reason: format!("{code:?} ({})", code as u32),
        })
}

/// Refuses a repeated extension, and a critical one not in `known`.
fn check_extension_set(
    extensions: &[Extension],
    known: &[ObjectIdentifier],
    scope: impl Fn() -> String,
) -> Result<(), CrlError> {
    let mut seen = HashSet::with_capacity(extensions.len());
    for ext in extensions {
        if !seen.insert(ext.extn_id) {
            return Err(CrlError::DuplicateExtension {
                scope: scope(),
                oid: ext.extn_id.to_string(),
            });
        }
        if ext.critical && !known.contains(&ext.extn_id) {
            return Err(CrlError::UnsupportedCriticalExtension {
                scope: scope(),
                oid: ext.extn_id.to_string(),
            });
        }
    }
    Ok(())
}

fn decode_ext<'a, T: Decode<'a>>(
    ext: &'a Extension,
    name: &'static str,
    scope: impl Fn() -> String,
) -> Result<T, CrlError> {
    T::from_der(ext.extn_value.as_bytes()).map_err(|_| CrlError::BadExtension {
        scope: scope(),
        name,
    })
}

fn malformed(e: &der::Error) -> CrlError {
    if matches!(e.kind(), ErrorKind::TrailingData { .. }) {
        CrlError::TrailingData
    } else {
        CrlError::Malformed {
            reason: e.to_string(),
        }
    }
}

/// Explains a CRL that does not decode: a v1 CRL (no version field, which
/// the decoder requires) is named as such.
fn decode_error(der: &[u8], e: &der::Error) -> CrlError {
    let starts_without_version = tbs_slice(der).ok().and_then(|tbs| {
        let mut reader = SliceReader::new(tbs).ok()?;
        reader
            .sequence(|r| {
                let tag = Tag::peek(r)?;
                let rest = r.remaining_len();
                r.read_slice(rest)?;
                Ok::<_, der::Error>(tag)
            })
            .ok()
    });
    if starts_without_version == Some(Tag::Sequence) {
        CrlError::NotV2 { version: "v1" }
    } else {
        malformed(e)
    }
}

/// Encodes a DER CRL as PEM `X509 CRL`.
///
/// # Errors
/// [`CrlError::Build`] when `der` is too large to encode.
pub fn encode_crl_pem(der: &[u8]) -> Result<String, CrlError> {
    pem::encode_string(CRL_LABEL, LineEnding::LF, der).map_err(|e| CrlError::Build {
        reason: e.to_string(),
    })
}

/// Decodes PEM `X509 CRL` text; `origin` names it in errors.
///
/// # Errors
/// [`PkiError::NotPem`].
pub fn decode_crl_pem(pem_bytes: &[u8], origin: &str) -> Result<Vec<u8>, PkiError> {
    match pem::decode_vec(pem_bytes) {
        Ok((CRL_LABEL, der)) => Ok(der),
        _ => Err(PkiError::NotPem {
            origin: origin.to_owned(),
            kind: "CRL",
            label: CRL_LABEL,
        }),
    }
}

/// Reads a PEM CRL file (at most 2 MiB) and returns its DER, unverified.
///
/// # Errors
/// [`PkiError::Read`], [`PkiError::FileTooLarge`] or [`PkiError::NotPem`].
pub fn read_crl_pem(path: &Path) -> Result<Vec<u8>, PkiError> {
    let read_error = |source| PkiError::Read {
        kind: "CRL",
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    let mut buf = Vec::new();
    file.take(MAX_CRL_PEM_FILE_LEN + 1)
        .read_to_end(&mut buf)
        .map_err(read_error)?;
    if buf.len() as u64 > MAX_CRL_PEM_FILE_LEN {
        return Err(PkiError::FileTooLarge {
            kind: "CRL",
            path: path.to_owned(),
            max: MAX_CRL_PEM_FILE_LEN,
        });
    }
    decode_crl_pem(&buf, &path.display().to_string())
}

/// Writes a DER CRL as PEM `X509 CRL`, mode 0644 before umask, atomically
/// (temporary file, fsync, rename).
///
/// # Errors
/// [`PkiError::Exists`] when `path` exists and `force` is false, or
/// [`PkiError::Write`].
pub fn write_crl_pem(path: &Path, der: &[u8], force: bool) -> Result<(), PkiError> {
    let pem = encode_crl_pem(der).map_err(|e| PkiError::Write {
        path: path.to_owned(),
        source: std::io::Error::other(e.to_string()),
    })?;
    store::write_atomic(path, pem.as_bytes(), 0o644, force)
}

/// Why a CRL could not be built, or was refused.
///
/// These describe the CRL, never a secret, so they may be logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CrlError {
    /// A revocation reason word that is not one of ours.
    #[error(
        "{word:?} is not a revocation reason; use unspecified, key-compromise, ca-compromise, affiliation-changed, superseded or cessation-of-operation"
    )]
    UnknownReason {
        /// The word given.
        word: String,
    },
    /// The DER is longer than [`MAX_CRL_LEN`].
    #[error("the CRL is {len} bytes long, more than the {max}-byte limit")]
    TooLarge {
        /// Length of the rejected input.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More entries than [`MAX_CRL_ENTRIES`].
    #[error("the CRL lists {count} certificates, more than the limit of {max}")]
    TooManyEntries {
        /// Entries in the CRL.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Not a strictly DER-encoded X.509 CRL.
    #[error("the CRL is not a valid DER-encoded X.509 CRL ({reason})")]
    Malformed {
        /// The decoder's description of the problem.
        reason: String,
    },
    /// Bytes follow the CRL's DER encoding.
    #[error("the CRL has trailing bytes after its DER encoding")]
    TrailingData,
    /// Not an X.509 v2 CRL.
    #[error("the CRL is X.509 {version}, but only v2 CRLs (with extensions) are accepted")]
    NotV2 {
        /// The version found (`v1` or `v3`).
        version: &'static str,
    },
    /// The signature algorithm is not RSASSA-PSS-SHA256 with our parameters.
    #[error(
        "the CRL's {field} algorithm {oid} is not supported (only RSASSA-PSS with SHA-256, MGF1-SHA256 and a 32-byte salt is accepted)"
    )]
    UnsupportedAlgorithm {
        /// Which AlgorithmIdentifier: `signatureAlgorithm` or `tbsCertList.signature`.
        field: &'static str,
        /// The algorithm's object identifier.
        oid: String,
    },
    /// Issued by a CA other than the expected one.
    #[error("the CRL was signed by {issuer}, not by the issuing CA {expected}")]
    WrongIssuer {
        /// The CRL's issuer name.
        issuer: String,
        /// The expected CA's subject name.
        expected: String,
    },
    /// The authorityKeyIdentifier names another key of a CA with this name.
    #[error(
        "the CRL was signed with key {key_id} of a CA named {issuer}, not with the issuing CA's key {expected} (was the CA re-created?)"
    )]
    WrongIssuerKey {
        /// The CA's name.
        issuer: String,
        /// The CRL's authority key identifier, hex.
        key_id: String,
        /// The CA's key identifier, hex.
        expected: String,
    },
    /// The signature does not verify with the CA's key.
    #[error("the CRL's signature does not verify with the public key of {issuer}")]
    BadSignature {
        /// The CA's name.
        issuer: String,
    },
    /// No nextUpdate: staleness could not be judged.
    #[error(
        "the CRL has no next update, so nobody can tell when it is out of date; sign one with a next update"
    )]
    NoNextUpdate,
    /// nextUpdate not after thisUpdate.
    #[error(
        "the CRL's next update {} is not later than its this update {}",
        fmt_time(*.next_update),
        fmt_time(*.this_update)
    )]
    InvalidUpdateTimes {
        /// thisUpdate.
        this_update: SystemTime,
        /// nextUpdate.
        next_update: SystemTime,
    },
    /// A time outside what X.509 can encode.
    #[error("the CRL's {what} cannot be encoded (dates must fall between 1970 and 9999)")]
    UnrepresentableTime {
        /// Which time.
        what: &'static str,
    },
    /// thisUpdate too far in the future.
    #[error(
        "the CRL is not valid before {} (now {}, more than 5 minutes earlier); check this machine's clock and the signer's",
        fmt_time(*.this_update),
        fmt_time(*.now)
    )]
    NotYetValid {
        /// thisUpdate.
        this_update: SystemTime,
        /// The time of the check.
        now: SystemTime,
    },
    /// Past nextUpdate.
    #[error(
        "the CRL expired at {} (its next update; now {}); sign a fresh one with `secured admin crl`, or fix the clock",
        fmt_time(*.next_update),
        fmt_time(*.now)
    )]
    Stale {
        /// nextUpdate.
        next_update: SystemTime,
        /// The time of the check.
        now: SystemTime,
    },
    /// No cRLNumber extension.
    #[error(
        "the CRL has no CRL number (cRLNumber extension), so it cannot be told apart from an older one"
    )]
    MissingCrlNumber,
    /// A cRLNumber beyond 64 bits.
    #[error("the CRL number 0x{hex} is larger than the 64-bit numbers this implementation uses")]
    CrlNumberTooLarge {
        /// The number, hex.
        hex: String,
    },
    /// A critical extension this verifier does not process.
    #[error("{scope} has an unsupported critical extension {oid}")]
    UnsupportedCriticalExtension {
        /// `the CRL` or `the CRL entry for serial ...`.
        scope: String,
        /// The extension's object identifier.
        oid: String,
    },
    /// The same extension twice.
    #[error("{scope} contains extension {oid} more than once")]
    DuplicateExtension {
        /// `the CRL` or `the CRL entry for serial ...`.
        scope: String,
        /// The extension's object identifier.
        oid: String,
    },
    /// A known extension that does not decode.
    #[error("{scope} has a malformed {name} extension")]
    BadExtension {
        /// `the CRL` or `the CRL entry for serial ...`.
        scope: String,
        /// The extension's name.
        name: &'static str,
    },
    /// A reasonCode outside this profile.
    #[error(
        "the CRL entry for serial {serial} gives the reason {reason}, which this profile does not accept"
    )]
    UnsupportedReason {
        /// The serial, hex.
        serial: String,
        /// The reason's name and code.
        reason: String,
    },
    /// A serial listed twice.
    #[error("the CRL lists serial {serial} more than once")]
    DuplicateSerial {
        /// The serial, hex.
        serial: String,
    },
    /// A serial number that cannot be listed.
    #[error("cannot revoke serial {serial:?}: {reason}")]
    InvalidSerial {
        /// The serial given, hex.
        serial: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// The issuer certificate is not acceptable.
    #[error("the CRL issuer's certificate is not acceptable: {source}")]
    IssuerCert {
        /// The failed check.
        source: CertError,
    },
    /// The issuer certificate is not a CA.
    #[error(
        "{issuer} is not a CA certificate (basicConstraints CA:TRUE is missing), so it cannot issue CRLs"
    )]
    IssuerNotCa {
        /// The certificate's subject.
        issuer: String,
    },
    /// The issuer certificate's keyUsage lacks cRLSign.
    #[error("the CA {issuer} may not sign CRLs (its key usage lacks cRLSign)")]
    IssuerMayNotSignCrls {
        /// The CA's subject.
        issuer: String,
    },
    /// The serial is listed: the certificate is revoked.
    #[error(
        "certificate serial {serial} was revoked at {} ({})",
        fmt_time(*.revoked_at),
        fmt_reason(*.reason)
    )]
    Revoked {
        /// The serial, hex.
        serial: String,
        /// The entry's revocationDate.
        revoked_at: SystemTime,
        /// The entry's reason.
        reason: Option<RevocationReason>,
    },
    /// Encoding or signing failed.
    #[error("cannot build the CRL: {reason}")]
    Build {
        /// What went wrong.
        reason: String,
    },
}

fn fmt_reason(reason: Option<RevocationReason>) -> String {
    match reason {
        Some(r) => format!("reason: {r}"),
        None => "no reason given".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;
    use std::time::{Duration, UNIX_EPOCH};

    use const_oid::db::rfc5912::{ID_RSASSA_PSS, SHA_256_WITH_RSA_ENCRYPTION};
    use der::asn1::{BitString, Null, OctetString, Uint};
    use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
    use x509_cert::ext::pkix::KeyUsage;

    use super::*;
    use crate::crypto::RsaPrivateKey;
    use crate::pki::issue::{CertSpec, ca_extensions, make_name};
    use crate::pki::testutil::{TEST_BITS, fixture, provider, sign_with};
    use crate::pki::{Validity, write_cert_pem};

    const MINUTE: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(86_400);

    /// The current time to the second, as a CRL stores it.
    fn now() -> SystemTime {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn issuer() -> CrlIssuer {
        CrlIssuer::from_anchor(&fixture().anchor).unwrap()
    }

    fn serial_of(cert_der: &[u8]) -> Vec<u8> {
        parse(cert_der).unwrap().serial().to_vec()
    }

    fn entry(
        serial: &[u8],
        revoked_at: SystemTime,
        reason: Option<RevocationReason>,
    ) -> RevokedEntry {
        RevokedEntry {
            serial: serial.to_vec(),
            revoked_at,
            reason,
        }
    }

    /// CRL number 7, issued an hour ago, due tomorrow, revoking the test
    /// device (key compromise) and the test server (superseded).
    fn sample(now: SystemTime) -> Vec<u8> {
        let f = fixture();
        f.ca.sign_crl(
            7,
            now - HOUR,
            now + DAY,
            &[
                entry(
                    &serial_of(&f.device.cert_der),
                    now - HOUR,
                    Some(RevocationReason::KeyCompromise),
                ),
                entry(
                    &serial_of(&f.server.cert_der),
                    now - 2 * HOUR,
                    Some(RevocationReason::Superseded),
                ),
            ],
        )
        .unwrap()
    }

    fn decode(der: &[u8]) -> CertificateList {
        CertificateList::<x509_cert::certificate::Rfc5280>::from_der(der).unwrap()
    }

    /// Signs `crl`'s TBS as it stands (algorithms included) with `key`.
    fn resign(mut crl: CertificateList, key: &Arc<dyn RsaPrivateKey>) -> Vec<u8> {
        let tbs = crl.tbs_cert_list.to_der().unwrap();
        crl.signature = BitString::from_bytes(&key.pss_sign(&tbs).unwrap()).unwrap();
        crl.to_der().unwrap()
    }

    /// The sample CRL edited by `edit` and re-signed with the CA key.
    fn edited(edit: impl FnOnce(&mut CertificateList)) -> Vec<u8> {
        let mut crl = decode(&sample(now()));
        edit(&mut crl);
        resign(crl, fixture().ca.key_for_test())
    }

    fn verify(der: &[u8]) -> Result<VerifiedCrl, CrlError> {
        VerifiedCrl::verify(der, &issuer(), now())
    }

    fn crl_ext(crl: &mut CertificateList) -> &mut Vec<Extension> {
        crl.tbs_cert_list.crl_extensions.as_mut().unwrap()
    }

    fn private_ext(critical: bool) -> Extension {
        Extension {
            extn_id: ObjectIdentifier::new_unwrap("1.3.6.1.4.1.55555.1"),
            critical,
            extn_value: OctetString::new(Null.to_der().unwrap()).unwrap(),
        }
    }

    #[test]
    fn signs_and_verifies_entries_with_every_reason() {
        let f = fixture();
        let now = now();
        let device = serial_of(&f.device.cert_der);
        let server = serial_of(&f.server.cert_der);
        let entries = [
            entry(&device, now - HOUR, Some(RevocationReason::KeyCompromise)),
            entry(&server, now - 2 * HOUR, Some(RevocationReason::Superseded)),
            entry(&[0x01], now - DAY, None),
            entry(&[0x02], now - DAY, Some(RevocationReason::Unspecified)),
            entry(&[0x03], now - DAY, Some(RevocationReason::CaCompromise)),
            entry(
                &[0x04],
                now - DAY,
                Some(RevocationReason::AffiliationChanged),
            ),
            // A magnitude whose top bit is set: listed as 00 80 01.
            entry(
                &[0x80, 0x01],
                now - DAY,
                Some(RevocationReason::CessationOfOperation),
            ),
        ];
        let der = f.ca.sign_crl(7, now - HOUR, now + DAY, &entries).unwrap();
        let crl = VerifiedCrl::verify(&der, &issuer(), now).unwrap();
        assert_eq!(crl.crl_number(), 7);
        assert_eq!(crl.this_update(), now - HOUR);
        assert_eq!(crl.next_update(), now + DAY);
        assert_eq!(crl.entry_count(), 7);
        assert_eq!(crl.der(), der);
        assert_eq!(crl.issuer(), "CN=secured CA,O=secured");
        let hit = |serial: &[u8], revoked_at, reason| {
            assert_eq!(
                crl.is_revoked(serial),
                Some(Revocation { revoked_at, reason }),
                "{}",
                hex::encode(serial)
            );
        };
        hit(&device, now - HOUR, Some(RevocationReason::KeyCompromise));
        hit(&server, now - 2 * HOUR, Some(RevocationReason::Superseded));
        hit(&[0x01], now - DAY, None);
        hit(&[0x02], now - DAY, None);
        hit(&[0x03], now - DAY, Some(RevocationReason::CaCompromise));
        hit(
            &[0x04],
            now - DAY,
            Some(RevocationReason::AffiliationChanged),
        );
        hit(
            &[0x00, 0x80, 0x01],
            now - DAY,
            Some(RevocationReason::CessationOfOperation),
        );
        for miss in [
            &serial_of(f.ca.cert_der())[..],
            &[0x05],
            &[],
            // Not how a certificate carries that serial.
            &[0x80, 0x01],
        ] {
            assert_eq!(crl.is_revoked(miss), None, "{}", hex::encode(miss));
            crl.check_serial(miss, now).unwrap();
        }
        crl.check_fresh(now).unwrap();
        let err = crl.check_serial(&device, now).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "certificate serial {} was revoked at {} (reason: key-compromise)",
                hex::encode(&device),
                fmt_time(now - HOUR)
            )
        );
        assert!(
            crl.check_serial(&[0x01], now)
                .unwrap_err()
                .to_string()
                .ends_with("(no reason given)")
        );
        assert!(format!("{crl:?}").contains("crl_number: 7"));

        // The encoding: v2, cRLNumber and the CA's key identifier, both
        // non-critical; reasonCode only where a reason other than
        // unspecified was given.
        let list = decode(&der);
        let tbs = &list.tbs_cert_list;
        assert_eq!(tbs.version, Version::V2);
        let exts: Vec<(String, bool)> = tbs
            .crl_extensions
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| (e.extn_id.to_string(), e.critical))
            .collect();
        assert_eq!(
            exts,
            [
                ("2.5.29.20".to_owned(), false),
                ("2.5.29.35".to_owned(), false)
            ]
        );
        let aki = AuthorityKeyIdentifier::from_der(
            tbs.crl_extensions.as_ref().unwrap()[1]
                .extn_value
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            aki.key_identifier.unwrap().as_bytes(),
            f.anchor.key_id(),
            "the CA's subjectKeyIdentifier"
        );
        let revoked = tbs.revoked_certificates.as_ref().unwrap();
        let reason_exts: Vec<usize> = revoked
            .iter()
            .map(|r| r.crl_entry_extensions.as_ref().map_or(0, Vec::len))
            .collect();
        assert_eq!(reason_exts, [1, 1, 0, 0, 1, 1, 1]);
        assert!(!revoked[0].crl_entry_extensions.as_ref().unwrap()[0].critical);
    }

    #[test]
    fn an_empty_crl_has_no_entry_list() {
        let now = now();
        let der = fixture().ca.sign_crl(1, now, now + DAY, &[]).unwrap();
        assert!(decode(&der).tbs_cert_list.revoked_certificates.is_none());
        let crl = verify(&der).unwrap();
        assert_eq!((crl.crl_number(), crl.entry_count()), (1, 0));
        assert_eq!(crl.is_revoked(&serial_of(&fixture().device.cert_der)), None);
    }

    #[test]
    fn reasons_parse_from_and_display_as_cli_words() {
        let words: Vec<String> = RevocationReason::ALL
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            words,
            [
                "unspecified",
                "key-compromise",
                "ca-compromise",
                "affiliation-changed",
                "superseded",
                "cessation-of-operation"
            ]
        );
        for reason in RevocationReason::ALL {
            assert_eq!(reason.as_str().parse::<RevocationReason>(), Ok(reason));
        }
        for word in ["certificate-hold", "keyCompromise", "Superseded", ""] {
            let err = word.parse::<RevocationReason>().unwrap_err();
            assert!(
                err.to_string().starts_with(&format!(
                    "{word:?} is not a revocation reason; use unspecified, key-compromise,"
                )),
                "{err}"
            );
        }
    }

    /// A CA certificate with the test CA's name and key whose keyUsage is
    /// keyCertSign only.
    fn ca_without_crl_sign() -> Vec<u8> {
        let f = fixture();
        let ca = Certificate::from_der(f.ca.cert_der()).unwrap();
        let tbs = ca.tbs_certificate();
        let subject = tbs.subject().clone();
        let spki = tbs.subject_public_key_info().clone();
        let extensions =
            ca_extensions(&subject, &spki, KeyUsage(KeyUsages::KeyCertSign.into()), 0).unwrap();
        sign_with(
            CertSpec {
                issuer: subject.clone(),
                subject,
                spki,
                validity: Validity::days_from_now(5).to_x509().unwrap(),
                extensions,
            },
            f.ca.key_for_test(),
        )
    }

    #[test]
    fn signing_refuses_bad_requests() {
        let f = fixture();
        let now = now();
        let sign = |this, next, entries: &[RevokedEntry]| f.ca.sign_crl(2, this, next, entries);
        for (this, next) in [
            (now, now),
            (now, now - HOUR),
            (now, now + Duration::from_millis(500)),
        ] {
            let err = sign(this, next, &[]).unwrap_err();
            assert!(matches!(err, CrlError::InvalidUpdateTimes { .. }), "{err}");
        }
        let err = sign(UNIX_EPOCH - DAY, now, &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the CRL's this update cannot be encoded (dates must fall between 1970 and 9999)"
        );

        let one = |serial: &[u8]| entry(serial, now, None);
        let err = sign(now, now + DAY, &[one(&[0x80]), one(&[0x00, 0x80])]).unwrap_err();
        assert_eq!(err.to_string(), "the CRL lists serial 0080 more than once");
        for (serial, reason) in [
            (&[][..], "zero"),
            (&[0, 0][..], "zero"),
            (&[0x7f; 21][..], "at most 20 bytes"),
        ] {
            let err = sign(now, now + DAY, &[one(serial)]).unwrap_err();
            assert!(
                matches!(err, CrlError::InvalidSerial { .. }) && err.to_string().contains(reason),
                "{err}"
            );
        }
        let many = vec![one(&[1]); MAX_CRL_ENTRIES + 1];
        let err = sign(now, now + DAY, &many).unwrap_err();
        assert!(matches!(err, CrlError::TooManyEntries { .. }), "{err}");

        let ca =
            CertificateAuthority::from_der(ca_without_crl_sign(), f.ca.key_pkcs8_der(), provider())
                .unwrap();
        let err = ca.sign_crl(1, now, now + DAY, &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the CA CN=secured CA,O=secured may not sign CRLs (its key usage lacks cRLSign)"
        );
    }

    #[test]
    fn refuses_crls_of_other_cas() {
        let f = fixture();
        let now = now();
        let other = CertificateAuthority::generate(
            "other CA",
            TEST_BITS,
            Validity::days_from_now(5),
            provider(),
        )
        .unwrap();
        let der = other.sign_crl(1, now, now + DAY, &[]).unwrap();
        let err = verify(&der).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the CRL was signed by CN=other CA,O=secured, not by the issuing CA CN=secured CA,O=secured"
        );
        let own = CrlIssuer::from_anchor(other.trust_anchor()).unwrap();
        VerifiedCrl::verify(&der, &own, now).unwrap();

        // Same name, another key: the key identifier says so ...
        let der = f.impostor_ca.sign_crl(1, now, now + DAY, &[]).unwrap();
        let err = verify(&der).unwrap_err();
        assert!(matches!(err, CrlError::WrongIssuerKey { .. }), "{err}");
        assert!(err.to_string().starts_with("the CRL was signed with key "));
        // ... and without it, the signature.
        let mut crl = decode(&der);
        crl_ext(&mut crl).retain(|e| e.extn_id != AuthorityKeyIdentifier::OID);
        let der = resign(crl, f.impostor_ca.key_for_test());
        let err = verify(&der).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the CRL's signature does not verify with the public key of CN=secured CA,O=secured"
        );
    }

    #[test]
    fn refuses_tampered_and_malformed_input() {
        let f = fixture();
        let der = sample(now());
        verify(&der).unwrap();

        let mut flipped = der.clone();
        *flipped.last_mut().unwrap() ^= 0x01;
        assert!(matches!(
            verify(&flipped).unwrap_err(),
            CrlError::BadSignature { .. }
        ));
        // A bit of the device's serial, inside the signed part.
        let serial = serial_of(&f.device.cert_der);
        let at = der
            .windows(serial.len())
            .position(|w| w == serial.as_slice())
            .unwrap();
        let mut tampered = der.clone();
        tampered[at + serial.len() - 1] ^= 0x01;
        assert!(matches!(
            verify(&tampered).unwrap_err(),
            CrlError::BadSignature { .. }
        ));

        let mut trailing = der.clone();
        trailing.push(0);
        let err = verify(&trailing).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the CRL has trailing bytes after its DER encoding"
        );

        assert!(matches!(
            verify(&der[..der.len() - 1]).unwrap_err(),
            CrlError::Malformed { .. }
        ));
        assert!(matches!(
            verify(&[]).unwrap_err(),
            CrlError::Malformed { .. }
        ));
        // The outer length in a longer form than needed: BER, not DER.
        assert_eq!(der[1], 0x82);
        let mut long_form = vec![0x30, 0x83, 0x00];
        long_form.extend_from_slice(&der[2..]);
        assert!(matches!(
            verify(&long_form).unwrap_err(),
            CrlError::Malformed { .. }
        ));

        let err = verify(&vec![0x30; MAX_CRL_LEN + 1]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the CRL is {} bytes long, more than the {MAX_CRL_LEN}-byte limit",
                MAX_CRL_LEN + 1
            )
        );
    }

    /// `der` with its first CRL extension's `critical` written out as an
    /// explicit FALSE, a DEFAULT value that DER leaves out, re-signed with
    /// `key`. Built from generic TLVs: the x509-cert types cannot say it.
    fn with_explicit_default(der: &[u8], key: &Arc<dyn RsaPrivateKey>) -> Vec<u8> {
        use der::Tagged;
        use der::asn1::Any;

        let outer: Vec<Any> = Vec::from_der(der).unwrap();
        let mut tbs: Vec<Any> = Vec::from_der(&outer[0].to_der().unwrap()).unwrap();
        let wrapper = tbs.pop().unwrap();
        let mut exts: Vec<Any> = Vec::from_der(wrapper.value()).unwrap();
        let mut first: Vec<Any> = Vec::from_der(&exts[0].to_der().unwrap()).unwrap();
        first.insert(1, Any::encode_from(&false).unwrap());
        exts[0] = Any::from_der(&first.to_der().unwrap()).unwrap();
        tbs.push(Any::new(wrapper.tag(), exts.to_der().unwrap()).unwrap());
        let tbs_der = tbs.to_der().unwrap();
        let signature = BitString::from_bytes(&key.pss_sign(&tbs_der).unwrap()).unwrap();
        vec![
            Any::from_der(&tbs_der).unwrap(),
            outer[1].clone(),
            Any::encode_from(&signature).unwrap(),
        ]
        .to_der()
        .unwrap()
    }

    #[test]
    fn refuses_non_canonical_der_that_decodes() {
        let der = with_explicit_default(&sample(now()), fixture().ca.key_for_test());
        assert_eq!(
            verify(&der).unwrap_err().to_string(),
            "the CRL is not a valid DER-encoded X.509 CRL (it is not in canonical DER form)"
        );
    }

    #[test]
    fn refuses_too_many_entries() {
        let der = edited(|crl| {
            let list = crl.tbs_cert_list.revoked_certificates.as_mut().unwrap();
            let mut minimal = list[0].clone();
            minimal.serial_number = SerialNumber::new(&[1]).unwrap();
            minimal.crl_entry_extensions = None;
            *list = vec![minimal; MAX_CRL_ENTRIES + 1];
        });
        assert!(der.len() <= MAX_CRL_LEN, "{}", der.len());
        assert_eq!(
            verify(&der).unwrap_err(),
            CrlError::TooManyEntries {
                count: MAX_CRL_ENTRIES + 1,
                max: MAX_CRL_ENTRIES
            }
        );
    }

    #[test]
    fn stale_and_future_crls() {
        let f = fixture();
        let now = now();
        let device = serial_of(&f.device.cert_der);
        let der =
            f.ca.sign_crl(
                3,
                now - 2 * DAY,
                now - DAY,
                &[entry(
                    &device,
                    now - 2 * DAY,
                    Some(RevocationReason::KeyCompromise),
                )],
            )
            .unwrap();
        // A stale CRL loads, so that the caller can say why it fails ...
        let crl = VerifiedCrl::verify(&der, &issuer(), now).unwrap();
        crl.check_fresh(now - DAY).unwrap();
        let err = crl
            .check_fresh(now - DAY + Duration::from_secs(1))
            .unwrap_err();
        assert!(matches!(err, CrlError::Stale { .. }), "{err}");
        let err = crl.check_fresh(now).unwrap_err();
        assert_eq!(
            err,
            CrlError::Stale {
                next_update: now - DAY,
                now
            }
        );
        assert_eq!(
            err.to_string(),
            format!(
                "the CRL expired at {} (its next update; now {}); sign a fresh one with `secured admin crl`, or fix the clock",
                fmt_time(now - DAY),
                fmt_time(now)
            )
        );
        // ... and fails closed: a listed serial is still revoked, any other
        // is refused as stale.
        assert!(matches!(
            crl.check_serial(&device, now).unwrap_err(),
            CrlError::Revoked { .. }
        ));
        assert_eq!(crl.check_serial(&[0x05], now).unwrap_err(), err);

        // thisUpdate within the clock skew allowance, then beyond it.
        let soon = f.ca.sign_crl(4, now + 4 * MINUTE, now + DAY, &[]).unwrap();
        verify(&soon).unwrap();
        let later = f.ca.sign_crl(4, now + 10 * MINUTE, now + DAY, &[]).unwrap();
        let err = VerifiedCrl::verify(&later, &issuer(), now).unwrap_err();
        assert_eq!(
            err,
            CrlError::NotYetValid {
                this_update: now + 10 * MINUTE,
                now
            }
        );
        assert!(err.to_string().starts_with("the CRL is not valid before "));
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017 §8.2.1) by `pkcs8`'s key,
    /// from the raw RSA primitive: the product has no PKCS#1 v1.5 signer,
    /// so the test builds one (the padding is fixed for a 2048-bit key).
    fn pkcs1_v15_sign(pkcs8: &[u8], message: &[u8]) -> Vec<u8> {
        use rsa::pkcs8::DecodePrivateKey;
        use rsa::traits::PublicKeyParts;

        const SHA256_DIGEST_INFO: [u8; 19] = [
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
            0x01, 0x05, 0x00, 0x04, 0x20,
        ];
        let key = rsa::PrivateKey::from_pkcs8_der(pkcs8).unwrap();
        let k = key.size();
        let mut em = vec![0xff; k];
        em[0] = 0x00;
        em[1] = 0x01;
        let t = [
            &SHA256_DIGEST_INFO[..],
            &crate::crypto::hash::sha256(&[message])[..],
        ]
        .concat();
        em[k - t.len() - 1] = 0x00;
        em[k - t.len()..].copy_from_slice(&t);
        let m = rsa::BoxedUint::from_be_slice(&em, key.n_bits_precision()).unwrap();
        let s = rsa::hazmat::rsa_decrypt_and_check(&key, None::<&mut getrandom::SysRng>, &m)
            .unwrap()
            .to_be_bytes();
        s[s.len() - k..].to_vec()
    }

    #[test]
    fn refuses_pkcs1_v15_and_other_algorithms() {
        // Signed with RSASSA-PKCS1-v1_5 (SHA-256) by the CA key, and
        // labelled so in both places.
        let f = fixture();
        let mut crl = decode(&sample(now()));
        let v15 = AlgorithmIdentifierOwned {
            oid: SHA_256_WITH_RSA_ENCRYPTION,
            parameters: Some(der::asn1::Any::encode_from(&Null).unwrap()),
        };
        crl.tbs_cert_list.signature = v15.clone();
        crl.signature_algorithm = v15;
        let tbs = crl.tbs_cert_list.to_der().unwrap();
        let signature = pkcs1_v15_sign(f.ca.key_pkcs8_der(), &tbs);
        crl.signature = BitString::from_bytes(&signature).unwrap();
        let err = verify(&crl.to_der().unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the CRL's signatureAlgorithm algorithm 1.2.840.113549.1.1.11 is not supported (only RSASSA-PSS with SHA-256, MGF1-SHA256 and a 32-byte salt is accepted)"
        );

        // PSS outside, PKCS#1 v1.5 claimed inside.
        let der = edited(|crl| {
            crl.tbs_cert_list.signature = AlgorithmIdentifierOwned {
                oid: SHA_256_WITH_RSA_ENCRYPTION,
                parameters: Some(der::asn1::Any::encode_from(&Null).unwrap()),
            };
        });
        assert_eq!(
            verify(&der).unwrap_err(),
            CrlError::UnsupportedAlgorithm {
                field: "tbsCertList.signature",
                oid: "1.2.840.113549.1.1.11".to_owned()
            }
        );
        // PSS with the default parameters (SHA-1).
        let der = edited(|crl| {
            let sha1_pss = AlgorithmIdentifierOwned {
                oid: ID_RSASSA_PSS,
                parameters: None,
            };
            crl.tbs_cert_list.signature = sha1_pss.clone();
            crl.signature_algorithm = sha1_pss;
        });
        assert!(matches!(
            verify(&der).unwrap_err(),
            CrlError::UnsupportedAlgorithm {
                field: "signatureAlgorithm",
                ..
            }
        ));
    }

    #[test]
    fn refuses_unknown_critical_extensions() {
        let err = verify(&edited(|crl| crl_ext(crl).push(private_ext(true)))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the CRL has an unsupported critical extension 1.3.6.1.4.1.55555.1"
        );
        // A non-critical one is ignored.
        verify(&edited(|crl| crl_ext(crl).push(private_ext(false)))).unwrap();
        // A delta CRL (deltaCRLIndicator, critical) is not a full CRL.
        let err = verify(&edited(|crl| {
            crl_ext(crl).push(Extension {
                extn_id: const_oid::db::rfc5280::ID_CE_DELTA_CRL_INDICATOR,
                critical: true,
                extn_value: OctetString::new(Uint::new(&[6]).unwrap().to_der().unwrap()).unwrap(),
            });
        }))
        .unwrap_err();
        assert!(
            matches!(err, CrlError::UnsupportedCriticalExtension { ref oid, .. } if oid == "2.5.29.27"),
            "{err}"
        );
        // An entry naming another certificate issuer (indirect CRL).
        let device = hex::encode(serial_of(&fixture().device.cert_der));
        let err = verify(&edited(|crl| {
            let entry = &mut crl.tbs_cert_list.revoked_certificates.as_mut().unwrap()[0];
            entry
                .crl_entry_extensions
                .as_mut()
                .unwrap()
                .push(Extension {
                    extn_id: const_oid::db::rfc5280::ID_CE_CERTIFICATE_ISSUER,
                    critical: true,
                    extn_value: OctetString::new(vec![0x30, 0x00]).unwrap(),
                });
        }))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the CRL entry for serial {device} has an unsupported critical extension 2.5.29.29"
            )
        );
        let err = verify(&edited(|crl| {
            let entry = &mut crl.tbs_cert_list.revoked_certificates.as_mut().unwrap()[0];
            entry
                .crl_entry_extensions
                .as_mut()
                .unwrap()
                .push(private_ext(true));
        }))
        .unwrap_err();
        assert!(
            matches!(err, CrlError::UnsupportedCriticalExtension { ref scope, .. } if scope.contains(&device)),
            "{err}"
        );
    }

    #[test]
    fn refuses_crls_outside_the_profile() {
        let f = fixture();
        let reason_ext = |code: CrlReason| (&code).to_extension(f.anchor.subject(), &[]).unwrap();
        fn first_entry(crl: &mut CertificateList) -> &mut RevokedCert {
            &mut crl.tbs_cert_list.revoked_certificates.as_mut().unwrap()[0]
        }
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                edited(|crl| crl.tbs_cert_list.next_update = None),
                "the CRL has no next update",
            ),
            (
                edited(|crl| {
                    crl.tbs_cert_list.next_update = Some(Time::try_from(now() - 2 * DAY).unwrap());
                }),
                "the CRL's next update",
            ),
            (
                edited(|crl| crl_ext(crl).retain(|e| e.extn_id != CrlNumber::OID)),
                "the CRL has no CRL number",
            ),
            (
                edited(|crl| {
                    let number = crl_ext(crl)[0].clone();
                    crl_ext(crl).push(number);
                }),
                "the CRL contains extension 2.5.29.20 more than once",
            ),
            (
                edited(|crl| {
                    let big = CrlNumber(Uint::new(&[1, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap());
                    crl_ext(crl)[0].extn_value = OctetString::new(big.to_der().unwrap()).unwrap();
                }),
                "the CRL number 0x010000000000000000 is larger than",
            ),
            (
                edited(|crl| {
                    crl_ext(crl)[0].extn_value = OctetString::new(vec![0x04, 0x00]).unwrap();
                }),
                "the CRL has a malformed cRLNumber extension",
            ),
            (
                edited(|crl| crl.tbs_cert_list.version = Version::V1),
                "the CRL is X.509 v1, but only v2 CRLs",
            ),
            (
                edited(|crl| crl.tbs_cert_list.issuer = make_name(None, "secured CA").unwrap()),
                "the CRL was signed by CN=secured CA, not by the issuing CA CN=secured CA,O=secured",
            ),
            (
                edited(|crl| {
                    let list = crl.tbs_cert_list.revoked_certificates.as_mut().unwrap();
                    let again = list[0].clone();
                    list.push(again);
                }),
                "more than once",
            ),
            (
                edited(|crl| {
                    first_entry(crl).crl_entry_extensions =
                        Some(vec![reason_ext(CrlReason::CertificateHold)]);
                }),
                "gives the reason CertificateHold (6), which this profile does not accept",
            ),
            (
                edited(|crl| {
                    first_entry(crl).crl_entry_extensions =
                        Some(vec![reason_ext(CrlReason::RemoveFromCRL)]);
                }),
                "gives the reason RemoveFromCRL (8)",
            ),
            (
                edited(|crl| {
                    let mut ext = reason_ext(CrlReason::Superseded);
                    ext.extn_value = OctetString::new(vec![0x0a, 0x01, 0x07]).unwrap();
                    first_entry(crl).crl_entry_extensions = Some(vec![ext]);
                }),
                "has a malformed reasonCode extension",
            ),
            (
                edited(|crl| {
                    let ext = reason_ext(CrlReason::Superseded);
                    first_entry(crl).crl_entry_extensions = Some(vec![ext.clone(), ext]);
                }),
                "contains extension 2.5.29.21 more than once",
            ),
        ];
        for (der, expected) in cases {
            let err = verify(&der).unwrap_err().to_string();
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
        }

        // Within the profile: an explicit unspecified reasonCode, and no
        // authorityKeyIdentifier.
        let crl = verify(&edited(|crl| {
            first_entry(crl).crl_entry_extensions = Some(vec![reason_ext(CrlReason::Unspecified)]);
            crl_ext(crl).retain(|e| e.extn_id != AuthorityKeyIdentifier::OID);
        }))
        .unwrap();
        assert_eq!(
            crl.is_revoked(&serial_of(&f.device.cert_der))
                .unwrap()
                .reason,
            Some(RevocationReason::Unspecified)
        );
    }

    #[test]
    fn an_intermediate_ca_may_issue_crls() {
        let f = fixture();
        let now = now();
        // An intermediate CA certificate from the test CA, for the
        // impostor's key.
        let key = f.impostor_ca.key_for_test();
        let spki = SubjectPublicKeyInfoOwned::from_der(key.public_key_spki_der()).unwrap();
        let subject = make_name(Some("secured"), "intermediate CA").unwrap();
        let extensions = ca_extensions(
            &subject,
            &spki,
            KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign),
            0,
        )
        .unwrap();
        let ski = SubjectKeyIdentifier::try_from(spki.owned_to_ref()).unwrap();
        let cert = f.ca.sign_for_test(CertSpec {
            subject: subject.clone(),
            issuer: f.anchor.subject().clone(),
            spki,
            validity: Validity::days_from_now(5).to_x509().unwrap(),
            extensions,
        });
        let intermediate = CrlIssuer::from_verified_ca_cert(&cert, provider()).unwrap();
        assert_eq!(intermediate.name(), "CN=intermediate CA,O=secured");

        // Its CRL: the sample, issued under its name and key identifier.
        let mut crl = decode(&sample(now));
        crl.tbs_cert_list.issuer = subject;
        let aki = AuthorityKeyIdentifier {
            key_identifier: Some(ski.0),
            ..Default::default()
        };
        crl_ext(&mut crl)[1].extn_value = OctetString::new(aki.to_der().unwrap()).unwrap();
        let der = resign(crl, key);
        let verified = VerifiedCrl::verify(&der, &intermediate, now).unwrap();
        assert_eq!(verified.entry_count(), 2);
        assert!(matches!(
            verify(&der).unwrap_err(),
            CrlError::WrongIssuer { .. }
        ));

        // Certificates that may not issue CRLs.
        let err = CrlIssuer::from_verified_ca_cert(&f.device.cert_der, provider()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "CN=device-1 is not a CA certificate (basicConstraints CA:TRUE is missing), so it cannot issue CRLs"
        );
        let err = CrlIssuer::from_verified_ca_cert(&ca_without_crl_sign(), provider()).unwrap_err();
        assert!(
            matches!(err, CrlError::IssuerMayNotSignCrls { .. }),
            "{err}"
        );
        let err = CrlIssuer::from_verified_ca_cert(b"junk", provider()).unwrap_err();
        assert!(matches!(err, CrlError::IssuerCert { .. }), "{err}");
        let anchor = TrustAnchor::from_der(&ca_without_crl_sign(), provider()).unwrap();
        assert!(matches!(
            CrlIssuer::from_anchor(&anchor).unwrap_err(),
            CrlError::IssuerMayNotSignCrls { .. }
        ));
    }

    #[test]
    fn pem_files() {
        let now = now();
        let der = sample(now);
        assert_eq!(CRL_LABEL, "X509 CRL");
        let pem = encode_crl_pem(&der).unwrap();
        assert!(pem.starts_with("-----BEGIN X509 CRL-----\n"));
        assert_eq!(decode_crl_pem(pem.as_bytes(), "text").unwrap(), der);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crl.pem");
        write_crl_pem(&path, &der, false).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o600, 0o600, "{mode:o}");
        assert_eq!(mode & 0o133, 0, "{mode:o}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), pem);
        assert_eq!(read_crl_pem(&path).unwrap(), der);
        let crl = VerifiedCrl::load(&path, &issuer(), now).unwrap();
        assert_eq!(crl.crl_number(), 7);

        let newer = fixture().ca.sign_crl(8, now, now + DAY, &[]).unwrap();
        let err = write_crl_pem(&path, &newer, false).unwrap_err();
        assert!(matches!(err, PkiError::Exists { .. }), "{err}");
        write_crl_pem(&path, &newer, true).unwrap();
        assert_eq!(
            VerifiedCrl::load(&path, &issuer(), now)
                .unwrap()
                .crl_number(),
            8
        );
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        let mut flipped = der.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let bad = dir.path().join("bad.pem");
        write_crl_pem(&bad, &flipped, false).unwrap();
        let err = VerifiedCrl::load(&bad, &issuer(), now).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} is not an acceptable CRL: the CRL's signature does not verify with the public key of CN=secured CA,O=secured",
                bad.display()
            )
        );

        let cert = dir.path().join("cert.pem");
        write_cert_pem(&cert, fixture().ca.cert_der(), false).unwrap();
        let err = read_crl_pem(&cert).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} is not a PEM CRL (expected a \"-----BEGIN X509 CRL-----\" block)",
                cert.display()
            )
        );
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'A'; 2 * 1024 * 1024 + 1]).unwrap();
        let err = read_crl_pem(&big).unwrap_err();
        assert!(matches!(err, PkiError::FileTooLarge { .. }), "{err}");
        let missing = dir.path().join("missing.pem");
        let err = read_crl_pem(&missing).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("cannot read CRL file {}", missing.display())),
            "{err}"
        );
    }

    fn openssl(dir: &Path, args: &[&str]) -> std::process::Output {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    const OPENSSL_CA_CONFIG: &str = "\
[ca]
default_ca = ca_default
[ca_default]
database = ./index.txt
crlnumber = ./crlnumber
certificate = ./ca.pem
private_key = ./ca.key
default_md = sha256
default_crl_days = 1
crl_extensions = crl_ext
[ca_v1]
database = ./index-v1.txt
certificate = ./ca.pem
private_key = ./ca.key
default_md = sha256
default_crl_days = 1
[crl_ext]
authorityKeyIdentifier = keyid:always
[req]
distinguished_name = dn
x509_extensions = v3_ca
prompt = no
[dn]
O = openssl
CN = openssl CA
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
";

    const PSS: [&str; 6] = [
        "-sigopt",
        "rsa_padding_mode:pss",
        "-sigopt",
        "rsa_pss_saltlen:32",
        "-sigopt",
        "rsa_mgf1_md:sha256",
    ];

    /// Our CRL checked by `openssl crl`, and CRLs made by `openssl ca` with
    /// a CA made by openssl checked by us.
    #[test]
    fn interoperates_with_openssl() {
        if Command::new("openssl").arg("version").output().is_err() {
            println!("note: openssl is not installed; skipping the openssl CRL checks");
            return;
        }
        let f = fixture();
        let now = now();
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();

        // Ours, verified and printed by openssl.
        let device = serial_of(&f.device.cert_der);
        let der =
            f.ca.sign_crl(
                7,
                now - HOUR,
                now + DAY,
                &[
                    entry(&device, now - HOUR, Some(RevocationReason::KeyCompromise)),
                    entry(
                        &[0x80, 0x01],
                        now - HOUR,
                        Some(RevocationReason::CessationOfOperation),
                    ),
                ],
            )
            .unwrap();
        write_cert_pem(&dir.join("our-ca.pem"), f.ca.cert_der(), false).unwrap();
        write_crl_pem(&dir.join("our-crl.pem"), &der, false).unwrap();
        let out = openssl(
            dir,
            &[
                "crl",
                "-in",
                "our-crl.pem",
                "-CAfile",
                "our-ca.pem",
                "-noout",
            ],
        );
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(said.contains("verify OK"), "{said}");
        let out = openssl(dir, &["crl", "-in", "our-crl.pem", "-noout", "-text"]);
        let text = String::from_utf8(out.stdout).unwrap().replace(" = ", "=");
        let device_hex = hex::encode_upper(device.strip_prefix(&[0]).unwrap_or(&device));
        for expected in [
            "Version 2 (0x1)",
            "Signature Algorithm: rsassaPss",
            "Salt Length: 0x20",
            "Issuer: O=secured, CN=secured CA",
            "X509v3 CRL Number",
            "X509v3 Authority Key Identifier",
            &format!("Serial Number: {device_hex}"),
            "Key Compromise",
            "Serial Number: 8001",
            "Cessation Of Operation",
        ] {
            assert!(text.contains(expected), "lacks {expected:?}:\n{text}");
        }

        // openssl's CA and CRLs, checked by us.
        std::fs::write(dir.join("openssl.cnf"), OPENSSL_CA_CONFIG).unwrap();
        openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                "ca.key",
            ],
        );
        let mut req = vec![
            "req",
            "-config",
            "openssl.cnf",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-days",
            "2",
            "-sha256",
            "-out",
            "ca.pem",
        ];
        req.extend(PSS);
        openssl(dir, &req);
        std::fs::write(dir.join("crlnumber"), "1000\n").unwrap();
        std::fs::write(
            dir.join("index.txt"),
            "R\t300101000000Z\t240101000000Z,keyCompromise\t0A1B2C\tunknown\t/CN=dev-a\n\
             R\t300101000000Z\t240102000000Z,superseded\t80FF\tunknown\t/CN=dev-b\n\
             R\t300101000000Z\t240103000000Z\t0C\tunknown\t/CN=dev-c\n\
             V\t300101000000Z\t\t0D\tunknown\t/CN=dev-d\n",
        )
        .unwrap();
        let gencrl = |out: &str, extra: &[&str]| {
            let mut args = vec![
                "ca",
                "-config",
                "openssl.cnf",
                "-gencrl",
                "-md",
                "sha256",
                "-out",
                out,
            ];
            args.extend(extra);
            openssl(dir, &args);
            dir.join(out)
        };
        let pss_crl = gencrl("pss.pem", &PSS);
        let anchor = TrustAnchor::load(&dir.join("ca.pem"), provider()).unwrap();
        let their_issuer = CrlIssuer::from_anchor(&anchor).unwrap();
        let crl = VerifiedCrl::load(&pss_crl, &their_issuer, SystemTime::now()).unwrap();
        assert_eq!(crl.crl_number(), 0x1000);
        assert_eq!(crl.entry_count(), 3);
        crl.check_fresh(SystemTime::now()).unwrap();
        let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(
            crl.is_revoked(&[0x0a, 0x1b, 0x2c]),
            Some(Revocation {
                revoked_at: at(1_704_067_200),
                reason: Some(RevocationReason::KeyCompromise)
            })
        );
        assert_eq!(
            crl.is_revoked(&[0x00, 0x80, 0xff]),
            Some(Revocation {
                revoked_at: at(1_704_153_600),
                reason: Some(RevocationReason::Superseded)
            })
        );
        assert_eq!(crl.is_revoked(&[0x0c]).unwrap().reason, None);
        assert_eq!(crl.is_revoked(&[0x0d]), None);
        // The same CA given as a certificate rather than a trust anchor.
        let cert_issuer = CrlIssuer::from_verified_ca_cert(anchor.cert_der(), provider()).unwrap();
        VerifiedCrl::load(&pss_crl, &cert_issuer, SystemTime::now()).unwrap();
        // Not ours to accept: another CA's CRL.
        let err = VerifiedCrl::load(&pss_crl, &issuer(), SystemTime::now()).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("the CRL was signed by CN=openssl CA,O=openssl, not by the issuing CA CN=secured CA,O=secured"),
            "{err}"
        );

        // openssl's default RSA padding is PKCS#1 v1.5.
        let v15_crl = gencrl("v15.pem", &[]);
        let err = VerifiedCrl::load(&v15_crl, &their_issuer, SystemTime::now()).unwrap_err();
        assert!(
            matches!(
                err,
                PkiError::Crl {
                    source: CrlError::UnsupportedAlgorithm {
                        field: "signatureAlgorithm",
                        ..
                    },
                    ..
                }
            ),
            "{err}"
        );
        // Without a CRL number or any extension openssl writes a v1 CRL.
        std::fs::write(
            dir.join("index-v1.txt"),
            "R\t300101000000Z\t240103000000Z\t0C\tunknown\t/CN=dev-c\n",
        )
        .unwrap();
        let mut v1_args = vec!["-name", "ca_v1"];
        v1_args.extend(PSS);
        let v1_crl = gencrl("v1.pem", &v1_args);
        let err = VerifiedCrl::load(&v1_crl, &their_issuer, SystemTime::now()).unwrap_err();
        assert!(
            matches!(
                err,
                PkiError::Crl {
                    source: CrlError::NotV2 { version: "v1" },
                    ..
                }
            ),
            "{err}"
        );
    }
}
