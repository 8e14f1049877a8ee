//! What is in a server's data folder: the index (`index.sqlite3`) of the
//! stored files, their contents in `blobs/`, and `incoming/` for transfers
//! in flight. The index is read with a connection of its own, as another
//! program would, also while the server runs.

use std::path::{Path, PathBuf};

use secured::store::{BLOBS_DIR, INCOMING_DIR, INDEX_FILE};
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

/// The folder of transfers in flight.
pub fn incoming_dir(data: &Path) -> PathBuf {
    data.join(INCOMING_DIR)
}

/// Names in `dir`, sorted; empty if there is no such folder.
fn names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// How many entries `dir` holds; 0 if there is no such folder.
pub fn entries(dir: &Path) -> usize {
    names(dir).len()
}

/// A row of the index.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredFile {
    /// The name the owner proposed.
    pub name: String,
    /// The name it is stored under.
    pub stored_as: String,
    /// Bytes.
    pub size: i64,
    /// SHA-256 of the content.
    pub sha256: Vec<u8>,
    /// The key of its content in the blob store.
    pub blob: String,
}

/// The files `owner` stores, by stored name; empty when there is no index.
pub fn stored(data: &Path, owner: &str) -> Vec<StoredFile> {
    let index = data.join(INDEX_FILE);
    if !index.exists() {
        return Vec::new();
    }
    let owner = owner.to_owned();
    // A runtime of its own, on a thread of its own: callers may be async.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let options = SqliteConnectOptions::new().filename(&index);
            let mut db = SqliteConnection::connect_with(&options).await.unwrap();
            let rows = sqlx::query_as(
                "SELECT name, stored_as, size, sha256, blob FROM files \
                 WHERE owner = ? ORDER BY stored_as",
            )
            .bind(owner)
            .fetch_all(&mut db)
            .await
            .unwrap();
            db.close().await.unwrap();
            rows
        })
    })
    .join()
    .unwrap()
}

/// The stored names of the files of `device`, sorted.
pub fn stored_files(data: &Path, device: &str) -> Vec<String> {
    stored(data, device)
        .into_iter()
        .map(|f| f.stored_as)
        .collect()
}

/// Where the blob `key` is.
pub fn blob_path(data: &Path, key: &str) -> PathBuf {
    data.join(BLOBS_DIR).join(&key[..2]).join(key)
}

/// The content of the file stored for `device` under `name`, if there is one.
pub fn stored_content(data: &Path, device: &str, name: &str) -> Option<Vec<u8>> {
    let file = stored(data, device)
        .into_iter()
        .find(|f| f.stored_as == name)?;
    Some(std::fs::read(blob_path(data, &file.blob)).expect("a file without its content"))
}

/// How many blobs the blob store holds.
pub fn blob_count(data: &Path) -> usize {
    names(&data.join(BLOBS_DIR))
        .iter()
        .map(|fan| entries(&data.join(BLOBS_DIR).join(fan)))
        .sum()
}

/// What is in the folder of transfers in flight now; `None` if there is none.
pub fn temporary_files(data: &Path) -> Option<Vec<String>> {
    let dir = incoming_dir(data);
    dir.is_dir().then(|| names(&dir))
}

/// The folder of transfers in flight exists and is empty now: a server
/// opened this data folder (so a wrong path cannot pass), and no transfer
/// left anything behind.
pub fn incoming_is_empty(data: &Path) -> bool {
    temporary_files(data).is_some_and(|files| files.is_empty())
}

/// A transfer is in flight now: the folder of transfers in flight holds a
/// file.
pub fn transfer_in_flight(data: &Path) -> bool {
    temporary_files(data).is_some_and(|files| !files.is_empty())
}

/// Writes `content` as the file `stored_as` of `device` in the data
/// folder's old layout (`<device>/<name>` beside `<device>/.meta/<name>.json`),
/// which a server imports when it starts.
pub fn old_layout_file(data: &Path, device: &str, stored_as: &str, content: &[u8]) {
    let dir = data.join(device);
    std::fs::create_dir_all(dir.join(".meta")).unwrap();
    std::fs::write(dir.join(stored_as), content).unwrap();
    let record = serde_json::json!({
        "name": stored_as,
        "stored_as": stored_as,
        "device": device,
        "device_cert_serial": "01",
        "size": content.len(),
        "kind": "image",
        "content_type": "image/jpeg",
        "sha256": hex::encode(secured::crypto::hash::sha256(&[content])),
        "file_digest": hex::encode([0u8; 32]),
        "signature": hex::encode([0u8; 256]),
        "received_at": "2025-01-01T00:00:00Z",
        "duration_ms": 0,
    });
    std::fs::write(
        dir.join(".meta").join(format!("{stored_as}.json")),
        record.to_string(),
    )
    .unwrap();
}
