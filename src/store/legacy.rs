//! The old layout of the data folder, imported on the first start of a
//! server that keeps an index:
//!
//! ```text
//! <data_dir>/<device>/<name>              a stored file
//! <data_dir>/<device>/.meta/<name>.json   its record
//! <data_dir>/<device>/.incoming/          transfers that were in flight
//! ```
//!
//! Each file becomes a row of the index (owner: the folder's name; scope
//! private, signature version 1, no signing time, the record's time of
//! receipt), its content hard-linked, not copied, into the blob store. The
//! rows are committed in one transaction, and only then are the old files,
//! their records and the emptied folders removed. A crash at any point
//! leaves each file in the old layout, in the index, or in both, which the
//! next start recognises (same owner, name, size and SHA-256) and finishes;
//! the links made for an import that did not commit are orphan blobs whose
//! originals are still in place, so removing them loses nothing.
//!
//! What cannot be imported (a file without a record, a record that does
//! not parse or does not match its file) is left where it is, each path is
//! logged, and the store refuses to open, naming the first one, until it
//! is moved out of the data folder.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::blob::{BlobKey, FsBlobs};
use super::folder::{Cleanup, OpenError, blocking, io_at, remove_entry, sync_dir};
use super::names::validate_file_name;
use super::{BLOBS_DIR, INCOMING_DIR};
use crate::crypto::hash::HASH_LEN;
use crate::index::{ImportedFile, Index, NewFile};
use crate::message::{MediaKind, Scope, is_device_name};

/// The records of a device folder.
const META: &str = ".meta";
/// The transfers in flight of a device folder.
const OLD_INCOMING: &str = ".incoming";

/// A record of the old layout (`.meta/<name>.json`).
#[derive(Deserialize)]
struct Record {
    name: String,
    stored_as: String,
    device: String,
    device_cert_serial: String,
    size: u64,
    kind: String,
    content_type: String,
    sha256: String,
    file_digest: String,
    signature: String,
    received_at: String,
    duration_ms: u64,
}

/// A file that can be imported.
struct Candidate {
    file: PathBuf,
    record: PathBuf,
    new: NewFile,
    stored_as: String,
    stored_at_ms: u64,
}

/// What the folders of the old layout hold.
#[derive(Default)]
struct Scan {
    candidates: Vec<Candidate>,
    /// What cannot be imported, and why.
    problems: Vec<(PathBuf, String)>,
    /// What interrupted transfers left: removed.
    leftovers: Vec<PathBuf>,
    /// The device folders.
    folders: Vec<PathBuf>,
}

/// Imports the folders of the old layout in `root`, if there are any.
pub(super) async fn import(
    root: &Path,
    index: &Index,
    blobs: &FsBlobs,
) -> Result<Cleanup, OpenError> {
    let scan = {
        let dir = root.to_owned();
        blocking(move || scan(&dir)).await.map_err(io_at(root))??
    };
    if scan.folders.is_empty() {
        return Ok(Cleanup::default());
    }
    let Scan {
        candidates,
        mut problems,
        leftovers,
        folders,
    } = scan;
    let mut fresh = Vec::new();
    let mut done = Vec::new();
    for c in candidates {
        match index.stored_file(&c.new.owner, &c.stored_as).await? {
            None => fresh.push(c),
            // Imported by an earlier start that did not finish.
            Some(e) if e.sha256 == c.new.sha256 && e.size == c.new.size => {
                done.push((c.file, c.record));
            }
            Some(_) => problems.push((
                c.file,
                format!(
                    "the index already has another file that {} stores as {:?}",
                    c.new.owner, c.stored_as
                ),
            )),
        }
    }
    let linked = {
        let blobs = blobs.clone();
        blocking(move || link(&blobs, fresh))
            .await
            .map_err(io_at(root))??
    };
    let mut rows = Vec::with_capacity(linked.len());
    for (c, blob) in linked {
        done.push((c.file, c.record));
        rows.push(ImportedFile {
            file: c.new,
            stored_as: c.stored_as,
            stored_at_ms: c.stored_at_ms,
            blob,
        });
    }
    let imported = index.import(&rows).await?;
    let partial_files = {
        let dir = root.to_owned();
        blocking(move || remove_old(&dir, &done, &leftovers, &folders))
            .await
            .map_err(io_at(root))??
    };
    if imported > 0 {
        tracing::info!(
            files = imported,
            "imported the files of the old data-folder layout into the index"
        );
    }
    problems.sort();
    for (path, reason) in &problems {
        tracing::warn!(path = %path.display(), reason, "cannot import from the old data-folder layout");
    }
    let more = problems.len().saturating_sub(1);
    if let Some((path, reason)) = problems.into_iter().next() {
        return Err(OpenError::Legacy { path, reason, more });
    }
    Ok(Cleanup {
        partial_files,
        orphan_blobs: 0,
        imported_files: imported,
    })
}

