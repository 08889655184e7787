//! `smtpplugins`: the qmail-spp configuration. Sections are picked by the
//! single character after `[`; every other line is one plugin. This format
//! is not INI and is parsed by hand.

use super::control::list_entries;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The points in a session where plugins run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// Once, before the greeting.
    Connection,
    /// At HELO and EHLO.
    Helo,
    /// At MAIL.
    Mail,
    /// At RCPT.
    Rcpt,
    /// At DATA, before `354`.
    Data,
    /// After a successful AUTH, before `235`.
    Auth,
    /// After the message's final dot, before the queue, with the message
    /// on stdin (letter `b`, which qmail-spp ignores).
    Body,
}

impl Hook {
    /// All hooks, in table order.
    pub const ALL: [Hook; 7] = [
        Hook::Connection,
        Hook::Helo,
        Hook::Mail,
        Hook::Rcpt,
        Hook::Data,
        Hook::Auth,
        Hook::Body,
    ];

    /// The section letter that selects this hook.
    pub fn letter(self) -> u8 {
        match self {
            Hook::Connection => b'c',
            Hook::Helo => b'h',
            Hook::Mail => b'm',
            Hook::Rcpt => b'r',
            Hook::Data => b'd',
            Hook::Auth => b'a',
            Hook::Body => b'b',
        }
    }

    /// Lower-case name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Connection => "connection",
            Hook::Helo => "helo",
            Hook::Mail => "mail",
            Hook::Rcpt => "rcpt",
            Hook::Data => "data",
            Hook::Auth => "auth",
            Hook::Body => "body",
        }
    }

    fn index(self) -> usize {
        Hook::ALL.iter().position(|&h| h == self).unwrap_or(0)
    }
}

/// How a plugin line is executed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// A `:` line: `/bin/sh -c <text>`.
    Shell(OsString),
    /// Program path (absolute, resolved against the home) and argv
    /// (argv[0] is the word as written).
    Direct {
        /// What is executed: never searched in PATH.
        path: PathBuf,
        /// The argument vector, argv[0] first.
        argv: Vec<OsString>,
    },
}

/// One configured plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugin {
    /// The configuration line exactly as stored (used in failure replies).
    pub line: Vec<u8>,
    /// Line number in the file, for diagnostics.
    pub lineno: usize,
    /// What to execute.
    pub program: Program,
}

/// A problem noticed while parsing, reported by `check`. Parsing itself
/// never fails on content: qmail-spp accepts any line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lint {
    /// 1-based line number.
    pub lineno: usize,
    /// What is wrong.
    pub message: String,
}

/// The plugins of every hook, in file order.
#[derive(Debug, Default)]
pub struct PluginTable {
    hooks: [Vec<Arc<Plugin>>; 7],
    /// The file this table was read from.
    pub source: PathBuf,
}

impl PluginTable {
    /// The plugins configured for `hook`.
    pub fn for_hook(&self, hook: Hook) -> &[Arc<Plugin>] {
        &self.hooks[hook.index()]
    }

    /// Parses the file content. Relative program paths are resolved against
    /// `home`. Returns the table and any problems worth reporting.
    pub fn parse(content: &[u8], home: &Path, source: PathBuf) -> (PluginTable, Vec<Lint>) {
        let mut table = PluginTable {
            source,
            ..Default::default()
        };
        let mut lints = Vec::new();
        let mut current: Option<Hook> = None;
        let mut in_discard = false;
        for (lineno, line) in list_entries(content) {
            if line.ends_with(b"\r") {
                lints.push(Lint {
                    lineno,
                    message: "line ends with CR (CRLF file): the CR becomes part of the entry"
                        .into(),
                });
            }
            if line[0] == b'[' {
                let letter = line.get(1).copied();
                current = Hook::ALL
                    .iter()
                    .copied()
                    .find(|h| Some(h.letter()) == letter);
                in_discard = current.is_none();
                if current.is_none() {
                    lints.push(Lint {
                        lineno,
                        message: format!(
                            "unknown section {}: its plugins are ignored (sections are chosen by the lower-case letter after '[': c h m r d a b)",
                            String::from_utf8_lossy(&line)
                        ),
                    });
                }
                continue;
            }
            let Some(hook) = current else {
                if !in_discard {
                    lints.push(Lint {
                        lineno,
                        message: "plugin line before any section is ignored".into(),
                    });
                }
                continue;
            };
            let program = program_for(&line, home);
            table.hooks[hook.index()].push(Arc::new(Plugin {
                line,
                lineno,
                program,
            }));
        }
        (table, lints)
    }
}

