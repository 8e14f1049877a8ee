//! PKI files on disk: `secured pki init` and `secured pki issue`.
//!
//! Layout: `<certs_dir>/<name>.pem` (PEM `CERTIFICATE`) and
//! `<keys_dir>/<name>.key` (PKCS#8 PEM `PRIVATE KEY`), with `ca`, `server`
//! and one device from `init`.
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

use der::pem::{self, LineEnding};
use zeroize::Zeroizing;

use super::issue::check_leaf_request;
use super::names::device_name_problem;
use super::{CertificateAuthority, PkiError, Role, ServerName, Validity, validate_device_name};
use crate::crypto::CryptoProvider;

/// Largest PEM file read, in bytes.
const MAX_PEM_FILE_LEN: u64 = 64 * 1024;
/// PEM label of a certificate.
const CERT_LABEL: &str = "CERTIFICATE";
/// PEM label of a PKCS#8 private key.
const KEY_LABEL: &str = "PRIVATE KEY";
/// File stem of the CA's certificate and key.
const CA_STEM: &str = "ca";
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
    /// Validity of the server and device certificates, in days. Default 825.
    pub validity_days: u32,
    /// Validity of the CA certificate, in days. Default 3650.
    pub ca_validity_days: u32,
    /// Replace existing files.
    pub force: bool,
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
            validity_days: 825,
            ca_validity_days: 3650,
            force: false,
        }
    }
}

/// Options of `secured pki issue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssueOptions {
    /// Key size. Default 2048.
    pub bits: usize,
    /// Validity in days. Default 825.
    pub validity_days: u32,
}

impl Default for IssueOptions {
    fn default() -> Self {
        Self {
            bits: 2048,
            validity_days: 825,
        }
    }
}

/// `secured pki init`: creates a CA (`ca.pem`/`ca.key`), a server
/// certificate (`server.pem`/`server.key`) and a device certificate
/// (`<device>.pem`/`<device>.key`). Returns the files written, in order.
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
    if opts.device_name == CA_STEM || opts.device_name == SERVER_STEM {
        return Err(PkiError::ReservedName {
            name: opts.device_name.clone(),
            owner: if opts.device_name == CA_STEM {
                "CA"
            } else {
                "server"
            },
        });
    }
    let server_cn = opts
        .server_names
        .first()
        .ok_or(PkiError::NoServerNames)?
        .to_string();
    check_leaf_request(Role::Server, &server_cn, &opts.server_names)?;
    check_leaf_request(Role::Device, &opts.device_name, &[])?;

    let stems = [CA_STEM, SERVER_STEM, opts.device_name.as_str()];
    let targets: Vec<PathBuf> = stems
        .iter()
        .flat_map(|stem| [paths.cert_file(stem), paths.key_file(stem)])
        .collect();
    if !opts.force {
        refuse_existing(&targets)?;
    }
    create_dirs(paths)?;

    let ca = CertificateAuthority::generate(
        &opts.ca_name,
        opts.ca_bits,
        Validity::days_from_now(opts.ca_validity_days),
        provider,
    )?;
    let leaf_validity = Validity::days_from_now(opts.validity_days);
    let server = ca.issue(
        Role::Server,
        &server_cn,
        &opts.server_names,
        opts.leaf_bits,
        leaf_validity,
    )?;
    let device = ca.issue(
        Role::Device,
        &opts.device_name,
        &[],
        opts.leaf_bits,
        leaf_validity,
    )?;

    write_cert_pem(&paths.ca_cert(), ca.cert_der(), opts.force)?;
    write_key_pem(&paths.ca_key(), ca.key_pkcs8_der(), opts.force)?;
    for (stem, leaf) in [(SERVER_STEM, &server), (opts.device_name.as_str(), &device)] {
        write_cert_pem(&paths.cert_file(stem), &leaf.cert_der, opts.force)?;
        write_key_pem(&paths.key_file(stem), &leaf.key_pkcs8_der, opts.force)?;
    }
    Ok(targets)
}

/// `secured pki issue`: loads `ca.pem`/`ca.key` and writes `<name>.pem` and
/// `<name>.key` for a new server or device certificate. For a server
/// without `server_names`, `name` itself must be a valid server name and
/// becomes the only one. Returns the files written.
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
    if name == CA_STEM {
        return Err(PkiError::ReservedName {
            name: name.to_owned(),
            owner: "CA",
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
    let ca_cert = paths.ca_cert();
    if !ca_cert.exists() {
        return Err(PkiError::NoCa { path: ca_cert });
    }
    let ca = CertificateAuthority::load(&ca_cert, &paths.ca_key(), provider)?;
    let leaf = ca.issue(
        role,
        name,
        server_names,
        opts.bits,
        Validity::days_from_now(opts.validity_days),
    )?;
    create_dirs(paths)?;
    write_cert_pem(&targets[0], &leaf.cert_der, force)?;
    write_key_pem(&targets[1], &leaf.key_pkcs8_der, force)?;
    Ok(targets)
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

/// Reads a PKCS#8 PEM private key file and returns its DER.
pub(crate) fn read_key_pem(path: &Path) -> Result<Zeroizing<Vec<u8>>, PkiError> {
    let bytes = read_limited(path, "private key")?;
    match pem::decode_vec(&bytes) {
        Ok((KEY_LABEL, der)) => Ok(Zeroizing::new(der)),
        Ok((_, der)) => {
            drop(Zeroizing::new(der));
            Err(not_pem_key(path))
        }
        Err(_) => Err(not_pem_key(path)),
    }
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
fn write_atomic(path: &Path, contents: &[u8], mode: u32, force: bool) -> Result<(), PkiError> {
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
