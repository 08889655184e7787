//! `spp-smtpd serve`: the event-driven daemon. One task per connection,
//! each session with the environment tcpserver would have given it (plus
//! the variables of its access rule), shared limits, SIGHUP reload of a
//! validated snapshot, and a graceful SIGTERM/SIGINT shutdown.

use super::io_limits;
use super::settings::{DaemonSettings, ServeArgs};
use super::snapshot::Snapshot;
use crate::session::env::SessionEnv;
use crate::session::io::RunState;
use crate::session::{Session, SessionControls};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

/// Exit status for a configuration error (sysexits' EX_CONFIG): a
/// supervisor should not restart in a loop.
pub const EXIT_CONFIG: i32 = 78;
/// Exit status when the listeners cannot be set up.
pub const EXIT_LISTEN: i32 = 1;

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

/// Variables that, set in the daemon's own environment, apply to every
/// client (as with tcpserver); worth a warning.
const SESSION_POLICY: [&str; 4] = ["RELAYCLIENT", "NOSPP", "SPPCONFFILE", "DATABYTES"];

/// State shared by the accept loops and sessions.
struct Shared {
    settings: DaemonSettings,
    /// One permit per connection (global limit).
    conn_slots: Arc<Semaphore>,
    /// Connections per client address.
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// Plugin processes running at once.
    plugin_slots: Arc<Semaphore>,
    /// The daemon's environment without per-connection variables.
    base_env: SessionEnv,
    /// The current snapshot.
    snapshots: watch::Receiver<Arc<Snapshot>>,
    /// Running / draining / stopping.
    state: watch::Receiver<RunState>,
    /// Session tasks, awaited at shutdown.
    tracker: TaskTracker,
    /// Session ids.
    counter: AtomicU64,
    /// Reverse DNS for TCPREMOTEHOST, when enabled.
    dns: Option<super::dns::ReverseDns>,
    /// AUTH configuration, when a backend is set.
    auth: Option<Arc<crate::auth::AuthConfig>>,
}

/// Runs the daemon until SIGTERM or SIGINT; returns the exit status.
pub fn run(home: &Path, args: &ServeArgs) -> i32 {
    let home = std::path::absolute(home).unwrap_or_else(|_| PathBuf::from(home));
    let settings = match DaemonSettings::resolve(&home, args) {
        Ok(s) => s,
        Err(errors) => {
            for e in errors {
                tracing::error!("{e}");
            }
            return EXIT_CONFIG;
        }
    };
    let snapshot = match Snapshot::load(&home, &settings) {
        Ok((snapshot, warnings)) => {
            for w in warnings {
                tracing::warn!("{w}");
            }
            snapshot
        }
        Err(errors) => {
            for e in errors {
                tracing::error!("{e}");
            }
            tracing::error!("configuration refused: not starting");
            return EXIT_CONFIG;
        }
    };
    let open_files = io_limits::raise_open_files_limit();
    let capacity = open_files.saturating_sub(64 + 3 * settings.max_plugins as u64);
    tracing::info!(
        open_files,
        capacity,
        max_connections = settings.max_connections,
        "connection capacity"
    );
    if (settings.max_connections as u64) > capacity {
        tracing::warn!(
            "max-connections {} exceeds what the open-files limit allows (about {capacity})",
            settings.max_connections
        );
    }
    let listeners = match open_listeners(&settings) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e}");
            return EXIT_LISTEN;
        }
    };
    let metrics_listener = match settings.metrics.map(bind).transpose() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot listen for metrics on {:?}: {e}", settings.metrics);
            return EXIT_LISTEN;
        }
    };
    if metrics_listener.is_some() {
        crate::metrics::install();
    }
    if let Some(user) = &settings.user {
        if let Err(e) = super::privileges::drop_privileges(user, settings.group.as_deref()) {
            tracing::error!("cannot switch to user {user}: {e}");
            return EXIT_CONFIG;
        }
        tracing::info!(
            user,
            group = settings.group.as_deref().unwrap_or("(primary)"),
            "privileges dropped"
        );
        warn_unreadable_after_drop(&home, &settings, user);
    }
    // Spool files of a server that was killed are removed now; a session
    // would only do it before its first spool file.
    crate::queue::spool::sweep(&snapshot.config.control.spooldir);
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
    let code = rt.block_on(serve(home, settings, snapshot, listeners, metrics_listener));
    rt.shutdown_timeout(Duration::from_secs(1));
    code
}

