// Included once per crypto backend by tests/session.rs; `PROVIDER` names it.

include!("prelude.rs");


use std::time::Duration;

use crate::common::proxy::{Action, At, Tamper, start_proxy};
use crate::common::{Logs, next_ending, next_event, start_server_with, texts_until_closed};
use secured::service::Ending;
use futures_util::{SinkExt, StreamExt};
use secured::client::{ClientError, ClientSettings, DeviceClient};
use secured::frame::{Frame, FrameCodec, FrameKind};
use secured::handshake::{DeviceConfig, HandshakeError};
use secured::message::{AlertCode, Message};
use secured::pki::{CertError, Role, ServerName};
use secured::session::{Session, SessionError};
use secured::testkit::{TestPki, pki};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

async fn connect(
    addr: std::net::SocketAddr,
    config: DeviceConfig,
) -> Result<DeviceClient<TcpStream>, ClientError> {
    DeviceClient::connect(&addr.to_string(), config, ClientSettings::default()).await
}

/// The alert with which the server refused the handshake, if it did.
fn handshake_alert(e: &ClientError) -> Option<AlertCode> {
    match e {
        ClientError::Session(SessionError::Handshake(HandshakeError::PeerAlert(code))) => {
            Some(*code)
        }
        _ => None,
    }
}

/// The protected alert with which the server ended the session, if it did.
fn session_alert(e: &ClientError) -> Option<AlertCode> {
    match e {
        ClientError::Session(SessionError::PeerAlert(code)) => Some(*code),
        _ => None,
    }
}

