//! The device side of the certificate lifecycle (proto-spec.md §14):
//! enrolling with a token, renewing over an authenticated session, and
//! checking what the server issued before a byte of it is kept.
//!
//! The device makes its key itself; the private key never leaves it. A
//! certificate the server sends is accepted only if it chains to the root
//! the device trusts (for enrollment: the root whose fingerprint the token
//! pins), names the device, and certifies the device's own key.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpStream;

use super::{ClientError, ClientSettings, DeviceClient};
use crate::crypto::token::{enroll_proof, token_key};
use crate::crypto::{CryptoProvider, RsaPrivateKey};
use crate::handshake::EnrollConfig;
use crate::message::{AlertCode, CertMsg, Enrq, Message, PROTOCOL_VERSION_3, Rnew, StreamId};
use crate::pki::{EnrollmentToken, Role, ServerName, TrustAnchor, build_request, verify_chain};
use crate::session::{IoLimits, Session, SessionError};

/// A certificate the server issued and the device checked.
pub struct IssuedCertificate {
    /// The certificate, DER.
    pub certificate: Vec<u8>,
    /// The certificates to send after it, nearest issuer first (the root
    /// left out).
    pub chain: Vec<Vec<u8>>,
    /// The root it chains to, DER.
    pub root: Vec<u8>,
    /// Its serial number, hex.
    pub serial_hex: String,
    /// End of its validity.
    pub not_after: SystemTime,
}

/// Checks a `CERT` from the server: it must chain to `root` through the
/// chain it carries, be a device certificate valid now for `name`, and
/// certify the key whose SubjectPublicKeyInfo is `spki_der`.
fn check_issued(
    msg: CertMsg,
    root: &TrustAnchor,
    name: &str,
    spki_der: &[u8],
) -> Result<IssuedCertificate, ClientError> {
    let bad = |reason: String| ClientError::BadCertificate { reason };
    let chain: Vec<Vec<u8>> = msg
        .chain
        .into_iter()
        .filter(|c| c.as_slice() != root.cert_der())
        .collect();
    let peer = verify_chain(
        root,
        &msg.certificate,
        &chain,
        Role::Device,
        None,
        SystemTime::now(),
    )
    .map_err(|e| bad(e.to_string()))?;
    if peer.name() != name {
        return Err(bad(format!(
            "it names {:?} instead of {name:?}",
            peer.name()
        )));
    }
    let (_, not_after) =
        crate::pki::serial_and_expiry(&msg.certificate).map_err(|e| bad(e.to_string()))?;
    if crate::pki::spki_of_cert(&msg.certificate).map_err(|e| bad(e.to_string()))? != spki_der {
        return Err(bad("it certifies another key than this device's".to_owned()));
    }
    Ok(IssuedCertificate {
        serial_hex: peer.serial_hex(),
        certificate: msg.certificate,
        chain,
        root: root.cert_der().to_vec(),
        not_after,
    })
}

/// What `enroll` needs.
pub struct EnrollRequest<'a> {
    /// Server address, host:port.
    pub addr: &'a str,
    /// The name the server's certificate must carry.
    pub server_name: ServerName,
    /// The token the operator gave.
    pub token: &'a EnrollmentToken,
    /// The device name to enroll as (the token's).
    pub name: &'a str,
    /// The device's new key.
    pub key: Arc<dyn RsaPrivateKey>,
    /// Its SubjectPublicKeyInfo, DER.
    pub spki_der: &'a [u8],
    /// The crypto backend.
    pub provider: &'static CryptoProvider,
    /// Time limits.
    pub settings: ClientSettings,
}

