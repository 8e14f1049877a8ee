//! The `secured` binary end to end: PKI files, a server process, a device
//! process, and the one-sentence errors for bad input.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Output, Stdio};

use common::binary::{
    BIN, ServerProcess, assert_error_is, assert_one_sentence_error, assert_success, command,
    secured, send_files, send_text, stderr, template, workdir,
};
use common::files::write_varied;
use common::proxy::{Dir, Tamper, start_proxy_thread};
use common::store::{incoming_is_empty, stored_content, stored_files, transfer_in_flight};
use common::wait::eventually_blocking;

#[test]
fn pki_init_writes_certificates_and_private_keys_0600() {
    let dir = template();
    for f in ["certs/ca.pem", "certs/server.pem", "certs/device-1.pem"] {
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{f}");
    }
    for f in [
        "keys/ca.key",
        "keys/issuing-ca.key",
        "keys/server.key",
        "keys/device-1.key",
    ] {
        let meta = std::fs::metadata(dir.join(f)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{f}");
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"), "{f}");
    }
}

#[test]
fn pki_init_refuses_to_overwrite_without_force() {
    let dir = workdir();
    let before = std::fs::read(dir.path().join("keys/ca.key")).unwrap();
    let out = secured(dir.path(), &["pki", "init"]);
    assert_one_sentence_error(&out, &["--force"]);
    assert_eq!(
        before,
        std::fs::read(dir.path().join("keys/ca.key")).unwrap()
    );
}

/// Keys encrypted with a passphrase: `pki init --encrypt-keys` writes them,
/// every command that reads one takes the passphrase from
/// SECURED_KEY_PASSPHRASE or --passphrase-file, and without either (standard
/// input is not a terminal) says how to give it.
#[test]
fn encrypted_keys_need_their_passphrase() {
    const NEEDED: &str = "is encrypted: give its passphrase with --passphrase-file FILE or the SECURED_KEY_PASSPHRASE environment variable, or run on a terminal to be asked";
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], passphrase: Option<&str>| {
        let mut command = command(dir.path());
        command
            .args(args)
            .stdin(Stdio::null())
            .env_remove("SECURED_KEY_PASSPHRASE");
        if let Some(passphrase) = passphrase {
            command.env("SECURED_KEY_PASSPHRASE", passphrase);
        }
        command.output().expect("run secured")
    };
    let starts_with = |file: &str, begin: &str| {
        let text = std::fs::read_to_string(dir.path().join(file)).unwrap();
        assert!(text.starts_with(begin), "{file}: {text}");
    };
    const ENCRYPTED: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----\n";

    // Without a passphrase, nothing is written.
    let init = ["pki", "init", "--ca-bits", "2048", "--encrypt-keys"];
    assert_error_is(
        &run(&init, None),
        "encrypting the keys needs a passphrase: give it with --passphrase-file FILE or the SECURED_KEY_PASSPHRASE environment variable, or run on a terminal to be asked",
    );
    assert!(!dir.path().join("keys").exists());
    assert_success(&run(&init, Some("correct horse")));
    for f in [
        "keys/ca.key",
        "keys/issuing-ca.key",
        "keys/server.key",
        "keys/device-1.key",
    ] {
        let meta = std::fs::metadata(dir.path().join(f)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{f}");
        starts_with(f, ENCRYPTED);
    }

    // `pki issue` needs the issuing CA key's passphrase, and a right one.
    let issue = ["pki", "issue", "--role", "device", "--name", "device-2"];
    assert_error_is(
        &run(&issue, None),
        &format!("the key file keys/issuing-ca.key {NEEDED}"),
    );
    assert_error_is(
        &run(&issue, Some("correct")),
        "the passphrase for keys/issuing-ca.key is wrong (or the file is damaged); try again",
    );
    assert!(!dir.path().join("certs/device-2.pem").exists());
    assert_success(&run(&issue, Some("correct horse")));
    starts_with("keys/device-2.key", "-----BEGIN PRIVATE KEY-----\n");
    // From a file, and with the new key encrypted.
    std::fs::write(dir.path().join("pass"), "correct horse\n").unwrap();
    let out = run(
        &[
            "pki",
            "issue",
            "--role",
            "device",
            "--name",
            "device-3",
            "--encrypt-keys",
            "--passphrase-file",
            "pass",
        ],
        None,
    );
    assert_success(&out);
    starts_with("keys/device-3.key", ENCRYPTED);

    // The server and the devices read their encrypted keys.
    assert_error_is(
        &run(&["serve", "--listen", "127.0.0.1:0"], None),
        &format!("the key file keys/server.key {NEEDED}"),
    );
    let server = ServerProcess::start_with(dir.path(), &["--passphrase-file", "pass"]);
    let send = |name: &'static str| {
        [
            "device",
            "send-text",
            "--server",
            server.addr.as_str(),
            "--name",
            name,
            "hello",
        ]
    };
    assert_error_is(
        &run(&send("device-3"), None),
        &format!("the key file keys/device-3.key {NEEDED}"),
    );
    assert_success(&run(&send("device-3"), Some("correct horse")));
    assert_success(&run(&send("device-1"), Some("correct horse")));
    // A plain key needs no passphrase.
    assert_success(&run(&send("device-2"), None));
    server.wait_for(&["text received", "device-3"]);

    // The server signs enrollments with its encrypted issuing CA key (a
    // token needs no key), and a device may keep its own key encrypted from
    // the start, and through a renewal with a new key.
    let out = run(&["admin", "token", "--name", "device-4"], None);
    assert_success(&out);
    let token = String::from_utf8(out.stdout).unwrap();
    let enroll = [
        "device",
        "enroll",
        "--server",
        server.addr.as_str(),
        "--token",
        token.trim(),
        "--encrypt-key",
    ];
    assert_error_is(
        &run(&enroll, None),
        "encrypting the keys needs a passphrase: give it with --passphrase-file FILE or the SECURED_KEY_PASSPHRASE environment variable, or run on a terminal to be asked",
    );
    assert_success(&run(&enroll, Some("battery staple")));
    starts_with("keys/device-4.key", ENCRYPTED);
    assert_success(&run(&send("device-4"), Some("battery staple")));
    let before = std::fs::read(dir.path().join("keys/device-4.key")).unwrap();
    let renew = [
        "device",
        "renew",
        "--server",
        server.addr.as_str(),
        "--name",
        "device-4",
        "--new-key",
    ];
    assert_success(&run(&renew, Some("battery staple")));
    starts_with("keys/device-4.key", ENCRYPTED);
    assert_ne!(
        before,
        std::fs::read(dir.path().join("keys/device-4.key")).unwrap()
    );
    assert_success(&run(&send("device-4"), Some("battery staple")));
}

