//! `spp-smtpd serve` as a production daemon: access rules, limits, reload,
//! graceful shutdown — over real sockets, with real signals.

use crate::util::client::Client;
use crate::util::process::Server;
use crate::util::TestHome;
use std::time::Duration;

const SIGHUP: i32 = 1;
const SIGTERM: i32 = 15;

/// Reads `daemon.log` (the server's stderr).
pub fn log(home: &TestHome) -> String {
    std::fs::read_to_string(home.dir().join("daemon.log")).unwrap_or_default()
}

/// Waits (bounded) until the daemon log contains `needle`.
pub async fn wait_log(home: &TestHome, needle: &str) {
    for _ in 0..400 {
        if log(home).contains(needle) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{needle:?} never logged:\n{}", log(home));
}

#[tokio::test]
async fn rules_allow_deny_and_set_variables_seen_by_plugins() {
    let home = TestHome::new();
    home.write(
        "control/tcp.smtp",
        "127.0.0.3:deny\n127.0.0.2:allow,RELAYCLIENT=\"\",GREETING=\"from two\"\n:allow,GREETING=other\n",
    );
    let p = home.plugin("env", "#!/bin/sh\necho \"P250-greeting=$GREETING relay=${RELAYCLIENT-unset} host=$TCPLOCALHOST\"\n");
    home.smtpplugins(&format!("[helo]\n{p}\n"));
    let server = Server::daemon_with(&home, &[], &[]);
    let mut two = Client::connect_from("127.0.0.2", server.port).await;
    assert_eq!(two.line().await.unwrap(), "220 mx.ref.test ESMTP");
    two.send("HELO x\r\n").await;
    assert_eq!(
        two.line().await.unwrap(),
        "250-greeting=from two relay= host=mx.ref.test"
    );
    assert_eq!(two.line().await.unwrap(), "250 mx.ref.test");
    two.cmd("MAIL FROM:<a@b.test>").await;
    assert_eq!(
        two.cmd("RCPT TO:<x@elsewhere.test>").await,
        "250 ok",
        "RELAYCLIENT from the rule"
    );
    let mut one = Client::connect(server.port).await;
    one.line().await.unwrap();
    one.send("HELO x\r\n").await;
    assert_eq!(
        one.line().await.unwrap(),
        "250-greeting=other relay=unset host=mx.ref.test"
    );
    one.line().await.unwrap();
    one.cmd("MAIL FROM:<a@b.test>").await;
    assert!(one
        .cmd("RCPT TO:<x@elsewhere.test>")
        .await
        .starts_with("553 "));
    let mut three = Client::connect_from("127.0.0.3", server.port).await;
    assert_eq!(
        three.line().await,
        None,
        "denied clients are closed without a reply"
    );
}

#[tokio::test]
async fn connection_limits_answer_421() {
    let home = TestHome::new();
    let server = Server::daemon_with(&home, &[], &["--max-connections", "3", "--max-per-ip", "2"]);
    // No start-up probe connection to wait for: the server reported ready.
    let mut a = Client::connect(server.port).await;
    let mut b = Client::connect(server.port).await;
    assert!(a.line().await.unwrap().starts_with("220 "));
    assert!(b.line().await.unwrap().starts_with("220 "));
    let mut c = Client::connect(server.port).await;
    assert_eq!(
        c.line().await.unwrap(),
        "421 mx.ref.test too many connections from your address (#4.3.2)"
    );
    assert_eq!(c.line().await, None);
    let mut d = Client::connect_from("127.0.0.2", server.port).await;
    assert!(d.line().await.unwrap().starts_with("220 "));
    let mut e = Client::connect_from("127.0.0.4", server.port).await;
    assert_eq!(
        e.line().await.unwrap(),
        "421 mx.ref.test too many connections, try again later (#4.3.2)"
    );
    // A slot frees up when a session ends.
    assert_eq!(a.cmd("QUIT").await, "221 mx.ref.test");
    assert_eq!(a.line().await, None);
    let mut f = Client::connect_from("127.0.0.4", server.port).await;
    let mut greeting = f.line().await.unwrap();
    for _ in 0..50 {
        if greeting.starts_with("220 ") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        f = Client::connect_from("127.0.0.4", server.port).await;
        greeting = f.line().await.unwrap();
    }
    assert!(greeting.starts_with("220 "), "{greeting}");
    drop((b, d));
}

#[tokio::test]
async fn session_lifetime_cap_answers_421() {
    let home = TestHome::new();
    let server = Server::daemon_with(&home, &[], &["--session-lifetime", "1"]);
    let mut c = Client::connect(server.port).await;
    assert!(c.line().await.unwrap().starts_with("220 "));
    assert_eq!(
        c.line().await.unwrap(),
        "421 mx.ref.test session too long, closing (#4.4.2)"
    );
    assert_eq!(c.line().await, None);
}

#[tokio::test]
async fn sighup_reloads_a_good_smtpplugins_and_keeps_the_old_one_when_broken() {
    let home = TestHome::new();
    let a = home.plugin("a", "#!/bin/sh\necho P250-plugin-a\n");
    let b = home.plugin("b", "#!/bin/sh\necho P250-plugin-b\n");
    home.smtpplugins(&format!("[helo]\n{a}\n"));
    let server = Server::daemon_with(&home, &[], &[]);
    let mut before = Client::connect(server.port).await;
    before.line().await.unwrap();
    home.smtpplugins(&format!("[helo]\n{b}\n"));
    server.signal(SIGHUP);
    wait_log(&home, "reloaded configuration").await;
    // The session opened before the reload keeps its snapshot.
    before.send("HELO x\r\n").await;
    assert_eq!(before.line().await.unwrap(), "250-plugin-a");
    let mut after = Client::connect(server.port).await;
    after.line().await.unwrap();
    after.send("HELO x\r\n").await;
    assert_eq!(after.line().await.unwrap(), "250-plugin-b");
    // A broken configuration is refused; the running one stays.
    std::fs::remove_file(home.dir().join("control/smtpplugins")).unwrap();
    server.signal(SIGHUP);
    wait_log(&home, "reload refused").await;
    let mut later = Client::connect(server.port).await;
    later.line().await.unwrap();
    later.send("HELO x\r\n").await;
    assert_eq!(later.line().await.unwrap(), "250-plugin-b");
    home.write("control/tcp.smtp", "nonsense\n");
    server.signal(SIGHUP);
    wait_log(&home, "tcp.smtp:1:").await;
}

#[tokio::test]
async fn a_reload_stuck_on_a_control_file_neither_stalls_sessions_nor_sigterm() {
    // A FIFO without a writer stands for a file on a hung mount: opening
    // it blocks until the daemon is gone.
    let home = TestHome::new();
    let server = Server::daemon_with(&home, &[], &[]);
    // The port answers before the signal handlers are in place.
    let catches_sighup = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid()));
        let caught = status.unwrap_or_default().lines().find_map(|l| {
            let mask = l.strip_prefix("SigCgt:")?.trim();
            u64::from_str_radix(mask, 16).ok()
        });
        caught.is_some_and(|m| m & (1 << (SIGHUP - 1)) != 0)
    };
    for _ in 0..400 {
        if catches_sighup() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(catches_sighup(), "SIGHUP handler never installed");
    let fifo = home.dir().join("control/badmailfrom");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.unwrap().success(), "mkfifo");
    server.signal(SIGHUP);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut c = Client::connect(server.port).await;
    assert_eq!(c.line().await.unwrap(), "220 mx.ref.test ESMTP");
    assert_eq!(c.cmd("QUIT").await, "221 mx.ref.test");
    assert_eq!(server.terminate(), 0, "SIGTERM while the reload hangs");
}

