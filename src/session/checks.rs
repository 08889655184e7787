//! The built-in checks in the session: the client's DNS lists start at
//! connect; the sender's lists, the resolvable-sender check and SPF run at
//! MAIL, before the `[mail]` hook, so plugins see every result. Verdicts are
//! applied where qmail applies its own checks, after the hook and only
//! without a plugin's `O`: the sender's at MAIL, the lists at RCPT (so the
//! client learns why, and `postmaster@`/`abuse@` still get mail).
//! `RELAYCLIENT` and authenticated clients skip the lists and the
//! resolvable check; SPF is still recorded for them but never refuses.

use super::Session;
use crate::checks::dnslist::ListAnswer;
use crate::checks::message::{self, Identities};
use crate::checks::resolver::{self, Dns};
use crate::checks::sender::Resolvable;
use crate::checks::{ClientLists, SenderFacts, SenderQuery};
use crate::config::checks::{DmarcPolicy, ListFailure, SpfPolicy};
use crate::logging::quoted;
use crate::protocol::data::DataDecoder;
use crate::protocol::header_filter::HeaderFilter;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Variables the checks set for plugins (removed again at each MAIL).
pub const CHECK_VARIABLES: [&str; 17] = [
    "DNSBL",
    "DNSBL_TEXT",
    "DNSBL_FAILED",
    "RHSBL",
    "RHSBL_TEXT",
    "RHSBL_FAILED",
    "SENDER_RESOLVABLE",
    "SPF",
    "SPF_HELO",
    "SPF_DOMAIN",
    "DKIM",
    "DKIM_DOMAINS",
    "ARC",
    "DMARC",
    "DMARC_POLICY",
    "DMARC_DOMAIN",
    "AUTHENTICATION_RESULTS",
];

/// A session's check state (boxed: sessions without checks carry only a
/// pointer).
pub(crate) struct SessionChecks {
    /// The resolver.
    dns: Arc<Dns>,
    /// The client's address, when it is one.
    ip: Option<IpAddr>,
    /// `RBLSMTPD` as the session started: empty skips the client's lists,
    /// a text refuses the client with it.
    rblsmtpd: Option<Vec<u8>>,
    /// The client's lists, when asked.
    client_lists: Option<ClientLists>,
    /// Their answers, once MAIL waited for them.
    client: Option<crate::checks::ListAnswers>,
    /// What the last MAIL's checks found.
    sender: SenderFacts,
    /// The last MAIL's sender, as text (for Authentication-Results:).
    sender_address: String,
}

