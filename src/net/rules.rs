//! Access rules in the source format of tcprules (qmail's `tcp.smtp`):
//! `address:allow|deny[,VAR="value"]...`. As with tcpserver, the most
//! specific matching address wins; among equals, the first in the file.
//!
//! Supported address forms: empty (every client), `1.2.3.4` (one IPv4
//! address), `1.2.3.` / `1.2.` / `1.` (a prefix ending in a dot),
//! `1.2.3.4-20` (a range of the last number), `=host.example` (the client's
//! verified host name, needs `--reverse-dns`) and `=.example` (any host
//! name ending in `.example`). IPv6 clients match the empty address and the
//! host-name forms. Other forms (`user@`, `=` alone, IPv6 literals) are
//! reported as errors with file:line.

use crate::config::ConfigError;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// What a rule's address matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// Every client.
    Any,
    /// One IPv4 address.
    Exact(Ipv4Addr),
    /// IPv4 addresses whose dotted form starts with this text (ends in `.`).
    Prefix(String),
    /// `a.b.c.X` with X in the inclusive range.
    Range([u8; 3], u8, u8),
    /// The verified host name, exactly (lower case).
    Host(String),
    /// Host names ending in this suffix (starts with `.`, lower case).
    Domain(String),
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Line number in the file.
    pub lineno: usize,
    /// Which clients it matches.
    pub pattern: Pattern,
    /// `allow` (true) or `deny`.
    pub allow: bool,
    /// Variables put into the session's environment, in order.
    pub vars: Vec<(String, String)>,
}

/// The rules of one file, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules(pub Vec<Rule>);

impl Rules {
    /// Reads a rules file; every bad line is reported.
    pub fn load(path: &Path) -> Result<Rules, Vec<ConfigError>> {
        let text = crate::config::file::read(path).map_err(|e| vec![ConfigError::io(path, &e)])?;
        Rules::parse(&text).map_err(|errs| {
            errs.into_iter()
                .map(|(line, msg)| ConfigError::at(path, Some(line), msg))
                .collect()
        })
    }

    /// Parses rules text; errors are (line, message).
    pub fn parse(text: &[u8]) -> Result<Rules, Vec<(usize, String)>> {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
            let lineno = i + 1;
            let Ok(line) = std::str::from_utf8(raw) else {
                errors.push((lineno, "not UTF-8".to_string()));
                continue;
            };
            let line = line
                .trim_end_matches([' ', '\t', '\r'])
                .trim_start_matches([' ', '\t']);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_rule(lineno, line) {
                Ok(rule) => rules.push(rule),
                Err(e) => errors.push((lineno, e)),
            }
        }
        if errors.is_empty() {
            Ok(Rules(rules))
        } else {
            Err(errors)
        }
    }

    /// The rule for a client, looked up as tcpserver does: the most
    /// specific matching address wins (exact address or range, then
    /// `=host`, then longer before shorter prefixes, then longer before
    /// shorter `=.domain`, then the empty address); among equally specific
    /// rules, the first in the file.
    pub fn find(&self, ip: IpAddr, host: Option<&str>) -> Option<&Rule> {
        self.0
            .iter()
            .filter(|r| r.pattern.matches(ip, host))
            .min_by_key(|r| r.pattern.rank())
    }
}

impl Rules {
    /// The rule for a client whose address is unknown (a PROXY LOCAL or
    /// UNKNOWN header): only the empty address matches.
    pub fn find_for_unknown(&self) -> Option<&Rule> {
        self.0.iter().find(|r| r.pattern == Pattern::Any)
    }
}

impl Pattern {
    /// Lower is more specific (tcpserver's lookup order).
    fn rank(&self) -> usize {
        match self {
            Pattern::Exact(_) | Pattern::Range(..) => 0,
            Pattern::Host(_) => 1,
            Pattern::Prefix(p) => 10 - p.matches('.').count(),
            Pattern::Domain(d) => 1000 - d.len().min(900),
            Pattern::Any => 10_000,
        }
    }

