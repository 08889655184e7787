//! Running one plugin: spawn it (through [`crate::child`]: own process
//! group, cwd = home, the session's environment; stdin /dev/null or the
//! message), read its directives with a deadline
//! and output limits, log its stderr, and always reap it.

use super::directive::Directive;
use crate::child;
use crate::config::plugins::{OnFailure, Plugin, Program};
use crate::session::env::SessionEnv;
use std::ffi::OsStr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

/// Most bytes of stdout read from one plugin run (before and after its
/// terminating command, each).
pub const MAX_OUTPUT: usize = 64 * 1024;
/// Most directives accepted from one plugin run.
pub const MAX_DIRECTIVES: usize = 1000;
/// Most bytes of one stderr line that are logged.
const MAX_LOG_LINE: usize = 1024;
/// Most stderr bytes logged per classic run, or per minute of a persistent
/// plugin; the rest is read and discarded.
const MAX_LOG_TOTAL: usize = 64 * 1024;
/// Most stderr lines logged per classic run, or per minute of a
/// persistent plugin (empty lines count).
const MAX_LOG_LINES: usize = 200;
/// The window of a persistent plugin's stderr budget.
const LOG_WINDOW: Duration = Duration::from_secs(60);

/// Why a plugin run failed. Each becomes
/// `451 qmail-spp failure: <line>: <reason> (#4.3.0)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// It could not be started, or exited 120.
    CantExecute,
    /// It was killed by a signal we did not send.
    Crashed,
    /// It ran past its deadline; its process group was killed.
    Timeout,
    /// It printed more than the limits allow; its process group was killed.
    TooMuchOutput,
    /// No process could be created (out of processes, memory or files).
    ForkFailed,
    /// Persistent: every process was busy and the queue full, or none
    /// became free before the deadline.
    Busy,
    /// Persistent: the plugin failed recently and is not started again
    /// before the deadline (back-off).
    Restarting,
    /// Persistent: the plugin broke the protocol (handshake or reply end).
    Protocol,
}

impl Failure {
    /// The reason as it appears in the reply.
    pub fn reason(self) -> &'static str {
        match self {
            Failure::CantExecute => "can't execute",
            Failure::Crashed => "child crashed",
            Failure::Timeout => "timeout",
            Failure::TooMuchOutput => "too much output",
            Failure::ForkFailed => "vfork() failed",
            Failure::Busy => "busy",
            Failure::Restarting => "restarting after failures",
            Failure::Protocol => "protocol error",
        }
    }
}

/// The result of one run: the directives in order (up to and including the
/// first terminating one), and a failure if there was one.
#[derive(Debug, Default, Clone)]
pub struct RunOutcome {
    /// Directives to apply, in the order printed.
    pub directives: Vec<Directive>,
    /// Set when the run failed; directives before the failure still apply.
    pub failure: Option<Failure>,
    /// How a classic run's process ended (a kill by the server after a
    /// timeout or too much output included); `None` when no process was
    /// started or it was a persistent plugin's request. Only reported
    /// (`spp-smtpd try`): `failure` is what counts.
    pub status: Option<ExitStatus>,
}

impl RunOutcome {
    /// An outcome with no directives and `failure`, for a run that never
    /// started a process or got no answer.
    pub(crate) fn failed(failure: Failure) -> RunOutcome {
        RunOutcome {
            failure: Some(failure),
            ..Default::default()
        }
    }

