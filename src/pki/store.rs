//! PKI files on disk: `secured pki init` and `secured pki issue`.
//!
//! Layout: `<certs_dir>/<name>.pem` (PEM `CERTIFICATE`) and
//! `<keys_dir>/<name>.key` (PKCS#8 PEM `PRIVATE KEY`, or `ENCRYPTED PRIVATE
//! KEY` when encrypted with a passphrase, see [`keyfile`](super::keyfile)),
//! with `ca`, `server` and one device from `init`.
//!
//! Rules: every file is written to a temporary file in the target directory,
//! fsynced, then renamed into place, so a crash never leaves half a key.
//! Keys are created with mode 0600 and the keys directory with 0700. An
//! existing file is never replaced without `force`: the check happens before
//! any key is generated, and the final rename refuses to clobber as well.

use std::fs::{self, DirBuilder, File, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use der::Encode;
use der::pem::{self, LineEnding};
use zeroize::Zeroizing;

use super::issue::check_leaf_request;
use super::keyfile::{self, Passphrase, PassphraseSource};
use super::names::device_name_problem;
use super::{CertificateAuthority, PkiError, Role, ServerName, Validity, validate_device_name};
use crate::crypto::CryptoProvider;

/// Largest PEM file read, in bytes.
const MAX_PEM_FILE_LEN: u64 = 64 * 1024;
/// PEM label of a certificate.
const CERT_LABEL: &str = "CERTIFICATE";
/// PEM label of a PKCS#8 private key.
const KEY_LABEL: &str = "PRIVATE KEY";
/// PEM label of a PKCS#8 private key encrypted with a passphrase.
const ENCRYPTED_KEY_LABEL: &str = "ENCRYPTED PRIVATE KEY";
/// File stem of the CA's certificate and key.
const CA_STEM: &str = "ca";
/// File stem of the issuing (intermediate) CA.
pub const ISSUING_CA_STEM: &str = "issuing-ca";
/// File stem of the server's certificate and key written by [`init`].
const SERVER_STEM: &str = "server";

/// Where certificates and keys live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiPaths {
    /// Directory of `<name>.pem` certificates.
    pub certs_dir: PathBuf,
    /// Directory of `<name>.key` private keys (created 0700).
    pub keys_dir: PathBuf,
}

impl PkiPaths {
    /// `<base>/certs` and `<base>/keys`.
    #[must_use]
    pub fn under(base: &Path) -> Self {
        Self {
            certs_dir: base.join("certs"),
            keys_dir: base.join("keys"),
        }
    }

    /// `<certs_dir>/<stem>.pem`.
    #[must_use]
    pub fn cert_file(&self, stem: &str) -> PathBuf {
        self.certs_dir.join(format!("{stem}.pem"))
    }

    /// `<keys_dir>/<stem>.key`.
    #[must_use]
    pub fn key_file(&self, stem: &str) -> PathBuf {
        self.keys_dir.join(format!("{stem}.key"))
    }

    /// The CA certificate, `<certs_dir>/ca.pem`.
    #[must_use]
    pub fn ca_cert(&self) -> PathBuf {
        self.cert_file(CA_STEM)
    }

    /// The CA key, `<keys_dir>/ca.key`.
    #[must_use]
    pub fn ca_key(&self) -> PathBuf {
        self.key_file(CA_STEM)
    }

    /// The issuing CA certificate, `<certs_dir>/issuing-ca.pem`.
    #[must_use]
    pub fn issuing_cert(&self) -> PathBuf {
        self.cert_file(ISSUING_CA_STEM)
    }

    /// The issuing CA key, `<keys_dir>/issuing-ca.key`.
    #[must_use]
    pub fn issuing_key(&self) -> PathBuf {
        self.key_file(ISSUING_CA_STEM)
    }

    /// The CRL, `<certs_dir>/crl.pem`.
    #[must_use]
    pub fn crl(&self) -> PathBuf {
        self.certs_dir.join("crl.pem")
    }
}

/// Options of `secured pki init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOptions {
    /// Names of the server certificate: the first is its common name, all
    /// are subjectAltName entries. Default `localhost`, `127.0.0.1`.
    pub server_names: Vec<ServerName>,
    /// The device certificate's name. Default `device-1`.
    pub device_name: String,
    /// The CA's common name. Default `secured CA`.
    pub ca_name: String,
    /// CA key size. Default 3072.
    pub ca_bits: usize,
    /// Server and device key size. Default 2048.
    pub leaf_bits: usize,
    /// Validity of the device certificate, in days. Default 30.
    pub validity_days: u32,
    /// Validity of the server certificate, in days. Default 825.
    pub server_validity_days: u32,
    /// Validity of the root CA certificate, in days. Default 3650.
    pub ca_validity_days: u32,
    /// Validity of the issuing CA certificate, in days. Default 1825.
    pub issuing_validity_days: u32,
    /// Replace existing files.
    pub force: bool,
    /// Encrypt the keys written with a passphrase from this source, asked
    /// for once before any key is generated; `None` writes them unencrypted.
    pub encrypt_keys: Option<PassphraseSource>,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            server_names: vec![
                ServerName::Dns("localhost".to_owned()),
                ServerName::Ip(std::net::IpAddr::from([127, 0, 0, 1])),
            ],
            device_name: "device-1".to_owned(),
            ca_name: "secured CA".to_owned(),
            ca_bits: 3072,
            leaf_bits: 2048,
            validity_days: DEFAULT_DEVICE_DAYS,
            server_validity_days: DEFAULT_SERVER_DAYS,
            ca_validity_days: 3650,
            issuing_validity_days: 1825,
            force: false,
            encrypt_keys: None,
        }
    }
}

