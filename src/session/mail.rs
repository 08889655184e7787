//! MAIL: parse, SIZE check, queued `LM` errors, the `[mail]` hook,
//! badmailfrom, then a new transaction.

use super::{Flow, Session, Transaction, Verdict};
use crate::config::plugins::Hook;
use crate::plugin::directive::Queued;
use crate::protocol::reply::text;

impl Session {
    /// MAIL FROM:<address> [SIZE=n ...]
    pub(crate) async fn mail(&mut self, arg: Vec<u8>) -> Flow {
        if self.require_tls && self.tls.is_none() {
            return self.simple("530 Must issue a STARTTLS command first (#5.7.0)");
        }
        if self.offer.as_ref().is_some_and(|o| o.required) && self.authenticated.is_none() {
            // qmail's AUTH patch has the trailing space; kept for compatibility.
            return self.simple("530 Authorization required (#5.7.1) ");
        }
        let parsed = match self.parse_address(&arg) {
            Ok(p) => p,
            Err(flow) => return flow,
        };
        let Some(mut addr) = parsed else {
            self.io.reply(text::SYNTAX);
            return Flow::Continue;
        };
        // Without the extension the parameter is ignored, as qmail ignores
        // every parameter it does not know.
        let smtputf8 = self.cfg.control.extensions.smtputf8 && has_param(&arg, b"SMTPUTF8");
        if smtputf8 && std::str::from_utf8(&addr).is_err() {
            return self.simple(text::SENDER_NOT_UTF8);
        }
        if self.client.databytes > 0 {
            if let Some(size) = declared_size(&arg) {
                if size > self.client.databytes {
                    self.io.reply(text::TOO_BIG);
                    return Flow::Continue;
                }
            }
        }
        if self.send_queued(Queued::Mail) {
            return Flow::Continue;
        }
        self.spp.rcpt_count = 0;
        self.spp.rcpt_count_all = 0;
        if !self.spp.off {
            self.env.set("SMTPMAILFROM", &addr);
        }
        self.announce_smtputf8(smtputf8);
        // Boxed: the lookups' state only exists while they run.
        Box::pin(self.run_sender_checks(&addr)).await;
        let verdict = self.run_hook(Hook::Mail, Some(&mut addr)).await;
        match verdict {
            Verdict::Refuse => return Flow::Continue,
            Verdict::Disconnect => return Flow::Close(0),
            Verdict::Accept => {
                self.bad_sender = self.cfg.control.is_bad_sender(&addr, smtputf8);
                if let Some(refusal) = self.sender_refusal() {
                    self.io.reply(refusal);
                    return Flow::Continue;
                }
            }
            Verdict::AcceptSkipChecks => {}
        }
        if !addr.is_empty() && !self.address_form_ok(&addr) {
            return self.simple(text::ADDRESS_FORM);
        }
        self.end_transaction();
        self.rcpt_outcomes.clear();
        self.tx = Some(Transaction {
            sender: addr,
            recipients: Vec::new(),
            recipient_bytes: 0,
            eight_bit: has_param(&arg, b"BODY=8BITMIME"),
            declared_size: declared_size(&arg),
            smtputf8,
        });
        self.io.reply("250 ok");
        Flow::Continue
    }
}

/// The value of a `SIZE=` parameter after the address, if present and
/// numeric.
fn declared_size(arg: &[u8]) -> Option<u64> {
    let close = arg.iter().position(|&b| b == b'>')?;
    arg[close + 1..]
        .split(|&b| b == b' ')
        .find_map(|p| (p.len() > 5 && p[..5].eq_ignore_ascii_case(b"SIZE=")).then(|| &p[5..]))
        .and_then(|v| {
            (v.iter().all(u8::is_ascii_digit)).then(|| crate::config::control::leading_number(v))?
        })
}

/// Whether the parameters after the address include `param` (any case).
fn has_param(arg: &[u8], param: &[u8]) -> bool {
    let Some(close) = arg.iter().position(|&b| b == b'>') else {
        return false;
    };
    arg[close + 1..]
        .split(|&b| b == b' ')
        .any(|p| p.eq_ignore_ascii_case(param))
}

#[cfg(test)]
mod tests {
    use super::{declared_size, has_param};

    #[test]
    fn body_parameter() {
        assert!(has_param(b"FROM:<a@b> body=8bitmime", b"BODY=8BITMIME"));
        assert!(has_param(
            b"FROM:<a@b> SIZE=1 BODY=8BITMIME",
            b"BODY=8BITMIME"
        ));
        assert!(!has_param(b"FROM:<a@b> BODY=7BIT", b"BODY=8BITMIME"));
        assert!(!has_param(b"FROM:a@b BODY=8BITMIME", b"BODY=8BITMIME"));
        let utf8 = "FROM:<jos\u{e9}@b> smtputf8".as_bytes();
        assert!(has_param(utf8, b"SMTPUTF8"));
        assert!(has_param(
            b"FROM:<> SIZE=9 SMTPUTF8 BODY=8BITMIME",
            b"SMTPUTF8"
        ));
        assert!(!has_param(b"FROM:<a@b> SMTPUTF8=yes", b"SMTPUTF8"));
        assert!(!has_param(b"FROM:<SMTPUTF8@b>", b"SMTPUTF8"));
    }

    #[test]
    fn size_parameter() {
        assert_eq!(declared_size(b"FROM:<a@b> SIZE=100"), Some(100));
        assert_eq!(declared_size(b"FROM:<a@b> BODY=8BITMIME size=7"), Some(7));
        assert_eq!(declared_size(b"FROM:<a@b> SIZE=x"), None);
        assert_eq!(declared_size(b"FROM:<a@b>"), None);
        assert_eq!(declared_size(b"FROM:a@b SIZE=100"), None);
    }
}
