//! What `spp-smtpd try` prints and what its exit status says: the
//! conversation, with every plugin run between the client's line and the
//! replies it caused, then the result — accepted, refused, or a plugin
//! failed.

use super::script::Event;
use super::{EXIT_ACCEPTED, EXIT_FAILED, EXIT_REFUSED};
use crate::config::plugins::Mode;
use crate::session::trace::PluginRun;
use std::fmt::Write;
use std::os::unix::process::ExitStatusExt;

/// How a trial ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every reply was 2xx or 3xx and the session ended with QUIT.
    Accepted,
    /// A command got a 4xx or 5xx reply, or the server closed the
    /// connection before QUIT was answered: the first such.
    Refused(String),
    /// A plugin failed (crash, timeout, can't execute, too much output,
    /// a persistent plugin's protocol error...): the first such,
    /// whatever its `on-failure=` made of it.
    Failed(String),
}

impl Outcome {
    /// The exit status of `try`.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Accepted => EXIT_ACCEPTED,
            Outcome::Refused(_) => EXIT_REFUSED,
            Outcome::Failed(_) => EXIT_FAILED,
        }
    }
}

/// The printed report and the outcome.
#[derive(Debug)]
pub struct Report {
    /// What `try` prints on stdout.
    pub text: String,
    /// What its exit status says.
    pub outcome: Outcome,
}

/// Renders the conversation `events` of a script of `steps` steps. With
/// `quiet`, only the client's lines, the replies and the result.
pub fn render(events: &[Event], steps: usize, quiet: bool) -> Report {
    let mut out = String::new();
    let mut judge = Judge::default();
    for event in events {
        match event {
            Event::Sent(label) => {
                judge.next(label);
                let _ = writeln!(out, "client: {}", shown(label.as_bytes()));
            }
            Event::Received(bytes) => {
                for line in bytes.split_inclusive(|&b| b == b'\n') {
                    let line = line.strip_suffix(b"\n").unwrap_or(line);
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    let _ = writeln!(out, "reply: {}", shown(line));
                    judge.last_reply = Some(line.to_vec());
                }
            }
            Event::Plugin(run) => {
                if let Some(f) = run.outcome.failure {
                    judge
                        .failed
                        .get_or_insert_with(|| format!("{}: {}", plugin_title(run), f.reason()));
                }
                if !quiet {
                    plugin_block(run, &mut out);
                }
            }
        }
    }
    let sent = judge.sent;
    let outcome = judge.finish(sent < steps);
    let _ = match &outcome {
        Outcome::Accepted => writeln!(out, "result: accepted"),
        Outcome::Refused(why) => writeln!(out, "result: refused: {why}"),
        Outcome::Failed(why) => writeln!(out, "result: failed: {why}"),
    };
    Report { text: out, outcome }
}

/// Follows the exchanges and remembers the first refusal and failure.
#[derive(Default)]
struct Judge {
    /// What the replies being read answer (`None`: the connection).
    label: Option<String>,
    /// The last reply line of the current exchange.
    last_reply: Option<Vec<u8>>,
    /// Steps sent so far.
    sent: usize,
    /// The first refusal.
    refused: Option<String>,
    /// The first plugin failure.
    failed: Option<String>,
}

impl Judge {
    /// Judges the exchange that ends and starts the one of `label`.
    fn next(&mut self, label: &str) {
        self.judge_exchange();
        self.label = Some(label.to_string());
        self.sent += 1;
    }

    /// Records a refusal if the current exchange's final reply is not
    /// 2xx or 3xx.
    fn judge_exchange(&mut self) {
        if self.refused.is_some() {
            return;
        }
        let what = match &self.label {
            Some(label) => shown(label.as_bytes()),
            None => "the connection".to_string(),
        };
        self.refused = match self.last_reply.take() {
            Some(line) if matches!(line.first(), Some(b'2' | b'3')) => None,
            Some(line) => Some(format!("{what} got {}", shown(&line))),
            None => Some(format!("{what} got no reply")),
        };
    }

