//! Running the plugins of a hook and applying what they print to the
//! session: replies, headers, environment, address changes, queued errors,
//! and the verdict.

use super::{Session, Verdict};
use crate::config::plugins::Hook;
use crate::plugin::directive::{Directive, Queued};
use crate::plugin::runner::{self, RunLimits};
use tokio::io::{AsyncRead, AsyncWrite};

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Session<R, W> {
    /// Runs the plugins of `hook` in order until one gives a verdict.
    /// `address` is the MAIL/RCPT address that `C` may replace.
    pub(crate) async fn run_hook(
        &mut self,
        hook: Hook,
        mut address: Option<&mut Vec<u8>>,
    ) -> Verdict {
        if self.spp.off {
            return Verdict::Accept;
        }
        let Some(table) = self.spp.plugins.clone() else {
            return Verdict::Accept;
        };
        let limits = RunLimits {
            timeout: self.cfg.control.plugin_timeout,
        };
        for plugin in table.for_hook(hook) {
            let outcome = runner::run(plugin, &self.env, &self.cfg.home, limits, &self.id).await;
            let mut verdict = None;
            for directive in outcome.directives {
                match directive {
                    Directive::AcceptAll => {
                        self.spp.off = true;
                        verdict = Some(Verdict::Accept);
                    }
                    Directive::Next => verdict = Some(Verdict::Accept),
                    Directive::SkipChecks => verdict = Some(Verdict::AcceptSkipChecks),
                    Directive::Error(t) => {
                        self.io.reply(t);
                        verdict = Some(Verdict::Refuse);
                    }
                    Directive::Reject(t) => {
                        self.io.reply(t);
                        return Verdict::Disconnect;
                    }
                    Directive::Drop => return Verdict::Disconnect,
                    Directive::Print(t) => self.io.reply(t),
                    Directive::Header(t) => {
                        self.spp.headers.extend_from_slice(&t);
                        self.spp.headers.push(b'\n');
                    }
                    Directive::SetEnv(t) => {
                        if !self.env.apply_assignment(&t) {
                            tracing::warn!(session = %self.id, plugin = %String::from_utf8_lossy(&plugin.line),
                                "S with an empty name ignored");
                        }
                    }
                    Directive::UnsetEnv(name) => self.env.remove(name),
                    Directive::Change(new) => {
                        if let Some(addr) = address.as_deref_mut() {
                            let var = if hook == Hook::Mail {
                                "SMTPMAILFROM"
                            } else {
                                "SMTPRCPTTO"
                            };
                            self.env.set(var, &new);
                            *addr = new;
                        }
                    }
                    Directive::Queue(kind, t) => match kind {
                        Queued::Mail => self.spp.queued_mail.push(t),
                        Queued::Rcpt => self.spp.queued_rcpt.push(t),
                        Queued::Data => self.spp.queued_data.push(t),
                    },
                }
            }
            if let Some(failure) = outcome.failure {
                let line = [
                    b"451 qmail-spp failure: ",
                    &plugin.line[..],
                    b": ",
                    failure.reason().as_bytes(),
                    b" (#4.3.0)",
                ]
                .concat();
                self.io.reply(line);
                return Verdict::Refuse;
            }
            if let Some(v) = verdict {
                tracing::debug!(session = %self.id, hook = hook.name(), verdict = ?v, "hook verdict");
                return v;
            }
        }
        Verdict::Accept
    }

    /// Sends the queued texts of one kind; true if there were any (the
    /// command is then refused).
    pub(crate) fn send_queued(&mut self, kind: Queued) -> bool {
        let texts = match kind {
            Queued::Mail => &self.spp.queued_mail,
            Queued::Rcpt => &self.spp.queued_rcpt,
            Queued::Data => &self.spp.queued_data,
        };
        if texts.is_empty() {
            return false;
        }
        for t in texts.clone() {
            self.io.reply(t);
        }
        true
    }
}
