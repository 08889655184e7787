//! The control files of the built-in client and sender checks: DNS lists
//! (`dnsbl_zones`, `rhsbl_zones`, with qpsmtpd's names and format),
//! `require_resolvable_fromhost`, SPF policy (`spf`), and the resolver they
//! share (`dnsserver`, `timeoutdns`, `dnslistfailure`). Every check is off
//! until its file exists, so a qmail installation without them behaves as
//! before and makes no DNS query.

use super::control::{first_line, list_entries, read_optional};
use super::ConfigError;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// Default `control/timeoutdns`: seconds all lookups of one stage (the
/// client's DNS lists at connect; the sender's checks at MAIL) may take.
pub const DEFAULT_DNS_TIMEOUT_SECS: u64 = 5;
/// Longest `timeoutdns` honoured.
pub const MAX_DNS_TIMEOUT_SECS: u64 = 120;
/// Most zones in one list file; each costs a query per client.
pub const MAX_ZONES: usize = 32;
/// Longest reply text of a zone line.
pub const MAX_ZONE_TEXT: usize = 200;

/// One DNS list: its zone and the text a refusal gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListZone {
    /// The zone, lower case, without a trailing dot.
    pub zone: String,
    /// The reply text from the zone's line; without one, the list's own
    /// TXT record (or a text naming the zone) is used.
    pub text: Option<String>,
}

/// What happens when a DNS list does not answer in time (or fails).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListFailure {
    /// The list is skipped (logged): a dead list never stops mail.
    #[default]
    Accept,
    /// RCPT gets `451` until the list answers again.
    Defer,
}

/// What SPF (RFC 7208) results do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpfPolicy {
    /// Not evaluated (no `control/spf`).
    #[default]
    Off,
    /// Evaluated and recorded (environment, Authentication-Results:).
    Record,
    /// As `Record`, and a sender whose SPF result is `fail` is refused
    /// at MAIL.
    RefuseFail,
}

/// What DKIM, ARC and DMARC verification of the message does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DmarcPolicy {
    /// Not verified (no `control/dmarc`).
    #[default]
    Off,
    /// Verified and recorded (environment, Authentication-Results:).
    Record,
    /// As `Record`, and a message failing DMARC is refused when its
    /// domain asks for `p=reject`, and marked (`X-DMARC-Quarantine:`)
    /// when it asks for `p=quarantine`.
    Enforce,
}

/// The checks' settings, read with the other control files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChecksConfig {
    /// `control/dnsbl_zones`: lists of client addresses.
    pub dnsbl: Vec<ListZone>,
    /// `control/rhsbl_zones`: lists of sender domains.
    pub rhsbl: Vec<ListZone>,
    /// `control/require_resolvable_fromhost`: the sender's domain must
    /// have an MX or an address record.
    pub resolvable_fromhost: bool,
    /// `control/spf`.
    pub spf: SpfPolicy,
    /// `control/dmarc`: DKIM, ARC and DMARC verification at the end of
    /// the message (SPF is then evaluated too: DMARC needs it).
    pub dmarc: DmarcPolicy,
    /// `control/dnsserver`: the resolver to ask instead of the system's
    /// (`serve --dns-server` wins over it).
    pub dns_server: Option<SocketAddr>,
    /// `control/timeoutdns`: the deadline of one stage's lookups.
    pub timeout: Duration,
    /// `control/dnslistfailure`.
    pub list_failure: ListFailure,
}

impl ChecksConfig {
    /// Whether any check needs DNS when a client connects.
    pub fn at_connect(&self) -> bool {
        !self.dnsbl.is_empty()
    }

    /// Whether any check needs DNS at MAIL.
    pub fn at_mail(&self) -> bool {
        !self.rhsbl.is_empty() || self.resolvable_fromhost || self.evaluates_spf()
    }

    /// Whether SPF is evaluated at MAIL (for itself, or for DMARC).
    pub fn evaluates_spf(&self) -> bool {
        self.spf != SpfPolicy::Off || self.dmarc != DmarcPolicy::Off
    }

    /// Whether whole messages are verified (DKIM, ARC, DMARC).
    pub fn verifies_messages(&self) -> bool {
        self.dmarc != DmarcPolicy::Off
    }

