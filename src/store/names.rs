//! File names: which names a device may propose (proto-spec.md §8.3.2),
//! and the name a file gets when its own is taken (§8.3.4).
//!
//! A collision name is `stem (N).ext`. Finding a free `N` takes a number of
//! probes logarithmic in the number of files of that name ([`FreeSuffix`]),
//! so storing the same name over and over stays cheap.

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use crate::message::MAX_FILE_NAME_LEN;

/// Largest collision suffix: `stem (9999).ext`. When it is taken too, the
/// file is refused.
pub const MAX_SUFFIX: u32 = 9_999;

/// Longest extension split off a name, its `.` included (`.tar` comes on
/// top, see [`split_extension`]).
const MAX_EXTENSION_LEN: usize = 16;

/// Why a proposed file name is refused (proto-spec.md §8.3.2). The device
/// checks its names with this same function before it sends them.
///
/// "White space" is the Unicode `White_Space` property
/// ([`char::is_whitespace`]); a control character is general category `Cc`
/// and a format character general category `Cf` (bidirectional overrides
/// such as U+202E, zero-width characters such as U+200B and U+FEFF), which
/// could make a name display as another one.
///
/// # Errors
/// A short reason, for logs and for the user.
pub fn validate_file_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the name is empty");
    }
    if name.len() > MAX_FILE_NAME_LEN {
        return Err("the name is longer than 200 bytes");
    }
    if name == "." || name == ".." {
        return Err("the name is a relative path component");
    }
    if name.starts_with('.') {
        return Err("the name starts with '.'");
    }
    if name.contains(['/', '\\']) {
        return Err("the name contains a path separator");
    }
    for c in name.chars() {
        match c.general_category() {
            GeneralCategory::Control => return Err("the name contains a control character"),
            GeneralCategory::Format => {
                return Err(
                    "the name contains an invisible formatting character (such as a direction override)",
                );
            }
            _ => {}
        }
    }
    if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        return Err("the name starts or ends with white space");
    }
    Ok(())
}

/// Splits `name` into stem and extension (proto-spec.md §8.3.4).
///
/// The extension is the last `.` and what follows it, provided that `.` is
/// not the first character, the extension is at most 16 bytes long (dot
/// included) and contains no white space; otherwise there is none. If the
/// stem then ends with `.tar` (any case, not at its start), the extension
/// starts there: `archive.tar.gz` is `archive` + `.tar.gz`.
#[must_use]
pub fn split_extension(name: &str) -> (&str, &str) {
    let Some(dot) = name.rfind('.') else {
        return (name, "");
    };
    let ext = &name[dot..];
    if dot == 0 || ext.len() > MAX_EXTENSION_LEN || ext.contains(char::is_whitespace) {
        return (name, "");
    }
    let stem = &name[..dot];
    if let Some(tar) = stem.len().checked_sub(4).filter(|&t| t > 0)
        && stem.is_char_boundary(tar)
        && stem[tar..].eq_ignore_ascii_case(".tar")
    {
        return (&name[..tar], &name[tar..]);
    }
    (stem, ext)
}

/// `name` for 0, else `stem (n).ext`, the stem cut (at a character
/// boundary) so that the result is at most 200 bytes long.
#[must_use]
pub fn candidate_name(name: &str, n: u32) -> String {
    if n == 0 {
        return name.to_owned();
    }
    let (stem, ext) = split_extension(name);
    let suffix = format!(" ({n})");
    let budget = MAX_FILE_NAME_LEN.saturating_sub(suffix.len() + ext.len());
    let mut end = budget.min(stem.len());
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}{ext}", &stem[..end])
}

