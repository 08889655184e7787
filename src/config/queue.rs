//! `control/queue`: which backend takes accepted mail, and its options.
//! One line, parsed here for start-up, reload and `check` alike.
//!
//! ```text
//! qmail-queue [PROGRAM]
//! maildir [DIR]
//! sendmail [PROGRAM]
//! smtp HOST[:PORT] [OPTION=VALUE ...]
//! lmtp HOST:PORT [OPTION=VALUE ...]
//! lmtp /path/to/socket [OPTION=VALUE ...]
//! ```

use std::path::PathBuf;
use std::time::Duration;

/// Default program of the `sendmail` backend.
pub const DEFAULT_SENDMAIL: &str = "/usr/sbin/sendmail";
/// Default port of an `smtp` downstream.
pub const DEFAULT_SMTP_PORT: u16 = 25;
/// Default number of idle downstream connections kept for reuse.
pub const DEFAULT_POOL: usize = 32;
/// CA bundle used to verify a downstream certificate without `cafile=`.
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// What `control/queue` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueSetting {
    /// `qmail-queue [PROGRAM]`: the program (else `$QMAILQUEUE` or
    /// `bin/qmail-queue`).
    QmailQueue(Option<PathBuf>),
    /// `maildir [DIR]`: the directory (else `Maildir`), relative to home.
    Maildir(Option<PathBuf>),
    /// `sendmail [PROGRAM]`: `PROGRAM -i -f SENDER -- RCPT...`.
    Sendmail(PathBuf),
    /// `smtp ...` or `lmtp ...`: hand over to a downstream MTA.
    Forward(std::sync::Arc<ForwardSetting>),
}

/// Where a downstream MTA listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A host name or IP address and a port.
    Tcp {
        /// Name or address, without brackets.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// A unix socket (LMTP).
    Unix(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Target::Tcp { host, port } => write!(f, "{host}:{port}"),
            Target::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// STARTTLS towards the downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsMode {
    /// Never.
    No,
    /// When the downstream offers it; plaintext otherwise.
    Opportunistic,
    /// Always; a downstream without STARTTLS gets no mail (451).
    Required,
}

/// How to reach and use a downstream SMTP or LMTP server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ForwardSetting {
    /// LMTP (per-recipient replies after the data) rather than SMTP.
    pub lmtp: bool,
    /// Where it listens.
    pub target: Target,
    /// STARTTLS policy (`tls=`).
    pub tls: TlsMode,
    /// Verify the downstream certificate (`verify=`, default yes).
    pub verify: bool,
    /// CA certificates for the verification (`cafile=`), else the system's.
    pub ca_file: Option<PathBuf>,
    /// Name expected in the certificate (`tls-name=`), else the host.
    pub tls_name: Option<String>,
    /// Pass each RCPT through to the downstream at RCPT time (`verify-rcpt=`;
    /// default yes for LMTP, no for SMTP).
    pub verify_rcpt: bool,
    /// Bound for each exchange with the downstream (`timeout=`), else
    /// `control/timeoutsmtpd`.
    pub timeout: Option<Duration>,
    /// Idle connections kept for reuse (`pool=`; 0: one connection per
    /// message).
    pub pool: usize,
}

/// The words the first word of the line may be.
const KINDS: &str =
    "expected `maildir [DIR]`, `qmail-queue [PROGRAM]`, `sendmail [PROGRAM]`, `smtp HOST[:PORT]` or `lmtp HOST:PORT|/socket`";

impl QueueSetting {
    /// Parses the line of `control/queue`.
    pub fn parse(line: &[u8]) -> Result<QueueSetting, String> {
        let text = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_string())?;
        let words: Vec<&str> = text.split_whitespace().collect();
        let (kind, args) = words.split_first().unwrap_or((&"", &[]));
        let at_most_one = |args: &[&str]| -> Result<Option<PathBuf>, String> {
            match args {
                [] => Ok(None),
                [one] => Ok(Some(PathBuf::from(one))),
                _ => Err(format!("too many words in {text:?}: {KINDS}")),
            }
        };
        match *kind {
            "qmail-queue" => Ok(QueueSetting::QmailQueue(at_most_one(args)?)),
            "maildir" => Ok(QueueSetting::Maildir(at_most_one(args)?)),
            "sendmail" => Ok(QueueSetting::Sendmail(
                at_most_one(args)?.unwrap_or_else(|| PathBuf::from(DEFAULT_SENDMAIL)),
            )),
            "smtp" | "lmtp" => Ok(QueueSetting::Forward(std::sync::Arc::new(
                ForwardSetting::parse(*kind == "lmtp", args)?,
            ))),
            other => Err(format!("unknown queue type {other:?}: {KINDS}")),
        }
    }
}