    /// Whether a client with this address and verified host name matches.
    pub fn matches(&self, ip: IpAddr, host: Option<&str>) -> bool {
        let v4 = match ip.to_canonical() {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        };
        let host = host.map(str::to_ascii_lowercase);
        match self {
            Pattern::Any => true,
            Pattern::Exact(a) => v4 == Some(*a),
            Pattern::Prefix(p) => v4.is_some_and(|a| a.to_string().starts_with(p.as_str())),
            Pattern::Range(first, lo, hi) => v4.is_some_and(|a| {
                let o = a.octets();
                o[..3] == first[..] && (*lo..=*hi).contains(&o[3])
            }),
            Pattern::Host(h) => host.as_deref() == Some(h.as_str()),
            Pattern::Domain(d) => host.is_some_and(|h| h.ends_with(d.as_str())),
        }
    }
}

/// Parses `address:instructions`.
fn parse_rule(lineno: usize, line: &str) -> Result<Rule, String> {
    let head = line.split(',').next().unwrap_or(line);
    if let Some(last) = head.rfind(':').filter(|_| head.matches(':').count() > 1) {
        if matches!(&head[last + 1..], "allow" | "deny") {
            return Err(format!(
                "{:?}: an IPv6 address cannot be written in a rule (the tcprules format has \
                 no syntax for one); IPv6 clients match =host rules and the empty address",
                &head[..last]
            ));
        }
    }
    let colon = line
        .find(':')
        .ok_or("no ':' between address and instructions")?;
    let (addr, rest) = (&line[..colon], &line[colon + 1..]);
    let pattern = parse_address(addr)?;
    let (verb, mut rest) = match rest.find(',') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let allow = match verb {
        "allow" => true,
        "deny" => false,
        other => return Err(format!("expected allow or deny, found {other:?}")),
    };
    let mut vars = Vec::new();
    while let Some(r) = rest.strip_prefix(',') {
        let eq = r
            .find('=')
            .ok_or_else(|| format!("expected VAR=value in {r:?}"))?;
        let name = &r[..eq];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("bad variable name {name:?}"));
        }
        let value_start = &r[eq + 1..];
        let (value, after) = match value_start.chars().next() {
            Some(q @ ('"' | '\'')) => {
                let body = &value_start[1..];
                let end = body
                    .find(q)
                    .ok_or_else(|| format!("unterminated {q} quote"))?;
                (&body[..end], &body[end + 1..])
            }
            _ => match value_start.find(',') {
                Some(i) => (&value_start[..i], &value_start[i..]),
                None => (value_start, ""),
            },
        };
        if !after.is_empty() && !after.starts_with(',') {
            return Err(format!(
                "unexpected text after the value of {name}: {after:?}"
            ));
        }
        vars.push((name.to_string(), value.to_string()));
        rest = after;
    }
    if !rest.is_empty() {
        return Err(format!("unexpected text {rest:?}"));
    }
    Ok(Rule {
        lineno,
        pattern,
        allow,
        vars,
    })
}

/// Parses the address part of a rule.
fn parse_address(addr: &str) -> Result<Pattern, String> {
    if addr.is_empty() {
        return Ok(Pattern::Any);
    }
    if let Some(host) = addr.strip_prefix('=') {
        let host = host.to_ascii_lowercase();
        return match host.as_str() {
            "" => Err("'=' alone is not supported; use =host or =.domain".into()),
            h if h.starts_with('.') => Ok(Pattern::Domain(host)),
            _ => Ok(Pattern::Host(host)),
        };
    }
    if addr.contains('@') {
        return Err("user@address rules are not supported (no ident lookups)".into());
    }
    let bad = || {
        format!("unsupported address {addr:?}: use 1.2.3.4, 1.2.3., 1.2.3.4-9, =host or =.domain")
    };
    if let Some(prefix) = addr.strip_suffix('.') {
        let parts: Vec<&str> = prefix.split('.').collect();
        if parts.len() > 3 || !parts.iter().all(|p| p.parse::<u8>().is_ok()) {
            return Err(bad());
        }
        return Ok(Pattern::Prefix(addr.to_string()));
    }
    if let Some((base, hi)) = addr.split_once('-') {
        let lo_ip: Ipv4Addr = base.parse().map_err(|_| bad())?;
        let hi: u8 = hi.parse().map_err(|_| bad())?;
        let o = lo_ip.octets();
        if hi < o[3] {
            return Err(format!("empty range {addr:?}"));
        }
        return Ok(Pattern::Range([o[0], o[1], o[2]], o[3], hi));
    }
    addr.parse::<Ipv4Addr>()
        .map(Pattern::Exact)
        .map_err(|_| bad())
}

