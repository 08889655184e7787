//! Command line: pick the mode, run it, map the result to an exit status.

use clap::{Parser, Subcommand};
use spp_smtpd::{logging, net, trial};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// An SMTP server whose policy lives in small external programs
/// (qmail-spp compatible).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The home directory: control/ files, relative plugin paths and
    /// bin/qmail-queue are under it, and plugins run in it.
    #[arg(long, env = "SPP_HOME", default_value = ".", global = true)]
    home: PathBuf,
    /// Where to log: stderr (default) or journald.
    #[arg(long, value_enum, default_value = "stderr", global = true)]
    log: logging::LogTarget,
    /// How stderr lines start: rfc3339 (a UTC time stamp) or bare (for
    /// multilog and others that add their own).
    #[arg(
        long,
        value_enum,
        env = "SPP_LOG_FORMAT",
        default_value = "rfc3339",
        global = true
    )]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// One SMTP session on stdin/stdout (tcpserver, inetd, systemd Accept=yes).
    Stdio {
        /// The connection starts with a PROXY protocol (v1/v2) header from a
        /// trusted proxy; its addresses become TCPREMOTEIP/TCPLOCALIP.
        #[arg(long)]
        proxy: bool,
        /// With --proxy: networks the proxy may connect from (CIDR,
        /// repeatable; checked against TCPREMOTEIP; required with --proxy).
        #[arg(long = "proxy-from")]
        proxy_from: Vec<net::proxy::Network>,
        /// The connection starts with a TLS handshake (port 465 style).
        #[arg(long)]
        tls: bool,
        /// TLS and AUTH.
        #[command(flatten)]
        tls_auth: net::settings::TlsAuthArgs,
    },
    /// The daemon: listen and serve many sessions.
    Serve(Box<net::settings::ServeArgs>),
    /// Validate what `serve` would run with (control files, plugins,
    /// settings, rules, certificates); print file:line problems. Takes
    /// serve's options, e.g. --rules FILE.
    Check {
        /// Check this plugin file instead of control/smtpplugins.
        #[arg(long)]
        plugins: Option<PathBuf>,
        /// The daemon's options, as `serve` would be given them.
        #[command(flatten)]
        serve: Box<net::settings::ServeArgs>,
    },
    /// Run plugins on a synthetic session with no network: print what each
    /// got and printed and what the client saw; exit 0 accepted, 1
    /// refused, 2 a plugin failed.
    Try(Box<trial::TryArgs>),
}

fn main() {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let plain = plain_stdio(&argv, std::env::var_os("SPP_HOME"))
        .and_then(|p| Some((p, logging::LogFormat::from_env()?)));
    if let Some(((home, log), format)) = plain {
        logging::init(log, format);
        let code = stdio(&home, false, &[], false, &Default::default());
        std::process::exit(code);
    }
    let cli = Cli::parse_from(argv);
    logging::init(cli.log, cli.log_format);
    let code = match cli.mode {
        Mode::Stdio {
            proxy,
            proxy_from,
            tls,
            tls_auth,
        } => stdio(&cli.home, proxy, &proxy_from, tls, &tls_auth),
        Mode::Serve(args) => net::daemon::run(&cli.home, &args),
        Mode::Try(args) => trial::run(&cli.home, &args),
        Mode::Check { plugins, serve } => check(&cli.home, plugins.as_deref(), &serve),
    };
    std::process::exit(code);
}

/// `check`: prints every finding, sorted by file and line; exit status 1
/// if any is an error, else 0.
fn check(home: &Path, plugins: Option<&Path>, serve: &net::settings::ServeArgs) -> i32 {
    let report = net::snapshot::check(home, serve, plugins);
    let failed = report.has_errors();
    let findings = report.sorted();
    for f in &findings {
        println!("{f}");
    }
    match (failed, findings.len()) {
        (true, _) => 1,
        (false, 0) => {
            println!("ok: no problems found under {}", home.display());
            0
        }
        (false, n) => {
            println!("ok: no errors under {}, {n} warning(s)", home.display());
            0
        }
    }
}

/// `stdio`: one session; its exit status.
fn stdio(
    home: &Path,
    proxy: bool,
    proxy_from: &[net::proxy::Network],
    tls: bool,
    tls_auth: &net::settings::TlsAuthArgs,
) -> i32 {
    match net::settings::TlsAuthSettings::for_stdio(tls_auth) {
        Ok(_) if proxy && proxy_from.is_empty() => {
            tracing::error!("--proxy needs --proxy-from: the networks the proxy connects from");
            net::daemon::EXIT_CONFIG
        }
        Ok(settings) => net::stdio::run(home, proxy.then_some(proxy_from), tls, &settings),
        Err(errors) => {
            for e in errors {
                tracing::error!("{e}");
            }
            net::daemon::EXIT_CONFIG
        }
    }
}

