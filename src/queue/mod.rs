//! Handing accepted mail to a queue. `250` is only said once the backend
//! has the message durably: the qmail-queue program exited 0, the Maildir
//! file was fsynced and renamed into `new/`, sendmail exited 0, or the
//! downstream MTA said 2xx.
//!
//! Maildir and qmail-queue take the message as it arrives ([`Job`]); the
//! other backends, and any message a `[body]` hook reads, go through the
//! [`spool`] first and are handed over by [`deliver_spooled`].

pub mod forward;
pub mod maildir;
pub mod qmail_queue;
pub mod sendmail;
pub mod spool;

use crate::config::queue::{ForwardSetting, QueueSetting};
use crate::session::env::SessionEnv;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The backend chosen for a session (decided at its first DATA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Run this program with the qmail-queue interface.
    QmailQueue(PathBuf),
    /// Deliver into this Maildir.
    Maildir(PathBuf),
    /// Run this sendmail program.
    Sendmail(PathBuf),
    /// Hand over to a downstream SMTP or LMTP server.
    Forward(Arc<ForwardSetting>),
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
            Some(QueueSetting::Sendmail(p)) => Backend::Sendmail(home.join(p)),
            Some(QueueSetting::Forward(f)) => Backend::Forward(f.clone()),
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

    /// The backend's kind, for metrics: `qmail-queue`, `maildir`,
    /// `sendmail`, `smtp` or `lmtp`.
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::QmailQueue(_) => "qmail-queue",
            Backend::Maildir(_) => "maildir",
            Backend::Sendmail(_) => "sendmail",
            Backend::Forward(f) if f.lmtp => "lmtp",
            Backend::Forward(_) => "smtp",
        }
    }

    /// Whether the backend needs the whole message before it can take it
    /// (it is spooled first).
    pub fn needs_spool(&self) -> bool {
        matches!(self, Backend::Sendmail(_) | Backend::Forward(_))
    }
}

/// The envelope of one message.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// MAIL FROM address (may be empty).
    pub sender: Vec<u8>,
    /// RCPT TO addresses, in order.
    pub recipients: Vec<Vec<u8>>,
    /// The client declared SMTPUTF8: qmail-queue gets `SMTPUTF8=1`, a
    /// downstream gets the parameter (or the message is downgraded or
    /// refused, see [`forward`]).
    pub smtputf8: bool,
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
                program,
                env,
                home,
                limit,
                envelope.smtputf8,
            )?)),
            Backend::Maildir(dir) => Job::Maildir(maildir::MaildirJob::start(dir, envelope).await?),
            Backend::Sendmail(_) | Backend::Forward(_) => {
                return Err(std::io::Error::other(
                    "this backend takes spooled messages only",
                ))
            }
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

/// A spooled message and what handing it over needs.
pub struct Handoff<'a> {
    /// The session environment (for the programs started).
    pub env: &'a SessionEnv,
    /// Working directory of programs, root of relative paths.
    pub home: &'a Path,
    /// Sender and recipients.
    pub envelope: &'a Envelope,
    /// Header lines added after the message was spooled; they go first.
    pub head: &'a [u8],
    /// The message.
    pub spooled: &'a spool::Spooled,
    /// Bound for each write and for the wait.
    pub limit: std::time::Duration,
    /// Session id for the logs.
    pub session: &'a str,
}

/// Hands a spooled message to a backend that is not a downstream (those
/// are driven by the session, see [`forward`]).
pub async fn deliver_spooled(backend: &Backend, h: &Handoff<'_>) -> JobResult {
    if let Backend::Sendmail(program) = backend {
        return sendmail::deliver(program, h).await;
    }
    let mut job = match Job::start(backend, h.env, h.home, h.envelope, h.limit).await {
        Ok(job) => job,
        Err(e) => {
            tracing::error!(session = h.session, error = %e, backend = ?backend, "cannot start queue");
            return JobResult::Failed(crate::protocol::reply::text::QQT_FAILURE.into());
        }
    };
    job.write(h.head).await;
    let mut reader = h.spooled.reader();
    loop {
        match reader.next_chunk().await {
            Ok(Some(chunk)) => job.write(&chunk).await,
            Ok(None) => break,
            Err(e) => {
                tracing::error!(session = h.session, error = %e, "cannot read the spooled message");
                job.finish(None).await;
                return JobResult::Failed("451 qq read error (#4.3.0)".into());
            }
        }
    }
    job.finish(Some(h.envelope)).await
}
