//! Command line: pick the mode, run it, map the result to an exit status.

use clap::{Parser, Subcommand};
use spp_smtpd::{config, logging, net};
use std::path::PathBuf;

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
    /// Validate control files and plugins; print file:line problems.
    Check {
        /// Check this plugin file instead of control/smtpplugins.
        #[arg(long)]
        plugins: Option<PathBuf>,
    },
}

fn main() {
    let cli = Cli::parse();
    logging::init(cli.log);
    let code = match cli.mode {
        Mode::Stdio {
            proxy,
            proxy_from,
            tls,
            tls_auth,
        } => match net::settings::TlsAuthSettings::for_stdio(&tls_auth) {
            Ok(_) if proxy && proxy_from.is_empty() => {
                tracing::error!("--proxy needs --proxy-from: the networks the proxy connects from");
                net::daemon::EXIT_CONFIG
            }
            Ok(settings) => {
                net::stdio::run(&cli.home, proxy.then_some(&proxy_from[..]), tls, &settings)
            }
            Err(errors) => {
                for e in errors {
                    tracing::error!("{e}");
                }
                net::daemon::EXIT_CONFIG
            }
        },
        Mode::Serve(args) => net::daemon::run(&cli.home, &args),
        Mode::Check { plugins } => {
            let problems = config::check::check(&cli.home, plugins.as_deref());
            for p in &problems {
                println!("{p}");
            }
            if problems.is_empty() {
                println!("ok: no problems found under {}", cli.home.display());
                0
            } else {
                1
            }
        }
    };
    std::process::exit(code);
}
