//! Per-plugin options (`#spp:` lines), persistent plugins and their
//! pools, and what a classic run leaves behind: through the in-memory
//! session driver (several sessions sharing one configuration snapshot,
//! as in the daemon) and through the real binary where the log matters.

use crate::util::process::{process_alive, stdio};
use crate::util::{Driver, TestHome};
use spp_smtpd::config::Config;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LOCAL: &[(&str, &str)] = &[("TCPREMOTEIP", "127.0.0.1"), ("TCPLOCALIP", "127.0.0.1")];

/// A Python plugin on the helper module, answering by recipient:
/// `crash@` exits at once, `slow@` sleeps 5 s, `pid@` refuses with its PID
/// in the text, `hook@` refuses with the hook and a variable it got;
/// anything else is accepted, and every answer appends the PID to
/// `pids` in the home.
fn pid_plugin(home: &TestHome) -> String {
    let lib = concat!(env!("CARGO_MANIFEST_DIR"), "/plugins-examples");
    home.plugin(
        "pid.py",
        &format!(
            r#"#!/usr/bin/env python3
import os, sys, time
sys.dont_write_bytecode = True
sys.path.insert(0, "{lib}")
import spp

def check(req):
    rcpt = req.env.get("SMTPRCPTTO", "")
    with open("pids", "a") as f:
        f.write("%d\n" % os.getpid())
    if rcpt.startswith("crash@"):
        os._exit(3)
    if rcpt.startswith("slow@"):
        time.sleep(5)
    if rcpt.startswith("pid@"):
        return "E550 pid %d" % os.getpid()
    if rcpt.startswith("hook@"):
        return "E550 %s %s %s" % (req.hook, req.env.get("SMTPMAILFROM"), "SPP_PERSISTENT" in req.env)
    return "N"

spp.serve(check)
"#
        ),
    )
}