#[cfg(test)]
mod tests {

    #[test]
    fn ipv6_literals_get_an_error_that_says_so() {
        for line in [
            "::1:allow",
            "2001:db8::1:deny,RELAYCLIENT=\"\"",
            "fe80::/10:allow",
        ] {
            let errors = Rules::parse(line.as_bytes()).unwrap_err();
            assert!(
                errors[0].1.contains("an IPv6 address cannot be written"),
                "{line}: {errors:?}"
            );
        }
        assert!(Rules::parse(b"127.0.0.1:allow\n:deny\n").is_ok());
    }

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn rule_forms() {
        let text = "# comment\n\n127.:allow,RELAYCLIENT=\"\"\n10.1.2.3:allow,NOSPP=\"1\",X='a,b'\n\
                    10.1.2.10-20:deny\n=bad.host.example:deny\n=.spam.example:allow,DATABYTES=1000\n:allow\n";
        for ending in ["\n", "\r\n"] {
            let rules = Rules::parse(text.replace('\n', ending).as_bytes()).unwrap();
            assert_eq!(rules.0.len(), 6);
            let r = rules.find(ip("127.0.0.1"), None).unwrap();
            assert_eq!(
                (r.lineno, r.allow, r.vars.clone()),
                (3, true, vec![("RELAYCLIENT".into(), "".into())])
            );
            let r = rules.find(ip("10.1.2.3"), None).unwrap();
            assert_eq!(
                r.vars,
                vec![("NOSPP".into(), "1".into()), ("X".into(), "a,b".into())]
            );
            assert!(!rules.find(ip("10.1.2.15"), None).unwrap().allow);
            assert!(rules.find(ip("10.1.2.21"), None).unwrap().allow);
            assert!(
                !rules
                    .find(ip("192.0.2.1"), Some("BAD.host.example"))
                    .unwrap()
                    .allow
            );
            assert_eq!(
                rules
                    .find(ip("192.0.2.1"), Some("a.spam.example"))
                    .unwrap()
                    .lineno,
                7
            );
            assert_eq!(rules.find(ip("::ffff:127.0.0.1"), None).unwrap().lineno, 3);
            assert_eq!(rules.find(ip("::1"), None).unwrap().lineno, 8);
        }
    }

    #[test]
    fn most_specific_rule_wins_as_with_tcpserver() {
        let rules = Rules::parse(b":allow,WHO=any\n10.:allow,RELAYCLIENT=\"\"\n10.9.:allow,WHO=ten9\n10.9.9.9:allow\n=.example:allow,WHO=dom\n=.b.example:allow,WHO=bdom\n=a.b.example:allow,WHO=host\n10.9.9.9:deny\n").unwrap();
        let who =
            |ip: &str, host: Option<&str>| rules.find(super::tests::ip(ip), host).unwrap().lineno;
        assert_eq!(who("10.9.9.9", None), 4);
        assert_eq!(who("10.9.1.1", None), 3);
        assert_eq!(who("10.1.1.1", None), 2);
        assert_eq!(who("192.0.2.1", Some("a.b.example")), 7);
        assert_eq!(who("192.0.2.1", Some("x.b.example")), 6);
        assert_eq!(who("192.0.2.1", Some("x.example")), 5);
        assert_eq!(who("10.9.9.9", Some("a.b.example")), 4);
        assert_eq!(who("192.0.2.1", None), 1);
    }

    #[test]
    fn bad_lines_are_all_reported() {
        let errs = Rules::parse(b"127.:allow\nnocolon\n1.2.3.4:permit\nuser@1.2.3.4:allow\n=:allow\n1.2.3.4:allow,X=\"open\n300.1.:deny\n1.2.3.9-2:deny\n::1:allow\n").unwrap_err();
        let lines: Vec<usize> = errs.iter().map(|e| e.0).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6, 7, 8, 9]);
    }
}
