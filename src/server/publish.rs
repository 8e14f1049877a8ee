//! Files the server publishes itself (proto-spec.md §13.8): `serve
//! --publish FILE` stores a file owned by `server`, visible to every device,
//! signed with the server's key over the version 2 digest, so that devices
//! verify it against the server's certificate as they verify each other's
//! files. Publishing the same name and content again is a no-op, so a
//! restart with the same flags adds nothing.

use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::client::SERVER_OWNER;
use crate::index::NewFile;
use crate::media::detect_file;
use crate::message::{IMGX_DATA_HEADER_LEN, Scope, Sharing, StreamId};
use crate::pki::Identity;
use crate::store::{Store, validate_file_name};
use crate::transfer::{file_digest_v2, spawn_reader};

/// What publishing one file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// Stored, under this name, with this event.
    Stored {
        /// The name it is stored under.
        stored_as: String,
        /// The file's id.
        id: u64,
        /// Its event.
        event: u64,
    },
    /// The same name and content were published before.
    AlreadyThere {
        /// The name it is stored under.
        stored_as: String,
    },
}

/// Why a file could not be published: one sentence naming it.
#[derive(Debug, thiserror::Error)]
#[error("cannot publish {}: {reason}", path.display())]
pub struct PublishError {
    /// The file.
    pub path: std::path::PathBuf,
    /// Why.
    pub reason: String,
}

fn fail(path: &Path, what: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(PublishError {
        path: path.to_owned(),
        reason: what.to_string(),
    })
}

/// Publishes `path` as the server (`identity`), visible to every device.
///
/// # Errors
/// One sentence naming the file: unreadable, a name the protocol does not
/// allow, over a storage limit, or a storage failure.
pub async fn publish(
    store: &Store,
    identity: &Identity,
    path: &Path,
) -> std::io::Result<Published> {
    let started = Instant::now();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| fail(path, "its name is not UTF-8"))?
        .to_owned();
    validate_file_name(&name).map_err(|reason| fail(path, reason))?;
    let detected = detect_file(path).map_err(|e| fail(path, e))?;
    let size = std::fs::metadata(path).map_err(|e| fail(path, e))?.len();
    let mut incoming = store.begin(SERVER_OWNER, size).map_err(|e| fail(path, e))?;
    let (mut chunks, reader) = spawn_reader(path, StreamId(1)).map_err(|e| fail(path, e))?;
    while let Some(chunk) = chunks.recv().await {
        incoming
            .write(chunk.slice(IMGX_DATA_HEADER_LEN..))
            .await
            .map_err(|e| fail(path, e))?;
    }
    let read = reader
        .await
        .map_err(|e| fail(path, e))?
        .map_err(|e| fail(path, e))?;
    let received = incoming.finish().await.map_err(|e| fail(path, e))?;
    if read.size != size || received.size != size || received.content_hash != read.content_hash {
        return Err(fail(path, "it changed while it was read"));
    }
    let existing = store
        .index()
        .visible_files(SERVER_OWNER, Some(SERVER_OWNER))
        .await
        .map_err(|e| fail(path, e))?;
    if let Some(same) = existing
        .iter()
        .find(|f| f.name == name && f.sha256 == read.content_hash)
    {
        return Ok(Published::AlreadyThere {
            stored_as: same.stored_as.clone(),
        });
    }
    let sharing = Sharing {
        signed_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        scope: Scope::Everyone,
    };
    let digest = file_digest_v2(
        detected.kind,
        size,
        &name,
        &detected.content_type,
        &sharing,
        &read.content_hash,
    );
    let signature = identity
        .key()
        .pss_sign_digest(&digest)
        .map_err(|e| fail(path, e))?;
    let committed = received
        .commit(NewFile {
            owner: SERVER_OWNER.to_owned(),
            owner_serial: identity.serial_hex(),
            certificate: identity.cert_der().to_vec(),
            name,
            kind: detected.kind,
            size,
            content_type: detected.content_type,
            sha256: read.content_hash,
            file_digest: digest,
            signature,
            signed_version: 2,
            signed_at: sharing.signed_at,
            scope: sharing.scope,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
        .await
        .map_err(|e| fail(path, e))?;
    Ok(Published::Stored {
        stored_as: committed.stored_as,
        id: committed.id,
        event: committed.event_id,
    })
}
