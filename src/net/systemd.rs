//! systemd integration without libsystemd: socket activation
//! ([`listen_fds`], the `sd_listen_fds(3)` protocol) and service state
//! notification ([`notify`], the `sd_notify(3)` protocol). Both work only
//! with environment variables, file descriptors and a datagram socket, so
//! they need nothing beyond `libc` and std.

use std::env;
use std::ffi::OsStr;
use std::io;
use std::mem;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::path::Path;

/// The first descriptor passed by socket activation (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// The variables of the socket-activation protocol.
const ACTIVATION_VARS: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// Listening sockets passed by systemd socket activation.
///
/// systemd (or `systemd-socket-activate`, or any compatible supervisor)
/// passes `$LISTEN_FDS` descriptors starting at fd 3 to the process whose
/// id is `$LISTEN_PID`; `$LISTEN_FDNAMES` (colon-separated, from
/// `FileDescriptorName=`) is only used here to label the log lines and
/// error messages.
///
/// Returns an empty `Vec` when the process is not socket-activated: either
/// variable absent, or `$LISTEN_PID` naming another process (variables
/// inherited from a parent that did not consume them). A malformed
/// variable is an `InvalidData` error. Every passed descriptor must be a
/// listening TCP/IP stream socket (checked with `getsockopt` `SO_TYPE` and
/// `SO_ACCEPTCONN`, and the address family with `getsockname`); otherwise
/// the error names the descriptor, and no descriptor is taken or closed.
///
/// The returned listeners own the descriptors, have `FD_CLOEXEC` set (so
/// plugins do not inherit them) and are in whatever blocking mode the
/// supervisor passed them: call `set_nonblocking(true)` before handing one
/// to `tokio::net::TcpListener::from_std`.
///
/// The three variables are always removed from the process environment
/// (as `sd_listen_fds` does when asked to unset them), so child processes
/// do not inherit them and a second call returns an empty `Vec` instead of
/// claiming the same descriptors twice. Because changing the environment is not thread-safe
/// (it races with any `getenv` in another thread, including inside the C
/// library), **this must be called before any thread is spawned**, i.e. at
/// the start of `main`, before the tokio runtime is built.
pub fn listen_fds() -> io::Result<Vec<TcpListener>> {
    let pid = env::var_os("LISTEN_PID");
    let fds = env::var_os("LISTEN_FDS");
    let names = env::var_os("LISTEN_FDNAMES");
    for var in ACTIVATION_VARS {
        env::remove_var(var);
    }
    match parse_activation(
        pid.as_deref(),
        fds.as_deref(),
        names.as_deref(),
        std::process::id(),
    )? {
        Some(activation) => claim(&activation),
        None => Ok(Vec::new()),
    }
}

/// What the activation variables say, once they are known to be for us.
#[derive(Debug, PartialEq, Eq)]
struct Activation {
    /// Number of descriptors, from [`LISTEN_FDS_START`] on.
    count: usize,
    /// One name per descriptor, when `$LISTEN_FDNAMES` has exactly that many.
    names: Option<Vec<String>>,
}

impl Activation {
    /// "fd N" or `fd N ("name")`, for messages.
    fn label(&self, index: usize) -> String {
        let fd = LISTEN_FDS_START + index as RawFd;
        match self.names.as_ref().map(|n| n[index].as_str()) {
            Some(name) if !name.is_empty() => format!("fd {fd} ({name:?})"),
            _ => format!("fd {fd}"),
        }
    }
}

