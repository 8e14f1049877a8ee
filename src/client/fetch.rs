//! Verified downloads, device side (proto-spec.md §13.5): the signer's
//! certificate is checked against the device's CA at the signing time, the
//! signed scope must include this device, and the content must match the
//! signed size, hash and signature before it gets a name on disk.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::message::{FileHead, FileInfo, Sharing};
use crate::pki::{CertError, CertifiedPeer, Role, TrustAnchor, verify_chain};
use crate::transfer::{file_digest, file_digest_v2};

/// The owner name of files the server publishes (proto-spec.md §13.8).
pub const SERVER_OWNER: &str = "server";

/// Why a downloaded file was refused. Nothing was written at the
/// destination.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// The signer's certificate does not verify against the CA at the
    /// signing time.
    #[error("the certificate of {owner}, who signed the file, was refused: {error}")]
    Certificate {
        /// The claimed owner.
        owner: String,
        /// Why.
        error: CertError,
    },
    /// The certificate names another device than the file's owner.
    #[error("the file claims to be from {owner} but is signed by {signer}")]
    WrongSigner {
        /// The claimed owner.
        owner: String,
        /// The certificate's name.
        signer: String,
    },
    /// The signed scope does not include this device: the server showed it
    /// a file it may not see.
    #[error(
        "the file's signed scope ({scope}) does not include this device; the server should not have offered it"
    )]
    NotInScope {
        /// The signed scope.
        scope: String,
    },
    /// Fewer or more bytes than the signed size.
    #[error("the server sent {got} bytes of a file signed as {signed} bytes")]
    Size {
        /// The signed size.
        signed: u64,
        /// Bytes received.
        got: u64,
    },
    /// The content does not hash to the signed SHA-256.
    #[error(
        "the content does not match its signed SHA-256 (the stored copy was altered or damaged)"
    )]
    Hash,
    /// The signature does not verify.
    #[error("the owner's signature does not verify over this file and its metadata")]
    Signature,
}

/// The signer of a download, once its certificate verified.
#[derive(Debug)]
pub struct Signer {
    /// The verified certificate.
    pub peer: CertifiedPeer,
    /// The time it was checked at: the signed time, or for a version 1
    /// upload the server's word of when it stored the file.
    pub checked_at: SystemTime,
    /// Whether that time was signed.
    pub time_signed: bool,
}

fn unix(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

/// Checks a `FILE` head before any content arrives: the certificate at the
/// signing time and role, its name against the owner, and the scope
/// against `me`.
///
/// # Errors
/// The [`DownloadError`] of the first check that fails.
pub fn verify_head(
    head: &FileHead,
    anchor: &TrustAnchor,
    intermediates: &[Vec<u8>],
    me: &str,
) -> Result<Signer, DownloadError> {
    let info = &head.info;
    let (checked_at, time_signed) = if head.signed_version >= 2 {
        (unix(info.signed_at), true)
    } else {
        (unix(info.stored_at / 1000), false)
    };
    let role = if info.owner == SERVER_OWNER {
        Role::Server
    } else {
        Role::Device
    };
    let peer = verify_chain(
        anchor,
        &head.certificate,
        intermediates,
        role,
        None,
        checked_at,
    )
    .map_err(|error| DownloadError::Certificate {
        owner: info.owner.clone(),
        error,
    })?;
    if role == Role::Device && peer.name() != info.owner {
        return Err(DownloadError::WrongSigner {
            owner: info.owner.clone(),
            signer: peer.name().to_owned(),
        });
    }
    if !info.scope.allows(&info.owner, me) {
        return Err(DownloadError::NotInScope {
            scope: info.scope.to_string(),
        });
    }
    Ok(Signer {
        peer,
        checked_at,
        time_signed,
    })
}

/// The digest the owner signed, by the head's `signed_version`.
#[must_use]
pub fn signed_digest(head: &FileHead) -> [u8; 32] {
    let i = &head.info;
    if head.signed_version >= 2 {
        let sharing = Sharing {
            signed_at: i.signed_at,
            scope: i.scope.clone(),
        };
        file_digest_v2(
            i.kind,
            i.size,
            &i.name,
            &i.content_type,
            &sharing,
            &i.sha256,
        )
    } else {
        file_digest(i.kind, i.size, &i.name, &i.content_type, &i.sha256)
    }
}

/// Checks the content received against the head: size, hash, signature.
///
/// # Errors
/// [`DownloadError::Size`], [`DownloadError::Hash`] or
/// [`DownloadError::Signature`].
pub fn verify_content(
    head: &FileHead,
    signer: &Signer,
    size: u64,
    sha256: &[u8; 32],
) -> Result<(), DownloadError> {
    let info = &head.info;
    if size != info.size {
        return Err(DownloadError::Size {
            signed: info.size,
            got: size,
        });
    }
    if *sha256 != info.sha256 {
        return Err(DownloadError::Hash);
    }
    signer
        .peer
        .public_key()
        .pss_verify_digest(&signed_digest(head), &head.signature)
        .map_err(|_| DownloadError::Signature)
}

/// Where a download goes.
#[derive(Debug, Clone)]
pub struct Destination {
    /// A file path, or a folder to put the file in under its signed name.
    pub path: PathBuf,
    /// Whether `path` is a folder.
    pub is_dir: bool,
    /// Replace an existing file.
    pub force: bool,
}

impl Destination {
    /// The file path for `info`: `path` itself, or the signed name in the
    /// folder `path` (never the server's `stored_as`, which is unsigned).
    #[must_use]
    pub fn file_for(&self, info: &FileInfo) -> PathBuf {
        if self.is_dir {
            self.path.join(&info.name)
        } else {
            self.path.clone()
        }
    }

    /// The folder the file lands in.
    #[must_use]
    pub fn folder_of(file: &Path) -> PathBuf {
        match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        }
    }
}

/// A verified download, in place.
#[derive(Debug)]
pub struct Fetched {
    /// What the file is, as signed (and the server's id, name and time).
    pub info: FileInfo,
    /// Where it was written.
    pub path: PathBuf,
    /// Who signed it.
    pub signer: String,
    /// Which digest the signature covers.
    pub signed_version: u16,
    /// Whether the signing time was signed (version 2) or the server's word.
    pub time_signed: bool,
    /// Time from request to the file in place.
    pub elapsed: Duration,
}
