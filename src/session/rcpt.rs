//! RCPT: MAIL-first, parse, badmailfrom, rcpthosts lookup, queued `LR`
//! errors, the `[rcpt]` hook, RELAYCLIENT or the rcpthosts refusal.

use super::{Flow, Session, Verdict};
use crate::config::plugins::Hook;
use crate::plugin::directive::Queued;
use crate::protocol::reply::text;

/// Most recipients of one message (RFC 5321 asks for at least 100).
pub const MAX_RECIPIENTS: usize = 10_000;

impl Session {
    /// RCPT TO:<address>
    pub(crate) async fn rcpt(&mut self, arg: Vec<u8>) -> Flow {
        if self.tx.is_none() {
            self.io.reply(text::MAIL_FIRST);
            return Flow::Continue;
        }
        let Some(mut addr) = self.parse_address(&arg) else {
            self.io.reply(text::SYNTAX);
            return Flow::Continue;
        };
        if self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.recipients.len() >= MAX_RECIPIENTS)
        {
            self.io.reply(text::TOO_MANY_RCPTS);
            return Flow::Continue;
        }
        if self.bad_sender {
            self.io.reply(text::BADMAILFROM);
            return Flow::Continue;
        }
        let allowed = match self.client.relay_client.is_some() {
            true => true,
            false => match self.cfg.control.rcpt_allowed(&addr) {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(session = %self.id, error = %e, "rcpthosts lookup failed");
                    self.io.reply(text::UNREADABLE_CONTROLS);
                    return Flow::Close(1);
                }
            },
        };
        if self.send_queued(Queued::Rcpt) {
            return Flow::Continue;
        }
        self.spp.rcpt_count_all += 1;
        self.env
            .set("SMTPRCPTCOUNT", self.spp.rcpt_count.to_string());
        self.env
            .set("SMTPRCPTCOUNTALL", self.spp.rcpt_count_all.to_string());
        self.env
            .set("SMTPRCPTHOSTSOK", if allowed { "1" } else { "0" });
        if !self.spp.off {
            self.env.set("SMTPRCPTTO", &addr);
        }
        let verdict = self.run_hook(Hook::Rcpt, Some(&mut addr)).await;
        match verdict {
            Verdict::Refuse => return Flow::Continue,
            Verdict::Disconnect => return Flow::Close(0),
            Verdict::Accept | Verdict::AcceptSkipChecks => {}
        }
        if let Some(suffix) = &self.client.relay_client {
            addr.extend_from_slice(suffix);
        } else if verdict != Verdict::AcceptSkipChecks && !allowed {
            self.io.reply(text::NOT_RCPTHOST);
            return Flow::Continue;
        }
        if let Some(tx) = &mut self.tx {
            tx.recipients.push(addr);
        }
        self.spp.rcpt_count += 1;
        self.io.reply("250 ok");
        Flow::Continue
    }
}