/// Runs a server with `config`; a device must refuse it for its
/// certificate. Returns why.
async fn server_certificate_refused(config: secured::handshake::ServerConfig) -> CertError {
    let server = start_server_with(config, |_| {}).await;
    let err = connect(server.addr, device_config())
        .await
        .err()
        .expect("refused");
    server.stop().await;
    match err {
        ClientError::Session(SessionError::Handshake(HandshakeError::Certificate {
            peer: Role::Server,
            error,
        })) => error,
        other => panic!("expected the server's certificate to be refused, got {other}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn texts_are_acknowledged_and_delivered_with_their_sender() {
    let (logs, _guard) = Logs::capture();
    let server = start_server_here().await;
    let mut events = server.watch();
    let mut device = connect(server.addr, device_config()).await.unwrap();
    assert_eq!(device.server().name(), "localhost");
    let first = device.send_text("hello, secured").await.unwrap();
    let second = device.send_text("second message ünïcödé").await.unwrap();
    assert_eq!((first.stream.0, second.stream.0), (1, 3));
    device.close().await.unwrap();
    let mut texts = Vec::new();
    while texts.len() < 2 {
        let t = next_event(&mut events, Duration::from_secs(5), |e| match e {
            secured::service::Event::Text { device, stream, text } => {
                Some((device, stream.0, text.to_string()))
            }
            _ => None,
        })
        .await
        .expect("the server delivers each text");
        texts.push(t);
    }
    assert_eq!(
        texts,
        [
            ("device-1".to_owned(), 1, "hello, secured".to_owned()),
            ("device-1".to_owned(), 3, "second message ünïcödé".to_owned()),
        ]
    );
    let (who, ending) = next_ending(&mut events, Duration::from_secs(5))
        .await
        .expect("the session ends");
    assert_eq!(who.as_deref(), Some("device-1"));
    assert_eq!(ending, secured::service::Ending::Clean);
    // At info, the log names the sender, the length and a hash, never the
    // text itself.
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("text received") && l.contains("\"stream\":1"))
        .expect("the server logs the text's arrival");
    assert!(line.contains("\"device\":\"device-1\""), "{line}");
    assert!(line.contains("\"bytes\":14"), "{line}");
    assert!(!line.contains("hello, secured"), "{line}");
    server.stop().await;
}

#[tokio::test]
async fn several_devices_at_once() {
    let server = start_server_here().await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let config = device1_or_2(i);
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let mut d = connect(addr, config).await.unwrap();
            d.send_text(&format!("device task {i}")).await.unwrap();
            d.close().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    server.stop().await;
}

#[tokio::test]
async fn device_certificate_from_another_ca_is_refused() {
    let server = start_server_here().await;
    let p = pki();
    let err = connect(server.addr, device_config_as_leaf(p.other_device.identity_with(provider())))
        .await
        .err()
        .expect("refused");
    assert_eq!(handshake_alert(&err), Some(AlertCode::UnknownCa), "{err}");
    server.stop().await;
}

#[tokio::test]
async fn expired_and_future_device_certificates_are_refused() {
    let server = start_server_here().await;
    let p = pki();
    for (validity, alert) in [
        (TestPki::expired(), AlertCode::CertificateExpired),
        (TestPki::not_yet_valid(), AlertCode::CertificateNotYetValid),
    ] {
        let leaf = p.reissue(&p.device, Role::Device, "device-1", &[], validity);
        let err = connect(server.addr, device_config_as_leaf(leaf.identity_with(provider())))
            .await
            .err()
            .expect("refused");
        assert_eq!(handshake_alert(&err), Some(alert), "{err}");
    }
    server.stop().await;
}

#[tokio::test]
async fn server_certificate_as_device_and_device_certificate_as_server_are_refused() {
    let p = pki();
    let server = start_server_here().await;
    let err = connect(server.addr, device_config_as_leaf(p.server.identity_with(provider())))
        .await
        .err()
        .expect("refused");
    assert_eq!(handshake_alert(&err), Some(AlertCode::CertificateRole), "{err}");
    server.stop().await;

    let mut config = server_config();
    config.identity = p.device.identity_with(provider());
    let error = server_certificate_refused(config).await;
    assert!(matches!(error, CertError::WrongRole { .. }), "{error}");
}

#[tokio::test]
async fn wrong_server_name_is_refused_by_the_device() {
    let server = start_server_here().await;
    let mut config = device_config();
    config.server_name = ServerName::Dns("other.example".into());
    let err = connect(server.addr, config).await.err().expect("refused");
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            ClientError::Session(SessionError::Handshake(HandshakeError::Certificate {
                error: CertError::NameMismatch { .. },
                ..
            }))
        ),
        "{msg}"
    );
    assert!(msg.contains("other.example"), "{msg}");
    // The IP name in the certificate is accepted.
    let mut config = device_config();
    config.server_name = "127.0.0.1".parse().unwrap();
    connect(server.addr, config)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn server_from_another_ca_is_refused_by_the_device() {
    let p = pki();
    let mut config = server_config();
    // A server identity issued by the untrusted CA, for the same key.
    let foreign = p
        .other_ca
        .issue_for_key(
            Role::Server,
            "localhost",
            &secured::testkit::server_names(),
            &p.server.spki_der(),
            secured::pki::Validity::days_from_now(1),
        )
        .unwrap();
    config.identity = std::sync::Arc::new(
        secured::pki::Identity::from_der(foreign, &p.server.key_der, p.provider()).unwrap(),
    );
    let error = server_certificate_refused(config).await;
    assert!(matches!(error, CertError::UnknownIssuer { .. }), "{error}");
}

/// The device's `PREM` with its proof replaced by a signature made with
/// another key: what a thief holding only device-1's certificate could send.
fn forged_device_proof() -> Tamper {
    let other_key = pki().device2.identity_with(provider());
    Tamper::up(
        1,
        Action::Rewrite(std::sync::Arc::new(move |frame| {
            let Ok(Message::Prem(mut prem)) = Message::decode(FrameKind::PREM, &frame.body) else {
                panic!("frame 1 is the PREM, not {}", frame.kind);
            };
            prem.device_signature = other_key.key().pss_sign(b"not the transcript").unwrap();
            Message::Prem(prem).to_plain_frame()
        })),
    )
}

