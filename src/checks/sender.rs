//! The resolvable-sender check (`control/require_resolvable_fromhost`):
//! the sender's domain must have an MX record, or failing that an A or
//! AAAA record (RFC 5321 §5.1). A domain whose only MX is `.` says it
//! takes no mail at all (null MX, RFC 7505).

use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::TokioResolver;

/// What the sender's domain looks like in the DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolvable {
    /// It has an MX, A or AAAA record (or is an address literal).
    Yes,
    /// It has none of them, or does not exist.
    No,
    /// It publishes a null MX: it sends and takes no mail.
    NullMx,
    /// The DNS did not answer; why.
    Unknown(String),
}

impl Resolvable {
    /// The value of `SENDER_RESOLVABLE` for plugins.
    pub fn as_str(&self) -> &'static str {
        match self {
            Resolvable::Yes => "yes",
            Resolvable::No => "no",
            Resolvable::NullMx => "nullmx",
            Resolvable::Unknown(_) => "unknown",
        }
    }
}

/// Looks the sender's `domain` up (an IDNA U-label is asked in its
/// A-label form).
pub async fn check(resolver: &TokioResolver, domain: &str) -> Resolvable {
    if domain.starts_with('[') {
        return Resolvable::Yes;
    }
    let Some(ascii) = crate::checks::ascii_domain(domain) else {
        return Resolvable::No;
    };
    let Ok(name) = Name::from_ascii(format!("{ascii}.")) else {
        return Resolvable::No;
    };
    match resolver.mx_lookup(name.clone()).await {
        Ok(mx) => {
            let exchanges: Vec<bool> = mx
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(m) => Some(m.exchange.is_root()),
                    _ => None,
                })
                .collect();
            match exchanges.as_slice() {
                [] => {}
                [true] => return Resolvable::NullMx,
                _ => return Resolvable::Yes,
            }
        }
        Err(NetError::Dns(DnsError::NoRecordsFound(_))) => {}
        Err(e) => return Resolvable::Unknown(e.to_string()),
    }
    match resolver.lookup_ip(name).await {
        Ok(ips) if ips.iter().next().is_some() => Resolvable::Yes,
        Ok(_) | Err(NetError::Dns(DnsError::NoRecordsFound(_))) => Resolvable::No,
        Err(e) => Resolvable::Unknown(e.to_string()),
    }
}
