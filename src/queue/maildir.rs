//! The embedded default queue: one file per message in a Maildir. The
//! message is written to `tmp/`, fsynced, renamed into `new/`, and the
//! directory is fsynced before `250` is said. The envelope is kept in the
//! message as `Return-Path: <sender>` and one `X-Original-To: <rcpt>`
//! header per recipient, above the Received: line.
//!
//! Small messages are collected in memory and written, synced and renamed
//! in one blocking call; larger ones spill to the `tmp/` file in big
//! chunks. Blocking file work goes through [`crate::blocking`]: the
//! blocking pool in the daemon, in place in a `stdio` process.

use super::{Envelope, JobResult};
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Messages delivered by this process, for unique names.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Bytes kept in memory before the message is spilled to its file.
const SPILL_AT: usize = 1024 * 1024;

/// Maildirs whose `tmp/`, `new/`, `cur/` are known to exist.
fn known_dirs() -> &'static Mutex<HashSet<PathBuf>> {
    static DIRS: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
    DIRS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A message being written into `tmp/`.
pub struct MaildirJob {
    dir: PathBuf,
    name: String,
    /// Bytes not yet written to the file.
    pending: Vec<u8>,
    /// The `tmp/` file, once the message spilled.
    file: Option<File>,
    error: Option<io::Error>,
}

impl MaildirJob {
    /// Prepares a message; its first bytes are the envelope headers.
    pub async fn start(dir: &Path, envelope: &Envelope) -> io::Result<MaildirJob> {
        Ok(MaildirJob {
            dir: dir.to_path_buf(),
            name: unique_name(),
            pending: envelope_headers(envelope),
            file: None,
            error: None,
        })
    }

    /// Appends message bytes (spilling to the file past [`SPILL_AT`]).
    pub async fn write(&mut self, data: &[u8]) {
        if self.error.is_some() {
            return;
        }
        self.pending.extend_from_slice(data);
        if self.pending.len() >= SPILL_AT {
            let chunk = std::mem::take(&mut self.pending);
            let (dir, name, file) = (self.dir.clone(), self.name.clone(), self.file.take());
            let spilled = crate::blocking::run(move || -> io::Result<File> {
                let mut file = match file {
                    Some(f) => f,
                    None => create_tmp(&dir, &name)?,
                };
                file.write_all(&chunk)?;
                Ok(file)
            })
            .await;
            match spilled {
                Ok(Ok(f)) => self.file = Some(f),
                Ok(Err(e)) => self.error = Some(e),
                Err(e) => self.error = Some(io::Error::other(e)),
            }
        }
    }

    /// Makes the message durable (`keep`) or removes it.
    pub async fn finish(self, keep: bool) -> JobResult {
        let MaildirJob {
            dir,
            name,
            pending,
            file,
            error,
        } = self;
        let failure = if let Some(e) = error {
            Some(e)
        } else if keep {
            let (d, n) = (dir.clone(), name.clone());
            match crate::blocking::run(move || commit(&d, &n, file, &pending)).await {
                Ok(Ok(())) => {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    return JobResult::Queued(format!("250 ok {now} qp {name}"));
                }
                Ok(Err(e)) => Some(e),
                Err(e) => Some(io::Error::other(e)),
            }
        } else {
            drop(file);
            None
        };
        let tmp = dir.join("tmp").join(&name);
        let _ = crate::blocking::run(move || std::fs::remove_file(tmp)).await;
        match failure {
            Some(e) => {
                tracing::error!(maildir = %dir.display(), error = %e, "maildir delivery failed");
                JobResult::Failed("451 qq write error or disk full (#4.3.0)".into())
            }
            None => JobResult::Failed("451 qq read error (#4.3.0)".into()),
        }
    }
}

/// Creates the `tmp/` file (and the Maildir, the first time).
fn create_tmp(dir: &Path, name: &str) -> io::Result<File> {
    ensure_dirs(dir)?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dir.join("tmp").join(name))
}