/// Whether `dir` is a device folder of the old layout: it has records or
/// transfers in flight.
fn has_old_folders(dir: &Path) -> bool {
    [META, OLD_INCOMING]
        .iter()
        .any(|sub| fs::symlink_metadata(dir.join(sub)).is_ok())
}

/// Finds the device folders in `root` and what they hold.
fn scan(root: &Path) -> Result<Scan, OpenError> {
    let mut scan = Scan::default();
    for entry in fs::read_dir(root).map_err(io_at(root))? {
        let entry = entry.map_err(io_at(root))?;
        let path = entry.path();
        // Folders named as devices only; symbolic links are not followed.
        if !entry.file_type().map_err(io_at(&path))?.is_dir() {
            continue;
        }
        let Some(owner) = entry
            .file_name()
            .to_str()
            .filter(|n| is_device_name(n))
            .map(str::to_owned)
        else {
            continue;
        };
        // A device could have been called like a folder of the new layout.
        if (owner == BLOBS_DIR || owner == INCOMING_DIR) && !has_old_folders(&path) {
            continue;
        }
        scan_device(&path, &owner, &mut scan)?;
        scan.folders.push(path);
    }
    Ok(scan)
}

fn scan_device(dir: &Path, owner: &str, scan: &mut Scan) -> Result<(), OpenError> {
    let incoming = dir.join(OLD_INCOMING);
    match fs::symlink_metadata(&incoming) {
        Ok(m) if m.is_dir() => {
            for entry in fs::read_dir(&incoming).map_err(io_at(&incoming))? {
                scan.leftovers.push(entry.map_err(io_at(&incoming))?.path());
            }
        }
        Ok(_) => scan.leftovers.push(incoming),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_at(&incoming)(e)),
    }
    let mut recorded: HashSet<OsString> = HashSet::new();
    let meta = dir.join(META);
    match fs::symlink_metadata(&meta) {
        Ok(m) if m.is_dir() => {
            for entry in fs::read_dir(&meta).map_err(io_at(&meta))? {
                let entry = entry.map_err(io_at(&meta))?;
                scan_record(dir, owner, &entry, &mut recorded, scan)?;
            }
        }
        Ok(_) => scan
            .problems
            .push((meta, "it is not a folder of records".to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_at(&meta)(e)),
    }
    for entry in fs::read_dir(dir).map_err(io_at(dir))? {
        let entry = entry.map_err(io_at(dir))?;
        let name = entry.file_name();
        if name != META && name != OLD_INCOMING && !recorded.contains(&name) {
            scan.problems.push((
                entry.path(),
                "it has no record in .meta (a stored file of the old layout has one)".to_owned(),
            ));
        }
    }
    Ok(())
}

/// One entry of `.meta`.
fn scan_record(
    dir: &Path,
    owner: &str,
    entry: &fs::DirEntry,
    recorded: &mut HashSet<OsString>,
    scan: &mut Scan,
) -> Result<(), OpenError> {
    let record = entry.path();
    let file_name = entry.file_name();
    let Some(stored) = file_name.to_str().and_then(|n| n.strip_suffix(".json")) else {
        scan.problems.push((
            record,
            "it is not a record of the old layout (<name>.json)".to_owned(),
        ));
        return Ok(());
    };
    if !entry.file_type().map_err(io_at(&record))?.is_file() {
        scan.problems
            .push((record, "it is not a record: not a regular file".to_owned()));
        return Ok(());
    }
    let file = dir.join(stored);
    let meta = match fs::symlink_metadata(&file) {
        Ok(m) => m,
        // Recorded, never published: an interrupted transfer.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            scan.leftovers.push(record);
            return Ok(());
        }
        Err(e) => return Err(io_at(&file)(e)),
    };
    recorded.insert(stored.into());
    if !meta.is_file() {
        scan.problems
            .push((file, "it is not a regular file".to_owned()));
        return Ok(());
    }
    match candidate(owner, stored, &record, &meta) {
        Ok((new, stored_at_ms)) => scan.candidates.push(Candidate {
            file,
            record,
            new,
            stored_as: stored.to_owned(),
            stored_at_ms,
        }),
        Err(reason) => {
            scan.problems
                .push((file, "its record cannot be imported".to_owned()));
            scan.problems.push((record, reason));
        }
    }
    Ok(())
}