/// Decides how a plugin line runs: `:` lines through the shell; a line
/// naming an existing file as is; otherwise shell-words split.
pub fn program_for(line: &[u8], home: &Path) -> Program {
    if let Some(cmd) = line.strip_prefix(b":") {
        return Program::Shell(OsString::from_vec(cmd.to_vec()));
    }
    let whole = OsString::from_vec(line.to_vec());
    let direct = |argv: Vec<OsString>| Program::Direct {
        path: home.join(&argv[0]),
        argv,
    };
    // A leading blank stays part of the path, as in qmail-spp.
    if home.join(&whole).exists() || line.starts_with(b" ") || line.starts_with(b"\t") {
        return direct(vec![whole]);
    }
    let words = std::str::from_utf8(line)
        .ok()
        .and_then(|s| shell_words::split(s).ok())
        .filter(|w| !w.is_empty());
    match words {
        Some(w) => direct(w.into_iter().map(OsString::from).collect()),
        None => direct(vec![whole]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(t: &PluginTable, h: Hook) -> Vec<String> {
        t.for_hook(h)
            .iter()
            .map(|p| String::from_utf8_lossy(&p.line).into_owned())
            .collect()
    }

    #[test]
    fn sections_by_first_letter() {
        let text = "ignored\n[connection]\nc1\n[hxyz\nh1\n[HELO]\nlost\n[mail]\nm1\n[r\nr1\n[data]\nd1\n[auth]\na1\n[m\nm2\n[\nx\n[body]\nb1\n";
        for ending in ["\n", "\r\n"] {
            let text = text.replace('\n', ending);
            let (t, lints) =
                PluginTable::parse(text.as_bytes(), Path::new("/nonexistent"), PathBuf::new());
            if ending == "\n" {
                assert_eq!(names(&t, Hook::Connection), ["c1"]);
                assert_eq!(names(&t, Hook::Helo), ["h1"]);
                assert_eq!(names(&t, Hook::Mail), ["m1", "m2"]);
                assert_eq!(names(&t, Hook::Rcpt), ["r1"]);
                assert_eq!(names(&t, Hook::Data), ["d1"]);
                assert_eq!(names(&t, Hook::Auth), ["a1"]);
                assert_eq!(names(&t, Hook::Body), ["b1"]);
                let lines: Vec<usize> = lints.iter().map(|l| l.lineno).collect();
                assert_eq!(lines, vec![1, 6, 18]);
            } else {
                // CR stays part of every entry, as in qmail.
                assert_eq!(names(&t, Hook::Connection), ["c1\r"]);
                assert!(lints.iter().any(|l| l.message.contains("CR")));
            }
        }
    }

    #[test]
    fn program_forms() {
        let home = Path::new("/nonexistent-home");
        assert_eq!(
            program_for(b":echo hi | cat", home),
            Program::Shell("echo hi | cat".into())
        );
        assert_eq!(
            program_for(b"plugins/rbl -r 'a b'", home),
            Program::Direct {
                path: home.join("plugins/rbl"),
                argv: vec!["plugins/rbl".into(), "-r".into(), "a b".into()]
            }
        );
        assert_eq!(
            program_for(b"/bin/true", home),
            Program::Direct {
                path: "/bin/true".into(),
                argv: vec!["/bin/true".into()]
            }
        );
        assert_eq!(
            program_for(b" plugins/x", home),
            Program::Direct {
                path: home.join(" plugins/x"),
                argv: vec![" plugins/x".into()]
            }
        );
        assert_eq!(
            program_for(b"bad 'quote", home),
            Program::Direct {
                path: home.join("bad 'quote"),
                argv: vec!["bad 'quote".into()]
            }
        );
    }
}
