//! An in-memory SMTP client for the session engine: the session runs in a
//! task over `tokio::io::duplex`; the test sends lines and asserts replies.

use spp_smtpd::config::Config;
use spp_smtpd::session::env::SessionEnv;
use spp_smtpd::session::Session;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, ReadHalf, WriteHalf};
use tokio::task::JoinHandle;

/// How long a test waits for any reply before failing.
const REPLY_WAIT: Duration = Duration::from_secs(20);

/// The reply lines to one command.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Lines without CRLF.
    pub lines: Vec<String>,
}

impl Reply {
    /// Asserts the code of the last line.
    pub fn code(&self, code: u16) -> &Self {
        let last = self.last();
        assert!(
            last.starts_with(&code.to_string()),
            "expected {code}, got {:?}",
            self.lines
        );
        self
    }

    /// Asserts the last line exactly.
    pub fn text(&self, text: &str) -> &Self {
        assert_eq!(self.last(), text, "all lines: {:?}", self.lines);
        self
    }

    /// Asserts all lines exactly.
    pub fn all(&self, lines: &[&str]) -> &Self {
        assert_eq!(self.lines, lines);
        self
    }

    /// The last line.
    pub fn last(&self) -> &str {
        self.lines.last().map(String::as_str).unwrap_or("")
    }
}

/// Whether a line ends a reply: `DDD` or `DDD ` + text.
fn is_final(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() >= 3 && b[..3].iter().all(u8::is_ascii_digit) && (b.len() == 3 || b[3] == b' ')
}

/// The client side of an in-memory session.
pub struct Driver {
    reader: BufReader<ReadHalf<DuplexStream>>,
    writer: WriteHalf<DuplexStream>,
    task: Option<JoinHandle<i32>>,
}

impl Driver {
    /// Starts a session with `PATH` plus `env`.
    pub async fn start(cfg: Arc<Config>, env: &[(&str, &str)]) -> Driver {
        let mut senv = SessionEnv::default();
        senv.set(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        );
        for (k, v) in env {
            senv.set(k, v);
        }
        let (client, server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(Session::new(Box::new(server), cfg, senv, "test".into()).run());
        let (cr, cw) = tokio::io::split(client);
        Driver {
            reader: BufReader::new(cr),
            writer: cw,
            task: Some(task),
        }
    }

    /// Reads one line (without CRLF); `None` at EOF.
    pub async fn try_line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(REPLY_WAIT, self.reader.read_until(b'\n', &mut buf))
            .await
            .expect("no reply within the wait")
            .expect("read from session");
        if n == 0 {
            return None;
        }
        assert!(
            buf.ends_with(b"\r\n"),
            "reply line not CRLF-terminated: {buf:?}"
        );
        buf.truncate(buf.len() - 2);
        Some(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Reads one line; panics at EOF.
    pub async fn line(&mut self) -> String {
        self.try_line().await.expect("session closed unexpectedly")
    }

    /// Reads lines up to and including a final reply line.
    pub async fn reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        loop {
            let l = self.line().await;
            let done = is_final(&l);
            lines.push(l);
            if done {
                return Reply { lines };
            }
        }
    }

    /// Reads exactly `n` lines.
    pub async fn lines(&mut self, n: usize) -> Vec<String> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(self.line().await);
        }
        v
    }

    /// Sends raw bytes.
    pub async fn send(&mut self, raw: impl AsRef<[u8]>) {
        self.writer
            .write_all(raw.as_ref())
            .await
            .expect("write to session");
    }

    /// Sends a command line (CRLF added) and reads its reply.
    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n")).await;
        self.reply().await
    }

    /// Reads the greeting (which may be preceded by plugin lines).
    pub async fn greeting(&mut self) -> Reply {
        self.reply().await
    }

    /// Sends a message body (already CRLF-formatted, without the final dot
    /// line), then `.` and reads the reply.
    pub async fn body(&mut self, body: &str) -> Reply {
        self.send(format!("{body}.\r\n")).await;
        self.reply().await
    }

    /// A whole transaction: MAIL, RCPTs, DATA, body; asserts the intermediate
    /// codes and returns the final reply.
    pub async fn mail(&mut self, from: &str, to: &[&str], body: &str) -> Reply {
        self.cmd(&format!("MAIL FROM:<{from}>")).await.code(250);
        for r in to {
            self.cmd(&format!("RCPT TO:<{r}>")).await.code(250);
        }
        self.cmd("DATA").await.text("354 go ahead");
        self.body(body).await
    }

    /// Expects the session to close; returns its exit status.
    pub async fn closed(&mut self) -> i32 {
        let extra = self.try_line().await;
        assert_eq!(extra, None, "expected the session to close");
        self.exit_code().await
    }

    /// Waits for the session task and returns its exit status.
    pub async fn exit_code(&mut self) -> i32 {
        let task = self.task.take().expect("session already awaited");
        tokio::time::timeout(REPLY_WAIT, task)
            .await
            .expect("session ends")
            .expect("session task")
    }

    /// Closes the client side (EOF for the session).
    pub async fn hang_up(&mut self) {
        let _ = self.writer.shutdown().await;
    }
}

impl Drop for Driver {
    /// Stops a session that is still running, so it does not outlive the
    /// test's home directory.
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
