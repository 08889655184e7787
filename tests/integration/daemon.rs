//! `spp-smtpd serve` as a production daemon: access rules, limits, reload,
//! graceful shutdown — over real sockets, with real signals.

use crate::util::client::Client;
use crate::util::process::Server;
use crate::util::TestHome;
use std::time::Duration;

const SIGHUP: i32 = 1;
const SIGTERM: i32 = 15;

/// Reads `daemon.log` (the server's stderr).
fn log(home: &TestHome) -> String {
    std::fs::read_to_string(home.dir().join("daemon.log")).unwrap_or_default()
}

/// Waits (bounded) until the daemon log contains `needle`.
async fn wait_log(home: &TestHome, needle: &str) {
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
    // The start-up probe's connection must be gone before counting.
    wait_log(&home, "connection closed").await;
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
