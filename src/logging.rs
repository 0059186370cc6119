//! tracing on stderr: `2026-11-22T10:00:00Z  INFO [cleanup] message` lines, or JSON lines.
//! The level comes from `-v`/`-q`, else `LOG_LEVEL`, else info; other crates log warnings only.

use crate::cli::{GlobalArgs, LogFormat};
use std::fmt;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// The level name for `g` and `LOG_LEVEL`.
pub fn level(g: &GlobalArgs, env_level: Option<String>) -> &'static str {
    const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
    let base = env_level
        .map(|l| l.trim().to_ascii_lowercase())
        .and_then(|l| {
            let l = if l == "warning" { "warn".to_string() } else { l };
            LEVELS.iter().position(|x| *x == l)
        })
        .unwrap_or(2) as i32;
    let i = (base + g.verbose as i32 - g.quiet as i32).clamp(0, 4);
    LEVELS[i as usize]
}

/// Install the subscriber. Lines go through a buffered writer on its own thread, flushed
/// whenever it has drained what was logged (lossless: a
/// full buffer waits); keep the guard until the end of `main` so everything is flushed.
pub fn init(g: &GlobalArgs) -> tracing_appender::non_blocking::WorkerGuard {
    let lvl = level(g, std::env::var("LOG_LEVEL").ok());
    let filter = EnvFilter::new(format!("warn,cleanup={lvl},sweep={lvl}"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::BufWriter::with_capacity(1 << 16, std::io::stderr()));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    let _ = match g.log_format {
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
        LogFormat::Text => builder.event_format(CleanupFormat).try_init(),
    };
    guard
}

/// `time LEVEL [target] message fields`.
struct CleanupFormat;

impl<S, N> FormatEvent<S, N> for CleanupFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        let level = match *meta.level() {
            Level::ERROR => "ERROR",
            Level::WARN => "WARN ",
            Level::INFO => "INFO ",
            Level::DEBUG => "DEBUG",
            Level::TRACE => "TRACE",
        };
        let target = meta.target().split("::").next().unwrap_or("sweep");
        // A field whose formatting logs (re-entering on this thread) gets a line of its own.
        LINE.with(|cell| match cell.try_borrow_mut() {
            Ok(mut line) => line.write(&mut w, level, target, event),
            Err(_) => {
                let mut fresh = Line::NEW;
                fresh.write(&mut w, level, target, event)
            }
        })
    }
}

/// Per thread: the last second written and its text (a run logs a line per item: formatting
/// the time each time was a tenth of a line's cost), and a buffer for the fields.
struct Line {
    second: i64,
    stamp: String,
    fields: String,
}

impl Line {
    const NEW: Line = Line { second: i64::MIN, stamp: String::new(), fields: String::new() };

    fn write(&mut self, w: &mut Writer<'_>, level: &str, target: &str, event: &Event<'_>) -> fmt::Result {
        let now = chrono::Utc::now();
        if self.second != now.timestamp() {
            self.second = now.timestamp();
            self.stamp = now.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        }
        self.fields.clear();
        event.record(&mut Fields { out: &mut self.fields, first: true });
        write!(w, "{} {level} [{target}] ", self.stamp)?;
        write_sanitized(w, &self.fields)?;
        writeln!(w)
    }
}

thread_local! {
    static LINE: std::cell::RefCell<Line> = const { std::cell::RefCell::new(Line::NEW) };
}

/// An event's fields as `message key=value …`.
struct Fields<'a> {
    out: &'a mut String,
    first: bool,
}

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        use fmt::Write;
        // Where a `log` record came from (bridged by tracing-log): not part of its line.
        if field.name().starts_with("log.") {
            return;
        }
        if !std::mem::take(&mut self.first) {
            self.out.push(' ');
        }
        let _ = if field.name() == "message" {
            write!(self.out, "{value:?}")
        } else {
            write!(self.out, "{}={value:?}", field.name())
        };
    }
}

/// `s` with the control characters written as escapes: those a terminal would act on (ESC,
/// BEL, BS, FF, DEL, C1 controls, as tracing's own formatter escapes them), and also line
/// breaks and the other C0 controls but tab, so that a file name holding a newline cannot
/// forge a log line of its own. Written in one piece when there are none (a file name is the
/// usual content of a line).
fn write_sanitized(w: &mut impl fmt::Write, s: &str) -> fmt::Result {
    // Each of those characters starts with one of these bytes in UTF-8 (C1: 0xC2 0x80..=0x9F).
    if !s.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f || b == 0xc2) {
        return w.write_str(s);
    }
    for ch in s.chars() {
        match ch {
            '\n' => w.write_str("\\n")?,
            '\r' => w.write_str("\\r")?,
            '\t' => w.write_char(ch)?,
            ch if (ch as u32) < 0x20 || ch == '\x7f' => write!(w, "\\x{:02x}", ch as u32)?,
            ch if ('\u{80}'..='\u{9f}').contains(&ch) => write!(w, "\\u{{{:x}}}", ch as u32)?,
            ch => w.write_char(ch)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::CleanupFormat;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_escapes_what_a_terminal_would_act_on_and_keeps_the_rest() {
        let out = Captured::default();
        let w = out.clone();
        let sub = tracing_subscriber::fmt().with_writer(move || w.clone()).event_format(CleanupFormat).finish();
        tracing::subscriber::with_default(sub, || {
            tracing::info!(target: "cleanup", "Deleted file {} size=1.0 KiB", "media:a\x1b[31mb\u{9b}c\x07.jpg");
            tracing::warn!(target: "cleanup", n = 3, "Skipped über-ünïcode");
            tracing::info!(target: "cleanup", "second line in the same second");
            tracing::info!(target: "cleanup", "Deleted file {}", "media:x.jpg\n2026-01-01T00:00:00Z INFO  [cleanup] forged\r");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "a name with a line break is one line: {text}");
        assert!(
            lines[3].ends_with("Deleted file media:x.jpg\\n2026-01-01T00:00:00Z INFO  [cleanup] forged\\r"),
            "{text}"
        );
        assert!(
            lines[0].ends_with(" INFO  [cleanup] Deleted file media:a\\x1b[31mb\\u{9b}c\\x07.jpg size=1.0 KiB"),
            "{text}"
        );
        assert!(lines[1].ends_with(" WARN  [cleanup] Skipped über-ünïcode n=3"), "{text}");
        assert!(
            !text.contains('\x1b') && !text.contains('\u{9b}') && !text.contains('\x07') && !text.contains('\r'),
            "{text}"
        );
        for l in &lines {
            let stamp = l.split(' ').next().unwrap();
            assert!(chrono::DateTime::parse_from_rfc3339(stamp).is_ok() && stamp.ends_with('Z'), "{l}");
        }
    }
}