/// The metadata and time of receipt of the file `stored` of `owner`, from
/// its record.
fn candidate(
    owner: &str,
    stored: &str,
    record: &Path,
    meta: &Metadata,
) -> Result<(NewFile, u64), String> {
    let text = fs::read(record).map_err(|e| format!("it cannot be read: {e}"))?;
    let r: Record =
        serde_json::from_slice(&text).map_err(|e| format!("the record does not parse: {e}"))?;
    if r.stored_as != stored {
        return Err(format!("the record is for {:?}", r.stored_as));
    }
    if r.device != owner {
        return Err(format!("the record is for the device {:?}", r.device));
    }
    for name in [&r.name, &r.stored_as] {
        validate_file_name(name).map_err(|e| format!("the name {name:?} is refused: {e}"))?;
    }
    let kind = [MediaKind::Image, MediaKind::Video, MediaKind::File]
        .into_iter()
        .find(|k| k.name() == r.kind)
        .ok_or_else(|| format!("the kind {:?} is not image, video or file", r.kind))?;
    if r.size != meta.len() {
        return Err(format!(
            "the record says {} bytes, the file has {}",
            r.size,
            meta.len()
        ));
    }
    let signature =
        hex::decode(&r.signature).map_err(|e| format!("the signature is not hex: {e}"))?;
    if signature.is_empty() {
        return Err("the record has no signature".to_owned());
    }
    let received = OffsetDateTime::parse(&r.received_at, &Rfc3339).ok();
    let stored_at_ms = match received {
        Some(t) => u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
        // No time of receipt: the file's own time will do.
        None => meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    };
    let new = NewFile {
        owner: owner.to_owned(),
        owner_serial: r.device_cert_serial.to_ascii_lowercase(),
        certificate: Vec::new(),
        name: r.name,
        kind,
        size: r.size,
        content_type: r.content_type,
        sha256: hash(&r.sha256, "sha256")?,
        file_digest: hash(&r.file_digest, "file_digest")?,
        signature,
        signed_version: 1,
        signed_at: 0,
        scope: Scope::Private,
        duration_ms: r.duration_ms,
    };
    Ok((new, stored_at_ms))
}