#[tokio::test]
async fn sigterm_lets_a_transaction_finish_and_closes_idle_sessions() {
    let home = TestHome::new();
    let server = Server::daemon_with(&home, &[], &["--shutdown-deadline", "20"]);
    let mut busy = Client::connect(server.port).await;
    busy.line().await.unwrap();
    assert_eq!(busy.cmd("MAIL FROM:<a@b.test>").await, "250 ok");
    assert_eq!(busy.cmd("RCPT TO:<x@ref.test>").await, "250 ok");
    let mut idle = Client::connect(server.port).await;
    idle.line().await.unwrap();
    assert_eq!(idle.cmd("NOOP").await, "250 ok");
    server.signal(SIGTERM);
    assert_eq!(
        idle.line().await.unwrap(),
        "421 mx.ref.test service shutting down, try again later (#4.3.2)"
    );
    assert_eq!(idle.line().await, None);
    // New connections are refused once the listener is closed.
    wait_log(&home, "shutting down").await;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", server.port))
            .await
            .is_err()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .is_err());
    assert_eq!(busy.cmd("DATA").await, "354 go ahead");
    busy.send("Subject: in flight\r\n\r\nstill delivered\r\n.\r\n")
        .await;
    assert!(busy.line().await.unwrap().starts_with("250 ok "));
    // After the transaction the session is closed at its next read.
    assert_eq!(
        busy.line().await.unwrap(),
        "421 mx.ref.test service shutting down, try again later (#4.3.2)"
    );
    assert_eq!(server.wait_exit(), 0);
    let msgs = home.maildir();
    assert_eq!(msgs.len(), 1);
    assert!(String::from_utf8_lossy(&msgs[0]).contains("still delivered"));
}

