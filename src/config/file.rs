//! Opening configuration files safely: only regular files are read, and
//! opening never blocks. A FIFO, a device, a socket or a directory where a
//! control file belongs is refused with an error that says what it is,
//! instead of hanging in `open(2)` (a FIFO without a writer) or reading
//! from a device.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// A file that is not a regular file, and what it is instead. Carried
/// inside an [`io::Error`] so every reader can pass it on unchanged;
/// [`crate::config::ConfigError::io`] shows it without "cannot read".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotRegular(pub &'static str);

impl fmt::Display for NotRegular {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a regular file ({})", self.0)
    }
}

impl std::error::Error for NotRegular {}

impl NotRegular {
    /// The [`NotRegular`] inside `e`, if it carries one.
    pub fn within(e: &io::Error) -> Option<NotRegular> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<NotRegular>())
            .copied()
    }
}

/// What kind of non-regular file `t` is ("a FIFO", "a directory", ...).
fn describe(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a file"
    }
}

/// The error for a file of type `t`.
fn not_regular(t: std::fs::FileType) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, NotRegular(describe(t)))
}

/// Opens `path` for reading if it is a regular file. The open itself uses
/// `O_NONBLOCK | O_NOCTTY`, so a FIFO or a terminal cannot make it wait;
/// the type is then checked on the open descriptor (`fstat`), so the file
/// cannot be swapped between the check and the read.
pub fn open(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            // A socket cannot be opened at all: say what it is.
            Some(libc::ENXIO) => match std::fs::metadata(path) {
                Ok(m) if !m.is_file() => not_regular(m.file_type()),
                _ => e,
            },
            _ => e,
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    Ok(file)
}

/// Reads the whole of `path`, a regular file (see [`open`]).
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = open(path)?;
    let mut content = Vec::new();
    file.read_to_end(&mut content)?;
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_read_and_nothing_blocks() {
        let dir = std::env::temp_dir().join(format!("spp-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let regular = dir.join("regular");
        std::fs::write(&regular, b"x\n").unwrap();
        assert_eq!(read(&regular).unwrap(), b"x\n");
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let socket = dir.join("socket");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        for (path, what) in [
            (&fifo, "a FIFO"),
            (&socket, "a socket"),
            (&dir, "a directory"),
            (&Path::new("/dev/null").to_path_buf(), "a character device"),
        ] {
            let e = read(path).unwrap_err();
            assert_eq!(NotRegular::within(&e), Some(NotRegular(what)), "{e}");
            assert_eq!(e.to_string(), format!("not a regular file ({what})"));
        }
        let e = read(&dir.join("missing")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert_eq!(NotRegular::within(&e), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
