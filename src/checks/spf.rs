//! SPF (RFC 7208) for the HELO and MAIL FROM identities, evaluated by the
//! mail-auth crate over the shared resolver (its limits: ten
//! DNS-querying mechanisms, two void lookups).

use mail_auth::spf::verify::SpfParameters;
use mail_auth::{MessageAuthenticator, SpfResult};
use std::net::IpAddr;

/// One identity's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpfCheck {
    /// `pass`, `fail`, `softfail`, `neutral`, `none`, `temperror` or
    /// `permerror` (RFC 8601's names).
    pub result: &'static str,
    /// The domain checked.
    pub domain: String,
    /// The domain's explanation of a `fail` (its `exp=`), made printable.
    pub explanation: Option<String>,
}

/// Both identities' results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpfResults {
    /// The HELO identity (`none` when the HELO name is not a domain).
    pub helo: SpfCheck,
    /// The MAIL FROM identity; for the null sender, `postmaster@` the
    /// HELO name (RFC 7208 §2.4).
    pub mail_from: SpfCheck,
    /// mail-auth's record of the HELO check (for the header).
    pub helo_output: mail_auth::SpfOutput,
    /// mail-auth's record of the MAIL FROM check (for the header and
    /// DMARC).
    pub mail_from_output: mail_auth::SpfOutput,
}

/// RFC 8601's name of a result.
pub fn result_name(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

/// Evaluates both identities at once. `me` is our host name (for the
/// `%{r}` macro).
pub async fn evaluate(
    auth: &MessageAuthenticator,
    ip: IpAddr,
    helo: &str,
    me: &str,
    sender: &str,
) -> SpfResults {
    let helo = helo.trim_end_matches('.');
    let helo_is_domain = crate::checks::ascii_domain(helo).is_some_and(|d| d.contains('.'));
    let sender = match sender.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() => match crate::checks::ascii_domain(domain) {
            Some(d) => format!("{local}@{d}"),
            None => String::new(),
        },
        _ if sender.is_empty() && helo_is_domain => format!("postmaster@{helo}"),
        _ => String::new(),
    };
    let helo_check = async {
        if !helo_is_domain {
            return none(helo);
        }
        let out = auth
            .verify_spf(SpfParameters::verify_ehlo(ip, helo, me))
            .await;
        (check_of(&out, helo), out)
    };
    let mail_check = async {
        let Some((_, domain)) = sender.rsplit_once('@') else {
            return none("");
        };
        let out = auth
            .verify_spf(SpfParameters::verify_mail_from(ip, helo, me, &sender))
            .await;
        (check_of(&out, domain), out)
    };
    let ((helo, helo_output), (mail_from, mail_from_output)) = tokio::join!(helo_check, mail_check);
    SpfResults {
        helo,
        mail_from,
        helo_output,
        mail_from_output,
    }
}

/// A `none` result for `domain`.
fn none(domain: &str) -> (SpfCheck, mail_auth::SpfOutput) {
    let check = SpfCheck {
        result: "none",
        domain: domain.to_string(),
        explanation: None,
    };
    (check, mail_auth::SpfOutput::new(domain.to_string()))
}

/// Our record of mail-auth's output.
fn check_of(out: &mail_auth::SpfOutput, domain: &str) -> SpfCheck {
    SpfCheck {
        result: result_name(out.result()),
        domain: domain.to_ascii_lowercase(),
        explanation: out
            .explanation()
            .map(|e| crate::checks::dnslist::printable(e.as_bytes()))
            .filter(|e| !e.is_empty()),
    }
}
