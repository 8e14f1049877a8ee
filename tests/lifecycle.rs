//! The certificate lifecycle (proto-spec.md §14) against a real server on
//! 127.0.0.1 with a two-tier PKI (a root and an issuing CA): enrollment
//! with a token and then sending at once; every token refusal, each with
//! its own alert and nothing issued; two redemptions of one token racing;
//! renewal; revocation closing a live session within seconds; a device
//! refusing a revoked server; and every refusal of the table in
//! proto-spec.md §14.7, provoked on the wire and compared with the table.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use common::server::{TestServer, start_server_at};
use secured::client::{
    ClientError, ClientSettings, DeviceClient, EnrollRequest, IssuedCertificate, enroll,
};
use secured::crypto::default_provider;
use secured::handshake::{DeviceConfig, EnrollConfig, ServerConfig};
use secured::index::{Index, now_ms};
use secured::message::{
    Ack, AckStatus, AlertCode, CertMsg, Enrq, Message, PROTOCOL_VERSION_3, Rnew,
    SUPPORTED_VERSIONS, StreamId,
};
use secured::pki::{
    CertificateAuthority, EnrollmentToken, Identity, Role, ServerName, Validity, generate_key_pair,
};
use secured::revocation::{self, Target};
use secured::session::Session;
use secured::store::INDEX_FILE;
use tokio::net::TcpStream;

/// A root, an issuing CA signed by it, and a server certificate from the
/// issuing CA: made once per test binary.
struct TwoTier {
    root: CertificateAuthority,
    issuing: Arc<CertificateAuthority>,
    server_cert: Vec<u8>,
    server_key: Vec<u8>,
}

fn pki() -> &'static TwoTier {
    static PKI: OnceLock<TwoTier> = OnceLock::new();
    PKI.get_or_init(|| {
        let p = default_provider();
        let root = CertificateAuthority::generate_root(
            "lifecycle root",
            2048,
            Validity::days_from_now(30),
            p,
        )
        .unwrap();
        let issuing = root
            .issue_intermediate("lifecycle issuing CA", 2048, Validity::days_from_now(30))
            .unwrap();
        let server = issuing
            .issue(
                Role::Server,
                "localhost",
                &["localhost".parse().unwrap(), "127.0.0.1".parse().unwrap()],
                2048,
                Validity::days_from_now(30),
            )
            .unwrap();
        TwoTier {
            root,
            issuing: Arc::new(issuing),
            server_cert: server.cert_der,
            server_key: server.key_pkcs8_der.to_vec(),
        }
    })
}

fn server_config() -> ServerConfig {
    let p = pki();
    let identity = Identity::from_der(p.server_cert.clone(), &p.server_key, default_provider())
        .unwrap()
        .with_chain(p.issuing.chain().to_vec());
    ServerConfig {
        identity: Arc::new(identity),
        anchor: Arc::new(p.root.trust_anchor().clone()),
        provider: default_provider(),
        versions: SUPPORTED_VERSIONS,
    }
}

/// A server that enrolls and renews, and follows a CRL at `crl` (its data
/// folder is beside it).
async fn start(crl: &Path) -> TestServer {
    let data = crl.parent().unwrap().join("data");
    std::fs::create_dir(&data).unwrap();
    let crl = crl.to_owned();
    start_server_at(server_config(), &data, |s| {
        s.issuer = Some(Arc::clone(&pki().issuing));
        s.crl_path = Some(crl);
    })
    .await
}

async fn index(server: &TestServer) -> Index {
    Index::open(&server.data().join(INDEX_FILE)).await.unwrap()
}

/// A token for `name`, valid for `ttl_ms` (negative: already expired).
async fn token(server: &TestServer, name: &str, ttl_ms: i64) -> EnrollmentToken {
    let t = EnrollmentToken::generate(
        default_provider(),
        pki().root.trust_anchor().fingerprint(),
        name,
    )
    .unwrap();
    let now = now_ms();
    let expires = if ttl_ms >= 0 {
        now + ttl_ms.unsigned_abs()
    } else {
        now - ttl_ms.unsigned_abs()
    };
    index(server)
        .await
        .add_token(
            &t.id,
            &secured::crypto::token::token_key(&t.secret),
            name,
            now.saturating_sub(3_600_000),
            expires,
        )
        .await
        .unwrap();
    t
}