    /// Whether any check is configured.
    pub fn any(&self) -> bool {
        self.at_connect() || self.at_mail()
    }

    /// Reads the files under `control` (the directory); every problem is
    /// reported with its file and line.
    pub fn load(control: &Path) -> Result<ChecksConfig, ConfigError> {
        let list = |name: &str| -> Result<Vec<ListZone>, ConfigError> {
            let path = control.join(name);
            match read_optional(&path)? {
                None => Ok(Vec::new()),
                Some(content) => {
                    parse_zones(&content).map_err(|(line, m)| ConfigError::at(&path, Some(line), m))
                }
            }
        };
        let dnsbl = list("dnsbl_zones")?;
        let rhsbl = list("rhsbl_zones")?;
        let single = |name: &str| -> Result<Option<String>, ConfigError> {
            let path = control.join(name);
            match read_optional(&path)? {
                None => Ok(None),
                Some(b) => String::from_utf8(first_line(&b))
                    .map(|s| Some(s.trim().to_string()))
                    .map_err(|_| ConfigError::at(&path, Some(1), "not valid UTF-8")),
            }
        };
        // qpsmtpd: anything but 0 on the first line switches it on.
        let resolvable_fromhost = single("require_resolvable_fromhost")?.is_some_and(|v| v != "0");
        let spf = match single("spf")? {
            None => SpfPolicy::Off,
            Some(v) => {
                parse_spf(&v).map_err(|m| ConfigError::at(&control.join("spf"), Some(1), m))?
            }
        };
        let dmarc = match single("dmarc")?.as_deref() {
            None | Some("off") => DmarcPolicy::Off,
            Some("" | "record") => DmarcPolicy::Record,
            Some("enforce") => DmarcPolicy::Enforce,
            Some(v) => {
                return Err(ConfigError::at(
                    &control.join("dmarc"),
                    Some(1),
                    format!("expected record, enforce or off, not {v:?}"),
                ))
            }
        };
        let dns_server = match single("dnsserver")? {
            None => None,
            Some(v) if v.is_empty() => None,
            Some(v) => Some(
                parse_dns_server(&v)
                    .map_err(|m| ConfigError::at(&control.join("dnsserver"), Some(1), m))?,
            ),
        };
        let timeout = match single("timeoutdns")? {
            None => DEFAULT_DNS_TIMEOUT_SECS,
            Some(v) => v.parse::<u64>().ok().filter(|&n| n >= 1).ok_or_else(|| {
                ConfigError::at(
                    &control.join("timeoutdns"),
                    Some(1),
                    format!("expected a number of seconds (1 or more), not {v:?}"),
                )
            })?,
        };
        let list_failure = match single("dnslistfailure")?.as_deref() {
            None | Some("") | Some("accept") => ListFailure::Accept,
            Some("defer") => ListFailure::Defer,
            Some(v) => {
                return Err(ConfigError::at(
                    &control.join("dnslistfailure"),
                    Some(1),
                    format!("expected accept or defer, not {v:?}"),
                ))
            }
        };
        Ok(ChecksConfig {
            dnsbl,
            rhsbl,
            resolvable_fromhost,
            spf,
            dmarc,
            dns_server,
            timeout: Duration::from_secs(timeout.min(MAX_DNS_TIMEOUT_SECS)),
            list_failure,
        })
    }
}

/// `control/spf`: `record` (or empty), `refuse`, or `off`.
fn parse_spf(v: &str) -> Result<SpfPolicy, String> {
    match v {
        "" | "record" => Ok(SpfPolicy::Record),
        "refuse" => Ok(SpfPolicy::RefuseFail),
        "off" => Ok(SpfPolicy::Off),
        _ => Err(format!("expected record, refuse or off, not {v:?}")),
    }
}

/// `ADDR` (port 53) or `ADDR:PORT`, IPv6 as `::1` or `[::1]:PORT`.
fn parse_dns_server(v: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = v.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    v.parse::<SocketAddr>().map_err(|_| {
        format!("expected an address, with an optional port (127.0.0.1:53, [::1]:53), not {v:?}")
    })
}

