//! `smtpplugins`: the qmail-spp configuration. Sections are picked by the
//! single character after `[`; every other line is one plugin. A comment
//! line `#spp: OPTIONS` right above a plugin line sets that plugin's
//! options (qmail-spp ignores comments, so the file stays valid for it).
//! This format is not INI and is parsed by hand.

use super::control::trim_trailing_blanks;
use super::queue::parse_duration;
use std::any::Any;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

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

/// What a plugin's failure (crash, timeout, can't execute, too much output,
/// no free worker) means for the command (`on-failure=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// `451 qmail-spp failure: <line>: <reason> (#4.3.0)`, as qmail-spp.
    #[default]
    Tempfail,
    /// As if the plugin had printed nothing: the next plugin runs.
    Skip,
    /// As if the plugin had printed `N`.
    Accept,
    /// `554 qmail-spp failure: <line>: <reason> (#5.3.0)`.
    Reject,
}

impl OnFailure {
    /// The `on-failure=` word, for logs and reports.
    pub fn name(self) -> &'static str {
        match self {
            OnFailure::Tempfail => "tempfail",
            OnFailure::Skip => "skip",
            OnFailure::Accept => "accept",
            OnFailure::Reject => "reject",
        }
    }
}

/// Whether what a plugin prints takes effect (`mode=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// It does (the default).
    #[default]
    Enforce,
    /// It is logged ("would refuse: ...") and nothing takes effect.
    Observe,
}

/// How a persistent plugin's processes are pooled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersistentOptions {
    /// Processes at most (`workers=`, 1–64); started as needed.
    pub workers: usize,
    /// Requests one process serves before it is replaced
    /// (`max-requests=`, 0: no limit).
    pub max_requests: u64,
    /// Requests that may wait for a free process (`queue=`); beyond that
    /// a request fails at once.
    pub queue: usize,
}

impl Default for PersistentOptions {
    fn default() -> Self {
        PersistentOptions {
            workers: 2,
            max_requests: 10_000,
            queue: 100,
        }
    }
}

/// The options of one plugin line, from the `#spp:` line above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PluginOptions {
    /// Deadline of one run or request (`timeout=`), instead of
    /// `control/plugintimeout`.
    pub timeout: Option<Duration>,
    /// What a failure means.
    pub on_failure: OnFailure,
    /// Enforce or only observe.
    pub mode: Mode,
    /// Kept running and asked over the persistent protocol (`persistent`).
    pub persistent: Option<PersistentOptions>,
}

/// Most processes of one persistent plugin.
pub const MAX_WORKERS: usize = 64;
/// Most requests waiting for one persistent plugin.
pub const MAX_QUEUE: usize = 10_000;

impl PluginOptions {
    /// Parses the text after `#spp:`: space-separated `key=value` words and
    /// the flag `persistent`. Every problem is reported, one per entry.
    pub fn parse(text: &[u8]) -> Result<PluginOptions, Vec<String>> {
        let mut o = PluginOptions::default();
        let mut errors = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        let mut pool = PersistentOptions::default();
        let mut pool_keys: Vec<&str> = Vec::new();
        let Ok(text) = std::str::from_utf8(text) else {
            return Err(vec!["#spp: options must be ASCII".into()]);
        };
        for word in text.split([' ', '\t']).filter(|w| !w.is_empty()) {
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (word, None),
            };
            if seen.contains(&key) {
                errors.push(format!("{key} is given twice"));
                continue;
            }
            seen.push(key);
            let number = |max: u64| -> Result<u64, String> {
                match value.map(str::parse::<u64>) {
                    Some(Ok(n)) if n <= max => Ok(n),
                    _ => Err(format!(
                        "{key} needs a number from 0 to {max}, not {word:?}"
                    )),
                }
            };
            let result: Result<(), String> = match (key, value) {
                ("timeout", Some(v)) => parse_duration(v).map(|d| o.timeout = Some(d)),
                ("on-failure", Some(v)) => match v {
                    "tempfail" => Ok(OnFailure::Tempfail),
                    "skip" => Ok(OnFailure::Skip),
                    "accept" => Ok(OnFailure::Accept),
                    "reject" => Ok(OnFailure::Reject),
                    _ => Err(format!(
                        "on-failure is tempfail, skip, accept or reject, not {v:?}"
                    )),
                }
                .map(|f| o.on_failure = f),
                ("mode", Some(v)) => match v {
                    "observe" => Ok(Mode::Observe),
                    "enforce" => Ok(Mode::Enforce),
                    _ => Err(format!("mode is observe or enforce, not {v:?}")),
                }
                .map(|m| o.mode = m),
                ("persistent", None) => {
                    o.persistent = Some(pool);
                    Ok(())
                }
                ("workers", Some(_)) => number(MAX_WORKERS as u64).and_then(|n| match n {
                    0 => Err("workers must be at least 1".into()),
                    n => {
                        pool.workers = n as usize;
                        Ok(())
                    }
                }),
                ("max-requests", Some(_)) => number(u64::MAX).map(|n| pool.max_requests = n),
                ("queue", Some(_)) => number(MAX_QUEUE as u64).map(|n| pool.queue = n as usize),
                ("persistent", Some(_)) => Err("persistent takes no value".into()),
                ("timeout" | "on-failure" | "mode" | "workers" | "max-requests" | "queue", None) => {
                    Err(format!("{key} needs a value ({key}=...)"))
                }
                _ => Err(format!(
                    "unknown option {key:?} (known: timeout, on-failure, mode, persistent, workers, max-requests, queue)"
                )),
            };
            match result {
                Ok(()) if ["workers", "max-requests", "queue"].contains(&key) => {
                    pool_keys.push(key)
                }
                Ok(()) => {}
                Err(e) => errors.push(e),
            }
        }
        match (&mut o.persistent, pool_keys.first()) {
            (Some(p), _) => *p = pool,
            (None, Some(key)) => errors.push(format!("{key} is only for persistent plugins")),
            (None, None) => {}
        }
        if errors.is_empty() {
            Ok(o)
        } else {
            Err(errors)
        }
    }
}

