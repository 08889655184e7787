//! `spp-smtpd try`: one session with no network, for plugin authors. A
//! scripted client ([`script`]) sends what the options describe — EHLO,
//! MAIL and RCPTs, DATA and a message, QUIT — to a real
//! [`Session`](crate::session::Session) over an in-memory connection; the
//! session reports every plugin run (`session::trace`), and [`report`]
//! prints each one between the client's line and the replies, then says
//! whether the client was accepted, refused, or a plugin failed.
//!
//! The plugins are the home's `control/smtpplugins` with its `#spp:`
//! options, another file, or one plugin line at one hook. Accepted mail
//! goes only into a Maildir of its own (a temporary one, or `--maildir`),
//! never to the home's queue: no qmail-queue, sendmail or downstream
//! server is run or contacted.

pub mod report;
pub mod script;

use crate::config::plugins::{Hook, PluginTable};
use crate::config::queue::QueueSetting;
use crate::config::{load_plugin_table, Config};
use crate::session::env::SessionEnv;
use crate::session::Session;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Exit status: every command got 2xx or 3xx, the session ended with QUIT.
pub const EXIT_ACCEPTED: i32 = 0;
/// Exit status: a command got 4xx or 5xx, or the server closed the
/// connection before QUIT was answered.
pub const EXIT_REFUSED: i32 = 1;
/// Exit status: a plugin failed, or `try` could not run (bad options,
/// unreadable configuration or message).
pub const EXIT_FAILED: i32 = 2;

/// The client's port in the environment (`TCPREMOTEPORT`).
const REMOTE_PORT: &str = "49152";
/// The server's port in the environment (`TCPLOCALPORT`).
const LOCAL_PORT: &str = "25";

/// Options of `spp-smtpd try`.
#[derive(Debug, Clone, clap::Args)]
pub struct TryArgs {
    /// The client's address (TCPREMOTEIP).
    #[arg(long, default_value = "127.0.0.1")]
    pub ip: IpAddr,
    /// The EHLO argument.
    #[arg(long, default_value = "client.example")]
    pub helo: String,
    /// The MAIL FROM address, brackets optional (default: the null
    /// sender). MAIL is sent when there is a recipient.
    #[arg(long, default_value = "")]
    pub from: String,
    /// A RCPT TO address, without brackets (repeatable).
    #[arg(long)]
    pub rcpt: Vec<String>,
    /// A variable of the session's environment (repeatable). The
    /// environment is not inherited, except PATH.
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_assignment)]
    pub env: Vec<(String, String)>,
    /// A message to send after DATA, as a file (LF or CRLF line ends);
    /// needs --rcpt.
    #[arg(long, value_name = "FILE")]
    pub message: Option<PathBuf>,
    /// The plugin file to use instead of control/smtpplugins (relative to
    /// the home, as SPPCONFFILE).
    #[arg(long, value_name = "FILE", conflicts_with = "plugin")]
    pub plugins: Option<PathBuf>,
    /// One plugin line, the only plugin of the session (with --hook).
    #[arg(long, value_name = "LINE", requires = "hook")]
    pub plugin: Option<String>,
    /// The hook of --plugin: connection, helo, mail, rcpt, data or body.
    #[arg(long, value_parser = parse_hook, requires = "plugin")]
    pub hook: Option<Hook>,
    /// `#spp:` options of --plugin, e.g. "timeout=2s mode=observe".
    #[arg(long, value_name = "OPTIONS", requires = "plugin")]
    pub options: Option<String>,
    /// Deliver an accepted message into this Maildir (made if missing)
    /// instead of a temporary one that is removed at the end.
    #[arg(long, value_name = "DIR")]
    pub maildir: Option<PathBuf>,
    /// Print only the client's lines, the replies and the result.
    #[arg(long)]
    pub quiet: bool,
}

/// `--hook`: a hook by name; AUTH is not part of a trial.
fn parse_hook(name: &str) -> Result<Hook, String> {
    match Hook::ALL.into_iter().find(|h| h.name() == name) {
        Some(Hook::Auth) => Err("try sends no AUTH: the [auth] hook never runs".into()),
        Some(h) => Ok(h),
        None => Err("one of connection, helo, mail, rcpt, data, body".into()),
    }
}

/// `--env`: `NAME=VALUE` with a non-empty name.
fn parse_assignment(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.into(), value.into())),
        _ => Err("NAME=VALUE expected".into()),
    }
}