/// A device key and the enrollment with it.
struct Enrolled {
    issued: IssuedCertificate,
    key: Vec<u8>,
}

impl Enrolled {
    fn config(&self) -> DeviceConfig {
        let identity = Identity::from_der(
            self.issued.certificate.clone(),
            &self.key,
            default_provider(),
        )
        .unwrap()
        .with_chain(self.issued.chain.clone());
        device_config_of(identity, SUPPORTED_VERSIONS)
    }
}

async fn try_enroll(
    addr: SocketAddr,
    token: &EnrollmentToken,
    name: &str,
) -> Result<Enrolled, ClientError> {
    let (pkcs8, key) = generate_key_pair(2048, default_provider()).unwrap();
    let spki = key.public_key_spki_der().to_vec();
    let issued = enroll(EnrollRequest {
        addr: &addr.to_string(),
        server_name: "localhost".parse::<ServerName>().unwrap(),
        token,
        name,
        key,
        spki_der: &spki,
        provider: default_provider(),
        settings: ClientSettings::default(),
    })
    .await?;
    Ok(Enrolled {
        issued,
        key: pkcs8.to_vec(),
    })
}

/// The alert that ended a refused enrollment or session.
fn alert(e: &ClientError) -> AlertCode {
    match e {
        ClientError::Session(s) => s.peer_alert().map(|(code, _)| code),
        _ => None,
    }
    .unwrap_or_else(|| panic!("not an alert: {e}"))
}

async fn issued_for(server: &TestServer, name: &str) -> Vec<String> {
    index(server).await.certificates_of(name).await.unwrap()
}

fn crl_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crl.pem");
    (dir, path)
}

// ---------------------------------------------------------------------------
// The refusal table of proto-spec.md §14.7.

const V3_TABLE: &str = "### 14.7 ";

/// Every case of §14.7 provoked here.
const V3_PROBED: &[&str] = &[
    "enroll-version",
    "enroll-request",
    "enroll-weak-key",
    "enroll-other",
    "enrq-stream",
    "enrq-unavailable",
    "enrq-token",
    "enrq-name",
    "enrq-used",
    "enrq-expired",
    "enrq-in-session",
    "rnew-request",
    "rnew-name",
    "rnew-unavailable",
    "cert-from-device",
    "v3-in-v2",
    "revoked",
];

#[test]
fn every_v3_case_is_probed() {
    common::spec::assert_all_probed(V3_TABLE, V3_PROBED, &[]);
}

/// Asserts that `got` (an alert name or `ACK_ <status>`) is what §14.7
/// says for `case`.
#[track_caller]
fn expect_case(case: &str, got: &str) {
    assert!(V3_PROBED.contains(&case), "{case} is not in V3_PROBED");
    let table = common::spec::case_table(V3_TABLE);
    let want = table
        .get(case)
        .unwrap_or_else(|| panic!("proto-spec.md §14.7 has no case {case}"));
    assert_eq!(
        want, got,
        "case {case}: proto-spec.md §14.7 says {want}, the implementation answered {got}"
    );
}

/// [`expect_case`] for the alert that ended `e`.
#[track_caller]
fn expect_alert(case: &str, e: &secured::session::SessionError) {
    let code = e
        .peer_alert()
        .map(|(code, _)| code)
        .unwrap_or_else(|| panic!("case {case}: not an alert: {e}"));
    expect_case(case, code.name());
}

/// A device certificate of `name` straight from the issuing CA.
fn device_config(name: &str, versions: &'static [u16]) -> DeviceConfig {
    let leaf = pki()
        .issuing
        .issue(Role::Device, name, &[], 2048, Validity::days_from_now(1))
        .unwrap();
    let identity = Identity::from_der(leaf.cert_der, &leaf.key_pkcs8_der, default_provider())
        .unwrap()
        .with_chain(pki().issuing.chain().to_vec());
    device_config_of(identity, versions)
}

