//! The spool: where a message waits, whole, between the final dot and the
//! backend, when a `[body]` hook must read it or the backend (smtp, lmtp,
//! sendmail) needs it before it can answer.
//!
//! A message is kept in memory until it passes [`SPILL_AT`] bytes, and
//! always goes to a file when a `[body]` hook will read it: one file per
//! transaction in `control/spooldir`, mode 0600, named
//! `spp.<pid>.<sequence>`, held under an exclusive `flock` while in use and
//! removed when the transaction ends, whatever the path (accepted, refused,
//! client gone, timeout). A file whose lock is free belongs to a process
//! that died (`kill -9`, power loss): [`sweep`] removes those, once per
//! process before its first spool file and when the daemon starts.
//!
//! The spool is not fsynced: `250` is only said once the backend has the
//! message, so the spool never holds the only copy of an acknowledged
//! message.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Bytes of a message kept in memory before it goes to its spool file.
pub const SPILL_AT: usize = 128 * 1024;
/// Size of the pieces a spooled message is read back in.
const READ_CHUNK: usize = 64 * 1024;
/// Spool files made by this process, for unique names.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);
/// Whether this process has swept its spool directory yet.
static SWEPT: AtomicBool = AtomicBool::new(false);

/// An open spool file: locked while it exists, removed when dropped.
#[derive(Debug)]
pub struct SpoolFile {
    path: PathBuf,
    file: File,
}

impl SpoolFile {
    /// Creates a new, locked spool file in `dir` (made, mode 0700, if
    /// missing). Blocking.
    pub fn create(dir: &Path) -> io::Result<SpoolFile> {
        if !SWEPT.swap(true, Ordering::Relaxed) {
            sweep(dir);
        }
        for _ in 0..3 {
            let path = dir.join(format!(
                "spp.{}.{}",
                std::process::id(),
                SEQUENCE.fetch_add(1, Ordering::Relaxed)
            ));
            let file = match open_new(&path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir)?;
                    open_new(&path)?
                }
                r => r?,
            };
            lock(&file, false)?;
            // A sweep by another process may have removed the file between
            // its creation and the lock: then make another.
            if file.metadata()?.nlink() > 0 {
                return Ok(SpoolFile { path, file });
            }
        }
        Err(io::Error::other("spool file removed while being created"))
    }

    /// Where the file is (for a `[body]` hook's stdin).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(file = %self.path.display(), error = %e, "cannot remove spool file");
            }
        }
    }
}

/// Creates `path` exclusively, mode 0600.
fn open_new(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Takes the exclusive lock (`try_only`: without waiting). `Ok(false)`
/// when another process holds it.
fn lock(file: &File, try_only: bool) -> io::Result<bool> {
    let op = if try_only {
        libc::LOCK_EX | libc::LOCK_NB
    } else {
        libc::LOCK_EX
    };
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if try_only && e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(false);
    }
    Err(e)
}

/// Removes the spool files in `dir` that no live process holds (left by a
/// killed server). Returns how many were removed. Blocking.
pub fn sweep(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("spp.") {
            continue;
        }
        let path = entry.path();
        // Only regular files: a FIFO or device would block the open.
        if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(&path)
        else {
            continue;
        };
        if matches!(lock(&file, true), Ok(true)) && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(dir = %dir.display(), removed, "removed spool files left by a stopped server");
    }
    removed
}

/// A message being received into the spool.
#[derive(Debug)]
pub struct SpoolWriter {
    dir: PathBuf,
    /// Bytes not yet written to the file.
    pending: Vec<u8>,
    /// The file, once the message spilled (or was created up front).
    file: Option<SpoolFile>,
    /// The first write error; the message is then refused.
    error: Option<io::Error>,
    /// Bytes written so far.
    size: u64,
    /// Lines (LF bytes) written so far.
    lines: u64,
}

impl SpoolWriter {
    /// A message in `dir`, kept in memory until it grows past [`SPILL_AT`].
    pub fn in_memory(dir: &Path) -> SpoolWriter {
        SpoolWriter {
            dir: dir.to_path_buf(),
            pending: Vec::new(),
            file: None,
            error: None,
            size: 0,
            lines: 0,
        }
    }

    /// A message that goes to a file (created now, so that a spool problem
    /// is known before the client sends the message).
    pub async fn on_file(dir: &Path) -> io::Result<SpoolWriter> {
        let d = dir.to_path_buf();
        let file = blocking(move || SpoolFile::create(&d)).await?;
        Ok(SpoolWriter {
            file: Some(file),
            ..SpoolWriter::in_memory(dir)
        })
    }

    /// Appends message bytes; a failure is remembered and reported by
    /// [`SpoolWriter::finish`].
    pub async fn write(&mut self, data: &[u8]) {
        if self.error.is_some() {
            return;
        }
        self.size += data.len() as u64;
        self.lines += data.iter().filter(|&&b| b == b'\n').count() as u64;
        self.pending.extend_from_slice(data);
        if self.pending.len() >= SPILL_AT {
            self.spill().await;
        }
    }

