//! The environment of one session: what tcpserver (or the daemon) gave it,
//! plus everything plugins set with `S` and the `SMTP*` variables. It is a
//! map owned by the session, never the process environment, and it is what
//! every plugin and the queue program receive.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// Environment variables of one session, as raw bytes.
#[derive(Debug, Clone, Default)]
pub struct SessionEnv(BTreeMap<Vec<u8>, Vec<u8>>);

impl SessionEnv {
    /// The current process environment (stdio mode, or the daemon's base).
    pub fn from_process() -> SessionEnv {
        SessionEnv(
            std::env::vars_os()
                .map(|(k, v)| (k.into_vec(), v.into_vec()))
                .collect(),
        )
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.get(name.as_bytes()).map(Vec::as_slice)
    }

    /// Whether `name` is set (even to the empty string).
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name.as_bytes())
    }

    /// Sets `name` to `value`.
    pub fn set(&mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.0
            .insert(name.as_ref().to_vec(), value.as_ref().to_vec());
    }

    /// Removes `name`.
    pub fn remove(&mut self, name: impl AsRef<[u8]>) {
        self.0.remove(name.as_ref());
    }

    /// Applies a plugin's `S` text: `NAME=value` sets NAME; a bare `NAME`
    /// removes it (qmail would leave an entry without `=`, which getenv()
    /// does not see either). Returns false, changing nothing, for an empty
    /// name.
    pub fn apply_assignment(&mut self, text: &[u8]) -> bool {
        match text.iter().position(|&b| b == b'=') {
            Some(0) => false,
            Some(i) => {
                self.set(&text[..i], &text[i + 1..]);
                true
            }
            None if text.is_empty() => false,
            None => {
                self.remove(text);
                true
            }
        }
    }

    /// The variables as `OsStr` pairs, for spawning children.
    pub fn iter_os(&self) -> impl Iterator<Item = (&OsStr, &OsStr)> {
        self.0
            .iter()
            .map(|(k, v)| (OsStr::from_bytes(k), OsStr::from_bytes(v)))
    }

    /// A copy as `OsString` pairs.
    pub fn to_os_vec(&self) -> Vec<(OsString, OsString)> {
        self.iter_os()
            .map(|(k, v)| (k.to_os_string(), v.to_os_string()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments() {
        let mut e = SessionEnv::default();
        assert!(e.apply_assignment(b"A=1=2"));
        assert_eq!(e.get("A"), Some(&b"1=2"[..]));
        assert!(e.apply_assignment(b"B="));
        assert!(e.contains("B"));
        assert!(e.apply_assignment(b"B"));
        assert!(!e.contains("B"));
        assert!(!e.apply_assignment(b"=x"));
        assert!(!e.apply_assignment(b""));
        e.remove("A");
        assert_eq!(e.get("A"), None);
    }
}
