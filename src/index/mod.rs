//! The server's index (proto-spec.md §13.4, §13.9): the devices it has
//! seen, the files it stores and the events that announce them, in an
//! embedded SQL database (`migrations/` holds its schema).
//!
//! A file becomes visible in one transaction that picks its stored name,
//! inserts its row, its readers and its event: event ids therefore
//! increase in commit order. The database is in WAL mode with
//! `synchronous = FULL`, so a commit is durable before the server reports
//! it. The content itself is a blob ([`crate::store::BlobStore`]) that the
//! row names.
//!
//! Queries are checked at run time (no database is needed to build), and
//! keep to SQL that PostgreSQL also accepts where that costs nothing.

mod lifecycle;

pub use lifecycle::{Redeem, Revocation, StoredToken};
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{FromRow, QueryBuilder, Sqlite, Transaction};

use crate::crypto::hash::HASH_LEN;
use crate::message::{MediaKind, Scope};
use crate::store::{BlobKey, CommitError, FreeSuffix, candidate_name};

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections to the database. Writes take turns anyway, and each
/// connection has a thread (and its page cache) of its own: two keep reads
/// of listings and notices beside a commit without growing the server's
/// memory.
const MAX_CONNECTIONS: u32 = 2;
/// Transactions a commit tries when a random id happens to be taken.
const COMMIT_ATTEMPTS: usize = 8;
/// File ids per `IN (…)` list when reading the devices of scopes.
const IN_LIST: usize = 500;

/// Why the index cannot be used. Each reads as one sentence.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// The database file cannot be created or opened.
    #[error("cannot open the index {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: sqlx::Error,
    },
    /// The schema cannot be brought up to this version.
    #[error("cannot bring the index {} up to this version of secured: {source}", path.display())]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: sqlx::migrate::MigrateError,
    },
    /// A query failed.
    #[error("the index failed: {0}")]
    Query(#[from] sqlx::Error),
    /// A row holds something no file can have (a damaged database).
    #[error("the index holds a file this version cannot read: {0}")]
    BadRow(String),
    /// A number above what the database can hold.
    #[error("the {0} is too large for the index")]
    TooLarge(&'static str),
    /// Every attempt to insert the file met a conflict.
    #[error("the index kept refusing the new file")]
    Conflict,
}

/// A verified file to commit: everything but what the server decides (its
/// id, stored name and time). Fields are named as the columns of `files`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFile {
    /// The uploader: the device name from its certificate.
    pub owner: String,
    /// Serial number of the uploader's certificate, lowercase hex.
    pub owner_serial: String,
    /// The uploader's certificate, DER (recorded among the devices).
    pub certificate: Vec<u8>,
    /// The name the owner signed (and proposed).
    pub name: String,
    /// Image, video or any other file.
    pub kind: MediaKind,
    /// Size in bytes.
    pub size: u64,
    /// Media type declared by the owner.
    pub content_type: String,
    /// SHA-256 of the content.
    pub sha256: [u8; HASH_LEN],
    /// The signed file digest (proto-spec.md §8.3.3 or §13.3).
    pub file_digest: [u8; HASH_LEN],
    /// The owner's RSA-PSS signature over `file_digest`.
    pub signature: Vec<u8>,
    /// Which digest the signature covers: 1 or 2.
    pub signed_version: u16,
    /// Unix time in seconds when the owner signed; 0 for version 1.
    pub signed_at: u64,
    /// Who may see the file, as signed.
    pub scope: Scope,
    /// How long the transfer took, in milliseconds.
    pub duration_ms: u64,
}

/// What [`Index::commit_file`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The file's id: random, non-zero, never reused.
    pub id: u64,
    /// The name it is stored under (proto-spec.md §8.3.4).
    pub stored_as: String,
    /// The event that announces it.
    pub event_id: u64,
    /// When it was committed, Unix time in milliseconds.
    pub stored_at_ms: u64,
}