/// The configuration was read before the switch to `user`; a reload reads
/// it as `user`. Whatever the validator finds now (typically a key file
/// only root may read) would refuse every reload: say so at start.
fn warn_unreadable_after_drop(home: &Path, settings: &DaemonSettings, user: &str) {
    let report = super::snapshot::validate(home, settings, None);
    for e in report.only(crate::config::check::Severity::Error) {
        tracing::warn!(
            "as user {user}, {e}: SIGHUP will refuse to reload until this is fixed (make the file readable by {user})"
        );
    }
}

/// What a listener's clients start with and must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Plain SMTP (STARTTLS if a certificate is loaded).
    Plain,
    /// A PROXY header from a trusted proxy, then SMTP.
    Proxy,
    /// A TLS handshake, then SMTP with AUTH required (port 465, RFC 8314).
    Tls,
    /// A TLS handshake, then SMTP without the AUTH requirement (MX over TLS).
    TlsMx,
    /// Submission: AUTH required before MAIL.
    Submission,
}

/// A listening socket and its kind.
struct Listener {
    socket: std::net::TcpListener,
    kind: Kind,
}

/// Sockets passed by systemd (plain SMTP), then `listen` (unless only the
/// default and systemd passed some), then `listen-proxy`. Must run before
/// any thread starts (socket activation reads and clears the environment).
fn open_listeners(settings: &DaemonSettings) -> Result<Vec<Listener>, String> {
    let mut out = Vec::new();
    let activated = super::systemd::listen_fds().map_err(|e| format!("socket activation: {e}"))?;
    let activated_any = !activated.is_empty();
    for socket in activated {
        socket
            .set_nonblocking(true)
            .map_err(|e| format!("socket activation: {e}"))?;
        out.push(Listener {
            socket,
            kind: Kind::Plain,
        });
    }
    let plain: &[SocketAddr] = if activated_any && settings.listen_is_default {
        &[]
    } else {
        &settings.listen
    };
    for (addrs, kind) in [
        (plain, Kind::Plain),
        (&settings.listen_proxy[..], Kind::Proxy),
        (&settings.listen_tls[..], Kind::Tls),
        (&settings.listen_tls_mx[..], Kind::TlsMx),
        (&settings.listen_submission[..], Kind::Submission),
    ] {
        for addr in addrs {
            let socket = bind(*addr).map_err(|e| listen_error(*addr, &e))?;
            out.push(Listener { socket, kind });
        }
    }
    Ok(out)
}

/// Why a listener could not be bound. A refused port (one below 1024 for
/// a user without root) says how to get one.
fn listen_error(addr: SocketAddr, e: &std::io::Error) -> String {
    let hint = match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            ": ports below 1024 need root: start as root with --user NAME (the \
             listeners are bound first, then the server runs as NAME), or let \
             systemd pass the socket (socket activation)"
        }
        _ => "",
    };
    format!("cannot listen on {addr}: {e}{hint}")
}

/// Binds a listening socket (SO_REUSEADDR, backlog 1024, non-blocking).
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use std::os::fd::AsRawFd;
    let listener = std::net::TcpListener::bind(addr)?;
    // SAFETY: listen() on our own listening socket only changes its backlog.
    if unsafe { libc::listen(listener.as_raw_fd(), 1024) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    listener.set_nonblocking(true)?;
    Ok(listener)
}