    /// Writes the pending bytes to the file (creating it if needed).
    async fn spill(&mut self) {
        let chunk = std::mem::take(&mut self.pending);
        let (dir, file) = (self.dir.clone(), self.file.take());
        let r = blocking(move || -> io::Result<SpoolFile> {
            let mut f = match file {
                Some(f) => f,
                None => SpoolFile::create(&dir)?,
            };
            f.file.write_all(&chunk)?;
            Ok(f)
        })
        .await;
        match r {
            Ok(f) => self.file = Some(f),
            Err(e) => self.error = Some(e),
        }
    }

    /// Completes the message. A message with a file has all its bytes in
    /// it; a small one without stays in memory.
    pub async fn finish(mut self) -> io::Result<Spooled> {
        if self.error.is_none() && self.file.is_some() && !self.pending.is_empty() {
            self.spill().await;
        }
        if let Some(e) = self.error {
            return Err(e);
        }
        Ok(Spooled {
            memory: self.pending,
            file: self.file,
            size: self.size,
            lines: self.lines,
        })
    }
}

/// A whole message in the spool.
#[derive(Debug)]
pub struct Spooled {
    /// The message, when it is kept in memory.
    memory: Vec<u8>,
    /// The spool file, when it is on disk.
    file: Option<SpoolFile>,
    /// Its size in bytes (LF line ends).
    pub size: u64,
    /// Its number of lines: on the wire, with CRLF, it is `size + lines`
    /// bytes before dot-stuffing.
    pub lines: u64,
}

impl Spooled {
    /// The spool file, if the message is on disk.
    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(SpoolFile::path)
    }

    /// Reads the message in pieces.
    pub fn reader(&self) -> SpoolReader<'_> {
        SpoolReader {
            spooled: self,
            offset: 0,
        }
    }
}

/// Reads a spooled message back, piece by piece.
pub struct SpoolReader<'a> {
    spooled: &'a Spooled,
    offset: u64,
}

impl SpoolReader<'_> {
    /// The next piece, or `None` at the end.
    pub async fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        let s = self.spooled;
        if self.offset >= s.size {
            return Ok(None);
        }
        let Some(file) = &s.file else {
            self.offset = s.size;
            return Ok(Some(s.memory.clone()));
        };
        let mut f = file.file.try_clone()?;
        let offset = self.offset;
        let want = (s.size - offset).min(READ_CHUNK as u64) as usize;
        let chunk = blocking(move || -> io::Result<Vec<u8>> {
            f.seek(io::SeekFrom::Start(offset))?;
            let mut buf = vec![0u8; want];
            f.read_exact(&mut buf)?;
            Ok(buf)
        })
        .await?;
        self.offset += chunk.len() as u64;
        Ok(Some(chunk))
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    crate::blocking::run(f).await.and_then(|r| r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("spp-spool-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    async fn read_all(s: &Spooled) -> Vec<u8> {
        let mut r = s.reader();
        let mut out = Vec::new();
        while let Some(c) = r.next_chunk().await.unwrap() {
            out.extend(c);
        }
        out
    }

    #[tokio::test]
    async fn small_message_stays_in_memory() {
        let dir = scratch("mem");
        let mut w = SpoolWriter::in_memory(&dir);
        w.write(b"a\n").await;
        w.write(b"b\n").await;
        let s = w.finish().await.unwrap();
        assert!(s.path().is_none());
        assert_eq!(read_all(&s).await, b"a\nb\n");
        assert!(!dir.exists(), "nothing was written to disk");
    }

    #[tokio::test]
    async fn file_is_private_readable_and_removed() {
        let dir = scratch("file");
        let mut w = SpoolWriter::on_file(&dir).await.unwrap();
        let big = vec![b'x'; SPILL_AT * 2 + 17];
        w.write(b"head\n").await;
        w.write(&big).await;
        let s = w.finish().await.unwrap();
        let path = s.path().unwrap().to_path_buf();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(meta.len(), s.size);
        let all = read_all(&s).await;
        assert_eq!(all.len() as u64, s.size);
        assert!(all.starts_with(b"head\nxxx"));
        assert_eq!(std::fs::read(&path).unwrap(), all);
        // A live file is not swept.
        assert_eq!(sweep(&dir), 0);
        drop(s);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn sweep_removes_unlocked_files_only() {
        let dir = scratch("sweep");
        let live = blocking({
            let d = dir.clone();
            move || SpoolFile::create(&d)
        })
        .await
        .unwrap();
        std::fs::write(dir.join("spp.1.1"), b"left by a killed server").unwrap();
        std::fs::write(dir.join("other"), b"not ours").unwrap();
        assert_eq!(sweep(&dir), 1);
        assert!(!dir.join("spp.1.1").exists());
        assert!(dir.join("other").exists());
        assert!(live.path().exists());
        drop(live);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