/// Where the plugin layer keeps what it runs for a plugin line (a
/// persistent plugin's pool), so that it lives as long as the
/// configuration snapshot that names it. Opaque here: the configuration
/// knows nothing of processes.
#[derive(Default, Clone)]
pub struct RuntimeSlot(OnceLock<Arc<dyn Any + Send + Sync>>);

impl RuntimeSlot {
    /// The value kept here, made by `init` on first use.
    pub fn get_or_init(
        &self,
        init: impl FnOnce() -> Arc<dyn Any + Send + Sync>,
    ) -> &Arc<dyn Any + Send + Sync> {
        self.0.get_or_init(init)
    }
}

impl std::fmt::Debug for RuntimeSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "RuntimeSlot(started)"
        } else {
            "RuntimeSlot(idle)"
        })
    }
}

/// Two slots compare equal: what runs is not part of the configuration.
impl PartialEq for RuntimeSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for RuntimeSlot {}

/// One configured plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugin {
    /// The configuration line exactly as stored (used in failure replies).
    pub line: Vec<u8>,
    /// Line number in the file, for diagnostics.
    pub lineno: usize,
    /// What to execute.
    pub program: Program,
    /// Its `#spp:` options.
    pub options: PluginOptions,
    /// What the plugin layer runs for it (the pool of a persistent plugin).
    pub runtime: RuntimeSlot,
}

/// A problem noticed while parsing, reported by `check`. Parsing accepts
/// any line qmail-spp accepts; only bad `#spp:` options are errors that
/// refuse the file in every mode (`Fatal`), so a typo never changes what a
/// plugin does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lint {
    /// 1-based line number.
    pub lineno: usize,
    /// What is wrong.
    pub message: String,
    /// How serious it is.
    pub kind: LintKind,
}

/// How serious a [`Lint`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LintKind {
    /// The file cannot be used (a bad `#spp:` option): sessions refuse it.
    Fatal,
    /// Lines that are ignored, as qmail-spp ignores them (an unknown
    /// section, a plugin line before any section): sessions run without
    /// them, the daemon's validator refuses the file.
    Ignored,
    /// A line ending in CR: the CR becomes part of the entry.
    LineEnd,
}

impl Lint {
    fn new(lineno: usize, message: String, kind: LintKind) -> Lint {
        Lint {
            lineno,
            message,
            kind,
        }
    }

    /// A problem that refuses the file.
    fn fatal(lineno: usize, message: String) -> Lint {
        Lint::new(lineno, message, LintKind::Fatal)
    }