/// Default validity of a device certificate: short, renewed by the device.
pub const DEFAULT_DEVICE_DAYS: u32 = 30;
/// Default validity of a server certificate.
pub const DEFAULT_SERVER_DAYS: u32 = 825;

/// Options of `secured pki issue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueOptions {
    /// Key size. Default 2048.
    pub bits: usize,
    /// Validity in days. Default 825.
    pub validity_days: u32,
    /// Encrypt the new key with a passphrase from this source, asked for
    /// before the key is generated; `None` writes it unencrypted.
    pub encrypt_key: Option<PassphraseSource>,
    /// Where the passphrase of an encrypted CA key comes from; `None` refuses
    /// one with [`PkiError::KeyEncrypted`].
    pub ca_passphrase: Option<PassphraseSource>,
}

impl Default for IssueOptions {
    fn default() -> Self {
        Self {
            bits: 2048,
            validity_days: DEFAULT_SERVER_DAYS,
            encrypt_key: None,
            ca_passphrase: None,
        }
    }
}

/// `secured pki init`: creates a root CA (`ca.pem`/`ca.key`, to be kept
/// offline), an issuing CA signed by it (`issuing-ca.pem`/`issuing-ca.key`,
/// for the server), and with the issuing CA a server certificate
/// (`server.pem`/`server.key`) and a device certificate
/// (`<device>.pem`/`<device>.key`); the leaves' files hold their chain.
/// Returns the files written, in order.
///
/// # Errors
/// [`PkiError::Exists`] (before anything is generated) when a target file
/// exists and `opts.force` is false; name errors
/// ([`PkiError::NoServerNames`], [`PkiError::InvalidDeviceName`],
/// [`PkiError::ReservedName`], [`PkiError::InvalidCommonName`]);
/// generation errors; [`PkiError::CreateDir`] or [`PkiError::Write`].
pub fn init(
    paths: &PkiPaths,
    opts: &InitOptions,
    provider: &'static CryptoProvider,
) -> Result<Vec<PathBuf>, PkiError> {
    validate_device_name(&opts.device_name)?;
    if let Some(owner) = reserved_owner(&opts.device_name, Role::Device) {
        return Err(PkiError::ReservedName {
            name: opts.device_name.clone(),
            owner,
        });
    }
    let server_cn = opts
        .server_names
        .first()
        .ok_or(PkiError::NoServerNames)?
        .to_string();
    check_leaf_request(Role::Server, &server_cn, &opts.server_names)?;
    check_leaf_request(Role::Device, &opts.device_name, &[])?;

    let stems = [
        CA_STEM,
        ISSUING_CA_STEM,
        SERVER_STEM,
        opts.device_name.as_str(),
    ];
    let targets: Vec<PathBuf> = stems
        .iter()
        .flat_map(|stem| [paths.cert_file(stem), paths.key_file(stem)])
        .collect();
    if !opts.force {
        refuse_existing(&targets)?;
    }
    let keys = KeyWriter::new(opts.encrypt_keys.as_ref(), opts.force)?;
    create_dirs(paths)?;

    let root = CertificateAuthority::generate_root(
        &opts.ca_name,
        opts.ca_bits,
        Validity::days_from_now(opts.ca_validity_days),
        provider,
    )?;
    let issuing = root.issue_intermediate(
        &format!("{} issuing CA", opts.ca_name),
        opts.ca_bits,
        Validity::days_from_now(opts.issuing_validity_days),
    )?;
    let server = issuing.issue(
        Role::Server,
        &server_cn,
        &opts.server_names,
        opts.leaf_bits,
        Validity::days_from_now(opts.server_validity_days),
    )?;
    let device = issuing.issue(
        Role::Device,
        &opts.device_name,
        &[],
        opts.leaf_bits,
        Validity::days_from_now(opts.validity_days),
    )?;

    write_cert_pem(&paths.ca_cert(), root.cert_der(), opts.force)?;
    keys.write(&paths.ca_key(), root.key_pkcs8_der())?;
    write_cert_pem(&paths.issuing_cert(), issuing.cert_der(), opts.force)?;
    keys.write(&paths.issuing_key(), issuing.key_pkcs8_der())?;
    for (stem, leaf) in [(SERVER_STEM, &server), (opts.device_name.as_str(), &device)] {
        write_cert_chain_pem(
            &paths.cert_file(stem),
            &leaf.cert_der,
            issuing.chain(),
            opts.force,
        )?;
        keys.write(&paths.key_file(stem), &leaf.key_pkcs8_der)?;
    }
    Ok(targets)
}

