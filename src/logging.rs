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
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        let level = match *meta.level() {
            Level::ERROR => "ERROR",
            Level::WARN => "WARN ",
            Level::INFO => "INFO ",
            Level::DEBUG => "DEBUG",
            Level::TRACE => "TRACE",
        };
        let target = meta.target().split("::").next().unwrap_or("sweep");
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
        write!(w, "{now} {level} [{target}] ")?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}
