//! The `sendmail` backend: `PROGRAM -i -f SENDER -- RCPT...` with the
//! message on stdin (LF line ends), the interface Postfix's and Exim's
//! sendmail share. Exit 0 is `250`; EX_TEMPFAIL, the other temporary
//! sysexits codes, a signal or a stall are `451`; any other status is a
//! permanent `554`.

use super::{Envelope, Handoff, JobResult};
#[cfg(test)]
use crate::session::env::SessionEnv;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// sysexits.h codes that mean "try again later": EX_OSERR, EX_OSFILE,
/// EX_CANTCREAT, EX_IOERR, EX_TEMPFAIL.
const TEMPORARY: [i32; 5] = [71, 72, 73, 74, 75];
/// Most bytes of the program's output kept for the log.
const MAX_OUTPUT: usize = 4096;

/// The argument vector after the program name.
pub fn arguments(envelope: &Envelope) -> Vec<OsString> {
    let sender: &[u8] = if envelope.sender.is_empty() {
        b"<>"
    } else {
        &envelope.sender
    };
    let mut args: Vec<OsString> = vec![
        "-i".into(),
        "-f".into(),
        OsStr::from_bytes(sender).into(),
        "--".into(),
    ];
    args.extend(
        envelope
            .recipients
            .iter()
            .map(|r| OsString::from(OsStr::from_bytes(r))),
    );
    args
}

/// Runs `program` with the message (`head`, then the spool) on stdin; each
/// write and the wait are bounded by `limit`.
pub async fn deliver(program: &Path, h: &Handoff<'_>) -> JobResult {
    let (envelope, session, limit) = (h.envelope, h.session, h.limit);
    let mut cmd = crate::child::command(
        program,
        program.as_os_str(),
        arguments(envelope),
        h.env,
        h.home,
    );
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match crate::child::Process::spawn_handoff(&mut cmd) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(session, program = %program.display(), error = %e, "cannot start sendmail");
            return JobResult::Failed("451 unable to exec sendmail (#4.3.0)".into());
        }
    };
    let (stdout, stderr) = (child.take_stdout(), child.take_stderr());
    // Both pipes are read to the end (a full pipe would stall the
    // program); the first bytes of each are kept for the log.
    let collector = tokio::spawn(async move {
        let (mut out, err) = tokio::join!(keep_first(stdout), keep_first(stderr));
        out.extend(err);
        out
    });
    let Some(mut stdin) = child.take_stdin() else {
        return JobResult::Failed("451 sendmail failed (#4.3.0)".into());
    };
    let written = tokio::time::timeout(limit, async {
        stdin.write_all(h.head).await?;
        let mut reader = h.spooled.reader();
        while let Some(chunk) = reader.next_chunk().await? {
            stdin.write_all(&chunk).await?;
        }
        stdin.shutdown().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        // The program did not get the whole message. Closing its stdin now
        // would let it queue the part it has (`-i`): unless it already
        // exited refusing, it is killed first.
        let refused = match child.try_wait() {
            Some(status) if status.code().is_some_and(|c| c != 0) => Some(status),
            _ => None,
        };
        if refused.is_none() {
            child.kill().await;
            drop(stdin);
            let why = match written {
                Err(_) => "stalled",
                Ok(Err(_)) => "could not be given the message",
                Ok(Ok(())) => "failed",
            };
            tracing::error!(session, program = %program.display(), "sendmail {why}; killed");
            return JobResult::Failed(match written {
                Err(_) => "451 sendmail timed out (#4.3.0)".into(),
                _ => "451 sendmail failed (#4.3.0)".into(),
            });
        }
    }
    drop(stdin);
    let status = child.wait_until(crate::child::deadline_after(limit)).await;
    let status = match status {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::error!(session, error = %e, "waiting for sendmail failed");
            return JobResult::Failed("451 sendmail failed (#4.3.0)".into());
        }
        Err(_) => {
            tracing::error!(session, program = %program.display(), "sendmail stalled; killed");
            return JobResult::Failed("451 sendmail timed out (#4.3.0)".into());
        }
    };
    let output = match tokio::time::timeout(Duration::from_secs(1), collector).await {
        Ok(Ok(out)) => out,
        _ => Vec::new(),
    };
    let printed = String::from_utf8_lossy(&output);
    let printed = printed.trim();
    match (status.code(), status.signal()) {
        (Some(0), _) => {
            if !printed.is_empty() {
                tracing::info!(session, output = %printed.escape_debug(), "sendmail said");
            }
            JobResult::Queued("250 ok handed to sendmail".into())
        }
        (Some(code), _) => {
            tracing::warn!(session, program = %program.display(), code, output = %printed.escape_debug(), "sendmail refused the message");
            if TEMPORARY.contains(&code) {
                JobResult::Failed(format!(
                    "451 sendmail temporary failure, exit {code} (#4.3.0)"
                ))
            } else {
                JobResult::Failed(format!(
                    "554 sendmail permanent failure, exit {code} (#5.3.0)"
                ))
            }
        }
        (None, signal) => {
            tracing::warn!(session, program = %program.display(), signal = signal.unwrap_or(0), "sendmail crashed");
            JobResult::Failed("451 sendmail crashed (#4.3.0)".into())
        }
    }
}

/// Reads `pipe` to its end; the first [`MAX_OUTPUT`] bytes.
async fn keep_first(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    let mut kept = Vec::new();
    if let Some(mut p) = pipe {
        let mut buf = [0u8; 4096];
        while let Ok(n) = p.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let room = MAX_OUTPUT.saturating_sub(kept.len()).min(n);
            kept.extend_from_slice(&buf[..room]);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_vector() {
        let e = Envelope {
            sender: vec![],
            recipients: vec![b"-oi@x".to_vec(), b"b@y".to_vec()],
            smtputf8: false,
        };
        assert_eq!(arguments(&e), ["-i", "-f", "<>", "--", "-oi@x", "b@y"]);
        let e = Envelope {
            sender: b"a@x".to_vec(),
            recipients: vec![b"b@y".to_vec()],
            smtputf8: false,
        };
        assert_eq!(arguments(&e), ["-i", "-f", "a@x", "--", "b@y"]);
    }

    #[tokio::test]
    async fn a_message_that_cannot_be_read_whole_is_not_handed_over() {
        use crate::queue::spool::SpoolWriter;
        let dir = std::env::temp_dir().join(format!("spp-sendmail-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let program = dir.join("sendmail");
        std::fs::write(&program, "#!/bin/sh\ncat > got\nexit 0\n").unwrap();
        std::fs::set_permissions(
            &program,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let mut w = SpoolWriter::on_file(&dir.join("spool")).await.unwrap();
        w.write(&vec![b'x'; 300_000]).await;
        let spooled = w.finish().await.unwrap();
        // The spool file loses its content: reading it back fails.
        std::fs::OpenOptions::new()
            .write(true)
            .open(spooled.path().unwrap())
            .unwrap()
            .set_len(1000)
            .unwrap();
        let envelope = Envelope {
            sender: b"a@x".to_vec(),
            recipients: vec![b"b@y".to_vec()],
            smtputf8: false,
        };
        let env = SessionEnv::default();
        let h = Handoff {
            env: &env,
            home: &dir,
            envelope: &envelope,
            head: b"Received: x\n",
            spooled: &spooled,
            limit: Duration::from_secs(10),
            session: "t",
        };
        assert_eq!(
            deliver(&program, &h).await,
            JobResult::Failed("451 sendmail failed (#4.3.0)".into())
        );
        drop(spooled);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