/// `secured pki issue`: loads the issuing CA (`issuing-ca.pem`/
/// `issuing-ca.key`, or for a single-tier PKI `ca.pem`/`ca.key`) and writes
/// `<name>.pem` (with its chain) and `<name>.key` for a new server or
/// device certificate. For a server without `server_names`, `name` itself
/// must be a valid server name and becomes the only one. Returns the files
/// written.
///
/// # Errors
/// [`PkiError::CaRole`], name errors ([`PkiError::InvalidFileName`],
/// [`PkiError::ReservedName`], [`PkiError::NoServerNames`], ...),
/// [`PkiError::Exists`] (before anything is generated), [`PkiError::NoCa`]
/// when there is no CA, CA loading errors, generation and write errors.
pub fn issue_files(
    paths: &PkiPaths,
    role: Role,
    name: &str,
    server_names: &[ServerName],
    opts: &IssueOptions,
    force: bool,
    provider: &'static CryptoProvider,
) -> Result<Vec<PathBuf>, PkiError> {
    if role == Role::Ca {
        return Err(PkiError::CaRole);
    }
    if let Some(reason) = device_name_problem(name) {
        return Err(match role {
            Role::Device => PkiError::InvalidDeviceName {
                name: name.to_owned(),
                reason,
            },
            _ => PkiError::InvalidFileName {
                name: name.to_owned(),
                reason,
            },
        });
    }
    // The CAs' files are never a leaf's; the server's are never a device's
    // (`--role device --name server --force` would replace the server key).
    if let Some(owner) = reserved_owner(name, role) {
        return Err(PkiError::ReservedName {
            name: name.to_owned(),
            owner,
        });
    }
    let default_names;
    let server_names = if role == Role::Server && server_names.is_empty() {
        default_names = [name
            .parse::<ServerName>()
            .map_err(|_| PkiError::NoServerNames)?];
        &default_names[..]
    } else {
        server_names
    };
    check_leaf_request(role, name, server_names)?;

    let targets = vec![paths.cert_file(name), paths.key_file(name)];
    if !force {
        refuse_existing(&targets)?;
    }
    let ca = load_signing_ca(paths, opts.ca_passphrase.as_ref(), provider)?;
    let keys = KeyWriter::new(opts.encrypt_key.as_ref(), force)?;
    let leaf = ca.issue(
        role,
        name,
        server_names,
        opts.bits,
        Validity::days_from_now(opts.validity_days),
    )?;
    create_dirs(paths)?;
    write_cert_chain_pem(&targets[0], &leaf.cert_der, ca.chain(), force)?;
    keys.write(&targets[1], &leaf.key_pkcs8_der)?;
    Ok(targets)
}

/// The CA that signs leaves in `paths`: the issuing CA when its files
/// exist, else the root of a single-tier PKI.
///
/// # Errors
/// [`PkiError::NoCa`] when there is no CA at all; CA loading errors.
pub fn load_signing_ca(
    paths: &PkiPaths,
    passphrase: Option<&PassphraseSource>,
    provider: &'static CryptoProvider,
) -> Result<CertificateAuthority, PkiError> {
    let issuing = paths.issuing_cert();
    if issuing.exists() {
        return CertificateAuthority::load_with(
            &issuing,
            &paths.issuing_key(),
            passphrase,
            provider,
        );
    }
    let ca_cert = paths.ca_cert();
    if !ca_cert.exists() {
        return Err(PkiError::NoCa { path: ca_cert });
    }
    CertificateAuthority::load_with(&ca_cert, &paths.ca_key(), passphrase, provider)
}

/// Whose files a leaf of `role` may not take: the CAs', and for a device
/// the server's.
fn reserved_owner(name: &str, role: Role) -> Option<&'static str> {
    match name {
        CA_STEM => Some("CA"),
        ISSUING_CA_STEM => Some("issuing CA"),
        SERVER_STEM if role == Role::Device => Some("server"),
        _ => None,
    }
}

/// Writes a certificate as PEM `CERTIFICATE` (mode 0644 before umask).
///
/// # Errors
/// [`PkiError::Exists`] when `path` exists and `force` is false, or
/// [`PkiError::Write`].
pub fn write_cert_pem(path: &Path, der: &[u8], force: bool) -> Result<(), PkiError> {
    let pem = pem::encode_string(CERT_LABEL, LineEnding::LF, der).map_err(|e| PkiError::Write {
        path: path.to_owned(),
        source: io::Error::other(e.to_string()),
    })?;
    write_atomic(path, pem.as_bytes(), 0o644, force)
}

