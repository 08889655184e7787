//! Built-in client and sender checks: DNS lists of client addresses
//! (`dnsbl_zones`) and sender domains (`rhsbl_zones`), the resolvable
//! sender (`require_resolvable_fromhost`), and SPF. Lookups run in
//! parallel under one deadline per stage: the client's lists start when it
//! connects, the sender's checks at MAIL. This module finds things out; the
//! session decides what they mean for a command (`session/checks.rs`).

pub mod dnslist;
pub mod message;
pub mod resolver;
pub mod sender;
pub mod spf;

use crate::config::checks::{ChecksConfig, ListZone};
use dnslist::ListAnswer;
use resolver::Dns;
use sender::Resolvable;
use spf::SpfResults;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::time::{timeout_at, Instant};

/// The ASCII (A-label) form of `domain`, lower case, without a trailing
/// dot; `None` when it cannot be a DNS name.
pub fn ascii_domain(domain: &str) -> Option<String> {
    let domain = domain.trim_end_matches('.');
    if domain.is_empty() || domain.len() > 253 {
        return None;
    }
    let ascii = if domain.is_ascii() {
        domain.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(domain).ok()?
    };
    let ok = ascii.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    ok.then_some(ascii)
}

/// Each list's answer, in the order of its file.
pub type ListAnswers = Vec<(String, ListAnswer)>;

/// Asks every zone about `name_of(zone)` at once; a zone that has not
/// answered by `deadline` failed.
async fn ask_all(
    dns: &Dns,
    zones: &[ListZone],
    deadline: Instant,
    name_of: impl Fn(&str) -> Option<String>,
) -> ListAnswers {
    let asks = zones.iter().map(|z| {
        let name = name_of(&z.zone);
        async move {
            let answer = match name {
                None => ListAnswer::Failed("the name to ask is not a valid DNS name".into()),
                Some(name) => timeout_at(deadline, dnslist::ask(&dns.resolver, &name, z))
                    .await
                    .unwrap_or_else(|_| ListAnswer::Failed("no answer in time".into())),
            };
            (z.zone.clone(), answer)
        }
    });
    futures_util::future::join_all(asks).await
}

/// The client's DNS lists, asked in a task of their own from the moment it
/// connects; the task ends with the session.
pub struct ClientLists {
    /// The task, until its answers are taken.
    task: Option<tokio::task::JoinHandle<ListAnswers>>,
    /// The answers, once taken.
    answers: Option<ListAnswers>,
}

impl Drop for ClientLists {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl ClientLists {
    /// Starts asking every zone of `cfg` about `ip`, under `cfg.timeout`.
    pub fn start(dns: Arc<Dns>, cfg: &ChecksConfig, ip: IpAddr) -> ClientLists {
        let zones = cfg.dnsbl.clone();
        let deadline = Instant::now() + cfg.timeout;
        let task = tokio::spawn(async move {
            ask_all(&dns, &zones, deadline, |zone| {
                Some(dnslist::ip_query(ip, zone))
            })
            .await
        });
        ClientLists {
            task: Some(task),
            answers: None,
        }
    }

    /// The answers, waiting for them if need be (never past the deadline
    /// given at the start).
    pub async fn answers(&mut self) -> &ListAnswers {
        if let Some(task) = self.task.take() {
            self.answers = Some(task.await.unwrap_or_default());
        }
        self.answers.get_or_insert_with(Vec::new)
    }
}

/// What the checks found out about one MAIL's sender.
#[derive(Debug, Clone, Default)]
pub struct SenderFacts {
    /// The sender domain's lists (empty without rhsbl_zones or a domain).
    pub rhsbl: ListAnswers,
    /// The resolvable check, when configured and there is a domain.
    pub resolvable: Option<Resolvable>,
    /// SPF, when configured and it answered in time.
    pub spf: Option<SpfResults>,
}

/// The facts of a MAIL stage: which checks to run.
pub struct SenderQuery<'a> {
    /// The client's address.
    pub ip: Option<IpAddr>,
    /// The HELO/EHLO name.
    pub helo: &'a str,
    /// Our name (`control/me`), for SPF's `%{r}`.
    pub me: &'a str,
    /// The envelope sender (empty for `<>`).
    pub sender: &'a str,
    /// Run the lists and the resolvable check (not for relay clients).
    pub lists: bool,
}

/// Runs the MAIL stage's checks at once, under `cfg.timeout`.
pub async fn sender_checks(dns: &Dns, cfg: &ChecksConfig, q: &SenderQuery<'_>) -> SenderFacts {
    let deadline = Instant::now() + cfg.timeout;
    let domain = q
        .sender
        .rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| !d.is_empty());
    let rhsbl = async {
        match (q.lists, domain) {
            (true, Some(d)) if !cfg.rhsbl.is_empty() && !d.starts_with('[') => {
                let ascii = ascii_domain(d);
                ask_all(dns, &cfg.rhsbl, deadline, |zone| {
                    dnslist::domain_query(ascii.as_deref()?, zone)
                })
                .await
            }
            _ => Vec::new(),
        }
    };
    let resolvable = async {
        match (q.lists && cfg.resolvable_fromhost, domain) {
            (true, Some(d)) => Some(
                timeout_at(deadline, sender::check(&dns.resolver, d))
                    .await
                    .unwrap_or_else(|_| Resolvable::Unknown("no answer in time".into())),
            ),
            _ => None,
        }
    };
    let spf = async {
        let ip = q.ip?;
        if !cfg.evaluates_spf() {
            return None;
        }
        let auth = mail_auth::MessageAuthenticator(dns.resolver.clone());
        timeout_at(deadline, spf::evaluate(&auth, ip, q.helo, q.me, q.sender))
            .await
            .ok()
    };
    let (rhsbl, resolvable, spf) = tokio::join!(rhsbl, resolvable, spf);
    SenderFacts {
        rhsbl,
        resolvable,
        spf,
    }
}

/// The zones that list, space-separated, and the first one's text.
pub fn listings(answers: &ListAnswers) -> (String, Option<&str>) {
    let mut zones = Vec::new();
    let mut text = None;
    for (zone, a) in answers {
        if let ListAnswer::Listed(t) = a {
            zones.push(zone.as_str());
            text.get_or_insert(t.as_str());
        }
    }
    (zones.join(" "), text)
}

/// The zones that failed, space-separated.
pub fn failures(answers: &ListAnswers) -> String {
    answers
        .iter()
        .filter(|(_, a)| matches!(a, ListAnswer::Failed(_)))
        .map(|(z, _)| z.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_domains() {
        assert_eq!(ascii_domain("Example.COM.").as_deref(), Some("example.com"));
        assert_eq!(
            ascii_domain("b\u{fc}cher.example").as_deref(),
            Some("xn--bcher-kva.example")
        );
        assert_eq!(ascii_domain("a..b"), None);
        assert_eq!(ascii_domain("a b"), None);
        assert_eq!(ascii_domain(""), None);
    }

    #[test]
    fn listing_summaries() {
        let a = vec![
            ("one".to_string(), ListAnswer::Clear),
            ("two".to_string(), ListAnswer::Listed("spam".into())),
            ("three".to_string(), ListAnswer::Failed("timeout".into())),
            ("four".to_string(), ListAnswer::Listed("more".into())),
        ];
        assert_eq!(listings(&a), ("two four".to_string(), Some("spam")));
        assert_eq!(failures(&a), "three");
    }
}
