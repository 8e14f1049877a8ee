//! What kind of media a file holds: its content type from magic bytes, or
//! from the extension when the bytes say nothing.

use std::io::Read;
use std::path::Path;

use crate::message::MediaKind;

/// How many leading bytes are inspected.
const SNIFF_LEN: usize = 8192;

/// The detected content type and, if it is an image or a video, its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// A media type such as `image/png`, or `application/octet-stream`.
    pub content_type: String,
    /// `Some` for `image/*` and `video/*` types.
    pub kind: Option<MediaKind>,
}

/// Detects from the first bytes of a file and its name.
#[must_use]
pub fn detect(head: &[u8], name: &Path) -> Detected {
    let content_type = infer::get(head)
        .map(|t| t.mime_type().to_owned())
        .or_else(|| {
            mime_guess::from_path(name)
                .first()
                .map(|m| m.essence_str().to_owned())
        })
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let kind = if content_type.starts_with("image/") {
        Some(MediaKind::Image)
    } else if content_type.starts_with("video/") {
        Some(MediaKind::Video)
    } else {
        None
    };
    Detected { content_type, kind }
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
        assert_eq!(d.kind, Some(MediaKind::Image));
        let mp4 = b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom";
        assert_eq!(detect(mp4, Path::new("x.bin")).kind, Some(MediaKind::Video));
    }

    #[test]
    fn the_extension_is_the_fallback() {
        assert_eq!(
            detect(b"", Path::new("clip.webm")).content_type,
            "video/webm"
        );
        let d = detect(b"plain text", Path::new("notes.txt"));
        assert_eq!(d.kind, None);
        let d = detect(b"", Path::new("noext"));
        assert_eq!(d.content_type, "application/octet-stream");
    }
}