/// The search for a free suffix `n` (0 for the name itself), in O(log n)
/// probes: it probes 0, 1, 2, 4, 8, … (capped at [`MAX_SUFFIX`]) until one
/// is free, then halves the gap back to the first free suffix after the
/// last taken one. When files are only ever added, that is the smallest
/// free suffix.
///
/// The caller answers each probe, so that the answers can come from
/// anywhere (the index answers them inside the transaction that then takes
/// the name):
///
/// ```
/// # use secured::store::FreeSuffix;
/// let taken = [0, 1, 2];
/// let mut search = FreeSuffix::new();
/// while let Some(n) = search.probe() {
///     search.answer(taken.contains(&n));
/// }
/// assert_eq!(search.found(), Some(3));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreeSuffix {
    state: Search,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Search {
    /// The name itself.
    Start,
    /// `lo` is taken; `hi` is probed next, doubling.
    Doubling { lo: u32, hi: u32 },
    /// `lo` is taken, `hi` free; their middle is probed next.
    Halving { lo: u32, hi: u32 },
    /// The answer: `None` when [`MAX_SUFFIX`] is taken.
    Done(Option<u32>),
}

impl Default for FreeSuffix {
    fn default() -> Self {
        Self::new()
    }
}

impl FreeSuffix {
    /// A search that has probed nothing yet.
    #[must_use]
    pub fn new() -> Self {
        Self {
            state: Search::Start,
        }
    }

    /// The suffix to probe next; `None` once the search is over.
    #[must_use]
    pub fn probe(&self) -> Option<u32> {
        match self.state {
            Search::Start => Some(0),
            Search::Doubling { hi, .. } => Some(hi),
            Search::Halving { lo, hi } => Some(lo + (hi - lo) / 2),
            Search::Done(_) => None,
        }
    }

    /// Whether the suffix [`FreeSuffix::probe`] gave is taken.
    pub fn answer(&mut self, taken: bool) {
        let (lo, hi) = match self.state {
            Search::Start if taken => {
                self.state = Search::Doubling { lo: 0, hi: 1 };
                return;
            }
            Search::Start => {
                self.state = Search::Done(Some(0));
                return;
            }
            Search::Doubling { lo, hi } if !taken => (lo, hi),
            Search::Doubling { hi, .. } if hi == MAX_SUFFIX => {
                self.state = Search::Done(None);
                return;
            }
            Search::Doubling { hi, .. } => {
                self.state = Search::Doubling {
                    lo: hi,
                    hi: (hi * 2).min(MAX_SUFFIX),
                };
                return;
            }
            Search::Halving { lo, hi } => {
                let mid = lo + (hi - lo) / 2;
                if taken { (mid, hi) } else { (lo, mid) }
            }
            Search::Done(_) => return,
        };
        // lo is taken and hi free: done once they are adjacent.
        self.state = if hi - lo > 1 {
            Search::Halving { lo, hi }
        } else {
            Search::Done(Some(hi))
        };
    }

