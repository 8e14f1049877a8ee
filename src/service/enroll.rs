//! Enrollment (proto-spec.md §14.3): a device without a certificate
//! redeems a one-time token for one.
//!
//! The session was established by the enrollment handshake: the server is
//! authenticated, the device proved it holds the key of the request in its
//! `HELO` ([`ProvenRequest`]), and nothing else about it is known. Its only
//! allowed message is one `ENRQ`; it gets a certificate when the token's
//! proof verifies over this session's transcript and request, the request
//! names the token's device, and the token is unused and unexpired, in that
//! order. The token is marked used in the same atomic step that decides
//! the race between two redemptions, before anything is signed. Every
//! refusal is its own alert, and nothing is issued.

use std::time::{Duration, SystemTime};

use tokio::net::TcpStream;
use tracing::{info, warn};

use super::Ending;
use crate::crypto::token::verify_enroll_proof;
use crate::index::{Index, Redeem, now_ms};
use crate::message::{AlertCode, CertMsg, Enrq, Message};
use crate::pki::{CertificateAuthority, ProvenRequest, Role, TrustAnchor, Validity};
use crate::session::{ENROLLMENT_SESSION_LIMIT, Session};

/// What enrollment needs from the server.
pub struct EnrollContext<'a> {
    /// The issuing CA, when the server holds its key.
    pub issuer: Option<&'a CertificateAuthority>,
    /// The root the device pinned: sent last in the chain.
    pub root: &'a TrustAnchor,
    /// Lifetime of the certificates issued.
    pub validity_days: u32,
    /// Tokens and issued certificates.
    pub index: &'a Index,
}

/// An issued certificate: what the device gets and what the index keeps.
pub(crate) struct Issued {
    pub(crate) certificate: Vec<u8>,
    pub(crate) serial_hex: String,
    pub(crate) not_after_ms: u64,
}

/// Signs a device certificate for `request` with the issuing CA.
pub(crate) fn issue(
    issuer: &CertificateAuthority,
    request: &crate::pki::CertRequest,
    validity_days: u32,
) -> Result<Issued, crate::pki::PkiError> {
    let certificate = issuer.issue_for_key(
        Role::Device,
        request.name(),
        &[],
        request.spki_der(),
        Validity::days_from_now(validity_days),
    )?;
    let (serial_hex, not_after) = crate::pki::serial_and_expiry(&certificate)?;
    Ok(Issued {
        certificate,
        serial_hex,
        not_after_ms: system_ms(not_after),
    })
}

pub(crate) fn system_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Serves an enrollment session to its end; returns how it ended.
pub async fn serve(
    session: &mut Session<TcpStream, ProvenRequest>,
    cx: &EnrollContext<'_>,
) -> Ending {
    let name = session.peer().name().to_owned();
    let enrq = match session.recv_within(ENROLLMENT_SESSION_LIMIT).await {
        Ok(Message::Enrq(m)) => m,
        Ok(Message::Endd) => {
            let _ = session.close(Duration::from_secs(5)).await;
            return Ending::Clean;
        }
        Ok(other) => {
            warn!(kind = %other.kind(), "an enrolling device sent something other than ENRQ");
            return refuse(session, AlertCode::UnexpectedMessage).await;
        }
        Err(e) => return Ending::of(&e),
    };
    match redeem(session, &enrq, cx).await {
        Ok(issued) => {
            info!(device = name, serial = %issued.serial_hex, "enrolled");
            let mut chain = cx.issuer.map(|ca| ca.chain().to_vec()).unwrap_or_default();
            chain.push(cx.root.cert_der().to_vec());
            let reply = Message::Cert(CertMsg {
                stream: enrq.stream,
                certificate: issued.certificate,
                chain,
            });
            if let Err(e) = session.send(&reply).await {
                return Ending::of(&e);
            }
            match session.close(Duration::from_secs(10)).await {
                Ok(()) => Ending::Clean,
                Err(e) => Ending::of(&e),
            }
        }
        Err(code) => {
            warn!(device = name, alert = %code, "enrollment refused");
            refuse(session, code).await
        }
    }
}

/// The checks of proto-spec.md §14.3, in order; the certificate on
/// success.
async fn redeem(
    session: &Session<TcpStream, ProvenRequest>,
    enrq: &Enrq,
    cx: &EnrollContext<'_>,
) -> Result<Issued, AlertCode> {
    if !enrq.stream.is_device_initiated() {
        return Err(AlertCode::IllegalParameter);
    }
    let Some(issuer) = cx.issuer else {
        return Err(AlertCode::EnrollmentUnavailable);
    };
    let request = session.peer();
    let token = cx
        .index
        .token(&enrq.token_id)
        .await
        .map_err(|e| internal(&e))?
        .ok_or(AlertCode::BadToken)?;
    if !verify_enroll_proof(
        &token.token_key,
        session.transcript_hash(),
        request.der(),
        &enrq.proof,
    ) {
        return Err(AlertCode::BadToken);
    }
    if token.name != request.name() {
        return Err(AlertCode::NameMismatch);
    }
    let now = now_ms();
    if token.used_at_ms.is_some() {
        return Err(AlertCode::TokenUsed);
    }
    if token.expires_at_ms <= now {
        return Err(AlertCode::TokenExpired);
    }
    match cx
        .index
        .redeem_token(&enrq.token_id, now)
        .await
        .map_err(|e| internal(&e))?
    {
        Redeem::Redeemed => {}
        Redeem::AlreadyUsed => return Err(AlertCode::TokenUsed),
        Redeem::Expired => return Err(AlertCode::TokenExpired),
        Redeem::Unknown => return Err(AlertCode::BadToken),
    }
    let issued = issue(issuer, request, cx.validity_days).map_err(|e| internal(&e))?;
    cx.index
        .record_issued(
            &issued.serial_hex,
            request.name(),
            issued.not_after_ms,
            now,
            "enroll",
            Some(&enrq.token_id),
        )
        .await
        .map_err(|e| internal(&e))?;
    Ok(issued)
}

fn internal(e: &dyn std::fmt::Display) -> AlertCode {
    tracing::error!(error = %e, "enrollment failed on this side");
    AlertCode::InternalError
}

async fn refuse(session: &mut Session<TcpStream, ProvenRequest>, code: AlertCode) -> Ending {
    session.abort(code).await;
    Ending::Alert(code)
}
