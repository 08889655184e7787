//! The environment of one session: what tcpserver (or the daemon) gave it,
//! plus everything plugins set with `S` and the `SMTP*` variables. It is
//! owned by the session, never the process environment, and it is what
//! every plugin and the queue program receive.
//!
//! The inherited part is shared (`Arc`) between sessions; each session
//! keeps only its own changes, so thousands of sessions do not each copy
//! the daemon's environment.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::Arc;

/// Variables as raw bytes.
type Vars = BTreeMap<Vec<u8>, Vec<u8>>;

/// Changes over a base: `Some` sets, `None` removes.
type Changes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Environment variables of one session.
#[derive(Debug, Clone, Default)]
pub struct SessionEnv {
    /// The inherited variables, shared.
    base: Arc<Vars>,
    /// Changes frozen by [`SessionEnv::freeze`] (the connection's own
    /// variables), shared with copies taken after freezing.
    frozen: Arc<Changes>,
    /// Changes since then.
    changes: Changes,
}

impl SessionEnv {
    /// The current process environment (stdio mode, or the daemon's base).
    pub fn from_process() -> SessionEnv {
        let vars = std::env::vars_os()
            .map(|(k, v)| (k.into_vec(), v.into_vec()))
            .collect();
        SessionEnv {
            base: Arc::new(vars),
            ..Default::default()
        }
    }

    /// A copy with the changes folded into a new shared base (for a base
    /// that many sessions will clone).
    pub fn flattened(&self) -> SessionEnv {
        let vars = self.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
        SessionEnv {
            base: Arc::new(vars),
            ..Default::default()
        }
    }

    /// Moves the changes so far into a shared layer, so that a copy kept
    /// now (to restore later) costs no memory of its own.
    pub fn freeze(&mut self) {
        if self.changes.is_empty() {
            return;
        }
        let mut frozen = (*self.frozen).clone();
        frozen.append(&mut self.changes);
        self.frozen = Arc::new(frozen);
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let key = name.as_bytes();
        match self.changes.get(key).or_else(|| self.frozen.get(key)) {
            Some(change) => change.as_deref(),
            None => self.base.get(key).map(Vec::as_slice),
        }
    }

    /// Whether `name` is set (even to the empty string).
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets `name` to `value`.
    pub fn set(&mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.changes
            .insert(name.as_ref().to_vec(), Some(value.as_ref().to_vec()));
    }

    /// Removes `name`.
    pub fn remove(&mut self, name: impl AsRef<[u8]>) {
        self.changes.insert(name.as_ref().to_vec(), None);
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

    /// All variables in name order, changes applied.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let changed = self
            .changes
            .iter()
            .filter_map(|(k, v)| v.as_deref().map(|v| (k.as_slice(), v)));
        let frozen = self
            .frozen
            .iter()
            .filter(|(k, _)| !self.changes.contains_key(*k))
            .filter_map(|(k, v)| v.as_deref().map(|v| (k.as_slice(), v)));
        let inherited = self
            .base
            .iter()
            .filter(|(k, _)| !self.changes.contains_key(*k) && !self.frozen.contains_key(*k))
            .map(|(k, v)| (k.as_slice(), v.as_slice()));
        changed.chain(frozen).chain(inherited)
    }

    /// The variables as `OsStr` pairs, for spawning children.
    pub fn iter_os(&self) -> impl Iterator<Item = (&OsStr, &OsStr)> {
        self.iter()
            .map(|(k, v)| (OsStr::from_bytes(k), OsStr::from_bytes(v)))
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

    #[test]
    fn changes_overlay_a_shared_base() {
        let mut base = SessionEnv::default();
        base.set("KEEP", "1");
        base.set("DROP", "2");
        base.set("CHANGE", "3");
        let base = base.flattened();
        let mut a = base.clone();
        a.remove("DROP");
        a.set("CHANGE", "4");
        a.set("NEW", "5");
        let all: Vec<(String, String)> = a
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8(k.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                )
            })
            .collect();
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            vec![
                ("CHANGE".into(), "4".into()),
                ("KEEP".into(), "1".into()),
                ("NEW".into(), "5".into())
            ]
        );
        assert_eq!(
            base.get("DROP"),
            Some(&b"2"[..]),
            "the shared base is untouched"
        );
        assert_eq!(base.get("CHANGE"), Some(&b"3"[..]));
    }

    #[test]
    fn a_frozen_layer_keeps_values_and_is_shared_by_copies() {
        let mut base = SessionEnv::default();
        base.set("KEEP", "1");
        base.set("CHANGE", "3");
        let mut a = base.flattened();
        a.set("CHANGE", "4");
        a.set("NEW", "5");
        a.freeze();
        let kept = a.clone();
        a.set("LATER", "6");
        a.remove("KEEP");
        let all = |e: &SessionEnv| {
            let mut v: Vec<(String, String)> = e
                .iter()
                .map(|(k, v)| {
                    (
                        String::from_utf8(k.to_vec()).unwrap(),
                        String::from_utf8(v.to_vec()).unwrap(),
                    )
                })
                .collect();
            v.sort();
            v
        };
        let pairs = |p: &[(&str, &str)]| {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            all(&kept),
            pairs(&[("CHANGE", "4"), ("KEEP", "1"), ("NEW", "5")])
        );
        assert_eq!(
            all(&a),
            pairs(&[("CHANGE", "4"), ("LATER", "6"), ("NEW", "5")])
        );
        assert_eq!(a.get("KEEP"), None);
        assert_eq!(kept.get("NEW"), Some(&b"5"[..]));
    }
}