#[tokio::test]
async fn sigterm_deadline_closes_transactions_that_do_not_finish() {
    let home = TestHome::new();
    let server = Server::daemon_with(&home, &[], &["--shutdown-deadline", "1"]);
    let mut busy = Client::connect(server.port).await;
    busy.line().await.unwrap();
    assert_eq!(busy.cmd("MAIL FROM:<a@b.test>").await, "250 ok");
    server.signal(SIGTERM);
    assert_eq!(
        busy.line().await.unwrap(),
        "421 mx.ref.test service shutting down, try again later (#4.3.2)"
    );
    assert_eq!(server.wait_exit(), 0);
}

#[tokio::test]
async fn plugin_processes_are_capped_across_sessions() {
    let home = TestHome::new();
    // Each run holds a lock directory for a moment; a second concurrent run
    // would find it and record an overlap.
    let p = home.plugin(
        "lock",
        "#!/bin/sh\nif mkdir lock 2>/dev/null; then sleep 0.2; rmdir lock; else echo x >> overlaps; fi\necho run >> runs\n",
    );
    home.smtpplugins(&format!("[helo]\n{p}\n"));
    let server = Server::daemon_with(&home, &[], &["--max-plugins", "1"]);
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut c = Client::connect(server.port).await;
        c.line().await.unwrap();
        c.send("HELO x\r\n").await;
        clients.push(c);
    }
    for c in &mut clients {
        assert_eq!(c.line().await.unwrap(), "250 mx.ref.test");
    }
    let runs = std::fs::read_to_string(home.dir().join("runs")).unwrap();
    assert_eq!(runs.lines().count(), 4);
    assert!(
        !home.dir().join("overlaps").exists(),
        "plugins ran concurrently"
    );
}

#[test]
fn check_reports_bad_settings_and_rules_with_file_and_line() {
    let home = TestHome::new();
    home.write(
        "control/spp-smtpd.ini",
        "max-connections = lots\nflavour = mint\n",
    );
    home.write("control/tcp.smtp", "127.:allow\n1.2.3.4:maybe\n");
    let mut cmd = std::process::Command::new(crate::util::process::bin());
    cmd.arg("--home").arg(home.dir()).arg("check");
    let out = crate::util::process::run_with_input(cmd, b"", Duration::from_secs(30));
    assert_eq!(out.code, 1);
    let c = home.dir().join("control");
    assert!(
        out.stdout
            .contains(&format!("{}/spp-smtpd.ini:1: max-connections", c.display())),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(&format!("{}/spp-smtpd.ini:2: unknown key", c.display())),
        "{}",
        out.stdout
    );
    home.write("control/spp-smtpd.ini", "max-connections = 5\n");
    let mut cmd = std::process::Command::new(crate::util::process::bin());
    cmd.arg("--home").arg(home.dir()).arg("check");
    let out = crate::util::process::run_with_input(cmd, b"", Duration::from_secs(30));
    assert!(
        out.stdout.contains(&format!(
            "{}/tcp.smtp:2: expected allow or deny",
            c.display()
        )),
        "{}",
        out.stdout
    );
    // serve refuses to start with a broken rules file (EX_CONFIG).
    let mut cmd = std::process::Command::new(crate::util::process::bin());
    cmd.arg("--home")
        .arg(home.dir())
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:1");
    let out = crate::util::process::run_with_input(cmd, b"", Duration::from_secs(30));
    assert_eq!(out.code, 78, "{}", out.stderr);
    assert!(out.stderr.contains("tcp.smtp:2:"), "{}", out.stderr);
}

