//! Running the plugins of a hook and applying what they print to the
//! session: replies, headers, environment, address changes, queued errors,
//! and the verdict.

use super::trace::PluginRun;
use super::{Session, Verdict};
use crate::config::plugins::{Hook, Mode, OnFailure, Plugin};
use crate::plugin::directive::{Directive, Queued};
use crate::plugin::persistent;
use crate::plugin::runner::{self, RunLimits, RunOutcome};
use std::sync::Arc;
use std::time::Instant;

/// Most bytes of `H` headers, and of queued texts of each kind, that a
/// session keeps: a client repeating a command cannot make them grow
/// without bound.
pub const MAX_PENDING: usize = 64 * 1024;

impl Session {
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
        for plugin in table.for_hook(hook) {
            // Boxed: the run's state is only allocated while a plugin runs,
            // so idle sessions stay small.
            let outcome = Box::pin(self.consult(hook, plugin)).await;
            if plugin.options.mode == Mode::Observe {
                self.observe(hook, plugin, &outcome);
                continue;
            }
            if let Some(v) = self.apply(hook, plugin, outcome, address.as_deref_mut()) {
                return v;
            }
        }
        Verdict::Accept
    }

    /// Runs one plugin (classic) or asks it (persistent), with its
    /// deadline, and reports the run to the trace sink if there is one.
    async fn consult(&mut self, hook: Hook, plugin: &Arc<Plugin>) -> RunOutcome {
        let counted = crate::metrics::get().is_some();
        let started = (self.trace.is_some() || counted).then(Instant::now);
        let outcome = self.run_plugin(hook, plugin).await;
        if let (true, Some(started)) = (counted, started) {
            crate::metrics::plugin_run(
                &plugin.line,
                hook.name(),
                verdict_label(&outcome, plugin.options.mode),
                outcome.failure.map(|f| f.reason()),
                started.elapsed().as_secs_f64(),
            );
        }
        if let (Some(sink), Some(started)) = (&self.trace, started) {
            // A closed sink only means nobody reads the trace any more.
            let _ = sink.send(PluginRun {
                hook,
                plugin: Arc::clone(plugin),
                env: self.env.clone(),
                outcome: outcome.clone(),
                elapsed: started.elapsed(),
            });
        }
        outcome
    }

    /// Runs one plugin (classic) or asks it (persistent).
    async fn run_plugin(&mut self, hook: Hook, plugin: &Plugin) -> RunOutcome {
        let limits = RunLimits {
            timeout: plugin
                .options
                .timeout
                .unwrap_or(self.cfg.control.plugin_timeout),
        };
        let message = if hook == Hook::Body {
            self.body_file.as_deref()
        } else {
            None
        };
        if plugin.options.persistent.is_some() {
            return persistent::request(
                plugin,
                &self.env,
                &self.cfg.home,
                limits,
                &self.id,
                hook,
                message,
            )
            .await;
        }
        let _slot = match &self.plugin_slots {
            Some(slots) => slots.clone().acquire_owned().await.ok(),
            None => None,
        };
        runner::run(plugin, &self.env, &self.cfg.home, limits, &self.id, message).await
    }

    /// `mode=observe`: logs what the plugin would have done; nothing of
    /// it takes effect.
    fn observe(&mut self, hook: Hook, plugin: &Plugin, outcome: &RunOutcome) {
        let would = outcome.would(plugin.options.on_failure);
        tracing::info!(
            session = %self.id,
            client = %crate::logging::quoted(&self.client.remote_ip),
            hook = hook.name(),
            plugin = %crate::logging::quoted(&plugin.line),
            directives = outcome.directives.len(),
            "observe: {would}"
        );
        self.note_verdict(hook, plugin, "observed");
    }

    /// Applies what a plugin printed; `Some` when it decided the command.
    fn apply(
        &mut self,
        hook: Hook,
        plugin: &Plugin,
        outcome: RunOutcome,
        mut address: Option<&mut Vec<u8>>,
    ) -> Option<Verdict> {
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
                    self.io.reply(refusal(hook, &plugin.line, t));
                    verdict = Some(Verdict::Refuse);
                }
                Directive::Reject(t) => {
                    self.io.reply(refusal(hook, &plugin.line, t));
                    self.note_verdict(hook, plugin, "reject");
                    return Some(Verdict::Disconnect);
                }
                Directive::Drop => {
                    self.note_verdict(hook, plugin, "drop");
                    return Some(Verdict::Disconnect);
                }
                // After the final dot only the verdict's reply may
                // reach the client: a printed `250` line would read as
                // acceptance of a message that is not queued.
                Directive::Print(_) if hook == Hook::Body => {
                    tracing::warn!(session = %self.id, plugin = %crate::logging::quoted(&plugin.line),
                        "P is ignored in [body]");
                }
                Directive::Print(t) => self.io.reply(t),
                Directive::Header(t) => {
                    if self.spp.headers.len() + t.len() < MAX_PENDING {
                        self.spp.headers.extend_from_slice(&t);
                        self.spp.headers.push(b'\n');
                    } else {
                        tracing::warn!(session = %self.id, "header block full; H line dropped");
                    }
                }
                Directive::SetEnv(t) => {
                    if !self.env.apply_assignment(&t) {
                        tracing::warn!(session = %self.id, plugin = %crate::logging::quoted(&plugin.line),
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
                Directive::Queue(kind, t) => {
                    let queue = match kind {
                        Queued::Mail => &mut self.spp.queued_mail,
                        Queued::Rcpt => &mut self.spp.queued_rcpt,
                        Queued::Data => &mut self.spp.queued_data,
                    };
                    if queue.iter().map(Vec::len).sum::<usize>() + t.len() < MAX_PENDING {
                        queue.push(t);
                    } else {
                        tracing::warn!(session = %self.id, "queued replies full; L line dropped");
                    }
                }
            }
        }
        if let Some(failure) = outcome.failure {
            self.note_verdict(hook, plugin, &format!("fail({})", failure.reason()));
            let (code, class) = match plugin.options.on_failure {
                OnFailure::Tempfail => ("451", "4.3.0"),
                OnFailure::Reject => ("554", "5.3.0"),
                // A verdict printed before the failure stands (qmail-spp
                // applies what was printed); else the policy decides.
                OnFailure::Skip => return verdict,
                OnFailure::Accept => return verdict.or(Some(Verdict::Accept)),
            };
            let line = [
                code.as_bytes(),
                b" qmail-spp failure: ",
                &plugin.line[..],
                b": ",
                failure.reason().as_bytes(),
                b" (#",
                class.as_bytes(),
                b")",
            ]
            .concat();
            self.io.reply(line);
            return Some(Verdict::Refuse);
        }
        if let Some(v) = verdict {
            let word = match v {
                Verdict::Accept => "accept",
                Verdict::AcceptSkipChecks => "skip-checks",
                Verdict::Refuse => "refuse",
                Verdict::Disconnect => "disconnect",
            };
            self.note_verdict(hook, plugin, word);
        }
        verdict
    }

    /// Records a plugin verdict for the transaction's log line (bounded),
    /// and a refusal or failure as what decided the command.
    fn note_verdict(&mut self, hook: Hook, plugin: &Plugin, verdict: &str) {
        if self.verdicts.len() < 100 {
            self.verdicts.push(format!("{}:{verdict}", hook.name()));
        }
        if !matches!(verdict, "accept" | "skip-checks" | "observed") {
            self.decider = Some(super::report::Decider {
                hook,
                plugin: plugin.line.clone(),
                verdict: verdict.to_string(),
            });
        }
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

/// The verdict of a run as a metrics label.
fn verdict_label(outcome: &RunOutcome, mode: Mode) -> &'static str {
    if mode == Mode::Observe {
        return "observed";
    }
    if outcome.failure.is_some() {
        return "fail";
    }
    match outcome.directives.iter().find(|d| d.terminates()) {
        Some(Directive::Error(_)) => "refuse",
        Some(Directive::Reject(_)) => "reject",
        Some(Directive::Drop) => "drop",
        Some(Directive::SkipChecks) => "skip-checks",
        Some(_) => "accept",
        None => "none",
    }
}

/// The reply of an `E` or `R`: as printed, except in `[body]`, where it
/// must be a 4xx or 5xx refusal (anything else would tell the client its
/// message was taken when it was not), else it becomes a 451 failure line.
fn refusal(hook: Hook, plugin: &[u8], text: Vec<u8>) -> Vec<u8> {
    // A code, then the end or a space: `451-...` would be a continuation
    // line the client waits after.
    let is_refusal = matches!(text.first(), Some(b'4' | b'5'))
        && text.len() >= 3
        && text[1..3].iter().all(u8::is_ascii_digit)
        && matches!(text.get(3), None | Some(b' '));
    if hook != Hook::Body || is_refusal {
        return text;
    }
    tracing::warn!(plugin = %crate::logging::quoted(plugin), reply = %crate::logging::quoted(&text),
        "[body] refusal is not a 4xx or 5xx reply line");
    [
        b"451 qmail-spp failure: ",
        plugin,
        b": refusal is not a 4xx or 5xx reply line (#4.3.0)",
    ]
    .concat()
}
