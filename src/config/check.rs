//! The validator of control files and `smtpplugins`: every problem as
//! `file:line: what is wrong`, all of them, not just the first. Each is an
//! error (the daemon refuses a configuration that has one, at start and
//! on SIGHUP) or a warning (only reported). The daemon's own settings,
//! rules and certificates are added by `net::snapshot`, which is what
//! `check`, `serve` and SIGHUP call.

use super::control::{
    first_line, leading_number, list_entries, parse_switch, read_optional, EXTENSION_FILES,
};
use super::plugins::{LintKind, PluginTable, Program};
use super::queue::QueueSetting;
use super::ConfigError;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The configuration must not be used: `serve` does not start, a
    /// reload keeps the running snapshot, `check` exits 1.
    Error,
    /// Worth fixing, but the configuration works as qmail would read it
    /// (e.g. CRLF line ends): only reported.
    Warning,
}

/// One problem with its severity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// Where and what.
    pub problem: ConfigError,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.severity {
            Severity::Error => self.problem.fmt(f),
            Severity::Warning => {
                let p = &self.problem;
                match p.line {
                    Some(l) => write!(f, "{}:{}: warning: {}", p.file.display(), l, p.message),
                    None => write!(f, "{}: warning: {}", p.file.display(), p.message),
                }
            }
        }
    }
}

/// Every finding of one validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    findings: Vec<Finding>,
}

impl Report {
    /// Adds an error.
    pub fn error(&mut self, problem: ConfigError) {
        self.findings.push(Finding {
            severity: Severity::Error,
            problem,
        });
    }

    /// Adds a warning.
    pub fn warning(&mut self, problem: ConfigError) {
        self.findings.push(Finding {
            severity: Severity::Warning,
            problem,
        });
    }

    /// Adds errors.
    pub fn errors_from(&mut self, problems: impl IntoIterator<Item = ConfigError>) {
        for p in problems {
            self.error(p);
        }
    }

    /// Whether any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    /// Every finding, ordered by file, then line (a problem with the whole
    /// file first), then as found.
    pub fn sorted(mut self) -> Vec<Finding> {
        self.findings.sort_by(|a, b| {
            (&a.problem.file, a.problem.line).cmp(&(&b.problem.file, b.problem.line))
        });
        self.findings
    }

    /// The sorted findings of one severity.
    pub fn only(self, severity: Severity) -> Vec<Finding> {
        self.sorted()
            .into_iter()
            .filter(|f| f.severity == severity)
            .collect()
    }
}

/// Validates the control files under `home` and a plugin file (`plugins`,
/// relative to the home; `None`: `control/smtpplugins`) into `report`.
pub fn control_files(home: &Path, plugins: Option<&Path>, report: &mut Report) {
    let c = home.join("control");
    let read = |name: &str, report: &mut Report| -> Option<Vec<u8>> {
        match read_optional(&c.join(name)) {
            Ok(b) => b,
            Err(e) => {
                report.error(e);
                None
            }
        }
    };
    let me = read("me", report);
    let greeting = read("smtpgreeting", report);
    if me.is_none() && greeting.is_none() {
        report.error(ConfigError::at(
            &c.join("me"),
            None,
            "missing, and so is control/smtpgreeting: every connection would get 421",
        ));
    }
    for (name, content) in [("me", &me), ("smtpgreeting", &greeting)] {
        if let Some(b) = content {
            check_single(&c.join(name), b, report);
        }
    }
    for name in ["localiphost", "spooldir"] {
        if let Some(b) = read(name, report) {
            check_single(&c.join(name), &b, report);
        }
    }
    for name in [
        "timeoutsmtpd",
        "databytes",
        "plugintimeout",
        "mindatarate",
        "mindatarategrace",
    ] {
        if let Some(b) = read(name, report) {
            check_single(&c.join(name), &b, report);
            if leading_number(&b).is_none() {
                report.error(ConfigError::at(
                    &c.join(name),
                    Some(1),
                    "does not start with a number (a session would use the default)",
                ));
            }
        }
    }
    for (name, _) in EXTENSION_FILES {
        if let Some(b) = read(name, report) {
            if let Err(m) = parse_switch(&b) {
                report.error(ConfigError::at(&c.join(name), Some(1), m));
            }
        }
    }
    for name in ["rcpthosts", "badmailfrom"] {
        if let Some(b) = read(name, report) {
            check_list(&c.join(name), &b, report);
        }
    }
    let cdb = c.join("morercpthosts.cdb");
    if cdb.exists() {
        if let Err(e) = super::cdb::Cdb::open(&cdb).and_then(|db| db.contains(b"")) {
            report.error(ConfigError::at(
                &cdb,
                None,
                format!("not a usable cdb file: {e}"),
            ));
        }
    } else if c.join("morercpthosts").exists() {
        report.warning(ConfigError::at(
            &c.join("morercpthosts"),
            None,
            "is not consulted: build control/morercpthosts.cdb from it",
        ));
    }
    // The checks' files: the same reader as start-up and reload.
    if let Err(e) = super::checks::ChecksConfig::load(&c) {
        report.error(e);
    }
    if let Some(b) = read("queue", report) {
        match QueueSetting::parse(&first_line(&b)) {
            Err(m) => report.error(ConfigError::at(&c.join("queue"), Some(1), m)),
            Ok(setting) => check_queue(home, &c.join("queue"), &setting.with_home(home), report),
        }
    }
    if let Some(b) = read("spooldir", report) {
        let dir = home.join(std::ffi::OsStr::from_bytes(&first_line(&b)));
        if dir.exists() && !dir.is_dir() {
            report.error(ConfigError::at(
                &c.join("spooldir"),
                Some(1),
                format!("{} is not a directory", dir.display()),
            ));
        }
    }
    let plugins = plugins
        .map(|p| home.join(p))
        .unwrap_or_else(|| c.join("smtpplugins"));
    check_plugins(home, &plugins, report);
}