/// A `[helo]` plugin that reports what the session knows of its client.
fn client_reporter(home: &TestHome) {
    let p = home.plugin("who", "#!/bin/sh\necho \"P250-ip=$TCPREMOTEIP port=$TCPREMOTEPORT local=$TCPLOCALIP:$TCPLOCALPORT\"\n");
    home.smtpplugins(&format!("[helo]\n{p}\n"));
}

/// A PROXY v2 header for TCP over IPv4.
fn proxy_v2(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h
}

#[tokio::test]
async fn proxy_protocol_v1_and_v2_from_a_trusted_proxy_set_the_client_address() {
    let home = TestHome::new();
    client_reporter(&home);
    home.write(
        "control/tcp.smtp",
        "192.0.2.66:deny\n127.0.0.1:deny\n:allow\n",
    );
    let pport = crate::util::process::free_port();
    let listen = format!("127.0.0.1:{pport}");
    let _server = Server::daemon_with(
        &home,
        &[],
        &["--listen-proxy", &listen, "--proxy-from", "127.0.0.0/8"],
    );
    let mut v1 = Client::connect(pport).await;
    v1.send("PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\n")
        .await;
    assert!(v1.line().await.unwrap().starts_with("220 "));
    v1.send("HELO x\r\n").await;
    assert_eq!(
        v1.line().await.unwrap(),
        "250-ip=192.0.2.7 port=40000 local=198.51.100.1:25"
    );
    let mut v2 = Client::connect(pport).await;
    v2.send_bytes(&proxy_v2([203, 0, 113, 5], [198, 51, 100, 2], 1234, 587))
        .await;
    assert!(v2.line().await.unwrap().starts_with("220 "));
    v2.send("HELO x\r\n").await;
    assert_eq!(
        v2.line().await.unwrap(),
        "250-ip=203.0.113.5 port=1234 local=198.51.100.2:587"
    );
    // The rules see the proxied address.
    let mut denied = Client::connect(pport).await;
    denied
        .send("PROXY TCP4 192.0.2.66 198.51.100.1 40000 25\r\n")
        .await;
    assert_eq!(denied.line().await, None);
    // LOCAL/UNKNOWN: the client is unknown, so only the rule for everyone
    // applies, never the proxy's own (127.0.0.1 here).
    let mut unknown = Client::connect(pport).await;
    unknown.send("PROXY UNKNOWN\r\n").await;
    assert!(unknown.line().await.unwrap().starts_with("220 "));
    // A malformed header closes the connection.
    let mut bad = Client::connect(pport).await;
    bad.send("PROXY TCP4 999.0.2.7 198.51.100.1 40000 25\r\n")
        .await;
    assert_eq!(bad.line().await, None);
    let mut none = Client::connect(pport).await;
    none.send("EHLO no-header\r\n").await;
    assert_eq!(none.line().await, None);
}

#[tokio::test]
async fn proxy_header_from_an_untrusted_address_is_refused() {
    let home = TestHome::new();
    let pport = crate::util::process::free_port();
    let listen = format!("127.0.0.1:{pport}");
    let _server = Server::daemon_with(
        &home,
        &[],
        &["--listen-proxy", &listen, "--proxy-from", "10.0.0.0/8"],
    );
    let mut c = Client::connect(pport).await;
    c.send("PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\n")
        .await;
    assert_eq!(c.line().await, None);
    crate::daemon::wait_log(&home, "not a trusted proxy").await;
}