/// A stored file: every field of a `FileInfo` (proto-spec.md §13.4), and
/// what a download sends with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Random, non-zero, never reused.
    pub id: u64,
    /// The uploader (or `server`).
    pub owner: String,
    /// Serial number of the signer's certificate, lowercase hex.
    pub owner_serial: String,
    /// The name the owner signed.
    pub name: String,
    /// The name the server stored it under, unique per owner.
    pub stored_as: String,
    /// Image, video or any other file.
    pub kind: MediaKind,
    /// Size in bytes.
    pub size: u64,
    /// Media type declared by the owner.
    pub content_type: String,
    /// SHA-256 of the content.
    pub sha256: [u8; HASH_LEN],
    /// Unix time in seconds when the owner signed; 0 for version 1.
    pub signed_at: u64,
    /// When the server committed it, Unix time in milliseconds.
    pub stored_at_ms: u64,
    /// Who may see it, as signed.
    pub scope: Scope,
    /// Which digest the signature covers: 1 or 2.
    pub signed_version: u16,
    /// The signed file digest.
    pub file_digest: [u8; HASH_LEN],
    /// The owner's signature over `file_digest`.
    pub signature: Vec<u8>,
    /// How long the transfer took, in milliseconds.
    pub duration_ms: u64,
    /// The signer's certificate, DER, when the server has it.
    pub certificate: Option<Vec<u8>>,
    /// Where the content is.
    pub blob: BlobKey,
}

/// A file of the old data-folder layout, as the import inserts it.
#[derive(Debug, Clone)]
pub(crate) struct ImportedFile {
    /// Its metadata (`certificate` is not used: the old layout had none).
    pub file: NewFile,
    /// The name it was stored under, kept.
    pub stored_as: String,
    /// When it was received, Unix time in milliseconds.
    pub stored_at_ms: u64,
    /// Its content, already in the blob store.
    pub blob: BlobKey,
}

/// The index: a pool of connections to one database. Clones share it.
#[derive(Debug, Clone)]
pub struct Index {
    pool: SqlitePool,
}

/// The columns of a [`FileRow`], from `files f` and `devices d`.
macro_rules! file_columns {
    () => {
        "f.id, f.owner, f.owner_serial, f.name, f.stored_as, f.kind, f.size, f.content_type, \
         f.sha256, f.file_digest, f.signature, f.signed_version, f.signed_at, f.scope, \
         f.stored_at, f.duration_ms, f.blob, d.certificate"
    };
}

/// Files with their signer's certificate, if known.
macro_rules! files_join {
    () => {
        " FROM files f LEFT JOIN devices d ON d.name = f.owner AND d.serial = f.owner_serial "
    };
}

/// Whether the viewer (bound twice) may see file `f` (proto-spec.md §13.2).
macro_rules! visible_to {
    () => {
        " (f.owner = ? OR f.scope = 1 OR EXISTS \
         (SELECT 1 FROM file_readers r WHERE r.file_id = f.id AND r.device = ?)) "
    };
}

#[derive(FromRow)]
struct FileRow {
    id: i64,
    owner: String,
    owner_serial: String,
    name: String,
    stored_as: String,
    kind: i64,
    size: i64,
    content_type: String,
    sha256: Vec<u8>,
    file_digest: Vec<u8>,
    signature: Vec<u8>,
    signed_version: i64,
    signed_at: i64,
    scope: i64,
    stored_at: i64,
    duration_ms: i64,
    blob: String,
    certificate: Option<Vec<u8>>,
}

#[derive(FromRow)]
struct EventRow {
    event_id: i64,
    #[sqlx(flatten)]
    file: FileRow,
}

/// The current time, Unix milliseconds.
#[must_use]
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn to_i64(value: u64, what: &'static str) -> Result<i64, IndexError> {
    i64::try_from(value).map_err(|_| IndexError::TooLarge(what))
}

fn to_u64(value: i64, what: &str) -> Result<u64, IndexError> {
    u64::try_from(value).map_err(|_| IndexError::BadRow(format!("a negative {what}")))
}

fn hash(bytes: Vec<u8>, what: &str) -> Result<[u8; HASH_LEN], IndexError> {
    bytes
        .try_into()
        .map_err(|_| IndexError::BadRow(format!("a {what} that is not {HASH_LEN} bytes")))
}

