//! Logging for the `courier` binary: text or JSON lines on stderr, colour
//! only on a terminal, and repeated lines folded.
//!
//! **Folding.** A place in the code (a tracing callsite) that logs at
//! `info` or above writes its first [`BURST`] lines of a minute; the rest
//! of that minute are counted, not written, and when the minute is over
//! one line says how many there were ("… 30,859 more times in the last
//! minute") with the last one's message. So a flood (a pool that cannot
//! hand out connections fast enough, a stop that hands 30,000 tasks back)
//! costs eleven lines a minute, not one per task, and nothing is hidden
//! without a count. `debug` and `trace` lines, asked for explicitly, are
//! never folded.
//!
//! Why our own filter and not `tracing-throttle`: that crate keys its
//! limits on the event's field values by default (each task id is a new
//! key, so a per-task flood is never folded) and reports folded counts
//! through its own metrics; what is needed here is one key per callsite
//! and the count in the log itself, which is ~100 lines on
//! `tracing-subscriber`'s per-layer [`Filter`].

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::FilterExt as _;
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line an event (colour only on a terminal).
    #[default]
    Text,
    /// One JSON object a line: `timestamp`, `level`, `target`, `fields`, `span`, `spans`.
    Json,
}

/// Lines one callsite writes in a window before the rest are folded.
pub const BURST: u32 = 10;
/// The window over which lines are counted.
pub const WINDOW: Duration = Duration::from_secs(60);
/// The target of the lines that report folded ones (never folded).
const FOLDED_TARGET: &str = "courier::log";

/// One callsite's window.
struct Window {
    started: Instant,
    written: u32,
    folded: u64,
    level: Level,
    target: &'static str,
    /// The message of the last folded line.
    message: String,
}

/// The folded lines of every callsite, shared by the filter and the
/// reporter.
#[derive(Default)]
struct Folds {
    windows: Mutex<HashMap<Identifier, Window>>,
}

impl Folds {
    /// Whether this event is written; counts it if not.
    fn admit(&self, event: &Event<'_>, now: Instant) -> bool {
        let meta = event.metadata();
        if *meta.level() > Level::INFO || meta.target() == FOLDED_TARGET {
            return true;
        }
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let w = windows.entry(meta.callsite()).or_insert_with(|| Window {
            started: now,
            written: 0,
            folded: 0,
            level: *meta.level(),
            target: meta.target(),
            message: String::new(),
        });
        if now.duration_since(w.started) >= WINDOW && w.folded == 0 {
            // A quiet window ends without a report.
            w.started = now;
            w.written = 0;
        }
        if w.written < BURST {
            w.written += 1;
            return true;
        }
        w.folded += 1;
        w.message.clear();
        event.record(&mut Message(&mut w.message));
        false
    }

    /// Takes the windows that are over (or all, when `all`) and have
    /// folded lines: (level, target, count, message, seconds).
    fn take(&self, now: Instant, all: bool) -> Vec<(Level, &'static str, u64, String, u64)> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for w in windows.values_mut() {
            let over = now.duration_since(w.started) >= WINDOW;
            if w.folded > 0 && (over || all) {
                let secs = now.duration_since(w.started).as_secs().max(1);
                out.push((
                    w.level,
                    w.target,
                    w.folded,
                    std::mem::take(&mut w.message),
                    secs,
                ));
                w.folded = 0;
                w.written = 0;
                w.started = now;
            }
        }
        out
    }

    /// Writes one line for each folded callsite taken.
    fn report(&self, now: Instant, all: bool) {
        for (level, target, n, message, secs) in self.take(now, all) {
            let text =
                format!("{message} ({n} more times in the last {secs} s, not written one by one)");
            match level {
                Level::ERROR => {
                    tracing::error!(target: FOLDED_TARGET, folded = n, from = target, "{text}")
                }
                Level::WARN => {
                    tracing::warn!(target: FOLDED_TARGET, folded = n, from = target, "{text}")
                }
                _ => tracing::info!(target: FOLDED_TARGET, folded = n, from = target, "{text}"),
            }
        }
    }
}

/// Collects an event's `message` field (or, without one, its fields).
struct Message<'a>(&'a mut String);

impl Visit for Message<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
}

/// The per-layer filter that folds repeated lines.
struct Fold(Arc<Folds>);

impl<S: Subscriber> Filter<S> for Fold {
    fn enabled(&self, _: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _: &Context<'_, S>) -> bool {
        self.0.admit(event, Instant::now())
    }
}

static FOLDS: OnceLock<Arc<Folds>> = OnceLock::new();