#[test]
fn stdio_proxy_header_sets_the_client_address() {
    let home = TestHome::new();
    client_reporter(&home);
    let out = crate::util::process::stdio(
        &home,
        &[
            ("TCPREMOTEIP", "127.0.0.1"),
            ("TCPREMOTEHOST", "proxy.test"),
        ],
        b"PROXY TCP6 2001:db8::7 2001:db8::1 50000 25\r\nHELO x\r\nQUIT\r\n",
    );
    assert_eq!(out.lines()[0], "220 mx.ref.test ESMTP", "{}", out.stdout);
    // stdio --proxy is opt-in: without it the header is a bad command.
    assert_eq!(out.lines()[1], "502 unimplemented (#5.5.1)");
    let proxied = |remote: &str, input: &[u8]| {
        let mut cmd = std::process::Command::new(crate::util::process::bin());
        cmd.arg("--home")
            .arg(home.dir())
            .args(["stdio", "--proxy", "--proxy-from", "127.0.0.0/8"])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("TCPREMOTEIP", remote)
            .env("RELAYCLIENT", "");
        crate::util::process::run_with_input(cmd, input, Duration::from_secs(30))
    };
    let out = proxied(
        "127.0.0.1",
        b"PROXY TCP6 2001:db8::7 2001:db8::1 50000 25\r\nHELO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@far.test>\r\nQUIT\r\n",
    );
    assert_eq!(
        out.lines()[1],
        "250-ip=2001:db8::7 port=50000 local=2001:db8::1:25",
        "{}",
        out.stdout
    );
    // The proxy's relay grant from tcpserver's rules is not the client's.
    assert_eq!(
        out.lines()[4],
        "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"
    );
    assert_eq!(out.code, 0);
    // A connection that does not come from a trusted proxy is closed.
    let out = proxied(
        "192.0.2.1",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 1 25\r\nQUIT\r\n",
    );
    assert_eq!((out.stdout.as_str(), out.code), ("", 1));
}

#[tokio::test]
async fn early_talker_gets_554_and_a_patient_client_its_greeting() {
    let home = TestHome::new();
    let server = Server::daemon_with(&home, &[], &["--greeting-delay", "1"]);
    let mut rude = Client::connect(server.port).await;
    rude.send("EHLO rude.test\r\n").await;
    assert_eq!(
        rude.line().await.unwrap(),
        "554 mx.ref.test talking before the greeting is not allowed (#5.5.1)"
    );
    assert_eq!(rude.line().await, None);
    let mut polite = Client::connect(server.port).await;
    assert_eq!(polite.line().await.unwrap(), "220 mx.ref.test ESMTP");
    assert_eq!(polite.cmd("EHLO polite.test").await, "250 CHUNKING");
}

#[test]
fn socket_activation_serves_on_the_passed_listener_and_notifies_systemd() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let home = TestHome::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let notify_path = home.dir().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let fd = listener.as_raw_fd();
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"")
        .arg(crate::util::process::bin())
        .arg("--home")
        .arg(home.dir())
        .arg("serve")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LISTEN_FDS", "1")
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(home.dir().join("daemon.log")).unwrap());
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0);
            } else {
                libc::dup2(fd, 3);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(listener);
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(&stream), &mut line).unwrap();
    assert_eq!(line, "220 mx.ref.test ESMTP\r\n");
    // The default 127.0.0.1:2525 is not bound when systemd passes sockets.
    assert!(
        !crate::daemon::log(&home).contains("127.0.0.1:2525"),
        "{}",
        crate::daemon::log(&home)
    );
    drop(stream);
    // SAFETY: signals only the child we started, by its PID.
    unsafe { libc::kill(child.id() as i32, SIGTERM) };
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert_eq!(
        crate::util::process::wait_bounded(&mut child, Duration::from_secs(30)),
        0
    );
}