/// Parses a list file: one zone per line, optionally followed by the reply
/// text; `#` comments and empty lines are skipped. `Err((line, why))`.
pub fn parse_zones(content: &[u8]) -> Result<Vec<ListZone>, (usize, String)> {
    let mut zones: Vec<ListZone> = Vec::new();
    for (line, entry) in list_entries(content) {
        let entry = std::str::from_utf8(&entry).map_err(|_| (line, "not valid UTF-8".into()))?;
        let entry = entry.trim();
        let (zone, text) = match entry.split_once([' ', '\t']) {
            Some((z, t)) => (z, Some(t.trim())),
            None => (entry, None),
        };
        let zone = zone.strip_suffix('.').unwrap_or(zone).to_ascii_lowercase();
        if let Some(why) = zone_problem(&zone) {
            return Err((line, format!("{zone:?} is not a DNS zone: {why}")));
        }
        if let Some(t) = text {
            if t.len() > MAX_ZONE_TEXT {
                return Err((
                    line,
                    format!("the reply text is longer than {MAX_ZONE_TEXT} bytes"),
                ));
            }
            if t.bytes().any(|b| !(b' '..=b'~').contains(&b)) {
                return Err((line, "the reply text must be printable ASCII".into()));
            }
        }
        if zones.iter().any(|z| z.zone == zone) {
            return Err((line, format!("{zone} is listed twice")));
        }
        if zones.len() == MAX_ZONES {
            return Err((line, format!("more than {MAX_ZONES} zones")));
        }
        zones.push(ListZone {
            zone,
            text: text.filter(|t| !t.is_empty()).map(str::to_string),
        });
    }
    Ok(zones)
}

/// Why `zone` cannot be a zone to query under, if it cannot. Room is left
/// for the longest name put in front of it (an IPv6 address in nibbles:
/// 64 labels, 128 bytes... a domain is checked at query time).
fn zone_problem(zone: &str) -> Option<&'static str> {
    if zone.is_empty() {
        return Some("empty");
    }
    if zone.len() > 253 - 128 {
        return Some("too long to put an address in front of it");
    }
    for label in zone.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Some("a label is empty or longer than 63 bytes");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Some("only letters, digits, '-' and '_' are allowed");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_lines() {
        let z =
            parse_zones(b"# lists\nzen.example.\nbl.example  Listed: see http://bl.example/\n\n")
                .unwrap();
        assert_eq!(z.len(), 2);
        assert_eq!(z[0].zone, "zen.example");
        assert_eq!(z[0].text, None);
        assert_eq!(z[1].zone, "bl.example");
        assert_eq!(z[1].text.as_deref(), Some("Listed: see http://bl.example/"));
    }

    #[test]
    fn bad_zone_lines_name_their_line() {
        assert_eq!(parse_zones(b"ok.example\nbad zone\x01").unwrap_err().0, 2);
        assert_eq!(parse_zones(b"a..b").unwrap_err().0, 1);
        assert_eq!(parse_zones(b"a/b").unwrap_err().0, 1);
        assert_eq!(parse_zones(b"x.example\nX.example.").unwrap_err().0, 2);
        let long = format!("{}.example", "a".repeat(64));
        assert_eq!(parse_zones(long.as_bytes()).unwrap_err().0, 1);
        let many: String = (0..=MAX_ZONES).map(|i| format!("z{i}.example\n")).collect();
        assert_eq!(parse_zones(many.as_bytes()).unwrap_err().0, MAX_ZONES + 1);
    }

    #[test]
    fn policies_and_servers() {
        assert_eq!(parse_spf("").unwrap(), SpfPolicy::Record);
        assert_eq!(parse_spf("refuse").unwrap(), SpfPolicy::RefuseFail);
        assert!(parse_spf("reject").is_err());
        assert_eq!(
            parse_dns_server("127.0.0.1").unwrap(),
            "127.0.0.1:53".parse().unwrap()
        );
        assert_eq!(
            parse_dns_server("[::1]:5353").unwrap(),
            "[::1]:5353".parse().unwrap()
        );
        assert!(parse_dns_server("localhost").is_err());
    }
}
