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
/// errors, as qmail-smtpd). With `proxy` (the trusted proxy networks),
/// the connection must come from one of them and starts with a PROXY
/// protocol header whose addresses replace TCPREMOTEIP/PORT and
/// TCPLOCALIP/PORT; an inherited RELAYCLIENT is dropped.
pub fn run(
    home: &Path,
    proxy: Option<&[super::proxy::Network]>,
    implicit_tls: bool,
    tls_auth: &super::settings::TlsAuthSettings,
) -> i32 {
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
    let cfg = match Config::load_with(home, &tls_auth.certs) {
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
        let mut stream: crate::session::io::BoxStream = match socket_on_stdio().and_then(|s| {
            s.set_nonblocking(true).ok()?;
            tokio::net::TcpStream::from_std(s).ok()
        }) {
            Some(socket) => Box::new(socket),
            None => Box::new(tokio::io::join(tokio::io::stdin(), tokio::io::stdout())),
        };
        if let Some(trusted) = proxy {
            let from = env
                .get("TCPREMOTEIP")
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse::<std::net::IpAddr>().ok());
            if !from.is_some_and(|ip| trusted.iter().any(|n| n.contains(ip))) {
                tracing::warn!(client = ?from, "--proxy: connection not from a trusted proxy; closed");
                return 1;
            }
            // tcpserver's rules matched the proxy's address: a relay grant
            // for the proxy is not one for the clients behind it.
            env.remove("RELAYCLIENT");
            match super::proxy::read_header(&mut stream, PROXY_HEADER_TIMEOUT).await {
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
        let controls = crate::session::SessionControls {
            implicit_tls,
            require_tls: tls_auth.require_tls,
            auth: tls_auth.auth.clone().map(Arc::new),
            ..Default::default()
        };
        let code = Session::new(stream, cfg, env, id)
            .with_controls(controls)
            .run()
            .await;
        crate::queue::forward::pool::close_idle().await;
        code
    });
    // A read of stdin may still be pending on a blocking thread: do not
    // wait for it.
    rt.shutdown_background();
    code
}

/// Under tcpserver or inetd, fd 0 and fd 1 are the same TCP socket: use it
/// directly (non-blocking, on the runtime's reactor) instead of tokio's
/// stdin/stdout, which go through helper threads. `None` for pipes,
/// terminals, or two different descriptors.
fn socket_on_stdio() -> Option<std::net::TcpStream> {
    use std::os::fd::FromRawFd;
    let stat = |fd| {
        // SAFETY: `stat` is plain data; all-zero is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat writes into the struct we pass.
        (unsafe { libc::fstat(fd, &mut st) } == 0).then_some(st)
    };
    let (a, b) = (stat(0)?, stat(1)?);
    if a.st_mode & libc::S_IFMT != libc::S_IFSOCK || (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino) {
        return None;
    }
    // SAFETY: `sockaddr_storage` is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: getsockname writes at most `len` bytes into `addr`.
    if unsafe {
        libc::getsockname(
            0,
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    } != 0
    {
        return None;
    }
    if !matches!(i32::from(addr.ss_family), libc::AF_INET | libc::AF_INET6) {
        return None;
    }
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor that we own.
    let fd = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a fresh, owned TCP socket descriptor.
    Some(unsafe { std::net::TcpStream::from_raw_fd(fd) })
}