#[test]
fn openssl_accepts_the_certificates() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("openssl not installed; skipping the cross-check");
        return;
    }
    let dir = template();
    for leaf in ["certs/server.pem", "certs/device-1.pem"] {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args([
                "verify",
                "-CAfile",
                "certs/ca.pem",
                "-untrusted",
                "certs/issuing-ca.pem",
                leaf,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{leaf}: {}", stderr(&out));
    }
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(["x509", "-noout", "-text", "-in", "certs/server.pem"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "rsassaPss",
        "CA:FALSE",
        "Key Encipherment",
        "TLS Web Server Authentication",
        "DNS:localhost",
        "IP Address:127.0.0.1",
        "Subject Key Identifier",
        "Authority Key Identifier",
    ] {
        assert!(
            text.contains(needle),
            "openssl x509 -text lacks {needle}:\n{text}"
        );
    }
}

#[test]
fn serve_and_send_text_through_the_binaries() {
    let dir = workdir();
    let server = ServerProcess::start(dir.path());
    let out = send_text(dir.path(), &server.addr, &["hello from the CLI"]);
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("as device-1 to localhost"), "{stdout}");
    assert!(stdout.contains(": ok"), "{stdout}");
    // The server logs the sender, length and hash of a text, not the text.
    let line = server.wait_for(&["text received", "\"bytes\":18"]);
    assert!(!line.contains("hello from the CLI"), "{line}");
    let line = json_object(&line);
    assert_eq!(line["device"], "device-1", "{line:?}");
    assert_eq!(line["level"], "INFO", "{line:?}");
    assert_eq!(line["priority"], 6, "{line:?}");
    assert!(line["stream"].is_u64(), "stream ids are numbers: {line:?}");
    assert_eq!(line["sha256"].as_str().map(str::len), Some(64), "{line:?}");
    // Every line of the server's log is one JSON object.
    for early in &server.early {
        assert!(json_object(early).contains_key("priority"), "{early}");
    }
}

#[test]
fn config_file_is_read_and_flags_override_it() {
    let dir = workdir();
    let server = ServerProcess::start(dir.path());
    std::fs::write(
        dir.path().join("secured.toml"),
        format!(
            "[device]\nserver = \"{}\"\nserver_name = \"wrong.example\"\n",
            server.addr
        ),
    )
    .unwrap();
    // The file's server name is wrong …
    let out = secured(
        dir.path(),
        &["--config", "secured.toml", "device", "send-text", "x"],
    );
    assert_one_sentence_error(&out, &["wrong.example"]);
    // … and the flag overrides it.
    let out = secured(
        dir.path(),
        &[
            "--config",
            "secured.toml",
            "device",
            "send-text",
            "--server-name",
            "localhost",
            "x",
        ],
    );
    assert_success(&out);
}

#[test]
fn a_missing_file_is_named() {
    let dir = workdir();
    let out = secured(
        dir.path(),
        &["device", "send-text", "--cert", "certs/nope.pem", "x"],
    );
    assert_one_sentence_error(&out, &["certs/nope.pem"]);
    let out = secured(dir.path(), &["serve", "--ca", "nowhere/ca.pem"]);
    assert_one_sentence_error(&out, &["nowhere/ca.pem"]);
    let out = secured(dir.path(), &["--config", "missing.toml", "serve"]);
    assert_one_sentence_error(&out, &["missing.toml"]);
}

/// A private key that group or others may read is refused, as OpenSSH
/// does, with the command that fixes it.
#[test]
fn a_private_key_readable_by_others_is_refused() {
    let dir = workdir();
    let chmod = |file: &str, mode: u32| {
        std::fs::set_permissions(dir.path().join(file), std::fs::Permissions::from_mode(mode))
            .unwrap();
    };
    chmod("keys/device-1.key", 0o644);
    let out = secured(dir.path(), &["device", "send-text", "x"]);
    assert_error_is(
        &out,
        "keys/device-1.key is accessible to group or others (mode 0644), but a private key must be readable by its owner only; run `chmod 600 keys/device-1.key`",
    );
    chmod("keys/server.key", 0o640);
    // A data folder that cannot be one, so a server that accepted the key
    // would stop at once instead of serving.
    let out = secured(
        dir.path(),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "certs/ca.pem",
        ],
    );
    assert_one_sentence_error(
        &out,
        &[
            "keys/server.key",
            "(mode 0640)",
            "`chmod 600 keys/server.key`",
        ],
    );
    chmod("keys/issuing-ca.key", 0o604);
    let out = secured(
        dir.path(),
        &["pki", "issue", "--role", "device", "--name", "device-3"],
    );
    assert_one_sentence_error(
        &out,
        &[
            "keys/issuing-ca.key",
            "(mode 0604)",
            "`chmod 600 keys/issuing-ca.key`",
        ],
    );
    assert!(!dir.path().join("certs/device-3.pem").exists());
}