/// A random positive `i64`: a file id.
fn random_id() -> io::Result<i64> {
    loop {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(io::Error::other)?;
        let id = i64::from_be_bytes(bytes) & i64::MAX;
        if id != 0 {
            return Ok(id);
        }
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

impl FileRow {
    fn into_entry(self, readers: Option<Vec<String>>) -> Result<FileEntry, IndexError> {
        let bad = |what: String| IndexError::BadRow(format!("file {}: {what}", self.id));
        let kind = u8::try_from(self.kind)
            .ok()
            .and_then(MediaKind::from_u8)
            .ok_or_else(|| bad(format!("kind {}", self.kind)))?;
        let scope = match self.scope {
            0 => Scope::Private,
            1 => Scope::Everyone,
            2 => Scope::devices(readers.unwrap_or_default())
                .map_err(|e| bad(format!("its scope: {e}")))?,
            other => return Err(bad(format!("scope {other}"))),
        };
        let signed_version = u16::try_from(self.signed_version)
            .map_err(|_| bad(format!("signed version {}", self.signed_version)))?;
        let blob =
            BlobKey::parse(&self.blob).ok_or_else(|| bad(format!("blob {:?}", self.blob)))?;
        Ok(FileEntry {
            id: to_u64(self.id, "file id")?,
            owner: self.owner,
            owner_serial: self.owner_serial,
            name: self.name,
            stored_as: self.stored_as,
            kind,
            size: to_u64(self.size, "size")?,
            content_type: self.content_type,
            sha256: hash(self.sha256, "SHA-256")?,
            signed_at: to_u64(self.signed_at, "signing time")?,
            stored_at_ms: to_u64(self.stored_at, "storing time")?,
            scope,
            signed_version,
            file_digest: hash(self.file_digest, "file digest")?,
            signature: self.signature,
            duration_ms: to_u64(self.duration_ms, "duration")?,
            certificate: self.certificate,
            blob,
        })
    }
}

/// Takes the exclusive lock `<index>.lock` (created 0600 if missing),
/// waiting for another process that holds it; released when the file is
/// dropped.
async fn migration_lock(index: &Path) -> io::Result<std::fs::File> {
    let mut name = index.as_os_str().to_owned();
    name.push(".lock");
    let path = PathBuf::from(name);
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)?;
        file.lock()?;
        Ok(file)
    })
    .await
    .map_err(io::Error::other)?
}

impl Index {
    /// Opens the database at `path`, creating it (mode 0600) if needed, and
    /// brings its schema up to date.
    ///
    /// # Errors
    /// [`IndexError::Open`] or [`IndexError::Migrate`], naming `path`.
    pub async fn open(path: &Path) -> Result<Self, IndexError> {
        let open_error = |source| IndexError::Open {
            path: path.to_owned(),
            source,
        };
        // Two processes opening a new index at once (the server and an
        // `admin` command) would both create its tables; SQLite's own
        // locks do not cover a migration, so one process at a time holds
        // this lock file while it opens and migrates. It is a file of its
        // own: a second descriptor on the database file, once closed, would
        // drop SQLite's POSIX locks in this process.
        let lock = migration_lock(path)
            .await
            .map_err(|e| open_error(sqlx::Error::Io(e)))?;
        // Created here so that it is private from the start; SQLite gives
        // its journal files the same mode.
        tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .await
            .map_err(|e| open_error(sqlx::Error::Io(e)))?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            // The index is small and read by key: 512 KiB of page cache per
            // connection, not SQLite's default of 2 MiB, keeps the
            // server's memory flat.
            .pragma("cache_size", "-512")
            .statement_cache_capacity(32);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(open_error)?;
        sqlx::migrate!()
            .run(&pool)
            .await
            .map_err(|source| IndexError::Migrate {
                path: path.to_owned(),
                source,
            })?;
        drop(lock);
        Ok(Self { pool })
    }