/// Creates `tmp/`, `new/`, `cur/` unless this process already did.
fn ensure_dirs(dir: &Path) -> io::Result<()> {
    let mut known = known_dirs().lock().unwrap_or_else(|p| p.into_inner());
    if known.contains(dir) {
        return Ok(());
    }
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    known.insert(dir.to_path_buf());
    Ok(())
}

/// Write the rest, fsync, rename into `new/`, fsync `new/`. If the
/// Maildir vanished since it was last seen, it is created again once.
fn commit(dir: &Path, name: &str, file: Option<File>, rest: &[u8]) -> io::Result<()> {
    let mut file = match file {
        Some(f) => f,
        None => match create_tmp(dir, name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                known_dirs()
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(dir);
                create_tmp(dir, name)?
            }
            r => r?,
        },
    };
    file.write_all(rest)?;
    file.sync_all()?;
    drop(file);
    let new_dir = dir.join("new");
    // Opened before the rename: once the message is in new/, the only step
    // left must not need a new file descriptor.
    let new_handle = File::open(&new_dir)?;
    let delivered = new_dir.join(name);
    std::fs::rename(dir.join("tmp").join(name), &delivered)?;
    if let Err(e) = new_handle.sync_all() {
        // Not known to be durable: take it back, the client will retry
        // (rather than answer 451 and deliver it twice).
        let _ = std::fs::remove_file(&delivered);
        return Err(e);
    }
    Ok(())
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
    static HOST: OnceLock<String> = OnceLock::new();
    let host = HOST.get_or_init(|| escape_host(&hostname()));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}.M{}P{}Q{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        seq,
        host
    )
}

/// A host name made safe for a Maildir file name: `/` (a path separator)
/// and `:` (the start of the info part) written as `\057` and `\072`.
fn escape_host(host: &str) -> String {
    host.replace('/', "\\057").replace(':', "\\072")
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
            smtputf8: false,
        };
        assert_eq!(
            String::from_utf8(envelope_headers(&e)).unwrap(),
            "Return-Path: <a??X: y>\nX-Original-To: <b@x>\nX-Original-To: <c@y>\n"
        );
    }

    #[test]
    fn names_are_unique_across_threads_and_well_formed() {
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..2000).map(|_| unique_name()).collect::<Vec<_>>()))
            .collect();
        let names: Vec<String> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let distinct: HashSet<&String> = names.iter().collect();
        assert_eq!(distinct.len(), names.len(), "a name was given twice");
        let pid = format!("P{}Q", std::process::id());
        for name in &names {
            let (time, rest) = name.split_once(".M").unwrap();
            assert!(time.parse::<u64>().unwrap() > 1_600_000_000, "{name}");
            assert!(rest.contains(&pid), "{name}");
            assert!(!name.contains('/') && !name.contains(':'), "{name}");
        }
        assert_eq!(escape_host("a/b:c.test"), "a\\057b\\072c.test");
    }

    #[tokio::test]
    async fn large_messages_spill_and_are_delivered_whole() {
        let dir = std::env::temp_dir().join(format!("spp-maildir-{}", std::process::id()));
        let env = Envelope {
            sender: b"a@b".to_vec(),
            recipients: vec![b"c@d".to_vec()],
            smtputf8: false,
        };
        let mut job = MaildirJob::start(&dir, &env).await.unwrap();
        let line = vec![b'x'; 1000];
        for _ in 0..3000 {
            job.write(&line).await;
        }
        assert!(matches!(job.finish(true).await, JobResult::Queued(_)));
        let new: Vec<_> = std::fs::read_dir(dir.join("new")).unwrap().collect();
        assert_eq!(new.len(), 1);
        let len = std::fs::metadata(new[0].as_ref().unwrap().path())
            .unwrap()
            .len();
        assert_eq!(len, (envelope_headers(&env).len() + 3_000_000) as u64);
        assert_eq!(std::fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
        // An abandoned large message leaves nothing behind.
        let mut job = MaildirJob::start(&dir, &env).await.unwrap();
        for _ in 0..2000 {
            job.write(&line).await;
        }
        assert!(matches!(job.finish(false).await, JobResult::Failed(_)));
        assert_eq!(std::fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