/// Writes a PKCS#8 private key as PEM `PRIVATE KEY`, mode 0600 from
/// creation.
///
/// # Errors
/// [`PkiError::Exists`] when `path` exists and `force` is false, or
/// [`PkiError::Write`].
pub fn write_key_pem(path: &Path, pkcs8_der: &[u8], force: bool) -> Result<(), PkiError> {
    let pem = pem::encode_string(KEY_LABEL, LineEnding::LF, pkcs8_der)
        .map(Zeroizing::new)
        .map_err(|e| PkiError::Write {
            path: path.to_owned(),
            source: io::Error::other(e.to_string()),
        })?;
    write_atomic(path, pem.as_bytes(), 0o600, force)
}

/// Writes a certificate followed by its chain (nearest issuer first) as
/// consecutive PEM `CERTIFICATE` blocks, the usual "full chain" file.
///
/// # Errors
/// As [`write_cert_pem`].
pub fn write_cert_chain_pem(
    path: &Path,
    der: &[u8],
    chain: &[Vec<u8>],
    force: bool,
) -> Result<(), PkiError> {
    let mut text = String::new();
    for cert in std::iter::once(der).chain(chain.iter().map(Vec::as_slice)) {
        let pem =
            pem::encode_string(CERT_LABEL, LineEnding::LF, cert).map_err(|e| PkiError::Write {
                path: path.to_owned(),
                source: io::Error::other(e.to_string()),
            })?;
        text.push_str(&pem);
    }
    write_atomic(path, text.as_bytes(), 0o644, force)
}

/// Most certificates read from one PEM file: a leaf and its chain.
const MAX_PEM_CHAIN: usize = 4;

/// Reads a PEM file of one or more certificates (a leaf, then its chain)
/// and returns their DER, in file order.
pub(crate) fn read_cert_chain_pem(path: &Path) -> Result<Vec<Vec<u8>>, PkiError> {
    let bytes = read_limited(path, "certificate")?;
    decode_cert_chain_pem(&bytes, &path.display().to_string())
}

/// Decodes one or more PEM `CERTIFICATE` blocks; `origin` names the text
/// in errors.
pub(crate) fn decode_cert_chain_pem(
    pem_bytes: &[u8],
    origin: &str,
) -> Result<Vec<Vec<u8>>, PkiError> {
    let not_pem = || PkiError::NotPem {
        origin: origin.to_owned(),
        kind: "certificate",
        label: CERT_LABEL,
    };
    let certs = x509_cert::Certificate::load_pem_chain(pem_bytes).map_err(|_| not_pem())?;
    if certs.is_empty() || certs.len() > MAX_PEM_CHAIN {
        return Err(not_pem());
    }
    certs
        .iter()
        .map(|c| c.to_der().map_err(|_| not_pem()))
        .collect()
}

/// Writes a PKCS#8 private key encrypted with `passphrase` (see
/// [`keyfile::encrypt`]) as PEM `ENCRYPTED PRIVATE KEY`, mode 0600 from
/// creation.
///
/// # Errors
/// [`PkiError::KeyEncryption`], [`PkiError::Exists`] when `path` exists and
/// `force` is false, or [`PkiError::Write`].
pub fn write_key_pem_encrypted(
    path: &Path,
    pkcs8_der: &[u8],
    passphrase: &Passphrase,
    force: bool,
) -> Result<(), PkiError> {
    let der = keyfile::encrypt(pkcs8_der, passphrase)?;
    let pem = pem::encode_string(ENCRYPTED_KEY_LABEL, LineEnding::LF, &der).map_err(|e| {
        PkiError::Write {
            path: path.to_owned(),
            source: io::Error::other(e.to_string()),
        }
    })?;
    write_atomic(path, pem.as_bytes(), 0o600, force)
}

/// Writes the private keys of one [`init`] or [`issue_files`]: encrypted
/// with a passphrase obtained once, before any key is generated, or plain.
struct KeyWriter {
    passphrase: Option<Passphrase>,
    force: bool,
}

impl KeyWriter {
    /// Obtains the passphrase for new keys from `encrypt`, if given.
    fn new(encrypt: Option<&PassphraseSource>, force: bool) -> Result<Self, PkiError> {
        let passphrase = encrypt.map(PassphraseSource::new_passphrase).transpose()?;
        Ok(Self { passphrase, force })
    }

    fn write(&self, path: &Path, pkcs8_der: &[u8]) -> Result<(), PkiError> {
        match &self.passphrase {
            Some(passphrase) => write_key_pem_encrypted(path, pkcs8_der, passphrase, self.force),
            None => write_key_pem(path, pkcs8_der, self.force),
        }
    }
}

/// Reads a PEM certificate file and returns its DER.
pub(crate) fn read_cert_pem(path: &Path) -> Result<Vec<u8>, PkiError> {
    let bytes = read_limited(path, "certificate")?;
    decode_cert_pem(&bytes, &path.display().to_string())
}

/// Decodes PEM `CERTIFICATE` text; `origin` names it in errors.
pub(crate) fn decode_cert_pem(pem_bytes: &[u8], origin: &str) -> Result<Vec<u8>, PkiError> {
    match pem::decode_vec(pem_bytes) {
        Ok((CERT_LABEL, der)) => Ok(der),
        _ => Err(PkiError::NotPem {
            origin: origin.to_owned(),
            kind: "certificate",
            label: CERT_LABEL,
        }),
    }
}