    /// What the plugin would have done had it been enforced
    /// (`mode=observe`), in words: `would refuse: 550 no`, `would fail:
    /// timeout (on-failure=tempfail)`, `no verdict`...
    pub fn would(&self, on_failure: OnFailure) -> String {
        let verdict = self.directives.iter().find(|d| d.terminates());
        match (verdict, self.failure) {
            (Some(Directive::Error(t)), _) => format!("would refuse: {}", t.escape_ascii()),
            (Some(Directive::Reject(t)), _) => {
                format!("would refuse and disconnect: {}", t.escape_ascii())
            }
            (Some(Directive::Drop), _) => "would disconnect".to_string(),
            (Some(Directive::AcceptAll), _) => "would accept and stop plugins".to_string(),
            (Some(Directive::SkipChecks), _) => "would accept, skipping checks".to_string(),
            (Some(_), _) => "would accept".to_string(),
            (None, Some(f)) => format!(
                "would fail: {} (on-failure={})",
                f.reason(),
                on_failure.name()
            ),
            (None, None) => "no verdict".to_string(),
        }
    }
}

/// Limits for one run.
#[derive(Debug, Clone, Copy)]
pub struct RunLimits {
    /// Deadline for the whole run, from spawn to reaping.
    pub timeout: Duration,
}

/// Runs `plugin` and collects its directives. Its stdin is `/dev/null`,
/// or the file `input` opened read-only (the message, for `[body]`).
pub async fn run(
    plugin: &Plugin,
    env: &SessionEnv,
    home: &Path,
    limits: RunLimits,
    session: &str,
    input: Option<&Path>,
) -> RunOutcome {
    let name = crate::logging::quoted(&plugin.line);
    let mut cmd = match &plugin.program {
        Program::Shell(text) => child::command(
            Path::new("/bin/sh"),
            OsStr::new("/bin/sh"),
            [OsStr::new("-c"), text.as_os_str()],
            env,
            home,
        ),
        Program::Direct { path, argv } => child::command(path, &argv[0], &argv[1..], env, home),
    };
    let stdin = match input {
        None => Stdio::null(),
        Some(path) => match std::fs::File::open(path) {
            Ok(f) => Stdio::from(f),
            Err(e) => {
                tracing::error!(session, plugin = %name, error = %e, "cannot open the message for the plugin");
                return RunOutcome::failed(Failure::CantExecute);
            }
        },
    };
    cmd.stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match child::Process::spawn(&mut cmd) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(session, plugin = %name, error = %e, "plugin cannot be started");
            let failure = if child::is_resource_error(&e) {
                Failure::ForkFailed
            } else {
                Failure::CantExecute
            };
            return RunOutcome::failed(failure);
        }
    };
    let deadline = child::deadline_after(limits.timeout);
    if let Some(stderr) = child.take_stderr() {
        tokio::spawn(log_stderr(stderr, name.clone(), Some(session.to_string())));
    }
    let Some(mut stdout) = child.take_stdout() else {
        return RunOutcome::failed(Failure::CantExecute);
    };
    let mut directives = Vec::new();
    let read =
        tokio::time::timeout_at(deadline, read_directives(&mut stdout, &mut directives)).await;
    let (failure, status) = match read {
        Ok(ReadEnd::Verdict) => {
            after_verdict(&mut child, &mut stdout, deadline, &name, session).await
        }
        Ok(ReadEnd::Eof) => {
            drop(stdout);
            match child.wait_until(deadline).await {
                Ok(status) => (status_failure(&status), status.ok()),
                Err(status) => (Some(Failure::Timeout), status),
            }
        }
        Ok(ReadEnd::Failed(f)) => (Some(f), child.kill().await),
        Err(_) => (Some(Failure::Timeout), child.kill().await),
    };
    // Whatever the plugin left running in its process group goes with it.
    drop(child);
    if let Some(f) = failure {
        tracing::warn!(session, plugin = %name, failure = f.reason(), "plugin failed");
    }
    RunOutcome {
        directives,
        failure,
        status,
    }
}