async fn serve(
    home: PathBuf,
    settings: DaemonSettings,
    snapshot: Snapshot,
    listeners: Vec<Listener>,
    metrics: Option<std::net::TcpListener>,
) -> i32 {
    let mut base_env = SessionEnv::from_process();
    for name in PER_CONNECTION {
        base_env.remove(name);
    }
    for name in SESSION_POLICY {
        if base_env.contains(name) {
            tracing::warn!("{name} is set in the daemon's environment: it applies to every client");
        }
    }
    // systemd's notification socket is the daemon's, not the plugins'.
    base_env.remove("NOTIFY_SOCKET");
    let base_env = base_env.flattened();
    let dns = match settings.reverse_dns {
        false => None,
        true => match super::dns::ReverseDns::new(
            settings
                .dns_server
                .or(snapshot.config.control.checks.dns_server),
            settings.dns_timeout,
        ) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::error!("reverse DNS: {e}");
                return EXIT_CONFIG;
            }
        },
    };
    let settings_auth = settings.tls_auth.auth.clone().map(Arc::new);
    let (snap_tx, snap_rx) = watch::channel(Arc::new(snapshot));
    let (state_tx, state_rx) = watch::channel(RunState::Running);
    if let Some(l) = metrics {
        match TcpListener::from_std(l) {
            Ok(l) => {
                tracing::info!(addr = ?l.local_addr().ok(), "metrics at /metrics");
                tokio::spawn(super::metrics_http::serve(l, state_rx.clone()));
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot serve metrics");
                return EXIT_LISTEN;
            }
        }
    }
    let shared = Arc::new(Shared {
        conn_slots: Arc::new(Semaphore::new(settings.max_connections)),
        per_ip: Arc::new(Mutex::new(HashMap::new())),
        plugin_slots: Arc::new(Semaphore::new(settings.max_plugins)),
        settings,
        base_env,
        snapshots: snap_rx,
        state: state_rx,
        tracker: TaskTracker::new(),
        counter: AtomicU64::new(0),
        dns,
        auth: settings_auth,
    });
    let mut accept_tasks = Vec::new();
    for l in listeners {
        let listener = match TcpListener::from_std(l.socket) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, "cannot use listener");
                return EXIT_LISTEN;
            }
        };
        tracing::info!(
            addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            kind = ?l.kind,
            "listening"
        );
        accept_tasks.push(tokio::spawn(accept_loop(listener, l.kind, shared.clone())));
    }
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return 1;
        }
    };
    notify("READY=1");
    // From here on SIGHUP reloads (before, it would end the process).
    tracing::info!("ready");
    wait_for_stop(signals, &home, &shared.settings, &snap_tx).await;
    notify("STOPPING=1");
    tracing::info!(
        sessions = shared.tracker.len(),
        "shutting down: no new connections"
    );
    let _ = state_tx.send(RunState::Draining);
    for t in accept_tasks {
        let _ = t.await;
    }
    shared.tracker.close();
    let deadline = shared.settings.shutdown_deadline;
    if tokio::time::timeout(deadline, shared.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            sessions = shared.tracker.len(),
            "shutdown deadline passed: closing sessions"
        );
        let _ = state_tx.send(RunState::Stopping);
        let _ = tokio::time::timeout(Duration::from_secs(5), shared.tracker.wait()).await;
    }
    crate::queue::forward::pool::close_idle().await;
    tracing::info!("stopped");
    0
}

/// The signals the daemon handles, installed before it reports ready.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// Handles SIGHUP (reload) until SIGTERM or SIGINT arrives.
async fn wait_for_stop(
    mut signals: Signals,
    home: &Path,
    settings: &DaemonSettings,
    snapshots: &watch::Sender<Arc<Snapshot>>,
) {
    loop {
        tokio::select! {
            _ = signals.term.recv() => return,
            _ = signals.int.recv() => return,
            _ = signals.hup.recv() => {
                notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", super::systemd::monotonic_usec()));
                // A reload stuck on a file (a hung mount) must not keep
                // the daemon from stopping.
                tokio::select! {
                    () = reload(home, settings, snapshots) => notify("READY=1"),
                    _ = signals.term.recv() => return,
                    _ = signals.int.recv() => return,
                }
            }
        }
    }
}

