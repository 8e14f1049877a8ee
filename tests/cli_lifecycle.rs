//! The certificate lifecycle through the `secured` binary: a new device
//! from nothing to sending with two commands, the token errors as the
//! user reads them, revocation by the operator, a reload on SIGHUP, and
//! `pki verify` and `pki show` on our certificates and on certificates
//! another CA made.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;

use common::binary::{
    ServerProcess, assert_error_is, assert_success, command, secured, send_files, send_text,
    stderr, workdir,
};
use common::files::write_varied;
use common::wait::eventually_blocking;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `secured admin token --name NAME` in the server's folder: the token.
fn token(server_dir: &Path, name: &str) -> String {
    let out = secured(server_dir, &["admin", "token", "--name", name]);
    assert_success(&out);
    let text = stdout(&out).trim().to_owned();
    assert!(text.starts_with("st1."), "{text}");
    assert!(stderr(&out).contains(&format!(
        "one-time token for device {name}, valid for 15 minutes"
    )));
    text
}

#[test]
fn a_new_device_goes_from_nothing_to_sending_with_two_commands() {
    let server_dir = workdir();
    let server = ServerProcess::start(server_dir.path());
    let t = token(server_dir.path(), "cam-7");

    let device = tempfile::tempdir().unwrap();
    let out = secured(
        device.path(),
        &["device", "enroll", "--server", &server.addr, "--token", &t],
    );
    assert_success(&out);
    assert!(
        stdout(&out).starts_with("enrolled as cam-7 with "),
        "{}",
        stdout(&out)
    );
    let key = device.path().join("keys/cam-7.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    for file in ["certs/cam-7.pem", "certs/ca.pem"] {
        assert!(device.path().join(file).exists(), "{file}");
    }
    // The root the device wrote is the server's root.
    assert_eq!(
        std::fs::read(device.path().join("certs/ca.pem")).unwrap(),
        std::fs::read(server_dir.path().join("certs/ca.pem")).unwrap()
    );
    let out = send_text(device.path(), &server.addr, &["--name", "cam-7", "hello"]);
    assert_success(&out);

    // The same token again: its own sentence, nothing written over.
    let again = tempfile::tempdir().unwrap();
    let out = secured(
        again.path(),
        &["device", "enroll", "--server", &server.addr, "--token", &t],
    );
    assert_error_is(
        &out,
        "the other side closed the session with alert token_used (111): the enrollment token was already used",
    );
    assert!(!again.path().join("keys/cam-7.key").exists());

    // A token for another name than --name.
    let t2 = token(server_dir.path(), "cam-8");
    let out = secured(
        again.path(),
        &[
            "device",
            "enroll",
            "--server",
            &server.addr,
            "--token",
            &t2,
            "--name",
            "cam-9",
        ],
    );
    assert_error_is(
        &out,
        "the token enrolls device \"cam-8\", not \"cam-9\"; leave --name out or ask for a token for \"cam-9\"",
    );
    // A damaged token.
    let out = secured(
        again.path(),
        &[
            "device",
            "enroll",
            "--server",
            &server.addr,
            "--token",
            &t2[..40],
        ],
    );
    assert_error_is(
        &out,
        "the enrollment token is not valid: it must be the whole `st1.…` line that `secured admin token` printed (it is cut short)",
    );
    // Enrolling over an existing identity needs --force, and nothing is
    // asked of the server before that is known.
    let t3 = token(server_dir.path(), "cam-7");
    let out = secured(
        device.path(),
        &["device", "enroll", "--server", &server.addr, "--token", &t3],
    );
    assert_error_is(
        &out,
        "keys/cam-7.key already exists; this device seems enrolled already (pass --force to replace its key and certificate)",
    );
    let out = secured(
        device.path(),
        &[
            "device",
            "enroll",
            "--server",
            &server.addr,
            "--token",
            &t3,
            "--force",
        ],
    );
    assert_success(&out);
    assert_success(&send_text(
        device.path(),
        &server.addr,
        &["--name", "cam-7", "again"],
    ));
}

