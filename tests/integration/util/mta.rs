//! Private instances of real servers for tests: Postfix (SMTP and its
//! sendmail command), Dovecot LMTP, spamd, clamd and Redis. Each one gets its
//! own configuration and directories under a directory the test chooses,
//! listens on 127.0.0.1 only, never touches the machine's own configuration
//! or services, and is stopped by PID when dropped.
//!
//! `start` returns `None` and prints `SKIP: <reason>` on stderr when the
//! program is not installed (or cannot run here, as Postfix without root),
//! so a test reads `let Some(pf) = PrivatePostfix::start(..) else { return };`.
//! A program that is installed but fails to start fails the test, with its
//! log in the message.

use super::process::free_port;
use std::ffi::CString;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The mail domain every private MTA accepts.
pub const DOMAIN: &str = "example.test";

/// How long a server may take to come up.
const START_LIMIT: Duration = Duration::from_secs(30);

/// How long a server may take to go away after SIGTERM before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Shared helpers

/// Prints why a helper cannot run and gives `None`.
fn skip<T>(reason: &str) -> Option<T> {
    eprintln!("SKIP: {reason}");
    None
}

/// The first of `paths` that exists, else `name` found on `PATH`.
pub fn find_program(paths: &[&str], name: &str) -> Option<PathBuf> {
    for p in paths {
        if Path::new(p).is_file() {
            return Some(PathBuf::from(p));
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Whether the tests run as root.
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of a system account.
fn account(name: &str) -> Option<(u32, u32)> {
    let c = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16384];
    // SAFETY: getpwnam_r writes only into `pw` and `buf` (whose length it is
    // given) and sets `result` to null or to `pw`; it is thread-safe.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwnam_r(
            c.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        );
        (rc == 0 && !result.is_null()).then_some((pw.pw_uid, pw.pw_gid))
    }
}

/// Sends `sig` to one process (or, with a negative id, a process group).
fn signal(pid: i32, sig: i32) {
    if pid == 0 || pid == -1 {
        return;
    }
    // SAFETY: only ever called with the PID of a server the test started
    // (or its own process group).
    unsafe { libc::kill(pid, sig) };
}

/// The process group of `pid` and whether it is still running (not a
/// zombie), from `/proc/<pid>/stat`.
fn proc_state(pid: i32) -> Option<(char, i32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Whether `pid` exists and is not a zombie.
fn running(pid: i32) -> bool {
    matches!(proc_state(pid), Some((state, _)) if state != 'Z')
}

/// Live (non-zombie) processes whose process group is `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(
            |&pid| matches!(proc_state(pid), Some((state, group)) if group == pgid && state != 'Z'),
        )
        .collect()
}

/// Kills whatever is left of the process group `pgid` (a server started in
/// a group of its own) and waits until it is gone.
fn sweep_group(pgid: i32) {
    if pgid <= 1 || group_members(pgid).is_empty() {
        return;
    }
    signal(-pgid, libc::SIGKILL);
    let deadline = Instant::now() + STOP_LIMIT;
    while !group_members(pgid).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops a server that is our child: SIGTERM, a bounded wait, SIGKILL, then
/// anything left in its process group.
fn stop_child(child: &mut Child) {
    let pid = child.id() as i32;
    signal(pid, libc::SIGTERM);
    let deadline = Instant::now() + STOP_LIMIT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => break,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    sweep_group(pid);
}

/// A server's log file followed by what it wrote on stderr (`stderr.log`
/// next to it), for failure messages.
fn log_text(log: &Path) -> String {
    let mut text = fs::read_to_string(log).unwrap_or_default();
    if let Some(dir) = log.parent() {
        text.push_str(&fs::read_to_string(dir.join("stderr.log")).unwrap_or_default());
    }
    text
}

/// Waits until `ready` holds, failing the test (with the server's log) if
/// `child` exits or `START_LIMIT` passes first.
fn wait_ready(what: &str, child: &mut Child, log: &Path, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + START_LIMIT;
    loop {
        if ready() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited during start-up ({status}):\n{}",
                log_text(log)
            );
        }
        if Instant::now() > deadline {
            stop_child(child);
            panic!(
                "{what} did not become ready within {START_LIMIT:?}:\n{}",
                log_text(log)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
fn port_open(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A fresh, empty directory (an old one of the same name is removed).
fn fresh_dir(path: &Path) {
    let _ = fs::remove_dir_all(path);
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Creates `dir` if needed and makes it traversable for the unprivileged
/// users the servers run and deliver as.
fn open_for_traversal(dir: &Path) {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let mode = fs::metadata(dir).unwrap().permissions().mode();
    if mode & 0o011 != 0o011 {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode | 0o011)).unwrap();
    }
}

/// `chown uid:gid path` for a directory the test just created.
fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

/// Sets the modification time of the files in `dir` a minute into the past.
/// Postfix reads `main.cf` and its table files only once they have not
/// changed for a second or two (so as not to read a half-written file) and
/// would otherwise sleep until then.
fn backdate_files(dir: &Path) {
    let past = SystemTime::now() - Duration::from_secs(60);
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(past))
                .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
        }
    }
}