    /// The outcome; `cut_short` when the server stopped reading before
    /// the last step.
    fn finish(mut self, cut_short: bool) -> Outcome {
        self.judge_exchange();
        if cut_short && self.refused.is_none() {
            let after = self.label.as_deref().unwrap_or("the greeting");
            self.refused = Some(format!(
                "the server closed the connection after {}",
                shown(after.as_bytes())
            ));
        }
        match (self.failed, self.refused) {
            (Some(why), _) => Outcome::Failed(why),
            (None, Some(why)) => Outcome::Refused(why),
            (None, None) => Outcome::Accepted,
        }
    }
}

/// `plugin [rcpt] LINE`.
fn plugin_title(run: &PluginRun) -> String {
    format!("plugin [{}] {}", run.hook.name(), shown(&run.plugin.line))
}

/// One plugin run: its line, environment, output, end and, in observe
/// mode, what it would have done.
fn plugin_block(run: &PluginRun, out: &mut String) {
    let _ = writeln!(out, "  {}", plugin_title(run));
    let mut vars: Vec<(&[u8], &[u8])> = run.env.iter().collect();
    vars.sort();
    for (name, value) in vars {
        let _ = writeln!(out, "    env: {}={}", shown(name), shown(value));
    }
    if run.outcome.directives.is_empty() {
        let _ = writeln!(out, "    printed: nothing");
    }
    for d in &run.outcome.directives {
        let _ = writeln!(out, "    printed: {}", shown(&d.line()));
    }
    let ms = run.elapsed.as_secs_f64() * 1000.0;
    let status = run.outcome.status;
    let end = match (
        status.and_then(|s| s.code()),
        status.and_then(|s| s.signal()),
    ) {
        (Some(code), _) => code.to_string(),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ if run.plugin.options.persistent.is_some() => "none, persistent (answered)".into(),
        _ => "not started".into(),
    };
    let _ = writeln!(out, "    exit: {end} in {ms:.1} ms");
    let on_failure = run.plugin.options.on_failure;
    if let Some(f) = run.outcome.failure {
        let _ = writeln!(
            out,
            "    failure: {} (on-failure={})",
            f.reason(),
            on_failure.name()
        );
    }
    if run.plugin.options.mode == Mode::Observe {
        let _ = writeln!(
            out,
            "    observe: {}; nothing of it took effect",
            run.outcome.would(on_failure)
        );
    }
}