/// Installs the process's logger: `filter` in tracing's `EnvFilter` syntax
/// (an invalid one falls back to `info`, said on stderr), `format`, lines
/// on stderr, colour only when stderr is a terminal and `NO_COLOR` is not
/// set. Folded lines are reported by a background thread each second, and
/// by [`flush`].
pub fn init(filter: &str, format: LogFormat, otlp: Option<(&str, &str)>) -> Result<(), String> {
    let env = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("courier: log filter {filter:?} is not valid ({e}); using `info`");
        EnvFilter::new("info")
    });
    let folds = FOLDS.get_or_init(Arc::default).clone();
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let (text, json) = match format {
        LogFormat::Text => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(ansi),
            ),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr)
                    .with_current_span(true)
                    .with_span_list(false),
            ),
        ),
    };
    // The log filter (`--log`) and the folding are the log lines' own
    // (per-layer) filters, so that the spans exported with `--otlp` do not
    // depend on the log level: those are every span at `info` and above.
    // Only one of the two line layers exists.
    let (text_filter, json_filter) = match format {
        LogFormat::Text => (Some(env.and(Fold(folds.clone()))), None),
        LogFormat::Json => (None, Some(env.and(Fold(folds.clone())))),
    };
    let registry = tracing_subscriber::registry()
        .with(text.zip(text_filter).map(|(l, f)| l.with_filter(f)))
        .with(json.zip(json_filter).map(|(l, f)| l.with_filter(f)));
    #[cfg(feature = "otlp")]
    let installed = {
        let otel = match otlp {
            Some((url, command)) => Some(
                super::otel::layer(url, command)?
                    .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
            ),
            None => None,
        };
        registry.with(otel).try_init().is_ok()
    };
    #[cfg(not(feature = "otlp"))]
    let installed = match otlp {
        Some(_) => return Err("--otlp: courier was built without the `otlp` feature".into()),
        None => registry.try_init().is_ok(),
    };
    if installed {
        std::thread::Builder::new()
            .name("courier-log".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(1));
                folds.report(Instant::now(), false);
            })
            .ok();
    }
    Ok(())
}

/// Reports every folded line not reported yet (at exit).
pub fn flush() {
    if let Some(folds) = FOLDS.get() {
        folds.report(Instant::now(), true);
    }
    #[cfg(feature = "otlp")]
    super::otel::shutdown();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    fn lines(buf: &Buf) -> Vec<String> {
        String::from_utf8(buf.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_flood_from_one_place_is_folded_into_a_count() {
        let folds = Arc::new(Folds::default());
        let buf = Buf::default();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(buf.clone())
            .with_ansi(false)
            .with_filter(Fold(folds.clone()));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..1000 {
                tracing::warn!(task = i, "run interrupted; handing the task back");
            }
            // Another place is counted on its own.
            tracing::error!("the store did not answer");
            // Debug lines are never folded.
            for _ in 0..(BURST + 5) {
                tracing::debug!("a debug line");
            }
            assert_eq!(lines(&buf).len(), BURST as usize + 1 + BURST as usize + 5);
            // The window is not over: nothing to report yet.
            folds.report(Instant::now(), false);
            assert_eq!(lines(&buf).len(), 2 * BURST as usize + 6);
            // A minute later, one line with the count.
            folds.report(Instant::now() + WINDOW, false);
        });
        let out = lines(&buf);
        let interrupted: Vec<&String> = out
            .iter()
            .filter(|l| l.contains("run interrupted"))
            .collect();
        assert_eq!(interrupted.len(), BURST as usize + 1, "{out:#?}");
        let summary = interrupted.last().unwrap();
        assert!(summary.contains("WARN"), "{summary}");
        assert!(summary.contains("990 more times"), "{summary}");
        assert!(summary.contains("folded=990"), "{summary}");
        assert!(out.iter().any(|l| l.contains("the store did not answer")));
        assert!(
            !out.iter().any(|l| l.contains('\u{1b}')),
            "no colour codes: {out:#?}"
        );
    }

    #[test]
    fn a_new_window_writes_again_and_flush_reports_what_is_left() {
        let folds = Arc::new(Folds::default());
        let buf = Buf::default();
        let layer = tracing_subscriber::fmt::layer()
            .json()
            .with_writer(buf.clone())
            .with_filter(Fold(folds.clone()));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..(BURST + 3) {
                tracing::info!("slow acquire");
            }
            // Reported with the window's end; the next window writes again.
            folds.report(Instant::now() + WINDOW, false);
            for _ in 0..(BURST + 2) {
                tracing::info!("slow acquire");
            }
            // At exit, what is folded is reported even mid-window.
            folds.report(Instant::now(), true);
        });
        let out = lines(&buf);
        let parsed: Vec<serde_json::Value> = out
            .iter()
            .map(|l| serde_json::from_str(l).expect("each line is a JSON object"))
            .collect();
        let folded: Vec<u64> = parsed
            .iter()
            .filter_map(|v| v["fields"]["folded"].as_u64())
            .collect();
        assert_eq!(folded, vec![3, 2], "{out:#?}");
        assert_eq!(parsed.len(), 2 * BURST as usize + 2, "{out:#?}");
        assert!(parsed.iter().all(|v| v["level"] == "INFO"));
    }
}
