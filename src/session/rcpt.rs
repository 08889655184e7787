//! RCPT: MAIL-first, parse, badmailfrom, rcpthosts lookup, queued `LR`
//! errors, the `[rcpt]` hook, RELAYCLIENT or the rcpthosts refusal.

use super::{Flow, Session, Verdict};
use crate::config::plugins::Hook;
use crate::config::queue::QueueSetting;
use crate::plugin::directive::Queued;
use crate::protocol::reply::text;
use crate::queue::forward::{MailParams, RcptError};

/// Most recipients of one message (RFC 5321 asks for at least 100).
pub const MAX_RECIPIENTS: usize = 10_000;
/// Most bytes of recipient addresses in one transaction (their lengths
/// added up): 10,000 long addresses would otherwise hold megabytes per
/// session. Beyond it RCPT gets the same `452` as beyond the count.
pub const MAX_RECIPIENT_BYTES: usize = 1 << 20;

impl Session {
    /// RCPT TO:<address>
    pub(crate) async fn rcpt(&mut self, arg: Vec<u8>) -> Flow {
        if self.tx.is_none() {
            self.io.reply(text::MAIL_FIRST);
            return Flow::Continue;
        }
        let parsed = match self.parse_address(&arg) {
            Ok(p) => p,
            Err(flow) => return flow,
        };
        let Some(mut addr) = parsed else {
            self.io.reply(text::SYNTAX);
            return Flow::Continue;
        };
        let smtputf8 = self.tx.as_ref().is_some_and(|tx| tx.smtputf8);
        if smtputf8 && std::str::from_utf8(&addr).is_err() {
            self.io.reply(text::RCPT_NOT_UTF8);
            return Flow::Continue;
        }
        if self.tx.as_ref().is_some_and(|tx| {
            tx.recipients.len() >= MAX_RECIPIENTS
                || tx.recipient_bytes + addr.len() > MAX_RECIPIENT_BYTES
        }) {
            self.io.reply(text::TOO_MANY_RCPTS);
            return Flow::Continue;
        }
        if self.bad_sender {
            self.io.reply(text::BADMAILFROM);
            return Flow::Continue;
        }
        let allowed = match self.client.relay_client.is_some() {
            true => true,
            false => match self.rcpthosts_allow(&addr, smtputf8).await {
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
        if !self.address_form_ok(&addr) {
            self.io.reply(text::ADDRESS_FORM);
            return Flow::Continue;
        }
        if verdict != Verdict::AcceptSkipChecks {
            if let Some(refusal) = self.list_refusal(&addr) {
                self.io.reply(refusal);
                return Flow::Continue;
            }
        }
        if let Some(suffix) = &self.client.relay_client {
            addr.extend_from_slice(suffix);
        } else if verdict != Verdict::AcceptSkipChecks && !allowed {
            self.io.reply(text::NOT_RCPTHOST);
            return Flow::Continue;
        }
        // Boxed: the downstream exchange's state only exists while it runs.
        if let Some(refusal) = Box::pin(self.verify_downstream(&addr)).await {
            self.io.reply(refusal);
            return Flow::Continue;
        }
        if let Some(tx) = &mut self.tx {
            tx.recipient_bytes += addr.len();
            tx.recipients.push(addr);
        }
        self.spp.rcpt_count += 1;
        self.io.reply("250 ok");
        Flow::Continue
    }
}

impl Session {
    /// Looks `addr` up in rcpthosts: in memory on the spot; when the
    /// lookup reads `morercpthosts.cdb`, through [`crate::blocking`], so a
    /// slow disk stalls this session only.
    async fn rcpthosts_allow(&mut self, addr: &[u8], smtputf8: bool) -> std::io::Result<bool> {
        if !self.cfg.control.rcpt_lookup_reads_files() {
            return self.cfg.control.rcpt_allowed(addr, smtputf8);
        }
        let (cfg, addr) = (self.cfg.clone(), addr.to_vec());
        let lookup = crate::blocking::run(move || cfg.control.rcpt_allowed(&addr, smtputf8));
        Box::pin(lookup).await?
    }

    /// With `verify-rcpt=yes`: passes the recipient to the downstream,
    /// opening its transaction at the first RCPT. Returns the reply to send
    /// instead of `250` when the downstream did not accept it.
    async fn verify_downstream(&mut self, addr: &[u8]) -> Option<String> {
        // Only `control/queue` can name a downstream; the backend itself is
        // chosen at the first DATA (a [data] plugin may set QMAILQUEUE).
        let Some(QueueSetting::Forward(setting)) = &self.cfg.control.queue else {
            return None;
        };
        if !setting.verify_rcpt {
            return None;
        }
        let setting = setting.clone();
        let tx = self.tx.as_ref()?;
        if self.downstream.is_none() {
            let d = self.downstream_for(setting);
            let params = MailParams {
                size: tx.declared_size,
                eight_bit: tx.eight_bit,
                smtputf8: tx.smtputf8,
            };
            let (sender, earlier) = (tx.sender.clone(), tx.recipients.clone());
            let mut t = match d.begin(&self.id, &sender, params).await {
                Ok(t) => t,
                Err(reply) => return Some(reply),
            };
            // After a broken connection, the recipients accepted so far
            // are passed again on the new one.
            for r in &earlier {
                match t.rcpt(&self.id, r).await {
                    Ok(()) => {}
                    // An earlier recipient now refused: this one cannot be
                    // verified; DATA will hand the message over afresh.
                    Err(RcptError::Refused(_)) => {
                        t.abandon();
                        return Some(text::DOWNSTREAM_CHANGED.into());
                    }
                    // A connection with a reply unread is never reused.
                    Err(RcptError::Broken(reply)) => return Some(reply),
                }
            }
            self.downstream = Some(Box::new(t));
        }
        let t = self.downstream.as_mut()?;
        match t.rcpt(&self.id, addr).await {
            Ok(()) => None,
            Err(RcptError::Refused(reply)) => Some(reply),
            Err(RcptError::Broken(reply)) => {
                self.downstream = None;
                Some(reply)
            }
        }
    }
}