#[tokio::test]
async fn test_daemons_get_their_listening_socket_passed_not_a_port_to_bind() {
    // A port chosen by binding and closing a socket could be taken by
    // another process before the daemon binds it; the test server gets
    // the bound socket instead (socket activation).
    let home = TestHome::new();
    let server = Server::daemon(&home, &[]);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", server.pid())).unwrap();
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    assert!(args.contains(&&b"serve"[..]), "{args:?}");
    assert!(!args.contains(&&b"--listen"[..]), "{args:?}");
    let mut c = Client::connect(server.port).await;
    assert_eq!(c.line().await.unwrap(), "220 mx.ref.test ESMTP");
    let listening = format!("listening addr=127.0.0.1:{} kind=Plain", server.port);
    assert_eq!(log(&home).matches(&listening).count(), 1, "{}", log(&home));
}

#[tokio::test]
async fn privileges_are_dropped_after_binding() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("SKIP: not root: dropping privileges cannot be tested here");
        return;
    }
    let home = TestHome::new();
    let p = home.plugin(
        "uid",
        "#!/bin/sh\necho \"P250-uid=$(id -u) gid=$(id -g)\"\n",
    );
    home.smtpplugins(&format!("[helo]\n{p}\n"));
    let server = Server::daemon_with(&home, &[], &["--user", "nobody", "--group", "nogroup"]);
    let mut c = Client::connect(server.port).await;
    assert!(c.line().await.unwrap().starts_with("220 "));
    c.send("HELO x\r\n").await;
    let (uid, _) = spp_smtpd::net::privileges::lookup_user("nobody").unwrap();
    let gid = spp_smtpd::net::privileges::lookup_group("nogroup").unwrap();
    assert_eq!(c.line().await.unwrap(), format!("250-uid={uid} gid={gid}"));
    wait_log(&home, "privileges dropped").await;
}

/// A `[helo]` plugin that reports TCPREMOTEHOST and a rule variable.
fn host_reporter(home: &TestHome) {
    let p = home.plugin(
        "host",
        "#!/bin/sh\necho \"P250-host=${TCPREMOTEHOST-unset} via=${VIA-none}\"\n",
    );
    home.smtpplugins(&format!("[helo]\n{p}\n"));
}

#[tokio::test]
async fn reverse_dns_sets_a_forward_confirmed_tcpremotehost() {
    // Client addresses come from PROXY headers (documentation prefixes,
    // never contacted): only DNS queries to the loopback dnsmasq happen.
    let dns = crate::util::process::DnsServer::start(&[
        "--host-record=client.test,192.0.2.7",
        "--ptr-record=8.2.0.192.in-addr.arpa,liar.test",
        "--address=/liar.test/198.51.100.99",
    ]);
    let home = TestHome::new();
    host_reporter(&home);
    home.write(
        "control/tcp.smtp",
        "=client.test:allow,VIA=\"name rule\"\n:allow\n",
    );
    let dns_server = format!("127.0.0.1:{}", dns.port);
    let pport = crate::util::process::free_port();
    let listen = format!("127.0.0.1:{pport}");
    let _server = Server::daemon_with(
        &home,
        &[],
        &[
            "--reverse-dns",
            "--dns-server",
            &dns_server,
            "--listen-proxy",
            &listen,
            "--proxy-from",
            "127.0.0.1",
        ],
    );
    let mut named = Client::connect(pport).await;
    named
        .send("PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\n")
        .await;
    named.line().await.unwrap();
    named.send("HELO client.test\r\n").await;
    assert_eq!(
        named.line().await.unwrap(),
        "250-host=client.test via=name rule"
    );
    named.line().await.unwrap();
    named.cmd("MAIL FROM:<a@b.test>").await;
    named.cmd("RCPT TO:<x@ref.test>").await;
    named.cmd("DATA").await;
    named.send("hi\r\n.\r\n").await;
    assert!(named.line().await.unwrap().starts_with("250 ok"));
    let msg = String::from_utf8_lossy(&home.maildir()[0]).into_owned();
    assert!(
        msg.contains("Received: from client.test (192.0.2.7)\n"),
        "{msg}"
    );
    // A PTR whose name does not resolve back is not believed.
    let mut liar = Client::connect(pport).await;
    liar.send("PROXY TCP4 192.0.2.8 198.51.100.1 40001 25\r\n")
        .await;
    liar.line().await.unwrap();
    liar.send("HELO x\r\n").await;
    assert_eq!(liar.line().await.unwrap(), "250-host=unset via=none");
    // No PTR at all.
    let mut unknown = Client::connect(pport).await;
    unknown
        .send("PROXY TCP4 192.0.2.9 198.51.100.1 40002 25\r\n")
        .await;
    unknown.line().await.unwrap();
    unknown.send("HELO x\r\n").await;
    assert_eq!(unknown.line().await.unwrap(), "250-host=unset via=none");
}