    /// A write transaction: it takes the database's write lock at once, so
    /// what it reads stays true until it commits.
    async fn write(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    /// Records that device `name` authenticated with the certificate
    /// `cert_der` (serial `serial_hex`) at `now_ms`.
    ///
    /// # Errors
    /// [`IndexError`] when the database cannot be written.
    pub async fn record_device(
        &self,
        name: &str,
        serial_hex: &str,
        cert_der: &[u8],
        now_ms: u64,
    ) -> Result<(), IndexError> {
        let mut tx = self.write().await?;
        upsert_device(&mut tx, name, serial_hex, cert_der, to_i64(now_ms, "time")?).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Commits a verified file whose content is the blob `blob`: in one
    /// transaction, records the signer's certificate, picks the stored name
    /// (`new.name`, else the first free `stem (N).ext` of proto-spec.md
    /// §8.3.4, the `UNIQUE (owner, stored_as)` constraint having the last
    /// word), and inserts the file, its readers and its event.
    ///
    /// # Errors
    /// [`CommitError::NoFreeName`] when every suffix is taken;
    /// [`CommitError::Index`] when the database fails. Nothing is committed.
    pub async fn commit_file(
        &self,
        new: &NewFile,
        blob: &BlobKey,
    ) -> Result<Committed, CommitError> {
        let stored_at_ms = now_ms();
        let at = to_i64(stored_at_ms, "time")?;
        for _ in 0..COMMIT_ATTEMPTS {
            let mut tx = self.write().await.map_err(IndexError::from)?;
            upsert_device(&mut tx, &new.owner, &new.owner_serial, &new.certificate, at).await?;
            let mut search = FreeSuffix::new();
            while let Some(n) = search.probe() {
                let taken = name_taken(&mut tx, &new.owner, &candidate_name(&new.name, n))
                    .await
                    .map_err(IndexError::from)?;
                search.answer(taken);
            }
            let Some(n) = search.found() else {
                return Err(CommitError::NoFreeName {
                    name: new.name.clone(),
                });
            };
            let stored_as = candidate_name(&new.name, n);
            let id = random_id()?;
            match insert_file(&mut tx, id, new, &stored_as, blob, at).await {
                Ok(()) => {}
                // The write lock makes a name taken meanwhile impossible;
                // this is an id drawn twice. The transaction is dropped
                // (rolled back) and the next one draws again.
                Err(IndexError::Query(e)) if is_unique_violation(&e) => continue,
                Err(e) => return Err(e.into()),
            }
            let event_id: i64 =
                sqlx::query_scalar("INSERT INTO events (file_id, at) VALUES (?, ?) RETURNING id")
                    .bind(id)
                    .bind(at)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(IndexError::from)?;
            tx.commit().await.map_err(IndexError::from)?;
            return Ok(Committed {
                id: id.unsigned_abs(),
                stored_as,
                event_id: event_id.unsigned_abs(),
                stored_at_ms,
            });
        }
        Err(IndexError::Conflict.into())
    }

    /// Inserts files of the old layout, all in one transaction, without
    /// events (they are not new). Returns how many. Any conflict (a name
    /// already taken, or an id drawn twice) fails the whole import, which
    /// the next start-up runs again.
    pub(crate) async fn import(&self, files: &[ImportedFile]) -> Result<usize, IndexError> {
        let mut tx = self.write().await?;
        for f in files {
            let at = to_i64(f.stored_at_ms, "time")?;
            let id = random_id().map_err(sqlx::Error::Io)?;
            insert_file(&mut tx, id, &f.file, &f.stored_as, &f.blob, at).await?;
        }
        tx.commit().await?;
        Ok(files.len())
    }

    /// The file `owner` stores as `stored_as`, whoever may see it.
    pub(crate) async fn stored_file(
        &self,
        owner: &str,
        stored_as: &str,
    ) -> Result<Option<FileEntry>, IndexError> {
        let row: Option<FileRow> = sqlx::query_as(concat!(
            "SELECT ",
            file_columns!(),
            files_join!(),
            "WHERE f.owner = ? AND f.stored_as = ?"
        ))
        .bind(owner)
        .bind(stored_as)
        .fetch_optional(&self.pool)
        .await?;
        let mut entries = self.entries(row.into_iter().collect()).await?;
        Ok(entries.pop())
    }

    /// The files `viewer` may see (of `owner_filter` only, if given), in
    /// increasing id order.
    ///
    /// # Errors
    /// [`IndexError`] when the database fails or holds a damaged row.
    pub async fn visible_files(
        &self,
        viewer: &str,
        owner_filter: Option<&str>,
    ) -> Result<Vec<FileEntry>, IndexError> {
        let rows: Vec<FileRow> = sqlx::query_as(concat!(
            "SELECT ",
            file_columns!(),
            files_join!(),
            "WHERE",
            visible_to!(),
            "AND (? IS NULL OR f.owner = ?) ORDER BY f.id"
        ))
        .bind(viewer)
        .bind(viewer)
        .bind(owner_filter)
        .bind(owner_filter)
        .fetch_all(&self.pool)
        .await?;
        self.entries(rows).await
    }

    /// File `id`, if it exists and `viewer` may see it (`None` in both
    /// other cases, which are not told apart).
    ///
    /// # Errors
    /// [`IndexError`] when the database fails or holds a damaged row.
    pub async fn file_visible(
        &self,
        viewer: &str,
        id: u64,
    ) -> Result<Option<FileEntry>, IndexError> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(None);
        };
        let row: Option<FileRow> = sqlx::query_as(concat!(
            "SELECT ",
            file_columns!(),
            files_join!(),
            "WHERE f.id = ? AND",
            visible_to!()
        ))
        .bind(id)
        .bind(viewer)
        .bind(viewer)
        .fetch_optional(&self.pool)
        .await?;
        let mut entries = self.entries(row.into_iter().collect()).await?;
        Ok(entries.pop())
    }

