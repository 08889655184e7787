//! The `Authentication-Results:` field (RFC 8601) and the checks that need
//! the whole message: DKIM (RFC 6376), ARC (RFC 8617) and DMARC (RFC 7489),
//! verified by the mail-auth crate over the shared resolver. The message
//! comes from the spool with LF line ends; it is verified in its wire form
//! (CRLF).

use super::spf::SpfResults;
use mail_auth::common::auth_results::AsAuthResult;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::dmarc::Policy;
use mail_auth::{AuthenticatedMessage, AuthenticationResults, DmarcResult, MessageAuthenticator};
use std::net::IpAddr;

/// Largest message verified; a larger one is recorded as not verified
/// rather than held whole in memory.
pub const MAX_VERIFIED_BYTES: u64 = 32 * 1024 * 1024;

/// Who sent the message, as the header records it.
pub struct Identities<'a> {
    /// Our authserv-id (`control/me`).
    pub authserv_id: &'a str,
    /// The client's address.
    pub ip: IpAddr,
    /// The HELO/EHLO name.
    pub helo: &'a str,
    /// The envelope sender (empty for `<>`).
    pub sender: &'a str,
}

/// What the message checks found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageResults {
    /// The whole `Authentication-Results:` field, LF line ends.
    pub field: Vec<u8>,
    /// The best DKIM result (`pass` when any signature passed).
    pub dkim: String,
    /// The domains (d=) of the signatures that passed, space-separated.
    pub dkim_domains: String,
    /// The ARC chain's result.
    pub arc: String,
    /// The DMARC result (`pass`, `fail`, `none`, ...).
    pub dmarc: String,
    /// The policy the From: domain asks for (`none`, `quarantine`,
    /// `reject`).
    pub dmarc_policy: &'static str,
    /// The From: domain DMARC looked at.
    pub dmarc_domain: String,
}

impl MessageResults {
    /// The message failed DMARC and its domain asks for `policy`.
    pub fn dmarc_fails_with(&self, policy: &str) -> bool {
        self.dmarc == "fail" && self.dmarc_policy == policy
    }
}

/// The field with the SPF results only (messages not verified whole).
pub fn spf_field(who: &Identities<'_>, spf: &SpfResults) -> Vec<u8> {
    let ar = AuthenticationResults::new(who.authserv_id)
        .with_spf_ehlo_result(&spf.helo_output, who.ip, who.helo)
        .with_spf_mailfrom_result(&spf.mail_from_output, who.ip, who.sender, who.helo);
    field_of(&ar)
}

/// `Authentication-Results: ...` with LF line ends.
fn field_of(ar: &AuthenticationResults<'_>) -> Vec<u8> {
    let value = ar.to_string().replace("\r\n", "\n");
    let value = if value.contains(';') {
        value
    } else {
        format!("{value}; none")
    };
    format!("Authentication-Results: {value}\n").into_bytes()
}

/// The name of a result as RFC 8601 writes it (without the reason).
fn name_of(r: &impl AsAuthResult) -> String {
    let mut s = String::new();
    r.as_auth_result(&mut s);
    s.split([' ', '(']).next().unwrap_or("").to_string()
}

/// Verifies the message `lf` (stored form: LF line ends) and builds the
/// field with every result; `spf` is the MAIL stage's, if it ran.
pub async fn verify(
    auth: &MessageAuthenticator,
    lf: &[u8],
    who: &Identities<'_>,
    spf: Option<&SpfResults>,
) -> MessageResults {
    let mut wire = Vec::with_capacity(lf.len() + lf.len() / 32);
    for line in lf.split_inclusive(|&b| b == b'\n') {
        match line.strip_suffix(b"\n") {
            Some(l) => {
                wire.extend_from_slice(l);
                wire.extend_from_slice(b"\r\n");
            }
            None => wire.extend_from_slice(line),
        }
    }
    let mut ar = AuthenticationResults::new(who.authserv_id);
    if let Some(spf) = spf {
        ar = ar
            .with_spf_ehlo_result(&spf.helo_output, who.ip, who.helo)
            .with_spf_mailfrom_result(&spf.mail_from_output, who.ip, who.sender, who.helo);
    }
    let Some(message) = AuthenticatedMessage::parse(&wire) else {
        let mut results = MessageResults {
            dkim: "none".into(),
            arc: "none".into(),
            dmarc: "none".into(),
            dmarc_policy: "none",
            ..Default::default()
        };
        results.field = field_of(&ar);
        return results;
    };
    let (dkim, arc) = tokio::join!(auth.verify_dkim(&message), auth.verify_arc(&message));
    let mail_from_domain = match who.sender.rsplit_once('@') {
        Some((_, d)) => d.to_string(),
        None => who.helo.to_string(),
    };
    let fallback_spf;
    let spf_output = match spf {
        Some(s) => &s.mail_from_output,
        None => {
            fallback_spf = mail_auth::SpfOutput::new(mail_from_domain.clone());
            &fallback_spf
        }
    };
    let dmarc = auth
        .verify_dmarc(DmarcParameters::new(
            &message,
            &dkim,
            &mail_from_domain,
            spf_output,
        ))
        .await;
    let header_from = message.from();
    ar = ar
        .with_dkim_results(&dkim, header_from)
        .with_arc_result(&arc, who.ip)
        .with_dmarc_result(&dmarc);
    let passed: Vec<&str> = dkim
        .iter()
        .filter(|d| d.result() == &mail_auth::DkimResult::Pass)
        .filter_map(|d| d.signature().map(|s| s.d.as_str()))
        .collect();
    let dkim_name = if !passed.is_empty() {
        "pass".to_string()
    } else {
        dkim.first()
            .map(|d| name_of(d.result()))
            .unwrap_or_else(|| "none".into())
    };
    let dmarc_pass =
        dmarc.spf_result() == &DmarcResult::Pass || dmarc.dkim_result() == &DmarcResult::Pass;
    let dmarc_name = if dmarc_pass {
        "pass".to_string()
    } else if dmarc.spf_result() != &DmarcResult::None {
        name_of(dmarc.spf_result())
    } else {
        name_of(dmarc.dkim_result())
    };
    MessageResults {
        field: field_of(&ar),
        dkim: dkim_name,
        dkim_domains: passed.join(" "),
        arc: name_of(arc.result()),
        dmarc: dmarc_name,
        dmarc_policy: match dmarc.policy() {
            Policy::Reject => "reject",
            Policy::Quarantine => "quarantine",
            Policy::None | Policy::Unspecified => "none",
        },
        dmarc_domain: dmarc.domain().to_string(),
    }
}