/// Runs `try` under `home`; prints the report on stdout and problems on
/// stderr; returns the exit status.
pub fn run(home: &Path, args: &TryArgs) -> i32 {
    match prepare(home, args) {
        Ok(trial) => trial.run(args.quiet),
        Err(problem) => {
            eprintln!("spp-smtpd try: {problem}");
            EXIT_FAILED
        }
    }
}

/// Everything a trial needs, checked before anything runs.
struct Trial {
    /// The configuration, with the trial's plugins and queue.
    cfg: Arc<Config>,
    /// The session environment.
    env: SessionEnv,
    /// What the client sends.
    steps: Vec<script::Step>,
    /// The Maildir mail goes to.
    maildir: PathBuf,
    /// The Maildir is the user's (`--maildir`), not the scratch one.
    keep: bool,
    /// The trial's own directory (spool, default Maildir), removed at the
    /// end.
    scratch: PathBuf,
}

/// Checks the options, reads the configuration and the message.
fn prepare(home: &Path, args: &TryArgs) -> Result<Trial, String> {
    for (what, text) in [("--helo", &args.helo), ("--from", &args.from)]
        .into_iter()
        .chain(args.rcpt.iter().map(|r| ("--rcpt", r)))
        .chain(args.plugin.iter().map(|p| ("--plugin", p)))
        .chain(args.options.iter().map(|o| ("--options", o)))
    {
        if text.contains(['\r', '\n']) {
            return Err(format!("{what} must be one line"));
        }
    }
    if args.message.is_some() && args.rcpt.is_empty() {
        return Err("--message needs at least one --rcpt".into());
    }
    let message = match &args.message {
        Some(path) => {
            Some(std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?)
        }
        None => None,
    };
    let mut cfg = Config::load(home).map_err(|e| e.to_string())?;
    let table = match (&args.plugin, &args.plugins) {
        (Some(line), _) => Some(one_plugin(
            &cfg.home,
            args.hook,
            line,
            args.options.as_deref(),
        )?),
        (None, Some(file)) => {
            Some(load_plugin_table(&cfg.home, &cfg.home.join(file)).map_err(|e| e.to_string())?)
        }
        (None, None) => None,
    };
    if let Some(table) = table {
        cfg.default_plugins = Ok(Arc::new(table));
    }
    finish(cfg, args, message)
}

/// The table of `--plugin LINE --hook HOOK [--options OPTIONS]`: parsed
/// from the text a file would hold, so the line and its options mean
/// exactly what they would mean there.
fn one_plugin(
    home: &Path,
    hook: Option<Hook>,
    line: &str,
    options: Option<&str>,
) -> Result<PluginTable, String> {
    let hook = hook.ok_or("--plugin needs --hook")?;
    if line.is_empty() || line.starts_with(['[', '#']) {
        return Err("--plugin needs a plugin line (not empty, no [ or # first)".into());
    }
    let options = options.map(|o| format!("#spp: {o}\n")).unwrap_or_default();
    let text = format!("[{}]\n{options}{line}\n", hook.name());
    let (table, lints) = PluginTable::parse(text.as_bytes(), home, PathBuf::from("--plugin"));
    match lints.into_iter().find(|l| l.is_fatal()) {
        Some(l) => Err(format!("--options: {}", l.message)),
        None => Ok(table),
    }
}

/// Points the queue and the spool at the trial's own directories and
/// builds the environment and the steps.
fn finish(mut cfg: Config, args: &TryArgs, message: Option<Vec<u8>>) -> Result<Trial, String> {
    if let Err(e) = &cfg.default_plugins {
        return Err(e.to_string());
    }
    let maildir = match &args.maildir {
        Some(dir) => Some(std::path::absolute(dir).map_err(|e| format!("{}: {e}", dir.display()))?),
        None => None,
    };
    let scratch = scratch_dir().map_err(|e| format!("cannot make a temporary directory: {e}"))?;
    let maildir = maildir.unwrap_or_else(|| scratch.join("Maildir"));
    cfg.control.queue = Some(QueueSetting::Maildir(Some(maildir.clone())));
    cfg.control.spooldir = scratch.join("spool");
    let env = environment(&cfg, args);
    let steps = script::steps(&script::Envelope {
        helo: &args.helo,
        from: args.from.trim_start_matches('<').trim_end_matches('>'),
        rcpts: &args.rcpt,
        message: message.as_deref(),
    });
    Ok(Trial {
        cfg: Arc::new(cfg),
        env,
        steps,
        maildir,
        keep: args.maildir.is_some(),
        scratch,
    })
}