    /// Up to `limit` events after `after_event_id` whose file `viewer` may
    /// see, in increasing event order, with their files.
    ///
    /// # Errors
    /// [`IndexError`] when the database fails or holds a damaged row.
    pub async fn events_after(
        &self,
        viewer: &str,
        after_event_id: u64,
        limit: u32,
    ) -> Result<Vec<(u64, FileEntry)>, IndexError> {
        let after = i64::try_from(after_event_id).unwrap_or(i64::MAX);
        let rows: Vec<EventRow> = sqlx::query_as(concat!(
            "SELECT e.id AS event_id, ",
            file_columns!(),
            " FROM events e JOIN files f ON f.id = e.file_id \
             LEFT JOIN devices d ON d.name = f.owner AND d.serial = f.owner_serial \
             WHERE e.id > ? AND",
            visible_to!(),
            "ORDER BY e.id LIMIT ?"
        ))
        .bind(after)
        .bind(viewer)
        .bind(viewer)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let (ids, files): (Vec<i64>, Vec<FileRow>) =
            rows.into_iter().map(|r| (r.event_id, r.file)).unzip();
        let entries = self.entries(files).await?;
        Ok(ids
            .into_iter()
            .map(i64::unsigned_abs)
            .zip(entries)
            .collect())
    }

    /// The newest event id and the oldest still kept; `(0, 0)` when there
    /// is none.
    ///
    /// # Errors
    /// [`IndexError`] when the database fails.
    pub async fn event_bounds(&self) -> Result<(u64, u64), IndexError> {
        let (last, oldest): (i64, i64) =
            sqlx::query_as("SELECT COALESCE(MAX(id), 0), COALESCE(MIN(id), 0) FROM events")
                .fetch_one(&self.pool)
                .await?;
        Ok((last.unsigned_abs(), oldest.unsigned_abs()))
    }

    /// Removes the events committed before `older_than_ms` (Unix
    /// milliseconds), except the newest one, which keeps telling watchers
    /// where the numbering is. Returns how many were removed.
    ///
    /// # Errors
    /// [`IndexError`] when the database fails.
    pub async fn prune_events(&self, older_than_ms: u64) -> Result<u64, IndexError> {
        let before = i64::try_from(older_than_ms).unwrap_or(i64::MAX);
        let done =
            sqlx::query("DELETE FROM events WHERE at < ? AND id < (SELECT MAX(id) FROM events)")
                .bind(before)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }

    /// Bytes and number of the files of each owner.
    ///
    /// # Errors
    /// [`IndexError`] when the database fails.
    pub async fn usage_by_owner(&self) -> Result<HashMap<String, (u64, u64)>, IndexError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT owner, COALESCE(SUM(size), 0), COUNT(*) FROM files GROUP BY owner",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(owner, bytes, files)| (owner, (bytes.unsigned_abs(), files.unsigned_abs())))
            .collect())
    }

    /// The blob of every file.
    pub(crate) async fn blobs(&self) -> Result<HashSet<String>, IndexError> {
        let blobs: Vec<String> = sqlx::query_scalar("SELECT blob FROM files")
            .fetch_all(&self.pool)
            .await?;
        Ok(blobs.into_iter().collect())
    }

    /// Turns rows into entries, reading the devices named by their scopes.
    async fn entries(&self, rows: Vec<FileRow>) -> Result<Vec<FileEntry>, IndexError> {
        let named: Vec<i64> = rows.iter().filter(|r| r.scope == 2).map(|r| r.id).collect();
        let mut readers: HashMap<i64, Vec<String>> = HashMap::new();
        for ids in named.chunks(IN_LIST) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "SELECT file_id, device FROM file_readers WHERE file_id IN (",
            );
            let mut list = query.separated(", ");
            for id in ids {
                list.push_bind(*id);
            }
            query.push(") ORDER BY file_id, device");
            let pairs: Vec<(i64, String)> = query.build_query_as().fetch_all(&self.pool).await?;
            for (id, device) in pairs {
                readers.entry(id).or_default().push(device);
            }
        }
        rows.into_iter()
            .map(|r| {
                let names = readers.remove(&r.id);
                r.into_entry(names)
            })
            .collect()
    }
}

