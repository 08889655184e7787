//! Log output: plain `key=value` lines on stderr (multilog, runit and
//! journald's stdout capture all take them), each starting with an RFC 3339
//! time stamp unless bare lines are asked for (multilog adds its own), or
//! the systemd journal directly. The level comes from `SPP_LOG` (default
//! `info`).

use tracing::level_filters::LevelFilter;
use tracing::Level;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogTarget {
    /// Standard error, one line per event.
    Stderr,
    /// The systemd journal (falls back to stderr when there is none).
    Journald,
}

/// How stderr lines start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// With the UTC time: `2026-12-02T07:10:11.123Z  INFO ...`.
    #[default]
    Rfc3339,
    /// Without a time (for multilog and others that add their own).
    Bare,
}

impl LogFormat {
    /// The format `SPP_LOG_FORMAT` names (unset or empty: the default);
    /// `None` for any other value.
    pub fn from_env() -> Option<LogFormat> {
        match std::env::var("SPP_LOG_FORMAT").ok().as_deref() {
            None | Some("") | Some("rfc3339") => Some(LogFormat::Rfc3339),
            Some("bare") => Some(LogFormat::Bare),
            Some(_) => None,
        }
    }
}

/// The time stamp of a line in `format` (empty when bare), with the space
/// that follows it.
fn stamp(format: LogFormat) -> String {
    match format {
        LogFormat::Rfc3339 => {
            let mut s = crate::protocol::received::rfc3339_utc(std::time::SystemTime::now());
            s.push(' ');
            s
        }
        LogFormat::Bare => String::new(),
    }
}

/// `tracing-subscriber`'s timer for [`LogFormat::Rfc3339`].
struct Rfc3339Timer;

impl tracing_subscriber::fmt::time::FormatTime for Rfc3339Timer {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        w.write_str(stamp(LogFormat::Rfc3339).trim_end())
    }
}

/// Installs the subscriber. Safe to call once per process.
///
/// With `stderr` and a plain level in `SPP_LOG` (or none), a small
/// subscriber writes the lines itself: `spp-smtpd stdio` starts once per
/// connection, and the general one (a span registry, a directive filter)
/// costs a noticeable part of a short session. Other `SPP_LOG` values
/// (per-target directives) and journald use `tracing-subscriber`. Both
/// write the same lines.
pub fn init(target: LogTarget, format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    if target == LogTarget::Stderr {
        if let Some(max) = plain_level(std::env::var("SPP_LOG").ok().as_deref()) {
            if tracing::subscriber::set_global_default(StderrLines { max, format }).is_ok() {
                let _ = tracing_log::LogTracer::builder()
                    .with_max_level(level_to_log(max))
                    .init();
            }
            return;
        }
    }
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("SPP_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    let stderr = || {
        use tracing_subscriber::Layer as _;
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_target(false);
        match format {
            LogFormat::Rfc3339 => layer.with_timer(Rfc3339Timer).boxed(),
            LogFormat::Bare => layer.without_time().boxed(),
        }
    };
    if target == LogTarget::Journald {
        match tracing_journald::layer() {
            Ok(journal) => {
                let _ = tracing_subscriber::registry()
                    .with(filter())
                    .with(journal.with_syslog_identifier("spp-smtpd".into()))
                    .try_init();
                return;
            }
            Err(e) => {
                let _ = tracing_subscriber::registry()
                    .with(filter())
                    .with(stderr())
                    .try_init();
                tracing::warn!(error = %e, "no journald socket; logging to stderr");
                return;
            }
        }
    }
    let _ = tracing_subscriber::registry()
        .with(filter())
        .with(stderr())
        .try_init();
}

/// The level of a plain `SPP_LOG` (`trace` … `error`, `off`, any case);
/// unset or empty is `info`; anything else (directives) is `None`.
fn plain_level(value: Option<&str>) -> Option<LevelFilter> {
    match value.map(str::trim) {
        None | Some("") => Some(LevelFilter::INFO),
        Some(v) if v.chars().all(|c| c.is_ascii_alphabetic()) => v.parse().ok(),
        Some(_) => None,
    }
}

/// The `log` crate's level for records of libraries that use it.
fn level_to_log(max: LevelFilter) -> log::LevelFilter {
    match max.into_level() {
        None => log::LevelFilter::Off,
        Some(Level::ERROR) => log::LevelFilter::Error,
        Some(Level::WARN) => log::LevelFilter::Warn,
        Some(Level::INFO) => log::LevelFilter::Info,
        Some(Level::DEBUG) => log::LevelFilter::Debug,
        Some(Level::TRACE) => log::LevelFilter::Trace,
    }
}

/// Events at or above `max` as `[TIME ]LEVEL message key=value ...` lines
/// on stderr, one write each, in `tracing-subscriber`'s plain format (no
/// target). Spans are not used by this program and not shown.
struct StderrLines {
    max: LevelFilter,
    format: LogFormat,
}

impl tracing::Subscriber for StderrLines {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= self.max
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max)
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        use std::io::Write;
        let mut line = stamp(self.format);
        line.push_str(&format!("{:>5} ", event.metadata().level()));
        let mut fields = LineFields {
            message: String::new(),
            rest: String::new(),
        };
        event.record(&mut fields);
        line.push_str(&fields.message);
        if !fields.message.is_empty() && !fields.rest.is_empty() {
            line.push(' ');
        }
        line.push_str(&fields.rest);
        line.push('\n');
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// Collects an event's fields: the message, then `key=value` pairs
/// (strings and `?` values in Debug form, `%` values in Display form).
struct LineFields {
    message: String,
    rest: String,
}

impl tracing::field::Visit for LineFields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
            return;
        }
        if field.name().starts_with("log.") {
            return;
        }
        if !self.rest.is_empty() {
            self.rest.push(' ');
        }
        let _ = write!(self.rest, "{}={value:?}", field.name());
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }
}

/// A log field value from untrusted bytes: in double quotes, with control
/// bytes, quotes, backslashes and non-ASCII escaped, so one event is
/// always one line and `key="value"` parses unambiguously.
pub fn quoted(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

#[cfg(test)]
mod tests {
    #[test]
    fn plain_levels() {
        use super::{plain_level, LevelFilter};
        assert_eq!(plain_level(None), Some(LevelFilter::INFO));
        assert_eq!(plain_level(Some("")), Some(LevelFilter::INFO));
        assert_eq!(plain_level(Some("debug")), Some(LevelFilter::DEBUG));
        assert_eq!(plain_level(Some("WARN")), Some(LevelFilter::WARN));
        assert_eq!(plain_level(Some("off")), Some(LevelFilter::OFF));
        assert_eq!(plain_level(Some("spp_smtpd=debug")), None);
        assert_eq!(plain_level(Some("info,hickory=off")), None);
        assert_eq!(plain_level(Some("loud")), None);
    }

    #[test]
    fn quoted_values_stay_on_one_line() {
        assert_eq!(super::quoted(b"a b\n\"x\"\\"), r#""a b\n\"x\"\\""#);
        assert_eq!(super::quoted("é".as_bytes()), r#""\xc3\xa9""#);
    }
}