/// After the verdict: discard further output (bounded) until the plugin
/// exits. Its exit status still counts (crash, 120); output beyond the
/// limit or the deadline only gets it killed: the verdict stands.
async fn after_verdict(
    child: &mut child::Process,
    stdout: &mut (impl AsyncRead + Unpin),
    deadline: Instant,
    name: &str,
    session: &str,
) -> (Option<Failure>, Option<ExitStatus>) {
    let mut buf = [0u8; 4096];
    let mut drained = 0usize;
    let mut eof = false;
    loop {
        tokio::select! {
            status = child.wait() => return (status_failure(&status), status.ok()),
            r = stdout.read(&mut buf), if !eof => match r {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => {
                    drained += n;
                    if drained > MAX_OUTPUT {
                        tracing::warn!(session, plugin = %name, "plugin kept printing after its verdict; killed");
                        break;
                    }
                }
            },
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!(session, plugin = %name, "plugin still running after its verdict at the deadline; killed");
                break;
            }
        }
    }
    (None, child.kill().await)
}

/// The failure an exit status means: killed by a signal, or 120.
fn status_failure(status: &std::io::Result<ExitStatus>) -> Option<Failure> {
    match status {
        Ok(s) if s.signal().is_some() => Some(Failure::Crashed),
        Ok(s) if s.code() == Some(120) => Some(Failure::CantExecute),
        Ok(_) => None,
        Err(e) => {
            tracing::error!(error = %e, "waiting for a child failed");
            Some(Failure::Crashed)
        }
    }
}

/// How reading a plugin's stdout ended.
enum ReadEnd {
    /// End of output without a terminating command.
    Eof,
    /// A terminating command was read (it is the last directive).
    Verdict,
    /// The output broke the limits before a verdict.
    Failed(Failure),
}

/// Reads directives up to the first terminating one (appended to
/// `directives`, so they survive a timeout) or EOF.
async fn read_directives(
    out: &mut (impl AsyncRead + Unpin),
    directives: &mut Vec<Directive>,
) -> ReadEnd {
    let mut pending: Vec<u8> = Vec::new();
    let mut total = 0usize;
    let mut buf = [0u8; 4096];
    loop {
        let n = match out.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        total += n;
        if total > MAX_OUTPUT {
            return ReadEnd::Failed(Failure::TooMuchOutput);
        }
        // `pending` holds no LF before its old end: scan only new bytes.
        let mut from = pending.len();
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(off) = pending[from..].iter().position(|&b| b == b'\n') {
            let lf = from + off;
            if push_line(&pending[start..lf], directives) {
                return ReadEnd::Verdict;
            }
            if directives.len() > MAX_DIRECTIVES {
                return ReadEnd::Failed(Failure::TooMuchOutput);
            }
            start = lf + 1;
            from = start;
        }
        pending.drain(..start);
    }
    if !pending.is_empty() && push_line(&pending, directives) {
        return ReadEnd::Verdict;
    }
    ReadEnd::Eof
}

/// Parses one output line (a trailing CR stripped); `None` for lines
/// that are ignored.
pub(crate) fn parse_directive_line(line: &[u8]) -> Option<Directive> {
    Directive::parse(line.strip_suffix(b"\r").unwrap_or(line))
}

/// Parses one line (CR stripped) and appends it; true if it terminates.
fn push_line(line: &[u8], directives: &mut Vec<Directive>) -> bool {
    match parse_directive_line(line) {
        Some(d) => {
            let t = d.terminates();
            directives.push(d);
            t
        }
        None => false,
    }
}

/// Logs the plugin's stderr line by line, bounded in lines and bytes (per
/// run for a classic run, `session` given; per minute for a persistent
/// plugin), and drains the rest, so a plugin writing without pause cannot
/// flood the log or stall on a full pipe.
pub(crate) async fn log_stderr(
    mut err: impl AsyncRead + Unpin,
    plugin: String,
    session: Option<String>,
) {
    let session = session.as_deref().unwrap_or("-");
    let mut budget = StderrBudget::new(if session == "-" {
        Some(LOG_WINDOW)
    } else {
        None
    });
    let mut buf = [0u8; 4096];
    let mut line: Vec<u8> = Vec::new();
    let mut partial = false;
    loop {
        let n = match err.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                if budget.take(line.len()) {
                    tracing::info!(session, plugin = %plugin, "stderr: {}", line.escape_ascii());
                }
                line.clear();
                partial = false;
            } else if line.len() < MAX_LOG_LINE {
                line.push(b);
                partial = true;
            }
        }
        if let Some(dropped) = budget.window_report() {
            tracing::warn!(session, plugin = %plugin, dropped, "stderr lines over the limit were not logged");
        }
    }
    if partial && budget.take(line.len()) {
        tracing::info!(session, plugin = %plugin, "stderr: {}", line.escape_ascii());
    }
    if budget.dropped > 0 {
        tracing::warn!(session, plugin = %plugin, dropped = budget.dropped, "stderr lines over the limit were not logged");
    }
}

