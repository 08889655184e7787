//! The `[body]` hook and the spool, through the in-memory session driver
//! with the Maildir and qmail-queue backends: what the plugin sees on
//! stdin and in its environment, what its verbs do, and that no spool file
//! outlives its transaction on any path.

use crate::util::{strip_received_date, TestHome};
use std::fs;
use std::time::Duration;

/// A `[body]` plugin that saves its stdin, its environment and what it
/// learns about stdin (seekable? writable?) under `seen/`, then prints
/// `output` (a printf format).
fn recording_body_plugin(home: &TestHome, output: &str) -> String {
    home.plugin(
        "body-record",
        &format!(
            r#"#!/bin/sh
mkdir -p seen
cat > seen/stdin
env > seen/env
python3 -c '
import os
print("seek", os.lseek(0, 0, os.SEEK_SET))
print("again", len(os.read(0, 1 << 20)))
try:
    os.write(0, b"x")
    print("writable")
except OSError:
    print("read-only")
' > seen/fd
printf '{output}'
"#
        ),
    )
}

/// Files in the spool directory.
fn spool_files(home: &TestHome) -> Vec<String> {
    match fs::read_dir(home.path.join("spool")) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test]
async fn body_plugin_reads_the_message_as_queued_and_adds_a_header() {
    let home = TestHome::new();
    let p = recording_body_plugin(&home, "HX-Scanned: yes\\nSSCANNED=1\\nN\\n");
    let q = home.plugin(
        "data-header",
        "#!/bin/sh\nprintf 'HX-From-Data: 1\\nN\\n'\n",
    );
    home.smtpplugins(&format!("[data]\n{q}\n[body]\n{p}\n"));
    home.install_qmail_queue();
    let mut s = home.session(&[]).await;
    s.greeting().await;
    s.cmd("HELO client.test").await.code(250);
    s.mail(
        "a@example.org",
        &["bob@ref.test", "carol@ref.test"],
        "Subject: hi\r\n\r\n..dot\r\nbody\r\n",
    )
    .await
    .code(250);
    let queued = home.queued();
    assert_eq!(queued.len(), 1);
    let (message, envelope, qenv) = &queued[0];
    let stdin = fs::read(home.path.join("seen/stdin")).unwrap();
    // The queued message is the plugin's stdin with its header on top.
    assert_eq!(
        message,
        &[b"X-Scanned: yes\n".to_vec(), stdin.clone()].concat()
    );
    let text = strip_received_date(&stdin);
    assert!(
        text.starts_with("Received: from unknown (HELO client.test)"),
        "{text}"
    );
    assert!(
        text.contains("\nX-From-Data: 1\nSubject: hi\n\n.dot\nbody\n"),
        "{text}"
    );
    assert_eq!(
        envelope,
        b"Fa@example.org\0Tbob@ref.test\0Tcarol@ref.test\0\0"
    );
    let env = fs::read_to_string(home.path.join("seen/env")).unwrap();
    assert!(
        env.contains("SMTPRCPTS=bob@ref.test\ncarol@ref.test\n"),
        "{env}"
    );
    assert!(
        env.contains(&format!("SMTPMESSAGESIZE={}\n", stdin.len())),
        "{env}"
    );
    assert!(env.contains("SMTPMAILFROM=a@example.org"), "{env}");
    let fd = fs::read_to_string(home.path.join("seen/fd")).unwrap();
    assert_eq!(
        fd,
        format!("seek 0\nagain {}\nread-only\n", stdin.len()),
        "stdin is a seekable, read-only file"
    );
    // S reaches the queue program; SMTPRCPTS does not outlive the hook.
    assert!(qenv.contains("SCANNED=1"), "{qenv}");
    assert!(!qenv.contains("SMTPRCPTS"), "{qenv}");
    assert!(spool_files(&home).is_empty(), "{:?}", spool_files(&home));
}

