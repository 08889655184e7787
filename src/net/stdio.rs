//! `spp-smtpd stdio`: one session on stdin/stdout with the environment
//! tcpserver gave this process, exactly where qmail-smtpd would run.

use crate::config::Config;
use crate::session::env::SessionEnv;
use crate::session::Session;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// Runs one session and returns the exit status (0 after QUIT, 1 on
/// errors, as qmail-smtpd).
pub fn run(home: &Path) -> i32 {
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
    let env = SessionEnv::from_process();
    let code =
        rt.block_on(Session::new(tokio::io::stdin(), tokio::io::stdout(), cfg, env, id).run());
    // A read of stdin may still be pending on a blocking thread: do not
    // wait for it.
    rt.shutdown_background();
    code
}