    /// The free suffix found, once [`FreeSuffix::probe`] gives `None`;
    /// `None` also when [`MAX_SUFFIX`] is taken.
    #[must_use]
    pub fn found(&self) -> Option<u32> {
        match self.state {
            Search::Done(found) => found,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn names_are_checked() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a\\b",
            "/abs",
            ".hidden",
            "nul\0",
            "tab\t",
            "cr\r",
            "esc\u{1b}",
            "c1\u{85}",
            " lead",
            "trail ",
            "nbsp\u{a0}",
            "\u{3000}ideographic",
        ] {
            assert!(validate_file_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_file_name(&"x".repeat(201)).is_err());
        for good in [
            "a",
            "IMG_0001.JPG",
            "clip été.mp4",
            "x".repeat(200).as_str(),
            "a..b",
            "日本語の写真.jpg",
            "emoji 📷.png",
        ] {
            assert!(validate_file_name(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn format_characters_are_refused() {
        // "invoice<RLO>gpj.exe" displays as "invoiceexe.jpg".
        for bad in [
            "invoice\u{202e}gpj.exe",
            "a\u{202a}b",
            "a\u{2066}b.jpg",
            "zero\u{200b}width.jpg",
            "a\u{200c}b",
            "a\u{200d}b",
            "a\u{200e}b",
            "a\u{200f}b",
            "a\u{2060}b",
            "bom\u{feff}.jpg",
            "soft\u{ad}hyphen",
            "tag\u{e0041}",
        ] {
            assert_eq!(
                validate_file_name(bad),
                Err(
                    "the name contains an invisible formatting character (such as a direction override)"
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn extensions() {
        for (name, stem, ext) in [
            ("photo.jpg", "photo", ".jpg"),
            ("README", "README", ""),
            ("archive.tar.gz", "archive", ".tar.gz"),
            ("ARCHIVE.TAR.XZ", "ARCHIVE", ".TAR.XZ"),
            ("a.tar", "a", ".tar"),
            ("x.tar.gz.jpg", "x.tar.gz", ".jpg"),
            ("a.b.c", "a.b", ".c"),
            ("a.", "a", "."),
            ("my file.tar gz", "my file.tar gz", ""),
            ("long.abcdefghijklmnop", "long.abcdefghijklmnop", ""),
            ("ok.abcdefghijklmno", "ok", ".abcdefghijklmno"),
            ("é.tar.gz", "é", ".tar.gz"),
        ] {
            assert_eq!(split_extension(name), (stem, ext), "{name:?}");
        }
    }

    #[test]
    fn candidates() {
        assert_eq!(candidate_name("a.jpg", 0), "a.jpg");
        assert_eq!(candidate_name("a.jpg", 2), "a (2).jpg");
        assert_eq!(candidate_name("README", 1), "README (1)");
        assert_eq!(candidate_name("archive.tar.gz", 1), "archive (1).tar.gz");
        assert_eq!(candidate_name("photo.jpg", 1), "photo (1).jpg");
    }

    #[test]
    fn long_names_are_cut_at_a_character_boundary() {
        for name in [
            format!("{}.jpg", "x".repeat(196)),
            "é".repeat(100),
            format!("{}.tar.gz", "日".repeat(64)),
            format!("a{}.png", "📷".repeat(48)),
        ] {
            assert!(validate_file_name(&name).is_ok(), "{name:?}");
            for n in [1, 9, 10, 999, MAX_SUFFIX] {
                let c = candidate_name(&name, n);
                assert!(c.len() <= MAX_FILE_NAME_LEN, "{c:?}: {} bytes", c.len());
                assert!(validate_file_name(&c).is_ok(), "{c:?}");
                let (_, ext) = split_extension(&name);
                assert!(c.ends_with(&format!(" ({n}){ext}")), "{c:?}");
            }
        }
        let c = candidate_name(&format!("{}.jpg", "x".repeat(196)), 1);
        assert_eq!(c, format!("{} (1).jpg", "x".repeat(192)));
    }

    /// What `FreeSuffix` finds over a set of taken suffixes, and in how
    /// many probes.
    fn search(taken: &BTreeSet<u32>) -> (Option<u32>, usize) {
        let mut probes = 0;
        let mut search = FreeSuffix::new();
        while let Some(n) = search.probe() {
            probes += 1;
            search.answer(taken.contains(&n));
        }
        (search.found(), probes)
    }

    #[test]
    fn the_first_free_suffix_in_logarithmic_probes() {
        for count in [0u32, 1, 2, 3, 5, 100, 1000, 4097, MAX_SUFFIX] {
            let taken: BTreeSet<u32> = (0..count).collect();
            let (found, probes) = search(&taken);
            assert_eq!(found, Some(count), "{count} taken");
            let bound = 2 * (u32::BITS - count.leading_zeros()) as usize + 2;
            assert!(probes <= bound, "{count} taken: {probes} probes");
        }
        let all: BTreeSet<u32> = (0..=MAX_SUFFIX).collect();
        let (found, probes) = search(&all);
        assert_eq!(found, None);
        assert!(probes <= 16, "{probes} probes");
    }

    #[test]
    fn gaps_still_give_a_free_suffix() {
        // A removed file leaves a gap; any free suffix will do.
        let taken: BTreeSet<u32> = (0..100).filter(|&n| n != 3 && n != 40).collect();
        let (found, _) = search(&taken);
        let n = found.unwrap();
        assert!(!taken.contains(&n));
        // Only the top one taken: the name itself is free.
        assert_eq!(search(&BTreeSet::from([MAX_SUFFIX])).0, Some(0));
    }
}