/// A device with `identity`, trusting the test root, dialling `localhost`.
fn device_config_of(identity: Identity, versions: &'static [u16]) -> DeviceConfig {
    DeviceConfig {
        identity: Arc::new(identity),
        anchor: Arc::new(pki().root.trust_anchor().clone()),
        server_name: "localhost".parse().unwrap(),
        provider: default_provider(),
        versions,
    }
}

/// Asserts that the session still serves: a text is acknowledged.
async fn still_served(s: &mut Session<TcpStream>, stream: u32) {
    s.send(&Message::Secx(secured::message::Secx {
        stream: StreamId(stream),
        text: "still served".into(),
    }))
    .await
    .unwrap();
    assert!(matches!(s.recv().await.unwrap(), Message::Ack(_)));
}

/// An ordinary session of a device of `name`.
async fn device_session(
    addr: SocketAddr,
    name: &str,
    versions: &'static [u16],
) -> Session<TcpStream> {
    let stream = TcpStream::connect(addr).await.unwrap();
    Session::connect(
        stream,
        device_config(name, versions),
        Duration::from_secs(5),
    )
    .await
    .unwrap()
}

/// An enrollment handshake with `request_der` for a key of its own.
async fn enroll_session(
    addr: SocketAddr,
    request_der: Option<Vec<u8>>,
    versions: &'static [u16],
) -> Result<Session<TcpStream>, secured::session::SessionError> {
    let (_, key) = generate_key_pair(2048, default_provider()).unwrap();
    let request_der =
        request_der.unwrap_or_else(|| secured::pki::build_request("probe", &key).unwrap());
    let stream = TcpStream::connect(addr).await.unwrap();
    Session::connect_enroll(
        stream,
        EnrollConfig {
            request_der,
            key,
            root_fingerprint: pki().root.trust_anchor().fingerprint(),
            server_name: "localhost".parse().unwrap(),
            provider: default_provider(),
            versions,
        },
        Duration::from_secs(5),
    )
    .await
}

/// Sends `msg` and returns the alert that ends the session.
async fn refused(session: &mut Session<TcpStream>, msg: Message) -> secured::session::SessionError {
    session.send(&msg).await.unwrap();
    session.recv().await.expect_err("the session is ended")
}

/// The refusals of the enrollment handshake and of messages in the wrong
/// place, on a server that enrolls.
#[tokio::test]
async fn v3_refusals_on_the_wire() {
    let (_d, crl) = crl_dir();
    let server = start(&crl).await;
    let addr = server.addr;

    let e = enroll_session(addr, None, &[2]).await.err().unwrap();
    expect_alert("enroll-version", &e);
    let e = enroll_session(addr, Some(b"not a request".to_vec()), &[3])
        .await
        .err()
        .unwrap();
    expect_alert("enroll-request", &e);

    let mut s = enroll_session(addr, None, &[3]).await.unwrap();
    let enrq = Enrq {
        stream: StreamId(2),
        token_id: [7; 16],
        proof: [0; 32],
    };
    expect_alert("enrq-stream", &refused(&mut s, Message::Enrq(enrq)).await);

    let mut s = device_session(addr, "probe-1", SUPPORTED_VERSIONS).await;
    let enrq = Enrq {
        stream: StreamId(1),
        token_id: [7; 16],
        proof: [0; 32],
    };
    expect_alert(
        "enrq-in-session",
        &refused(&mut s, Message::Enrq(enrq)).await,
    );

    let mut s = device_session(addr, "probe-2", SUPPORTED_VERSIONS).await;
    let rnew = Rnew {
        stream: StreamId(1),
        request: b"not a request".to_vec(),
    };
    expect_alert("rnew-request", &refused(&mut s, Message::Rnew(rnew)).await);

    let mut s = device_session(addr, "probe-3", SUPPORTED_VERSIONS).await;
    let cert = CertMsg {
        stream: StreamId(1),
        certificate: pki().server_cert.clone(),
        chain: Vec::new(),
    };
    expect_alert(
        "cert-from-device",
        &refused(&mut s, Message::Cert(cert)).await,
    );

    // In version 2 the same bytes are an unknown type: one stream is
    // refused, and the session goes on.
    let mut s = device_session(addr, "probe-4", &[2]).await;
    assert_eq!(s.version(), 2);
    let rnew = Rnew {
        stream: StreamId(1),
        request: b"anything".to_vec(),
    };
    s.send(&Message::Rnew(rnew)).await.unwrap();
    let Message::Ack(Ack { stream, status, .. }) = s.recv().await.unwrap() else {
        panic!("case v3-in-v2: not an ACK_");
    };
    assert_eq!(stream, StreamId(1));
    expect_case("v3-in-v2", &format!("ACK_ {}", status.name()));
    assert_eq!(status, AckStatus::Unsupported);
    still_served(&mut s, 3).await;
    server.stop().await;
}