/// The environment tcpserver would give a connection from `--ip` to port
/// 25 of 127.0.0.1, with PATH and the `--env` variables.
fn environment(cfg: &Config, args: &TryArgs) -> SessionEnv {
    let mut env = SessionEnv::default();
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    env.set(
        "PATH",
        std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()),
    );
    env.set("PROTO", "TCP");
    env.set("TCPLOCALIP", "127.0.0.1");
    env.set("TCPLOCALPORT", LOCAL_PORT);
    if let Some(me) = &cfg.control.me {
        env.set("TCPLOCALHOST", me);
    }
    env.set("TCPREMOTEIP", args.ip.to_canonical().to_string());
    env.set("TCPREMOTEPORT", REMOTE_PORT);
    for (name, value) in &args.env {
        env.set(name, value);
    }
    env
}

/// A new private directory under the system's temporary directory.
fn scratch_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("spp-try.{}.{nanos}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

impl Trial {
    /// Runs the session, prints the report, removes the scratch
    /// directory; the exit status.
    fn run(self, quiet: bool) -> i32 {
        let scratch = self.scratch.clone();
        let code = self.converse(quiet);
        let _ = std::fs::remove_dir_all(&scratch);
        code
    }

    /// Runs the session and prints the report; the exit status.
    fn converse(self, quiet: bool) -> i32 {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("spp-smtpd try: cannot start the runtime: {e}");
                return EXIT_FAILED;
            }
        };
        let before = messages_in(&self.maildir);
        let steps = self.steps.len();
        let (sink, runs) = tokio::sync::mpsc::unbounded_channel();
        let log = script::Transcript::new(runs);
        let client = script::ScriptedClient::new(self.steps, log.clone());
        let session = Session::new(Box::new(client), self.cfg, self.env, "try".into());
        // The configuration (and any persistent plugin's processes) goes
        // with the session, inside the runtime.
        rt.block_on(session.traced(sink).run());
        let report = report::render(&log.take(), steps, quiet);
        print!("{}", report.text);
        let delivered: Vec<PathBuf> = messages_in(&self.maildir)
            .into_iter()
            .filter(|m| !before.contains(m))
            .collect();
        for m in &delivered {
            if self.keep {
                println!("delivered: {}", m.display());
            } else {
                println!(
                    "delivered: into a temporary Maildir, now removed (--maildir DIR keeps it)"
                );
            }
        }
        report.outcome.exit_code()
    }
}

/// The messages in `new/` of a Maildir.
fn messages_in(maildir: &Path) -> Vec<PathBuf> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(maildir.join("new"))
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_values() {
        assert_eq!(parse_hook("rcpt"), Ok(Hook::Rcpt));
        assert_eq!(parse_hook("body"), Ok(Hook::Body));
        assert!(parse_hook("auth").is_err());
        assert!(parse_hook("r").is_err());
        assert_eq!(
            parse_assignment("RELAYCLIENT="),
            Ok(("RELAYCLIENT".into(), String::new()))
        );
        assert_eq!(parse_assignment("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(parse_assignment("=x").is_err());
        assert!(parse_assignment("NOVALUE").is_err());
    }

    #[test]
    fn one_plugin_line_with_options() {
        let home = Path::new("/nonexistent");
        let t = one_plugin(home, Some(Hook::Rcpt), ":echo N", Some("timeout=2s")).unwrap();
        let rcpt = t.for_hook(Hook::Rcpt);
        assert_eq!(rcpt.len(), 1);
        assert_eq!(rcpt[0].line, b":echo N");
        assert_eq!(
            rcpt[0].options.timeout,
            Some(std::time::Duration::from_secs(2))
        );
        assert!(Hook::ALL
            .iter()
            .filter(|&&h| h != Hook::Rcpt)
            .all(|&h| t.for_hook(h).is_empty()));
        assert!(one_plugin(home, Some(Hook::Rcpt), ":echo N", Some("colour=blue")).is_err());
        assert!(one_plugin(home, Some(Hook::Rcpt), "[mail]", None).is_err());
        assert!(one_plugin(home, None, ":echo N", None).is_err());
    }
}
