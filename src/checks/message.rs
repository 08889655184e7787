//! The `Authentication-Results:` field (RFC 8601) and the checks that need
//! the whole message: DKIM (RFC 6376), ARC (RFC 8617) and DMARC (RFC 7489),
//! verified by the mail-auth crate over the shared resolver. The message
//! comes from the spool with LF line ends; it is verified in its wire form
//! (CRLF).

use super::spf::SpfResults;
use mail_auth::common::auth_results::AsAuthResult;
use mail_auth::dkim::DkimError;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::dmarc::Policy;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcResult,
    MessageAuthenticator,
};
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
    field_with(ar, "")
}

/// As [`field_of`], with more result clauses (`;\n\t...` each).
fn field_with(ar: &AuthenticationResults<'_>, more: &str) -> Vec<u8> {
    let value = ar.to_string().replace("\r\n", "\n") + more;
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

/// A DKIM result's name: a body hash that does not match is `fail` (the
/// signature did not verify, RFC 6376 §6.1.3), where the crate says
/// `neutral`.
fn dkim_name(r: &DkimResult) -> &'static str {
    match r {
        DkimResult::Pass => "pass",
        DkimResult::Fail(_) => "fail",
        DkimResult::Neutral(mail_auth::Error::Dkim(DkimError::FailedBodyHashMatch)) => "fail",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}

/// Only the characters a DNS name or selector may hold.
fn token(v: &str) -> String {
    v.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect()
}

/// The `dkim=` clause of one signature, with the crate's reason.
fn dkim_clause(out: &mut String, d: &DkimOutput<'_>) {
    let mut reason = String::new();
    d.result().as_auth_result(&mut reason);
    out.push_str(";\n\tdkim=");
    out.push_str(dkim_name(d.result()));
    if let Some((_, comment)) = reason.split_once(' ') {
        out.push(' ');
        out.push_str(comment);
    }
    if let Some(sig) = d.signature() {
        use base64::Engine;
        let b = base64::engine::general_purpose::STANDARD.encode(&sig.b);
        out.push_str(&format!(
            " header.d={} header.s={} header.b={}",
            token(&sig.d),
            token(&sig.s),
            b.get(..8).unwrap_or(&b).replace(['+', '/', '='], "")
        ));
    }
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
    ar = ar.with_arc_result(&arc, who.ip);
    let passed: Vec<&str> = dkim
        .iter()
        .filter(|d| d.result() == &mail_auth::DkimResult::Pass)
        .filter_map(|d| d.signature().map(|s| s.d.as_str()))
        .collect();
    let best_dkim = if !passed.is_empty() {
        "pass".to_string()
    } else {
        dkim.first()
            .map(|d| dkim_name(d.result()).to_string())
            .unwrap_or_else(|| "none".into())
    };
    let errors = [dmarc.spf_result(), dmarc.dkim_result()]
        .into_iter()
        .find(|r| matches!(r, DmarcResult::TempError(_) | DmarcResult::PermError(_)));
    // A published policy that neither identifier passes is a fail
    // (RFC 7489 §4.2), whatever the crate leaves as "none".
    let dmarc_name = if [dmarc.spf_result(), dmarc.dkim_result()].contains(&&DmarcResult::Pass) {
        "pass".to_string()
    } else if let Some(e) = errors {
        name_of(e)
    } else if dmarc.dmarc_record().is_some() {
        "fail".to_string()
    } else {
        "none".to_string()
    };
    let policy = match (dmarc.dmarc_record().is_some(), dmarc.policy()) {
        (true, Policy::Reject) => "reject",
        (true, Policy::Quarantine) => "quarantine",
        _ => "none",
    };
    let mut more = String::new();
    for d in &dkim {
        dkim_clause(&mut more, d);
    }
    if dkim.is_empty() {
        more.push_str(";\n\tdkim=none");
    }
    more.push_str(&format!(";\n\tdmarc={dmarc_name}"));
    if !dmarc.domain().is_empty() {
        more.push_str(&format!(
            " header.from={} policy.dmarc={policy}",
            token(dmarc.domain())
        ));
    }
    MessageResults {
        field: field_with(&ar, &more),
        dkim: best_dkim,
        dkim_domains: passed.join(" "),
        arc: name_of(arc.result()),
        dmarc: dmarc_name,
        dmarc_policy: policy,
        dmarc_domain: dmarc.domain().to_string(),
    }
}
