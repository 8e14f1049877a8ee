//! File contents ("blobs"), kept apart from their metadata (the index) and
//! named by random keys that say nothing about the file.
//!
//! [`BlobStore`] is the small interface the store needs; [`FsBlobs`] keeps
//! blobs as files in the data folder:
//!
//! ```text
//! blobs/<k0k1>/<k0k1…k31>     one file per blob, mode 0600, in folders (0700)
//!                             named by the key's first two hex digits
//! ```
//!
//! The methods block: call them from a blocking thread.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::folder::{create_dir_private, sync_dir};

/// The key of a blob: 128 random bits, as 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobKey(String);

impl BlobKey {
    /// A new random key.
    ///
    /// # Errors
    /// The system's random source failed.
    pub fn random() -> io::Result<Self> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(io::Error::other)?;
        Ok(Self(hex::encode(bytes)))
    }

    /// The key written as `text`, if it is one (32 lowercase hex digits).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == 32 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Self(text.to_owned()))
    }

    /// The 32 hex digits.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BlobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where verified file contents are kept. Every method may block.
pub trait BlobStore: Send + Sync + 'static {
    /// Makes `temp`, a fully written and fsynced file, durable under a new
    /// key; `temp` itself is gone afterwards. Only verified content is put.
    ///
    /// # Errors
    /// The blob cannot be written or made durable; no key refers to it.
    fn put(&self, temp: &Path) -> io::Result<BlobKey>;

    /// A reader of the blob's content, from its start.
    ///
    /// # Errors
    /// No such blob, or it cannot be read.
    fn open(&self, key: &BlobKey) -> io::Result<Box<dyn Read + Send>>;

    /// Removes the blob; a blob that is already gone is not an error.
    ///
    /// # Errors
    /// The blob exists but cannot be removed.
    fn delete(&self, key: &BlobKey) -> io::Result<()>;

    /// Every blob kept, in no particular order (for the clean-up at
    /// start-up of blobs that no file refers to).
    ///
    /// # Errors
    /// The blobs cannot be listed.
    fn keys(&self) -> io::Result<Vec<BlobKey>>;
}

/// Blobs as files under one folder, fanned out by the first two hex digits
/// of their key.
#[derive(Debug, Clone)]
pub struct FsBlobs {
    root: PathBuf,
}

impl FsBlobs {
    /// The blobs under `root`, which is created (mode 0700) if needed.
    ///
    /// # Errors
    /// `root` cannot be created.
    pub fn open(root: &Path) -> io::Result<Self> {
        create_dir_private(root)?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    fn folder(&self, key: &BlobKey) -> PathBuf {
        self.root.join(&key.as_str()[..2])
    }

    /// Where the blob `key` is (or would be).
    #[must_use]
    pub fn path(&self, key: &BlobKey) -> PathBuf {
        self.folder(key).join(key.as_str())
    }

    /// Hard-links `file` under a new key, without replacing any blob; the
    /// link is durable once [`FsBlobs::sync`] has run on the returned
    /// folder. `file` stays where it is.
    pub(super) fn link(&self, file: &Path) -> io::Result<(BlobKey, PathBuf)> {
        loop {
            let key = BlobKey::random()?;
            let folder = self.folder(&key);
            match fs::DirBuilder::new().mode(0o700).create(&folder) {
                // A new folder must itself be made durable in the root.
                Ok(()) => sync_dir(&self.root)?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            // A hard link fails rather than replace: a (most unlikely)
            // key already taken is drawn again.
            match fs::hard_link(file, folder.join(key.as_str())) {
                Ok(()) => return Ok((key, folder)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Makes the links made in `folder` durable.
    pub(super) fn sync(folder: &Path) -> io::Result<()> {
        sync_dir(folder)
    }
}

impl BlobStore for FsBlobs {
    fn put(&self, temp: &Path) -> io::Result<BlobKey> {
        let (key, folder) = self.link(temp)?;
        if let Err(e) = Self::sync(&folder) {
            let _ = fs::remove_file(self.path(&key));
            return Err(e);
        }
        // The blob is durable; the temporary name is only in the way (and
        // goes at the next start-up if this fails).
        let _ = fs::remove_file(temp);
        Ok(key)
    }

    fn open(&self, key: &BlobKey) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(File::open(self.path(key))?))
    }

    fn delete(&self, key: &BlobKey) -> io::Result<()> {
        match fs::remove_file(self.path(key)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn keys(&self) -> io::Result<Vec<BlobKey>> {
        let mut keys = Vec::new();
        for folder in fs::read_dir(&self.root)? {
            let folder = folder?;
            let Some(prefix) = folder.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            // Only what this store could have made; anything else is left
            // alone.
            if prefix.len() != 2 || !folder.file_type()?.is_dir() {
                continue;
            }
            for blob in fs::read_dir(folder.path())? {
                let blob = blob?;
                let key = blob.file_name().to_str().and_then(BlobKey::parse);
                if let Some(key) = key.filter(|k| k.as_str().starts_with(&prefix))
                    && blob.file_type()?.is_file()
                {
                    keys.push(key);
                }
            }
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn keys_are_random_hex_and_parsed_strictly() {
        let a = BlobKey::random().unwrap();
        assert_eq!(BlobKey::parse(a.as_str()), Some(a.clone()));
        assert_ne!(a, BlobKey::random().unwrap());
        for bad in [
            "",
            "0",
            &"A".repeat(32),
            &"0".repeat(31),
            &"g".repeat(32),
            "../x",
        ] {
            assert_eq!(BlobKey::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn put_open_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = FsBlobs::open(&dir.path().join("blobs")).unwrap();
        let temp = dir.path().join("t.part");
        fs::write(&temp, b"content").unwrap();
        fs::set_permissions(&temp, fs::Permissions::from_mode(0o600)).unwrap();
        let key = blobs.put(&temp).unwrap();
        assert!(!temp.exists());
        let path = blobs.path(&key);
        assert_eq!(
            path,
            dir.path()
                .join("blobs")
                .join(&key.as_str()[..2])
                .join(key.as_str())
        );
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let folder = path.parent().unwrap();
        assert_eq!(
            fs::metadata(folder).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let mut content = Vec::new();
        blobs.open(&key).unwrap().read_to_end(&mut content).unwrap();
        assert_eq!(content, b"content");

        // Strays are not blobs: left alone, not listed.
        fs::write(folder.join("stray"), b"").unwrap();
        fs::write(dir.path().join("blobs/note.txt"), b"").unwrap();
        fs::create_dir(dir.path().join("blobs/zz")).unwrap();
        fs::write(dir.path().join("blobs/zz").join("0".repeat(32)), b"").unwrap();
        let other = dir.path().join("u.part");
        fs::write(&other, b"other").unwrap();
        let second = blobs.put(&other).unwrap();
        let keys: HashSet<_> = blobs.keys().unwrap().into_iter().collect();
        assert_eq!(keys, HashSet::from([key.clone(), second]));

        blobs.delete(&key).unwrap();
        blobs.delete(&key).unwrap();
        assert!(blobs.open(&key).is_err());
        assert!(folder.join("stray").exists());
    }

    #[test]
    fn a_link_keeps_the_original() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = FsBlobs::open(&dir.path().join("blobs")).unwrap();
        let file = dir.path().join("old.jpg");
        fs::write(&file, b"old").unwrap();
        let (key, folder) = blobs.link(&file).unwrap();
        FsBlobs::sync(&folder).unwrap();
        assert_eq!(fs::read(blobs.path(&key)).unwrap(), b"old");
        blobs.delete(&key).unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"old");
    }
}