/// The messages of a Maildir (`new/` and `cur/`), ordered by file name.
fn read_maildir(maildir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = ["new", "cur"]
        .iter()
        .filter_map(|sub| fs::read_dir(maildir.join(sub)).ok())
        .flat_map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())))
        .collect();
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    files.iter().filter_map(|p| fs::read(p).ok()).collect()
}

/// Polls `read` until it returns at least `n` messages; fails the test after
/// `limit` with `context` (a server log) in the message.
fn poll_messages(
    n: usize,
    limit: Duration,
    read: impl Fn() -> Vec<Vec<u8>>,
    context: impl Fn() -> String,
) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + limit;
    loop {
        let found = read();
        if found.len() >= n {
            return found;
        }
        if Instant::now() > deadline {
            panic!(
                "expected {n} message(s), found {} after {limit:?}; log:\n{}",
                found.len(),
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A self-signed certificate for `name` (P-256, with the name as DNS
/// subjectAltName) and its key, made with the openssl CLI in `dir`.
/// Returns (certificate file, key file).
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:prime256v1")
        .arg("-nodes")
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-days", "2", "-subj"])
        .arg(format!("/CN={name}"))
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:{name}"))
        // Not a CA: a client that takes it as its own trust anchor (rustls
        // with cafile=) refuses a CA certificate used as the server's.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl could not make a certificate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

// ---------------------------------------------------------------------------
// A line-oriented SMTP/LMTP client

/// A blocking SMTP/LMTP client over TCP or a Unix socket, for driving the
/// private servers by hand.
pub struct LineClient {
    reader: BufReader<Box<dyn Read + Send>>,
    writer: Box<dyn Write + Send>,
}

impl LineClient {
    /// Connects to 127.0.0.1:`port` and reads nothing yet.
    pub fn tcp(port: u16) -> LineClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let reader = stream.try_clone().unwrap();
        LineClient {
            reader: BufReader::new(Box::new(reader)),
            writer: Box::new(stream),
        }
    }

    /// Connects to a Unix socket and reads nothing yet.
    pub fn unix(path: &Path) -> LineClient {
        let stream =
            UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let reader = stream.try_clone().unwrap();
        LineClient {
            reader: BufReader::new(Box::new(reader)),
            writer: Box::new(stream),
        }
    }

    /// Reads one (possibly multi-line) reply; returns its lines without
    /// CRLF.
    pub fn reply_lines(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("read reply");
            assert!(n > 0, "server closed the connection");
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines;
            }
        }
    }

    /// Reads one (possibly multi-line) reply; returns its last line without
    /// CRLF, e.g. `250 2.0.0 Ok`.
    pub fn reply(&mut self) -> String {
        self.reply_lines().pop().unwrap()
    }

    /// Sends `line` with CRLF and returns the lines of the reply.
    pub fn command_lines(&mut self, line: &str) -> Vec<String> {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("send command");
        self.reply_lines()
    }

    /// Sends `line` with CRLF and returns the last line of the reply.
    pub fn command(&mut self, line: &str) -> String {
        self.command_lines(line).pop().unwrap()
    }

    /// Sends a message (LF or CRLF line ends) dot-stuffed with CRLF line ends,
    /// followed by the final `.`; the caller reads the reply or replies.
    pub fn send_message(&mut self, message: &[u8]) {
        let mut wire = Vec::with_capacity(message.len() + 64);
        for line in message.split_inclusive(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.first() == Some(&b'.') {
                wire.push(b'.');
            }
            wire.extend_from_slice(line);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b".\r\n");
        self.writer.write_all(&wire).expect("send message");
    }
}

// ---------------------------------------------------------------------------
// Postfix

/// RCPT TO this address gets `451 4.3.0 <tempfail@example.test>: Recipient
/// address rejected: try later` from the private Postfix.
pub const POSTFIX_RCPT_TEMPFAIL: &str = "tempfail@example.test";
/// RCPT TO this address gets `554 5.7.1 <reject@example.test>: Recipient
/// address rejected: rejected`.
pub const POSTFIX_RCPT_REJECT: &str = "reject@example.test";
/// A message from this sender is refused after the final dot with
/// `451 4.3.0 <data-tempfail@fail.test>: Sender address rejected: try later`.
pub const POSTFIX_DATA_TEMPFAIL: &str = "data-tempfail@fail.test";
/// A message from this sender is refused after the final dot with
/// `554 5.7.1 <data-reject@fail.test>: Sender address rejected: rejected`.
pub const POSTFIX_DATA_REJECT: &str = "data-reject@fail.test";

/// A private Postfix (Debian's postfix package) under `dir/postfix`: own
/// `config_directory`, `queue_directory` and `data_directory`, smtpd on
/// 127.0.0.1:`port`, delivering the virtual domain `example.test` for the
/// listed users only, each into the Maildir `dir/postfix/mail/<user>/`.
///
/// Everything else is refused: unknown users in `example.test` get `550
/// 5.1.1 ... User unknown in virtual mailbox table` at RCPT, other domains
/// `554 5.7.1 ... Relay access denied`; nothing is ever sent out (the
/// default and relay transports are `error:`), and no DNS lookup is made.
/// The fixed failure addresses above give 4xx/5xx replies at RCPT and after
/// the final dot. SMTPUTF8 is on (`smtputf8_enable`): a UTF-8 sender is
/// refused as bad syntax unless MAIL declared SMTPUTF8. Its log is
/// `dir/postfix/maillog`.
///
/// Needs root: Postfix's master runs as root and its daemons as `postfix`.
pub struct PrivatePostfix {
    /// The smtpd port on 127.0.0.1.
    pub port: u16,
    root: PathBuf,
    master_pid: i32,
    tls: bool,
}

impl PrivatePostfix {
    /// Starts Postfix without TLS.
    pub fn start(dir: &Path, users: &[&str]) -> Option<PrivatePostfix> {
        PrivatePostfix::launch(dir, users, false)
    }

    /// Starts Postfix with smtpd offering STARTTLS, with a self-signed
    /// certificate for `mx.example.test` (see `ca_file`).
    pub fn start_with_tls(dir: &Path, users: &[&str]) -> Option<PrivatePostfix> {
        PrivatePostfix::launch(dir, users, true)
    }

    fn launch(dir: &Path, users: &[&str], tls: bool) -> Option<PrivatePostfix> {
        let Some(postfix) = find_program(&["/usr/sbin/postfix"], "postfix") else {
            return skip("postfix is not installed (Debian package postfix)");
        };
        if !Path::new("/usr/sbin/sendmail").exists() {
            return skip("Postfix's sendmail command /usr/sbin/sendmail is not installed");
        }
        if !is_root() {
            return skip("a private Postfix needs root (its master runs as root)");
        }
        let Some((pf_uid, pf_gid)) = account("postfix") else {
            return skip("there is no `postfix` account (install the postfix package)");
        };
        let Some((mail_uid, mail_gid)) = account("nobody") else {
            return skip("there is no `nobody` account to deliver mail as");
        };
        if tls && find_program(&["/usr/bin/openssl"], "openssl").is_none() {
            return skip("openssl is not installed (needed for the test certificate)");
        }

        open_for_traversal(dir);
        let root = dir.join("postfix");
        fresh_dir(&root);
        for sub in ["conf", "queue", "data", "mail"] {
            fs::create_dir_all(root.join(sub)).unwrap();
            fs::set_permissions(root.join(sub), fs::Permissions::from_mode(0o755)).unwrap();
        }
        chown(&root.join("data"), pf_uid, pf_gid);
        chown(&root.join("mail"), mail_uid, mail_gid);

        let conf = root.join("conf");
        let mut mailboxes = String::new();
        for user in users {
            assert!(
                !user.contains(['@', '/', ' ']),
                "give users as local parts: {user}"
            );
            mailboxes.push_str(&format!("{user}@{DOMAIN} {user}/\n"));
        }
        fs::write(conf.join("vmailbox"), mailboxes).unwrap();
        fs::write(
            conf.join("recipient_access"),
            format!(
                "{POSTFIX_RCPT_TEMPFAIL} 451 4.3.0 try later\n{POSTFIX_RCPT_REJECT} 554 5.7.1 rejected\n"
            ),
        )
        .unwrap();
        fs::write(
            conf.join("sender_access"),
            format!(
                "{POSTFIX_DATA_TEMPFAIL} 451 4.3.0 try later\n{POSTFIX_DATA_REJECT} 554 5.7.1 rejected\n"
            ),
        )
        .unwrap();

        let port = free_port();
        let r = root.display();
        let mut main_cf = format!(
            "compatibility_level = 3.6\n\
             config_directory = {r}/conf\n\
             queue_directory = {r}/queue\n\
             data_directory = {r}/data\n\
             mail_owner = postfix\n\
             setgid_group = postdrop\n\
             myhostname = mx.{DOMAIN}\n\
             mydomain = {DOMAIN}\n\
             myorigin = {DOMAIN}\n\
             mydestination =\n\
             relay_domains =\n\
             relayhost =\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             mynetworks = 127.0.0.0/8\n\
             disable_dns_lookups = yes\n\
             smtp_dns_support_level = disabled\n\
             alias_maps =\n\
             alias_database =\n\
             local_recipient_maps =\n\
             virtual_mailbox_domains = {DOMAIN}\n\
             virtual_mailbox_maps = texthash:{r}/conf/vmailbox\n\
             virtual_mailbox_base = {r}/mail\n\
             virtual_uid_maps = static:{mail_uid}\n\
             virtual_gid_maps = static:{mail_gid}\n\
             default_transport = error:outbound mail is disabled in this test instance\n\
             relay_transport = error:outbound mail is disabled in this test instance\n\
             smtpd_reject_unlisted_recipient = yes\n\
             smtpd_relay_restrictions = reject_unauth_destination\n\
             smtpd_recipient_restrictions = check_recipient_access texthash:{r}/conf/recipient_access\n\
             smtpd_end_of_data_restrictions = check_sender_access texthash:{r}/conf/sender_access\n\
             smtputf8_enable = yes\n\
             smtpd_banner = $myhostname ESMTP\n\
             smtpd_error_sleep_time = 0\n\
             in_flow_delay = 0\n\
             biff = no\n\
             maillog_file = {r}/maillog\n\
             maillog_file_prefixes = {r}\n"
        );
        if tls {
            let (cert, key) = self_signed(&conf, &format!("mx.{DOMAIN}"));
            main_cf.push_str(&format!(
                "smtpd_tls_security_level = may\n\
                 smtpd_tls_cert_file = {}\n\
                 smtpd_tls_key_file = {}\n",
                cert.display(),
                key.display()
            ));
        }
        fs::write(conf.join("main.cf"), main_cf).unwrap();

        // No chroot anywhere: the queue directory has no copy of /etc.
        let master_cf = format!(
            "127.0.0.1:{port} inet n - n - - smtpd\n\
             pickup    unix  n - n 60    1 pickup\n\
             cleanup   unix  n - n -     0 cleanup\n\
             qmgr      unix  n - n 300   1 qmgr\n\
             tlsmgr    unix  - - n 1000? 1 tlsmgr\n\
             rewrite   unix  - - n -     - trivial-rewrite\n\
             bounce    unix  - - n -     0 bounce\n\
             defer     unix  - - n -     0 bounce\n\
             trace     unix  - - n -     0 bounce\n\
             verify    unix  - - n -     1 verify\n\
             flush     unix  n - n 1000? 0 flush\n\
             proxymap  unix  - - n -     - proxymap\n\
             smtp      unix  - - n -     - smtp\n\
             relay     unix  - - n -     - smtp\n\
             showq     unix  n - n -     - showq\n\
             error     unix  - - n -     - error\n\
             retry     unix  - - n -     - error\n\
             discard   unix  - - n -     - discard\n\
             virtual   unix  - n n -     - virtual\n\
             anvil     unix  - - n -     1 anvil\n\
             scache    unix  - - n -     1 scache\n\
             postlog   unix-dgram n - n - 1 postlogd\n"
        );
        fs::write(conf.join("master.cf"), master_cf).unwrap();

        backdate_files(&conf);

        // `postfix start` checks and creates the queue directories, then
        // runs `master -w`, which returns once the master is up (detached,
        // in a session of its own). The postfix command reports problems
        // only to a terminal or the log, so the log is what a failure shows.
        let out = Command::new(&postfix)
            .arg("-c")
            .arg(&conf)
            .arg("start")
            .env_remove("MAIL_CONFIG")
            .stdin(Stdio::null())
            .output()
            .expect("run postfix start");
        let log = || fs::read_to_string(root.join("maillog")).unwrap_or_default();
        assert!(
            out.status.success(),
            "postfix start failed ({}): {}{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            log()
        );
        let pid_text = fs::read_to_string(root.join("queue/pid/master.pid")).unwrap_or_default();
        let master_pid: i32 = pid_text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no master.pid after postfix start:\n{}", log()));
        let pf = PrivatePostfix {
            port,
            root,
            master_pid,
            tls,
        };
        let deadline = Instant::now() + START_LIMIT;
        while !port_open(port) {
            assert!(
                running(master_pid) && Instant::now() < deadline,
                "postfix smtpd is not listening on port {port}:\n{}",
                pf.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(pf)
    }

    /// The instance's configuration directory (`main.cf`, `master.cf`).
    pub fn config_dir(&self) -> PathBuf {
        self.root.join("conf")
    }

    /// Everything Postfix logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.root.join("maillog")).unwrap_or_default()
    }

    /// An executable script that runs Postfix's own `/usr/sbin/sendmail`
    /// against this instance (`MAIL_CONFIG`), with the arguments it is given.
    pub fn sendmail(&self) -> PathBuf {
        let path = self.root.join("sendmail");
        if !path.exists() {
            let script = format!(
                "#!/bin/sh\n\
                 # Postfix's sendmail, submitting to the private instance in {root}\n\
                 MAIL_CONFIG='{conf}'\n\
                 export MAIL_CONFIG\n\
                 exec /usr/sbin/sendmail \"$@\"\n",
                root = self.root.display(),
                conf = self.config_dir().display()
            );
            fs::write(&path, script).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        path
    }

    /// The certificate smtpd presents (self-signed for `mx.example.test`), a
    /// PEM file usable as a client's CA file. Only with `start_with_tls`.
    pub fn ca_file(&self) -> PathBuf {
        assert!(self.tls, "this Postfix was started without TLS");
        self.root.join("conf/cert.pem")
    }

    /// The Maildir of `user` (a local part of `example.test`).
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.root.join("mail").join(user)
    }

    /// The messages delivered to `user` so far, by file name.
    pub fn messages(&self, user: &str) -> Vec<Vec<u8>> {
        read_maildir(&self.maildir(user))
    }

    /// Waits (at most `limit`) until `user` has at least `n` messages.
    pub fn wait_messages(&self, user: &str, n: usize, limit: Duration) -> Vec<Vec<u8>> {
        poll_messages(n, limit, || self.messages(user), || self.log())
    }
}

impl Drop for PrivatePostfix {
    fn drop(&mut self) {
        // What `postfix stop` does: SIGTERM to the master, which takes its
        // daemons down with it; then anything left in its process group.
        signal(self.master_pid, libc::SIGTERM);
        let deadline = Instant::now() + STOP_LIMIT;
        while running(self.master_pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let settle = Instant::now() + Duration::from_secs(2);
        while !group_members(self.master_pid).is_empty() && Instant::now() < settle {
            std::thread::sleep(Duration::from_millis(20));
        }
        sweep_group(self.master_pid);
    }
}

// ---------------------------------------------------------------------------
// Dovecot LMTP

/// A user of this name in `DovecotLmtp::start` has a quota of one byte:
/// every delivery fails after the final dot with
/// `552 5.2.2 <full@example.test> Quota exceeded (mailbox for user is full)`.
pub const LMTP_USER_FULL: &str = "full";
/// Like `full`, but Dovecot answers temporarily:
/// `452 4.2.2 <tempfull@example.test> Quota exceeded (mailbox for user is full)`.
pub const LMTP_USER_TEMPFULL: &str = "tempfull";

/// A private Dovecot (Debian's dovecot-core + dovecot-lmtpd) under
/// `dir/dovecot-lmtp`, serving only LMTP: on 127.0.0.1:`port` and on the
/// Unix socket `socket()`. Users are `<user>@example.test` from a
/// passwd-file; anyone else gets `550 5.1.1 <x@example.test> User doesn't
/// exist: x@example.test` at RCPT. Mail is stored as user `nobody` in the
/// Maildir `dir/dovecot-lmtp/mail/<user>/Maildir`. The users `full` and
/// `tempfull` (when listed) fail at the end of DATA, see the constants.
pub struct DovecotLmtp {
    child: Child,
    /// The LMTP port on 127.0.0.1.
    pub port: u16,
    root: PathBuf,
}

impl DovecotLmtp {
    /// Starts Dovecot and waits for both listeners.
    pub fn start(dir: &Path, users: &[&str]) -> Option<DovecotLmtp> {
        let Some(dovecot) = find_program(&["/usr/sbin/dovecot"], "dovecot") else {
            return skip("dovecot is not installed (Debian package dovecot-core)");
        };
        if !Path::new("/usr/lib/dovecot/lmtp").exists() {
            return skip("Dovecot's LMTP server is not installed (Debian package dovecot-lmtpd)");
        }
        if !is_root() {
            return skip("a private Dovecot LMTP needs root (it stores mail as `nobody`)");
        }
        let Some((mail_uid, mail_gid)) = account("nobody") else {
            return skip("there is no `nobody` account to deliver mail as");
        };

        open_for_traversal(dir);
        let root = dir.join("dovecot-lmtp");
        fresh_dir(&root);
        for sub in ["run", "state", "mail"] {
            fs::create_dir_all(root.join(sub)).unwrap();
        }
        chown(&root.join("mail"), mail_uid, mail_gid);
        let r = root.display();
        let mut passwd = String::new();
        for user in users {
            assert!(
                !user.contains(['@', '/', ':', ' ']),
                "give users as local parts: {user}"
            );
            let extra = match *user {
                LMTP_USER_FULL => "userdb_quota_rule=*:bytes=1",
                LMTP_USER_TEMPFULL => "userdb_quota_rule=*:bytes=1 userdb_quota_full_tempfail=yes",
                _ => "",
            };
            passwd.push_str(&format!(
                "{user}@{DOMAIN}::{mail_uid}:{mail_gid}::{r}/mail/{user}::{extra}\n"
            ));
        }
        fs::write(root.join("users"), passwd).unwrap();

        let port = free_port();
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let instance = format!(
            "spp-lmtp-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let conf = format!(
            "base_dir = {r}/run\n\
             state_dir = {r}/state\n\
             instance_name = {instance}\n\
             protocols = lmtp\n\
             listen = 127.0.0.1\n\
             ssl = no\n\
             hostname = lmtp.{DOMAIN}\n\
             postmaster_address = postmaster@{DOMAIN}\n\
             log_path = {r}/dovecot.log\n\
             info_log_path = {r}/dovecot.log\n\
             default_internal_user = root\n\
             default_internal_group = root\n\
             default_login_user = root\n\
             first_valid_uid = 1\n\
             last_valid_uid = 0\n\
             mail_location = maildir:~/Maildir\n\
             mail_plugins = quota\n\
             lmtp_save_to_detail_mailbox = no\n\
             passdb {{\n  driver = passwd-file\n  args = username_format=%u {r}/users\n}}\n\
             userdb {{\n  driver = passwd-file\n  args = username_format=%u {r}/users\n}}\n\
             plugin {{\n  quota = maildir:User quota\n}}\n\
             service lmtp {{\n\
             \x20 inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n\
             \x20 unix_listener lmtp {{\n    mode = 0666\n  }}\n\
             }}\n"
        );
        fs::write(root.join("dovecot.conf"), conf).unwrap();
        let log = root.join("dovecot.log");
        let mut child = Command::new(dovecot)
            .arg("-F")
            .arg("-c")
            .arg(root.join("dovecot.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                fs::File::create(root.join("stderr.log")).unwrap(),
            ))
            .process_group(0)
            .spawn()
            .expect("start dovecot");
        let socket = root.join("run/lmtp");
        wait_ready("dovecot", &mut child, &log, || {
            socket.exists() && port_open(port)
        });
        Some(DovecotLmtp { child, port, root })
    }

    /// The LMTP Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.root.join("run/lmtp")
    }

    /// Everything Dovecot logged so far.
    pub fn log(&self) -> String {
        log_text(&self.root.join("dovecot.log"))
    }

    /// The Maildir of `user`.
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.root.join("mail").join(user).join("Maildir")
    }

    /// The messages delivered to `user` so far, by file name.
    pub fn messages(&self, user: &str) -> Vec<Vec<u8>> {
        read_maildir(&self.maildir(user))
    }

    /// Waits (at most `limit`) until `user` has at least `n` messages.
    pub fn wait_messages(&self, user: &str, n: usize, limit: Duration) -> Vec<Vec<u8>> {
        poll_messages(n, limit, || self.messages(user), || self.log())
    }
}

impl Drop for DovecotLmtp {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

// ---------------------------------------------------------------------------
// spamd

/// The GTUBE string: SpamAssassin's stock rules score a message containing
/// it 1000 points.
pub const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

/// The rules Debian's spamassassin package ships (no sa-update needed).
const SPAMASSASSIN_RULES: &str = "/usr/share/spamassassin";

/// Plugins that need no network; the stock rules of the others are inside
/// `ifplugin` blocks and are skipped.
const SPAMASSASSIN_LOCAL_PLUGINS: &[&str] = &[
    "Check",
    "HTTPSMismatch",
    "URIDetail",
    "BodyEval",
    "HTMLEval",
    "HeaderEval",
    "MIMEEval",
    "RelayEval",
    "URIEval",
    "WLBLEval",
    "VBounce",
    "ImageInfo",
    "MIMEHeader",
    "ReplaceTags",
    "FreeMail",
];

/// A private spamd (Debian's spamd package) on 127.0.0.1:`port`, with the
/// stock rules of `/usr/share/spamassassin`, a site configuration of its own
/// under `dir/spamd/site` (network-free plugins only, no Bayes, no DNS) and
/// no per-user configuration (`-x`). Its log is `dir/spamd/spamd.log`.
pub struct Spamd {
    child: Child,
    /// The port on 127.0.0.1.
    pub port: u16,
    root: PathBuf,
}

impl Spamd {
    /// Starts spamd and waits until it answers a PING.
    pub fn start(dir: &Path) -> Option<Spamd> {
        let Some(spamd) = find_program(&["/usr/sbin/spamd"], "spamd") else {
            return skip("spamd is not installed (Debian package spamd)");
        };
        if !Path::new(SPAMASSASSIN_RULES)
            .join("20_body_tests.cf")
            .exists()
        {
            return skip("SpamAssassin's stock rules are missing from /usr/share/spamassassin");
        }
        let root = dir.join("spamd");
        fresh_dir(&root);
        let site = root.join("site");
        fs::create_dir_all(&site).unwrap();
        fs::create_dir_all(root.join("home")).unwrap();
        let pre: String = SPAMASSASSIN_LOCAL_PLUGINS
            .iter()
            .map(|p| format!("loadplugin Mail::SpamAssassin::Plugin::{p}\n"))
            .collect();
        fs::write(site.join("init.pre"), pre).unwrap();
        fs::write(
            site.join("local.cf"),
            "required_score 5.0\nuse_bayes 0\nbayes_auto_learn 0\nskip_rbl_checks 1\ndns_available no\n",
        )
        .unwrap();
        let port = free_port();
        let log = root.join("spamd.log");
        let mut child = Command::new(spamd)
            .arg("--local")
            .arg("--nouser-config")
            .arg(format!("--siteconfigpath={}", site.display()))
            .arg(format!("--configpath={SPAMASSASSIN_RULES}"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg(format!("--pidfile={}", root.join("spamd.pid").display()))
            .args(["--max-children=2", "--min-children=1", "--min-spare=1"])
            .arg(format!("--syslog={}", log.display()))
            .arg(format!("--helper-home-dir={}", root.join("home").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                fs::File::create(root.join("stderr.log")).unwrap(),
            ))
            .process_group(0)
            .spawn()
            .expect("start spamd");
        wait_ready("spamd", &mut child, &log, || spamd_ping(port));
        Some(Spamd { child, port, root })
    }

    /// Everything spamd logged so far.
    pub fn log(&self) -> String {
        log_text(&self.root.join("spamd.log"))
    }
}

/// Whether spamd on `port` answers the spamc protocol's PING with PONG.
fn spamd_ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream.write_all(b"PING SPAMC/1.5\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("SPAMD/") && answer.contains(" PONG")
}

impl Drop for Spamd {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

// ---------------------------------------------------------------------------
// clamd

/// The test signature's body: a message containing this text is a virus to
/// the private clamd.
pub const TEST_VIRUS_STRING: &str = "SPP-TEST-VIRUS-SIGNATURE-7f3a";
/// The name clamd reports for it (ClamAV marks signatures from unsigned
/// databases `.UNOFFICIAL`).
pub const TEST_VIRUS_NAME: &str = "SPP.Test.Virus.UNOFFICIAL";

/// A private clamd (Debian's clamav-daemon) under `dir/clamd`: a Unix socket
/// and 127.0.0.1:`port`, and a signature database of one signature written
/// by the test (`TEST_VIRUS_STRING` anywhere in a file, as raw text or after
/// MIME decoding) — nothing downloaded.
pub struct Clamd {
    child: Child,
    /// The Unix socket.
    pub socket: PathBuf,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// clamd's configuration; `clamdscan --config-file=` uses its
    /// `LocalSocket`.
    pub config_file: PathBuf,
    /// A clamdscan configuration naming only the TCP socket.
    pub tcp_config_file: PathBuf,
    root: PathBuf,
}

impl Clamd {
    /// Starts clamd and waits until it answers PING on its Unix socket.
    pub fn start(dir: &Path) -> Option<Clamd> {
        let Some(clamd) = find_program(&["/usr/sbin/clamd"], "clamd") else {
            return skip("clamd is not installed (Debian package clamav-daemon)");
        };
        let root = dir.join("clamd");
        fresh_dir(&root);
        fs::create_dir_all(root.join("db")).unwrap();
        fs::create_dir_all(root.join("tmp")).unwrap();
        let hex: String = TEST_VIRUS_STRING
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        // An extended signature: name, any file type, any offset, the bytes.
        let name = TEST_VIRUS_NAME.trim_end_matches(".UNOFFICIAL");
        fs::write(root.join("db/spp-test.ndb"), format!("{name}:0:*:{hex}\n")).unwrap();

        let port = free_port();
        let socket = root.join("clamd.sock");
        let r = root.display();
        let config_file = root.join("clamd.conf");
        fs::write(
            &config_file,
            format!(
                "Foreground yes\n\
                 LocalSocket {r}/clamd.sock\n\
                 LocalSocketMode 666\n\
                 TCPSocket {port}\n\
                 TCPAddr 127.0.0.1\n\
                 DatabaseDirectory {r}/db\n\
                 TemporaryDirectory {r}/tmp\n\
                 PidFile {r}/clamd.pid\n\
                 LogFile {r}/clamd.log\n\
                 LogTime yes\n\
                 SelfCheck 0\n"
            ),
        )
        .unwrap();
        let tcp_config_file = root.join("clamdscan-tcp.conf");
        fs::write(
            &tcp_config_file,
            format!("TCPSocket {port}\nTCPAddr 127.0.0.1\n"),
        )
        .unwrap();
        let log = root.join("clamd.log");
        let mut child = Command::new(clamd)
            .arg(format!("--config-file={}", config_file.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                fs::File::create(root.join("stderr.log")).unwrap(),
            ))
            .process_group(0)
            .spawn()
            .expect("start clamd");
        wait_ready("clamd", &mut child, &log, || {
            clamd_ping(&socket) && port_open(port)
        });
        Some(Clamd {
            child,
            socket,
            port,
            config_file,
            tcp_config_file,
            root,
        })
    }

    /// Everything clamd logged so far.
    pub fn log(&self) -> String {
        log_text(&self.root.join("clamd.log"))
    }
}

/// Whether clamd answers `zPING` with `PONG` on its Unix socket.
fn clamd_ping(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream.write_all(b"zPING\0").is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer.starts_with(b"PONG")
}

impl Drop for Clamd {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

// ---------------------------------------------------------------------------
// Redis

/// A private redis-server (Debian's redis-server package) on
/// 127.0.0.1:`port`: no persistence (`--save ''`, `--appendonly no`), its
/// working directory and log under `dir/redis`.
pub struct Redis {
    child: Child,
    /// The port on 127.0.0.1.
    pub port: u16,
}

impl Redis {
    /// Starts redis-server and waits until it answers a PING.
    pub fn start(dir: &Path) -> Option<Redis> {
        let Some(program) = find_program(&["/usr/bin/redis-server"], "redis-server") else {
            return skip("redis-server is not installed (Debian package redis-server)");
        };
        let root = dir.join("redis");
        fresh_dir(&root);
        let log = root.join("redis.log");
        let port = free_port();
        let mut child = Command::new(program)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&root)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start redis-server");
        wait_ready("redis-server", &mut child, &log, || {
            redis_command(port, &["PING"]).is_some_and(|reply| reply == "+PONG\r\n")
        });
        Some(Redis { child, port })
    }

    /// Sends one command and returns the reply as Redis wrote it (RESP).
    pub fn command(&self, words: &[&str]) -> String {
        redis_command(self.port, words).expect("redis-server answers")
    }
}

/// One command to the Redis server on `port` and its whole reply, as raw
/// RESP text; `None` when nothing answers.
fn redis_command(port: u16, words: &[&str]) -> Option<String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut request = format!("*{}\r\n", words.len());
    for word in words {
        request.push_str(&format!("${}\r\n{word}\r\n", word.len()));
    }
    (&stream).write_all(request.as_bytes()).ok()?;
    let mut reader = BufReader::new(&stream);
    let mut reply = String::new();
    read_resp(&mut reader, &mut reply)?;
    Some(reply)
}

/// Appends one RESP value from `reader` to `out`.
fn read_resp(reader: &mut impl BufRead, out: &mut String) -> Option<()> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    if !line.ends_with("\r\n") {
        return None;
    }
    out.push_str(&line);
    let count: i64 = line[1..line.len() - 2].parse().unwrap_or(-1);
    match line.as_bytes()[0] {
        b'$' if count >= 0 => {
            let mut data = vec![0; count as usize + 2];
            reader.read_exact(&mut data).ok()?;
            out.push_str(&String::from_utf8_lossy(&data));
        }
        b'*' => {
            for _ in 0..count {
                read_resp(reader, out)?;
            }
        }
        _ => {}
    }
    Some(())
}

impl Drop for Redis {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}