/// Interprets the activation variables for the process `my_pid`, in the
/// order `sd_listen_fds` does: `None` when not activated (or activated for
/// another process), an error when a value is malformed.
fn parse_activation(
    pid: Option<&OsStr>,
    fds: Option<&OsStr>,
    names: Option<&OsStr>,
    my_pid: u32,
) -> io::Result<Option<Activation>> {
    let Some(pid) = pid else { return Ok(None) };
    let pid = utf8("LISTEN_PID", pid)?;
    let pid: u32 = pid
        .parse()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| invalid_data(format!("LISTEN_PID={pid:?} is not a process id")))?;
    if pid != my_pid {
        tracing::debug!("LISTEN_PID={pid} is not this process ({my_pid}): not socket-activated");
        return Ok(None);
    }
    let Some(fds) = fds else { return Ok(None) };
    let fds = utf8("LISTEN_FDS", fds)?;
    // The last descriptor must still be a valid fd number.
    let max = (libc::c_int::MAX - LISTEN_FDS_START) as usize;
    let count: usize = fds
        .parse()
        .ok()
        .filter(|&n| n <= max)
        .ok_or_else(|| invalid_data(format!("LISTEN_FDS={fds:?} is not a descriptor count")))?;
    let names = match names.map(|n| n.to_str()) {
        None => None,
        Some(Some(names)) if names.split(':').count() == count => {
            Some(names.split(':').map(str::to_owned).collect())
        }
        Some(names) => {
            tracing::debug!(
                "LISTEN_FDNAMES={names:?} does not name {count} descriptors; names ignored"
            );
            None
        }
    };
    Ok(Some(Activation { count, names }))
}

/// Checks every descriptor of `activation`, then takes ownership of them.
fn claim(activation: &Activation) -> io::Result<Vec<TcpListener>> {
    let fds: Vec<RawFd> = (0..activation.count)
        .map(|i| LISTEN_FDS_START + i as RawFd)
        .collect();
    // Check them all before taking any, so an error closes nothing.
    for (i, &fd) in fds.iter().enumerate() {
        check_listener(fd)
            .and_then(|()| set_cloexec(fd))
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("socket activation: {}: {e}", activation.label(i)),
                )
            })?;
    }
    let listeners: Vec<TcpListener> = fds
        .iter()
        // SAFETY: the socket-activation protocol hands descriptors
        // 3..3+LISTEN_FDS to the process named by LISTEN_PID, which we
        // checked is us; each was just checked to be an open listening
        // socket. Nothing else in the process claims them, and the caller
        // removed the variables first, so no second call takes them again.
        .map(|&fd| unsafe { TcpListener::from_raw_fd(fd) })
        .collect();
    for (i, listener) in listeners.iter().enumerate() {
        match listener.local_addr() {
            Ok(addr) => tracing::info!(
                "socket activation: {} listening on {addr}",
                activation.label(i)
            ),
            Err(e) => tracing::info!("socket activation: {} ({e})", activation.label(i)),
        }
    }
    Ok(listeners)
}

/// Whether `fd` is a listening TCP/IP stream socket; the error says why not.
fn check_listener(fd: RawFd) -> io::Result<()> {
    let kind = getsockopt_int(fd, libc::SO_TYPE)
        .map_err(|e| io::Error::new(e.kind(), format!("not a usable socket: {e}")))?;
    if kind != libc::SOCK_STREAM {
        return Err(invalid_input(format!(
            "not a stream socket (SO_TYPE {kind})"
        )));
    }
    if getsockopt_int(fd, libc::SO_ACCEPTCONN)? == 0 {
        return Err(invalid_input("a stream socket, but not listening".into()));
    }
    let family = socket_family(fd)?;
    if family != libc::AF_INET && family != libc::AF_INET6 {
        return Err(invalid_input(format!(
            "a listening socket, but not TCP/IP (address family {family})"
        )));
    }
    Ok(())
}

