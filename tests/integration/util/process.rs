//! Running the real binary and real clients: `spp-smtpd stdio` on pipes,
//! under Debian's `tcpserver`, `spp-smtpd serve`, Python's smtplib, swaks.
//! Every child is bounded in time and stopped by PID.

use super::TestHome;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_spp-smtpd"))
}

/// What a finished process printed and returned.
#[derive(Debug)]
pub struct Finished {
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
    /// Exit status (-1 if killed by a signal).
    pub code: i32,
}

impl Finished {
    /// Stdout split into lines without CRLF.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .collect()
    }
}

/// Runs `cmd` with `input` on stdin, waiting at most `limit`.
pub fn run_with_input(cmd: Command, input: &[u8], limit: Duration) -> Finished {
    run_inner(cmd, input, false, limit)
}

/// Runs `cmd` with `input` on stdin and keeps stdin open (no EOF) until
/// the process exits, waiting at most `limit`.
pub fn run_keeping_stdin_open(cmd: Command, input: &[u8], limit: Duration) -> Finished {
    run_inner(cmd, input, true, limit)
}

fn run_inner(mut cmd: Command, input: &[u8], keep_open: bool, limit: Duration) -> Finished {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // The writer thread hands stdin back when it must stay open; it is
    // dropped only after the child exited.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
        keep_open.then_some(stdin)
    });
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let ereader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let code = wait_bounded(&mut child, limit);
    drop(writer.join());
    Finished {
        stdout: String::from_utf8_lossy(&reader.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&ereader.join().unwrap()).into_owned(),
        code,
    }
}

/// Waits for `child`, killing it (and failing the test) after `limit`.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} did not finish within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `spp-smtpd --home HOME stdio` with a cleared environment plus PATH and
/// `env`, fed `input` at once (pipelined), as tcpserver would run it.
pub fn stdio(home: &TestHome, env: &[(&str, &str)], input: &[u8]) -> Finished {
    let mut cmd = Command::new(bin());
    cmd.arg("--home").arg(home.dir()).arg("stdio").env_clear();
    cmd.env(
        "PATH",
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
    );
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_with_input(cmd, input, Duration::from_secs(60))
}

/// `spp-smtpd --home HOME ARGS...` with nothing on stdin, for commands that
/// finish (`check`, a `serve` that must refuse to start); bounded to 30 s.
pub fn run_spp(home: &TestHome, args: &[&str]) -> Finished {
    let mut cmd = Command::new(bin());
    cmd.arg("--home").arg(home.dir()).args(args);
    run_with_input(cmd, b"", Duration::from_secs(30))
}

/// A free TCP port on 127.0.0.1 (bound and released, so another process
/// may take it before it is used: the daemon gets its socket passed
/// instead, see [`Server::daemon_with`]; tcpserver cannot take one).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, child: &mut Child) {
    if let Err(status) = listening(port, child) {
        panic!("server exited early: {status}");
    }
}

/// Waits (bounded) until 127.0.0.1:`port` accepts connections while
/// `child` still runs; `Err` with its status if it exited first.
fn listening(port: u16, child: &mut Child) -> Result<(), std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let accepted = TcpStream::connect(("127.0.0.1", port)).is_ok();
        if let Ok(Some(status)) = child.try_wait() {
            return Err(status);
        }
        if accepted {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listening on port {port}");
}

/// Waits (bounded) until `child` sends `READY=1` to `notify`.
pub fn wait_for_ready(notify: &UnixDatagram, child: &mut Child) {
    notify
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        if let Ok(n) = notify.recv(&mut buf) {
            if buf[..n].split(|&b| b == b'\n').any(|l| l == b"READY=1") {
                return;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("server exited early: {status}");
        }
    }
    panic!("the server did not report READY=1");
}

/// A server process listening on loopback; stopped (by PID) when dropped.
pub struct Server {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    /// The daemon's `NOTIFY_SOCKET`, kept open so its later reports
    /// (reload, stop) are received rather than logged as failures.
    _notify: Option<UnixDatagram>,
}