/// Reads a PKCS#8 PEM private key file and returns its DER; an encrypted
/// key is refused with [`PkiError::KeyEncrypted`].
#[cfg(test)]
pub(crate) fn read_key_pem(path: &Path) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    read_key_pem_with(path, None)
}

/// Reads a PKCS#8 PEM private key file, plain or encrypted, and returns its
/// DER. The passphrase of an encrypted key comes from `passphrase`, asked
/// only then; without a source such a key is refused with
/// [`PkiError::KeyEncrypted`].
pub(crate) fn read_key_pem_with(
    path: &Path,
    passphrase: Option<&PassphraseSource>,
) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    // The PEM text holds the key too: zeroize it as well.
    let bytes = Zeroizing::new(read_limited(path, "private key")?);
    let Ok((label, der)) = pem::decode_vec(&bytes) else {
        return Err(not_pem_key(path));
    };
    let der = Zeroizing::new(der);
    match label {
        KEY_LABEL => Ok(der),
        ENCRYPTED_KEY_LABEL => {
            let passphrase = match passphrase {
                Some(source) => source.passphrase_for(path)?,
                None => {
                    return Err(PkiError::KeyEncrypted {
                        path: path.to_owned(),
                    });
                }
            };
            keyfile::decrypt_from(&der, &passphrase, &path.display().to_string())
        }
        _ => Err(not_pem_key(path)),
    }
}

/// Whether `path` holds a passphrase-encrypted private key (PEM
/// `ENCRYPTED PRIVATE KEY`); false when it cannot be read.
#[must_use]
pub fn key_is_encrypted(path: &Path) -> bool {
    let Ok(bytes) = read_limited(path, "private key").map(Zeroizing::new) else {
        return false;
    };
    pem::decode_vec(&bytes).is_ok_and(|(label, der)| {
        let _wiped = Zeroizing::new(der);
        label == ENCRYPTED_KEY_LABEL
    })
}

fn not_pem_key(path: &Path) -> PkiError {
    PkiError::NotPem {
        origin: path.display().to_string(),
        kind: "PKCS#8 private key",
        label: KEY_LABEL,
    }
}

/// Reads at most [`MAX_PEM_FILE_LEN`] bytes; the buffer is zeroized on drop
/// because it may hold a key.
fn read_limited(path: &Path, kind: &'static str) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    let read_error = |source| PkiError::Read {
        kind,
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    let limit = usize::try_from(MAX_PEM_FILE_LEN).unwrap_or(usize::MAX);
    // Capacity for the whole bounded read, so the buffer never reallocates
    // and leaves an un-zeroized copy behind.
    let mut buf = Zeroizing::new(Vec::with_capacity(limit.saturating_add(1)));
    file.take(MAX_PEM_FILE_LEN + 1)
        .read_to_end(&mut buf)
        .map_err(read_error)?;
    if buf.len() as u64 > MAX_PEM_FILE_LEN {
        return Err(PkiError::FileTooLarge {
            kind,
            path: path.to_owned(),
            max: MAX_PEM_FILE_LEN,
        });
    }
    Ok(buf)
}

/// Fails with [`PkiError::Exists`] naming the first target that exists.
fn refuse_existing(targets: &[PathBuf]) -> Result<(), PkiError> {
    match targets.iter().find(|p| p.symlink_metadata().is_ok()) {
        Some(existing) => Err(PkiError::Exists {
            path: existing.clone(),
        }),
        None => Ok(()),
    }
}

/// Creates the certificate directory and the keys directory (0700).
fn create_dirs(paths: &PkiPaths) -> Result<(), PkiError> {
    fs::create_dir_all(&paths.certs_dir).map_err(|source| PkiError::CreateDir {
        path: paths.certs_dir.clone(),
        source,
    })?;
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&paths.keys_dir)
        .map_err(|source| PkiError::CreateDir {
            path: paths.keys_dir.clone(),
            source,
        })
}