/// An integer `SOL_SOCKET` option of `fd`.
fn getsockopt_int(fd: RawFd, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are a writable c_int-sized buffer and its
    // length, as getsockopt requires. getsockopt only reads the socket's
    // state; a descriptor that is not an open socket makes it fail.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// The address family of socket `fd`.
fn socket_family(fd: RawFd) -> io::Result<libc::c_int> {
    // SAFETY: sockaddr_storage is a plain C struct for which all-zero bytes
    // are a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `storage` is writable and `len` is its size, so getsockname
    // writes at most that many bytes into it.
    let r = unsafe {
        libc::getsockname(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(libc::c_int::from(storage.ss_family))
}

/// Sets `FD_CLOEXEC` on `fd`.
fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFD takes no argument and only reads descriptor flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags == -1 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::FD_CLOEXEC == 0 {
        // SAFETY: F_SETFD with an int argument only changes descriptor flags.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sends a state string to the service manager, as `sd_notify(3)` does:
/// `"READY=1"`, `"STOPPING=1"`, `"RELOADING=1\nMONOTONIC_USEC=…"` (see
/// [`monotonic_usec`]), `"STATUS=…"`, several separated by newlines.
///
/// The destination is `$NOTIFY_SOCKET`: an absolute path, or an abstract
/// socket name written with a leading `@` (Linux). Returns `Ok(false)`
/// without doing anything when the variable is unset or empty (not running
/// under systemd, or the unit is not `Type=notify`), `Ok(true)` once the
/// datagram is sent, and an error naming the socket when sending fails or
/// the address is of an unsupported form (such as systemd's `vsock:`).
///
/// `$NOTIFY_SOCKET` is left in the environment, so that later states can be
/// sent too; systemd only accepts notifications from the main process by
/// default (`NotifyAccess=main`), so children inheriting it is harmless.
pub fn notify(state: &str) -> io::Result<bool> {
    match env::var_os("NOTIFY_SOCKET") {
        Some(socket) if !socket.is_empty() => notify_to(&socket, state).map(|()| true),
        _ => Ok(false),
    }
}

/// Sends `state` as one datagram to the notification socket `socket`
/// (the value of `$NOTIFY_SOCKET`).
fn notify_to(socket: &OsStr, state: &str) -> io::Result<()> {
    let fail = |e: io::Error| io::Error::new(e.kind(), format!("NOTIFY_SOCKET={socket:?}: {e}"));
    if state.is_empty() {
        return Err(fail(invalid_input("empty state".into())));
    }
    let addr = notify_addr(socket).map_err(fail)?;
    let sock = UnixDatagram::unbound().map_err(fail)?;
    let sent = sock.send_to_addr(state.as_bytes(), &addr).map_err(fail)?;
    if sent != state.len() {
        return Err(fail(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", state.len()),
        )));
    }
    Ok(())
}

/// The address `$NOTIFY_SOCKET` names.
fn notify_addr(socket: &OsStr) -> io::Result<UnixAddr> {
    match socket.as_bytes() {
        [b'/', ..] => UnixAddr::from_pathname(Path::new(socket)),
        [b'@', name @ ..] => abstract_addr(name),
        _ => Err(invalid_input(
            "expected an absolute path or an @abstract socket name".into(),
        )),
    }
}

/// The abstract socket address `name` (without the leading NUL).
#[cfg(target_os = "linux")]
fn abstract_addr(name: &[u8]) -> io::Result<UnixAddr> {
    use std::os::linux::net::SocketAddrExt;
    UnixAddr::from_abstract_name(name)
}

/// Abstract sockets only exist on Linux.
#[cfg(not(target_os = "linux"))]
fn abstract_addr(_name: &[u8]) -> io::Result<UnixAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets are Linux-only",
    ))
}

/// `CLOCK_MONOTONIC` in microseconds, the value systemd expects in
/// `MONOTONIC_USEC=` (sent with `RELOADING=1`, for `Type=notify-reload`).
pub fn monotonic_usec() -> u64 {
    // SAFETY: timespec is a plain C struct for which all-zero bytes are a
    // valid value.
    let mut ts: libc::timespec = unsafe { mem::zeroed() };
    // SAFETY: `ts` is a writable timespec; CLOCK_MONOTONIC is always
    // available, so the call cannot fail with these arguments.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs * 1_000_000 + nanos / 1_000
}

