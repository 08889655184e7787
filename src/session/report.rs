//! Log lines that answer "why was this refused?": one `refused` line per
//! refused or failed command, naming the plugin that decided when one did,
//! and the per-recipient outcomes that the `transaction` line lists.

use super::Session;
use crate::config::plugins::Hook;
use crate::logging::quoted;
use crate::protocol::command::Verb;

/// Most recipients whose outcome a transaction line lists.
const MAX_OUTCOMES: usize = 100;
/// Most bytes of a command's argument in a log line.
const MAX_ARG: usize = 256;

/// The plugin whose verdict decided the current command.
#[derive(Debug, Clone)]
pub(crate) struct Decider {
    /// The hook it ran at.
    pub hook: Hook,
    /// Its configuration line.
    pub plugin: Vec<u8>,
    /// What it decided (`refuse`, `reject`, `drop`, `fail(timeout)`, ...).
    pub verdict: String,
}

/// The outcome of one RCPT: the address as given and the reply code.
#[derive(Debug, Clone)]
pub(crate) struct RcptOutcome {
    address: Vec<u8>,
    code: u16,
}

impl Session {
    /// Before a command: nothing refused it yet.
    pub(crate) fn report_start(&mut self) {
        self.io.refusal = None;
        self.io.last_code = 0;
        self.decider = None;
    }

    /// After a command: logs it once if its reply was a refusal (4xx or
    /// 5xx), and notes a RCPT's outcome for the transaction line. `arg` is
    /// the command's argument (not given for AUTH: it carries secrets).
    pub(crate) fn report_end(&mut self, verb: &'static str, arg: Option<&[u8]>, rcpt: bool) {
        let refusal = self.io.refusal.take();
        if self.io.last_code != 0 {
            crate::metrics::reply(verb, self.io.last_code);
        }
        if rcpt && self.rcpt_outcomes.len() < MAX_OUTCOMES {
            let code = refusal
                .as_deref()
                .and_then(|r| r.get(..3))
                .and_then(|c| std::str::from_utf8(c).ok()?.parse().ok())
                .unwrap_or(250);
            self.rcpt_outcomes.push(RcptOutcome {
                address: address_of(arg.unwrap_or_default()).to_vec(),
                code,
            });
        }
        let Some(reply) = refusal else {
            return;
        };
        let arg = arg.map(|a| quoted(&a[..a.len().min(MAX_ARG)]));
        let arg = arg.as_deref().unwrap_or("\"\"");
        let client = quoted(&self.client.remote_ip);
        match self.decider.take() {
            Some(d) => tracing::info!(
                session = %self.id,
                client = %client,
                command = verb,
                arg = %arg,
                hook = d.hook.name(),
                plugin = %quoted(&d.plugin),
                verdict = %quoted(d.verdict.as_bytes()),
                reply = %quoted(&reply),
                "refused"
            ),
            None => tracing::info!(
                session = %self.id,
                client = %client,
                command = verb,
                arg = %arg,
                reply = %quoted(&reply),
                "refused"
            ),
        }
    }

    /// The recipients' outcomes for the transaction line
    /// (`address:code ...`), then forgotten.
    pub(crate) fn take_outcomes(&mut self) -> String {
        let mut s = String::new();
        for o in self.rcpt_outcomes.drain(..) {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(&format!("{}:{}", o.address.escape_ascii(), o.code));
        }
        s
    }
}

/// The name of a verb in log lines.
pub(crate) fn verb_name(verb: Verb) -> &'static str {
    match verb {
        Verb::Helo => "HELO",
        Verb::Ehlo => "EHLO",
        Verb::Mail => "MAIL",
        Verb::Rcpt => "RCPT",
        Verb::Data => "DATA",
        Verb::Rset => "RSET",
        Verb::Noop => "NOOP",
        Verb::Vrfy => "VRFY",
        Verb::Help => "HELP",
        Verb::Quit => "QUIT",
        Verb::Starttls => "STARTTLS",
        Verb::Auth => "AUTH",
        Verb::Bdat => "BDAT",
        Verb::Unknown => "unknown",
    }
}

/// What is inside `<...>` of a MAIL or RCPT argument, else the argument.
fn address_of(arg: &[u8]) -> &[u8] {
    let Some(open) = arg.iter().position(|&b| b == b'<') else {
        return &arg[..arg.len().min(MAX_ARG)];
    };
    let inner = &arg[open + 1..];
    let close = inner.iter().position(|&b| b == b'>').unwrap_or(inner.len());
    &inner[..close.min(MAX_ARG)]
}
