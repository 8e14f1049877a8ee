//! What a file holds: its content type from magic bytes, or from the
//! extension when the bytes say nothing, and from that its kind: an image, a
//! video, or any other file.

use std::io::Read;
use std::path::Path;

use crate::message::MediaKind;

/// How many leading bytes are inspected.
const SNIFF_LEN: usize = 8192;

/// The content type of anything nothing else identifies.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// The detected content type and kind of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// A media type such as `image/png`, `application/pdf`, or
    /// [`OCTET_STREAM`].
    pub content_type: String,
    /// [`MediaKind::Image`] for `image/*`, [`MediaKind::Video`] for
    /// `video/*`, [`MediaKind::File`] for everything else.
    pub kind: MediaKind,
    /// Whether the magic bytes identified the content (rather than the
    /// extension, or nothing).
    pub by_magic: bool,
}

/// The kind of a media type.
#[must_use]
pub fn kind_of(content_type: &str) -> MediaKind {
    if content_type.starts_with("image/") {
        MediaKind::Image
    } else if content_type.starts_with("video/") {
        MediaKind::Video
    } else {
        MediaKind::File
    }
}

/// The media type the extension of `name` suggests, if any.
#[must_use]
fn content_type_from_name(name: &Path) -> Option<String> {
    mime_guess::from_path(name)
        .first()
        .map(|m| m.essence_str().to_owned())
}

/// Detects from the first bytes of a file and its name.
#[must_use]
pub fn detect(head: &[u8], name: &Path) -> Detected {
    let (content_type, by_magic) = match infer::get(head) {
        Some(t) => (t.mime_type().to_owned(), true),
        None => (
            content_type_from_name(name).unwrap_or_else(|| OCTET_STREAM.to_owned()),
            false,
        ),
    };
    Detected {
        kind: kind_of(&content_type),
        content_type,
        by_magic,
    }
}

/// Reads the first bytes of `path` and detects.
///
/// # Errors
/// The file cannot be read.
pub fn detect_file(path: &Path) -> std::io::Result<Detected> {
    let mut head = Vec::with_capacity(SNIFF_LEN);
    std::fs::File::open(path)?
        .take(SNIFF_LEN as u64)
        .read_to_end(&mut head)?;
    Ok(detect(&head, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes_win_over_the_extension() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        let d = detect(png, Path::new("photo.jpg"));
        assert_eq!(d.content_type, "image/png");
        assert_eq!(d.kind, MediaKind::Image);
        assert!(d.by_magic);
        let mp4 = b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom";
        assert_eq!(detect(mp4, Path::new("x.bin")).kind, MediaKind::Video);
    }

    #[test]
    fn the_extension_is_the_fallback() {
        let d = detect(b"", Path::new("clip.webm"));
        assert_eq!(d.content_type, "video/webm");
        assert_eq!(d.kind, MediaKind::Video);
        assert!(!d.by_magic);
    }

    /// Anything that is neither an image nor a video is a generic file, and
    /// keeps the content type detection found.
    #[test]
    fn everything_else_is_a_file() {
        for (head, name, content_type) in [
            (
                &b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"[..],
                "report",
                "application/pdf",
            ),
            (
                &b"\x1f\x8b\x08\0\0\0\0\0"[..],
                "backup.tgz",
                "application/gzip",
            ),
            (&b"plain text"[..], "notes.txt", "text/plain"),
            (&b"\0\x01\x02\x03"[..], "firmware.bin", OCTET_STREAM),
            (&b""[..], "noext", OCTET_STREAM),
        ] {
            let d = detect(head, Path::new(name));
            assert_eq!(d.content_type, content_type, "{name}");
            assert_eq!(d.kind, MediaKind::File, "{name}");
        }
    }
}