#[tokio::test]
async fn device_holding_only_a_certificate_is_refused() {
    // The proxy replaces the PREM signature with one made by another key:
    // what a thief holding only device-1's certificate could send.
    let server = start_server_here().await;
    let mut events = server.watch();
    let proxy = start_proxy(server.addr, forged_device_proof()).await;
    let err = connect(proxy.addr, device_config())
        .await
        .err()
        .expect("refused");
    assert_eq!(handshake_alert(&err), Some(AlertCode::DecryptError), "{err}");
    assert_eq!(
        next_ending(&mut events, Duration::from_secs(5)).await,
        Some((None, Ending::Alert(AlertCode::DecryptError))),
        "the server never takes it for the device"
    );
    server.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_replayed_certificate_is_logged_as_claimed_never_as_the_device() {
    let (logs, _guard) = Logs::capture();
    let server = start_server_here().await;
    let mut events = server.watch();
    // device-1's certificate, but a PREM proof made with another key.
    let proxy = start_proxy(server.addr, forged_device_proof()).await;
    let err = connect(proxy.addr, device_config()).await.err().expect("refused");
    assert_eq!(handshake_alert(&err), Some(AlertCode::DecryptError), "{err}");
    // The server logs the failure before it reports the connection's end.
    assert_eq!(
        next_ending(&mut events, Duration::from_secs(5)).await,
        Some((None, Ending::Alert(AlertCode::DecryptError)))
    );
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("handshake failed"))
        .expect("the failure is logged");
    assert!(line.contains("\"claimed\":\"device-1\""), "{line}");
    assert!(!text.contains("\"device\":\"device-1\""), "{text}");

    // A device that proves its key is named as the device.
    let mut good = connect(server.addr, device_config()).await.unwrap();
    good.send_text("proven").await.unwrap();
    good.close().await.unwrap();
    assert_eq!(
        next_ending(&mut events, Duration::from_secs(5)).await,
        Some((Some("device-1".to_owned()), Ending::Clean))
    );
    assert!(logs.text().contains("\"device\":\"device-1\""), "{}", logs.text());
    server.stop().await;
}

/// A text sent through a proxy applying `tamper` to its record: the
/// server refuses it with `bad_record_mac` and delivers nothing.
async fn a_tampered_text_is_refused(server: &crate::common::TestServer, tamper: Tamper) {
    let mut events = server.watch();
    let proxy = start_proxy(server.addr, tamper.clone()).await;
    let mut device = connect(proxy.addr, device_config()).await.unwrap();
    let err = device.send_text("secret").await.unwrap_err();
    assert_eq!(
        session_alert(&err),
        Some(AlertCode::BadRecordMac),
        "{tamper:?}: {err}"
    );
    let (texts, ending) = texts_until_closed(&mut events, Duration::from_secs(5)).await;
    assert_eq!(
        ending,
        Some(Ending::Alert(AlertCode::BadRecordMac)),
        "{tamper:?}"
    );
    assert!(texts.is_empty(), "{tamper:?}: {texts:?}");
}

#[tokio::test]
async fn tampered_record_is_detected_and_nothing_is_accepted() {
    let server = start_server_here().await;
    // Frame 3 is the SECX record; flip a bit in its ciphertext.
    let flip = Action::Flip {
        at: At::Start(20),
        mask: 0x01,
    };
    a_tampered_text_is_refused(&server, Tamper::up(3, flip)).await;
    server.stop().await;
}

#[tokio::test]
async fn tampered_tag_and_type_are_detected() {
    let server = start_server_here().await;
    let flip = Action::Flip {
        at: At::End(1),
        mask: 0x01,
    };
    a_tampered_text_is_refused(&server, Tamper::up(3, flip)).await;
    let retyped = Action::Rewrite(std::sync::Arc::new(|mut f: Frame| {
        f.kind = FrameKind(*b"IMGX");
        f
    }));
    a_tampered_text_is_refused(&server, Tamper::up(3, retyped)).await;
    server.stop().await;
}