async fn upsert_device(
    tx: &mut Transaction<'static, Sqlite>,
    name: &str,
    serial_hex: &str,
    cert_der: &[u8],
    at: i64,
) -> Result<(), IndexError> {
    sqlx::query(
        "INSERT INTO devices (name, serial, certificate, first_seen, last_seen) \
         VALUES (?, ?, ?, ?, ?) \
         ON CONFLICT (name, serial) DO UPDATE \
         SET certificate = excluded.certificate, last_seen = excluded.last_seen",
    )
    .bind(name)
    .bind(serial_hex)
    .bind(cert_der)
    .bind(at)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn name_taken(
    tx: &mut Transaction<'static, Sqlite>,
    owner: &str,
    stored_as: &str,
) -> Result<bool, sqlx::Error> {
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM files WHERE owner = ? AND stored_as = ?")
            .bind(owner)
            .bind(stored_as)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(found.is_some())
}

/// Inserts the file row `id` and the readers of its scope.
async fn insert_file(
    tx: &mut Transaction<'static, Sqlite>,
    id: i64,
    new: &NewFile,
    stored_as: &str,
    blob: &BlobKey,
    stored_at: i64,
) -> Result<(), IndexError> {
    sqlx::query(
        "INSERT INTO files (id, owner, owner_serial, name, stored_as, kind, size, content_type, \
         sha256, file_digest, signature, signed_version, signed_at, scope, stored_at, \
         duration_ms, blob) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(id)
    .bind(&new.owner)
    .bind(&new.owner_serial)
    .bind(&new.name)
    .bind(stored_as)
    .bind(i64::from(new.kind.to_u8()))
    .bind(to_i64(new.size, "size")?)
    .bind(&new.content_type)
    .bind(&new.sha256[..])
    .bind(&new.file_digest[..])
    .bind(&new.signature)
    .bind(i64::from(new.signed_version))
    .bind(to_i64(new.signed_at, "signing time")?)
    .bind(i64::from(new.scope.kind_u8()))
    .bind(stored_at)
    .bind(to_i64(new.duration_ms, "duration")?)
    .bind(blob.as_str())
    .execute(&mut **tx)
    .await?;
    for device in new.scope.names() {
        sqlx::query("INSERT INTO file_readers (file_id, device) VALUES (?, ?)")
            .bind(id)
            .bind(device)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::crypto::hash::sha256;

    fn new_file(owner: &str, name: &str, scope: Scope) -> NewFile {
        NewFile {
            owner: owner.to_owned(),
            owner_serial: format!("{owner}-serial"),
            certificate: format!("{owner} certificate").into_bytes(),
            name: name.to_owned(),
            kind: MediaKind::Video,
            size: 42,
            content_type: "video/mp4".to_owned(),
            sha256: sha256(&[name.as_bytes()]),
            file_digest: [1; 32],
            signature: vec![2; 256],
            signed_version: 2,
            signed_at: 1_700_000_000,
            scope,
            duration_ms: 12,
        }
    }

    async fn open(dir: &Path) -> Index {
        Index::open(&dir.join("index.sqlite3")).await.unwrap()
    }

    /// Processes that open a new index at the same moment (the server and
    /// an admin command) each open it whole: the migration runs once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_first_opens_all_succeed() {
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("index.sqlite3");
            let opens: Vec<_> = (0..6)
                .map(|_| {
                    let path = path.clone();
                    tokio::spawn(async move { Index::open(&path).await.map(|_| ()) })
                })
                .collect();
            for open in opens {
                open.await.unwrap().expect("every open succeeds");
            }
        }
    }

    async fn commit(index: &Index, owner: &str, name: &str, scope: Scope) -> Committed {
        index
            .commit_file(&new_file(owner, name, scope), &BlobKey::random().unwrap())
            .await
            .unwrap()
    }

    fn ids(files: &[FileEntry]) -> Vec<u64> {
        files.iter().map(|f| f.id).collect()
    }

    #[tokio::test]
    async fn a_commit_is_read_back_whole_and_names_collide_into_suffixes() {
        let dir = tempfile::tempdir().unwrap();
        let index = open(dir.path()).await;
        let scope = Scope::devices(["phone", "laptop"]).unwrap();
        let blob = BlobKey::random().unwrap();
        let before = now_ms();
        let first = index
            .commit_file(&new_file("cam", "a.jpg", scope.clone()), &blob)
            .await
            .unwrap();
        assert_eq!(first.stored_as, "a.jpg");
        assert!(first.id > 0);
        assert!(first.stored_at_ms >= before);
        let entry = index.file_visible("cam", first.id).await.unwrap().unwrap();
        let new = new_file("cam", "a.jpg", scope);
        assert_eq!(
            entry,
            FileEntry {
                id: first.id,
                owner: new.owner,
                owner_serial: new.owner_serial,
                name: new.name,
                stored_as: "a.jpg".to_owned(),
                kind: new.kind,
                size: new.size,
                content_type: new.content_type,
                sha256: new.sha256,
                signed_at: new.signed_at,
                stored_at_ms: first.stored_at_ms,
                scope: new.scope,
                signed_version: 2,
                file_digest: new.file_digest,
                signature: new.signature,
                duration_ms: 12,
                certificate: Some(new.certificate),
                blob,
            }
        );
        let mut names = vec![first.stored_as];
        for _ in 0..3 {
            names.push(
                commit(&index, "cam", "a.jpg", Scope::Private)
                    .await
                    .stored_as,
            );
        }
        assert_eq!(names, ["a.jpg", "a (1).jpg", "a (2).jpg", "a (3).jpg"]);
        // Names are per owner.
        assert_eq!(
            commit(&index, "other", "a.jpg", Scope::Private)
                .await
                .stored_as,
            "a.jpg"
        );
        assert_eq!(
            commit(&index, "cam", "archive.tar.gz", Scope::Private)
                .await
                .stored_as,
            "archive.tar.gz"
        );
        assert_eq!(
            commit(&index, "cam", "archive.tar.gz", Scope::Private)
                .await
                .stored_as,
            "archive (1).tar.gz"
        );
        let usage = index.usage_by_owner().await.unwrap();
        assert_eq!(usage["cam"], (6 * 42, 6));
        assert_eq!(usage["other"], (42, 1));
    }

    #[tokio::test]
    async fn when_every_suffix_is_taken_nothing_is_committed() {
        let dir = tempfile::tempdir().unwrap();
        let index = open(dir.path()).await;
        let rows: Vec<ImportedFile> = (0..=crate::store::MAX_SUFFIX)
            .map(|n| ImportedFile {
                file: new_file("cam", "full.jpg", Scope::Private),
                stored_as: candidate_name("full.jpg", n),
                stored_at_ms: 1,
                blob: BlobKey::random().unwrap(),
            })
            .collect();
        assert_eq!(index.import(&rows).await.unwrap(), rows.len());
        let err = index
            .commit_file(
                &new_file("cam", "full.jpg", Scope::Private),
                &BlobKey::random().unwrap(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CommitError::NoFreeName { name } if name == "full.jpg"),
            "{err}"
        );
        assert_eq!(index.event_bounds().await.unwrap(), (0, 0));
        assert_eq!(index.usage_by_owner().await.unwrap()["cam"].1, 10_000);
    }

    #[tokio::test]
    async fn who_sees_what() {
        let dir = tempfile::tempdir().unwrap();
        let index = open(dir.path()).await;
        let private = commit(&index, "cam", "private.jpg", Scope::Private)
            .await
            .id;
        let everyone = commit(&index, "cam", "all.jpg", Scope::Everyone).await.id;
        let named = commit(
            &index,
            "cam",
            "some.jpg",
            Scope::devices(["phone", "tv"]).unwrap(),
        )
        .await
        .id;
        let phones = commit(&index, "phone", "mine.jpg", Scope::Private).await.id;
        let sorted = |mut v: Vec<u64>| {
            v.sort_unstable();
            v
        };
        let seen = index.visible_files("cam", None).await.unwrap();
        assert_eq!(ids(&seen), sorted(vec![private, everyone, named]));
        let seen = index.visible_files("phone", None).await.unwrap();
        assert_eq!(ids(&seen), sorted(vec![everyone, named, phones]));
        let by_cam = index.visible_files("phone", Some("cam")).await.unwrap();
        assert_eq!(ids(&by_cam), sorted(vec![everyone, named]));
        let named_entry = by_cam.iter().find(|f| f.id == named).unwrap();
        assert_eq!(named_entry.scope, Scope::devices(["tv", "phone"]).unwrap());
        let seen = index.visible_files("laptop", None).await.unwrap();
        assert_eq!(ids(&seen), [everyone]);
        assert!(
            index
                .visible_files("laptop", Some("phone"))
                .await
                .unwrap()
                .is_empty()
        );
        // One file: missing and hidden look the same.
        assert!(index.file_visible("tv", named).await.unwrap().is_some());
        assert!(index.file_visible("tv", private).await.unwrap().is_none());
        assert!(index.file_visible("cam", private).await.unwrap().is_some());
        assert!(index.file_visible("cam", 12345).await.unwrap().is_none());
        assert!(index.file_visible("cam", u64::MAX).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn events_count_up_in_commit_order_and_are_filtered_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let index = open(dir.path()).await;
        assert_eq!(index.event_bounds().await.unwrap(), (0, 0));
        let mut committed = Vec::new();
        for (owner, scope) in [
            ("cam", Scope::Private),
            ("cam", Scope::Everyone),
            ("phone", Scope::Private),
            ("cam", Scope::devices(["phone"]).unwrap()),
        ] {
            committed.push(commit(&index, owner, "x.jpg", scope).await);
        }
        let events: Vec<u64> = committed.iter().map(|c| c.event_id).collect();
        assert!(events.windows(2).all(|w| w[1] == w[0] + 1), "{events:?}");
        assert_eq!(index.event_bounds().await.unwrap(), (events[3], events[0]));
        let seen = index.events_after("phone", 0, 100).await.unwrap();
        let seen: Vec<(u64, u64)> = seen.into_iter().map(|(e, f)| (e, f.id)).collect();
        assert_eq!(
            seen,
            [
                (events[1], committed[1].id),
                (events[2], committed[2].id),
                (events[3], committed[3].id)
            ]
        );
        let after = index.events_after("phone", events[1], 1).await.unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].0, events[2]);
        assert_eq!(after[0].1.stored_as, "x.jpg");
        assert!(
            index
                .events_after("cam", events[3], 10)
                .await
                .unwrap()
                .is_empty()
        );
        // Pruning keeps the newest event, so the numbering stays known.
        assert_eq!(index.prune_events(0).await.unwrap(), 0);
        assert_eq!(index.prune_events(u64::MAX).await.unwrap(), 3);
        assert_eq!(index.event_bounds().await.unwrap(), (events[3], events[3]));
        // Ids are never reused.
        let next = commit(&index, "cam", "y.jpg", Scope::Everyone).await;
        assert_eq!(next.event_id, events[3] + 1);
        let seen = index.events_after("tv", 0, 10).await.unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, next.event_id);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_of_one_name_get_distinct_names() {
        let dir = tempfile::tempdir().unwrap();
        let index = open(dir.path()).await;
        let tasks: Vec<_> = (0..12)
            .map(|_| {
                let index = index.clone();
                tokio::spawn(async move { commit(&index, "cam", "same.jpg", Scope::Private).await })
            })
            .collect();
        let mut names = HashSet::new();
        let mut events = HashSet::new();
        for task in tasks {
            let c = task.await.unwrap();
            names.insert(c.stored_as);
            events.insert(c.event_id);
        }
        let expected: HashSet<String> = (0..12).map(|n| candidate_name("same.jpg", n)).collect();
        assert_eq!(names, expected);
        assert_eq!(events.len(), 12);
    }

    #[tokio::test]
    async fn the_index_persists_and_devices_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let (id, event) = {
            let index = open(dir.path()).await;
            index
                .record_device("tv", "aa", b"tv cert", 1000)
                .await
                .unwrap();
            index
                .record_device("tv", "aa", b"tv cert", 2000)
                .await
                .unwrap();
            let c = commit(&index, "cam", "a.jpg", Scope::Everyone).await;
            (c.id, c.event_id)
        };
        let index = open(dir.path()).await;
        let file = index.file_visible("tv", id).await.unwrap().unwrap();
        assert_eq!(file.stored_as, "a.jpg");
        assert_eq!(file.certificate.as_deref(), Some(&b"cam certificate"[..]));
        assert_eq!(index.event_bounds().await.unwrap(), (event, event));
        assert_eq!(
            commit(&index, "cam", "a.jpg", Scope::Private)
                .await
                .stored_as,
            "a (1).jpg"
        );
        let seen: (i64, i64, Vec<u8>) = sqlx::query_as(
            "SELECT first_seen, last_seen, certificate FROM devices WHERE name = 'tv'",
        )
        .fetch_one(&index.pool)
        .await
        .unwrap();
        assert_eq!(seen, (1000, 2000, b"tv cert".to_vec()));
    }
}
