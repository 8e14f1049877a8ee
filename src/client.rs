//! The device API: connect, authenticate, send, close.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::handshake::DeviceConfig;
use crate::message::{Ack, AckStatus, AlertCode, MAX_TEXT_LEN, Message, Secx, StreamId};
use crate::pki::VerifiedPeer;
use crate::session::{DEFAULT_HANDSHAKE_TIMEOUT, Session, SessionError};

/// Time limits of a device.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Limit for the TCP connection.
    pub connect_timeout: Duration,
    /// Limit for the handshake.
    pub handshake_timeout: Duration,
    /// Limit for each answer from the server.
    pub reply_timeout: Duration,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            reply_timeout: Duration::from_secs(30),
        }
    }
}

/// Errors of a device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The TCP connection failed.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The session failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The text is over the protocol limit.
    #[error("the text is {len} bytes long; the limit is {MAX_TEXT_LEN} bytes")]
    TextTooLong {
        /// Its length.
        len: usize,
    },
    /// The server answered with a status other than `ok`.
    #[error("the server refused stream {stream}: {status}{}", if reason.is_empty() { String::new() } else { format!(" ({reason})") })]
    Refused {
        /// The stream.
        stream: StreamId,
        /// The status.
        status: AckStatus,
        /// The server's reason, if any.
        reason: String,
    },
}

/// An authenticated device session.
pub struct DeviceClient<S> {
    session: Session<S>,
    last_stream: Option<StreamId>,
    settings: ClientSettings,
}

impl DeviceClient<TcpStream> {
    /// Connects to `addr` and runs the handshake.
    ///
    /// # Errors
    /// [`ClientError::Connect`] or [`ClientError::Session`].
    pub async fn connect(
        addr: &str,
        config: DeviceConfig,
        settings: ClientSettings,
    ) -> Result<Self, ClientError> {
        let connect_err = |reason: String| ClientError::Connect {
            addr: addr.to_owned(),
            reason,
        };
        let stream = tokio::time::timeout(settings.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| connect_err("timed out".into()))?
            .map_err(|e| connect_err(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        Self::handshake(stream, config, settings).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> DeviceClient<S> {
    /// Runs the handshake over an existing stream.
    ///
    /// # Errors
    /// [`ClientError::Session`].
    pub async fn handshake(
        io: S,
        config: DeviceConfig,
        settings: ClientSettings,
    ) -> Result<Self, ClientError> {
        let session = Session::connect(io, config, settings.handshake_timeout).await?;
        Ok(Self {
            session,
            last_stream: None,
            settings,
        })
    }

    /// The server, as its certificate proved it.
    #[must_use]
    pub fn server(&self) -> &VerifiedPeer {
        self.session.peer()
    }

    fn open_stream(&mut self) -> StreamId {
        let id = Session::<S>::next_device_stream(self.last_stream);
        self.last_stream = Some(id);
        id
    }

    /// Sends a text message and waits for the server's `ACK_`.
    ///
    /// # Errors
    /// [`ClientError::TextTooLong`] before anything is sent;
    /// [`ClientError::Refused`] if the server does not accept it.
    pub async fn send_text(&mut self, text: &str) -> Result<Ack, ClientError> {
        if text.len() > MAX_TEXT_LEN {
            return Err(ClientError::TextTooLong { len: text.len() });
        }
        let stream = self.open_stream();
        self.session
            .send(&Message::Secx(Secx {
                stream,
                text: text.to_owned(),
            }))
            .await?;
        self.await_ack(stream).await
    }

    /// Waits for the `ACK_` of `stream`.
    async fn await_ack(&mut self, stream: StreamId) -> Result<Ack, ClientError> {
        let timeout = self.settings.reply_timeout;
        let msg = tokio::time::timeout(timeout, self.session.recv())
            .await
            .map_err(|_| SessionError::Timeout {
                after: timeout,
                waiting_for: "the server's ACK_",
            })??;
        match msg {
            Message::Ack(ack) if ack.stream == stream => {
                if ack.status == AckStatus::Ok {
                    Ok(ack)
                } else {
                    Err(ClientError::Refused {
                        stream,
                        status: ack.status,
                        reason: String::from_utf8_lossy(&ack.detail).into_owned(),
                    })
                }
            }
            other => {
                let kind = other.kind();
                self.session.abort(AlertCode::UnexpectedMessage).await;
                Err(SessionError::Unexpected(kind).into())
            }
        }
    }

    /// Ends the session with `ENDD` in both directions.
    ///
    /// # Errors
    /// [`ClientError::Session`] if the server does not close cleanly.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.session.close(self.settings.reply_timeout).await?;
        Ok(())
    }
}