/// Without a PKI, the error says how to make one.
#[test]
fn a_missing_pki_points_to_pki_init() {
    let empty = tempfile::tempdir().unwrap();
    let no_ca = "certs/ca.pem does not exist; create a PKI with `secured pki init` first, or pass --ca FILE (or --config FILE) to use an existing one";
    let out = secured(empty.path(), &["device", "send-text", "x"]);
    assert_error_is(&out, no_ca);
    let out = secured(empty.path(), &["serve", "--listen", "127.0.0.1:0"]);
    assert_error_is(&out, no_ca);
    let out = secured(
        empty.path(),
        &["pki", "issue", "--role", "device", "--name", "d"],
    );
    assert_error_is(
        &out,
        "no CA certificate at certs/ca.pem; create one with `secured pki init`, or pass --certs-dir and --keys-dir (or --config FILE) for the folders that hold ca.pem and ca.key",
    );
    // A PKI without this device's certificate.
    let dir = workdir();
    let out = secured(
        dir.path(),
        &["device", "--name", "nobody", "send-text", "x"],
    );
    assert_error_is(
        &out,
        "certs/nobody.pem does not exist; issue it with `secured pki issue --role device --name nobody` (after `secured pki init` if there is no PKI yet), or choose another device with --name, or --cert and --key",
    );
    let out = secured(
        dir.path(),
        &["serve", "--listen", "127.0.0.1:0", "--key", "keys/nope.key"],
    );
    assert_error_is(
        &out,
        "keys/nope.key does not exist; create the server's files with `secured pki init` (or `secured pki issue --role server --name HOST`), or pass --cert and --key (or --config FILE)",
    );
}

/// `ca` and `server` name the CLI's own files: no device may take them,
/// not even with --force, which would replace the server's key.
#[test]
fn device_certificates_cannot_take_the_ca_or_server_files() {
    let dir = workdir();
    let before = std::fs::read(dir.path().join("keys/server.key")).unwrap();
    for name in ["server", "ca"] {
        let out = secured(
            dir.path(),
            &[
                "pki", "issue", "--role", "device", "--name", name, "--force",
            ],
        );
        let owner = if name == "ca" { "CA" } else { "server" };
        assert_error_is(
            &out,
            &format!("\"{name}\" is reserved for the {owner}'s own files; choose another name"),
        );
    }
    assert_eq!(
        std::fs::read(dir.path().join("keys/server.key")).unwrap(),
        before
    );
}

#[test]
fn a_key_that_does_not_match_its_certificate_is_named() {
    let dir = workdir();
    let out = secured(
        dir.path(),
        &[
            "device",
            "send-text",
            "--cert",
            "certs/device-1.pem",
            "--key",
            "keys/server.key",
            "x",
        ],
    );
    assert_one_sentence_error(&out, &["keys/server.key", "certs/device-1.pem"]);
    let out = secured(dir.path(), &["serve", "--key", "keys/device-1.key"]);
    assert_one_sentence_error(&out, &["keys/device-1.key", "certs/server.pem"]);
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let dir = workdir();
    // Locally: the device's own certificate does not chain to its CA file.
    let out = secured(
        dir.path(),
        &[
            "device",
            "send-text",
            "--cert",
            "other/certs/device-1.pem",
            "--key",
            "other/keys/device-1.key",
            "x",
        ],
    );
    assert_one_sentence_error(&out, &["other/certs/device-1.pem", "CA"]);
    // Remotely: a device trusting another CA refuses the server.
    let server = ServerProcess::start(dir.path());
    let out = send_text(
        dir.path(),
        &server.addr,
        &[
            "--ca",
            "other/certs/ca.pem",
            "--cert",
            "other/certs/device-1.pem",
            "--key",
            "other/keys/device-1.key",
            "x",
        ],
    );
    assert_one_sentence_error(&out, &["unknown_ca", "not issued by the CA"]);
    server.wait_for(&["handshake failed"]);
}