/// After the operator replaced the issuing CA, a device of the new one
/// downloads a file that a device of the old one signed: the signer's
/// certificate comes alone, and its issuer is found in the path the device
/// verified for the server (proto-spec.md §13.5).
#[tokio::test]
async fn a_device_of_a_new_issuing_ca_verifies_files_signed_under_the_old_one() {
    let (_d, crl) = crl_dir();
    let server = start(&crl).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, content) = common::files::source_file(dir.path(), "old.txt", 70_000);
    let mut file =
        common::files::outgoing(&path, "old.txt", secured::message::MediaKind::File, 70_000);
    file.scope = secured::message::Scope::Everyone;
    let addr = server.addr.to_string();
    let mut old = DeviceClient::connect(
        &addr,
        device_config("old-cam", SUPPORTED_VERSIONS),
        ClientSettings::default(),
    )
    .await
    .unwrap();
    assert!(old.send_file(&file, |_| {}).await.unwrap().verified());
    old.close().await.unwrap();

    let replacement = pki()
        .root
        .issue_intermediate("lifecycle issuing CA 2", 2048, Validity::days_from_now(30))
        .unwrap();
    let leaf = replacement
        .issue(
            Role::Device,
            "new-cam",
            &[],
            2048,
            Validity::days_from_now(1),
        )
        .unwrap();
    let identity = Identity::from_der(leaf.cert_der, &leaf.key_pkcs8_der, default_provider())
        .unwrap()
        .with_chain(replacement.chain().to_vec());
    let config = device_config_of(identity, SUPPORTED_VERSIONS);
    let mut new = DeviceClient::connect(&addr, config, ClientSettings::default())
        .await
        .unwrap();
    let id = new.list(Some("old-cam")).await.unwrap()[0].id;
    let out = tempfile::tempdir().unwrap();
    let into = secured::client::Destination {
        path: out.path().to_owned(),
        is_dir: true,
        force: false,
    };
    let got = new.fetch(id, &into, |_| {}).await.unwrap();
    assert_eq!(got.signer, "old-cam");
    assert_eq!(std::fs::read(out.path().join("old.txt")).unwrap(), content);
    new.close().await.unwrap();
    server.stop().await;
}

/// A server without an issuing CA key refuses enrollment and renewal, each
/// with `enrollment_unavailable`, and serves devices as before.
#[tokio::test]
async fn a_server_without_an_issuing_ca_refuses_to_issue() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server_at(server_config(), dir.path(), |_| {}).await;
    let t = EnrollmentToken::generate(
        default_provider(),
        pki().root.trust_anchor().fingerprint(),
        "cam-0",
    )
    .unwrap();
    let e = try_enroll(server.addr, &t, "cam-0").await.err().unwrap();
    expect_case("enrq-unavailable", alert(&e).name());

    let config = device_config("probe-5", SUPPORTED_VERSIONS);
    let request = secured::pki::build_request("probe-5", config.identity.key()).unwrap();
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let mut s = Session::connect(stream, config, Duration::from_secs(5))
        .await
        .unwrap();
    let rnew = Rnew {
        stream: StreamId(1),
        request,
    };
    expect_alert(
        "rnew-unavailable",
        &refused(&mut s, Message::Rnew(rnew)).await,
    );

    let mut s = device_session(server.addr, "probe-6", SUPPORTED_VERSIONS).await;
    still_served(&mut s, 1).await;
    server.stop().await;
}

