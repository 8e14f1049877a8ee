//! Structured logs through `tracing`: readable text on a terminal, JSON
//! lines for journald and pipes. Everything goes to standard error, so
//! standard output stays free for command results.
//!
//! The JSON output is [`JsonLayer`]: one object per line, with the event's
//! fields as typed JSON values (numbers, booleans, strings), the fields of
//! the current span and of its parents flattened in, and `timestamp`
//! (RFC 3339, UTC), `level`, `priority` (the syslog severity) and `message`.
//! The command line's final error and its warnings go through
//! [`user_message`], so with `--log-format json` they are JSON lines too.

use std::io::{IsTerminal, Write};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// The log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, coloured when standard error is a terminal.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. `level` is a filter directive such as
/// `info` or `secured=debug`; `RUST_LOG`, when set, takes precedence.
/// Calling it twice is harmless (the second call does nothing).
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    match format {
        LogFormat::Text => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_ansi(std::io::stderr().is_terminal())
                .try_init();
        }
        LogFormat::Json => {
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(JsonLayer::new(std::io::stderr))
                .try_init();
        }
    }
}

/// The syslog severity of a level (RFC 5424: error 3, warning 4,
/// informational 6, debug 7), as journald's `PRIORITY`.
#[must_use]
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// A message from the command line itself to its user (its final error, a
/// warning), written to standard error in `format` whatever the log
/// filter: `error: …` or `warning: …` as text, or one JSON object with the
/// same keys as the log lines.
pub fn user_message(format: LogFormat, level: Level, message: &str) {
    let line = match format {
        LogFormat::Text => {
            let prefix = if level == Level::ERROR {
                "error"
            } else {
                "warning"
            };
            format!("{prefix}: {message}\n").into_bytes()
        }
        LogFormat::Json => json_line(level, message, Map::new()),
    };
    let _ = std::io::stderr().lock().write_all(&line);
}

/// One JSON object and a newline: `fields`, then the standard keys.
fn json_line(level: Level, message: &str, mut fields: Map<String, Value>) -> Vec<u8> {
    let timestamp = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    fields.insert("timestamp".into(), Value::String(timestamp));
    fields.insert("level".into(), Value::String(level.as_str().to_owned()));
    fields.insert("priority".into(), Value::from(priority(level)));
    fields.insert("message".into(), Value::String(message.to_owned()));
    // serde_json escapes every control character, so a message with a
    // newline in it still makes one line.
    let mut line = serde_json::to_vec(&Value::Object(fields)).unwrap_or_default();
    line.push(b'\n');
    line
}

/// A `tracing` layer that writes each event as one JSON object per line to
/// the writer `W` makes.
#[derive(Debug)]
pub struct JsonLayer<W> {
    make_writer: W,
}

impl<W> JsonLayer<W>
where
    W: for<'w> MakeWriter<'w> + 'static,
{
    /// A layer writing to what `make_writer` makes (e.g. `std::io::stderr`).
    pub fn new(make_writer: W) -> Self {
        Self { make_writer }
    }
}

/// The fields recorded on a span so far, kept in the span's extensions.
#[derive(Debug, Default)]
struct SpanFields(Map<String, Value>);