#[test]
fn an_expired_certificate_is_refused() {
    let dir = workdir();
    let out = secured(dir.path(), &["device", "send-text", "--name", "old", "x"]);
    assert_one_sentence_error(&out, &["certs/old.pem", "expired"]);
}

#[test]
fn the_wrong_server_name_is_refused() {
    let dir = workdir();
    let server = ServerProcess::start(dir.path());
    let out = send_text(
        dir.path(),
        &server.addr,
        &["--server-name", "evil.example", "x"],
    );
    assert_one_sentence_error(&out, &["evil.example", "localhost"]);
}

#[test]
fn nothing_listening_is_one_sentence() {
    let dir = workdir();
    let port = closed_port();
    let out = send_text(dir.path(), &format!("127.0.0.1:{port}"), &["x"]);
    assert_one_sentence_error(&out, &["cannot connect to 127.0.0.1"]);
}

/// A port that is (very likely) closed: bound, then dropped.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Parses one line of JSON log output.
fn json_object(line: &str) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::from_str(line) {
        Ok(serde_json::Value::Object(map)) => map,
        other => panic!("not one JSON object: {line:?} ({other:?})"),
    }
}

/// With JSON logs, the command's final error is one JSON object on standard
/// error, whether the format comes from the flag or the configuration file.
#[test]
fn json_logs_carry_the_final_error() {
    let dir = workdir();
    let addr = format!("127.0.0.1:{}", closed_port());
    std::fs::write(dir.path().join("json.toml"), "[log]\nformat = \"json\"\n").unwrap();
    for args in [
        &[
            "--log-format",
            "json",
            "device",
            "send-text",
            "--server",
            &addr,
            "x",
        ][..],
        &[
            "--config",
            "json.toml",
            "device",
            "send-text",
            "--server",
            &addr,
            "x",
        ][..],
    ] {
        let out = secured(dir.path(), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        let line = json_object(err.trim_end());
        assert_eq!(line["level"], "ERROR", "{err}");
        assert_eq!(line["priority"], 3, "{err}");
        let message = line["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("cannot connect to {addr}: ")),
            "{err}"
        );
        assert!(line["timestamp"].is_string(), "{err}");
    }
    // An error before any configuration file is read.
    let out = secured(
        dir.path(),
        &["--log-format", "json", "--config", "missing.toml", "serve"],
    );
    let line = json_object(stderr(&out).trim_end());
    assert_eq!(line["priority"], 3);
    assert!(
        line["message"]
            .as_str()
            .unwrap()
            .starts_with("cannot read configuration file missing.toml"),
        "{line:?}"
    );
}

/// A usage error from clap: exit status 2, and a first line naming the
/// option, the value and why it is refused.
fn assert_usage_error(out: &Output, first_line: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().next(), Some(first_line), "{err}");
}

/// Zero and other nonsense for the numeric options are refused before
/// anything happens, with the option and the allowed values. (`serve` is
/// given a CA file that does not exist, so that it stops at once if it
/// accepts the value.)
#[test]
fn numeric_options_are_checked() {
    let dir = workdir();
    for (args, first_line) in [
        (
            &["serve", "--ca", "nowhere.pem", "--handshake-timeout", "0"][..],
            "error: invalid value '0' for '--handshake-timeout <SECS>': 0 is not in 1..=300",
        ),
        (
            &["serve", "--ca", "nowhere.pem", "--idle-timeout", "0"][..],
            "error: invalid value '0' for '--idle-timeout <SECS>': 0 is not in 1..=86400",
        ),
        (
            &["serve", "--ca", "nowhere.pem", "--max-connections", "0"][..],
            "error: invalid value '0' for '--max-connections <N>': 0 is not in 1..=1000000",
        ),
        (
            &["serve", "--ca", "nowhere.pem", "--max-unauthenticated", "0"][..],
            "error: invalid value '0' for '--max-unauthenticated <N>': 0 is not in 1..=1000000",
        ),
        (
            &["serve", "--ca", "nowhere.pem", "--shutdown-grace", "3601"][..],
            "error: invalid value '3601' for '--shutdown-grace <SECS>': 3601 is not in 0..=3600",
        ),
        (
            &["serve", "--ca", "nowhere.pem", "--max-file-size", "0"][..],
            "error: invalid value '0' for '--max-file-size <SIZE>': the largest file must be at least 1 byte, e.g. 500MiB or 64GiB",
        ),
        (
            &["pki", "init", "--days", "0"][..],
            "error: invalid value '0' for '--days <DAYS>': 0 is not in 1..=36500",
        ),
        (
            &["pki", "init", "--ca-bits", "1024"][..],
            "error: invalid value '1024' for '--ca-bits <BITS>': the RSA key size must be 2048, 3072 or 4096 bits",
        ),
        (
            &[
                "pki", "issue", "--role", "device", "--name", "d", "--days", "0",
            ][..],
            "error: invalid value '0' for '--days <DAYS>': 0 is not in 1..=36500",
        ),
        (
            &[
                "pki", "issue", "--role", "device", "--name", "d", "--bits", "3000",
            ][..],
            "error: invalid value '3000' for '--bits <BITS>': the RSA key size must be 2048, 3072 or 4096 bits",
        ),
    ] {
        let out = secured(dir.path(), args);
        assert_usage_error(&out, first_line);
    }
    assert!(!dir.path().join("certs/d.pem").exists());
}

