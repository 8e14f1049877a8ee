//! What is in a server's data folder: one folder per device, with the
//! stored files, `.incoming/` for transfers in flight and `.meta/` for the
//! records of stored files.

use std::path::{Path, PathBuf};

/// The temporary folder of `device`.
pub fn incoming_dir(data: &Path, device: &str) -> PathBuf {
    data.join(device).join(".incoming")
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

/// The files stored for `device` (the visible ones: without `.incoming`
/// and `.meta`), sorted; empty if the device has no folder.
pub fn stored_files(data: &Path, device: &str) -> Vec<String> {
    let mut names = names(&data.join(device));
    names.retain(|n| !n.starts_with('.'));
    names
}

/// The content of the file stored for `device` under `name`, if there is one.
pub fn stored_content(data: &Path, device: &str, name: &str) -> Option<Vec<u8>> {
    std::fs::read(data.join(device).join(name)).ok()
}

/// What is in the temporary folder of `device` now; `None` if it has none.
pub fn temporary_files(data: &Path, device: &str) -> Option<Vec<String>> {
    let dir = incoming_dir(data, device);
    dir.is_dir().then(|| names(&dir))
}

/// The device's temporary folder exists and is empty now: a transfer of
/// this device was begun (a device that never began one has no such
/// folder, so a wrong path cannot pass), and none left anything behind.
pub fn incoming_is_empty(data: &Path, device: &str) -> bool {
    temporary_files(data, device).is_some_and(|files| files.is_empty())
}

/// A transfer of `device` is in flight now: its temporary folder holds a
/// file.
pub fn transfer_in_flight(data: &Path, device: &str) -> bool {
    temporary_files(data, device).is_some_and(|files| !files.is_empty())
}
