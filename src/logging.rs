//! Log output: plain `key=value` lines on stderr (multilog, runit and
//! journald's stdout capture all take them), or the systemd journal
//! directly. The level comes from `SPP_LOG` (default `info`).

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogTarget {
    /// Standard error, one line per event.
    Stderr,
    /// The systemd journal (falls back to stderr when there is none).
    Journald,
}

/// Installs the subscriber. Safe to call once per process.
pub fn init(target: LogTarget) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("SPP_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    let stderr = || {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_target(false)
            .without_time()
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

/// A log field value from untrusted bytes: in double quotes, with control
/// bytes, quotes, backslashes and non-ASCII escaped, so one event is
/// always one line and `key="value"` parses unambiguously.
pub fn quoted(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoted_values_stay_on_one_line() {
        assert_eq!(super::quoted(b"a b\n\"x\"\\"), r#""a b\n\"x\"\\""#);
        assert_eq!(super::quoted("é".as_bytes()), r#""\xc3\xa9""#);
    }
}
