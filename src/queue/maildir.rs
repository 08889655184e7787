//! The embedded default queue: one file per message in a Maildir. The
//! message is written to `tmp/`, fsynced, renamed into `new/`, and the
//! directory is fsynced before `250` is said. The envelope is kept in the
//! message as `Return-Path: <sender>` and one `X-Original-To: <rcpt>`
//! header per recipient, above the Received: line.

use super::{Envelope, JobResult};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::AsyncWriteExt;

/// Messages delivered by this process, for unique names.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// A message being written into `tmp/`.
pub struct MaildirJob {
    dir: PathBuf,
    name: String,
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    error: Option<io::Error>,
}

impl MaildirJob {
    /// Creates `tmp/`, `new/`, `cur/` if needed and opens the file in
    /// `tmp/`, starting with the envelope headers.
    pub async fn start(dir: &Path, envelope: &Envelope) -> io::Result<MaildirJob> {
        for sub in ["tmp", "new", "cur"] {
            tokio::fs::create_dir_all(dir.join(sub)).await?;
        }
        let name = unique_name();
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join("tmp").join(&name))
            .await?;
        let mut job = MaildirJob {
            dir: dir.to_path_buf(),
            name,
            file: Some(tokio::io::BufWriter::with_capacity(64 * 1024, file)),
            error: None,
        };
        job.write(&envelope_headers(envelope)).await;
        Ok(job)
    }

    /// Appends message bytes.
    pub async fn write(&mut self, data: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if let Some(f) = &mut self.file {
            if let Err(e) = f.write_all(data).await {
                self.error = Some(e);
            }
        }
    }

    /// Makes the message durable (`keep`) or removes it.
    pub async fn finish(mut self, keep: bool) -> JobResult {
        let tmp = self.dir.join("tmp").join(&self.name);
        if keep && self.error.is_none() {
            match self.commit(&tmp).await {
                Ok(()) => {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    return JobResult::Queued(format!("250 ok {now} qp {}", self.name));
                }
                Err(e) => self.error = Some(e),
            }
        }
        drop(self.file.take());
        let _ = tokio::fs::remove_file(&tmp).await;
        match self.error {
            Some(e) => {
                tracing::error!(maildir = %self.dir.display(), error = %e, "maildir delivery failed");
                JobResult::Failed("451 qq write error or disk full (#4.3.0)".into())
            }
            None => JobResult::Failed("451 qq read error (#4.3.0)".into()),
        }
    }

    /// Flush, fsync, rename into `new/`, fsync `new/`.
    async fn commit(&mut self, tmp: &Path) -> io::Result<()> {
        let mut f = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("file already closed"))?;
        f.flush().await?;
        let file = f.into_inner();
        file.sync_all().await?;
        drop(file);
        let new_dir = self.dir.join("new");
        // Opened before the rename: once the message is in new/, the only
        // step left must not need a new file descriptor.
        let dir = tokio::fs::File::open(&new_dir).await?;
        let delivered = new_dir.join(&self.name);
        tokio::fs::rename(tmp, &delivered).await?;
        if let Err(e) = dir.sync_all().await {
            // Not known to be durable: take it back, the client will retry
            // (rather than answer 451 and deliver it twice).
            let _ = tokio::fs::remove_file(&delivered).await;
            return Err(e);
        }
        Ok(())
    }
}

/// `Return-Path:` and `X-Original-To:` lines; CR, LF and NUL in addresses
/// become `?` so an address cannot add header lines.
fn envelope_headers(env: &Envelope) -> Vec<u8> {
    let clean = |a: &[u8]| -> Vec<u8> {
        a.iter()
            .map(|&b| {
                if matches!(b, b'\r' | b'\n' | 0) {
                    b'?'
                } else {
                    b
                }
            })
            .collect()
    };
    let mut out = b"Return-Path: <".to_vec();
    out.extend(clean(&env.sender));
    out.extend_from_slice(b">\n");
    for r in &env.recipients {
        out.extend_from_slice(b"X-Original-To: <");
        out.extend(clean(r));
        out.extend_from_slice(b">\n");
    }
    out
}

/// `time.M<usec>P<pid>Q<seq>.<host>`, the usual Maildir unique name.
fn unique_name() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let host = hostname().replace('/', "\\057").replace(':', "\\072");
    format!(
        "{}.M{}P{}Q{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        seq,
        host
    )
}

/// This machine's host name.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // or truncates within it.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_headers_are_clean() {
        let e = Envelope {
            sender: b"a\r\nX: y".to_vec(),
            recipients: vec![b"b@x".to_vec(), b"c@y".to_vec()],
        };
        assert_eq!(
            String::from_utf8(envelope_headers(&e)).unwrap(),
            "Return-Path: <a??X: y>\nX-Original-To: <b@x>\nX-Original-To: <c@y>\n"
        );
    }

    #[test]
    fn names_are_unique() {
        assert_ne!(unique_name(), unique_name());
    }
}