/// How much of a plugin's stderr may still be logged.
struct StderrBudget {
    /// Lines left in this window.
    lines: usize,
    /// Bytes left in this window.
    bytes: usize,
    /// Lines not logged since the last report.
    dropped: u64,
    /// The budget renews after this long (`None`: once for the run).
    window: Option<Duration>,
    /// When the current window started.
    started: Instant,
}

impl StderrBudget {
    fn new(window: Option<Duration>) -> StderrBudget {
        StderrBudget {
            lines: MAX_LOG_LINES,
            bytes: MAX_LOG_TOTAL,
            dropped: 0,
            window,
            started: Instant::now(),
        }
    }

    /// Whether a line of `len` bytes may be logged (and takes it).
    fn take(&mut self, len: usize) -> bool {
        if self.lines == 0 || self.bytes < len {
            self.dropped += 1;
            return false;
        }
        self.lines -= 1;
        self.bytes -= len;
        true
    }

    /// At the end of a window: the number of lines dropped in it, if any,
    /// and a fresh budget.
    fn window_report(&mut self) -> Option<u64> {
        let window = self.window?;
        if self.started.elapsed() < window {
            return None;
        }
        self.started = Instant::now();
        self.lines = MAX_LOG_LINES;
        self.bytes = MAX_LOG_TOTAL;
        let dropped = std::mem::take(&mut self.dropped);
        (dropped > 0).then_some(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `out` in pieces of 1, 2, 3 and 4096 bytes; all must agree.
    async fn read(out: &[u8]) -> (Vec<Directive>, bool) {
        let mut results = Vec::new();
        for chunk in [1, 2, 3, 4096] {
            let mut d = Vec::new();
            let end = read_directives(&mut crate::testing::Trickle::new(out, chunk), &mut d).await;
            results.push((d, matches!(end, ReadEnd::Failed(_))));
        }
        assert!(
            results.windows(2).all(|w| w[0] == w[1]),
            "split reads disagree: {results:?}"
        );
        results.pop().unwrap()
    }

    #[tokio::test]
    async fn output_lines_lf_crlf_unterminated() {
        let e = |s: &str| Directive::Error(s.as_bytes().to_vec());
        assert_eq!(read(b"E550 no").await.0, vec![e("550 no")]);
        assert_eq!(read(b"E550 x\r\n").await.0, vec![e("550 x")]);
        assert_eq!(
            read(b"P1\n\nE2\nE3\n").await.0,
            vec![Directive::Print(b"1".to_vec()), e("2")]
        );
        assert_eq!(read(b"D").await.0, vec![Directive::Drop]);
        assert_eq!(read(b"").await.0, vec![]);
    }

    #[tokio::test]
    async fn limits() {
        let many = "P x\n".repeat(MAX_DIRECTIVES + 1);
        assert!(read(many.as_bytes()).await.1);
        let big = vec![b'x'; MAX_OUTPUT + 1];
        assert!(read(&big).await.1);
        let mut after = b"N\n".to_vec();
        after.extend(vec![b'x'; MAX_OUTPUT]);
        let (d, failed) = read(&after).await;
        assert_eq!(
            (d, failed),
            (vec![Directive::Next], false),
            "output after the verdict is not parsed"
        );
    }
}
