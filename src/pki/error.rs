//! PKI errors: [`CertError`] for a certificate that fails a check,
//! [`PkiError`] for files, keys and issuance. A CRL's own checks fail with
//! [`CrlError`](super::CrlError), wrapped in [`PkiError::Crl`] when the CRL
//! came from a file.
//!
//! Every message is one sentence that says what is wrong and, for files,
//! which file.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::crypto::{CryptoError, MAX_RSA_BITS, MIN_RSA_BITS};

use super::keyfile::PASSPHRASE_ENV;
use super::{CrlError, Role};

/// Why a certificate was refused.
///
/// These describe the certificate, never a secret, so they may be logged and
/// summarised to the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The DER is longer than [`MAX_CERT_LEN`](super::MAX_CERT_LEN).
    #[error("certificate is {len} bytes long, more than the {max}-byte limit")]
    TooLarge {
        /// Length of the rejected input.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a strictly DER-encoded X.509 certificate.
    #[error("certificate is not a valid DER-encoded X.509 certificate ({reason})")]
    Malformed {
        /// The decoder's description of the problem.
        reason: String,
    },
    /// Bytes follow the certificate's DER encoding.
    #[error("certificate has trailing bytes after its DER encoding")]
    TrailingData,
    /// Not an X.509 v3 certificate.
    #[error("certificate is X.509 {version}, but only v3 is accepted")]
    NotV3 {
        /// The version found (`v1` or `v2`).
        version: &'static str,
    },
    /// The signature algorithm is not RSASSA-PSS-SHA256 with our parameters.
    #[error(
        "certificate {field} algorithm {oid} is not supported (only RSASSA-PSS with SHA-256, MGF1-SHA256 and a 32-byte salt is accepted)"
    )]
    UnsupportedAlgorithm {
        /// Which AlgorithmIdentifier: `signatureAlgorithm` or `tbsCertificate.signature`.
        field: &'static str,
        /// The algorithm's object identifier.
        oid: String,
    },
    /// Issued by someone other than the trusted CA.
    #[error("certificate is signed by an unknown CA (issuer {issuer}, expected {expected})")]
    UnknownIssuer {
        /// The certificate's issuer name.
        issuer: String,
        /// The trusted CA's subject name.
        expected: String,
    },
    /// A self-signed certificate presented as a peer certificate.
    #[error(
        "certificate is self-signed ({subject}) instead of issued by the trusted CA ({expected})"
    )]
    SelfSigned {
        /// The certificate's subject (and issuer) name.
        subject: String,
        /// The trusted CA's subject name.
        expected: String,
    },
    /// A CA certificate whose issuer is not its own subject.
    #[error("CA certificate is not self-signed (issuer {issuer}, subject {subject})")]
    NotSelfSigned {
        /// The certificate's issuer name.
        issuer: String,
        /// The certificate's subject name.
        subject: String,
    },
    /// The signature does not verify with the issuing CA's public key.
    #[error("certificate signature does not verify with the CA's public key")]
    BadSignature,
    /// The certificate's validity period has not started.
    #[error(
        "certificate is not valid before {} (now {})",
        fmt_time(*.not_before),
        fmt_time(*.now)
    )]
    NotYetValid {
        /// Start of the validity period.
        not_before: SystemTime,
        /// The time of the check.
        now: SystemTime,
    },
    /// The certificate's validity period has ended.
    #[error("certificate expired at {} (now {})", fmt_time(*.not_after), fmt_time(*.now))]
    Expired {
        /// End of the validity period.
        not_after: SystemTime,
        /// The time of the check.
        now: SystemTime,
    },
    /// The trusted CA certificate's validity period has not started.
    #[error(
        "the trusted CA certificate is not valid before {} (now {})",
        fmt_time(*.not_before),
        fmt_time(*.now)
    )]
    AnchorNotYetValid {
        /// Start of the CA's validity period.
        not_before: SystemTime,
        /// The time of the check.
        now: SystemTime,
    },
    /// The trusted CA certificate has expired.
    #[error(
        "the trusted CA certificate expired at {} (now {})",
        fmt_time(*.not_after),
        fmt_time(*.now)
    )]
    AnchorExpired {
        /// End of the CA's validity period.
        not_after: SystemTime,
        /// The time of the check.
        now: SystemTime,
    },
    /// A CA certificate presented as a peer certificate.
    #[error(
        "certificate is a CA certificate (basicConstraints CA:TRUE) and cannot identify a peer"
    )]
    IsCa,
    /// A trust anchor that is not a CA certificate.
    #[error("certificate is not a CA certificate (basicConstraints CA:TRUE is missing)")]
    NotCa,
    /// The keyUsage extension is missing or lacks a required bit.
    #[error("certificate key usage does not include {usage}")]
    MissingKeyUsage {
        /// The required usage, e.g. `digitalSignature`.
        usage: &'static str,
    },
    /// The extendedKeyUsage extension does not allow the expected role.
    #[error(
        "certificate is not a {expected} certificate (its extended key usage lacks {})",
        .expected.purpose_name()
    )]
    WrongRole {
        /// The role the certificate was checked for.
        expected: Role,
    },
    /// A critical extension this verifier does not process.
    #[error("certificate has an unsupported critical extension {oid}")]
    UnsupportedCriticalExtension {
        /// The extension's object identifier.
        oid: String,
    },
    /// The same extension appears twice (RFC 5280 §4.2 forbids it).
    #[error("certificate contains extension {oid} more than once")]
    DuplicateExtension {
        /// The extension's object identifier.
        oid: String,
    },
    /// A known extension that does not decode.
    #[error("certificate {name} extension is malformed")]
    BadExtension {
        /// The extension's name.
        name: &'static str,
    },
    /// The subject public key is not an RSA key.
    #[error("certificate public key is not an RSA key")]
    NotRsa,
    /// The subject public key does not decode as an RSA key.
    #[error("certificate public key is not a valid RSA key")]
    BadPublicKey,
    /// The RSA modulus is outside the accepted sizes.
    #[error(
        "certificate RSA key of {bits} bits is outside the accepted range ({MIN_RSA_BITS}..={MAX_RSA_BITS} bits)"
    )]
    KeySize {
        /// Modulus size of the rejected key.
        bits: usize,
    },
    /// A server certificate that does not name the server we wanted.
    #[error(
        "server certificate is not valid for {expected} (it is valid for {})",
        list_or_none(.presented)
    )]
    NameMismatch {
        /// The name the client connected to.
        expected: String,
        /// The certificate's subjectAltName entries, as `DNS:x` / `IP:y`.
        presented: Vec<String>,
    },
    /// The subject has no common name.
    #[error("certificate subject has no common name")]
    MissingCommonName,
    /// The subject has more than one common name.
    #[error("certificate subject has more than one common name")]
    MultipleCommonNames,
    /// A device certificate whose common name is not a valid device name.
    #[error("device certificate common name {name:?} is not a valid device name: {reason}")]
    InvalidDeviceName {
        /// The common name found.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// An intermediate CA certificate of the chain failed a check.
    #[error("the intermediate CA certificate {subject} was refused: {source}")]
    Intermediate {
        /// The intermediate's subject name.
        subject: String,
        /// The check it failed.
        source: Box<CertError>,
    },
    /// A CA certificate's pathLenConstraint forbids the chain below it.
    #[error(
        "CA certificate {subject} allows {path_len} intermediate CA certificate(s) below it, but the chain has {below}"
    )]
    PathLength {
        /// The CA's subject name.
        subject: String,
        /// Its pathLenConstraint.
        path_len: u8,
        /// Intermediate CA certificates below it in the chain.
        below: usize,
    },
    /// More intermediate CA certificates than a chain may have.
    #[error(
        "certificate chain has more than {max} intermediate CA certificates between the certificate and the trusted root"
    )]
    ChainTooLong {
        /// The limit.
        max: usize,
    },
    /// A CA certificate with name constraints, which are not processed.
    #[error(
        "CA certificate has a nameConstraints extension, which secured does not process, so the chain is refused"
    )]
    NameConstraints,
    /// A server certificate without subjectAltName.
    #[error(
        "server certificate has no subjectAltName entry (the common name is never used as the server's name)"
    )]
    MissingSubjectAltName,
    /// An enrolling device found no root with the pinned fingerprint in
    /// the server's chain.
    #[error(
        "the server did not present the root certificate the enrollment token pins (SHA-256 {fingerprint}); check the token and the server address"
    )]
    PinnedRootMissing {
        /// The pinned fingerprint, hex.
        fingerprint: String,
    },
    /// [`verify_peer`](super::verify_peer) was asked to verify a CA role.
    #[error("a peer certificate can only be verified as a server or a device, not as a CA")]
    CaRole,
}

