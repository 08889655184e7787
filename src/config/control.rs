//! qmail control files: how they are read (single values, numbers, lists)
//! and the validated [`Control`] values the session uses.

use super::cdb::Cdb;
use super::queue::QueueSetting;
use super::ConfigError;
use crate::protocol::address::idna_forms;
use std::collections::HashSet;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

/// Default `timeoutsmtpd`, seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 1200;
/// Default per-plugin deadline, seconds (`control/plugintimeout`).
pub const DEFAULT_PLUGIN_TIMEOUT_SECS: u64 = 30;
/// Default `control/mindatarate`: bytes a second a message body must
/// average once its grace period is over.
pub const DEFAULT_MIN_DATA_RATE: u64 = 1024;
/// Default `control/mindatarategrace`, seconds.
pub const DEFAULT_DATA_RATE_GRACE_SECS: u64 = 30;
/// Largest timeout honoured (one year); larger values are clamped.
pub const MAX_TIMEOUT_SECS: u64 = 365 * 86_400;

/// Why `home` cannot serve as the home directory (it does not exist, or is
/// not a directory), if it cannot: said first, instead of every control
/// file in it being missing.
pub fn home_problem(home: &Path) -> Option<ConfigError> {
    let why = match std::fs::metadata(home) {
        Ok(m) if m.is_dir() => return None,
        Ok(_) => "is not a directory".to_string(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => "does not exist".to_string(),
        Err(e) => format!("cannot be used: {e}"),
    };
    Some(ConfigError::at(
        home,
        None,
        format!("the home directory (--home or SPP_HOME) {why}"),
    ))
}

/// Reads a file; `Ok(None)` when it does not exist. Anything but a regular
/// file is an error, found without blocking (see [`super::file::open`]).
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, ConfigError> {
    match super::file::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConfigError::io(path, &e)),
    }
}

/// The first line of a single-value file with trailing spaces and tabs
/// removed (a trailing CR is kept, as in qmail).
pub fn first_line(content: &[u8]) -> Vec<u8> {
    let line = content.split(|&b| b == b'\n').next().unwrap_or(b"");
    trim_trailing_blanks(line).to_vec()
}

/// Removes trailing spaces and tabs.
pub fn trim_trailing_blanks(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Leading decimal digits of the first line, or `None` if it does not
/// start with a digit. Saturates instead of overflowing.
pub fn leading_number(content: &[u8]) -> Option<u64> {
    let digits: Vec<u8> = content
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    if digits.is_empty() {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// The entries of a list file with their 1-based line numbers: trailing
/// blanks removed, empty lines and lines starting with `#` skipped,
/// leading blanks kept.
pub fn list_entries(content: &[u8]) -> Vec<(usize, Vec<u8>)> {
    content
        .split(|&b| b == b'\n')
        .enumerate()
        .filter_map(|(i, line)| {
            let line = trim_trailing_blanks(line);
            (!line.is_empty() && line[0] != b'#').then(|| (i + 1, line.to_vec()))
        })
        .collect()
}

/// Reads an on/off control file: the first line `1`, `yes`, `on` or
/// empty means on; `0`, `no` or `off` means off (any case). Anything else
/// is an error, so a typo never silently flips a setting.
pub fn parse_switch(content: &[u8]) -> Result<bool, &'static str> {
    let line = first_line(content).to_ascii_lowercase();
    match line.as_slice() {
        b"" | b"1" | b"yes" | b"on" => Ok(true),
        b"0" | b"no" | b"off" => Ok(false),
        _ => Err("expected 1, yes or on (on) or 0, no or off (off)"),
    }
}

/// The ESMTP extensions a session offers beyond qmail's (EHLO lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extensions {
    /// SMTPUTF8 (RFC 6531): `control/smtputf8`, on unless switched off.
    pub smtputf8: bool,
    /// CHUNKING/BDAT (RFC 3030): `control/chunking`, on unless switched off.
    pub chunking: bool,
    /// ENHANCEDSTATUSCODES (RFC 2034): `control/enhancedstatuscodes`, off
    /// unless switched on, because it changes qmail's reply texts.
    pub enhanced_status_codes: bool,
}

impl Default for Extensions {
    fn default() -> Self {
        Extensions {
            smtputf8: true,
            chunking: true,
            enhanced_status_codes: false,
        }
    }
}

/// The control files of [`Extensions`]: name and default.
pub const EXTENSION_FILES: [(&str, bool); 3] = [
    ("smtputf8", true),
    ("chunking", true),
    ("enhancedstatuscodes", false),
];

/// The slowest a message body may arrive: after `grace`, the bytes received
/// since the body started must keep up with `bytes_per_sec`. It bounds how
/// long a client dribbling a byte now and then holds its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRate {
    /// The floor, bytes a second on average; 0 switches the check off.
    pub bytes_per_sec: u64,
    /// How long a body may arrive at any pace before the floor applies.
    pub grace: Duration,
}