/// The value of activation variable `var`, which must be UTF-8.
fn utf8<'a>(var: &str, value: &'a OsStr) -> io::Result<&'a str> {
    value
        .to_str()
        .ok_or_else(|| invalid_data(format!("{var}={value:?} is not UTF-8")))
}

/// An `InvalidData` error (a malformed variable).
fn invalid_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// An `InvalidInput` error (an unusable descriptor or address).
fn invalid_input(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpStream, UdpSocket};
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    use std::path::PathBuf;
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Set in a child process: the scenario [`child_entry`] runs.
    const CHILD_VAR: &str = "SPP_SYSTEMD_TEST_CHILD";

    fn os(s: &str) -> Option<&OsStr> {
        Some(OsStr::new(s))
    }

    /// A fresh, empty directory under the system temp dir.
    fn temp_dir() -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = env::temp_dir().join(format!(
            "spp-systemd-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// How the child's `LISTEN_PID` is set.
    enum Pid {
        /// The child's own pid (`$$` of the shell that execs it).
        Own,
        /// Another process: this one.
        Parent,
    }

    /// Runs the scenario `scenario` of [`child_entry`] in a new process of
    /// this test binary, with `fds` as its descriptors 3, 4, …, `env` added
    /// to its environment, and `LISTEN_PID` set as `pid` says. Panics with
    /// the child's output unless its one test passed.
    ///
    /// `LISTEN_PID` has to be the pid of the process that finally runs, which
    /// the parent only learns after the fork; calling `setenv` between fork
    /// and exec is not async-signal-safe (it allocates) in a multi-threaded
    /// parent. So the child is started through `/bin/sh`, which exports its
    /// own `$$` and then `exec`s the test binary, which keeps that pid.
    fn run_child(scenario: &str, fds: &[RawFd], env: &[(&str, String)], pid: Pid) {
        let script = match pid {
            Pid::Own => r#"LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@""#,
            Pid::Parent => r#"exec "$0" "$@""#,
        };
        let module = module_path!();
        let module = module.split_once("::").map_or(module, |(_, rest)| rest);
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(script)
            .arg(std::env::current_exe().unwrap())
            .arg("--exact")
            .arg(format!("{module}::child_entry"))
            .arg("--include-ignored")
            .arg("--test-threads=1")
            .arg("--nocapture");
        for var in ACTIVATION_VARS.iter().chain(&["NOTIFY_SOCKET"]) {
            cmd.env_remove(var);
        }
        cmd.env(CHILD_VAR, scenario);
        if let Pid::Parent = pid {
            cmd.env("LISTEN_PID", std::process::id().to_string());
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let fds = fds.to_vec();
        assert!(fds.len() <= 8);
        // SAFETY: the closure only makes async-signal-safe calls (fcntl,
        // dup2, close) and does not allocate: `fds` was built before the fork.
        unsafe {
            cmd.pre_exec(move || {
                // Move every source above the targets first, so that a dup2
                // onto 3, 4, … cannot overwrite a source not yet moved. dup2
                // from a different fd also clears FD_CLOEXEC on the target.
                let mut high = [0; 8];
                for (i, &fd) in fds.iter().enumerate() {
                    high[i] = libc::fcntl(fd, libc::F_DUPFD, 64);
                    if high[i] == -1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                for (i, &fd) in high[..fds.len()].iter().enumerate() {
                    if libc::dup2(fd, LISTEN_FDS_START + i as RawFd) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                    libc::close(fd);
                }
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "child scenario {scenario} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The child side of the process tests, run only by [`run_child`]
    /// (ignored in a normal run).
    #[test]
    #[ignore = "run by run_child in a child process"]
    fn child_entry() {
        let Ok(scenario) = env::var(CHILD_VAR) else {
            eprintln!("SKIP: the child side of a process test, run by run_child only");
            return;
        };
        let fd_flags = |fd: RawFd| {
            // SAFETY: F_GETFD only reads descriptor flags.
            unsafe { libc::fcntl(fd, libc::F_GETFD) }
        };
        match scenario.as_str() {
            "listen" => {
                let want = env::var("SPP_TEST_ADDRS").unwrap();
                let listeners = listen_fds().unwrap();
                let got: Vec<String> = listeners
                    .iter()
                    .map(|l| l.local_addr().unwrap().to_string())
                    .collect();
                assert_eq!(got.join(" "), want);
                for var in ACTIVATION_VARS {
                    assert!(env::var_os(var).is_none(), "{var} still set");
                }
                for (i, l) in listeners.iter().enumerate() {
                    assert_eq!(l.as_raw_fd(), LISTEN_FDS_START + i as RawFd);
                    assert_eq!(fd_flags(l.as_raw_fd()) & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
                }
                // The listener works: a connection to it is accepted here.
                let client = TcpStream::connect(listeners[1].local_addr().unwrap()).unwrap();
                let (_, peer) = listeners[1].accept().unwrap();
                assert_eq!(peer, client.local_addr().unwrap());
                // The variables are gone: a second call claims nothing.
                assert!(listen_fds().unwrap().is_empty());
            }
            "other-pid" => {
                assert!(listen_fds().unwrap().is_empty());
                for var in ACTIVATION_VARS {
                    assert!(env::var_os(var).is_none(), "{var} still set");
                }
                // fd 3 was left alone: still open, flags untouched.
                assert_eq!(fd_flags(3), 0);
            }
            "bad" => {
                let want = env::var("SPP_TEST_WANT").unwrap();
                let err = listen_fds().unwrap_err();
                let msg = err.to_string();
                for part in want.split('|') {
                    assert!(msg.contains(part), "{msg:?} lacks {part:?}");
                }
                // fd 3 (a good listener in these scenarios) was not closed.
                assert_ne!(fd_flags(3), -1);
            }
            "notify" => {
                assert!(notify("READY=1").unwrap());
                assert!(notify("STATUS=up").unwrap());
                env::remove_var("NOTIFY_SOCKET");
                assert!(!notify("STOPPING=1").unwrap());
            }
            other => panic!("unknown scenario {other}"),
        }
    }

    fn local_listener() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").unwrap()
    }

    #[test]
    fn activated_listeners_are_returned_in_order() {
        let a = local_listener();
        let b = local_listener();
        let addrs = format!("{} {}", a.local_addr().unwrap(), b.local_addr().unwrap());
        run_child(
            "listen",
            &[a.as_raw_fd(), b.as_raw_fd()],
            &[
                ("LISTEN_FDS", "2".into()),
                ("LISTEN_FDNAMES", "smtp:submission".into()),
                ("SPP_TEST_ADDRS", addrs),
            ],
            Pid::Own,
        );
    }

    #[test]
    fn listen_pid_of_another_process_is_not_activation() {
        let a = local_listener();
        run_child(
            "other-pid",
            &[a.as_raw_fd()],
            &[("LISTEN_FDS", "1".into())],
            Pid::Parent,
        );
    }

    #[test]
    fn a_udp_socket_is_refused_by_fd_and_name() {
        let a = local_listener();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        run_child(
            "bad",
            &[a.as_raw_fd(), udp.as_raw_fd()],
            &[
                ("LISTEN_FDS", "2".into()),
                ("LISTEN_FDNAMES", "smtp:dns".into()),
                (
                    "SPP_TEST_WANT",
                    r#"fd 4 ("dns")|not a stream socket"#.into(),
                ),
            ],
            Pid::Own,
        );
    }

    #[test]
    fn a_connected_stream_is_refused_as_not_listening() {
        let a = local_listener();
        let conn = TcpStream::connect(a.local_addr().unwrap()).unwrap();
        run_child(
            "bad",
            &[a.as_raw_fd(), conn.as_raw_fd()],
            &[
                ("LISTEN_FDS", "2".into()),
                ("SPP_TEST_WANT", "fd 4: |not listening".into()),
            ],
            Pid::Own,
        );
    }

    #[test]
    fn a_file_or_a_missing_descriptor_is_refused() {
        let a = local_listener();
        let file = std::fs::File::open("/dev/null").unwrap();
        run_child(
            "bad",
            &[a.as_raw_fd(), file.as_raw_fd()],
            &[
                ("LISTEN_FDS", "2".into()),
                ("SPP_TEST_WANT", "fd 4: not a usable socket".into()),
            ],
            Pid::Own,
        );
        // Three announced, two passed: fd 5 is not open (or not ours).
        let b = local_listener();
        run_child(
            "bad",
            &[a.as_raw_fd(), b.as_raw_fd()],
            &[
                ("LISTEN_FDS", "3".into()),
                ("SPP_TEST_WANT", "fd 5: not a usable socket".into()),
            ],
            Pid::Own,
        );
    }

    #[test]
    fn activation_variables_are_parsed_like_sd_listen_fds() {
        let me = 4242;
        assert_eq!(parse_activation(None, None, None, me).unwrap(), None);
        assert_eq!(parse_activation(None, os("2"), None, me).unwrap(), None);
        assert_eq!(parse_activation(os("4242"), None, None, me).unwrap(), None);
        assert_eq!(parse_activation(os("1"), os("2"), None, me).unwrap(), None);
        assert_eq!(
            parse_activation(os("4242"), os("2"), os("smtp:submission"), me).unwrap(),
            Some(Activation {
                count: 2,
                names: Some(vec!["smtp".into(), "submission".into()]),
            })
        );
        // Names that do not match the count are ignored.
        assert_eq!(
            parse_activation(os("4242"), os("2"), os("smtp"), me).unwrap(),
            Some(Activation {
                count: 2,
                names: None
            })
        );
        assert_eq!(
            parse_activation(os("4242"), os("0"), None, me).unwrap(),
            Some(Activation {
                count: 0,
                names: None
            })
        );
        for (pid, fds) in [
            ("x", "1"),
            ("0", "1"),
            ("-1", "1"),
            ("4242", "one"),
            ("4242", "-1"),
        ] {
            let err = parse_activation(os(pid), os(fds), None, me).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{pid} {fds}: {err}");
        }
        // Another process's malformed count is not our business.
        assert_eq!(
            parse_activation(os("1"), os("one"), None, me).unwrap(),
            None
        );
        assert!(parse_activation(os("4242"), os("99999999999"), None, me).is_err());
    }

    #[test]
    fn labels_name_the_descriptor() {
        let act = Activation {
            count: 2,
            names: Some(vec!["smtp".into(), String::new()]),
        };
        assert_eq!(act.label(0), r#"fd 3 ("smtp")"#);
        assert_eq!(act.label(1), "fd 4");
    }

    #[test]
    fn notify_uses_notify_socket_from_the_environment() {
        let dir = temp_dir();
        let path = dir.join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        run_child(
            "notify",
            &[],
            &[("NOTIFY_SOCKET", path.to_str().unwrap().into())],
            Pid::Own,
        );
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STATUS=up");
        server.set_nonblocking(true).unwrap();
        assert!(server.recv(&mut buf).is_err(), "nothing sent when unset");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn notify_to_a_path_sends_one_datagram() {
        let dir = temp_dir();
        let path = dir.join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let state = format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec());
        notify_to(path.as_os_str(), &state).unwrap();
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], state.as_bytes());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn notify_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("spp-systemd-test-{}", std::process::id());
        let addr = UnixAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn notify_to_errors_name_the_socket() {
        let err = notify_to(OsStr::new("relative/sock"), "READY=1").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("relative/sock"), "{err}");

        let dir = temp_dir();
        let missing = dir.join("missing");
        let err = notify_to(missing.as_os_str(), "READY=1").unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");

        let err = notify_to(missing.as_os_str(), "").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn monotonic_usec_advances() {
        let a = monotonic_usec();
        std::thread::sleep(Duration::from_millis(2));
        let b = monotonic_usec();
        assert!(a > 0 && b > a, "{a} {b}");
    }
}