fn hash(text: &str, field: &str) -> Result<[u8; HASH_LEN], String> {
    hex::decode(text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{field} is not {HASH_LEN} bytes in hex"))
}

/// Hard-links the content of each candidate into the blob store, durably.
fn link(blobs: &FsBlobs, fresh: Vec<Candidate>) -> Result<Vec<(Candidate, BlobKey)>, OpenError> {
    let mut folders = HashSet::new();
    let mut linked = Vec::with_capacity(fresh.len());
    for c in fresh {
        let (key, folder) = blobs.link(&c.file).map_err(io_at(&c.file))?;
        folders.insert(folder);
        linked.push((c, key));
    }
    for folder in folders {
        FsBlobs::sync(&folder).map_err(io_at(&folder))?;
    }
    Ok(linked)
}

/// Removes the imported files, then their records, then what interrupted
/// transfers left, then the folders emptied. Returns how many leftovers it
/// removed.
fn remove_old(
    root: &Path,
    done: &[(PathBuf, PathBuf)],
    leftovers: &[PathBuf],
    folders: &[PathBuf],
) -> Result<usize, OpenError> {
    let gone = |path: &Path| match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_at(path)(e)),
        _ => Ok(()),
    };
    // A record outlives its file, never the other way round: a record
    // without its file is a leftover to the next start, a file without a
    // record could not be imported again.
    for (file, _) in done {
        gone(file)?;
    }
    for folder in folders {
        sync_dir(folder).map_err(io_at(folder))?;
    }
    for (_, record) in done {
        gone(record)?;
    }
    let mut removed = 0;
    for path in leftovers {
        if remove_entry(path).map_err(io_at(path))? {
            removed += 1;
        }
    }
    for folder in folders {
        // Only if empty: what could not be imported stays.
        for sub in [META, OLD_INCOMING] {
            let _ = fs::remove_dir(folder.join(sub));
        }
        let _ = fs::remove_dir(folder);
    }
    sync_dir(root).map_err(io_at(root))?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::super::{BlobStore, Store, StoreLimits};
    use super::*;
    use crate::crypto::hash::sha256;

    /// Writes `content` as `<device>/<stored_as>` with its record, as the
    /// old layout did.
    fn old_file(root: &Path, device: &str, name: &str, stored_as: &str, content: &[u8]) {
        let dir = root.join(device);
        fs::create_dir_all(dir.join(META)).unwrap();
        fs::create_dir_all(dir.join(OLD_INCOMING)).unwrap();
        fs::write(dir.join(stored_as), content).unwrap();
        let record = serde_json::json!({
            "name": name,
            "stored_as": stored_as,
            "device": device,
            "device_cert_serial": "0A1B",
            "size": content.len(),
            "kind": "image",
            "content_type": "image/jpeg",
            "sha256": hex::encode(sha256(&[content])),
            "file_digest": hex::encode([3u8; 32]),
            "signature": hex::encode([4u8; 256]),
            "received_at": "2025-01-02T03:04:05.678Z",
            "duration_ms": 9,
        });
        fs::write(
            dir.join(META).join(format!("{stored_as}.json")),
            serde_json::to_vec_pretty(&record).unwrap(),
        )
        .unwrap();
    }

    async fn content(store: &Store, owner: &str, stored_as: &str) -> Vec<u8> {
        let file = store
            .index()
            .stored_file(owner, stored_as)
            .await
            .unwrap()
            .unwrap();
        let mut bytes = Vec::new();
        store
            .open_blob(&file)
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        bytes
    }

    fn blob_count(root: &Path) -> usize {
        FsBlobs::open(&root.join(BLOBS_DIR))
            .unwrap()
            .keys()
            .unwrap()
            .len()
    }

    fn old_layout(root: &Path) {
        old_file(root, "device-1", "a.jpg", "a.jpg", b"first");
        old_file(root, "device-1", "a.jpg", "a (1).jpg", b"second");
        old_file(root, "device-1", "b.png", "b.png", b"bee");
        old_file(root, "device-2", "a.jpg", "a.jpg", b"other device");
        // Left by interrupted transfers: a temporary file, and a record
        // whose file was never published.
        fs::write(
            root.join("device-1").join(OLD_INCOMING).join("x.part"),
            b"half",
        )
        .unwrap();
        fs::write(
            root.join("device-2").join(META).join("gone.jpg.json"),
            b"{}",
        )
        .unwrap();
    }

    #[tokio::test]
    async fn the_old_layout_is_imported_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        old_layout(root);
        let (store, cleanup) = Store::open(root, StoreLimits::default()).await.unwrap();
        assert_eq!(
            cleanup,
            Cleanup {
                partial_files: 2,
                orphan_blobs: 0,
                imported_files: 4
            }
        );
        assert!(!root.join("device-1").exists());
        assert!(!root.join("device-2").exists());
        assert_eq!(blob_count(root), 4);
        assert_eq!(content(&store, "device-1", "a.jpg").await, b"first");
        assert_eq!(content(&store, "device-1", "a (1).jpg").await, b"second");
        assert_eq!(content(&store, "device-2", "a.jpg").await, b"other device");
        let file = store
            .index()
            .stored_file("device-1", "a (1).jpg")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(file.name, "a.jpg");
        assert_eq!(file.owner_serial, "0a1b");
        assert_eq!(file.kind, MediaKind::Image);
        assert_eq!(file.size, 6);
        assert_eq!(file.sha256, sha256(&[b"second"]));
        assert_eq!(file.file_digest, [3; 32]);
        assert_eq!(file.signature, [4; 256]);
        assert_eq!(file.signed_version, 1);
        assert_eq!(file.signed_at, 0);
        assert_eq!(file.scope, Scope::Private);
        assert_eq!(file.stored_at_ms, 1_735_787_045_678);
        assert_eq!(file.duration_ms, 9);
        assert_eq!(file.certificate, None);
        // Imported files are not news.
        assert_eq!(store.index().event_bounds().await.unwrap(), (0, 0));
        assert_eq!(store.usage("device-1").stored_files, 3);
        assert_eq!(store.usage("device-1").stored_bytes, 14);
        // The names stay taken.
        let mut incoming = store.begin("device-1", 5).unwrap();
        incoming
            .write(bytes::Bytes::from_static(b"third"))
            .await
            .unwrap();
        let received = incoming.finish().await.unwrap();
        let committed = received
            .commit(super::super::tests::new_file("device-1", "a.jpg", b"third"))
            .await
            .unwrap();
        assert_eq!(committed.stored_as, "a (2).jpg");
        drop(store);
        // A second start finds nothing more to do.
        let (_, cleanup) = Store::open(root, StoreLimits::default()).await.unwrap();
        assert_eq!(cleanup, Cleanup::default());
    }

    #[tokio::test]
    async fn an_import_cut_before_its_commit_is_done_again_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        old_layout(root);
        // The first run linked a file into the blob store, then stopped.
        let blobs = FsBlobs::open(&root.join(BLOBS_DIR)).unwrap();
        let (_, folder) = blobs.link(&root.join("device-1/a.jpg")).unwrap();
        FsBlobs::sync(&folder).unwrap();
        let (store, cleanup) = Store::open(root, StoreLimits::default()).await.unwrap();
        assert_eq!(cleanup.imported_files, 4);
        assert_eq!(cleanup.orphan_blobs, 1);
        assert_eq!(blob_count(root), 4);
        assert_eq!(content(&store, "device-1", "a.jpg").await, b"first");
    }

    #[tokio::test]
    async fn an_import_cut_after_its_commit_is_finished() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        old_layout(root);
        drop(Store::open(root, StoreLimits::default()).await.unwrap());
        // As if the old files had not all been removed yet: one with its
        // record, one whose record had gone.
        old_file(root, "device-1", "a.jpg", "a (1).jpg", b"second");
        old_file(root, "device-2", "a.jpg", "a.jpg", b"other device");
        fs::remove_file(root.join("device-2/a.jpg")).unwrap();
        let (store, cleanup) = Store::open(root, StoreLimits::default()).await.unwrap();
        assert_eq!(cleanup.imported_files, 0);
        assert_eq!(cleanup.partial_files, 1);
        assert!(!root.join("device-1").exists());
        assert!(!root.join("device-2").exists());
        assert_eq!(blob_count(root), 4);
        assert_eq!(store.usage("device-1").stored_files, 3);
        assert_eq!(content(&store, "device-1", "a (1).jpg").await, b"second");
    }

    #[tokio::test]
    async fn what_cannot_be_imported_is_left_in_place_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        old_layout(root);
        let dev = root.join("device-1");
        fs::write(dev.join("unrecorded.jpg"), b"no record").unwrap();
        fs::write(dev.join("broken.jpg"), b"broken").unwrap();
        fs::write(dev.join(META).join("broken.jpg.json"), b"{ not json").unwrap();
        let err = Store::open(root, StoreLimits::default()).await.unwrap_err();
        assert!(matches!(err, OpenError::Legacy { more: 2, .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "cannot import {} from the old layout of the data folder: the record does not parse: ",
                dev.join(META).join("broken.jpg.json").display()
            )) && text.ends_with(
                "; move it out of the data folder and start again (2 more such paths are in the log)"
            ),
            "{text}"
        );
        // What could be imported was; the rest is where it was.
        assert_eq!(fs::read(dev.join("unrecorded.jpg")).unwrap(), b"no record");
        assert_eq!(fs::read(dev.join("broken.jpg")).unwrap(), b"broken");
        assert!(dev.join(META).join("broken.jpg.json").exists());
        assert!(!dev.join("a.jpg").exists());
        assert!(!root.join("device-2").exists());
        // Moved out, the server starts, with the files it imported.
        fs::remove_dir_all(&dev).unwrap();
        let (store, cleanup) = Store::open(root, StoreLimits::default()).await.unwrap();
        assert_eq!(cleanup, Cleanup::default());
        assert_eq!(content(&store, "device-1", "b.png").await, b"bee");
        assert_eq!(store.usage("device-1").stored_files, 3);
    }

    #[tokio::test]
    async fn records_that_do_not_match_their_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        old_file(root, "device-1", "a.jpg", "a.jpg", b"abc");
        fs::write(root.join("device-1/a.jpg"), b"abcd").unwrap();
        let err = Store::open(root, StoreLimits::default()).await.unwrap_err();
        let OpenError::Legacy { path, reason, more } = err else {
            panic!("{err}");
        };
        assert_eq!(path, root.join("device-1/.meta/a.jpg.json"));
        assert_eq!(reason, "the record says 3 bytes, the file has 4");
        assert_eq!(more, 1);
        // A device once named like a folder of the new layout is imported too.
        fs::remove_dir_all(root.join("device-1")).unwrap();
        old_file(root, "incoming", "x.png", "x.png", b"x");
        let (store, cleanup) = Store::open(root, StoreLimits::default()).await.unwrap();
        assert_eq!(cleanup.imported_files, 1);
        assert_eq!(content(&store, "incoming", "x.png").await, b"x");
        assert!(root.join(INCOMING_DIR).is_dir());
    }
}