impl DataRate {
    /// By when more than `received` bytes of a body that started at
    /// `start` must have arrived; `None` without a floor.
    pub fn deadline(&self, start: Instant, received: u64) -> Option<Instant> {
        if self.bytes_per_sec == 0 {
            return None;
        }
        let millis = received.saturating_mul(1000) / self.bytes_per_sec;
        start.checked_add(self.grace + Duration::from_millis(millis))
    }
}

/// The domains we accept mail for.
#[derive(Debug)]
pub struct RcptHosts {
    /// Entries of `control/rcpthosts`, lower-cased.
    pub hosts: HashSet<Vec<u8>>,
    /// `control/morercpthosts.cdb`, if it exists.
    pub more: Option<Cdb>,
    /// Path of the cdb, for error messages.
    pub more_path: PathBuf,
}

/// Most labels of a domain looked up in rcpthosts. A DNS name (at most
/// 255 octets) has at most 127; a deeper one cannot be a domain we serve,
/// and each label would cost a lookup.
pub const MAX_LABELS: usize = 127;

impl RcptHosts {
    /// Whether mail for `host` (already lower-cased) is accepted: the whole
    /// host or any suffix starting at a `.` is listed. A host of more than
    /// [`MAX_LABELS`] labels is not. A cdb read error is an error (the
    /// session answers 421), never a silent "no".
    pub fn allows(&self, host: &[u8]) -> io::Result<bool> {
        if host.iter().filter(|&&b| b == b'.').count() >= MAX_LABELS {
            return Ok(false);
        }
        for j in (0..host.len().max(1)).filter(|&j| j == 0 || host[j] == b'.') {
            let key = &host[j..];
            if self.hosts.contains(key) {
                return Ok(true);
            }
            if let Some(cdb) = &self.more {
                if cdb.contains(key).map_err(|e| {
                    io::Error::new(e.kind(), format!("{}: {e}", self.more_path.display()))
                })? {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

/// Values read from `control/*` once per snapshot.
#[derive(Debug)]
pub struct Control {
    /// `control/me`.
    pub me: Option<Vec<u8>>,
    /// `control/smtpgreeting`, else `me`.
    pub greeting: Vec<u8>,
    /// `control/localiphost`, else `me`; replaces local `[ip]` literals.
    pub localiphost: Option<Vec<u8>>,
    /// `control/timeoutsmtpd`: each read/write on the client connection,
    /// and the time a command line may take from its first byte.
    pub timeout: Duration,
    /// `control/mindatarate` and `control/mindatarategrace`: how fast a
    /// message body (DATA, or one BDAT chunk) must arrive.
    pub data_rate: DataRate,
    /// `control/rcpthosts` (+ cdb); `None`: every recipient allowed.
    pub rcpthosts: Option<RcptHosts>,
    /// `control/badmailfrom`, lower-cased entries.
    pub badmailfrom: HashSet<Vec<u8>>,
    /// `control/databytes`; 0 = unlimited (`DATABYTES` overrides per session).
    pub databytes: u64,
    /// `control/plugintimeout`: deadline for one plugin run.
    pub plugin_timeout: Duration,
    /// `control/queue`: the queue backend, if the file exists.
    pub queue: Option<QueueSetting>,
    /// `control/spooldir` (relative to home), else `HOME/spool`: where a
    /// message waits while a `[body]` hook or a downstream needs it whole.
    pub spooldir: PathBuf,
    /// The optional ESMTP extensions offered.
    pub extensions: Extensions,
    /// DNS lists, resolvable sender and SPF, and their resolver.
    pub checks: super::checks::ChecksConfig,
}

impl Control {
    /// Reads every control file under `home/control`, in qmail's order.
    pub fn load(home: &Path) -> Result<Control, ConfigError> {
        if let Some(e) = home_problem(home) {
            return Err(e);
        }
        let c = home.join("control");
        let single = |name: &str| -> Result<Option<Vec<u8>>, ConfigError> {
            Ok(read_optional(&c.join(name))?.map(|b| first_line(&b)))
        };
        let me = single("me")?;
        let greeting = match single("smtpgreeting")?.or_else(|| me.clone()) {
            Some(g) => g,
            None => {
                return Err(ConfigError::at(
                    &c.join("me"),
                    None,
                    "no greeting: neither control/smtpgreeting nor control/me exists",
                ))
            }
        };
        let localiphost = single("localiphost")?.or_else(|| me.clone());
        let number = |name: &str, default: u64| -> Result<u64, ConfigError> {
            Ok(read_optional(&c.join(name))?
                .and_then(|b| leading_number(&b))
                .unwrap_or(default))
        };
        let timeout = Duration::from_secs(
            number("timeoutsmtpd", DEFAULT_TIMEOUT_SECS)?.clamp(1, MAX_TIMEOUT_SECS),
        );
        let rcpthosts = match read_optional(&c.join("rcpthosts"))? {
            None => None,
            Some(b) => {
                let more_path = c.join("morercpthosts.cdb");
                let more = match Cdb::open(&more_path) {
                    Ok(cdb) => Some(cdb),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                        return Err(ConfigError::at(
                            &more_path,
                            None,
                            format!("not a usable cdb file: {e}"),
                        ))
                    }
                    Err(e) => return Err(ConfigError::io(&more_path, &e)),
                };
                Some(RcptHosts {
                    hosts: list_entries(&b)
                        .into_iter()
                        .map(|(_, e)| e.to_ascii_lowercase())
                        .collect(),
                    more,
                    more_path,
                })
            }
        };
        let badmailfrom = read_optional(&c.join("badmailfrom"))?
            .map(|b| {
                list_entries(&b)
                    .into_iter()
                    .map(|(_, e)| e.to_ascii_lowercase())
                    .collect()
            })
            .unwrap_or_default();
        let databytes = number("databytes", 0)?;
        let data_rate = DataRate {
            bytes_per_sec: number("mindatarate", DEFAULT_MIN_DATA_RATE)?,
            grace: Duration::from_secs(
                number("mindatarategrace", DEFAULT_DATA_RATE_GRACE_SECS)?.min(MAX_TIMEOUT_SECS),
            ),
        };
        let plugin_timeout = Duration::from_secs(
            number("plugintimeout", DEFAULT_PLUGIN_TIMEOUT_SECS)?.clamp(1, MAX_TIMEOUT_SECS),
        );
        let queue = match single("queue")? {
            None => None,
            Some(line) => Some(
                QueueSetting::parse(&line)
                    .map_err(|m| ConfigError::at(&c.join("queue"), Some(1), m))?
                    .with_home(home),
            ),
        };
        let spooldir = match single("spooldir")? {
            Some(dir) if !dir.is_empty() => home.join(std::ffi::OsStr::from_bytes(&dir)),
            _ => home.join("spool"),
        };
        let mut switches = [false; 3];
        for (slot, (name, default)) in switches.iter_mut().zip(EXTENSION_FILES) {
            *slot = match read_optional(&c.join(name))? {
                None => default,
                Some(b) => {
                    parse_switch(&b).map_err(|m| ConfigError::at(&c.join(name), Some(1), m))?
                }
            };
        }
        let [smtputf8, chunking, enhanced_status_codes] = switches;
        let checks = super::checks::ChecksConfig::load(&c)?;
        Ok(Control {
            checks,
            extensions: Extensions {
                smtputf8,
                chunking,
                enhanced_status_codes,
            },
            spooldir,
            me,
            greeting,
            localiphost,
            timeout,
            data_rate,
            rcpthosts,
            badmailfrom,
            databytes,
            plugin_timeout,
            queue,
        })
    }

    /// Whether `addr` is in badmailfrom (whole address or `@domain`). With
    /// `idna` (an SMTPUTF8 transaction) the domain's other IDNA forms
    /// (A-label, U-label) are looked up too.
    pub fn is_bad_sender(&self, addr: &[u8], idna: bool) -> bool {
        if self.badmailfrom.is_empty() {
            return false;
        }
        let lower = addr.to_ascii_lowercase();
        if self.badmailfrom.contains(&lower) {
            return true;
        }
        let Some(at) = lower.iter().rposition(|&b| b == b'@') else {
            return false;
        };
        if self.badmailfrom.contains(&lower[at..]) {
            return true;
        }
        idna && idna_forms(&lower[at + 1..]).iter().any(|domain| {
            let at_domain = [b"@", domain.as_slice()].concat();
            self.badmailfrom.contains(&at_domain)
                || self
                    .badmailfrom
                    .contains(&[&lower[..at], at_domain.as_slice()].concat())
        })
    }

    /// Whether [`Control::rcpt_allowed`] reads a file (the cdb), and so
    /// belongs off the async threads.
    pub fn rcpt_lookup_reads_files(&self) -> bool {
        self.rcpthosts.as_ref().is_some_and(|r| r.more.is_some())
    }

    /// Whether rcpthosts allows `addr` (no `@`, or no rcpthosts file: yes).
    /// With `idna` (an SMTPUTF8 transaction) the domain's other IDNA forms
    /// (A-label, U-label) are looked up too, each with the suffix rule.
    pub fn rcpt_allowed(&self, addr: &[u8], idna: bool) -> io::Result<bool> {
        let Some(rh) = &self.rcpthosts else {
            return Ok(true);
        };
        let Some(host) = crate::protocol::address::host_of(addr) else {
            return Ok(true);
        };
        let host = host.to_ascii_lowercase();
        if rh.allows(&host)? {
            return Ok(true);
        }
        if idna {
            for form in idna_forms(&host) {
                if rh.allows(&form)? {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_rules() {
        let e = list_entries(b"a\n\n# c\n  lead\ntrail \t\n#x\nlast");
        let got: Vec<(usize, &[u8])> = e.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        assert_eq!(
            got,
            vec![(1, &b"a"[..]), (4, b"  lead"), (5, b"trail"), (7, b"last")]
        );
        assert_eq!(list_entries(b"x\r\n"), vec![(1, b"x\r".to_vec())]);
    }

    #[test]
    fn switches() {
        for on in [&b""[..], b"1", b"yes\n", b"ON  \nx", b"\n"] {
            assert_eq!(parse_switch(on), Ok(true), "{}", on.escape_ascii());
        }
        for off in [&b"0"[..], b"no\n", b"Off\t"] {
            assert_eq!(parse_switch(off), Ok(false), "{}", off.escape_ascii());
        }
        for bad in [&b"2"[..], b"maybe", b" 1", b"0\r\n"] {
            assert!(parse_switch(bad).is_err(), "{}", bad.escape_ascii());
        }
    }

    #[test]
    fn numbers_and_first_lines() {
        assert_eq!(leading_number(b"123abc"), Some(123));
        assert_eq!(leading_number(b" 5"), None);
        assert_eq!(leading_number(b"-5"), None);
        assert_eq!(leading_number(b"99999999999999999999999"), Some(u64::MAX));
        assert_eq!(first_line(b"mx.test \t\nsecond"), b"mx.test");
        assert_eq!(first_line(b"mx.test\r\n"), b"mx.test\r");
    }

    fn hosts(entries: &[&str]) -> RcptHosts {
        RcptHosts {
            hosts: entries.iter().map(|e| e.as_bytes().to_vec()).collect(),
            more: None,
            more_path: PathBuf::new(),
        }
    }

    /// A snapshot with these rcpthosts and badmailfrom entries.
    fn control(rcpthosts: &[&str], badmailfrom: &[&str]) -> Control {
        Control {
            me: None,
            greeting: b"mx.test".to_vec(),
            localiphost: None,
            timeout: Duration::from_secs(1),
            data_rate: DataRate {
                bytes_per_sec: 0,
                grace: Duration::ZERO,
            },
            rcpthosts: Some(hosts(rcpthosts)),
            badmailfrom: badmailfrom.iter().map(|e| e.as_bytes().to_vec()).collect(),
            databytes: 0,
            plugin_timeout: Duration::from_secs(1),
            queue: None,
            spooldir: PathBuf::new(),
            extensions: Extensions::default(),
            checks: Default::default(),
        }
    }

    #[test]
    fn idna_forms_match_only_when_asked() {
        let c = control(
            &["xn--fsqu00a.xn--4rr70v", "bücher.example", ".xn--4rr70v"],
            &["@例子.广告", "bad@xn--bcher-kva.example"],
        );
        let allowed = |a: &str, idna| c.rcpt_allowed(a.as_bytes(), idna).unwrap();
        for (addr, plain, idna) in [
            ("用户@xn--fsqu00a.xn--4rr70v", true, true),
            ("用户@例子.广告", false, true),
            ("用户@XN--BCHER-KVA.example", false, true),
            ("x@BÜCHER.example", false, true),
            ("x@bücher.example", true, true),
            ("x@sub.广告", false, true),
            ("x@广告", false, false),
            ("x@xn--zz.example", false, false),
            ("x@\u{fc}\u{ff}.example", false, false),
        ] {
            assert_eq!(allowed(addr, false), plain, "{addr} without SMTPUTF8");
            assert_eq!(allowed(addr, true), idna, "{addr} with SMTPUTF8");
        }
        for (addr, plain, idna) in [
            ("a@例子.广告", true, true),
            ("A@XN--FSQU00A.XN--4RR70V", false, true),
            ("bad@bücher.example", false, true),
            ("BAD@xn--bcher-kva.example", true, true),
            ("good@bücher.example", false, false),
            ("bad", false, false),
        ] {
            assert_eq!(c.is_bad_sender(addr.as_bytes(), false), plain, "{addr}");
            assert_eq!(c.is_bad_sender(addr.as_bytes(), true), idna, "{addr}");
        }
    }

    #[test]
    fn the_data_rate_deadline_grows_with_what_arrived() {
        let start = Instant::now();
        let rate = DataRate {
            bytes_per_sec: 1000,
            grace: Duration::from_secs(30),
        };
        let after = |ms| Some(start + Duration::from_millis(ms));
        assert_eq!(rate.deadline(start, 0), after(30_000));
        assert_eq!(rate.deadline(start, 1), after(30_001));
        assert_eq!(rate.deadline(start, 60_000), after(90_000));
        let off = DataRate {
            bytes_per_sec: 0,
            ..rate
        };
        assert_eq!(off.deadline(start, 0), None);
    }

    #[test]
    fn rcpthosts_suffix_rule() {
        let rh = hosts(&["ref.test", ".sub.ref.test"]);
        let allows = |h: &[u8]| rh.allows(h).unwrap();
        assert!(allows(b"ref.test"));
        assert!(!allows(b"x.ref.test"));
        assert!(allows(b"a.sub.ref.test"));
        assert!(allows(b"x.a.sub.ref.test"));
        assert!(!allows(b"sub.ref.test"));
        assert!(!allows(b""));
        // A name deeper than DNS allows is refused without a lookup per
        // label.
        let deep = |labels: usize| "a.".repeat(labels - 4) + "x.sub.ref.test";
        assert!(allows(deep(MAX_LABELS).as_bytes()));
        assert!(!allows(deep(MAX_LABELS + 1).as_bytes()));
        assert!(!allows(deep(2000).as_bytes()));
    }
}
