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
        let greeting = &self.cfg.control.greeting;
        if !extended {
            self.io.reply([b"250 ", &greeting[..]].concat());
            return Flow::Continue;
        }
        self.io.reply([b"250-", &greeting[..]].concat());
        self.io.reply("250-PIPELINING");
        if self.client.databytes > 0 {
            self.io.reply("250-8BITMIME");
            self.io.reply(format!("250 SIZE {}", self.client.databytes));
        } else {
            self.io.reply("250 8BITMIME");
        }
        Flow::Continue
    }
}
