//! What a connection receives, byte for byte.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use secured::frame::{FrameCodec, FrameKind};
use secured::handshake::DeviceStart;
use secured::testkit::pki;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// A plaintext `ALRT unavailable` (100) on the wire.
pub const ALRT_UNAVAILABLE: &[u8] = b"ALRT\0\0\0\x02\0\x64";

/// A plaintext `ALRT timeout` (90) on the wire.
pub const ALRT_TIMEOUT: &[u8] = b"ALRT\0\0\0\x02\0\x5a";

/// Reads until the peer closes (at most `within`; panics if it does not):
/// the bytes received, and how the reading ended (`Ok` at a clean end of
/// the stream, the error of a reset).
pub async fn read_until_closed(
    stream: &mut TcpStream,
    within: Duration,
) -> (Vec<u8>, std::io::Result<()>) {
    let mut got = Vec::new();
    let ended = tokio::time::timeout(within, stream.read_to_end(&mut got))
        .await
        .unwrap_or_else(|_| panic!("the peer did not close the connection within {within:?}"));
    (got, ended.map(drop))
}

/// Sends the test device's `HELO` on `stream` and reads the server's (at
/// most five seconds): the connection is then in its handshake, and the
/// device pauses there.
pub async fn exchange_helos(stream: TcpStream) -> Framed<TcpStream, FrameCodec> {
    let mut framed = Framed::new(stream, FrameCodec::new());
    let (_state, helo) = DeviceStart::new(pki().device_config())
        .start()
        .expect("the device HELO");
    framed.send(helo).await.expect("send the HELO");
    let reply = tokio::time::timeout(Duration::from_secs(5), framed.next())
        .await
        .expect("an answer in time")
        .expect("a frame, not the end of the connection")
        .expect("a frame");
    assert_eq!(reply.kind, FrameKind::HELO, "{reply:?}");
    framed
}