/// The configuration file's numbers get the same checks as the flags.
#[test]
fn numeric_configuration_values_are_checked() {
    let dir = workdir();
    for (line, expected) in [
        (
            "handshake_timeout_secs = 0",
            "bad.toml: [server] handshake_timeout_secs = 0 is not in 1..=300; set a number of seconds in that range, or remove it for the default",
        ),
        (
            "idle_timeout_secs = 0",
            "bad.toml: [server] idle_timeout_secs = 0 is not in 1..=86400; set a number of seconds in that range, or remove it for the default",
        ),
        (
            "max_connections = 0",
            "bad.toml: [server] max_connections = 0 is not in 1..=1000000; set a number of sessions in that range, or remove it for the default",
        ),
        (
            "max_unauthenticated = 0",
            "bad.toml: [server] max_unauthenticated = 0 is not in 1..=1000000; set a number of connections in that range, or remove it for the default",
        ),
        (
            "shutdown_grace_secs = 86400",
            "bad.toml: [server] shutdown_grace_secs = 86400 is not in 0..=3600; set a number of seconds in that range, or remove it for the default",
        ),
        (
            "max_file_size = \"0B\"",
            "bad.toml: [server] max_file_size is 0 bytes; set a size of at least 1 byte, e.g. \"64GiB\", or remove it for the default",
        ),
    ] {
        std::fs::write(dir.path().join("bad.toml"), format!("[server]\n{line}\n")).unwrap();
        let out = secured(
            dir.path(),
            &["--config", "bad.toml", "serve", "--ca", "nowhere.pem"],
        );
        assert_error_is(&out, expected);
    }
}