#[tokio::test]
async fn replayed_record_is_detected() {
    let server = start_server_here().await;
    let mut events = server.watch();
    let proxy = start_proxy(server.addr, Tamper::up(3, Action::Duplicate)).await;
    let mut device = connect(proxy.addr, device_config()).await.unwrap();
    // The first copy is accepted, the replay fails authentication.
    device.send_text("pay 10").await.unwrap();
    let err = device.close().await.unwrap_err();
    assert_eq!(session_alert(&err), Some(AlertCode::BadRecordMac), "{err}");
    let (texts, ending) = texts_until_closed(&mut events, Duration::from_secs(5)).await;
    assert_eq!(ending, Some(Ending::Alert(AlertCode::BadRecordMac)));
    assert_eq!(texts, ["pay 10"], "delivered once, not twice");
    server.stop().await;
}

#[tokio::test]
async fn dropped_and_reordered_records_are_detected() {
    let server = start_server_here().await;
    let mut events = server.watch();
    // Device records: 3 = first SECX, 4 = second SECX (the device does not
    // wait for ACKs when pipelining raw sends, so send two before reading).
    for action in [Action::Drop, Action::SwapWithNext] {
        let tamper = Tamper::up(3, action);
        let proxy = start_proxy(server.addr, tamper.clone()).await;
        let stream = TcpStream::connect(proxy.addr).await.unwrap();
        let mut s = Session::connect(stream, device_config(), Duration::from_secs(10))
            .await
            .unwrap();
        for (i, text) in ["one", "two"].into_iter().enumerate() {
            s.feed(&Message::Secx(secured::message::Secx {
                stream: secured::message::StreamId(1 + 2 * i as u32),
                text: text.into(),
            }))
            .await
            .unwrap();
        }
        s.flush().await.unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match s.recv().await {
                    Ok(Message::Ack(_)) => continue,
                    other => return other,
                }
            }
        })
        .await
        .unwrap();
        assert!(
            matches!(
                outcome,
                Err(SessionError::PeerAlert(AlertCode::BadRecordMac))
            ),
            "{tamper:?}: {outcome:?}"
        );
        // Neither text is delivered: the first record the server sees is
        // out of sequence.
        let (texts, ending) = texts_until_closed(&mut events, Duration::from_secs(5)).await;
        assert_eq!(ending, Some(Ending::Alert(AlertCode::BadRecordMac)), "{tamper:?}");
        assert!(texts.is_empty(), "{tamper:?}: {texts:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn truncation_without_endd_is_reported_by_the_server() {
    let server = start_server_here().await;
    let mut events = server.watch();
    let mut device = connect(server.addr, device_config()).await.unwrap();
    device.send_text("then the cable is cut").await.unwrap();
    drop(device); // TCP close, no ENDD
    let (texts, ending) = texts_until_closed(&mut events, Duration::from_secs(5)).await;
    assert_eq!(texts, ["then the cable is cut"]);
    assert_eq!(ending, Some(Ending::Truncated));
    server.stop().await;
}

#[tokio::test]
async fn truncation_without_endd_is_reported_by_the_device() {
    // A server that completes the handshake, then vanishes without ENDD.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let s = Session::accept(
            sock,
            server_config(),
            secured::session::AcceptLimits::default(),
            std::future::pending(),
            |_| Ok(()),
        )
        .await
            .unwrap();
        drop(s);
    });
    let device = connect(addr, device_config()).await.unwrap();
    fake.await.unwrap();
    let err = device.close().await.unwrap_err();
    assert!(
        matches!(err, ClientError::Session(SessionError::Truncated)),
        "{err}"
    );
    assert!(err.to_string().contains("truncated"));
}