/// Temp file in the same directory (created with `mode`), fsync, rename
/// into place (refusing to replace unless `force`), fsync the directory.
pub(crate) fn write_atomic(
    path: &Path,
    contents: &[u8],
    mode: u32,
    force: bool,
) -> Result<(), PkiError> {
    let write_error = |source| PkiError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".secured-")
        .suffix(".tmp")
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(write_error)?;
    tmp.write_all(contents).map_err(write_error)?;
    tmp.as_file().sync_all().map_err(write_error)?;
    if force {
        tmp.persist(path).map_err(|e| write_error(e.error))?;
    } else {
        tmp.persist_noclobber(path).map_err(|e| {
            if e.error.kind() == io::ErrorKind::AlreadyExists {
                PkiError::Exists {
                    path: path.to_owned(),
                }
            } else {
                write_error(e.error)
            }
        })?;
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(write_error)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;
    use std::time::SystemTime;

    use super::*;
    use crate::pki::testutil::{NO_KEYGEN, TEST_BITS, fixture, provider};
    use crate::pki::{Identity, TrustAnchor, verify_chain, verify_peer};

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn test_opts() -> InitOptions {
        InitOptions {
            ca_bits: TEST_BITS,
            ..InitOptions::default()
        }
    }

    #[test]
    fn defaults() {
        let o = InitOptions::default();
        assert_eq!(
            o.server_names
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["localhost", "127.0.0.1"]
        );
        assert_eq!(
            (o.device_name.as_str(), o.ca_bits, o.leaf_bits),
            ("device-1", 3072, 2048)
        );
        assert_eq!(
            (
                o.validity_days,
                o.server_validity_days,
                o.ca_validity_days,
                o.force
            ),
            (30, 825, 3650, false)
        );
        let p = PkiPaths::under(Path::new("/x"));
        assert_eq!(p.ca_cert(), Path::new("/x/certs/ca.pem"));
        assert_eq!(p.key_file("device-1"), Path::new("/x/keys/device-1.key"));
    }

    /// `pki init` and `pki issue` end to end, plus `openssl verify` when
    /// openssl is installed. One test, so the keys are generated once.
    #[test]
    fn init_issue_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let paths = PkiPaths::under(&dir.path().join("pki"));
        let written = init(&paths, &test_opts(), provider()).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| {
                p.strip_prefix(dir.path().join("pki"))
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(
            names,
            [
                "certs/ca.pem",
                "keys/ca.key",
                "certs/issuing-ca.pem",
                "keys/issuing-ca.key",
                "certs/server.pem",
                "keys/server.key",
                "certs/device-1.pem",
                "keys/device-1.key"
            ]
        );
        assert_eq!(mode(&paths.keys_dir), 0o700);
        for path in &written {
            let text = fs::read_to_string(path).unwrap();
            if path.extension().unwrap() == "key" {
                assert_eq!(mode(path), 0o600, "{}", path.display());
                assert!(text.starts_with(concat!("-----BEGIN PRIVATE", " KEY-----\n")));
            } else {
                assert!(text.starts_with("-----BEGIN CERTIFICATE-----\n"));
            }
        }

        // What was written loads and verifies.
        let anchor = TrustAnchor::load(&paths.ca_cert(), provider()).unwrap();
        let now = SystemTime::now();
        for (stem, role) in [("server", Role::Server), ("device-1", Role::Device)] {
            let id =
                Identity::load(&paths.cert_file(stem), &paths.key_file(stem), provider()).unwrap();
            // Issued by the issuing CA, whose certificate follows theirs.
            assert!(verify_peer(&anchor, id.cert_der(), role, None, now).is_err());
            let peer = verify_chain(&anchor, id.cert_der(), id.chain(), role, None, now).unwrap();
            assert_eq!(peer.name(), id.name());
        }
        let server = Identity::load(
            &paths.cert_file("server"),
            &paths.key_file("server"),
            provider(),
        )
        .unwrap();
        assert_eq!(server.name(), "localhost");
        for name in ["localhost", "127.0.0.1"] {
            verify_chain(
                &anchor,
                server.cert_der(),
                server.chain(),
                Role::Server,
                Some(&name.parse().unwrap()),
                now,
            )
            .unwrap();
        }

        // A second init refuses before generating anything (NO_KEYGEN would panic).
        let err = init(&paths, &test_opts(), &NO_KEYGEN).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "refusing to overwrite {}; pass --force to replace it",
                paths.ca_cert().display()
            )
        );

        // Issue another device; refuse to repeat it; refuse reserved and bad names.
        let issued = issue_files(
            &paths,
            Role::Device,
            "device-2",
            &[],
            &IssueOptions::default(),
            false,
            provider(),
        )
        .unwrap();
        assert_eq!(
            issued,
            [paths.cert_file("device-2"), paths.key_file("device-2")]
        );
        assert_eq!(mode(&issued[1]), 0o600);
        let id = Identity::load(&issued[0], &issued[1], provider()).unwrap();
        verify_chain(&anchor, id.cert_der(), id.chain(), Role::Device, None, now).unwrap();
        let again = issue_files(
            &paths,
            Role::Device,
            "device-2",
            &[],
            &IssueOptions::default(),
            false,
            &NO_KEYGEN,
        )
        .unwrap_err();
        assert!(
            matches!(again, PkiError::Exists { ref path } if *path == issued[0]),
            "{again}"
        );
        let reserved = issue_files(
            &paths,
            Role::Server,
            "ca",
            &[],
            &IssueOptions::default(),
            true,
            &NO_KEYGEN,
        )
        .unwrap_err();
        assert!(
            matches!(reserved, PkiError::ReservedName { .. }),
            "{reserved}"
        );
        // A device named `server` would replace the server's key (with --force).
        let server_key = std::fs::read(paths.key_file("server")).unwrap();
        let reserved = issue_files(
            &paths,
            Role::Device,
            "server",
            &[],
            &IssueOptions::default(),
            true,
            &NO_KEYGEN,
        )
        .unwrap_err();
        assert_eq!(
            reserved.to_string(),
            "\"server\" is reserved for the server's own files; choose another name"
        );
        assert_eq!(std::fs::read(paths.key_file("server")).unwrap(), server_key);
        let bad = issue_files(
            &paths,
            Role::Server,
            "../x",
            &[],
            &IssueOptions::default(),
            true,
            &NO_KEYGEN,
        )
        .unwrap_err();
        assert!(
            bad.to_string()
                .starts_with("\"../x\" cannot be used as a certificate file name"),
            "{bad}"
        );
        let unnamed = issue_files(
            &paths,
            Role::Server,
            "web_1",
            &[],
            &IssueOptions::default(),
            false,
            &NO_KEYGEN,
        )
        .unwrap_err();
        assert!(matches!(unnamed, PkiError::NoServerNames), "{unnamed}");

        openssl_checks(&paths);
    }

    fn openssl_checks(paths: &PkiPaths) {
        if Command::new("openssl").arg("version").output().is_err() {
            println!("note: openssl is not installed; skipping the openssl verify/x509 checks");
            return;
        }
        let ca = paths.ca_cert();
        for stem in ["server", "device-1", "device-2"] {
            let leaf = paths.cert_file(stem);
            let out = Command::new("openssl")
                .arg("verify")
                .arg("-CAfile")
                .arg(&ca)
                .arg("-untrusted")
                .arg(paths.issuing_cert())
                .arg(&leaf)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains(": OK"),
                "openssl verify {stem}: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = |path: &Path| {
            let out = Command::new("openssl")
                .args(["x509", "-noout", "-text", "-in"])
                .arg(path)
                .output()
                .unwrap();
            assert!(out.status.success());
            // OpenSSL versions differ in spacing around '=' in names.
            String::from_utf8(out.stdout).unwrap().replace(" = ", "=")
        };
        let ca_text = text(&ca);
        for expected in [
            "Version: 3 (0x2)",
            "Signature Algorithm: rsassaPss",
            "Hash Algorithm: sha256",
            "Mask Algorithm: mgf1 with sha256",
            "Salt Length: 0x20",
            "Subject: O=secured, CN=secured CA",
            "X509v3 Basic Constraints: critical",
            "CA:TRUE, pathlen:1",
            "X509v3 Key Usage: critical",
            "Certificate Sign, CRL Sign",
            "X509v3 Subject Key Identifier",
        ] {
            assert!(
                ca_text.contains(expected),
                "CA lacks {expected:?}:\n{ca_text}"
            );
        }
        let server_text = text(&paths.cert_file("server"));
        for expected in [
            "Issuer: O=secured, CN=secured CA issuing CA",
            "Subject: CN=localhost",
            "CA:FALSE",
            "Digital Signature, Key Encipherment",
            "TLS Web Server Authentication",
            "DNS:localhost, IP Address:127.0.0.1",
            "X509v3 Authority Key Identifier",
            "Public-Key: (2048 bit)",
        ] {
            assert!(
                server_text.contains(expected),
                "server lacks {expected:?}:\n{server_text}"
            );
        }
        let device_text = text(&paths.cert_file("device-1"));
        for expected in [
            "Subject: CN=device-1",
            "TLS Web Client Authentication",
            "CA:FALSE",
        ] {
            assert!(
                device_text.contains(expected),
                "device lacks {expected:?}:\n{device_text}"
            );
        }
        assert!(!device_text.contains("Subject Alternative Name"));
    }

    /// `pki init` and `pki issue` with encrypted keys: every key is written
    /// encrypted, loads with its passphrase, and the CA key is refused
    /// without it before any key is generated.
    #[test]
    fn init_and_issue_with_encrypted_keys() {
        let dir = tempfile::tempdir().unwrap();
        let paths = PkiPaths::under(&dir.path().join("pki"));
        let pass_file = dir.path().join("pass");
        fs::write(&pass_file, "correct horse\n").unwrap();
        let source = PassphraseSource::File(pass_file);

        // No passphrase: refused before anything is generated or created.
        let unset = PassphraseSource::Env("SECURED_TEST_NEVER_SET_PASSPHRASE".into());
        let opts = InitOptions {
            encrypt_keys: Some(unset),
            ..test_opts()
        };
        let err = init(&paths, &opts, &NO_KEYGEN).unwrap_err();
        assert!(matches!(err, PkiError::PassphraseEnvUnset { .. }), "{err}");
        assert!(!paths.keys_dir.exists());

        let opts = InitOptions {
            encrypt_keys: Some(source.clone()),
            ..test_opts()
        };
        init(&paths, &opts, provider()).unwrap();
        for stem in ["ca", ISSUING_CA_STEM, "server", "device-1"] {
            let key = paths.key_file(stem);
            assert_eq!(mode(&key), 0o600);
            assert!(key_is_encrypted(&key), "{stem}");
        }
        let cert = paths.cert_file("device-1");
        let key = paths.key_file("device-1");
        let id = Identity::load_with(&cert, &key, Some(&source), provider()).unwrap();
        assert_eq!(id.name(), "device-1");
        let err = Identity::load(&cert, &key, provider()).unwrap_err();
        assert!(matches!(err, PkiError::KeyEncrypted { .. }), "{err}");

        // Without a passphrase source the CA key is refused (NO_KEYGEN would
        // panic if a key were generated first).
        let err = issue_files(
            &paths,
            Role::Device,
            "device-2",
            &[],
            &IssueOptions::default(),
            false,
            &NO_KEYGEN,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the key file {} is encrypted: give its passphrase with --passphrase-file FILE or the SECURED_KEY_PASSPHRASE environment variable, or run on a terminal to be asked",
                paths.issuing_key().display()
            )
        );
        // With it: a plain key, then an encrypted one.
        let with_ca = IssueOptions {
            ca_passphrase: Some(source.clone()),
            ..IssueOptions::default()
        };
        issue_files(
            &paths,
            Role::Device,
            "device-2",
            &[],
            &with_ca,
            false,
            provider(),
        )
        .unwrap();
        let text = fs::read_to_string(paths.key_file("device-2")).unwrap();
        assert!(text.starts_with(concat!("-----BEGIN PRIVATE", " KEY-----\n")));
        let encrypted = IssueOptions {
            encrypt_key: Some(source.clone()),
            ..with_ca
        };
        issue_files(
            &paths,
            Role::Device,
            "device-3",
            &[],
            &encrypted,
            false,
            provider(),
        )
        .unwrap();
        assert!(key_is_encrypted(&paths.key_file("device-3")));
        let anchor = TrustAnchor::load(&paths.ca_cert(), provider()).unwrap();
        for stem in ["device-2", "device-3"] {
            let id = Identity::load_with(
                &paths.cert_file(stem),
                &paths.key_file(stem),
                Some(&source),
                provider(),
            )
            .unwrap();
            verify_chain(
                &anchor,
                id.cert_der(),
                id.chain(),
                Role::Device,
                None,
                SystemTime::now(),
            )
            .unwrap();
        }
    }

    #[test]
    fn init_validates_names_first() {
        let dir = tempfile::tempdir().unwrap();
        let paths = PkiPaths::under(dir.path());
        let cases = [
            (
                InitOptions {
                    server_names: vec![],
                    ..test_opts()
                },
                "a server certificate needs at least one server name",
            ),
            (
                InitOptions {
                    device_name: "ca".into(),
                    ..test_opts()
                },
                "\"ca\" is reserved for the CA's own files",
            ),
            (
                InitOptions {
                    device_name: "server".into(),
                    ..test_opts()
                },
                "\"server\" is reserved for the server's own files",
            ),
            (
                InitOptions {
                    device_name: "a b".into(),
                    ..test_opts()
                },
                "invalid device name \"a b\"",
            ),
        ];
        for (opts, expected) in cases {
            let err = init(&paths, &opts, &NO_KEYGEN).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err}");
        }
        assert!(!paths.keys_dir.exists());
        let err = issue_files(
            &paths,
            Role::Device,
            "d",
            &[],
            &IssueOptions::default(),
            false,
            &NO_KEYGEN,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "no CA certificate at {}; run `secured pki init` first",
                paths.ca_cert().display()
            )
        );
    }

    #[test]
    fn writes_refuse_to_clobber_unless_forced() {
        let f = fixture();
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.key");
        write_key_pem(&key, &f.device.key_pkcs8_der, false).unwrap();
        assert_eq!(mode(&key), 0o600);
        let err = write_key_pem(&key, &f.server.key_pkcs8_der, false).unwrap_err();
        assert!(matches!(err, PkiError::Exists { .. }), "{err}");
        assert_eq!(*read_key_pem(&key).unwrap(), *f.device.key_pkcs8_der);
        fs::set_permissions(&key, Permissions::from_mode(0o644)).unwrap();
        write_key_pem(&key, &f.server.key_pkcs8_der, true).unwrap();
        assert_eq!(mode(&key), 0o600);
        assert_eq!(*read_key_pem(&key).unwrap(), *f.server.key_pkcs8_der);

        let cert = dir.path().join("c.pem");
        write_cert_pem(&cert, &f.device.cert_der, false).unwrap();
        assert_eq!(read_cert_pem(&cert).unwrap(), f.device.cert_der);
        assert!(write_cert_pem(&cert, &f.server.cert_der, false).is_err());
        write_cert_pem(&cert, &f.server.cert_der, true).unwrap();
        assert_eq!(read_cert_pem(&cert).unwrap(), f.server.cert_der);
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);

        let big = dir.path().join("big.pem");
        fs::write(&big, vec![b'A'; 70 * 1024]).unwrap();
        let err = read_cert_pem(&big).unwrap_err();
        assert!(matches!(err, PkiError::FileTooLarge { .. }), "{err}");
    }
}
