//! DNS lists (DNSBL for client addresses, RHSBL for sender domains): the
//! name asked (RFC 5782: IPv4 octets reversed, IPv6 in reversed nibbles,
//! a domain as is, each followed by the zone), and what an answer means.
//! A listing is an A record in 127.0.0.0/8; 127.255.255.0/24 is how lists
//! say they refused the query (a public resolver, a quota), and addresses
//! outside 127/8 are what a lapsed zone's wildcard gives: both count as a
//! list that did not answer, never as a listing.

use crate::config::checks::ListZone;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::TokioResolver;
use std::net::{IpAddr, Ipv4Addr};

/// Longest text taken from a list's TXT record.
pub const MAX_TEXT: usize = 200;

/// What one list said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListAnswer {
    /// Not listed.
    Clear,
    /// Listed, with the reply text.
    Listed(String),
    /// No usable answer (timeout, SERVFAIL, a refusal code, a bad name).
    Failed(String),
}

/// The name to ask for `ip` under `zone` (RFC 5782 §2.1 and §2.4).
pub fn ip_query(ip: IpAddr, zone: &str) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.{zone}.")
        }
        IpAddr::V6(v6) => {
            let mut name = String::with_capacity(64 + zone.len() + 2);
            for byte in v6.octets().iter().rev() {
                for nibble in [byte & 0xf, byte >> 4] {
                    name.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
                    name.push('.');
                }
            }
            name.push_str(zone);
            name.push('.');
            name
        }
    }
}

/// The name to ask for a sender `domain` under `zone`; `None` when the
/// two together are not a valid DNS name (too long, bad labels).
pub fn domain_query(domain: &str, zone: &str) -> Option<String> {
    let name = format!("{}.{zone}.", domain.trim_end_matches('.'));
    Name::from_ascii(&name)
        .ok()
        .filter(|_| name.len() <= 254 && domain.split('.').all(|l| !l.is_empty() && l.len() <= 63))
        .map(|_| name)
}

/// Asks `zone` about `name`: an A lookup, and the TXT record for the text
/// when the zone's line gives none (both at once, so one round trip).
pub async fn ask(resolver: &TokioResolver, name: &str, zone: &ListZone) -> ListAnswer {
    let Ok(qname) = Name::from_ascii(name) else {
        return ListAnswer::Failed(format!("{name:?} is not a valid name"));
    };
    let a = resolver.ipv4_lookup(qname.clone());
    let answer = if zone.text.is_some() {
        (a.await, None)
    } else {
        let (a, txt) = tokio::join!(a, resolver.txt_lookup(qname));
        (a, Some(txt))
    };
    let addrs: Vec<Ipv4Addr> = match answer.0 {
        Ok(lookup) => lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect(),
        Err(NetError::Dns(DnsError::NoRecordsFound(_))) => return ListAnswer::Clear,
        Err(e) => return ListAnswer::Failed(e.to_string()),
    };
    let meaning = meaning(&addrs);
    if meaning != ListAnswer::Listed(String::new()) {
        return meaning;
    }
    let text = match (&zone.text, answer.1) {
        (Some(t), _) => t.clone(),
        (None, Some(Ok(txt))) => txt
            .answers()
            .iter()
            .find_map(|r| match &r.data {
                RData::TXT(t) => Some(printable(
                    &t.txt_data
                        .iter()
                        .flat_map(|c| c.iter().copied())
                        .collect::<Vec<u8>>(),
                )),
                _ => None,
            })
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| format!("listed in {}", zone.zone)),
        (None, _) => format!("listed in {}", zone.zone),
    };
    ListAnswer::Listed(text)
}

/// What the A records of an answer mean: `Listed` (with an empty text,
/// filled in by the caller), `Clear` when there are none, `Failed` for a
/// refusal code or an address outside 127/8.
pub fn meaning(addrs: &[Ipv4Addr]) -> ListAnswer {
    if addrs.is_empty() {
        return ListAnswer::Clear;
    }
    if let Some(a) = addrs.iter().find(|a| a.octets()[..3] == [127, 255, 255]) {
        return ListAnswer::Failed(format!("the list refused the query ({a})"));
    }
    if let Some(a) = addrs.iter().find(|a| a.octets()[0] != 127) {
        return ListAnswer::Failed(format!("answer {a} is outside 127.0.0.0/8"));
    }
    ListAnswer::Listed(String::new())
}

/// `raw` made safe for a reply line: printable ASCII only (others become
/// `?`), at most [`MAX_TEXT`] bytes, trimmed.
pub fn printable(raw: &[u8]) -> String {
    let s: String = raw
        .iter()
        .take(MAX_TEXT)
        .map(|&b| {
            if (b' '..=b'~').contains(&b) {
                b as char
            } else {
                '?'
            }
        })
        .collect();
    s.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_names() {
        let v4: IpAddr = "192.0.2.99".parse().unwrap();
        assert_eq!(ip_query(v4, "bl.example"), "99.2.0.192.bl.example.");
        let mapped: IpAddr = "::ffff:192.0.2.99".parse().unwrap();
        assert_eq!(ip_query(mapped, "bl.example"), "99.2.0.192.bl.example.");
        // RFC 5782 §2.4's example.
        let v6: IpAddr = "2001:db8:1:2:3:4:567:89ab".parse().unwrap();
        assert_eq!(
            ip_query(v6, "ugly.example.com"),
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ugly.example.com."
        );
        assert_eq!(
            domain_query("spam.example", "rhs.example").as_deref(),
            Some("spam.example.rhs.example.")
        );
        assert_eq!(domain_query("a..b", "rhs.example"), None);
        assert_eq!(domain_query(&"a.".repeat(130), "rhs.example"), None);
        assert_eq!(domain_query(&"x".repeat(64), "rhs.example"), None);
    }

    #[test]
    fn answers() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(meaning(&[]), ListAnswer::Clear);
        assert_eq!(
            meaning(&[ip("127.0.0.2")]),
            ListAnswer::Listed(String::new())
        );
        assert!(matches!(
            meaning(&[ip("127.255.255.254")]),
            ListAnswer::Failed(_)
        ));
        assert!(matches!(
            meaning(&[ip("127.0.0.2"), ip("10.0.0.1")]),
            ListAnswer::Failed(_)
        ));
        assert_eq!(printable(b" Listed\r\nby x\x00 "), "Listed??by x?");
        assert_eq!(printable(&[b'a'; 500]).len(), MAX_TEXT);
    }
}
