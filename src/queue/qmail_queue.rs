//! The qmail-queue program interface: message on fd 0, envelope on fd 1
//! (`F` sender NUL, `T` recipient NUL ..., NUL), exit status → reply. The
//! program of an SMTPUTF8 transaction gets `SMTPUTF8=1` in its
//! environment (addresses are then UTF-8); no other program gets it.

use super::{Envelope, JobResult};
use crate::session::env::SessionEnv;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::process::ChildStdin;

/// A running (or failed-to-exec) qmail-queue.
pub struct QmailJob {
    /// `None` when exec failed: the body is swallowed and the reply is
    /// `451 unable to exec qq`, as with qmail.
    child: Option<crate::child::Process>,
    stdin: Option<ChildStdin>,
    envelope: Option<pipe::Sender>,
    write_failed: bool,
    /// Bound for each write and for the wait (`timeoutsmtpd`).
    limit: Duration,
    /// A write or the wait ran past `limit`: the program is killed.
    stalled: bool,
}

impl QmailJob {
    /// Starts `program` with cwd `home` and the session's environment,
    /// with `SMTPUTF8=1` exactly when `smtputf8`. Errors only when no
    /// process could be created at all.
    pub fn start(
        program: &Path,
        env: &SessionEnv,
        home: &Path,
        limit: Duration,
        smtputf8: bool,
    ) -> std::io::Result<QmailJob> {
        let (tx, rx) = pipe::pipe()?;
        let rx = rx.into_blocking_fd()?;
        let no_args: [&str; 0] = [];
        let mut cmd = crate::child::command(program, program.as_os_str(), no_args, env, home);
        if smtputf8 {
            cmd.env("SMTPUTF8", "1");
        } else {
            cmd.env_remove("SMTPUTF8");
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::from(rx))
            .stderr(Stdio::inherit());
        match crate::child::Process::spawn_lasting(&mut cmd) {
            Ok(mut child) => Ok(QmailJob {
                stdin: child.take_stdin(),
                child: Some(child),
                envelope: Some(tx),
                write_failed: false,
                limit,
                stalled: false,
            }),
            Err(e) if crate::child::is_resource_error(&e) => Err(e),
            Err(e) => {
                tracing::error!(program = %program.display(), error = %e, "cannot exec queue program");
                Ok(QmailJob {
                    child: None,
                    stdin: None,
                    envelope: None,
                    write_failed: true,
                    limit,
                    stalled: false,
                })
            }
        }
    }

    /// Writes message bytes to fd 0.
    pub async fn write(&mut self, data: &[u8]) {
        if let Some(stdin) = &mut self.stdin {
            match tokio::time::timeout(self.limit, stdin.write_all(data)).await {
                Ok(Ok(())) => return,
                Ok(Err(_)) => {}
                Err(_) => self.stalled = true,
            }
            self.write_failed = true;
            self.stdin = None;
        }
    }

    /// Closes the message, writes the envelope (unless abandoned), waits.
    pub async fn finish(mut self, envelope: Option<&Envelope>) -> JobResult {
        if let Some(mut stdin) = self.stdin.take() {
            if stdin.flush().await.is_err() {
                self.write_failed = true;
            }
        }
        let mut sent = false;
        if let (Some(mut tx), Some(env)) = (self.envelope.take(), envelope) {
            if !self.write_failed {
                match tokio::time::timeout(self.limit, tx.write_all(&envelope_bytes(env))).await {
                    Ok(r) => sent = r.is_ok(),
                    Err(_) => self.stalled = true,
                }
            }
        }
        let Some(mut child) = self.child else {
            return JobResult::Failed("451 unable to exec qq (#4.3.0)".into());
        };
        let pid = child.id().unwrap_or(0);
        let waited = match self.stalled {
            true => Err(child.kill().await),
            false => {
                child
                    .wait_until(crate::child::deadline_after(self.limit))
                    .await
            }
        };
        let status = match waited {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "waiting for the queue program failed");
                return JobResult::Failed("451 qq waitpid surprise (#4.3.0)".into());
            }
            Err(_) => {
                tracing::error!(pid, "queue program stalled; killed");
                return JobResult::Failed(reply_for_exit(52).into());
            }
        };
        match status.code() {
            None => JobResult::Failed("451 qq crashed (#4.3.0)".into()),
            Some(0) if sent => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                JobResult::Queued(format!("250 ok {now} qp {pid}"))
            }
            Some(0) => JobResult::Failed(reply_for_exit(54).into()),
            Some(code) => JobResult::Failed(reply_for_exit(code).into()),
        }
    }
}

/// The envelope as qmail-queue reads it on fd 1.
pub fn envelope_bytes(env: &Envelope) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(b'F');
    out.extend_from_slice(&env.sender);
    out.push(0);
    for r in &env.recipients {
        out.push(b'T');
        out.extend_from_slice(r);
        out.push(0);
    }
    out.push(0);
    out
}

/// The reply for a non-zero qmail-queue exit status.
pub fn reply_for_exit(code: i32) -> &'static str {
    match code {
        11 | 115 => "554 envelope address too long for qq (#5.1.3)",
        31 => "554 mail server permanently rejected message (#5.3.0)",
        51 => "451 qq out of memory (#4.3.0)",
        52 => "451 qq timeout (#4.3.0)",
        53 => "451 qq write error or disk full (#4.3.0)",
        54 => "451 qq read error (#4.3.0)",
        55 => "451 qq unable to read configuration (#4.3.0)",
        56 => "451 qq trouble making network connection (#4.3.0)",
        61 => "451 qq trouble in home directory (#4.3.0)",
        62..=66 => "451 qq trouble creating files in queue (#4.3.0)",
        71 => "451 mail server temporarily rejected message (#4.3.0)",
        72 => "451 connection to mail server timed out (#4.4.1)",
        73 => "451 connection to mail server rejected (#4.4.1)",
        74 => "451 communication with mail server failed (#4.4.2)",
        81 | 91 => "451 qq internal bug (#4.3.0)",
        120 => "451 unable to exec qq (#4.3.0)",
        11..=40 => "554 qq permanent problem (#5.3.0)",
        _ => "451 qq temporary problem (#4.3.0)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_format() {
        let e = Envelope {
            sender: b"a@example.org".to_vec(),
            recipients: vec![b"bob@ref.test".to_vec()],
            smtputf8: false,
        };
        assert_eq!(envelope_bytes(&e), b"Fa@example.org\0Tbob@ref.test\0\0");
        let e = Envelope {
            sender: vec![],
            recipients: vec![b"x".to_vec(), b"y".to_vec()],
            smtputf8: false,
        };
        assert_eq!(envelope_bytes(&e), b"F\0Tx\0Ty\0\0");
    }

    #[test]
    fn exit_code_table() {
        assert_eq!(
            reply_for_exit(11),
            "554 envelope address too long for qq (#5.1.3)"
        );
        assert_eq!(reply_for_exit(12), "554 qq permanent problem (#5.3.0)");
        assert_eq!(reply_for_exit(40), "554 qq permanent problem (#5.3.0)");
        assert_eq!(reply_for_exit(41), "451 qq temporary problem (#4.3.0)");
        assert_eq!(
            reply_for_exit(64),
            "451 qq trouble creating files in queue (#4.3.0)"
        );
        assert_eq!(reply_for_exit(1), "451 qq temporary problem (#4.3.0)");
        assert_eq!(reply_for_exit(120), "451 unable to exec qq (#4.3.0)");
    }
}