    /// Whether the file cannot be used at all.
    pub fn is_fatal(&self) -> bool {
        self.kind == LintKind::Fatal
    }
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
        // Options of the `#spp:` line just read, with its line number.
        let mut pending: Option<(usize, PluginOptions)> = None;
        for (i, raw) in content.split(|&b| b == b'\n').enumerate() {
            let lineno = i + 1;
            let line = trim_trailing_blanks(raw);
            let options = pending.take();
            if let Some(text) = line.strip_prefix(b"#spp:") {
                if let Some((at, _)) = options {
                    lints.push(Lint::fatal(
                        at,
                        "#spp: options must be on the line right above a plugin line".into(),
                    ));
                }
                match PluginOptions::parse(text) {
                    Ok(o) => pending = Some((lineno, o)),
                    Err(errors) => {
                        for message in errors {
                            lints.push(Lint::fatal(lineno, message));
                        }
                        // Stands for the options, so the plugin line below
                        // is not reported as lacking them.
                        pending = Some((lineno, PluginOptions::default()));
                    }
                }
                continue;
            }
            if line.is_empty() || line[0] == b'#' {
                if let Some((at, _)) = options {
                    lints.push(Lint::fatal(
                        at,
                        "#spp: options must be on the line right above a plugin line".into(),
                    ));
                }
                continue;
            }
            let line = line.to_vec();
            if line.ends_with(b"\r") {
                lints.push(Lint::new(
                    lineno,
                    "line ends with CR (CRLF file): the CR becomes part of the entry".into(),
                    LintKind::LineEnd,
                ));
            }
            if line[0] == b'[' {
                if let Some((at, _)) = options {
                    lints.push(Lint::fatal(
                        at,
                        "#spp: options must be on the line right above a plugin line".into(),
                    ));
                }
                let letter = line.get(1).copied();
                current = Hook::ALL
                    .iter()
                    .copied()
                    .find(|h| Some(h.letter()) == letter);
                in_discard = current.is_none();
                if current.is_none() {
                    lints.push(Lint::new(
                        lineno,
                        format!(
                            "unknown section {}: its plugins are ignored (sections are chosen by the lower-case letter after '[': c h m r d a b)",
                            String::from_utf8_lossy(&line)
                        ),
                        LintKind::Ignored,
                    ));
                }
                continue;
            }
            let Some(hook) = current else {
                if !in_discard {
                    lints.push(Lint::new(
                        lineno,
                        "plugin line before any section is ignored".into(),
                        LintKind::Ignored,
                    ));
                }
                continue;
            };
            let program = program_for(&line, home);
            table.hooks[hook.index()].push(Arc::new(Plugin {
                line,
                lineno,
                program,
                options: options.map(|(_, o)| o).unwrap_or_default(),
                runtime: RuntimeSlot::default(),
            }));
        }
        if let Some((at, _)) = pending {
            lints.push(Lint::fatal(
                at,
                "#spp: options must be on the line right above a plugin line".into(),
            ));
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
    fn options_table() {
        let ok = |t: &str| PluginOptions::parse(t.as_bytes()).unwrap();
        assert_eq!(ok(""), PluginOptions::default());
        let o = ok(" timeout=2s on-failure=skip\tmode=observe ");
        assert_eq!(o.timeout, Some(Duration::from_secs(2)));
        assert_eq!((o.on_failure, o.mode), (OnFailure::Skip, Mode::Observe));
        assert_eq!(o.persistent, None);
        assert_eq!(
            ok("persistent").persistent,
            Some(PersistentOptions::default())
        );
        let p = ok("workers=4 persistent max-requests=0 queue=7 timeout=250ms");
        assert_eq!(
            p.persistent,
            Some(PersistentOptions {
                workers: 4,
                max_requests: 0,
                queue: 7
            })
        );
        assert_eq!(p.timeout, Some(Duration::from_millis(250)));
        assert_eq!(ok("on-failure=reject").on_failure, OnFailure::Reject);
        for f in [
            OnFailure::Tempfail,
            OnFailure::Skip,
            OnFailure::Accept,
            OnFailure::Reject,
        ] {
            let text = format!("on-failure={}", f.name());
            assert_eq!(ok(&text).on_failure, f, "the name reads back");
        }
        assert_eq!(
            ok("on-failure=accept mode=enforce").on_failure,
            OnFailure::Accept
        );
        for bad in [
            "timeout=0s",
            "timeout=2h",
            "timeout",
            "on-failure=maybe",
            "mode=watch",
            "persistent=yes",
            "workers=2",
            "persistent workers=0",
            "persistent workers=65",
            "persistent queue=-1",
            "persistent max-requests=x",
            "timeout=1s timeout=2s",
            "colour=blue",
            "\u{e9}=1",
        ] {
            assert!(PluginOptions::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        // Every problem is reported.
        assert_eq!(
            PluginOptions::parse(b"a=1 b=2 mode=x").unwrap_err().len(),
            3
        );
    }

    #[test]
    fn options_apply_to_the_plugin_line_right_below() {
        let text = "[rcpt]\n#spp: timeout=1s persistent\nplugins/a\nplugins/b\n# note\n#spp: mode=observe\n:echo N\n";
        let (t, lints) = PluginTable::parse(text.as_bytes(), Path::new("/x"), PathBuf::new());
        assert!(lints.is_empty(), "{lints:?}");
        let rcpt = t.for_hook(Hook::Rcpt);
        assert_eq!(rcpt[0].options.timeout, Some(Duration::from_secs(1)));
        assert!(rcpt[0].options.persistent.is_some());
        assert_eq!(rcpt[1].options, PluginOptions::default());
        assert_eq!(rcpt[2].options.mode, Mode::Observe);
        for (text, line) in [
            ("[rcpt]\n#spp: timeout=1s\n\nplugins/a\n", 2),
            ("[rcpt]\n#spp: timeout=1s\n# comment\nplugins/a\n", 2),
            ("#spp: timeout=1s\n[rcpt]\nplugins/a\n", 1),
            ("[rcpt]\nplugins/a\n#spp: timeout=1s\n", 3),
            (
                "[rcpt]\n#spp: timeout=1s\n#spp: mode=observe\nplugins/a\n",
                2,
            ),
            ("[rcpt]\n#spp: timeout=forever\nplugins/a\n", 2),
        ] {
            let (_, lints) = PluginTable::parse(text.as_bytes(), Path::new("/x"), PathBuf::new());
            let fatal: Vec<usize> = lints
                .iter()
                .filter(|l| l.is_fatal())
                .map(|l| l.lineno)
                .collect();
            assert_eq!(fatal, vec![line], "{text:?}: {lints:?}");
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
