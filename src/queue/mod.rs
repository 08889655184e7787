//! Handing accepted mail to a queue. `250` is only said once the backend
//! has the message durably: the qmail-queue program exited 0, or the
//! Maildir file was fsynced and renamed into `new/`.

pub mod maildir;
pub mod qmail_queue;

use crate::session::env::SessionEnv;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What `control/queue` says (one line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueSetting {
    /// `qmail-queue [PROGRAM]`: the program (else `$QMAILQUEUE` or
    /// `bin/qmail-queue`).
    QmailQueue(Option<PathBuf>),
    /// `maildir [DIR]`: the directory (else `Maildir`), relative to home.
    Maildir(Option<PathBuf>),
}

impl QueueSetting {
    /// Parses the line of `control/queue`.
    pub fn parse(line: &[u8]) -> Result<QueueSetting, String> {
        let text = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_string())?;
        let mut words = text.split_whitespace();
        let kind = words.next().unwrap_or("");
        let arg = words.next().map(PathBuf::from);
        if words.next().is_some() {
            return Err(format!(
                "too many words in {text:?}: expected `maildir [DIR]` or `qmail-queue [PROGRAM]`"
            ));
        }
        match kind {
            "qmail-queue" => Ok(QueueSetting::QmailQueue(arg)),
            "maildir" => Ok(QueueSetting::Maildir(arg)),
            other => Err(format!(
                "unknown queue type {other:?}: expected `maildir [DIR]` or `qmail-queue [PROGRAM]`"
            )),
        }
    }
}

/// The backend chosen for a session (decided at its first DATA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Run this program with the qmail-queue interface.
    QmailQueue(PathBuf),
    /// Deliver into this Maildir.
    Maildir(PathBuf),
}

impl Backend {
    /// Chooses the backend: `control/queue` if present, else qmail-queue
    /// when `$QMAILQUEUE` is set or `bin/qmail-queue` exists, else the
    /// Maildir `Maildir` under the home.
    pub fn select(setting: Option<&QueueSetting>, env: &SessionEnv, home: &Path) -> Backend {
        let from_env = || {
            env.get("QMAILQUEUE")
                .filter(|v| !v.is_empty())
                .map(|v| PathBuf::from(std::ffi::OsStr::from_bytes(v)))
        };
        let default_qq = home.join("bin/qmail-queue");
        match setting {
            Some(QueueSetting::Maildir(dir)) => {
                Backend::Maildir(home.join(dir.as_deref().unwrap_or(Path::new("Maildir"))))
            }
            Some(QueueSetting::QmailQueue(Some(p))) => Backend::QmailQueue(home.join(p)),
            Some(QueueSetting::QmailQueue(None)) => {
                Backend::QmailQueue(from_env().map(|p| home.join(p)).unwrap_or(default_qq))
            }
            None => match from_env() {
                Some(p) => Backend::QmailQueue(home.join(p)),
                None if default_qq.exists() => Backend::QmailQueue(default_qq),
                None => Backend::Maildir(home.join("Maildir")),
            },
        }
    }
}

/// The envelope of one message.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// MAIL FROM address (may be empty).
    pub sender: Vec<u8>,
    /// RCPT TO addresses, in order.
    pub recipients: Vec<Vec<u8>>,
}

/// A message being written to a backend.
pub enum Job {
    /// A running qmail-queue program.
    Qmail(Box<qmail_queue::QmailJob>),
    /// A Maildir file in `tmp/`.
    Maildir(maildir::MaildirJob),
}

/// How a finished job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobResult {
    /// The queue has the message; the `250` reply text.
    Queued(String),
    /// The queue refused or failed; the reply line to send (unless the
    /// session has a reason of higher precedence: hops, size).
    Failed(String),
}

impl Job {
    /// Starts a job. `Err` means the queue could not be started at all
    /// (`451 qqt failure`). A queue program gets `limit` for each write and
    /// for its exit, else it is killed (`451 qq timeout`).
    pub async fn start(
        backend: &Backend,
        env: &SessionEnv,
        home: &Path,
        envelope: &Envelope,
        limit: std::time::Duration,
    ) -> std::io::Result<Job> {
        Ok(match backend {
            Backend::QmailQueue(program) => Job::Qmail(Box::new(qmail_queue::QmailJob::start(
                program, env, home, limit,
            )?)),
            Backend::Maildir(dir) => Job::Maildir(maildir::MaildirJob::start(dir, envelope).await?),
        })
    }

    /// Writes message bytes; a failure is remembered and reported by
    /// [`Job::finish`].
    pub async fn write(&mut self, data: &[u8]) {
        match self {
            Job::Qmail(j) => j.write(data).await,
            Job::Maildir(j) => j.write(data).await,
        }
    }

    /// Completes the job. With `envelope: None` the message is abandoned
    /// (too big, looping, bad input) and nothing is kept.
    pub async fn finish(self, envelope: Option<&Envelope>) -> JobResult {
        match self {
            Job::Qmail(j) => (*j).finish(envelope).await,
            Job::Maildir(j) => j.finish(envelope.is_some()).await,
        }
    }
}