/// The plain `[--home DIR] [--log stderr|journald] stdio` that tcpserver
/// runs for every connection, recognised without building the full
/// command-line parser (a tenth of a short session's start-up). Anything
/// else — other options, `--help`, a value clap would read differently —
/// returns `None` and goes to clap. `env_home` is `SPP_HOME`.
fn plain_stdio(
    argv: &[OsString],
    env_home: Option<OsString>,
) -> Option<(PathBuf, logging::LogTarget)> {
    let mut home = match env_home {
        Some(h) if !h.is_empty() => PathBuf::from(h),
        Some(_) => return None,
        None => PathBuf::from("."),
    };
    let mut log = logging::LogTarget::Stderr;
    let mut args = argv.get(1..)?.iter();
    let mut saw_stdio = false;
    while let Some(arg) = args.next() {
        if saw_stdio {
            return None;
        }
        let text = arg.to_str();
        let (key, inline) = match text.and_then(|t| t.split_once('=')) {
            Some((k, v)) if k.starts_with("--") => (Some(k), Some(OsString::from(v))),
            _ => (text, None),
        };
        match key {
            Some("stdio") if inline.is_none() => saw_stdio = true,
            Some("--home") | Some("--log") => {
                let value = match inline {
                    Some(v) => v,
                    None => args.next()?.clone(),
                };
                if value.is_empty() || value.to_str().is_some_and(|v| v.starts_with('-')) {
                    return None;
                }
                if key == Some("--home") {
                    home = PathBuf::from(value);
                } else {
                    log = match value.to_str()? {
                        "stderr" => logging::LogTarget::Stderr,
                        "journald" => logging::LogTarget::Journald,
                        _ => return None,
                    };
                }
            }
            _ => return None,
        }
    }
    saw_stdio.then_some((home, log))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(args: &[&str], env: Option<&str>) -> Option<(String, logging::LogTarget)> {
        let argv: Vec<OsString> = args.iter().map(OsString::from).collect();
        plain_stdio(&argv, env.map(OsString::from)).map(|(h, l)| (h.display().to_string(), l))
    }

    #[test]
    fn plain_stdio_invocations_and_everything_else() {
        use logging::LogTarget::{Journald, Stderr};
        assert_eq!(plain(&["x", "stdio"], None), Some((".".into(), Stderr)));
        assert_eq!(
            plain(&["x", "stdio"], Some("/h")),
            Some(("/h".into(), Stderr))
        );
        assert_eq!(
            plain(&["x", "--home", "/var/spp", "stdio"], Some("/h")),
            Some(("/var/spp".into(), Stderr))
        );
        assert_eq!(
            plain(&["x", "--home=/a b", "--log=journald", "stdio"], None),
            Some(("/a b".into(), Journald))
        );
        assert_eq!(
            plain(&["x", "--log", "stderr", "--home", "h", "stdio"], None),
            Some(("h".into(), Stderr))
        );
        for other in [
            &["x"][..],
            &["x", "serve"],
            &["x", "check"],
            &["x", "stdio", "--tls"],
            &["x", "stdio", "--home", "h"],
            &["x", "--home"],
            &["x", "--home", "stdio"],
            &["x", "--home", "--log", "stdio"],
            &["x", "--log", "syslog", "stdio"],
            &["x", "--help"],
            &["x", "--version", "stdio"],
            &["x", "--home=", "stdio"],
            &["x", "stdio=1"],
        ] {
            assert_eq!(plain(other, None), None, "{other:?}");
        }
        assert_eq!(plain(&["x", "stdio"], Some("")), None);
    }

    #[test]
    fn the_full_parser_reads_the_plain_forms_alike() {
        for args in [
            &["x", "stdio"][..],
            &["x", "--home", "/var/spp", "stdio"],
            &["x", "--home=/a", "--log=journald", "stdio"],
        ] {
            let (home, log) = plain(args, None).unwrap();
            let cli = Cli::try_parse_from(args).unwrap();
            assert!(matches!(
                cli.mode,
                Mode::Stdio {
                    proxy: false,
                    tls: false,
                    ..
                }
            ));
            assert_eq!(cli.home.display().to_string(), home);
            assert_eq!(cli.log, log);
        }
    }
}