/// Tells systemd (if it is listening) about a state change.
fn notify(state: &str) {
    if let Err(e) = super::systemd::notify(state) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Loads a new snapshot (reading files on the blocking pool, not on the
/// runtime); keeps the old one if the validator finds any error, and logs
/// every one of them.
async fn reload(home: &Path, settings: &DaemonSettings, snapshots: &watch::Sender<Arc<Snapshot>>) {
    let (home, settings) = (home.to_path_buf(), settings.clone());
    let loaded = tokio::task::spawn_blocking(move || Snapshot::load(&home, &settings)).await;
    let loaded = match loaded {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(
                "reload refused, keeping the running configuration: reload failed: {e}"
            );
            return;
        }
    };
    match loaded {
        Ok((s, warnings)) => {
            for w in warnings {
                tracing::warn!("{w}");
            }
            snapshots.send_replace(Arc::new(s));
            tracing::info!("reloaded configuration");
        }
        Err(errors) => {
            for e in errors {
                tracing::error!("reload refused, keeping the running configuration: {e}");
            }
        }
    }
}

/// Accepts connections until the daemon stops, backing off on errors
/// (e.g. EMFILE) instead of spinning.
async fn accept_loop(listener: TcpListener, kind: Kind, shared: Arc<Shared>) {
    let mut state = shared.state.clone();
    let mut backoff = Duration::from_millis(5);
    loop {
        tokio::select! {
            changed = state.changed() => {
                if changed.is_err() || *state.borrow() != RunState::Running {
                    return;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(5);
                    admit(stream, peer, kind, &shared);
                }
                Err(e) => {
                    tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            },
        }
    }
}

/// The key the per-address limit counts: the address, or its /64 for
/// IPv6 (one host usually has a whole /64).
fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::V6(o.into())
        }
        v4 => v4,
    }
}

/// A connection counted against its client address; released on drop.
struct PerIpSlot {
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PerIpSlot {
    /// Takes a slot for `ip` unless it already has `max`.
    fn take(map: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, max: usize) -> Option<PerIpSlot> {
        let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PerIpSlot {
            map: map.clone(),
            ip,
        })
    }
}

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// Applies the global connection limit, then starts the connection task.
fn admit(stream: TcpStream, peer: SocketAddr, kind: Kind, shared: &Arc<Shared>) {
    let snapshot = shared.snapshots.borrow().clone();
    let Ok(conn): Result<OwnedSemaphorePermit, _> = shared.conn_slots.clone().try_acquire_owned()
    else {
        tracing::warn!(client = %peer.ip().to_canonical(), "connection limit reached; refused");
        crate::metrics::connection_refused("limit");
        let me = String::from_utf8_lossy(&snapshot.config.control.greeting).into_owned();
        refuse(
            &stream,
            &format!("421 {me} too many connections, try again later (#4.3.2)"),
        );
        return;
    };
    let id = shared.counter.fetch_add(1, Ordering::Relaxed).to_string();
    let shared2 = shared.clone();
    let counted = crate::metrics::get();
    if let Some(m) = counted {
        m.connections.inc();
        m.connections_open.inc();
    }
    shared.tracker.spawn(async move {
        connection(stream, peer, kind, &shared2, snapshot, id, conn).await;
        if let Some(m) = counted {
            m.connections_open.dec();
        }
    });
}

/// Sends one line without waiting (the socket buffer of a new connection
/// is empty) and closes.
fn refuse(stream: &TcpStream, line: &str) {
    let _ = stream.try_write(format!("{line}\r\n").as_bytes());
}

