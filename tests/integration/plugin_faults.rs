//! Misbehaving plugins: each gets the specified reply, the session goes on,
//! and no process is left behind.

use crate::util::process::process_alive;
use crate::util::{Driver, TestHome};
use std::time::{Duration, Instant};

const ENV: &[(&str, &str)] = &[("TCPREMOTEIP", "127.0.0.1")];

/// Starts a session whose `[mail]` hook runs `line`, greets, and returns it.
async fn mail_hook_session(home: &TestHome, line: &str) -> Driver {
    home.smtpplugins(&format!("[mail]\n{line}\n"));
    let mut s = home.session(ENV).await;
    s.greeting().await.code(220);
    s
}

/// The session still works: a MAIL without plugins left and a NOOP.
async fn session_goes_on(s: &mut Driver) {
    s.cmd("NOOP").await.text("250 ok");
}

/// Waits until none of the PIDs written to `files` is alive (bounded).
fn assert_gone(home: &TestHome, files: &[&str]) {
    let pids: Vec<u32> = files
        .iter()
        .map(|f| {
            let p = home.dir().join(f);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(s) = std::fs::read_to_string(&p) {
                    if let Ok(pid) = s.trim().parse() {
                        break pid;
                    }
                }
                assert!(Instant::now() < deadline, "{f} was never written");
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&p| process_alive(p)) {
        assert!(Instant::now() < deadline, "processes left behind: {pids:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn missing_plugin_cant_execute() {
    let home = TestHome::new();
    let mut s = mail_hook_session(&home, "plugins/does-not-exist").await;
    s.cmd("MAIL FROM:<a@b.test>")
        .await
        .all(&["451 qmail-spp failure: plugins/does-not-exist: can't execute (#4.3.0)"]);
    session_goes_on(&mut s).await;
}

#[tokio::test]
async fn plugin_without_execute_permission_cant_execute() {
    let home = TestHome::new();
    let rel = home.plugin("noexec", "#!/bin/sh\necho E550 never\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        home.dir().join(&rel),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let mut s = mail_hook_session(&home, &rel).await;
    s.cmd("MAIL FROM:<a@b.test>")
        .await
        .all(&["451 qmail-spp failure: plugins/noexec: can't execute (#4.3.0)"]);
    session_goes_on(&mut s).await;
}

#[tokio::test]
async fn plugin_exit_120_cant_execute_after_its_output_took_effect() {
    let home = TestHome::new();
    let rel = home.plugin("e120", "#!/bin/sh\necho P250-before\nexit 120\n");
    let mut s = mail_hook_session(&home, &rel).await;
    s.cmd("MAIL FROM:<a@b.test>").await.all(&[
        "250-before",
        "451 qmail-spp failure: plugins/e120: can't execute (#4.3.0)",
    ]);
    s.cmd("RCPT TO:<x@ref.test>")
        .await
        .text("503 MAIL first (#5.5.1)");
}

#[tokio::test]
async fn plugin_killed_by_signal_child_crashed() {
    let home = TestHome::new();
    let rel = home.plugin("crash", "#!/bin/sh\necho E550 said first\nkill -SEGV $$\n");
    let mut s = mail_hook_session(&home, &rel).await;
    // Output printed before the crash takes effect: the E line goes out,
    // then the failure line.
    s.send("MAIL FROM:<a@b.test>\r\n").await;
    assert_eq!(
        s.lines(2).await,
        [
            "550 said first",
            "451 qmail-spp failure: plugins/crash: child crashed (#4.3.0)"
        ]
    );
    session_goes_on(&mut s).await;
    home.smtpplugins("[mail]\nplugins/crash2\n");
    let rel2 = home.plugin("crash2", "#!/bin/sh\nkill -KILL $$\n");
    assert_eq!(rel2, "plugins/crash2");
    let mut s2 = home.session(ENV).await;
    s2.greeting().await;
    s2.cmd("MAIL FROM:<a@b.test>")
        .await
        .all(&["451 qmail-spp failure: plugins/crash2: child crashed (#4.3.0)"]);
    session_goes_on(&mut s2).await;
}

#[tokio::test]
async fn hung_plugin_times_out_and_its_process_group_is_killed() {
    let home = TestHome::new();
    home.control("plugintimeout", "1\n");
    let rel = home.plugin(
        "hang",
        "#!/bin/sh\necho $$ > hang.pid\n(echo $$ > /dev/null; exec sleep 300) &\necho $! > grandchild.pid\nexec sleep 300\n",
    );
    let mut s = mail_hook_session(&home, &rel).await;
    s.cmd("MAIL FROM:<a@b.test>")
        .await
        .all(&["451 qmail-spp failure: plugins/hang: timeout (#4.3.0)"]);
    assert_gone(&home, &["hang.pid", "grandchild.pid"]);
    session_goes_on(&mut s).await;
}

#[tokio::test]
async fn plugin_that_closes_stdout_but_keeps_running_times_out() {
    let home = TestHome::new();
    home.control("plugintimeout", "1\n");
    let rel = home.plugin(
        "linger",
        "#!/bin/sh\necho $$ > linger.pid\nexec >&-\nexec sleep 300\n",
    );
    let mut s = mail_hook_session(&home, &rel).await;
    s.cmd("MAIL FROM:<a@b.test>")
        .await
        .all(&["451 qmail-spp failure: plugins/linger: timeout (#4.3.0)"]);
    assert_gone(&home, &["linger.pid"]);
    session_goes_on(&mut s).await;
}

#[tokio::test]
async fn plugin_printing_one_mebibyte_is_killed_as_too_much_output() {
    let home = TestHome::new();
    let rel = home.plugin(
        "flood",
        "#!/bin/sh\necho $$ > flood.pid\nhead -c 1048576 /dev/zero | tr '\\0' x\n",
    );
    let mut s = mail_hook_session(&home, &rel).await;
    s.cmd("MAIL FROM:<a@b.test>")
        .await
        .all(&["451 qmail-spp failure: plugins/flood: too much output (#4.3.0)"]);
    assert_gone(&home, &["flood.pid"]);
    session_goes_on(&mut s).await;
}

#[tokio::test]
async fn plugin_printing_too_many_directives_fails() {
    let home = TestHome::new();
    let rel = home.plugin(
        "many",
        "#!/bin/sh\ni=0\nwhile [ $i -lt 1100 ]; do echo HX-A: $i; i=$((i+1)); done\n",
    );
    let mut s = mail_hook_session(&home, &rel).await;
    s.cmd("MAIL FROM:<a@b.test>")
        .await
        .all(&["451 qmail-spp failure: plugins/many: too much output (#4.3.0)"]);
    session_goes_on(&mut s).await;
}

#[tokio::test]
async fn plugin_that_keeps_printing_after_its_verdict_is_cut_off_and_the_verdict_stands() {
    let home = TestHome::new();
    let rel = home.plugin(
        "chatty",
        "#!/bin/sh\necho $$ > chatty.pid\necho E553 no thanks\nexec yes\n",
    );
    let mut s = mail_hook_session(&home, &rel).await;
    s.cmd("MAIL FROM:<a@b.test>").await.all(&["553 no thanks"]);
    assert_gone(&home, &["chatty.pid"]);
    session_goes_on(&mut s).await;
}

#[tokio::test]
async fn plugin_output_after_the_verdict_is_drained_not_reported_as_crash() {
    let home = TestHome::new();
    // Prints a verdict then 32 KiB more; with SIGPIPE at its default it
    // would die if the pipe were closed early.
    let rel = home.plugin(
        "tail",
        "#!/bin/sh\necho N\nhead -c 32768 /dev/zero | tr '\\0' y\necho\n",
    );
    let mut s = mail_hook_session(&home, &rel).await;
    s.cmd("MAIL FROM:<a@b.test>").await.all(&["250 ok"]);
}

#[tokio::test]
async fn no_zombies_after_many_plugin_runs() {
    let home = TestHome::new();
    let rel = home.plugin("pid", "#!/bin/sh\necho $$ >> pids\n");
    let mut s = mail_hook_session(&home, &rel).await;
    for _ in 0..20 {
        s.cmd("MAIL FROM:<a@b.test>").await.text("250 ok");
    }
    let pids: Vec<u32> = std::fs::read_to_string(home.dir().join("pids"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 20);
    for pid in pids {
        assert!(
            !crate::util::process::process_exists(pid),
            "pid {pid} not reaped"
        );
    }
}

#[tokio::test]
async fn background_job_holding_stdout_does_not_delay_or_override_the_verdict() {
    let home = TestHome::new();
    home.control("plugintimeout", "5\n");
    // The plugin exits at once; its background child keeps stdout open.
    let rel = home.plugin(
        "bg",
        "#!/bin/sh\necho N\n(echo $$ > /dev/null; exec sleep 300) &\necho $! > bg.pid\nexit 0\n",
    );
    let mut s = mail_hook_session(&home, &rel).await;
    let started = Instant::now();
    s.cmd("MAIL FROM:<a@b.test>").await.all(&["250 ok"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited for the background job"
    );
    session_goes_on(&mut s).await;
    // The background job is the plugin's own business; clean it up.
    let pid: i32 = std::fs::read_to_string(home.dir().join("bg.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::process::Command::new("kill")
        .arg(pid.to_string())
        .status()
        .unwrap();
}

#[tokio::test]
async fn plugin_running_past_the_deadline_after_its_verdict_is_killed_and_the_verdict_stands() {
    let home = TestHome::new();
    home.control("plugintimeout", "1\n");
    let rel = home.plugin(
        "late",
        "#!/bin/sh\necho $$ > late.pid\necho 'E550 no thanks'\nexec sleep 300\n",
    );
    let mut s = mail_hook_session(&home, &rel).await;
    s.cmd("MAIL FROM:<a@b.test>").await.all(&["550 no thanks"]);
    assert_gone(&home, &["late.pid"]);
    // Exactly one reply per command: the next one is NOOP's.
    session_goes_on(&mut s).await;
}

#[tokio::test]
async fn huge_plugintimeout_is_clamped_not_a_crash() {
    let home = TestHome::new();
    home.control("plugintimeout", "99999999999999999999\n");
    let rel = home.plugin("ok", "#!/bin/sh\necho E551 fine\n");
    let mut s = mail_hook_session(&home, &rel).await;
    s.cmd("MAIL FROM:<a@b.test>").await.all(&["551 fine"]);
}