impl Session {
    /// Starts the checks at connect: finds the resolver, and sets the
    /// client's DNS lists going unless `RBLSMTPD` or `RELAYCLIENT` is set.
    pub(crate) fn start_checks(&mut self, server: Option<SocketAddr>) {
        let cfg = &self.cfg.control.checks;
        if !cfg.any() {
            return;
        }
        let dns = match resolver::shared(server.or(cfg.dns_server), cfg.timeout) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(session = %self.id, error = %e, "DNS checks skipped: no resolver");
                return;
            }
        };
        let ip = std::str::from_utf8(&self.client.remote_ip)
            .ok()
            .and_then(|s| s.parse::<IpAddr>().ok());
        let rblsmtpd = self.env.get("RBLSMTPD").map(<[u8]>::to_vec);
        let client_lists = match (ip, &rblsmtpd, &self.client.relay_client) {
            (Some(ip), None, None) if cfg.at_connect() => {
                Some(ClientLists::start(dns.clone(), cfg, ip))
            }
            _ => None,
        };
        self.checks = Some(Box::new(SessionChecks {
            dns,
            ip,
            rblsmtpd,
            client_lists,
            client: None,
            sender: SenderFacts::default(),
            sender_address: String::new(),
        }));
    }

    /// Whether this client skips the lists (relay client, authenticated).
    fn trusted_client(&self) -> bool {
        self.client.relay_client.is_some() || self.authenticated.is_some()
    }

    /// MAIL, before the hook: waits for the client's lists, runs the
    /// sender's checks, and tells plugins the results.
    pub(crate) async fn run_sender_checks(&mut self, sender: &[u8]) {
        let lists = !self.trusted_client();
        let Some(checks) = self.checks.as_mut() else {
            return;
        };
        let cfg = &self.cfg.control.checks;
        let me = self
            .cfg
            .control
            .me
            .as_deref()
            .unwrap_or(&self.cfg.control.greeting);
        let (helo, me, sender_s) = (
            String::from_utf8_lossy(&self.helo).into_owned(),
            String::from_utf8_lossy(me).into_owned(),
            String::from_utf8_lossy(sender).into_owned(),
        );
        let query = SenderQuery {
            ip: checks.ip,
            helo: &helo,
            me: &me,
            sender: &sender_s,
            lists,
        };
        let (client, facts) = tokio::join!(
            async {
                match &mut checks.client_lists {
                    Some(l) => Some(l.answers().await.clone()),
                    None => None,
                }
            },
            crate::checks::sender_checks(&checks.dns, cfg, &query)
        );
        checks.sender = facts;
        checks.sender_address = sender_s.clone();
        for name in CHECK_VARIABLES {
            self.env.remove(name);
        }
        let id = self.id.clone();
        let mut vars: Vec<(&str, String)> = Vec::new();
        for (prefix, answers) in [
            ("DNSBL", client.as_ref()),
            ("RHSBL", Some(&checks.sender.rhsbl)),
        ] {
            let Some(answers) = answers.filter(|a| !a.is_empty()) else {
                continue;
            };
            let (zones, text) = crate::checks::listings(answers);
            for (zone, a) in answers {
                if let ListAnswer::Failed(why) = a {
                    tracing::warn!(session = %id, zone = %zone, error = %why, "DNS list did not answer");
                }
            }
            vars.push((prefix, zones));
            if let Some(t) = text {
                vars.push((
                    if prefix == "DNSBL" {
                        "DNSBL_TEXT"
                    } else {
                        "RHSBL_TEXT"
                    },
                    t.to_string(),
                ));
            }
            let failed = crate::checks::failures(answers);
            if !failed.is_empty() {
                vars.push((
                    if prefix == "DNSBL" {
                        "DNSBL_FAILED"
                    } else {
                        "RHSBL_FAILED"
                    },
                    failed,
                ));
            }
        }
        if let Some(r) = &checks.sender.resolvable {
            if let Resolvable::Unknown(why) = r {
                tracing::warn!(session = %id, error = %why, "sender domain lookup failed");
            }
            vars.push(("SENDER_RESOLVABLE", r.as_str().to_string()));
        }
        if let Some(spf) = &checks.sender.spf {
            vars.push(("SPF", spf.mail_from.result.to_string()));
            vars.push(("SPF_DOMAIN", spf.mail_from.domain.clone()));
            vars.push(("SPF_HELO", spf.helo.result.to_string()));
        }
        if client.is_some() {
            checks.client = client;
        }
        for (name, value) in vars {
            self.env.set(name, value);
        }
    }

    /// MAIL, after the hook (without `O`): the sender's refusal, if the
    /// checks found one.
    pub(crate) fn sender_refusal(&self) -> Option<String> {
        let checks = self.checks.as_ref()?;
        if self.trusted_client() {
            return None;
        }
        let facts = &checks.sender;
        let refusal = match &facts.resolvable {
            Some(Resolvable::No) | Some(Resolvable::Unknown(_)) => Some((
                "resolvable",
                "450 sorry, I can't find a mail exchanger or address for your sender domain (#4.1.8)"
                    .to_string(),
            )),
            Some(Resolvable::NullMx) => Some((
                "resolvable",
                "550 sorry, your sender domain does not accept mail (#5.7.27)".to_string(),
            )),
            _ => None,
        };
        let refusal = refusal.or_else(|| {
            let spf = facts.spf.as_ref()?;
            (self.cfg.control.checks.spf == SpfPolicy::RefuseFail && spf.mail_from.result == "fail")
                .then(|| {
                    let why = spf.mail_from.explanation.clone().unwrap_or_else(|| {
                        format!(
                            "{} does not allow this host to send its mail",
                            spf.mail_from.domain
                        )
                    });
                    (
                        "spf",
                        format!("550 sorry, SPF check failed: {why} (#5.7.23)"),
                    )
                })
        })?;
        tracing::info!(session = %self.id, check = refusal.0, reply = %quoted(refusal.1.as_bytes()), "sender refused by a check");
        Some(refusal.1)
    }

    /// RCPT, after the hook (without `O`): the refusal the DNS lists or
    /// `RBLSMTPD` give, if any. `postmaster` and `abuse` are never refused.
    pub(crate) fn list_refusal(&self, rcpt: &[u8]) -> Option<String> {
        let checks = self.checks.as_ref()?;
        if self.trusted_client() || is_role_address(rcpt) {
            return None;
        }
        let refusal = self.list_refusal_of(checks)?;
        tracing::info!(session = %self.id, check = refusal.0, reply = %quoted(refusal.1.as_bytes()), "recipient refused by a check");
        Some(refusal.1)
    }

    /// [`Session::list_refusal`]'s decision: the check and the reply.
    fn list_refusal_of(&self, checks: &SessionChecks) -> Option<(&'static str, String)> {
        if let Some(text) = checks.rblsmtpd.as_deref().filter(|t| !t.is_empty()) {
            let text = crate::checks::dnslist::printable(text);
            return Some(match text.strip_prefix('-') {
                Some(t) => ("rblsmtpd", format!("553 {t}")),
                None => ("rblsmtpd", format!("451 {text}")),
            });
        }
        let defer = self.cfg.control.checks.list_failure == ListFailure::Defer;
        for (what, answers) in [
            ("dnsbl", checks.client.as_ref()),
            ("rhsbl", Some(&checks.sender.rhsbl)),
        ] {
            for (zone, a) in answers.into_iter().flatten() {
                match a {
                    ListAnswer::Listed(text) => {
                        let whose = if what == "dnsbl" {
                            "your address"
                        } else {
                            "your sender domain"
                        };
                        return Some((
                            what,
                            format!("553 sorry, {whose} is listed in {zone}: {text} (#5.7.1)"),
                        ));
                    }
                    ListAnswer::Failed(_) if defer => {
                        return Some((
                            what,
                            format!("451 sorry, the DNS list {zone} did not answer, try again later (#4.4.3)"),
                        ));
                    }
                    _ => {}
                }
            }
        }
        None
    }

    /// The `Authentication-Results:` field with the SPF results, when
    /// SPF ran and messages are not verified whole (then the field comes
    /// after the message: [`Session::verify_message`]), with our name
    /// (`control/me`) as authserv-id.
    pub(crate) fn auth_results_field(&self) -> Option<Vec<u8>> {
        if self.cfg.control.checks.verifies_messages() {
            return None;
        }
        let checks = self.checks.as_ref()?;
        let spf = checks.sender.spf.as_ref()?;
        let (id, helo, sender) = self.identities();
        Some(message::spf_field(
            &Identities {
                authserv_id: &id,
                ip: checks.ip?,
                helo: &helo,
                sender: &sender,
            },
            spf,
        ))
    }

    /// Our authserv-id, the HELO name and the transaction's sender, as
    /// text.
    fn identities(&self) -> (String, String, String) {
        let sender = self
            .checks
            .as_ref()
            .map(|c| c.sender_address.clone())
            .unwrap_or_default();
        (
            String::from_utf8_lossy(self.authserv_id()).into_owned(),
            String::from_utf8_lossy(&self.helo).into_owned(),
            sender,
        )
    }

    /// DKIM, ARC and DMARC for a message received whole (`control/dmarc`):
    /// the results go to the environment for `[body]` plugins; returns
    /// the `Authentication-Results:` field to put on top, or the refusal
    /// when DMARC is enforced and the domain asks for `p=reject`.
    pub(crate) async fn verify_message(
        &mut self,
        spooled: &crate::queue::spool::Spooled,
    ) -> Result<Vec<u8>, String> {
        let policy = self.cfg.control.checks.dmarc;
        let Some(checks) = self.checks.as_ref().filter(|_| policy != DmarcPolicy::Off) else {
            return Ok(Vec::new());
        };
        let (Some(ip), dns) = (checks.ip, checks.dns.clone()) else {
            return Ok(Vec::new());
        };
        let (id, helo, sender) = self.identities();
        let who = Identities {
            authserv_id: &id,
            ip,
            helo: &helo,
            sender: &sender,
        };
        let spf = checks.sender.spf.clone();
        if spooled.size > message::MAX_VERIFIED_BYTES {
            tracing::info!(session = %self.id, size = spooled.size, "message too large to verify (DKIM, ARC, DMARC)");
            return Ok(spf
                .map(|s| message::spf_field(&who, &s))
                .unwrap_or_default());
        }
        let mut raw = Vec::with_capacity(spooled.size as usize);
        let mut reader = spooled.reader();
        loop {
            match reader.next_chunk().await {
                Ok(Some(chunk)) => raw.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(session = %self.id, error = %e, "cannot read the spooled message to verify it");
                    return Err(super::body::SPOOL_FAILURE.into());
                }
            }
        }
        let auth = mail_auth::MessageAuthenticator(dns.resolver.clone());
        let deadline = self.cfg.control.checks.timeout;
        let results = match tokio::time::timeout(
            deadline,
            message::verify(&auth, &raw, &who, spf.as_ref()),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(session = %self.id, "DKIM, ARC and DMARC checks did not finish in time");
                return Ok(spf
                    .map(|s| message::spf_field(&who, &s))
                    .unwrap_or_default());
            }
        };
        drop(raw);
        for (name, value) in [
            ("DKIM", results.dkim.as_str()),
            ("DKIM_DOMAINS", results.dkim_domains.as_str()),
            ("ARC", results.arc.as_str()),
            ("DMARC", results.dmarc.as_str()),
            ("DMARC_POLICY", results.dmarc_policy),
            ("DMARC_DOMAIN", results.dmarc_domain.as_str()),
        ] {
            self.env.set(name, value);
        }
        self.env.set("AUTHENTICATION_RESULTS", &results.field);
        let mut field = results.field.clone();
        if policy == DmarcPolicy::Enforce && !self.trusted_client() {
            if results.dmarc_fails_with("reject") {
                tracing::info!(session = %self.id, domain = %results.dmarc_domain, applied = "reject", "DMARC policy applied");
                return Err(format!(
                    "550 sorry, the message fails DMARC and {} asks to reject it (#5.7.1)",
                    results.dmarc_domain
                ));
            }
            if results.dmarc_fails_with("quarantine") {
                tracing::info!(session = %self.id, domain = %results.dmarc_domain, applied = "quarantine", "DMARC policy applied");
                field.extend_from_slice(
                    format!("X-DMARC-Quarantine: {}\n", results.dmarc_domain).as_bytes(),
                );
            }
        }
        Ok(field)
    }

    /// Our authserv-id: `control/me`, else the greeting's name.
    fn authserv_id(&self) -> &[u8] {
        let control = &self.cfg.control;
        let me = control.me.as_deref().unwrap_or(&control.greeting);
        me.split(|&b| b == b' ').next().unwrap_or(me)
    }

    /// The body decoder for a message (`chunked` for BDAT): it removes
    /// forged `Authentication-Results:` fields when we add our own.
    pub(crate) fn body_decoder(&self, chunked: bool) -> DataDecoder {
        let decoder = if chunked {
            DataDecoder::chunked()
        } else {
            DataDecoder::default()
        };
        let adds_results = self.checks.as_ref().is_some_and(|c| c.sender.spf.is_some());
        match adds_results {
            true => decoder.with_header_filter(HeaderFilter::new(self.authserv_id())),
            false => decoder,
        }
    }
}

/// `postmaster` or `abuse` (any domain, any case): always reachable.
fn is_role_address(rcpt: &[u8]) -> bool {
    let local = match rcpt.iter().rposition(|&b| b == b'@') {
        Some(at) => &rcpt[..at],
        None => rcpt,
    };
    local.eq_ignore_ascii_case(b"postmaster") || local.eq_ignore_ascii_case(b"abuse")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_addresses() {
        assert!(is_role_address(b"postmaster"));
        assert!(is_role_address(b"PostMaster@example.org"));
        assert!(is_role_address(b"abuse@example.org"));
        assert!(!is_role_address(b"postmaster-x@example.org"));
        assert!(!is_role_address(b"user@postmaster"));
    }
}
