//! HELO and EHLO: the `[helo]` hook, then the greeting reply.

use super::{Flow, Session, Verdict};
use crate::config::plugins::Hook;

impl Session {
    /// HELO (`extended` false) or EHLO.
    pub(crate) async fn helo(&mut self, arg: Vec<u8>, extended: bool) -> Flow {
        self.env.set("SMTPHELOHOST", &arg);
        match self.run_hook(Hook::Helo, None).await {
            Verdict::Refuse => return Flow::Continue,
            Verdict::Disconnect => return Flow::Close(0),
            Verdict::Accept | Verdict::AcceptSkipChecks => {}
        }
        self.helo = arg;
        self.tx = None;
        self.end_transaction();
        self.rcpt_outcomes.clear();
        let greeting = &self.cfg.control.greeting;
        if !extended {
            self.io.reply([b"250 ", &greeting[..]].concat());
            return Flow::Continue;
        }
        let mut lines = vec![[b"250-", &greeting[..]].concat()];
        if self.cfg.tls.is_some() && self.tls.is_none() {
            lines.push(b"250-STARTTLS".to_vec());
        }
        lines.push(b"250-PIPELINING".to_vec());
        lines.push(b"250-8BITMIME".to_vec());
        let ext = self.cfg.control.extensions;
        if ext.enhanced_status_codes {
            lines.push(b"250-ENHANCEDSTATUSCODES".to_vec());
        }
        if ext.smtputf8 {
            lines.push(b"250-SMTPUTF8".to_vec());
        }
        if ext.chunking {
            lines.push(b"250-CHUNKING".to_vec());
        }
        if let Some(auth) = self.auth_ehlo_line() {
            lines.push(auth.into_bytes());
        }
        if self.client.databytes > 0 {
            lines.push(format!("250-SIZE {}", self.client.databytes).into_bytes());
        }
        // The last line has a space after the code.
        if let Some(last) = lines.last_mut() {
            last[3] = b' ';
        }
        for line in lines {
            self.io.reply(line);
        }
        Flow::Continue
    }
}