#[test]
fn the_operator_revokes_a_device_and_it_is_refused() {
    let dir = workdir();
    let server = ServerProcess::start(dir.path());
    let out = send_text(dir.path(), &server.addr, &["--name", "device-2", "before"]);
    assert_success(&out);
    let out = secured(
        dir.path(),
        &["admin", "revoke", "device-2", "--reason", "key-compromise"],
    );
    assert_success(&out);
    assert!(stdout(&out).contains("revoked "), "{}", stdout(&out));
    server.wait_for(&["loaded the CRL"]);
    // Within a poll interval the server refuses it.
    let mut refused = false;
    for _ in 0..50 {
        let out = send_text(dir.path(), &server.addr, &["--name", "device-2", "after"]);
        if !out.status.success() {
            assert!(
                stderr(&out).contains("certificate_revoked"),
                "{}",
                stderr(&out)
            );
            refused = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(refused, "the revoked device was still served");
    // Others are not.
    assert_success(&send_text(dir.path(), &server.addr, &["hello"]));
    // An unknown name is a clear error.
    let out = secured(dir.path(), &["admin", "revoke", "nobody"]);
    assert_error_is(
        &out,
        "no certificate of \"nobody\" is known to this server; give its serial number (`secured pki show CERT.pem` prints it) to revoke it anyway",
    );
}

/// The operator replaces the server's certificate and sends SIGHUP: new
/// handshakes present the new certificate at once, while a device's
/// session that was open all along (a watch) goes on without a break.
#[test]
fn sighup_puts_a_new_server_certificate_in_use_without_dropping_sessions() {
    let dir = workdir();
    let d = dir.path();
    let server = ServerProcess::start(d);
    let watch = command(d)
        .args(["device", "--server", &server.addr, "--name", "device-2"])
        .args(["watch", "--json", "--state", "watch.state", "--count", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        eventually_blocking(|| d.join("watch.state").exists()),
        "the watch did not start"
    );
    let renamed = ["--server-name", "renamed.test", "hello"];
    let out = send_text(d, &server.addr, &renamed);
    assert!(
        !out.status.success(),
        "the old certificate names renamed.test"
    );
    write_varied(&d.join("a.txt"), 100);
    assert_success(&send_files(d, &server.addr, &["--share", "everyone", "a.txt"]).0);

    let out = secured(
        d,
        &[
            "pki",
            "issue",
            "--role",
            "server",
            "--name",
            "renamed.test",
            "--san",
            "127.0.0.1",
            "--force",
        ],
    );
    assert_success(&out);
    // Put in place as an operator would: each file renamed over the old.
    for (from, to) in [
        ("keys/renamed.test.key", "keys/server.key"),
        ("certs/renamed.test.pem", "certs/server.pem"),
    ] {
        std::fs::rename(d.join(from), d.join(to)).unwrap();
    }
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    server.wait_for(&["reloaded the certificates and keys"]);
    assert_success(&send_text(d, &server.addr, &renamed));
    assert_success(&send_text(d, &server.addr, &["still 127.0.0.1"]));

    write_varied(&d.join("b.txt"), 100);
    assert_success(&send_files(d, &server.addr, &["--share", "everyone", "b.txt"]).0);
    let out = watch.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("interrupted"), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
}

#[test]
fn pki_verify_checks_our_certificates_with_the_handshake_profile() {
    let dir = workdir();
    let d = dir.path();
    let ok = secured(
        d,
        &[
            "pki",
            "verify",
            "--ca",
            "certs/ca.pem",
            "--role",
            "server",
            "--name",
            "localhost",
            "certs/server.pem",
        ],
    );
    assert_success(&ok);
    assert!(
        stdout(&ok).contains(": OK, a valid server certificate for localhost"),
        "{}",
        stdout(&ok)
    );
    assert_success(&secured(
        d,
        &[
            "pki",
            "verify",
            "--ca",
            "certs/ca.pem",
            "--role",
            "device",
            "certs/device-1.pem",
        ],
    ));

    let cases: &[(&[&str], &str)] = &[
        (
            &["--role", "device", "certs/server.pem"],
            "certs/server.pem is not acceptable: certificate is not a device certificate (its extended key usage lacks clientAuth)",
        ),
        (
            &[
                "--role",
                "server",
                "--name",
                "example.net",
                "certs/server.pem",
            ],
            "certs/server.pem is not acceptable: server certificate is not valid for example.net (it is valid for DNS:localhost, IP:127.0.0.1)",
        ),
        (
            &[
                "--role",
                "device",
                "--name",
                "device-2",
                "certs/device-1.pem",
            ],
            "certs/device-1.pem is not acceptable: it is the certificate of device \"device-1\", not \"device-2\"",
        ),
        (&["--role", "device", "other/certs/device-1.pem"], ""),
        (&["--role", "device", "certs/old.pem"], ""),
    ];
    for (args, expected) in cases {
        let mut all = vec!["pki", "verify", "--ca", "certs/ca.pem"];
        all.extend_from_slice(args);
        let out = secured(d, &all);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        if expected.is_empty() {
            common::binary::assert_one_sentence_error(&out, &["is not acceptable"]);
        } else {
            assert_error_is(&out, expected);
        }
    }
    // Far in the future, every certificate has expired.
    let out = secured(
        d,
        &[
            "pki",
            "verify",
            "--ca",
            "certs/ca.pem",
            "--role",
            "device",
            "--at",
            "2999-01-01T00:00:00Z",
            "certs/device-1.pem",
        ],
    );
    common::binary::assert_one_sentence_error(&out, &["expired"]);

    let show = secured(d, &["pki", "show", "certs/server.pem"]);
    assert_success(&show);
    let text = stdout(&show);
    for needle in [
        "subject:      CN=localhost",
        "names (SAN):  DNS:localhost, IP:127.0.0.1",
        "key:          RSA 2048 bits",
        "ext. usage:   serverAuth",
        "days left",
        "SHA-256:",
    ] {
        assert!(text.contains(needle), "{needle} in {text}");
    }
}

/// Runs openssl in `dir`; false when it is not installed.
fn openssl(dir: &Path, args: &[&str]) -> bool {
    match std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
    {
        Ok(out) => {
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            true
        }
        Err(_) => false,
    }
}

/// openssl's options for RSASSA-PSS-SHA256 signatures with a 32-byte salt.
const PSS: [&str; 7] = [
    "-sigopt",
    "rsa_padding_mode:pss",
    "-sigopt",
    "rsa_pss_saltlen:32",
    "-sigopt",
    "rsa_mgf1_md:sha256",
    "-sha256",
];

/// Issues `name.pem` (and `name.key`) with the CA `ca` (`ca.pem`,
/// `ca.key`), with PSS (or PKCS#1 v1.5 when `pss` is false) and the
/// extensions `v3` (openssl's extension-file lines).
fn sign(dir: &Path, name: &str, ca: &str, v3: &str, pss: bool) -> bool {
    let (cert, key, csr, extfile) = (
        format!("{name}.pem"),
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.ext"),
    );
    std::fs::write(dir.join(&extfile), format!("[v3]\n{v3}")).unwrap();
    if !openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &key,
            "-out",
            &csr,
        ],
    ) {
        return false;
    }
    let (ca_cert, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    let mut args = vec![
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca_cert,
        "-CAkey",
        &ca_key,
        "-set_serial",
        "0x1234",
        "-days",
        "30",
        "-extfile",
        &extfile,
        "-extensions",
        "v3",
        "-out",
        &cert,
    ];
    if pss {
        args.extend_from_slice(&PSS);
    } else {
        args.push("-sha256");
    }
    openssl(dir, &args)
}

#[test]
fn pki_verify_accepts_another_cas_certificates_that_meet_the_profile() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A root and an issuing CA made by openssl, both PSS.
    let mut root = vec![
        "req",
        "-x509",
        "-newkey",
        "rsa:3072",
        "-nodes",
        "-subj",
        "/CN=openssl root",
        "-keyout",
        "root.key",
        "-out",
        "root.pem",
        "-days",
        "30",
        "-addext",
        "basicConstraints=critical,CA:TRUE,pathlen:1",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ];
    root.extend_from_slice(&PSS);
    if !openssl(d, &root) {
        eprintln!(
            "openssl is not installed: the table of openssl-made certificates is not run here"
        );
        return;
    }
    const CA: &str = "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n";
    const SERVER: &str = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n";
    const DEVICE: &str = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n";
    let with_san = format!("{SERVER}subjectAltName=DNS:host.example.net,IP:192.0.2.10\n");
    let critical = format!("{DEVICE}1.3.6.1.4.1.55555.1=critical,ASN1:NULL\n");
    let constrained = format!("{CA}nameConstraints=critical,permitted;DNS:example.net\n");
    // (name, issuer, extensions, PSS): the good chain first, then what
    // is refused: PKCS#1 v1.5, no SAN on a server, an unknown critical
    // extension, name constraints on the CA, a path too long for pathLen.
    let certificates: &[(&str, &str, &str, bool)] = &[
        ("issuing", "root", CA, true),
        ("srv", "issuing", &with_san, true),
        ("cam-1", "issuing", DEVICE, true),
        ("v15", "issuing", DEVICE, false),
        ("nosan", "issuing", SERVER, true),
        ("crit", "issuing", &critical, true),
        ("ncca", "root", &constrained, true),
        ("under-nc", "ncca", DEVICE, true),
        (
            "sub",
            "issuing",
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n",
            true,
        ),
        ("too-deep", "sub", DEVICE, true),
    ];
    for (name, issuer, v3, pss) in certificates {
        assert!(sign(d, name, issuer, v3, *pss), "{name}");
    }
    std::fs::write(
        d.join("deep-chain.pem"),
        [
            std::fs::read(d.join("sub.pem")).unwrap(),
            std::fs::read(d.join("issuing.pem")).unwrap(),
        ]
        .concat(),
    )
    .unwrap();

    let verify = |args: &[&str]| {
        let mut all = vec!["pki", "verify", "--ca", "root.pem"];
        all.extend_from_slice(args);
        secured(d, &all)
    };
    for (role, name, cert) in [
        ("server", Some("host.example.net"), "srv.pem"),
        ("server", Some("192.0.2.10"), "srv.pem"),
        ("device", None, "cam-1.pem"),
    ] {
        let mut args = vec!["--untrusted", "issuing.pem", "--role", role];
        if let Some(name) = name {
            args.extend(["--name", name]);
        }
        args.push(cert);
        assert_success(&verify(&args));
    }
    let refused: &[(&[&str], &str)] = &[
        (
            &["--role", "device", "cam-1.pem"],
            "signed by an unknown CA",
        ),
        (
            &["--untrusted", "issuing.pem", "--role", "device", "v15.pem"],
            "is not supported (only RSASSA-PSS",
        ),
        (
            &[
                "--untrusted",
                "issuing.pem",
                "--role",
                "server",
                "nosan.pem",
            ],
            "has no subjectAltName",
        ),
        (
            &[
                "--untrusted",
                "issuing.pem",
                "--role",
                "server",
                "--name",
                "other.example.net",
                "srv.pem",
            ],
            "is not valid for other.example.net",
        ),
        (&["--role", "device", "issuing.pem"], "CA certificate"),
        (
            &["--untrusted", "issuing.pem", "--role", "device", "crit.pem"],
            "unsupported critical extension 1.3.6.1.4.1.55555.1",
        ),
        (
            &[
                "--untrusted",
                "ncca.pem",
                "--role",
                "device",
                "under-nc.pem",
            ],
            "nameConstraints",
        ),
        (
            &[
                "--untrusted",
                "deep-chain.pem",
                "--role",
                "device",
                "too-deep.pem",
            ],
            "allows 0 intermediate CA certificate(s) below it",
        ),
    ];
    for (args, needle) in refused {
        let out = verify(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stdout(&out));
        common::binary::assert_one_sentence_error(&out, &[needle]);
    }
}
