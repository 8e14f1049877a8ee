//! `SECX`: texts from devices (proto-spec.md §8.2).
//!
//! Authorisation: any authenticated device may send texts; the sender is
//! the device its certificate and key proof name, never a name it sends.
//! The text itself is not logged at `info`: the log line carries the
//! sender, the length and a SHA-256, so logs can correlate a text without
//! holding it. At `debug`, the start of the text is logged too.

use std::sync::Arc;

use super::{Context, Event, Reply, ack};
use crate::crypto::hash::sha256;
use crate::message::{AckStatus, Secx};

/// How much of a text a `debug` log line shows, in bytes.
const DEBUG_PREVIEW: usize = 120;

/// Accepts a text whose stream id has been checked.
pub(super) fn handle(secx: Secx, cx: &Context<'_>) -> Reply {
    let digest = sha256(&[secx.text.as_bytes()]);
    tracing::info!(
        stream = secx.stream.0,
        bytes = secx.text.len(),
        sha256 = %hex::encode(digest),
        "text received"
    );
    tracing::debug!(stream = secx.stream.0, text = preview(&secx.text), "text");
    cx.events.publish(Event::Text {
        device: cx.device.name().to_owned(),
        stream: secx.stream,
        text: Arc::from(secx.text),
    });
    Reply::Send(ack(secx.stream, AckStatus::Ok, ""))
}

/// The start of `text`, cut at a character boundary.
fn preview(text: &str) -> &str {
    let mut end = text.len().min(DEBUG_PREVIEW);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::preview;

    #[test]
    fn previews_are_cut_between_characters() {
        assert_eq!(preview("short"), "short");
        let long = "é".repeat(100);
        let p = preview(&long);
        assert!(p.len() <= super::DEBUG_PREVIEW && p.len() >= super::DEBUG_PREVIEW - 1);
        assert!(p.chars().all(|c| c == 'é'));
    }
}
