//! A minimal `tracing` subscriber for the server: one line per event, written to the bundle's
//! `log` FIFO (containerd copies it into its own log). Kept tiny on purpose: the idle shim's
//! memory budget is a few megabytes.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Writes formatted events to a file (the log FIFO).
pub struct LineLogger<W: std::io::Write + Send + 'static> {
    out: Mutex<W>,
    max: Level,
    next_span: AtomicU64,
}

impl<W: std::io::Write + Send + 'static> LineLogger<W> {
    /// A logger emitting events at `max` and more severe.
    pub fn new(out: W, max: Level) -> Self {
        LineLogger {
            out: Mutex::new(out),
            max,
            next_span: AtomicU64::new(1),
        }
    }
}

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

/// Formats one event line: `time=<unix secs.millis> level=<LEVEL> <message> k=v...`.
fn format_line(level: &Level, fields: &dyn Fn(&mut Line)) -> String {
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let mut line = Line(format!(
        "time={}.{:03} level={} shim=reaper",
        t.as_secs(),
        t.subsec_millis(),
        level
    ));
    fields(&mut line);
    line.0.push('\n');
    line.0
}

impl<W: std::io::Write + Send + 'static> Subscriber for LineLogger<W> {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        *m.level() <= self.max
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::from_level(self.max))
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed))
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let line = format_line(event.metadata().level(), &|l| event.record(l));
        if let Ok(mut out) = self.out.lock() {
            // A log line that cannot be written is dropped: logging never fails the shim.
            let _ = out.write_all(line.as_bytes());
        }
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_enabled_events_with_fields() {
        let buf = Buf::default();
        let logger = LineLogger::new(buf.clone(), Level::INFO);
        tracing::subscriber::with_default(logger, || {
            tracing::info!(id = "c1", pid = 42, "exited");
            tracing::debug!("hidden");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("level=INFO"), "{text}");
        assert!(text.contains(" exited id=\"c1\" pid=42"), "{text}");
    }
}
