//! Running one plugin: spawn it (own process group, stdin /dev/null, cwd =
//! home, the session's environment), read its directives with a deadline
//! and output limits, log its stderr, and always reap it.

use super::directive::Directive;
use crate::config::plugins::{Plugin, Program};
use crate::session::env::SessionEnv;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// Most bytes of stdout read from one plugin run (before and after its
/// terminating command, each).
pub const MAX_OUTPUT: usize = 64 * 1024;
/// Most directives accepted from one plugin run.
pub const MAX_DIRECTIVES: usize = 1000;
/// Most bytes of one stderr line that are logged.
const MAX_LOG_LINE: usize = 1024;
/// Most stderr bytes logged per run; the rest is read and discarded.
const MAX_LOG_TOTAL: usize = 64 * 1024;

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
}

impl Failure {
    /// The reason as it appears in the reply.
    pub fn reason(self) -> &'static str {
        match self {
            Failure::CantExecute => "can't execute",
            Failure::Crashed => "child crashed",
            Failure::Timeout => "timeout",
            Failure::TooMuchOutput => "too much output",
        }
    }
}

/// The result of one run: the directives in order (up to and including the
/// first terminating one), and a failure if there was one.
#[derive(Debug, Default)]
pub struct RunOutcome {
    /// Directives to apply, in the order printed.
    pub directives: Vec<Directive>,
    /// Set when the run failed; directives before the failure still apply.
    pub failure: Option<Failure>,
}

/// Limits for one run.
#[derive(Debug, Clone, Copy)]
pub struct RunLimits {
    /// Deadline for the whole run, from spawn to reaping.
    pub timeout: Duration,
}

/// Runs `plugin` and collects its directives.
pub async fn run(
    plugin: &Plugin,
    env: &SessionEnv,
    home: &Path,
    limits: RunLimits,
    session: &str,
) -> RunOutcome {
    let name = String::from_utf8_lossy(&plugin.line).into_owned();
    let mut cmd = match &plugin.program {
        Program::Shell(text) => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(text);
            c
        }
        Program::Direct { path, argv } => {
            let mut c = Command::new(path);
            c.arg0(&argv[0]).args(&argv[1..]);
            c
        }
    };
    cmd.env_clear()
        .envs(env.iter_os())
        .current_dir(home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(session, plugin = %name, error = %e, "plugin cannot be started");
            return RunOutcome {
                directives: Vec::new(),
                failure: Some(Failure::CantExecute),
            };
        }
    };
    let deadline = Instant::now() + limits.timeout;
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(log_stderr(stderr, name.clone(), session.to_string()));
    }
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut directives = Vec::new();
    let read =
        tokio::time::timeout_at(deadline, read_directives(&mut stdout, &mut directives)).await;
    drop(stdout);
    let mut failure = match read {
        Ok(ReadEnd::Eof) => None,
        Ok(ReadEnd::Failed(f)) => Some(f),
        Ok(ReadEnd::ChatterAfterVerdict) => {
            tracing::warn!(session, plugin = %name, "plugin kept printing after its verdict; killed");
            kill_group(&mut child);
            let _ = child.wait().await;
            return RunOutcome {
                directives,
                failure: None,
            };
        }
        Err(_) => Some(Failure::Timeout),
    };
    if failure.is_some() {
        kill_group(&mut child);
    }
    match tokio::time::timeout_at(deadline, child.wait()).await {
        Ok(Ok(status)) => {
            if failure.is_none() {
                if status.signal().is_some() {
                    failure = Some(Failure::Crashed);
                } else if status.code() == Some(120) {
                    failure = Some(Failure::CantExecute);
                }
            }
        }
        Ok(Err(e)) => {
            tracing::error!(session, plugin = %name, error = %e, "waiting for plugin failed");
            failure.get_or_insert(Failure::Crashed);
        }
        Err(_) => {
            kill_group(&mut child);
            let _ = child.wait().await;
            failure.get_or_insert(Failure::Timeout);
        }
    }
    if let Some(f) = failure {
        tracing::warn!(session, plugin = %name, failure = f.reason(), "plugin failed");
    }
    RunOutcome {
        directives,
        failure,
    }
}

/// How reading a plugin's stdout ended.
enum ReadEnd {
    /// End of output.
    Eof,
    /// The output broke the limits before a verdict.
    Failed(Failure),
    /// A verdict was given, then more than [`MAX_OUTPUT`] bytes followed.
    ChatterAfterVerdict,
}

/// Reads stdout: directives up to the first terminating one (appended to
/// `directives`, so they survive a timeout), then drains, bounded, to EOF.
async fn read_directives(
    out: &mut (impl AsyncRead + Unpin),
    directives: &mut Vec<Directive>,
) -> ReadEnd {
    let mut pending: Vec<u8> = Vec::new();
    let mut total = 0usize;
    let mut buf = [0u8; 4096];
    let mut terminated = false;
    let mut drained = 0usize;
    loop {
        let n = match out.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if terminated {
            drained += n;
            if drained > MAX_OUTPUT {
                return ReadEnd::ChatterAfterVerdict;
            }
            continue;
        }
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
            let line = &pending[start..lf];
            start = lf + 1;
            from = start;
            if push_line(line, directives) {
                terminated = true;
                break;
            }
            if directives.len() > MAX_DIRECTIVES {
                return ReadEnd::Failed(Failure::TooMuchOutput);
            }
        }
        if terminated {
            drained = pending.len() - start;
            pending.clear();
        } else {
            pending.drain(..start);
        }
    }
    if !terminated && !pending.is_empty() {
        push_line(&pending, directives);
    }
    ReadEnd::Eof
}

/// Parses one line (CR stripped) and appends it; true if it terminates.
fn push_line(line: &[u8], directives: &mut Vec<Directive>) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match Directive::parse(line) {
        Some(d) => {
            let t = d.terminates();
            directives.push(d);
            t
        }
        None => false,
    }
}

/// Kills the plugin's whole process group.
fn kill_group(child: &mut Child) {
    if let Some(pid) = child.id() {
        // SAFETY: killpg only sends a signal; the group is the child's own
        // (process_group(0) made the child its leader).
        unsafe { libc::killpg(pid as libc::pid_t, libc::SIGKILL) };
    }
    let _ = child.start_kill();
}

/// Logs the plugin's stderr line by line, bounded, then drains the rest.
async fn log_stderr(mut err: impl AsyncRead + Unpin, plugin: String, session: String) {
    let mut buf = [0u8; 4096];
    let mut line: Vec<u8> = Vec::new();
    let mut logged = 0usize;
    loop {
        let n = match err.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if logged > MAX_LOG_TOTAL {
            continue;
        }
        for &b in &buf[..n] {
            if b == b'\n' {
                logged += line.len();
                tracing::info!(session, plugin = %plugin, "stderr: {}", String::from_utf8_lossy(&line));
                line.clear();
            } else if line.len() < MAX_LOG_LINE {
                line.push(b);
            }
        }
    }
    if !line.is_empty() && logged <= MAX_LOG_TOTAL {
        tracing::info!(session, plugin = %plugin, "stderr: {}", String::from_utf8_lossy(&line));
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
        assert_eq!((d, failed), (vec![Directive::Next], false));
    }
}