impl Server {
    /// `tcpserver ... spp-smtpd --home HOME stdio ARGS`. tcpserver binds
    /// the port itself, so one chosen by [`free_port`] may be taken by
    /// another process first: tcpserver then exits, and another port is
    /// tried.
    pub fn tcpserver_with(home: &TestHome, env: &[(&str, &str)], args: &[&str]) -> Server {
        let log_path = home.dir().join("daemon.log");
        for _ in 0..5 {
            let port = free_port();
            let mut cmd = Command::new("tcpserver");
            cmd.args(["-R", "-H", "-l", "0", "-c", "50", "-b", "50", "127.0.0.1"])
                .arg(port.to_string())
                .arg(bin())
                .arg("--home")
                .arg(home.dir())
                .arg("stdio")
                .args(args);
            Server::clean_env(&mut cmd, env);
            let log = std::fs::File::create(&log_path).unwrap();
            let mut child = cmd.stderr(log).spawn().expect("start tcpserver");
            match listening(port, &mut child) {
                Ok(()) => {
                    return Server {
                        child,
                        port,
                        _notify: None,
                    }
                }
                Err(status) => eprintln!("tcpserver on port {port} exited ({status}): retrying"),
            }
        }
        panic!(
            "tcpserver could not listen: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }

    /// `tcpserver -R -H -l 0 127.0.0.1 PORT spp-smtpd --home HOME stdio`.
    pub fn tcpserver(home: &TestHome, env: &[(&str, &str)]) -> Server {
        Server::tcpserver_with(home, env, &[])
    }

    /// `spp-smtpd --home HOME serve --listen 127.0.0.1:PORT`.
    pub fn daemon(home: &TestHome, env: &[(&str, &str)]) -> Server {
        Server::daemon_with(home, env, &[])
    }

    /// `serve` with extra arguments; its stderr goes to `HOME/daemon.log`.
    /// The listening socket is bound here and handed over as systemd
    /// does (`LISTEN_FDS`, socket activation), so no other process can
    /// take the port between choosing and binding it; the server is
    /// returned once it has told `NOTIFY_SOCKET` it is ready.
    pub fn daemon_with(home: &TestHome, env: &[(&str, &str)], args: &[&str]) -> Server {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let notify_path = home.dir().join(format!("notify-{port}.sock"));
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        // Writable for a server that switched to another user (--user).
        std::fs::set_permissions(&notify_path, std::fs::Permissions::from_mode(0o777)).unwrap();
        // LISTEN_PID must be the server's own PID: the shell sets it to
        // its own and execs the server in its place.
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg("LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"")
            .arg(bin())
            .arg("--home")
            .arg(home.dir())
            .arg("serve")
            .args(args);
        let fd = listener.as_raw_fd();
        // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork
        // and exec.
        unsafe {
            cmd.pre_exec(move || {
                let moved = match fd {
                    3 => libc::fcntl(3, libc::F_SETFD, 0),
                    _ => libc::dup2(fd, 3),
                };
                match moved {
                    -1 => Err(std::io::Error::last_os_error()),
                    _ => Ok(()),
                }
            });
        }
        let log = std::fs::File::create(home.dir().join("daemon.log")).unwrap();
        Server::clean_env(&mut cmd, env);
        cmd.env("LISTEN_FDS", "1")
            .env("NOTIFY_SOCKET", &notify_path);
        let mut child = cmd.stderr(Stdio::from(log)).spawn().expect("start server");
        drop(listener);
        wait_for_ready(&notify, &mut child);
        Server {
            child,
            port,
            _notify: Some(notify),
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to the server (by its PID).
    pub fn signal(&self, sig: i32) {
        // SAFETY: signals only the child we started, by its PID.
        unsafe { libc_kill(self.child.id() as i32, sig) };
    }

    /// Waits (bounded) for the server to exit; returns its status.
    pub fn wait_exit(mut self) -> i32 {
        wait_bounded(&mut self.child, Duration::from_secs(60))
    }

    /// Gives `cmd` only PATH and `env`, and no stdin or stdout.
    fn clean_env(cmd: &mut Command, env: &[(&str, &str)]) {
        cmd.env_clear()
            .env(
                "PATH",
                std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
    }

    /// Sends SIGTERM and waits; returns the exit status.
    pub fn terminate(mut self) -> i32 {
        // SAFETY: signals only the child we started, by its PID.
        unsafe { libc_kill(self.child.id() as i32, 15) };
        wait_bounded(&mut self.child, Duration::from_secs(20))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Runs a Python 3 script with arguments; bounded to 60 s.
pub fn python(script: &str, args: &[&str]) -> Finished {
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script).args(args);
    run_with_input(cmd, b"", Duration::from_secs(60))
}

/// Runs swaks with arguments; bounded to 60 s.
pub fn swaks(args: &[&str]) -> Finished {
    let mut cmd = Command::new("swaks");
    cmd.args(args);
    run_with_input(cmd, b"", Duration::from_secs(60))
}

/// Whether a process with this PID still exists (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .chars()
                .next();
            state != Some('Z')
        }
        Err(_) => false,
    }
}

/// The resident memory of a process in KiB (`VmRSS`), 0 if unknown.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Whether a process with this PID exists at all (zombies included).
pub fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// dnsmasq serving fixed records on 127.0.0.1 (no upstream, no system
/// files); stopped by PID when dropped.
pub struct DnsServer {
    child: Child,
    /// Its port (UDP and TCP).
    pub port: u16,
}

impl DnsServer {
    /// Starts dnsmasq with extra record options such as
    /// `--host-record=client.test,127.0.0.2`.
    pub fn start(records: &[&str]) -> DnsServer {
        let port = free_port();
        let program = if std::path::Path::new("/usr/sbin/dnsmasq").exists() {
            "/usr/sbin/dnsmasq"
        } else {
            "dnsmasq"
        };
        let mut child = Command::new(program)
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--pid-file=",
                "--user=root",
            ])
            .arg(format!("--port={port}"))
            .args(records)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq");
        wait_for_port(port, &mut child);
        DnsServer { child, port }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real Dovecot (Debian's dovecot-core) serving only its auth socket,
/// with a passwd-file of `alice:secret`; stopped by PID when dropped.
pub struct DovecotServer {
    child: Child,
    dir: std::path::PathBuf,
}

impl DovecotServer {
    /// Starts Dovecot in `dir` (created) and waits for its socket.
    pub fn start(dir: &std::path::Path) -> DovecotServer {
        std::fs::create_dir_all(dir.join("run")).unwrap();
        std::fs::create_dir_all(dir.join("state")).unwrap();
        std::fs::write(dir.join("passwd"), "alice:{PLAIN}secret\n").unwrap();
        let d = dir.display();
        let conf = format!(
            "base_dir = {d}/run\nstate_dir = {d}/state\ninstance_name = spp-it-{pid}\nprotocols =\nssl = no\n\
             log_path = {d}/dovecot.log\ninfo_log_path = {d}/dovecot.log\n\
             default_internal_user = root\ndefault_internal_group = root\ndefault_login_user = root\n\
             auth_mechanisms = plain login cram-md5\nauth_failure_delay = 0\n\
             passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {d}/passwd\n}}\n\
             userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home=/nonexistent\n}}\n\
             service auth {{\n  unix_listener auth-client {{\n    mode = 0666\n  }}\n}}\n",
            pid = std::process::id()
        );
        std::fs::write(dir.join("dovecot.conf"), conf).unwrap();
        let program = if std::path::Path::new("/usr/sbin/dovecot").exists() {
            "/usr/sbin/dovecot"
        } else {
            "dovecot"
        };
        let mut child = Command::new(program)
            .arg("-F")
            .arg("-c")
            .arg(dir.join("dovecot.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dovecot-core must be installed (scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !dir.join("run/auth-client").exists() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "dovecot exited: {status}: {}",
                    std::fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "dovecot did not create its socket"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        DovecotServer {
            child,
            dir: dir.to_path_buf(),
        }
    }

    /// The auth-client socket.
    pub fn socket(&self) -> std::path::PathBuf {
        self.dir.join("run/auth-client")
    }
}

impl Drop for DovecotServer {
    fn drop(&mut self) {
        // SAFETY: signals only the child we started, by its PID.
        unsafe { libc_kill(self.child.id() as i32, 15) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