impl QueueSetting {
    /// Paths in the options made absolute against `home` (a relative
    /// `cafile=` is relative to the home, like every other path).
    pub fn with_home(self, home: &std::path::Path) -> QueueSetting {
        match self {
            QueueSetting::Forward(f) if f.ca_file.as_ref().is_some_and(|c| c.is_relative()) => {
                let mut f = (*f).clone();
                f.ca_file = f.ca_file.map(|c| home.join(c));
                QueueSetting::Forward(std::sync::Arc::new(f))
            }
            other => other,
        }
    }
}

impl ForwardSetting {
    /// Parses the words after `smtp` or `lmtp`.
    fn parse(lmtp: bool, args: &[&str]) -> Result<ForwardSetting, String> {
        let kind = if lmtp { "lmtp" } else { "smtp" };
        let Some((target, options)) = args.split_first() else {
            return Err(format!(
                "`{kind}` needs a destination (HOST:PORT or a socket path)"
            ));
        };
        let mut setting = ForwardSetting {
            lmtp,
            target: parse_target(lmtp, target)?,
            tls: TlsMode::No,
            verify: true,
            ca_file: None,
            tls_name: None,
            verify_rcpt: lmtp,
            timeout: None,
            pool: DEFAULT_POOL,
        };
        for option in options {
            let Some((key, value)) = option.split_once('=') else {
                return Err(format!("option {option:?} is not KEY=VALUE"));
            };
            match key {
                "tls" => {
                    setting.tls = match value {
                        "no" => TlsMode::No,
                        "opportunistic" => TlsMode::Opportunistic,
                        "required" => TlsMode::Required,
                        _ => {
                            return Err(format!(
                                "tls={value:?}: expected no, opportunistic or required"
                            ))
                        }
                    }
                }
                "verify" => setting.verify = yes_no(key, value)?,
                "verify-rcpt" => setting.verify_rcpt = yes_no(key, value)?,
                "cafile" if !value.is_empty() => setting.ca_file = Some(PathBuf::from(value)),
                "tls-name" if !value.is_empty() => setting.tls_name = Some(value.to_string()),
                "timeout" => setting.timeout = Some(parse_duration(value)?),
                "pool" => {
                    setting.pool = value
                        .parse::<usize>()
                        .ok()
                        .filter(|&n| n <= 1000)
                        .ok_or_else(|| format!("pool={value:?}: expected a number 0..1000"))?
                }
                _ => return Err(format!(
                    "unknown option {option:?} (known: tls= verify= cafile= tls-name= verify-rcpt= timeout= pool=)"
                )),
            }
        }
        if matches!(setting.target, Target::Unix(_)) && setting.tls != TlsMode::No {
            return Err("tls= is not available over a unix socket".into());
        }
        Ok(setting)
    }
}

/// `HOST[:PORT]`, `[IPV6]:PORT` or an absolute socket path (LMTP only).
fn parse_target(lmtp: bool, word: &str) -> Result<Target, String> {
    if word.starts_with('/') {
        if !lmtp {
            return Err(format!("{word:?}: a unix socket is only for `lmtp`"));
        }
        return Ok(Target::Unix(PathBuf::from(word)));
    }
    let (host, port) = if let Some(rest) = word.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{word:?}: missing `]`"))?;
        (host, after.strip_prefix(':'))
    } else {
        match word.split_once(':') {
            Some((h, p)) if !p.contains(':') => (h, Some(p)),
            Some(_) => return Err(format!("{word:?}: write IPv6 addresses as [ADDR]:PORT")),
            None => (word, None),
        }
    };
    if host.is_empty() || host.bytes().any(|b| b.is_ascii_control() || b == b'/') {
        return Err(format!("{word:?}: bad host"));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("{word:?}: bad port"))?,
        None if lmtp => return Err(format!("{word:?}: `lmtp` needs a port (HOST:PORT)")),
        None => DEFAULT_SMTP_PORT,
    };
    Ok(Target::Tcp {
        host: host.to_string(),
        port,
    })
}