/// Collects field values as typed JSON values.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl JsonVisitor<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        self.0.insert(field.name().to_owned(), value);
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // NaN and the infinities have no JSON number: they become null.
        self.put(field, Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        let v = i64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from);
        self.put(field, v);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        let v = u64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from);
        self.put(field, v);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // `%value` arrives here as a Debug that prints its Display, and the
        // message as `fmt::Arguments`: both without quotes. `?value` is
        // Debug, quotes included.
        self.put(field, Value::String(format!("{value:?}")));
    }
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = SpanFields::default();
        attrs.record(&mut JsonVisitor(&mut fields.0));
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            values.record(&mut JsonVisitor(&mut fields.0));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        // Outermost span first, so an inner span's field wins over an
        // outer one of the same name, and the event's own fields over both.
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(span_fields) = span.extensions().get::<SpanFields>() {
                    fields.extend(span_fields.0.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        event.record(&mut JsonVisitor(&mut fields));
        let message = match fields.remove("message") {
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let metadata = event.metadata();
        let line = json_line(*metadata.level(), &message, fields);
        // One write per line, so lines from several threads do not mix.
        let _ = self.make_writer.make_writer_for(metadata).write_all(&line);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::{debug, error, info, info_span, trace, warn};
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// A shared buffer the layer writes into.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Runs `f` with a JSON layer installed and returns its output, parsed
    /// line by line (asserting that every line is one JSON object).
    fn capture(f: impl FnOnce()) -> Vec<Map<String, Value>> {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber =
            tracing_subscriber::registry().with(JsonLayer::new(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, f);
        let out = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(out.is_empty() || out.ends_with('\n'), "{out:?}");
        out.lines()
            .map(|line| match serde_json::from_str(line) {
                Ok(Value::Object(map)) => map,
                other => panic!("not one JSON object: {line:?} ({other:?})"),
            })
            .collect()
    }

    #[test]
    fn values_keep_their_types() {
        let lines = capture(|| {
            info!(
                count = 3u64,
                delta = -2i64,
                big = u128::MAX,
                ok = true,
                ratio = 0.5,
                name = "pic.png",
                shown = %"display, not debug",
                debugged = ?"quoted",
                error = &std::io::Error::other("disk full") as &(dyn std::error::Error + 'static),
                "hello {}", 42
            );
        });
        assert_eq!(lines.len(), 1);
        let l = &lines[0];
        assert_eq!(l["count"], Value::from(3));
        assert_eq!(l["delta"], Value::from(-2));
        assert_eq!(l["big"], Value::String(u128::MAX.to_string()));
        assert_eq!(l["ok"], Value::Bool(true));
        assert_eq!(l["ratio"], Value::from(0.5));
        assert_eq!(l["name"], "pic.png");
        assert_eq!(l["shown"], "display, not debug");
        assert_eq!(l["debugged"], "\"quoted\"");
        assert_eq!(l["error"], "disk full");
        assert_eq!(l["message"], "hello 42");
        assert_eq!(l["level"], "INFO");
        assert_eq!(l["priority"], Value::from(6));
        // RFC 3339 in UTC: 2026-01-02T03:04:05(.fraction)Z.
        let ts = l["timestamp"].as_str().unwrap();
        let shape: String = ts
            .chars()
            .take(19)
            .map(|c| if c.is_ascii_digit() { '9' } else { c })
            .collect();
        assert_eq!(shape, "9999-99-99T99:99:99", "{ts}");
        assert!(ts.ends_with('Z'), "{ts}");
    }

    #[test]
    fn span_fields_are_flattened_in() {
        let lines = capture(|| {
            let conn = info_span!(
                "conn",
                peer = "127.0.0.1:5000",
                device = tracing::field::Empty,
                shared = "outer"
            );
            let _entered = conn.enter();
            info!("before the device is known");
            conn.record("device", "device-1");
            let stream = info_span!("stream", stream = 7u64, shared = "inner");
            stream.in_scope(|| warn!(shared = "event", "inside"));
            stream.in_scope(|| warn!("inside again"));
        });
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["peer"], "127.0.0.1:5000");
        assert!(!lines[0].contains_key("device"), "{:?}", lines[0]);
        for l in &lines[1..] {
            assert_eq!(l["peer"], "127.0.0.1:5000");
            assert_eq!(l["device"], "device-1");
            assert_eq!(l["stream"], Value::from(7));
        }
        assert_eq!(lines[1]["shared"], "event");
        assert_eq!(lines[2]["shared"], "inner");
    }

    #[test]
    fn one_line_per_event() {
        let lines = capture(|| {
            info!(text = "two\nlines", "first\nevent");
            info!("second");
        });
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["message"], "first\nevent");
        assert_eq!(lines[0]["text"], "two\nlines");
        assert_eq!(lines[1]["message"], "second");
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        let lines = capture(|| {
            error!("e");
            warn!("w");
            info!("i");
            debug!("d");
            trace!("t");
        });
        let got: Vec<(String, u64)> = lines
            .iter()
            .map(|l| {
                (
                    l["level"].as_str().unwrap().to_owned(),
                    l["priority"].as_u64().unwrap(),
                )
            })
            .collect();
        let expected = [
            ("ERROR", 3),
            ("WARN", 4),
            ("INFO", 6),
            ("DEBUG", 7),
            ("TRACE", 7),
        ];
        assert_eq!(
            got,
            expected.map(|(l, p)| (l.to_owned(), p)).to_vec(),
            "{lines:?}"
        );
    }

    #[test]
    fn user_messages_have_the_log_keys() {
        let line = json_line(Level::ERROR, "cannot connect to 127.0.0.1:1", Map::new());
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let Value::Object(map) = serde_json::from_slice(&line).unwrap() else {
            panic!("not an object");
        };
        assert_eq!(map["level"], "ERROR");
        assert_eq!(map["priority"], Value::from(3));
        assert_eq!(map["message"], "cannot connect to 127.0.0.1:1");
        assert!(map["timestamp"].is_string());
    }
}