/// The PIDs the pid plugin recorded, in order.
fn pids(home: &TestHome) -> Vec<u32> {
    std::fs::read_to_string(home.dir().join("pids"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

/// A session on `cfg` after HELO and MAIL.
async fn mail_session(cfg: &Arc<Config>) -> Driver {
    let mut s = Driver::start(cfg.clone(), LOCAL).await;
    s.greeting().await;
    s.cmd("HELO client.test").await.code(250);
    s.cmd("MAIL FROM:<a@example.org>").await.code(250);
    s
}

#[tokio::test]
async fn a_persistent_plugin_serves_many_sessions_from_one_process() {
    let home = TestHome::new();
    let p = pid_plugin(&home);
    home.smtpplugins(&format!("[rcpt]\n#spp: persistent workers=1\n{p}\n"));
    let cfg = home.config();
    for _ in 0..3 {
        let mut s = mail_session(&cfg).await;
        for r in ["a@ref.test", "b@ref.test"] {
            s.cmd(&format!("RCPT TO:<{r}>")).await.all(&["250 ok"]);
        }
        // The request carries the hook and the session's environment; the
        // process's own environment says it is persistent.
        s.cmd("RCPT TO:<hook@ref.test>")
            .await
            .all(&["550 rcpt a@example.org False"]);
        s.cmd("QUIT").await.code(221);
    }
    let seen = pids(&home);
    assert_eq!(seen.len(), 9);
    assert!(seen.iter().all(|&p| p == seen[0]), "{seen:?}");
    assert!(
        process_alive(seen[0]),
        "kept running while the snapshot lives"
    );
    drop(cfg);
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_alive(seen[0]) {
        assert!(Instant::now() < deadline, "killed with its snapshot");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_sppconffile_table_and_its_persistent_pool_serve_many_sessions() {
    let home = TestHome::new();
    let p = pid_plugin(&home);
    let table = format!("[rcpt]\n#spp: persistent workers=1\n{p}\n");
    home.write("control/other-plugins", &table);
    let cfg = home.config();
    let env = [LOCAL, &[("SPPCONFFILE", "control/other-plugins")]].concat();
    let session = || async {
        let mut s = Driver::start(cfg.clone(), &env).await;
        s.greeting().await;
        s.cmd("HELO client.test").await.code(250);
        s.cmd("MAIL FROM:<a@example.org>").await.code(250);
        s.cmd("RCPT TO:<a@ref.test>").await.all(&["250 ok"]);
        s.cmd("QUIT").await.code(221);
    };
    for _ in 0..3 {
        session().await;
    }
    let seen = pids(&home);
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|&p| p == seen[0]), "{seen:?}");
    // A changed file is read again, with a pool of its own.
    home.write("control/other-plugins", table + "\n");
    session().await;
    let seen = pids(&home);
    assert_eq!(seen.len(), 4);
    assert_ne!(seen[3], seen[0], "{seen:?}");
}

#[tokio::test]
async fn the_same_script_works_classic() {
    let home = TestHome::new();
    let p = pid_plugin(&home);
    home.smtpplugins(&format!("[rcpt]\n{p}\n"));
    let cfg = home.config();
    let mut s = mail_session(&cfg).await;
    s.cmd("RCPT TO:<a@ref.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<b@ref.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<hook@ref.test>")
        .await
        .all(&["550 None a@example.org False"]);
    let seen = pids(&home);
    assert_eq!(seen.len(), 3);
    assert!(seen[0] != seen[1] && seen[1] != seen[2], "{seen:?}");
}

#[tokio::test]
async fn a_crash_or_a_timeout_fails_one_request_and_the_next_gets_a_new_process() {
    let home = TestHome::new();
    let p = pid_plugin(&home);
    home.smtpplugins(&format!(
        "[rcpt]\n#spp: persistent workers=1 timeout=500ms\n{p}\n"
    ));
    let cfg = home.config();
    let mut s = mail_session(&cfg).await;
    s.cmd("RCPT TO:<a@ref.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<crash@ref.test>").await.all(&[&format!(
        "451 qmail-spp failure: {p}: child crashed (#4.3.0)"
    )]);
    s.cmd("RCPT TO:<b@ref.test>").await.all(&["250 ok"]);
    let started = Instant::now();
    s.cmd("RCPT TO:<slow@ref.test>")
        .await
        .all(&[&format!("451 qmail-spp failure: {p}: timeout (#4.3.0)")]);
    assert!(started.elapsed() < Duration::from_secs(3));
    s.cmd("RCPT TO:<c@ref.test>").await.all(&["250 ok"]);
    let seen = pids(&home);
    assert_eq!(seen.len(), 5, "{seen:?}");
    // a and crash: first process; b and slow: second; c: third.
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[2], seen[3]);
    assert!(seen[1] != seen[2] && seen[3] != seen[4], "{seen:?}");
    assert!(!process_alive(seen[3]), "the timed-out process is killed");
}

#[tokio::test]
async fn a_process_is_replaced_after_max_requests() {
    let home = TestHome::new();
    let p = pid_plugin(&home);
    home.smtpplugins(&format!(
        "[rcpt]\n#spp: persistent workers=1 max-requests=2\n{p}\n"
    ));
    let cfg = home.config();
    let mut s = mail_session(&cfg).await;
    for r in ["a", "b", "c", "d", "e"] {
        s.cmd(&format!("RCPT TO:<{r}@ref.test>"))
            .await
            .all(&["250 ok"]);
    }
    let seen = pids(&home);
    assert_eq!(seen.len(), 5);
    assert_eq!((seen[0], seen[2]), (seen[1], seen[3]));
    assert!(seen[1] != seen[2] && seen[3] != seen[4], "{seen:?}");
}

#[tokio::test]
async fn a_full_queue_gets_on_failure_at_once() {
    let home = TestHome::new();
    let p = pid_plugin(&home);
    home.smtpplugins(&format!(
        "[rcpt]\n#spp: persistent workers=1 queue=0 timeout=3s on-failure=accept\n{p}\n"
    ));
    let cfg = home.config();
    let mut busy = mail_session(&cfg).await;
    let mut other = mail_session(&cfg).await;
    // Start the worker, then keep it busy for 5 s (past the deadline).
    busy.cmd("RCPT TO:<a@ref.test>").await.all(&["250 ok"]);
    busy.send("RCPT TO:<slow@ref.test>\r\n").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids(&home).len() < 2 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    // No worker free and no room to wait: on-failure=accept, at once.
    other.cmd("RCPT TO:<pid@ref.test>").await.all(&["250 ok"]);
    assert!(started.elapsed() < Duration::from_secs(1));
    busy.reply().await.all(&["250 ok"]);
}

#[tokio::test]
async fn a_plugin_that_does_not_speak_the_protocol_fails_its_requests() {
    let home = TestHome::new();
    let p = home.plugin("mute", "#!/bin/sh\necho hello\nsleep 5\n");
    home.smtpplugins(&format!("[rcpt]\n#spp: persistent timeout=2s\n{p}\n"));
    let cfg = home.config();
    let mut s = mail_session(&cfg).await;
    s.cmd("RCPT TO:<a@ref.test>").await.all(&[&format!(
        "451 qmail-spp failure: {p}: protocol error (#4.3.0)"
    )]);
    // Restarts back off: the next request may wait for the delay but is
    // answered within its deadline.
    s.cmd("RCPT TO:<b@ref.test>").await.code(451);
}

#[tokio::test]
async fn on_failure_decides_what_a_failed_run_means() {
    let home = TestHome::new();
    for (policy, want) in [
        (
            "",
            "451 qmail-spp failure: :exit 120: can't execute (#4.3.0)",
        ),
        (
            "on-failure=tempfail",
            "451 qmail-spp failure: :exit 120: can't execute (#4.3.0)",
        ),
        (
            "on-failure=reject",
            "554 qmail-spp failure: :exit 120: can't execute (#5.3.0)",
        ),
        ("on-failure=skip", "551 second plugin"),
        ("on-failure=accept", "250 ok"),
    ] {
        let options = if policy.is_empty() {
            String::new()
        } else {
            format!("#spp: {policy}\n")
        };
        home.smtpplugins(&format!(
            "[rcpt]\n{options}:exit 120\n:echo E551 second plugin\n"
        ));
        let cfg = home.config();
        let mut s = mail_session(&cfg).await;
        s.cmd("RCPT TO:<a@ref.test>").await.all(&[want]);
    }
}

#[tokio::test]
async fn a_plugin_timeout_overrides_plugintimeout() {
    let home = TestHome::new();
    home.smtpplugins("[rcpt]\n#spp: timeout=300ms\n:sleep 5\n");
    let cfg = home.config();
    let mut s = mail_session(&cfg).await;
    let started = Instant::now();
    s.cmd("RCPT TO:<a@ref.test>")
        .await
        .all(&["451 qmail-spp failure: :sleep 5: timeout (#4.3.0)"]);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_persistent_body_plugin_reads_the_spooled_message() {
    let home = TestHome::new();
    let lib = concat!(env!("CARGO_MANIFEST_DIR"), "/plugins-examples");
    let p = home.plugin(
        "lines.py",
        &format!(
            "#!/usr/bin/env python3\nimport sys\nsys.dont_write_bytecode = True\nsys.path.insert(0, \"{lib}\")\nimport spp\n\
             def check(req):\n    with req.message() as m:\n        n = len(m.read().splitlines())\n    \
             return [\"HX-Lines: %d\" % n, \"N\"]\nspp.serve(check)\n"
        ),
    );
    home.smtpplugins(&format!("[body]\n#spp: persistent\n{p}\n"));
    let cfg = home.config();
    let mut s = mail_session(&cfg).await;
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    s.cmd("DATA").await.code(354);
    assert!(s
        .body("Subject: x\r\n\r\none\r\ntwo\r\n")
        .await
        .last()
        .starts_with("250 ok "));
    let msg = String::from_utf8(home.maildir().remove(0)).unwrap();
    // Received: (2 lines) + Subject, blank, one, two.
    assert!(msg.contains("X-Lines: 6\n"), "{msg}");
}

#[test]
fn observe_mode_logs_what_would_happen_and_changes_nothing() {
    let home = TestHome::new();
    home.smtpplugins(
        "[rcpt]\n#spp: mode=observe\n:echo HX-Observed: yes; echo E550 no such user\n",
    );
    let out = stdio(
        &home,
        LOCAL,
        b"HELO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@ref.test>\r\nDATA\r\nSubject: o\r\n\r\n.\r\nQUIT\r\n",
    );
    let lines = out.lines();
    assert_eq!(lines[3], "250 ok", "{lines:?}");
    assert!(lines[5].starts_with("250 ok "), "{lines:?}");
    assert!(
        out.stderr
            .contains("observe: would refuse: 550 no such user")
            && out.stderr.contains("hook=\"rcpt\""),
        "{}",
        out.stderr
    );
    let msg = String::from_utf8(home.maildir().remove(0)).unwrap();
    assert!(!msg.contains("X-Observed"), "{msg}");
}

#[test]
fn what_a_classic_plugin_leaves_in_its_process_group_is_killed() {
    let home = TestHome::new();
    home.smtpplugins("[rcpt]\n:(sleep 100 & echo $! > orphan.pid); echo N\n");
    let out = stdio(
        &home,
        LOCAL,
        b"HELO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@ref.test>\r\nQUIT\r\n",
    );
    assert_eq!(out.lines()[3], "250 ok", "{}", out.stdout);
    let pid: u32 = std::fs::read_to_string(home.dir().join("orphan.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while process_alive(pid) {
        assert!(Instant::now() < deadline, "sleep {pid} outlived its plugin");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_plugin_flooding_stderr_is_logged_within_bounds() {
    let home = TestHome::new();
    // 20,000 empty lines: the byte budget alone would never stop them.
    home.smtpplugins(
        "[rcpt]\n:i=0; while [ $i -lt 20000 ]; do echo; i=$((i+1)); done >&2; echo N\n",
    );
    let started = Instant::now();
    let out = stdio(
        &home,
        LOCAL,
        b"HELO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@ref.test>\r\nQUIT\r\n",
    );
    assert_eq!(out.lines()[3], "250 ok", "{}", out.stdout);
    let logged = out.stderr.matches("stderr: ").count();
    assert!((1..=200).contains(&logged), "{logged} lines logged");
    assert!(
        out.stderr.contains("dropped=19800") && out.stderr.contains("not logged"),
        "{}",
        &out.stderr[out.stderr.len().saturating_sub(500)..]
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn bad_options_refuse_the_plugin_file() {
    let home = TestHome::new();
    home.smtpplugins("[rcpt]\n#spp: timeout=soon mode=observe\n:echo N\n");
    let out = stdio(&home, LOCAL, b"HELO x\r\nQUIT\r\n");
    assert_eq!(out.lines(), ["421 unable to read controls (#4.3.0)"]);
    let smtpplugins = home.dir().join("control/smtpplugins");
    assert!(
        out.stderr.contains(&format!("{}:2", smtpplugins.display())),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn rcpt_allowlist_classic_and_persistent() {
    let home = TestHome::new();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/plugins-examples/rcpt-allowlist.py"
    );
    home.write("allowed", "# mailboxes\nBob@ref.test\n\ncarol@ref.test\n");
    for options in ["", "#spp: persistent\n"] {
        home.smtpplugins(&format!("[rcpt]\n{options}{script} allowed\n"));
        let cfg = home.config();
        let mut s = mail_session(&cfg).await;
        s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
        s.cmd("RCPT TO:<carol@REF.test>").await.all(&["250 ok"]);
        s.cmd("RCPT TO:<eve@ref.test>")
            .await
            .all(&["550 sorry, no mailbox here by that name (#5.1.1)"]);
        // A changed file is read again, also by a running process.
        home.write("allowed", "eve@ref.test\n");
        s.cmd("RCPT TO:<eve@ref.test>").await.all(&["250 ok"]);
        s.cmd("RCPT TO:<bob@ref.test>").await.code(550);
        home.write("allowed", "# mailboxes\nBob@ref.test\n\ncarol@ref.test\n");
    }
}

#[tokio::test]
async fn connection_rate_pl_is_a_persistent_plugin_in_perl() {
    let home = TestHome::new();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/plugins-examples/connection-rate.pl"
    );
    home.smtpplugins(&format!(
        "[connection]\n#spp: persistent workers=1\n{script} 2 60\n"
    ));
    let cfg = home.config();
    for _ in 0..2 {
        let mut s = Driver::start(cfg.clone(), LOCAL).await;
        s.greeting().await.all(&["220 mx.ref.test ESMTP"]);
    }
    let mut third = Driver::start(cfg.clone(), LOCAL).await;
    third
        .greeting()
        .await
        .all(&["421 too many connections from your address, try again later (#4.7.0)"]);
    assert_eq!(third.closed().await, 0);
    // Another address has its own count.
    let mut other = Driver::start(cfg.clone(), &[("TCPREMOTEIP", "127.0.0.9")]).await;
    other.greeting().await.code(220);
    // Run classic, it has no memory and accepts every connection.
    home.smtpplugins(&format!("[connection]\n{script} 2 60\n"));
    let cfg = home.config();
    for _ in 0..3 {
        let mut s = Driver::start(cfg.clone(), LOCAL).await;
        s.greeting().await.code(220);
    }
}