/// `yes`/`no`.
fn yes_no(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err(format!("{key}={value:?}: expected yes or no")),
    }
}

/// A duration: a number with `ms`, `s` or `m` (no suffix: seconds), at
/// least 1 ms and at most a day.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (digits, unit_ms) = if let Some(d) = text.strip_suffix("ms") {
        (d, 1)
    } else if let Some(d) = text.strip_suffix('s') {
        (d, 1000)
    } else if let Some(d) = text.strip_suffix('m') {
        (d, 60_000)
    } else {
        (text, 1000)
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: expected a duration like 500ms, 30s or 2m"))?;
    let ms = n.saturating_mul(unit_ms);
    if ms == 0 || ms > 86_400_000 {
        return Err(format!("{text:?}: must be between 1ms and 24h"));
    }
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(line: &str) -> ForwardSetting {
        match QueueSetting::parse(line.as_bytes()) {
            Ok(QueueSetting::Forward(f)) => (*f).clone(),
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn simple_kinds() {
        assert_eq!(
            QueueSetting::parse(b"maildir"),
            Ok(QueueSetting::Maildir(None))
        );
        assert_eq!(
            QueueSetting::parse(b"qmail-queue bin/qq"),
            Ok(QueueSetting::QmailQueue(Some("bin/qq".into())))
        );
        assert_eq!(
            QueueSetting::parse(b"sendmail"),
            Ok(QueueSetting::Sendmail(DEFAULT_SENDMAIL.into()))
        );
        assert_eq!(
            QueueSetting::parse(b"sendmail /usr/sbin/exim4"),
            Ok(QueueSetting::Sendmail("/usr/sbin/exim4".into()))
        );
        assert!(QueueSetting::parse(b"maildir a b").is_err());
        assert!(QueueSetting::parse(b"").is_err());
        assert!(QueueSetting::parse(b"smtpx 1.2.3.4").is_err());
    }

    #[test]
    fn forward_targets_and_defaults() {
        let s = forward("smtp 127.0.0.1");
        assert_eq!(
            s.target,
            Target::Tcp {
                host: "127.0.0.1".into(),
                port: 25
            }
        );
        assert!(!s.lmtp && !s.verify_rcpt && s.verify && s.tls == TlsMode::No);
        assert_eq!(s.pool, DEFAULT_POOL);
        let s = forward("lmtp [::1]:24");
        assert_eq!(
            s.target,
            Target::Tcp {
                host: "::1".into(),
                port: 24
            }
        );
        assert!(s.lmtp && s.verify_rcpt);
        assert_eq!(
            forward("lmtp /run/dovecot/lmtp").target,
            Target::Unix("/run/dovecot/lmtp".into())
        );
        assert_eq!(
            forward("smtp mx.example:2525").target.to_string(),
            "mx.example:2525"
        );
    }

    #[test]
    fn forward_options() {
        let s = forward("smtp 10.0.0.1:25 tls=required cafile=/ca.pem tls-name=mx.test verify-rcpt=yes timeout=90s pool=0 verify=no");
        assert_eq!(s.tls, TlsMode::Required);
        assert_eq!(s.ca_file, Some("/ca.pem".into()));
        assert_eq!(s.tls_name.as_deref(), Some("mx.test"));
        assert!(s.verify_rcpt && !s.verify);
        assert_eq!(s.timeout, Some(Duration::from_secs(90)));
        assert_eq!(s.pool, 0);
        assert!(!forward("lmtp 127.0.0.1:24 verify-rcpt=no").verify_rcpt);
    }

    #[test]
    fn forward_errors() {
        for bad in [
            "smtp",
            "lmtp 127.0.0.1",
            "smtp /socket",
            "smtp 1.2.3.4:0",
            "smtp 1.2.3.4:99999",
            "smtp ::1:25",
            "smtp [::1:25",
            "smtp 1.2.3.4 tls=maybe",
            "smtp 1.2.3.4 bogus=1",
            "smtp 1.2.3.4 timeout",
            "smtp 1.2.3.4 timeout=0s",
            "smtp 1.2.3.4 pool=-1",
            "lmtp /s tls=required",
        ] {
            assert!(QueueSetting::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
    }
}