#[tokio::test]
async fn silent_client_is_dropped_at_the_handshake_timeout() {
    let server = start_server_with(server_config(), |s| {
        s.handshake_timeout = Duration::from_millis(300);
        // Only the handshake's limit can end it, not the first frame's.
        s.hello_timeout = Duration::from_secs(60);
    })
    .await;
    let mut events = server.watch();
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let mut framed = Framed::new(stream, FrameCodec::new());
    let frame = tokio::time::timeout(Duration::from_secs(5), framed.next())
        .await
        .expect("closed in time")
        .expect("an alert")
        .expect("a frame");
    assert_eq!(frame.kind, FrameKind::ALRT);
    assert_eq!(
        Message::decode(frame.kind, &frame.body).unwrap(),
        Message::Alert(AlertCode::Timeout)
    );
    assert!(framed.next().await.is_none(), "then the connection closes");
    assert_eq!(
        next_ending(&mut events, Duration::from_secs(5)).await,
        Some((None, Ending::Alert(AlertCode::Timeout)))
    );
    server.stop().await;
}

#[tokio::test]
async fn oversize_and_garbage_frames_get_alerts() {
    let server = start_server_here().await;
    // A length far above the limit: refused at the header.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, b"HELO\x7f\xff\xff\xff")
        .await
        .unwrap();
    let mut framed = Framed::new(stream, FrameCodec::new());
    let frame = framed.next().await.unwrap().unwrap();
    assert_eq!(
        Message::decode(frame.kind, &frame.body).unwrap(),
        Message::Alert(AlertCode::RecordOverflow)
    );

    // A HELO that does not decode.
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let mut framed = Framed::new(stream, FrameCodec::new());
    framed
        .send(Frame::new(FrameKind::HELO, [1u8, 1, 0, 1]))
        .await
        .unwrap();
    let frame = framed.next().await.unwrap().unwrap();
    assert_eq!(
        Message::decode(frame.kind, &frame.body).unwrap(),
        Message::Alert(AlertCode::DecodeError)
    );

    // The server still serves a good device afterwards.
    let mut device = connect(server.addr, device_config()).await.unwrap();
    device.send_text("still here").await.unwrap();
    device.close().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn text_over_the_limit_is_refused_before_sending() {
    let server = start_server_here().await;
    let mut device = connect(server.addr, device_config()).await.unwrap();
    let long = "x".repeat(secured::message::MAX_TEXT_LEN + 1);
    let err = device.send_text(&long).await.unwrap_err();
    assert!(
        matches!(err, ClientError::TextTooLong { len } if len == long.len()),
        "{err}"
    );
    let exact = "y".repeat(secured::message::MAX_TEXT_LEN);
    device.send_text(&exact).await.unwrap();
    device.close().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_self_signed_certificate_and_the_ca_certificate_are_refused_as_leaves() {
    let p = pki();
    // A self-signed certificate named like a device.
    let rogue = secured::pki::CertificateAuthority::generate(
        "device-1",
        2048,
        secured::pki::Validity::days_from_now(1),
        provider(),
    )
    .unwrap();
    let identity = secured::pki::Identity::from_der(
        rogue.cert_der().to_vec(),
        rogue.key_pkcs8_der(),
        provider(),
    )
    .unwrap();
    let server = start_server_here().await;
    let err = connect(server.addr, device_config_as_leaf(std::sync::Arc::new(identity)))
        .await
        .err()
        .expect("refused");
    assert_eq!(handshake_alert(&err), Some(AlertCode::UnknownCa), "{err}");

    // The real CA certificate, with the real CA key, presented by a device.
    let ca_identity =
        secured::pki::Identity::from_der(p.ca.cert_der().to_vec(), p.ca.key_pkcs8_der(), provider())
            .unwrap();
    let err = connect(server.addr, device_config_as_leaf(std::sync::Arc::new(ca_identity)))
        .await
        .err()
        .expect("refused");
    assert_eq!(handshake_alert(&err), Some(AlertCode::CertificateRole), "{err}");
    server.stop().await;

    // And presented by a server.
    let mut config = server_config();
    config.identity = std::sync::Arc::new(
        secured::pki::Identity::from_der(p.ca.cert_der().to_vec(), p.ca.key_pkcs8_der(), provider())
            .unwrap(),
    );
    let error = server_certificate_refused(config).await;
    assert!(matches!(error, CertError::IsCa), "{error}");
}
