//! Contents to send, and the files that hold them.

use std::path::{Path, PathBuf};

use secured::client::OutgoingFile;
use secured::message::MediaKind;

/// `len` bytes that vary (no run of one value, no short period), the same
/// for the same `len`.
pub fn varied(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Writes [`varied`] content of `len` bytes to `path` and returns it.
pub fn write_varied(path: &Path, len: usize) -> Vec<u8> {
    let content = varied(len);
    std::fs::write(path, &content).expect("write the file to send");
    content
}

/// Writes [`varied`] content of `len` bytes to `dir/name`; returns the
/// path and the content.
pub fn source_file(dir: &Path, name: &str, len: usize) -> (PathBuf, Vec<u8>) {
    let path = dir.join(name);
    let content = write_varied(&path, len);
    (path, content)
}

/// The file at `path`, to be sent as `name` of `kind`, declaring `size`
/// bytes (its size, unless a test declares another).
pub fn outgoing(path: &Path, name: &str, kind: MediaKind, size: u64) -> OutgoingFile {
    let content_type = match kind {
        MediaKind::Image => "image/png",
        MediaKind::Video => "video/mp4",
        MediaKind::File => "application/octet-stream",
    };
    OutgoingFile {
        path: path.to_owned(),
        name: name.to_owned(),
        kind,
        content_type: content_type.into(),
        size,
        scope: secured::message::Scope::Private,
    }
}