#[tokio::test]
async fn body_plugin_refusal_crash_and_disconnect() {
    let home = TestHome::new();
    let refuse = home.plugin(
        "refuse",
        "#!/bin/sh\ncat >/dev/null\nprintf 'E554 5.7.1 looks like spam\\n'\n",
    );
    home.smtpplugins(&format!("[body]\n{refuse}\n"));
    let mut s = home.session(&[]).await;
    s.greeting().await;
    s.mail("a@example.org", &["bob@ref.test"], "hi\r\n")
        .await
        .text("554 5.7.1 looks like spam");
    // The session goes on; a second message meets the same refusal.
    s.mail("a@example.org", &["bob@ref.test"], "again\r\n")
        .await
        .code(554);
    assert!(home.maildir().is_empty());
    assert!(spool_files(&home).is_empty());
    drop(s);

    let crash = home.plugin("crash", "#!/bin/sh\nkill -SEGV $$\n");
    home.smtpplugins(&format!("[body]\n{crash}\n"));
    let mut s = home.session(&[]).await;
    s.greeting().await;
    s.mail("a@example.org", &["bob@ref.test"], "hi\r\n")
        .await
        .text(&format!(
            "451 qmail-spp failure: {crash}: child crashed (#4.3.0)"
        ));
    assert!(home.maildir().is_empty());
    drop(s);

    let reject = home.plugin("reject", "#!/bin/sh\nprintf 'R421 go away\\n'\n");
    home.smtpplugins(&format!("[body]\n{reject}\n"));
    let mut s = home.session(&[]).await;
    s.greeting().await;
    s.mail("a@example.org", &["bob@ref.test"], "hi\r\n")
        .await
        .text("421 go away");
    assert_eq!(s.closed().await, 0);
    assert!(home.maildir().is_empty());
    assert!(spool_files(&home).is_empty());
}

#[tokio::test]
async fn body_plugin_timeout_gives_the_failure_line() {
    let home = TestHome::new();
    home.control("plugintimeout", "1\n");
    let slow = home.plugin("slow", "#!/bin/sh\nsleep 30\n");
    home.smtpplugins(&format!("[body]\n{slow}\n"));
    let mut s = home.session(&[]).await;
    s.greeting().await;
    s.mail("a@example.org", &["bob@ref.test"], "hi\r\n")
        .await
        .text(&format!("451 qmail-spp failure: {slow}: timeout (#4.3.0)"));
    assert!(home.maildir().is_empty());
    assert!(spool_files(&home).is_empty());
}

#[tokio::test]
async fn accepting_plugin_and_nospp_still_deliver() {
    let home = TestHome::new();
    let ok = home.plugin("ok", "#!/bin/sh\ncat >/dev/null\necho N\n");
    home.smtpplugins(&format!("[body]\n{ok}\n"));
    for env in [&[][..], &[("NOSPP", "")][..]] {
        let mut s = home.session(env).await;
        s.greeting().await;
        s.mail("a@example.org", &["bob@ref.test"], "hi\r\n")
            .await
            .code(250);
    }
    assert_eq!(home.maildir().len(), 2);
    assert!(spool_files(&home).is_empty());
}