#[tokio::test]
async fn reverse_dns_timeout_leaves_the_name_unset() {
    // A DNS "server" that never answers: queries must reach it, and the
    // session must start anyway.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let dns_server = silent.local_addr().unwrap().to_string();
    let home = TestHome::new();
    host_reporter(&home);
    let pport = crate::util::process::free_port();
    let listen = format!("127.0.0.1:{pport}");
    let _server = Server::daemon_with(
        &home,
        &[],
        &[
            "--reverse-dns",
            "--dns-server",
            &dns_server,
            "--dns-timeout",
            "1",
            "--listen-proxy",
            &listen,
            "--proxy-from",
            "127.0.0.1",
        ],
    );
    let mut c = Client::connect(pport).await;
    c.send("PROXY TCP4 192.0.2.50 198.51.100.1 40000 25\r\n")
        .await;
    let started = std::time::Instant::now();
    assert!(c.line().await.unwrap().starts_with("220 "));
    assert!(started.elapsed() < Duration::from_secs(15));
    c.send("HELO x\r\n").await;
    assert_eq!(c.line().await.unwrap(), "250-host=unset via=none");
    let mut buf = [0u8; 512];
    let (n, _) = silent
        .recv_from(&mut buf)
        .expect("the query went to the configured server");
    assert!(n > 12);
}

#[tokio::test]
async fn ipv6_listener_serves_and_reports_the_client_address() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("SKIP: no IPv6 loopback here (::1 cannot be bound)");
        return;
    }
    let home = TestHome::new();
    client_reporter(&home);
    let port = crate::util::process::free_port();
    let v6 = format!("[::1]:{port}");
    let _server = Server::daemon_with(&home, &[], &["--listen", &v6]);
    let stream = tokio::net::TcpStream::connect(("::1", port)).await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut r = tokio::io::BufReader::new(r);
    let mut line = String::new();
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    r.read_line(&mut line).await.unwrap();
    assert_eq!(line, "220 mx.ref.test ESMTP\r\n");
    w.write_all(b"HELO x\r\n").await.unwrap();
    line.clear();
    r.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("250-ip=::1 port="), "{line}");
    assert!(line.contains(&format!("local=::1:{port}")), "{line}");
}

#[test]
fn journald_logging_falls_back_to_stderr_without_a_journal() {
    if std::path::Path::new("/run/systemd/journal/socket").exists() {
        eprintln!("SKIP: a journal socket exists here, so the fallback to stderr cannot be seen");
        return;
    }
    let home = TestHome::new();
    let mut cmd = std::process::Command::new(crate::util::process::bin());
    cmd.arg("--home")
        .arg(home.dir())
        .arg("--log")
        .arg("journald")
        .arg("stdio");
    let out = crate::util::process::run_with_input(cmd, b"QUIT\r\n", Duration::from_secs(30));
    assert_eq!(out.stdout, "220 mx.ref.test ESMTP\r\n221 mx.ref.test\r\n");
    assert!(
        out.stderr.contains("no journald socket; logging to stderr"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_sample_settings_file_passes_check() {
    let home = TestHome::new();
    let sample = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/spp-smtpd.ini"),
    )
    .unwrap();
    home.write("control/spp-smtpd.ini", sample);
    let mut cmd = std::process::Command::new(crate::util::process::bin());
    cmd.arg("--home").arg(home.dir()).arg("check");
    let out = crate::util::process::run_with_input(cmd, b"", Duration::from_secs(30));
    assert_eq!(out.code, 0, "{}", out.stdout);
}