#[tokio::test]
async fn a_new_device_enrolls_then_sends_at_once() {
    let (_d, crl) = crl_dir();
    let server = start(&crl).await;
    let t = token(&server, "cam-7", 900_000).await;
    let enrolled = try_enroll(server.addr, &t, "cam-7").await.expect("enrolls");
    assert_eq!(enrolled.issued.chain, pki().issuing.chain());
    assert_eq!(enrolled.issued.root, pki().root.cert_der());
    let left = enrolled
        .issued
        .not_after
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(left > Duration::from_secs(29 * 86_400) && left <= Duration::from_secs(30 * 86_400));
    assert_eq!(
        issued_for(&server, "cam-7").await,
        vec![enrolled.issued.serial_hex.clone()]
    );

    let mut client = DeviceClient::connect(
        &server.addr.to_string(),
        enrolled.config(),
        ClientSettings::default(),
    )
    .await
    .expect("the enrolled device connects");
    assert_eq!(client.version(), PROTOCOL_VERSION_3);
    client.send_text("hello from a fresh device").await.unwrap();
    client.close().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn every_bad_token_is_refused_with_its_own_alert_and_nothing_is_issued() {
    let (_d, crl) = crl_dir();
    let server = start(&crl).await;

    // A token the server never issued (the right root, a random id).
    let unknown = EnrollmentToken::generate(
        default_provider(),
        pki().root.trust_anchor().fingerprint(),
        "cam-1",
    )
    .unwrap();
    let e = try_enroll(server.addr, &unknown, "cam-1")
        .await
        .err()
        .unwrap();
    expect_case("enrq-token", alert(&e).name());

    // The right id with the wrong secret.
    let mut wrong = token(&server, "cam-2", 900_000).await;
    wrong.secret[0] ^= 1;
    let e = try_enroll(server.addr, &wrong, "cam-2")
        .await
        .err()
        .unwrap();
    expect_case("enrq-token", alert(&e).name());

    // Expired.
    let old = token(&server, "cam-3", -1).await;
    let e = try_enroll(server.addr, &old, "cam-3").await.err().unwrap();
    expect_case("enrq-expired", alert(&e).name());

    // A request for another name than the token's.
    let t = token(&server, "cam-4", 900_000).await;
    let e = try_enroll(server.addr, &t, "intruder").await.err().unwrap();
    expect_case("enrq-name", alert(&e).name());
    // That did not use the token up.
    try_enroll(server.addr, &t, "cam-4")
        .await
        .expect("the token still works");
    // Reused.
    let e = try_enroll(server.addr, &t, "cam-4").await.err().unwrap();
    expect_case("enrq-used", alert(&e).name());

    for name in ["cam-1", "cam-2", "cam-3", "intruder"] {
        assert!(issued_for(&server, name).await.is_empty(), "{name}");
    }
    assert_eq!(issued_for(&server, "cam-4").await.len(), 1);
    server.stop().await;
}

/// A request whose key is too weak never gets past the server's `HELO`
/// check. The key is made by the `openssl` tool, which can still make a
/// 1024-bit key; the test says so and stops when it is not installed.
#[tokio::test]
async fn a_request_with_a_weak_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("weak.key");
    let csr = dir.path().join("weak.csr");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "rsa:1024",
            "-nodes",
            "-subj",
            "/CN=cam-9",
        ])
        .args([
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:32",
        ])
        .args([
            "-sigopt",
            "rsa_mgf1_md:sha256",
            "-sha256",
            "-outform",
            "DER",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .output();
    if !made.is_ok_and(|o| o.status.success()) {
        eprintln!("openssl is not installed: the weak-key request cannot be made here");
        return;
    }
    let (_d, crl) = crl_dir();
    let server = start(&crl).await;
    let t = token(&server, "cam-9", 900_000).await;
    // The handshake key (never used: the server refuses at HELO).
    let (_, any_key) = generate_key_pair(2048, default_provider()).unwrap();
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let result = Session::connect_enroll(
        stream,
        EnrollConfig {
            request_der: std::fs::read(&csr).unwrap(),
            key: any_key,
            root_fingerprint: t.root_fingerprint,
            server_name: "localhost".parse().unwrap(),
            provider: default_provider(),
            versions: &[PROTOCOL_VERSION_3],
        },
        Duration::from_secs(5),
    )
    .await;
    let e = result.err().expect("refused");
    expect_alert("enroll-weak-key", &e);
    assert!(issued_for(&server, "cam-9").await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn two_redemptions_of_one_token_give_exactly_one_certificate() {
    let (_d, crl) = crl_dir();
    let server = start(&crl).await;
    for round in 0..3 {
        let name = format!("race-{round}");
        let t = token(&server, &name, 900_000).await;
        let (a, b) = tokio::join!(
            try_enroll(server.addr, &t, &name),
            try_enroll(server.addr, &t, &name)
        );
        let ok = [a.is_ok(), b.is_ok()].iter().filter(|x| **x).count();
        assert_eq!(ok, 1, "round {round}");
        let loser = a.err().or(b.err()).unwrap();
        assert_eq!(alert(&loser), AlertCode::TokenUsed);
        assert_eq!(issued_for(&server, &name).await.len(), 1);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_device_renews_for_its_key_or_a_new_one() {
    let (_d, crl) = crl_dir();
    let server = start(&crl).await;
    let t = token(&server, "cam-5", 900_000).await;
    let enrolled = try_enroll(server.addr, &t, "cam-5").await.unwrap();
    let mut client = DeviceClient::connect(
        &server.addr.to_string(),
        enrolled.config(),
        ClientSettings::default(),
    )
    .await
    .unwrap();
    let same = Arc::clone(client.identity().key());
    let spki = same.public_key_spki_der().to_vec();
    let renewed = client
        .renew(&same, &spki)
        .await
        .expect("renews with the same key");
    assert_ne!(renewed.serial_hex, enrolled.issued.serial_hex);
    let (new_pkcs8, new_key) = generate_key_pair(2048, default_provider()).unwrap();
    let new_spki = new_key.public_key_spki_der().to_vec();
    let rekeyed = client
        .renew(&new_key, &new_spki)
        .await
        .expect("renews with a new key");
    // The session goes on after renewals.
    client.send_text("still here").await.unwrap();
    client.close().await.unwrap();
    assert_eq!(issued_for(&server, "cam-5").await.len(), 3);

    // The new certificate with the new key is a working identity.
    let next = Enrolled {
        issued: rekeyed,
        key: new_pkcs8.to_vec(),
    };
    let mut client = DeviceClient::connect(
        &server.addr.to_string(),
        next.config(),
        ClientSettings::default(),
    )
    .await
    .unwrap();
    client.send_text("renewed").await.unwrap();
    client.close().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_device_cannot_renew_another_name() {
    let (_d, crl) = crl_dir();
    let server = start(&crl).await;
    let t = token(&server, "cam-6", 900_000).await;
    let enrolled = try_enroll(server.addr, &t, "cam-6").await.unwrap();
    let config = enrolled.config();
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let mut session = Session::connect(stream, config.clone(), Duration::from_secs(5))
        .await
        .unwrap();
    let request = secured::pki::build_request("someone-else", config.identity.key()).unwrap();
    session
        .send(&Message::Rnew(secured::message::Rnew {
            stream: StreamId(1),
            request,
        }))
        .await
        .unwrap();
    let e = session.recv().await.err().unwrap();
    expect_alert("rnew-name", &e);
    assert!(issued_for(&server, "someone-else").await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn revocation_closes_a_live_session_within_seconds_and_refuses_the_next() {
    let (_d, crl) = crl_dir();
    let server = start(&crl).await;
    // The server signs its first CRL at start.
    common::wait::until(Duration::from_secs(10), || crl.exists()).await;
    let t = token(&server, "stolen", 900_000).await;
    let enrolled = try_enroll(server.addr, &t, "stolen").await.unwrap();
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let mut live = Session::connect(stream, enrolled.config(), Duration::from_secs(5))
        .await
        .unwrap();
    live.set_limits(secured::session::IoLimits::uniform(Duration::from_secs(30)));

    let index = index(&server).await;
    let revoked = revocation::revoke(&index, &Target::Device("stolen".into()), None)
        .await
        .unwrap();
    assert_eq!(revoked, vec![enrolled.issued.serial_hex.clone()]);
    revocation::publish(&index, &pki().issuing, &crl, Duration::from_secs(3600))
        .await
        .unwrap();
    let started = Instant::now();
    let e = live.recv().await.expect_err("the session is closed");
    let took = started.elapsed();
    assert_eq!(
        e.peer_alert().map(|(c, _)| c),
        Some(AlertCode::CertificateRevoked),
        "{e}"
    );
    assert!(took < Duration::from_secs(5), "closed after {took:?}");

    let e = DeviceClient::connect(
        &server.addr.to_string(),
        enrolled.config(),
        ClientSettings {
            busy_retry_for: Duration::ZERO,
            ..ClientSettings::default()
        },
    )
    .await
    .err()
    .expect("refused");
    expect_case("revoked", alert(&e).name());
    // Another device is still served.
    let t = token(&server, "honest", 900_000).await;
    let honest = try_enroll(server.addr, &t, "honest").await.unwrap();
    let mut client = DeviceClient::connect(
        &server.addr.to_string(),
        honest.config(),
        ClientSettings::default(),
    )
    .await
    .unwrap();
    client.send_text("fine").await.unwrap();
    client.close().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_device_with_the_crl_refuses_a_revoked_server() {
    let (_d, crl) = crl_dir();
    let server = start(&crl).await;
    let t = token(&server, "careful", 900_000).await;
    let enrolled = try_enroll(server.addr, &t, "careful").await.unwrap();
    let (serial, _) = secured::pki::serial_and_expiry(&pki().server_cert).unwrap();
    let signed = pki()
        .issuing
        .sign_crl(
            1,
            SystemTime::now() - Duration::from_secs(60),
            SystemTime::now() + Duration::from_secs(3600),
            &[secured::pki::RevokedEntry {
                serial: hex::decode(serial).unwrap(),
                revoked_at: SystemTime::now() - Duration::from_secs(30),
                reason: Some(secured::pki::RevocationReason::KeyCompromise),
            }],
        )
        .unwrap();
    let issuer = secured::pki::CrlIssuer::from_verified_ca_cert(
        pki().issuing.cert_der(),
        default_provider(),
    )
    .unwrap();
    let list = secured::pki::VerifiedCrl::verify(&signed, &issuer, SystemTime::now()).unwrap();
    let settings = ClientSettings {
        server_crl: Some(Arc::new(list)),
        ..ClientSettings::default()
    };
    let e = DeviceClient::connect(&server.addr.to_string(), enrolled.config(), settings)
        .await
        .err()
        .expect("refused");
    assert!(matches!(e, ClientError::ServerRefused { .. }), "{e}");
    assert!(e.to_string().contains("revoked"), "{e}");
    server.stop().await;
}

#[tokio::test]
async fn an_enrollment_session_may_do_nothing_else() {
    let (_d, crl) = crl_dir();
    let server = start(&crl).await;
    let t = token(&server, "sneaky", 900_000).await;
    let (_, key) = generate_key_pair(2048, default_provider()).unwrap();
    let request = secured::pki::build_request("sneaky", &key).unwrap();
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let mut session = Session::connect_enroll(
        stream,
        EnrollConfig {
            request_der: request,
            key,
            root_fingerprint: t.root_fingerprint,
            server_name: "localhost".parse().unwrap(),
            provider: default_provider(),
            versions: &[PROTOCOL_VERSION_3],
        },
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    session
        .send(&Message::Secx(secured::message::Secx {
            stream: StreamId(1),
            text: "may I?".into(),
        }))
        .await
        .unwrap();
    let e = session.recv().await.err().unwrap();
    expect_alert("enroll-other", &e);
    server.stop().await;
}