/// How long a trusted proxy has to send its header.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs one connection: PROXY header, per-address limit, access rule,
/// environment, session. `conn` is its place under the global limit.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    kind: Kind,
    shared: &Shared,
    snapshot: Arc<Snapshot>,
    id: String,
    conn: OwnedSemaphorePermit,
) {
    let started = Instant::now();
    let _ = stream.set_nodelay(true);
    let Ok(mut local) = stream.local_addr() else {
        return;
    };
    let mut peer = peer;
    // A LOCAL/UNKNOWN header: the client's address is not known, so only
    // the rule for everyone applies (never the proxy's own rule).
    let mut proxied_local = false;
    if kind == Kind::Proxy {
        let from = peer.ip().to_canonical();
        if !shared.settings.proxy_from.iter().any(|n| n.contains(from)) {
            tracing::warn!(session = %id, client = %from, "PROXY listener: client is not a trusted proxy; closed");
            return;
        }
        let header = tokio::select! {
            h = super::proxy::read_header(&mut stream, PROXY_HEADER_TIMEOUT) => h,
            _ = stopping(shared.state.clone()) => return,
        };
        match header {
            Ok(super::proxy::ProxiedAddrs::Tcp {
                source,
                destination,
            }) => {
                peer = source;
                local = destination;
            }
            Ok(super::proxy::ProxiedAddrs::Local) => proxied_local = true,
            Err(e) => {
                tracing::warn!(session = %id, proxy = %from, error = %e, "bad PROXY header; closed");
                return;
            }
        }
    }
    let ip = peer.ip().to_canonical();
    let me = String::from_utf8_lossy(&snapshot.config.control.greeting).into_owned();
    let Some(_slot) = PerIpSlot::take(&shared.per_ip, limit_key(ip), shared.settings.max_per_ip)
    else {
        tracing::warn!(session = %id, client = %ip, "per-address connection limit reached; refused");
        crate::metrics::connection_refused("per-address");
        refuse(
            &stream,
            &format!("421 {me} too many connections from your address (#4.3.2)"),
        );
        // The global place is given back before the client sees the
        // connection close, so its next connection finds it free.
        drop(conn);
        drop(stream);
        return;
    };
    let remote_host = match &shared.dns {
        Some(dns) => tokio::select! {
            name = dns.lookup(ip) => name,
            _ = stopping(shared.state.clone()) => return,
        },
        None => None,
    };
    let rule = match proxied_local {
        true => snapshot.rules.find_for_unknown(),
        false => snapshot.rules.find(ip, remote_host.as_deref()),
    };
    if let Some(rule) = rule {
        if !rule.allow {
            tracing::info!(session = %id, client = %ip, rule_line = rule.lineno, "denied by rule");
            crate::metrics::connection_refused("rule");
            return;
        }
    }
    let mut env = connection_env(&shared.base_env, local, peer);
    let local_name = shared
        .settings
        .local_name
        .as_deref()
        .map(|n| n.as_bytes().to_vec())
        .or_else(|| snapshot.config.control.me.clone());
    if let Some(name) = local_name {
        env.set("TCPLOCALHOST", name);
    }
    if let Some(host) = &remote_host {
        env.set("TCPREMOTEHOST", host);
    }
    if let Some(rule) = rule {
        for (k, v) in &rule.vars {
            env.set(k, v);
        }
    }
    let controls = SessionControls {
        plugin_slots: Some(shared.plugin_slots.clone()),
        shutdown: Some(shared.state.clone()),
        lifetime: Some(shared.settings.session_lifetime),
        greeting_delay: shared.settings.greeting_delay,
        implicit_tls: matches!(kind, Kind::Tls | Kind::TlsMx),
        require_tls: shared.settings.tls_auth.require_tls,
        auth: shared.auth.clone(),
        require_auth: matches!(kind, Kind::Submission | Kind::Tls),
        dns_server: shared.settings.dns_server,
    };
    let code = Session::new(Box::new(stream), snapshot.config.clone(), env, id.clone())
        .with_controls(controls)
        .run()
        .await;
    tracing::info!(
        session = %id,
        client = %ip,
        port = peer.port(),
        code,
        ms = started.elapsed().as_millis() as u64,
        "connection closed"
    );
}

/// Resolves once the daemon is no longer running normally (used before a
/// session starts, when there is no transaction to let finish).
async fn stopping(mut state: watch::Receiver<RunState>) {
    while *state.borrow_and_update() == RunState::Running {
        if state.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
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