/// Everything that can go wrong loading, writing or issuing certificates and
/// keys. File errors name the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// A file could not be read.
    #[error("cannot read {kind} file {}: {source}", .path.display())]
    Read {
        /// What the file should contain, e.g. `certificate`.
        kind: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file is implausibly large for what it should contain.
    #[error("{} is larger than {max} bytes, too large to be a {kind} file", .path.display())]
    FileTooLarge {
        /// What the file should contain.
        kind: &'static str,
        /// The file.
        path: PathBuf,
        /// The size limit.
        max: u64,
    },
    /// A file could not be written.
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A directory could not be created.
    #[error("cannot create directory {}: {source}", .path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The input is not PEM of the expected kind.
    #[error("{origin} is not a PEM {kind} (expected a \"-----BEGIN {label}-----\" block)")]
    NotPem {
        /// Where the PEM came from (usually a path).
        origin: String,
        /// What it should contain, e.g. `certificate`.
        kind: &'static str,
        /// The expected PEM label.
        label: &'static str,
    },
    /// A certificate failed a check.
    #[error("{origin} is not an acceptable certificate: {source}")]
    Cert {
        /// Where the certificate came from (usually a path).
        origin: String,
        /// The failed check.
        source: CertError,
    },
    /// A CRL failed a check.
    #[error("{origin} is not an acceptable CRL: {source}")]
    Crl {
        /// Where the CRL came from (usually a path).
        origin: String,
        /// The failed check.
        source: CrlError,
    },
    /// A private key could not be loaded.
    #[error("{origin} is not a usable private key: {source}")]
    Key {
        /// Where the key came from (usually a path).
        origin: String,
        /// The backend's error.
        source: CryptoError,
    },
    /// A public key to be certified is not acceptable.
    #[error("the public key to certify is not acceptable: {reason}")]
    PublicKey {
        /// What is wrong with it.
        reason: String,
    },
    /// The private key does not belong to the certificate.
    #[error("{key} does not match {cert} (the private key belongs to a different certificate)")]
    KeyMismatch {
        /// Where the key came from.
        key: String,
        /// Where the certificate came from.
        cert: String,
    },
    /// An encrypted key file was met without a way to get its passphrase.
    #[error(
        "the key file {} is encrypted: give its passphrase with --passphrase-file FILE or the {PASSPHRASE_ENV} environment variable, or run on a terminal to be asked",
        .path.display()
    )]
    KeyEncrypted {
        /// The key file.
        path: PathBuf,
    },
    /// An encrypted key did not decrypt to a PKCS#8 key.
    #[error("the passphrase for {origin} is wrong (or the file is damaged); try again")]
    WrongPassphrase {
        /// Where the key came from (usually a path).
        origin: String,
    },
    /// An encrypted key whose scheme is refused.
    #[error(
        "{origin} uses an unsupported encryption ({scheme}); re-encrypt it with scrypt and AES-256-CBC, as `openssl pkcs8 -topk8 -v2 aes-256-cbc -scrypt` does"
    )]
    UnsupportedKeyEncryption {
        /// Where the key came from (usually a path).
        origin: String,
        /// The scheme found.
        scheme: String,
    },
    /// An encrypted key whose key derivation would cost too much memory or
    /// time; refused before deriving.
    #[error(
        "{origin} asks for a costlier key derivation than accepted ({what}); re-encrypt it with scrypt at a lower cost, as `openssl pkcs8 -topk8 -v2 aes-256-cbc -scrypt` does"
    )]
    KeyDerivationTooCostly {
        /// Where the key came from (usually a path).
        origin: String,
        /// The parameters and the limit they exceed.
        what: String,
    },
    /// A PEM `ENCRYPTED PRIVATE KEY` whose contents do not decode.
    #[error(
        "{origin} is not a valid encrypted PKCS#8 private key ({reason}); restore it from a backup or issue a new key"
    )]
    MalformedEncryptedKey {
        /// Where the key came from (usually a path).
        origin: String,
        /// The decoder's description of the problem.
        reason: String,
    },
    /// Encrypting a private key failed.
    #[error("cannot encrypt the private key: {reason}")]
    KeyEncryption {
        /// What failed.
        reason: String,
    },
    /// An empty passphrase.
    #[error("{origin} is empty, and an empty passphrase protects nothing; give one that is not")]
    EmptyPassphrase {
        /// Where it came from, e.g. `the passphrase file F`.
        origin: String,
    },
    /// A passphrase that is not UTF-8.
    #[error("{origin} is not valid UTF-8; give the passphrase as UTF-8 text")]
    PassphraseNotUtf8 {
        /// Where it came from.
        origin: String,
    },
    /// The passphrase's environment variable is not set.
    #[error(
        "the environment variable {var} is not set; set it to the passphrase, or give --passphrase-file FILE"
    )]
    PassphraseEnvUnset {
        /// The variable's name.
        var: String,
    },
    /// Keys are to be encrypted, but there is no way to get a passphrase.
    #[error(
        "encrypting the keys needs a passphrase: give it with --passphrase-file FILE or the {PASSPHRASE_ENV} environment variable, or run on a terminal to be asked"
    )]
    NoPassphrase,
    /// The passphrase typed twice differed.
    #[error("the two passphrases typed differ; run the command again and type the same one twice")]
    PassphraseMismatch,
    /// The terminal could not be asked.
    #[error(
        "cannot ask for the passphrase on the terminal: {source}; give it with --passphrase-file FILE or the {PASSPHRASE_ENV} environment variable instead"
    )]
    Prompt {
        /// The I/O error.
        source: io::Error,
    },
    /// The target file exists and `force` was not given.
    #[error("refusing to overwrite {}; pass --force to replace it", .path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// There is no CA to issue with.
    #[error("no CA certificate at {}; run `secured pki init` first", .path.display())]
    NoCa {
        /// Where the CA certificate was expected.
        path: PathBuf,
    },
    /// A device name breaks the naming rules.
    #[error("invalid device name {name:?}: {reason}")]
    InvalidDeviceName {
        /// The rejected name.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A name that cannot be used as a certificate file name.
    #[error("{name:?} cannot be used as a certificate file name: {reason}")]
    InvalidFileName {
        /// The rejected name.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A server name is neither an IP address nor a valid DNS name.
    #[error("invalid server name {name:?}: {reason}")]
    InvalidServerName {
        /// The rejected name.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A common name is empty, too long or contains control characters.
    #[error("invalid common name {name:?}: {reason}")]
    InvalidCommonName {
        /// The rejected name.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A server certificate was requested without any name.
    #[error("a server certificate needs at least one server name (a DNS name or an IP address)")]
    NoServerNames,
    /// Server names were given for a device certificate.
    #[error("device certificates carry no server names; remove them from the request for {name}")]
    UnexpectedServerNames {
        /// The device name.
        name: String,
    },
    /// A name that would collide with the CA's or server's own files.
    #[error("{name:?} is reserved for the {owner}'s own files; choose another name")]
    ReservedName {
        /// The rejected name.
        name: String,
        /// Whose files it would overwrite.
        owner: &'static str,
    },
    /// A leaf was requested with the CA role.
    #[error(
        "a CA certificate cannot be issued as a leaf; create the CA with `secured pki init` instead"
    )]
    CaRole,
    /// The validity period is empty or not representable.
    #[error("invalid validity period: {reason}")]
    InvalidValidity {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Key generation failed.
    #[error("cannot generate a {bits}-bit RSA key: {source}")]
    KeyGeneration {
        /// Requested modulus size.
        bits: usize,
        /// The backend's error.
        source: CryptoError,
    },
    /// The random number generator failed.
    #[error("cannot draw a certificate serial number: {source}")]
    Random {
        /// The backend's error.
        source: CryptoError,
    },
    /// Building or signing a certificate failed.
    #[error("cannot build the {what} certificate: {reason}")]
    Build {
        /// Which certificate.
        what: String,
        /// The builder's description of the problem.
        reason: String,
    },
}

impl PkiError {
    /// Wraps a certificate check failure for a certificate loaded from `path`.
    pub(crate) fn cert_at(path: &Path, source: CertError) -> Self {
        PkiError::Cert {
            origin: path.display().to_string(),
            source,
        }
    }
}

/// Formats a time as RFC 3339 UTC without panicking on odd values.
pub(crate) fn fmt_time(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    };
    let formatted = time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|dt| {
            dt.format(&time::format_description::well_known::Rfc3339)
                .ok()
        });
    formatted.unwrap_or_else(|| format!("{secs} seconds after the Unix epoch"))
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "no names".to_owned()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn times_format_as_rfc3339() {
        assert_eq!(fmt_time(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            fmt_time(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            "2023-11-14T22:13:20Z"
        );
    }

    #[test]
    fn name_mismatch_lists_sans() {
        let e = CertError::NameMismatch {
            expected: "example.com".into(),
            presented: vec!["DNS:localhost".into(), "IP:127.0.0.1".into()],
        };
        assert_eq!(
            e.to_string(),
            "server certificate is not valid for example.com (it is valid for DNS:localhost, IP:127.0.0.1)"
        );
    }
}
