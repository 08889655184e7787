//! `spp-smtpd serve`: listens on TCP and runs one session task per
//! connection, each with the environment tcpserver would have given it.

use crate::config::Config;
use crate::session::env::SessionEnv;
use crate::session::Session;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// The default listening address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2525";

/// Variables a connection's environment never inherits from the daemon's.
const PER_CONNECTION: [&str; 8] = [
    "PROTO",
    "TCPLOCALIP",
    "TCPLOCALPORT",
    "TCPLOCALHOST",
    "TCPREMOTEIP",
    "TCPREMOTEPORT",
    "TCPREMOTEHOST",
    "TCPREMOTEINFO",
];

/// Runs the daemon until SIGTERM or SIGINT; returns the exit status.
pub fn run(home: &Path, listen: &[SocketAddr]) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return 1;
        }
    };
    let code = rt.block_on(serve(home, listen));
    rt.shutdown_timeout(Duration::from_secs(1));
    code
}

async fn serve(home: &Path, listen: &[SocketAddr]) -> i32 {
    let cfg = match Config::load(home) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!("configuration error: {e}");
            return 1;
        }
    };
    if let Err(e) = &cfg.default_plugins {
        tracing::warn!("{e}: sessions without NOSPP or SPPCONFFILE will get 421");
    }
    let mut base = SessionEnv::from_process();
    for name in PER_CONNECTION {
        base.remove(name);
    }
    let base = Arc::new(base);
    let counter = Arc::new(AtomicU64::new(0));
    for addr in listen {
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot listen");
                return 1;
            }
        };
        tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "listening");
        tokio::spawn(accept_loop(
            listener,
            cfg.clone(),
            base.clone(),
            counter.clone(),
        ));
    }
    wait_for_shutdown().await;
    tracing::info!("shutting down");
    0
}

/// Accepts connections forever, backing off on errors (e.g. EMFILE).
async fn accept_loop(
    listener: TcpListener,
    cfg: Arc<Config>,
    base: Arc<SessionEnv>,
    counter: Arc<AtomicU64>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let id = counter.fetch_add(1, Ordering::Relaxed).to_string();
                tokio::spawn(session(stream, peer, cfg.clone(), base.clone(), id));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; backing off");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Runs one connection's session.
async fn session(
    stream: TcpStream,
    peer: SocketAddr,
    cfg: Arc<Config>,
    base: Arc<SessionEnv>,
    id: String,
) {
    let _ = stream.set_nodelay(true);
    let local = match stream.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let env = connection_env(&base, local, peer);
    let (r, w) = stream.into_split();
    let start = std::time::Instant::now();
    let code = Session::new(r, w, cfg, env, id.clone()).run().await;
    tracing::info!(session = %id, client = %peer.ip().to_canonical(), code, ms = start.elapsed().as_millis() as u64, "connection closed");
}

/// The tcpserver-style environment of one connection.
pub fn connection_env(base: &SessionEnv, local: SocketAddr, peer: SocketAddr) -> SessionEnv {
    let mut env = base.clone();
    env.set("PROTO", "TCP");
    env.set("TCPLOCALIP", local.ip().to_canonical().to_string());
    env.set("TCPLOCALPORT", local.port().to_string());
    env.set("TCPREMOTEIP", peer.ip().to_canonical().to_string());
    env.set("TCPREMOTEPORT", peer.port().to_string());
    env
}

/// Resolves on SIGTERM or SIGINT.
async fn wait_for_shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
