//! The certificate lifecycle (proto-spec.md §14) against a real server on
//! 127.0.0.1 with a two-tier PKI (a root and an issuing CA): enrollment
//! with a token and then sending at once; every token refusal, each with
//! its own alert and nothing issued; two redemptions of one token racing;
//! renewal; revocation closing a live session within seconds; and a device
//! refusing a revoked server.

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
use secured::message::{AlertCode, Message, PROTOCOL_VERSION_3, SUPPORTED_VERSIONS, StreamId};
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
/// folder is beside it). The index is created first, so that the test's
/// own connections to it never race the server's first migration.
async fn start(crl: &Path) -> TestServer {
    let data = crl.parent().unwrap().join("data");
    std::fs::create_dir(&data).unwrap();
    drop(Index::open(&data.join(INDEX_FILE)).await.unwrap());
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
        DeviceConfig {
            identity: Arc::new(identity),
            anchor: Arc::new(pki().root.trust_anchor().clone()),
            server_name: "localhost".parse().unwrap(),
            provider: default_provider(),
            versions: SUPPORTED_VERSIONS,
        }
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
    assert_eq!(alert(&e), AlertCode::BadToken);

    // The right id with the wrong secret.
    let mut wrong = token(&server, "cam-2", 900_000).await;
    wrong.secret[0] ^= 1;
    let e = try_enroll(server.addr, &wrong, "cam-2")
        .await
        .err()
        .unwrap();
    assert_eq!(alert(&e), AlertCode::BadToken);

    // Expired.
    let old = token(&server, "cam-3", -1).await;
    let e = try_enroll(server.addr, &old, "cam-3").await.err().unwrap();
    assert_eq!(alert(&e), AlertCode::TokenExpired);

    // A request for another name than the token's.
    let t = token(&server, "cam-4", 900_000).await;
    let e = try_enroll(server.addr, &t, "intruder").await.err().unwrap();
    assert_eq!(alert(&e), AlertCode::NameMismatch);
    // That did not use the token up.
    try_enroll(server.addr, &t, "cam-4")
        .await
        .expect("the token still works");
    // Reused.
    let e = try_enroll(server.addr, &t, "cam-4").await.err().unwrap();
    assert_eq!(alert(&e), AlertCode::TokenUsed);

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
    assert_eq!(
        e.peer_alert().map(|(c, _)| c),
        Some(AlertCode::WeakKey),
        "{e}"
    );
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
    assert_eq!(
        e.peer_alert().map(|(c, _)| c),
        Some(AlertCode::NameMismatch)
    );
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
    assert_eq!(alert(&e), AlertCode::CertificateRevoked);
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
    assert_eq!(
        e.peer_alert().map(|(c, _)| c),
        Some(AlertCode::UnexpectedMessage)
    );
    server.stop().await;
}
