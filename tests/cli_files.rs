//! Sharing, listing, verified downloads, notices and published files
//! through the binaries (proto-spec.md §13): a `secured serve` process and
//! `secured device` processes, and the one-sentence errors of the new verbs.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;

use common::binary::{
    ServerProcess, assert_error_is, assert_success, command, secured, send_files, stderr, workdir,
};
use common::files::write_varied;
use common::wait::eventually_blocking;

/// `secured device --server SERVER --name NAME ARGS…` in `dir`.
fn device(dir: &Path, server: &str, name: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["device", "--server", server, "--name", name];
    all.extend_from_slice(args);
    secured(dir, &all)
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn share_list_and_fetch_through_the_binaries() {
    let dir = workdir();
    let d = dir.path();
    let server = ServerProcess::start(d);
    let content = write_varied(&d.join("clip.mp4"), 300_000);
    write_varied(&d.join("secret.txt"), 10);
    let (out, report) = send_files(d, &server.addr, &["--share", "device-2", "clip.mp4"]);
    assert_success(&out);
    assert_eq!(report["files"][0]["status"], "stored");
    let (out, _) = send_files(d, &server.addr, &["secret.txt"]);
    assert_success(&out);

    // device-2 sees the shared file only.
    let out = device(d, &server.addr, "device-2", &["list", "--json"]);
    assert_success(&out);
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["name"], "clip.mp4");
    assert_eq!(lines[0]["owner"], "device-1");
    assert_eq!(lines[0]["scope"], "device-2");

    // A verified download into a folder, under the signed name.
    std::fs::create_dir(d.join("inbox")).unwrap();
    let out = device(
        d,
        &server.addr,
        "device-2",
        &["fetch", "clip.mp4", "-o", "inbox/"],
    );
    assert_success(&out);
    let text = stdout(&out);
    assert!(
        text.starts_with("fetched clip.mp4 from device-1 to inbox/clip.mp4: ")
            && text.contains("signature of device-1 verified"),
        "{text}"
    );
    assert_eq!(std::fs::read(d.join("inbox/clip.mp4")).unwrap(), content);
    let mode = std::fs::metadata(d.join("inbox/clip.mp4"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // The errors of the new verbs, one sentence each; nothing changes.
    let out = device(
        d,
        &server.addr,
        "device-2",
        &["fetch", "clip.mp4", "-o", "inbox/clip.mp4"],
    );
    assert_error_is(
        &out,
        "inbox/clip.mp4 already exists; pass --force to replace it, or -o to choose another path",
    );
    let out = device(d, &server.addr, "device-2", &["fetch", "secret.txt"]);
    assert_error_is(
        &out,
        "no file named \"secret.txt\" is visible to this device; run `secured device list` to see what is",
    );
    let out = device(
        d,
        &server.addr,
        "device-1",
        &["send-file", "--share", "a/b", "secret.txt"],
    );
    assert_error_is(
        &out,
        "--share \"a/b\" is not a scope: \"a/b\" is not a device name (1 to 64 of A-Z a-z 0-9 . _ -, not starting with '.'); use private, everyone, or device names separated by commas",
    );
    let out = device(
        d,
        &server.addr,
        "device-2",
        &["watch", "--fetch", "nowhere"],
    );
    assert_error_is(&out, "--fetch nowhere is not a folder; create it first");
    // With --force the file is replaced, atomically.
    let out = device(
        d,
        &server.addr,
        "device-2",
        &[
            "fetch",
            "clip.mp4",
            "-o",
            "inbox/clip.mp4",
            "--force",
            "--json",
        ],
    );
    assert_success(&out);
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(report["verified"], true);
    assert_eq!(report["signer"], "device-1");
    assert_eq!(std::fs::read_dir(d.join("inbox")).unwrap().count(), 1);
}

/// A download killed (SIGKILL) at any moment leaves nothing at the
/// destination, not even a temporary file.
#[test]
fn a_killed_fetch_leaves_nothing() {
    let dir = workdir();
    let d = dir.path();
    let server = ServerProcess::start(d);
    write_varied(&d.join("big.bin"), 48 << 20);
    let (out, _) = send_files(d, &server.addr, &["--share", "everyone", "big.bin"]);
    assert_success(&out);
    std::fs::create_dir(d.join("out")).unwrap();
    for delay_ms in [0, 30, 80, 150, 250, 400] {
        let mut child = command(d)
            .args(["device", "--server", &server.addr, "--name", "device-2"])
            .args(["fetch", "big.bin", "-o", "out/big.bin"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        let _ = child.wait();
        if finished {
            // It completed before the kill: the whole file, verified.
            assert_eq!(
                std::fs::metadata(d.join("out/big.bin")).unwrap().len(),
                48 << 20
            );
            std::fs::remove_file(d.join("out/big.bin")).unwrap();
        }
        let left: Vec<_> = std::fs::read_dir(d.join("out"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "killed after {delay_ms} ms, left {left:?}");
    }
}

/// `watch` prints each notice, downloads it, runs a program with its
/// fields (no shell), keeps its place on disk, and after a SIGKILL resumes
/// with every notice it missed and none it had handled.
#[test]
fn watch_fetches_runs_and_resumes_after_a_kill() {
    let dir = workdir();
    let d = dir.path();
    let server = ServerProcess::start(d);
    std::fs::create_dir(d.join("inbox")).unwrap();
    let script = d.join("on-new.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf '%s %s %s\\n' \"$SECURED_NAME\" \"$SECURED_OWNER\" \"$SECURED_PATH\" >> \"$PWD/exec.log\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let watch = |count: &str| {
        command(d)
            .args([
                "device",
                "--server",
                &server.addr,
                "--name",
                "device-2",
                "watch",
                "--json",
            ])
            .args([
                "--fetch",
                "inbox",
                "--exec",
                "./on-new.sh",
                "--state",
                "watch.state",
                "--count",
                count,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let state = || std::fs::read_to_string(d.join("watch.state")).ok();
    let mut first = watch("100");
    assert!(
        eventually_blocking(|| state().is_some()),
        "the watch did not start"
    );
    let start: u64 = state().unwrap().trim().parse().unwrap();
    for name in ["a.txt", "b.txt"] {
        write_varied(&d.join(name), 100);
        let (out, _) = send_files(d, &server.addr, &["--share", "everyone", name]);
        assert_success(&out);
    }
    assert!(eventually_blocking(|| state().is_some_and(|s| s
        .trim()
        .parse::<u64>()
        .unwrap()
        == start + 2)));
    first.kill().unwrap();
    let _ = first.wait();
    // While it is gone, three more.
    for name in ["c.txt", "d.txt", "e.txt"] {
        write_varied(&d.join(name), 100);
        let (out, _) = send_files(d, &server.addr, &["--share", "everyone", name]);
        assert_success(&out);
    }
    let second = watch("3").wait_with_output().unwrap();
    assert!(second.status.success(), "{}", stderr(&second));
    let names: Vec<String> = stdout(&second)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["name"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(names, ["c.txt", "d.txt", "e.txt"]);
    let mut inbox: Vec<String> = std::fs::read_dir(d.join("inbox"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    inbox.sort();
    assert_eq!(inbox, ["a.txt", "b.txt", "c.txt", "d.txt", "e.txt"]);
    let log = std::fs::read_to_string(d.join("exec.log")).unwrap();
    let ran: Vec<&str> = log.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(ran, ["a.txt", "b.txt", "c.txt", "d.txt", "e.txt"]);
    assert!(log.lines().all(|l| l.contains(" device-1 inbox/")), "{log}");
    assert_eq!(state().unwrap().trim().parse::<u64>().unwrap(), start + 5);
}

/// A file the server publishes is fetched and verified against the
/// server's certificate.
#[test]
fn a_published_file_is_verified_against_the_server() {
    let dir = workdir();
    let d = dir.path();
    let content = write_varied(&d.join("firmware.bin"), 100_000);
    let server = ServerProcess::start_with(d, &["--publish", "firmware.bin"]);
    server.wait_for(&["published", "firmware.bin"]);
    let out = device(
        d,
        &server.addr,
        "device-2",
        &["list", "--from", "server", "--json"],
    );
    assert_success(&out);
    assert!(
        stdout(&out).contains("\"name\":\"firmware.bin\""),
        "{}",
        stdout(&out)
    );
    let out = device(
        d,
        &server.addr,
        "device-1",
        &["fetch", "firmware.bin", "--from", "server", "-o", "fw.bin"],
    );
    assert_success(&out);
    assert!(
        stdout(&out).contains("signature of localhost verified"),
        "{}",
        stdout(&out)
    );
    assert_eq!(std::fs::read(d.join("fw.bin")).unwrap(), content);
    drop(server);
    // A restart with the same flag publishes nothing new.
    let server = ServerProcess::start_with(d, &["--publish", "firmware.bin"]);
    server.wait_for(&["already published", "firmware.bin"]);
    let out = device(
        d,
        &server.addr,
        "device-1",
        &["list", "--from", "server", "--json"],
    );
    assert_eq!(stdout(&out).lines().count(), 1);
}
