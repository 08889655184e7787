//! `spp-smtpd stdio`: one session on stdin/stdout with the environment
//! tcpserver gave this process, exactly where qmail-smtpd would run.

use crate::config::Config;
use crate::session::env::SessionEnv;
use crate::session::Session;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// How long a proxy has to send its header in `stdio --proxy`.
const PROXY_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs one session and returns the exit status (0 after QUIT, 1 on
/// errors, as qmail-smtpd). With `proxy`, the connection starts with a
/// PROXY protocol header whose addresses replace TCPREMOTEIP/PORT and
/// TCPLOCALIP/PORT.
pub fn run(home: &Path, proxy: bool) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return 1;
        }
    };
    let cfg = match Config::load(home) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!(error = %e, "configuration unreadable");
            let mut out = std::io::stdout();
            let _ = write!(out, "{}\r\n", e.reply());
            let _ = out.flush();
            return 1;
        }
    };
    let id = std::process::id().to_string();
    let mut env = SessionEnv::from_process();
    let code = rt.block_on(async move {
        let mut stdin = tokio::io::stdin();
        if proxy {
            match super::proxy::read_header(&mut stdin, PROXY_HEADER_TIMEOUT).await {
                Ok(super::proxy::ProxiedAddrs::Tcp {
                    source,
                    destination,
                }) => {
                    env.set("TCPREMOTEIP", source.ip().to_canonical().to_string());
                    env.set("TCPREMOTEPORT", source.port().to_string());
                    env.set("TCPLOCALIP", destination.ip().to_canonical().to_string());
                    env.set("TCPLOCALPORT", destination.port().to_string());
                    env.remove("TCPREMOTEHOST");
                }
                Ok(super::proxy::ProxiedAddrs::Local) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "bad PROXY header; closed");
                    return 1;
                }
            }
        }
        Session::new(
            Box::new(tokio::io::join(stdin, tokio::io::stdout())),
            cfg,
            env,
            id,
        )
        .run()
        .await
    });
    // A read of stdin may still be pending on a blocking thread: do not
    // wait for it.
    rt.shutdown_background();
    code
}
