//! Replays the committed fuzzing corpora (`fuzz/corpus/<target>/`) through
//! the same `secured::fuzzing` functions the libFuzzer targets call, without
//! a fuzzing engine, so every `cargo test` re-checks what fuzzing found.

use std::fs;
use std::path::PathBuf;

use secured::fuzzing;

/// Hands the fixed, test-only PKI to the targets.
fn install_pki() {
    fuzzing::set_pki(fuzzing::FixedPki {
        ca_cert: include_bytes!("data/fuzz-pki/ca.der"),
        ca_key: include_bytes!("data/fuzz-pki/ca.key.der"),
        server_cert: include_bytes!("data/fuzz-pki/server.der"),
        server_key: include_bytes!("data/fuzz-pki/server.key.der"),
        device_cert: include_bytes!("data/fuzz-pki/device.der"),
        device_key: include_bytes!("data/fuzz-pki/device.key.der"),
    });
}

/// Every file of `fuzz/corpus/<target>/`, which must exist and be non-empty.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {} is missing: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|path| path.is_file())
        .map(|path| {
            let data = fs::read(&path).expect("corpus file reads");
            (path, data)
        })
        .collect();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files.sort();
    files
}

/// Runs `f` on every input of `target`'s corpus and returns how many inputs
/// `deep` says went all the way through.
fn replay<T>(target: &str, f: fn(&[u8]) -> T, deep: fn(&T) -> bool) -> usize {
    install_pki();
    let mut reached = 0;
    for (path, data) in corpus(target) {
        let result = std::panic::catch_unwind(|| f(&data))
            .unwrap_or_else(|_| panic!("{target}: {} panics", path.display()));
        reached += usize::from(deep(&result));
    }
    assert!(
        reached > 0,
        "no input of {target}'s corpus gets past the checks"
    );
    reached
}

#[test]
fn frame_decoder() {
    replay("frame_decoder", fuzzing::frame_decoder, |frames| {
        *frames > 1
    });
}

#[test]
fn message() {
    replay("message", fuzzing::message, |decoded| *decoded);
}

#[test]
fn handshake_helo() {
    replay("handshake_helo", fuzzing::handshake_helo, |decoded| {
        *decoded
    });
}

#[test]
fn handshake_prem() {
    replay("handshake_prem", fuzzing::handshake_prem, |decoded| {
        *decoded
    });
}

#[test]
fn handshake_fini() {
    replay("handshake_fini", fuzzing::handshake_fini, |decoded| {
        *decoded
    });
}

#[test]
fn record_open() {
    replay("record_open", fuzzing::record_open, |opened| *opened > 1);
}

#[test]
fn certificate() {
    replay("certificate", fuzzing::certificate, |verified| *verified);
}

#[test]
fn handshake_server() {
    // The recorded handshake must still reach an established session: if
    // the protocol or the fixed PKI changes, the seeds need re-recording.
    replay("handshake_server", fuzzing::handshake_server, |steps| {
        *steps == 3
    });
}

#[test]
fn handshake_device() {
    // The recorded server HELO must still be accepted, so the device's
    // FINI check is reached by the seeds.
    replay("handshake_device", fuzzing::handshake_device, |steps| {
        *steps >= 1
    });
}