/// Enrolls (proto-spec.md §14.3): connects with the request in place of
/// a certificate, authenticates the server against the token's root,
/// proves the token and receives the certificate, checked before it is
/// returned. Nothing is written here.
///
/// # Errors
/// [`ClientError::Connect`], session errors (the server's refusal is a
/// [`SessionError::PeerAlert`] naming the token problem),
/// [`ClientError::BadCertificate`].
pub async fn enroll(req: EnrollRequest<'_>) -> Result<IssuedCertificate, ClientError> {
    let request_der =
        build_request(req.name, &req.key).map_err(|e| ClientError::BadCertificate {
            reason: e.to_string(),
        })?;
    let stream = tokio::time::timeout(req.settings.connect_timeout, TcpStream::connect(req.addr))
        .await
        .map_err(|_| ClientError::Connect {
            addr: req.addr.to_owned(),
            reason: "timed out".into(),
        })?
        .map_err(|e| ClientError::Connect {
            addr: req.addr.to_owned(),
            reason: e.to_string(),
        })?;
    crate::net::tune(&stream, req.settings.reply_timeout);
    let config = EnrollConfig {
        request_der: request_der.clone(),
        key: Arc::clone(&req.key),
        root_fingerprint: req.token.root_fingerprint,
        server_name: req.server_name,
        provider: req.provider,
        versions: &[PROTOCOL_VERSION_3],
    };
    let mut session =
        Session::connect_enroll(stream, config, req.settings.handshake_timeout).await?;
    session.set_limits(IoLimits::uniform(req.settings.reply_timeout));
    let key = token_key(&req.token.secret);
    let proof = enroll_proof(&key, session.transcript_hash(), &request_der);
    let stream_id = StreamId(1);
    session
        .send(&Message::Enrq(Enrq {
            stream: stream_id,
            token_id: req.token.id,
            proof,
        }))
        .await?;
    let msg = match session.recv().await? {
        Message::Cert(c) if c.stream == stream_id => c,
        other => {
            session.abort(AlertCode::UnexpectedMessage).await;
            return Err(SessionError::Unexpected(other.kind()).into());
        }
    };
    // The root the token pins comes with the chain: the one the handshake
    // already authenticated the server against.
    let root = msg
        .chain
        .iter()
        .find(|c| crate::crypto::hash::sha256(&[c]) == req.token.root_fingerprint)
        .ok_or_else(|| ClientError::BadCertificate {
            reason: "the chain lacks the root the token pins".to_owned(),
        })?;
    let root =
        TrustAnchor::from_der(root, req.provider).map_err(|e| ClientError::BadCertificate {
            reason: e.to_string(),
        })?;
    let issued = check_issued(msg, &root, req.name, req.spki_der);
    if issued.is_err() {
        session.abort(AlertCode::BadCertificate).await;
        return issued;
    }
    // The server closes after CERT: answer its ENDD.
    match session.recv().await {
        Ok(Message::Endd) => {
            let _ = session
                .finish_close(Duration::from_secs(5), std::future::pending())
                .await;
        }
        _ => session.abort(AlertCode::UnexpectedMessage).await,
    }
    issued
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> DeviceClient<S> {
    /// Renews this device's certificate (proto-spec.md §14.4) for `key`
    /// (its current key, or a new one) and checks what comes back against
    /// the device's root. Nothing is written here.
    ///
    /// # Errors
    /// [`ClientError::NeedsVersion3`] when the server cannot renew;
    /// session errors (the server's refusal is an alert);
    /// [`ClientError::BadCertificate`].
    pub async fn renew(
        &mut self,
        key: &Arc<dyn RsaPrivateKey>,
        spki_der: &[u8],
    ) -> Result<IssuedCertificate, ClientError> {
        if self.session.version() < PROTOCOL_VERSION_3 {
            return Err(ClientError::NeedsVersion3 {
                what: "renew certificates",
            });
        }
        let name = self.identity.name().to_owned();
        let request = build_request(&name, key).map_err(|e| ClientError::BadCertificate {
            reason: e.to_string(),
        })?;
        let stream = self.open_stream();
        self.session
            .send(&Message::Rnew(Rnew { stream, request }))
            .await?;
        let reply = self
            .recv_reply(self.settings.reply_timeout, "the renewed certificate")
            .await?;
        let msg = match reply {
            Message::Cert(c) if c.stream == stream => c,
            Message::Ack(a) if a.stream == stream => return Err(super::refused(a)),
            other => {
                return Err(self.fail(SessionError::Unexpected(other.kind())).await);
            }
        };
        let anchor = Arc::clone(&self.anchor);
        check_issued(msg, &anchor, &name, spki_der)
    }
}