/// Shell completions and the manual page come from the same definitions
/// as --help, and need no PKI or configuration.
#[test]
fn completions_and_manual_pages() {
    let empty = tempfile::tempdir().unwrap();
    let out = secured(empty.path(), &["completions", "bash"]);
    assert_success(&out);
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(script.contains("send-file"), "{script}");
    assert!(script.contains("--store-as"), "{script}");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = secured(empty.path(), &["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        assert!(!out.stdout.is_empty(), "{shell}");
    }

    let out = secured(empty.path(), &["man"]);
    assert_success(&out);
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.starts_with(".TH secured 1 "), "{page}");
    assert!(
        page.contains(".SH EXTRA") && page.contains("secured pki init"),
        "{page}"
    );

    let out = secured(empty.path(), &["man", "--dir", "."]);
    assert_success(&out);
    for name in [
        "secured.1",
        "secured-serve.1",
        "secured-device.1",
        "secured-device-send-file.1",
        "secured-device-send-text.1",
        "secured-pki.1",
        "secured-pki-init.1",
        "secured-pki-issue.1",
        "secured-demo.1",
        "secured-completions.1",
        "secured-man.1",
    ] {
        let page = std::fs::read_to_string(empty.path().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(page.starts_with(".TH "), "{name}");
    }
    let page = std::fs::read_to_string(empty.path().join("secured-device-send-file.1")).unwrap();
    assert!(page.contains("store\\-as"), "{page}");
}

/// Every command's --help shows examples.
#[test]
fn help_has_examples() {
    let empty = tempfile::tempdir().unwrap();
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["device", "--help"],
        &["device", "send-text", "--help"],
        &["device", "send-file", "--help"],
        &["pki", "--help"],
        &["pki", "init", "--help"],
        &["pki", "issue", "--help"],
        &["demo", "--help"],
        &["completions", "--help"],
        &["man", "--help"],
    ] {
        let out = secured(empty.path(), args);
        assert!(out.status.success(), "{args:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("\nExamples:\n  secured "), "{args:?}: {help}");
    }
    let out = secured(empty.path(), &["serve", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for default in [
        "[default: 10]",
        "[default: 300]",
        "[default: 64GiB]",
        "[default: 127.0.0.1:7443]",
    ] {
        assert!(help.contains(default), "{default}: {help}");
    }
}

#[test]
fn demo_runs_end_to_end() {
    let out = Command::new(BIN)
        .args(["demo", "--log-level", "warn", "--video-size", "3MiB"])
        .output()
        .unwrap();
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for step in [
        "[1/6] PKI",
        "[2/6] server listening on 127.0.0.1:",
        "device-2 connected and watches",
        "[3/6] handshake",
        "[4/6] sent",
        "[5/6] sending",
        "sunrise.png: ",
        "holiday.mp4: 3.00 MiB (3,145,728 bytes), video/mp4 (video)",
        "minutes.pdf: ",
        "application/pdf (file)",
        "ENDD",
        "[6/6] device-2 was notified of holiday.mp4 from device-1",
        "signature of device-1 verified",
    ] {
        assert!(stdout.contains(step), "missing {step}: {stdout}");
    }
    assert_eq!(stdout.matches("its SHA-256 matches").count(), 3, "{stdout}");
}

#[test]
fn send_file_reports_and_stores_through_the_binaries() {
    let dir = workdir();
    let server = ServerProcess::start(dir.path());
    let png = dir.path().join("shot.png");
    let mut content = b"\x89PNG\r\n\x1a\n".to_vec();
    content.extend((0..100_000u32).map(|i| (i % 251) as u8));
    std::fs::write(&png, &content).unwrap();
    let (out, report) = send_files(dir.path(), &server.addr, &["shot.png", "shot.png"]);
    assert_success(&out);
    let files = report["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0]["content_type"], "image/png");
    assert_eq!(files[0]["kind"], "image");
    assert_eq!(files[0]["verified"], true);
    assert_eq!(files[0]["stored_as"], "shot.png");
    assert_eq!(files[1]["stored_as"], "shot (1).png");
    assert_eq!(files[0]["sha256"], files[0]["server_sha256"]);
    let stored = stored_content(&dir.path().join("data"), "device-1", "shot.png").unwrap();
    assert_eq!(stored, content);
    let line = server.wait_for(&["file stored", "shot (1).png"]);
    assert!(line.contains("\"device\":\"device-1\""), "{line}");
    assert!(line.contains("\"size\":100008"), "{line}");
}

/// A refused file reports no rate (nothing was sent), and the JSON report
/// has a status, a code and a message for it.
#[test]
fn a_refused_file_is_reported_with_its_code_and_no_rate() {
    let dir = workdir();
    let server = ServerProcess::start_with(dir.path(), &["--max-file-size", "1KiB"]);
    std::fs::write(dir.path().join("big.bin"), vec![7u8; 4096]).unwrap();
    std::fs::write(dir.path().join("small.bin"), b"fits").unwrap();
    let (out, report) = send_files(dir.path(), &server.addr, &["big.bin", "small.bin"]);
    assert_one_sentence_error(&out, &["1 of 2 files were not stored as sent"]);
    assert_eq!(report["error"], serde_json::Value::Null);
    let big = &report["files"][0];
    assert_eq!(big["status"], "refused", "{big}");
    assert_eq!(big["code"], "too_large", "{big}");
    assert_eq!(
        big["message"],
        "the server refused stream 1: too_large (the server accepts files up to 1024 bytes)"
    );
    assert_eq!(big["size"], 4096);
    assert_eq!(big["bytes_sent"], 0);
    assert_eq!(big["bytes_per_second"], 0);
    let small = &report["files"][1];
    assert_eq!(small["status"], "stored", "{small}");
    assert_eq!(small["code"], "ok", "{small}");
    assert_eq!(small["bytes_sent"], 4);
    assert!(small["bytes_per_second"].as_u64().unwrap() > 0, "{small}");

    let out = secured(
        dir.path(),
        &["device", "send-file", "--server", &server.addr, "big.bin"],
    );
    assert_one_sentence_error(&out, &["1 of 1 files were not stored as sent"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("big.bin: 4.00 KiB (4,096 bytes), application/octet-stream (file)\n"),
        "{text}"
    );
    assert!(text.contains("  server: refused (too_large): "), "{text}");
    assert!(!text.contains("/s"), "a rate for nothing sent: {text}");
}

/// When no session starts, every file is listed as not sent, and `--json`
/// still prints the report, with the error.
#[test]
fn files_are_listed_as_not_sent_when_the_connection_fails() {
    let dir = workdir();
    std::fs::write(dir.path().join("a.bin"), b"a").unwrap();
    std::fs::write(dir.path().join("b.bin"), b"b").unwrap();
    let addr = format!("127.0.0.1:{}", closed_port());
    let (out, report) = send_files(dir.path(), &addr, &["a.bin", "b.bin"]);
    assert_one_sentence_error(&out, &["cannot connect to"]);
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .starts_with(&format!("cannot connect to {addr}")),
        "{report}"
    );
    assert_eq!(report["device"], "device-1");
    assert_eq!(report["server"], serde_json::Value::Null);
    let files = report["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    for f in files {
        assert_eq!(f["status"], "not_sent", "{f}");
        assert_eq!(f["code"], "connect_failed", "{f}");
        assert_eq!(f["verified"], false, "{f}");
    }
    let out = secured(
        dir.path(),
        &["device", "send-file", "--server", &addr, "a.bin", "b.bin"],
    );
    assert_one_sentence_error(&out, &["cannot connect to"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.matches("  not sent: cannot connect to").count(),
        2,
        "{text}"
    );
}

/// A session that dies in the middle of the first file: that file failed,
/// after some bytes, and the next one is listed as not sent.
#[test]
fn files_after_a_dead_session_are_listed_as_not_sent() {
    let dir = workdir();
    let server = ServerProcess::start(dir.path());
    write_varied(&dir.path().join("first.bin"), 4 << 20);
    std::fs::write(dir.path().join("second.bin"), b"never").unwrap();
    // The connection is cut both ways after the first MiB from the device.
    let cut = Tamper::Cut {
        dir: Dir::Up,
        at: 1 << 20,
    };
    let proxy = start_proxy_thread(server.addr.parse().unwrap(), cut).to_string();
    let (out, report) = send_files(dir.path(), &proxy, &["first.bin", "second.bin"]);
    // The device's writes fail on the dead connection.
    assert_one_sentence_error(&out, &["error: connection error: "]);
    assert!(
        report["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("connection error: ")),
        "{report}"
    );
    assert_eq!(report["server"], "localhost");
    let (first, second) = (&report["files"][0], &report["files"][1]);
    assert_eq!(first["status"], "failed", "{first}");
    assert_eq!(first["code"], "connection_error", "{first}");
    let sent = first["bytes_sent"].as_u64().unwrap();
    assert!(sent > 0 && sent < 4 << 20, "{first}");
    assert_eq!(second["status"], "not_sent", "{second}");
    assert_eq!(second["code"], "connection_error", "{second}");
    assert!(stored_content(&dir.path().join("data"), "device-1", "first.bin").is_none());
}

#[test]
fn send_file_refuses_bad_input_before_connecting() {
    let dir = workdir();
    std::fs::write(dir.path().join("notes.txt"), "not media").unwrap();
    let out = secured(dir.path(), &["device", "send-file", "missing.png"]);
    assert_one_sentence_error(&out, &["missing.png"]);
    let out = secured(
        dir.path(),
        &[
            "device",
            "send-file",
            "--store-as",
            "x.png",
            "a.png",
            "b.png",
        ],
    );
    assert_one_sentence_error(
        &out,
        &["--store-as applies to a single file; send the files one by one to rename them"],
    );
    let out = secured(
        dir.path(),
        &[
            "device",
            "send-file",
            "--kind",
            "image",
            "--store-as",
            "up/../x.png",
            "notes.txt",
        ],
    );
    assert_one_sentence_error(&out, &["up/../x.png", "separator"]);
}

/// A forced image or video kind that the magic bytes contradict is refused
/// with what the file looks like and what to pass instead.
#[test]
fn a_kind_the_content_contradicts_is_refused() {
    let dir = workdir();
    std::fs::write(
        dir.path().join("clip.mp4"),
        b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("shot.png"),
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
    )
    .unwrap();
    std::fs::write(dir.path().join("doc.pdf"), b"%PDF-1.7\n").unwrap();
    for (kind, file, expected) in [
        (
            "image",
            "clip.mp4",
            "clip.mp4 looks like a video (video/mp4), not an image; pass --kind video or leave --kind out",
        ),
        (
            "video",
            "shot.png",
            "shot.png looks like an image (image/png), not a video; pass --kind image or leave --kind out",
        ),
        (
            "image",
            "doc.pdf",
            "doc.pdf looks like neither an image nor a video (application/pdf), not an image; pass --kind file or leave --kind out",
        ),
    ] {
        let out = secured(dir.path(), &["device", "send-file", "--kind", kind, file]);
        assert_error_is(&out, expected);
    }
}

/// Any file can be sent: what is neither an image nor a video travels as
/// kind `file`, with the content type detection found; `--kind file` fits
/// anything.
#[test]
fn send_file_sends_any_file() {
    let dir = workdir();
    let server = ServerProcess::start(dir.path());
    let files: [(&str, &[u8]); 4] = [
        ("firmware.bin", b"\0\x01\x02\x03\xff\xfe"),
        ("report.pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n"),
        ("backup.tar.gz", b"\x1f\x8b\x08\0\0\0\0\0\0\x03"),
        ("shot.png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
    ];
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let (out, report) = send_files(
        dir.path(),
        &server.addr,
        &["firmware.bin", "report.pdf", "backup.tar.gz"],
    );
    assert_success(&out);
    let sent = report["files"].as_array().unwrap();
    for (entry, content_type) in sent.iter().zip([
        "application/octet-stream",
        "application/pdf",
        "application/gzip",
    ]) {
        assert_eq!(entry["kind"], "file", "{entry}");
        assert_eq!(entry["content_type"], content_type, "{entry}");
        assert_eq!(entry["verified"], true, "{entry}");
    }
    for (name, content) in &files[..3] {
        let stored = stored_content(&dir.path().join("data"), "device-1", name).unwrap();
        assert_eq!(&stored[..], *content, "{name}");
    }
    // `--kind file` on an image: sent as a file, its content type kept.
    let (out, report) = send_files(dir.path(), &server.addr, &["--kind", "file", "shot.png"]);
    assert_success(&out);
    assert_eq!(report["files"][0]["kind"], "file");
    assert_eq!(report["files"][0]["content_type"], "image/png");
    server.wait_for(&["file stored", "shot.png"]);
}

/// `--name` is the device's identity wherever it stands; `--store-as` names
/// the stored file.
#[test]
fn name_selects_the_device_and_store_as_the_stored_name() {
    let dir = workdir();
    let server = ServerProcess::start(dir.path());
    std::fs::write(dir.path().join("a.bin"), b"first").unwrap();
    std::fs::write(dir.path().join("x"), b"second").unwrap();
    let out = secured(
        dir.path(),
        &[
            "device",
            "--name",
            "device-2",
            "send-file",
            "--server",
            &server.addr,
            "a.bin",
        ],
    );
    assert_success(&out);
    let data = dir.path().join("data");
    assert_eq!(
        stored_content(&data, "device-2", "a.bin").unwrap(),
        b"first"
    );
    // After the subcommand too, `--name` selects the device.
    let out = secured(
        dir.path(),
        &[
            "device",
            "send-file",
            "--server",
            &server.addr,
            "x",
            "--name",
            "device-2",
            "--store-as",
            "y.bin",
        ],
    );
    assert_success(&out);
    assert_eq!(
        stored_content(&data, "device-2", "y.bin").unwrap(),
        b"second"
    );
    assert!(stored_content(&data, "device-2", "x").is_none());
    assert!(stored_files(&data, "device-1").is_empty());
}

#[test]
fn send_file_with_a_key_that_does_not_match_stores_nothing() {
    let dir = workdir();
    let server = ServerProcess::start(dir.path());
    std::fs::write(dir.path().join("a.png"), b"\x89PNG\r\n\x1a\nxxxx").unwrap();
    let out = secured(
        dir.path(),
        &[
            "device",
            "send-file",
            "--server",
            &server.addr,
            "--key",
            "keys/server.key",
            "a.png",
        ],
    );
    assert_one_sentence_error(&out, &["keys/server.key", "does not match"]);
    assert!(stored_files(&dir.path().join("data"), "device-1").is_empty());
}

/// Sends a signal with the system's `kill` (this crate forbids unsafe code).
fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// SIGTERM during a transfer: the file is either complete and verified, or
/// absent, with both a long grace period (it completes) and none (it is
/// dropped); the server exits cleanly either way.
#[test]
fn sigterm_during_a_transfer_leaves_the_file_complete_or_absent() {
    for (grace, expect_stored) in [("30", true), ("0", false)] {
        let dir = workdir();
        let content = write_varied(&dir.path().join("movie.mp4"), 96 << 20);
        let mut server = ServerProcess::start_with(dir.path(), &["--shutdown-grace", grace]);
        let device = command(dir.path())
            .args([
                "device",
                "send-file",
                "--server",
                &server.addr,
                "--json",
                "movie.mp4",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let data = dir.path().join("data");
        assert!(
            eventually_blocking(|| transfer_in_flight(&data)),
            "the transfer never started"
        );
        signal(&server.child, "-TERM");
        let out = device.wait_with_output().unwrap();
        let status = server.child.wait().unwrap();
        assert!(
            status.success(),
            "grace {grace}: serve exited with {status}"
        );

        let stored = stored_content(&data, "device-1", "movie.mp4");
        assert_eq!(
            out.status.success(),
            stored.is_some(),
            "grace {grace}: {}",
            stderr(&out)
        );
        // With a grace period the file completes; without one it is almost
        // always dropped, but a transfer that won the race is fine too.
        if expect_stored {
            assert!(stored.is_some(), "grace {grace}: {}", stderr(&out));
        }
        if let Some(stored) = stored {
            assert!(stored == content, "stored bytes differ");
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(report["files"][0]["verified"], true);
        } else {
            assert_one_sentence_error(&out, &["unavailable"]);
        }
        assert!(incoming_is_empty(&data), "a partial file was left behind");
    }
}

/// SIGKILL in the middle of an upload, then a restart: nothing partial is
/// visible, the leftover temporary file is removed at start-up, and the
/// same upload succeeds.
#[test]
fn a_killed_server_restarts_clean_and_the_upload_can_be_retried() {
    let dir = workdir();
    let content = write_varied(&dir.path().join("movie.mp4"), 96 << 20);
    let data = dir.path().join("data");
    let mut server = ServerProcess::start(dir.path());
    let device = command(dir.path())
        .args(["device", "send-file", "--server", &server.addr, "movie.mp4"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        eventually_blocking(|| transfer_in_flight(&data)),
        "the transfer never started"
    );
    signal(&server.child, "-KILL");
    let _ = server.child.wait();
    let out = device.wait_with_output().unwrap();
    // The device notices the crash: its connection fails.
    assert_one_sentence_error(&out, &["error: connection error: "]);
    assert!(
        stored_files(&data, "device-1").is_empty(),
        "a partial file is visible"
    );
    assert!(
        transfer_in_flight(&data),
        "the crash should have left a temporary file to clean"
    );

    let server = ServerProcess::start(dir.path());
    server.wait_for(&["removed what interrupted transfers left behind"]);
    assert!(incoming_is_empty(&data));
    let out = secured(
        dir.path(),
        &["device", "send-file", "--server", &server.addr, "movie.mp4"],
    );
    assert_success(&out);
    assert_eq!(stored_files(&data, "device-1"), ["movie.mp4"]);
    assert!(stored_content(&data, "device-1", "movie.mp4").unwrap() == content);
}
