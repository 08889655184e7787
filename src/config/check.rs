//! `spp-smtpd check`: reads every control file and `smtpplugins` and
//! reports each problem as `file:line: what is wrong`, all of them, not
//! just the first.

use super::control::{
    first_line, leading_number, list_entries, parse_switch, read_optional, EXTENSION_FILES,
};
use super::plugins::{PluginTable, Program};
use super::queue::QueueSetting;
use super::ConfigError;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Every problem found under `home`. `sppconffile` is the session-level
/// override to check instead of `control/smtpplugins`, if any.
pub fn check(home: &Path, sppconffile: Option<&Path>) -> Vec<ConfigError> {
    let mut problems = Vec::new();
    let c = home.join("control");
    let read = |name: &str, problems: &mut Vec<ConfigError>| -> Option<Vec<u8>> {
        match read_optional(&c.join(name)) {
            Ok(b) => b,
            Err(e) => {
                problems.push(e);
                None
            }
        }
    };
    let me = read("me", &mut problems);
    let greeting = read("smtpgreeting", &mut problems);
    if me.is_none() && greeting.is_none() {
        problems.push(ConfigError::at(
            &c.join("me"),
            None,
            "missing, and so is control/smtpgreeting: every connection would get 421",
        ));
    }
    for (name, content) in [("me", &me), ("smtpgreeting", &greeting)] {
        if let Some(b) = content {
            check_single(&c.join(name), b, &mut problems);
        }
    }
    for name in ["localiphost", "spooldir"] {
        if let Some(b) = read(name, &mut problems) {
            check_single(&c.join(name), &b, &mut problems);
        }
    }
    for name in [
        "timeoutsmtpd",
        "databytes",
        "plugintimeout",
        "mindatarate",
        "mindatarategrace",
    ] {
        if let Some(b) = read(name, &mut problems) {
            check_single(&c.join(name), &b, &mut problems);
            if leading_number(&b).is_none() {
                problems.push(ConfigError::at(
                    &c.join(name),
                    Some(1),
                    "does not start with a number: the default is used",
                ));
            }
        }
    }
    for (name, _) in EXTENSION_FILES {
        if let Some(b) = read(name, &mut problems) {
            if let Err(m) = parse_switch(&b) {
                problems.push(ConfigError::at(&c.join(name), Some(1), m));
            }
        }
    }
    for name in ["rcpthosts", "badmailfrom"] {
        if let Some(b) = read(name, &mut problems) {
            check_list(&c.join(name), &b, &mut problems);
        }
    }
    let cdb = c.join("morercpthosts.cdb");
    if cdb.exists() {
        if let Err(e) = super::cdb::Cdb::open(&cdb).and_then(|db| db.contains(b"")) {
            problems.push(ConfigError::at(
                &cdb,
                None,
                format!("not a usable cdb file: {e}"),
            ));
        }
    } else if c.join("morercpthosts").exists() {
        problems.push(ConfigError::at(
            &c.join("morercpthosts"),
            None,
            "is not consulted: build control/morercpthosts.cdb from it",
        ));
    }
    if let Some(b) = read("queue", &mut problems) {
        match QueueSetting::parse(&first_line(&b)) {
            Err(m) => problems.push(ConfigError::at(&c.join("queue"), Some(1), m)),
            Ok(setting) => check_queue(
                home,
                &c.join("queue"),
                &setting.with_home(home),
                &mut problems,
            ),
        }
    }
    if let Some(b) = read("spooldir", &mut problems) {
        let dir = home.join(std::ffi::OsStr::from_bytes(&first_line(&b)));
        if dir.exists() && !dir.is_dir() {
            problems.push(ConfigError::at(
                &c.join("spooldir"),
                Some(1),
                format!("{} is not a directory", dir.display()),
            ));
        }
    }
    let plugins = sppconffile
        .map(|p| home.join(p))
        .unwrap_or_else(|| c.join("smtpplugins"));
    check_plugins(home, &plugins, &mut problems);
    problems.extend(crate::net::settings::check(home));
    problems
}

/// The programs and files a queue setting names must be usable.
fn check_queue(home: &Path, file: &Path, setting: &QueueSetting, problems: &mut Vec<ConfigError>) {
    let program = match setting {
        QueueSetting::Sendmail(p) | QueueSetting::QmailQueue(Some(p)) => Some(home.join(p)),
        _ => None,
    };
    if let Some(p) = program {
        if let Some(why) = not_executable("queue program", &p) {
            problems.push(ConfigError::at(file, Some(1), why));
        }
    }
    if let QueueSetting::Forward(f) = setting {
        if f.tls != super::queue::TlsMode::No {
            let ca = f
                .ca_file
                .clone()
                .unwrap_or_else(|| super::queue::SYSTEM_CA_FILE.into());
            if let Err(e) = crate::tls::client_config(&home.join(ca), f.verify) {
                problems.push(ConfigError::at(file, Some(1), e));
            }
        }
    }
}

/// Why `program` (a `what`: plugin, queue program) cannot be run, if it
/// cannot.
fn not_executable(what: &str, program: &Path) -> Option<String> {
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
fn check_single(path: &Path, content: &[u8], problems: &mut Vec<ConfigError>) {
    if first_line(content).ends_with(b"\r") {
        problems.push(ConfigError::at(
            path,
            Some(1),
            "ends with CR (CRLF file): the CR becomes part of the value",
        ));
    }
}

/// A list file: no entry may end in CR.
fn check_list(path: &Path, content: &[u8], problems: &mut Vec<ConfigError>) {
    for (lineno, entry) in list_entries(content) {
        if entry.ends_with(b"\r") {
            problems.push(ConfigError::at(
                path,
                Some(lineno),
                "ends with CR (CRLF file): the CR becomes part of the entry",
            ));
        }
    }
}

/// smtpplugins: must exist; sections known; programs exist and are
/// executable.
fn check_plugins(home: &Path, path: &Path, problems: &mut Vec<ConfigError>) {
    let content = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            problems.push(ConfigError::at(
                path,
                None,
                format!("cannot read ({e}): every connection without NOSPP would get 421"),
            ));
            return;
        }
    };
    let (table, lints) = PluginTable::parse(&content, home, path.to_path_buf());
    for lint in lints {
        problems.push(ConfigError::at(path, Some(lint.lineno), lint.message));
    }
    for hook in super::plugins::Hook::ALL {
        for plugin in table.for_hook(hook) {
            let Program::Direct { path: program, .. } = &plugin.program else {
                continue;
            };
            let problem = not_executable("plugin", program);
            if let Some(p) = problem {
                problems.push(ConfigError::at(path, Some(plugin.lineno), p));
            }
        }
    }
}