/// The programs and files a queue setting names must be usable.
fn check_queue(home: &Path, file: &Path, setting: &QueueSetting, report: &mut Report) {
    let program = match setting {
        QueueSetting::Sendmail(p) | QueueSetting::QmailQueue(Some(p)) => Some(home.join(p)),
        _ => None,
    };
    if let Some(p) = program {
        if let Some(why) = not_executable("queue program", &p) {
            report.error(ConfigError::at(file, Some(1), why));
        }
    }
    if let QueueSetting::Forward(f) = setting {
        if f.tls != super::queue::TlsMode::No {
            let ca = f
                .ca_file
                .clone()
                .unwrap_or_else(|| super::queue::SYSTEM_CA_FILE.into());
            if let Err(e) = crate::tls::client_config(&home.join(ca), f.verify) {
                report.error(ConfigError::at(file, Some(1), e));
            }
        }
    }
}

/// Why `program` (a `what`: plugin, queue program) cannot be run, if it
/// cannot.
pub fn not_executable(what: &str, program: &Path) -> Option<String> {
    let p = program.display();
    match std::fs::metadata(program) {
        Err(e) => Some(format!("{what} {p} cannot be used: {e}")),
        Ok(m) if !m.is_file() => Some(format!("{what} {p} is not a regular file")),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => {
            Some(format!("{what} {p} is not executable"))
        }
        Ok(_) => None,
    }
}

/// A single-value file: its first line must not end in CR.
fn check_single(path: &Path, content: &[u8], report: &mut Report) {
    if first_line(content).ends_with(b"\r") {
        report.warning(ConfigError::at(
            path,
            Some(1),
            "ends with CR (CRLF file): the CR becomes part of the value",
        ));
    }
}

/// A list file: no entry may end in CR.
fn check_list(path: &Path, content: &[u8], report: &mut Report) {
    for (lineno, entry) in list_entries(content) {
        if entry.ends_with(b"\r") {
            report.warning(ConfigError::at(
                path,
                Some(lineno),
                "ends with CR (CRLF file): the CR becomes part of the entry",
            ));
        }
    }
}

/// smtpplugins: must exist; sections known; programs exist and are
/// executable. CR line ends are warnings; everything else is an error.
fn check_plugins(home: &Path, path: &Path, report: &mut Report) {
    let content = match super::file::read(path) {
        Ok(b) => b,
        Err(e) => {
            report.error(ConfigError::at(
                path,
                None,
                format!("cannot read ({e}): every connection without NOSPP would get 421 (an empty file means no plugins)"),
            ));
            return;
        }
    };
    let (table, lints) = PluginTable::parse(&content, home, path.to_path_buf());
    for lint in lints {
        let problem = ConfigError::at(path, Some(lint.lineno), lint.message);
        match lint.kind {
            LintKind::LineEnd => report.warning(problem),
            LintKind::Fatal | LintKind::Ignored => report.error(problem),
        }
    }
    for hook in super::plugins::Hook::ALL {
        for plugin in table.for_hook(hook) {
            let Program::Direct { path: program, .. } = &plugin.program else {
                continue;
            };
            let problem = not_executable("plugin", program);
            if let Some(p) = problem {
                report.error(ConfigError::at(path, Some(plugin.lineno), p));
            }
        }
    }
}