/// Bytes for one line of the report: UTF-8 text as it is; control
/// characters, backslashes and bytes that are not UTF-8 escaped.
fn shown(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '\t' => s.push_str("\\t"),
                '\r' => s.push_str("\\r"),
                '\n' => s.push_str("\\n"),
                c if c.is_control() => {
                    let _ = write!(s, "\\u{{{:x}}}", c as u32);
                }
                c => s.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::plugins::{Hook, PluginTable};
    use crate::plugin::directive::Directive;
    use crate::plugin::runner::{Failure, RunOutcome};
    use crate::session::env::SessionEnv;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    fn run(line: &str, directives: Vec<Directive>, failure: Option<Failure>) -> Event {
        let text = format!("[rcpt]\n#spp: mode=observe\n{line}\n");
        let (table, _) = PluginTable::parse(text.as_bytes(), Path::new("/h"), PathBuf::new());
        let mut env = SessionEnv::default();
        env.set("SMTPRCPTTO", "a@x.test");
        env.set("A", "tab\there");
        Event::Plugin(Box::new(PluginRun {
            hook: Hook::Rcpt,
            plugin: table.for_hook(Hook::Rcpt)[0].clone(),
            env,
            outcome: RunOutcome {
                directives,
                failure,
                status: Some(std::process::ExitStatus::from_raw(0)),
            },
            elapsed: Duration::from_micros(2500),
        }))
    }

    fn sent(l: &str) -> Event {
        Event::Sent(l.into())
    }

    fn got(l: &str) -> Event {
        Event::Received(l.as_bytes().to_vec())
    }

    /// A greeting, one RCPT that runs `plugin` and gets `reply`, QUIT.
    fn one_rcpt(plugin: Event, reply: &str) -> Vec<Event> {
        vec![
            got("220 mx\r\n"),
            sent("RCPT TO:<a@x.test>"),
            plugin,
            got(reply),
            sent("QUIT"),
            got("221 mx\r\n"),
        ]
    }

    #[test]
    fn a_refusal_and_the_plugin_that_said_it() {
        let events = one_rcpt(
            run(
                ":echo E550 no",
                vec![Directive::Error(b"550 no".to_vec())],
                None,
            ),
            "550 no\r\n",
        );
        let r = render(&events, 2, false);
        assert_eq!(
            r.outcome,
            Outcome::Refused("RCPT TO:<a@x.test> got 550 no".into())
        );
        assert_eq!(r.outcome.exit_code(), EXIT_REFUSED);
        let want = "reply: 220 mx
client: RCPT TO:<a@x.test>
  plugin [rcpt] :echo E550 no
    env: A=tab\\there
    env: SMTPRCPTTO=a@x.test
    printed: E550 no
    exit: 0 in 2.5 ms
    observe: would refuse: 550 no; nothing of it took effect
reply: 550 no
client: QUIT
reply: 221 mx
result: refused: RCPT TO:<a@x.test> got 550 no
";
        assert_eq!(r.text, want);
        let quiet = render(&events, 2, true).text;
        assert!(!quiet.contains("plugin"), "{quiet}");
        assert!(quiet.contains("reply: 550 no\n"), "{quiet}");
    }

    #[test]
    fn outcomes() {
        let ok = [got("220 mx\r\n"), sent("QUIT"), got("221 mx\r\n")];
        assert_eq!(render(&ok, 1, false).outcome, Outcome::Accepted);
        assert_eq!(render(&ok, 1, false).outcome.exit_code(), EXIT_ACCEPTED);
        // The server stopped reading before the last step.
        let dropped = [got("220 mx\r\n"), sent("MAIL FROM:<>"), got("250 ok\r\n")];
        assert_eq!(
            render(&dropped, 2, false).outcome,
            Outcome::Refused("the server closed the connection after MAIL FROM:<>".into())
        );
        // No reply at all (a plugin's D).
        let silent = [got("220 mx\r\n"), sent("RCPT TO:<a@x.test>")];
        assert_eq!(
            render(&silent, 2, false).outcome,
            Outcome::Refused("RCPT TO:<a@x.test> got no reply".into())
        );
        // A failure wins over the refusal it caused.
        let crashed = one_rcpt(
            run(":kill -SEGV $$", vec![], Some(Failure::Crashed)),
            "451 qmail-spp failure: :kill -SEGV $$: child crashed (#4.3.0)\r\n",
        );
        let r = render(&crashed, 2, false);
        assert_eq!(
            r.outcome,
            Outcome::Failed("plugin [rcpt] :kill -SEGV $$: child crashed".into())
        );
        assert_eq!(r.outcome.exit_code(), EXIT_FAILED);
        assert!(r.text.contains("    printed: nothing\n"), "{}", r.text);
        assert!(
            r.text
                .contains("    failure: child crashed (on-failure=tempfail)\n"),
            "{}",
            r.text
        );
    }

    #[test]
    fn shown_text() {
        assert_eq!(shown(b"plain <a@b> text"), "plain <a@b> text");
        assert_eq!(shown("é".as_bytes()), "é");
        assert_eq!(shown(b"a\\b\r\n\x01\xff"), "a\\\\b\\r\\n\\u{1}\\xff");
    }
}