#[tokio::test]
async fn no_spool_file_left_when_the_client_goes_away_or_the_message_is_refused() {
    let home = TestHome::new();
    let p = recording_body_plugin(&home, "N\\n");
    home.smtpplugins(&format!("[body]\n{p}\n"));
    home.control("databytes", "100\n");
    // Too big: refused after the dot, the plugin never runs.
    let mut s = home.session(&[]).await;
    s.greeting().await;
    let big = "x".repeat(200) + "\r\n";
    s.mail("a@example.org", &["bob@ref.test"], &big)
        .await
        .code(552);
    assert!(!home.path.join("seen").exists(), "plugin did not run");
    // The client leaves in the middle of the message.
    s.cmd("MAIL FROM:<a@example.org>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    s.cmd("DATA").await.code(354);
    s.send("half a message\r\n").await;
    // The spool file exists while the message is being received.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while spool_files(&home).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(spool_files(&home).len(), 1, "one file per transaction");
    s.hang_up().await;
    assert_eq!(s.closed().await, 1);
    assert!(spool_files(&home).is_empty(), "{:?}", spool_files(&home));
    assert!(home.maildir().is_empty());
}

#[tokio::test]
async fn client_timeout_during_data_leaves_no_spool_file() {
    let home = TestHome::new();
    home.control("timeoutsmtpd", "1\n");
    let p = recording_body_plugin(&home, "N\\n");
    home.smtpplugins(&format!("[body]\n{p}\n"));
    let mut s = home.session(&[]).await;
    s.greeting().await;
    s.cmd("MAIL FROM:<a@example.org>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    s.cmd("DATA").await.code(354);
    s.send("then silence\r\n").await;
    s.reply().await.text("451 timeout (#4.4.2)");
    assert!(spool_files(&home).is_empty());
    assert!(home.maildir().is_empty());
}

#[tokio::test]
async fn unusable_spool_directory_answers_451_before_354() {
    let home = TestHome::new();
    home.write("not-a-dir", "file");
    home.control("spooldir", "not-a-dir/spool\n");
    let p = home.plugin("ok", "#!/bin/sh\necho N\n");
    home.smtpplugins(&format!("[body]\n{p}\n"));
    let mut s = home.session(&[]).await;
    s.greeting().await;
    s.cmd("MAIL FROM:<a@example.org>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    s.cmd("DATA")
        .await
        .text("451 qq write error or disk full (#4.3.0)");
    // The session goes on.
    s.cmd("NOOP").await.code(250);
    assert!(home.maildir().is_empty());
}

#[test]
fn spool_files_of_a_killed_server_are_removed() {
    let home = TestHome::new();
    home.write("spool/spp.99999.1", "left behind");
    home.write("spool/unrelated", "kept");
    let p = home.plugin("ok", "#!/bin/sh\necho N\n");
    home.smtpplugins(&format!("[body]\n{p}\n"));
    let out = crate::util::process::stdio(
        &home,
        &[],
        b"HELO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@ref.test>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
    );
    assert!(
        out.lines().iter().any(|l| l.starts_with("250 ok")),
        "{:?}",
        out.lines()
    );
    assert_eq!(spool_files(&home), vec!["unrelated".to_string()]);
}

#[test]
fn transaction_log_records_the_body_verdict() {
    let home = TestHome::new();
    let refuse = home.plugin("refuse", "#!/bin/sh\nprintf 'E552 too spammy\\n'\n");
    home.smtpplugins(&format!("[body]\n{refuse}\n"));
    let out = crate::util::process::stdio(
        &home,
        &[],
        b"HELO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@ref.test>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n",
    );
    assert!(out.lines().contains(&"552 too spammy"), "{:?}", out.lines());
    let log = &out.stderr;
    assert!(
        log.contains("verdicts=\"body:refuse\"") && log.contains("refused by a [body] plugin"),
        "{log}"
    );
}

#[tokio::test]
async fn thousands_of_recipients_still_start_the_body_plugin() {
    let home = TestHome::new();
    let p = home.plugin(
        "count",
        "#!/bin/sh\nprintf '%s %s' \"$SMTPRCPTCOUNT\" \"$(printf '%s' \"$SMTPRCPTS\" | wc -l)\" > count\necho N\n",
    );
    home.smtpplugins(&format!("[body]\n{p}\n"));
    let mut s = home.session(&[]).await;
    s.greeting().await;
    s.cmd("MAIL FROM:<a@example.org>").await.code(250);
    let mut batch = String::new();
    for i in 0..3000 {
        batch.push_str(&format!("RCPT TO:<recipient-number-{i:05}@ref.test>\r\n"));
    }
    s.send(batch).await;
    for _ in 0..3000 {
        s.reply().await.code(250);
    }
    s.cmd("DATA").await.code(354);
    s.body("hi\r\n").await.code(250);
    let count = fs::read_to_string(home.path.join("count")).unwrap();
    let (total, listed) = count.split_once(' ').unwrap();
    assert_eq!(total, "3000");
    let listed: usize = listed.trim().parse().unwrap();
    assert!(listed > 1000 && listed < 3000, "{count}");
}

#[tokio::test]
async fn a_body_plugin_cannot_make_an_unqueued_message_look_accepted() {
    let home = TestHome::new();
    let p = home.plugin(
        "liar",
        "#!/bin/sh\nprintf 'P250 ok fake\\nE250 ok queued\\n'\n",
    );
    home.smtpplugins(&format!("[body]\n{p}\n"));
    let mut s = home.session(&[]).await;
    s.greeting().await;
    let r = s.mail("a@example.org", &["bob@ref.test"], "hi\r\n").await;
    r.all(&[&format!(
        "451 qmail-spp failure: {p}: refusal is not a 4xx or 5xx reply line (#4.3.0)"
    )]);
    assert!(home.maildir().is_empty());
}

#[tokio::test]
async fn headers_of_a_refused_message_do_not_reach_the_next_one() {
    let home = TestHome::new();
    let p = home.plugin(
        "leak",
        "#!/bin/sh\necho HX-Scanned: 1\ngrep -q bad && echo 'E554 no'\nexit 0\n",
    );
    home.smtpplugins(&format!("[body]\n{p}\n"));
    let mut s = home.session(&[]).await;
    s.greeting().await;
    s.mail("a@example.org", &["bob@ref.test"], "bad\r\n")
        .await
        .text("554 no");
    s.mail("a@example.org", &["bob@ref.test"], "good\r\n")
        .await
        .code(250);
    let stored = String::from_utf8_lossy(&home.maildir()[0]).into_owned();
    assert_eq!(stored.matches("X-Scanned: 1").count(), 1, "{stored}");
}

#[tokio::test]
async fn a_continuation_line_is_not_a_body_refusal() {
    let home = TestHome::new();
    let p = home.plugin("cont", "#!/bin/sh\nprintf 'E451-wait for it\\n'\n");
    home.smtpplugins(&format!("[body]\n{p}\n"));
    let mut s = home.session(&[]).await;
    s.greeting().await;
    s.mail("a@example.org", &["bob@ref.test"], "hi\r\n")
        .await
        .all(&[&format!(
            "451 qmail-spp failure: {p}: refusal is not a 4xx or 5xx reply line (#4.3.0)"
        )]);
}
