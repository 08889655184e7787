//! The smtp, lmtp and sendmail backends against scripted peers: exactly
//! what goes on the wire, and what each downstream fault gives the client
//! (421 at connect, refusals at MAIL, RCPT and end of data, a stall, a
//! connection lost in the middle of the data, mixed LMTP results). The
//! same backends against a real Postfix and Dovecot are in `real_mta`.

use crate::util::process::free_port;
use crate::util::TestHome;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The scripted SMTP/LMTP server (`fixtures/scripted-mta.py`), stopped by
/// PID when dropped.
pub(crate) struct ScriptedMta {
    child: Child,
    /// TCP port (0 with a unix socket).
    pub(crate) port: u16,
    /// Where it records connections and messages.
    dir: PathBuf,
}

impl ScriptedMta {
    /// Starts it with `script` (JSON) on a free port, or on `socket`.
    fn start(home: &TestHome, script: &str, socket: Option<&str>) -> ScriptedMta {
        let port = if socket.is_some() { 0 } else { free_port() };
        ScriptedMta::start_on(home, script, socket, port, "scripted")
    }

    /// Starts it on `port` (or `socket`), recording under `HOME/<name>`.
    fn start_on(
        home: &TestHome,
        script: &str,
        socket: Option<&str>,
        port: u16,
        name: &str,
    ) -> ScriptedMta {
        let dir = home.path.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("script.json"), script).unwrap();
        let where_ = match socket {
            Some(s) => home.path.join(s).display().to_string(),
            None => port.to_string(),
        };
        let child = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/integration/fixtures/scripted-mta.py"
            ))
            .arg(dir.join("script.json"))
            .arg(where_)
            .arg(dir.join("rec"))
            .stdin(Stdio::null())
            .spawn()
            .expect("python3");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !dir.join("rec/ready").exists() {
            assert!(Instant::now() < deadline, "scripted MTA did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        ScriptedMta { child, port, dir }
    }

    /// Bytes received on connection `n` (1-based).
    pub(crate) fn conn(&self, n: usize) -> String {
        String::from_utf8_lossy(
            &std::fs::read(self.dir.join(format!("rec/conn-{n}"))).unwrap_or_default(),
        )
        .into_owned()
    }

    /// Connections made so far.
    pub(crate) fn connections(&self) -> usize {
        (1..)
            .take_while(|n| self.dir.join(format!("rec/conn-{n}")).exists())
            .count()
    }

    /// The messages received, as on the wire (CRLF, dot-stuffed).
    pub(crate) fn messages(&self) -> Vec<Vec<u8>> {
        (1..)
            .map(|n| self.dir.join(format!("rec/msg-{n}")))
            .take_while(|p| p.exists())
            .map(|p| std::fs::read(p).unwrap())
            .collect()
    }
}

impl Drop for ScriptedMta {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A home whose queue is `queue LINE` with the scripted MTA's port.
pub(crate) fn forwarding_home(
    script: &str,
    queue: impl Fn(u16) -> String,
) -> (TestHome, ScriptedMta) {
    let home = TestHome::new();
    let mta = ScriptedMta::start(&home, script, None);
    home.control("queue", format!("{}\n", queue(mta.port)));
    (home, mta)
}

#[tokio::test]
async fn smtp_forward_puts_correct_smtp_on_the_wire() {
    let (home, mta) = forwarding_home("{}", |p| format!("smtp 127.0.0.1:{p}"));
    let mut s = home.session(&[]).await;
    s.greeting().await;
    s.cmd("EHLO client.test").await.code(250);
    s.cmd("MAIL FROM:<a@example.org> BODY=8BITMIME")
        .await
        .code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    s.cmd("RCPT TO:<carol@ref.test>").await.code(250);
    s.cmd("DATA").await.code(354);
    s.body("Subject: t\r\n\r\n..dot\r\n..\r\nplain é\r\n")
        .await
        .text("250 ok 2.0.0 queued as X");
    let wire = mta.conn(1);
    assert!(wire.starts_with("EHLO mx.ref.test\r\n"), "{wire}");
    assert!(
        wire.contains("MAIL FROM:<a@example.org> SIZE=")
            && wire.contains(
                " BODY=8BITMIME\r\nRCPT TO:<bob@ref.test>\r\nRCPT TO:<carol@ref.test>\r\nDATA\r\n"
            ),
        "{wire}"
    );
    let msgs = mta.messages();
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert!(m.starts_with(b"Received: from unknown (HELO client.test)"));
    assert!(m.ends_with(b"Subject: t\r\n\r\n..dot\r\n..\r\nplain \xc3\xa9\r\n.\r\n"));
    for (i, &b) in m.iter().enumerate() {
        if b == b'\n' {
            assert_eq!(m[i - 1], b'\r', "bare LF at {i}");
        }
        if b == b'\r' {
            assert_eq!(m[i + 1], b'\n', "bare CR at {i}");
        }
    }
    // A second message reuses the connection, after RSET.
    s.mail("a@example.org", &["bob@ref.test"], "second\r\n")
        .await
        .code(250);
    assert_eq!(mta.connections(), 1);
    assert!(mta
        .conn(1)
        .contains("\r\nRSET\r\nMAIL FROM:<a@example.org>"));
    assert_eq!(mta.messages().len(), 2);
    // Without BODY=8BITMIME from the client, none goes downstream.
    assert!(!mta.conn(1).split("RSET").nth(1).unwrap().contains("BODY="));
}

#[tokio::test]
async fn recipient_refused_downstream_without_verification_refuses_the_message() {
    let script = r#"{"rcpt": {"nobody@ref.test": "550 5.1.1 <nobody@ref.test>: user unknown"}}"#;
    let (home, mta) = forwarding_home(script, |p| format!("smtp 127.0.0.1:{p}"));
    let mut s = home.session(&[]).await;
    s.greeting().await;
    s.mail(
        "a@example.org",
        &["bob@ref.test", "nobody@ref.test"],
        "hi\r\n",
    )
    .await
    .text("550 5.1.1 <nobody@ref.test>: user unknown");
    assert!(mta.messages().is_empty(), "nothing delivered to anyone");
    // The connection is still good for the next message.
    s.mail("a@example.org", &["bob@ref.test"], "hi\r\n")
        .await
        .code(250);
    assert_eq!(mta.messages().len(), 1);
}

#[tokio::test]
async fn recipient_verification_gives_the_downstream_refusal_at_rcpt() {
    let script = r#"{"rcpt": {"nobody@ref.test": "550 5.1.1 <nobody@ref.test>: user unknown", "later@ref.test": "450 4.2.0 try later"}}"#;
    let (home, mta) = forwarding_home(script, |p| format!("smtp 127.0.0.1:{p} verify-rcpt=yes"));
    let mut s = home.session(&[]).await;
    s.greeting().await;
    s.cmd("MAIL FROM:<a@example.org>").await.code(250);
    s.cmd("RCPT TO:<nobody@ref.test>")
        .await
        .text("550 5.1.1 <nobody@ref.test>: user unknown");
    s.cmd("RCPT TO:<later@ref.test>")
        .await
        .text("450 4.2.0 try later");
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    // Our own checks still come first: not in rcpthosts.
    s.cmd("RCPT TO:<x@elsewhere.test>").await.code(553);
    s.cmd("DATA").await.code(354);
    s.body("hi\r\n").await.code(250);
    let wire = mta.conn(1);
    assert!(!wire.contains("elsewhere"), "{wire}");
    assert_eq!(mta.messages().len(), 1);
    // RSET ends the downstream transaction too.
    s.cmd("MAIL FROM:<a@example.org>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    s.cmd("RSET").await.code(250);
    s.mail("b@example.org", &["bob@ref.test"], "two\r\n")
        .await
        .code(250);
    assert_eq!(mta.messages().len(), 2);
}

#[tokio::test]
async fn greeting_421_and_refused_connection_give_451() {
    let (home, mta) = forwarding_home(r#"{"greeting": "421 4.3.2 busy"}"#, |p| {
        format!("smtp 127.0.0.1:{p}")
    });
    let mut s = home.session(&[]).await;
    s.greeting().await;
    s.mail("a@example.org", &["bob@ref.test"], "hi\r\n")
        .await
        .text("451 4.3.2 busy");
    // The session goes on (421 from the downstream does not close it).
    s.cmd("NOOP").await.code(250);
    drop(mta);
    let port = free_port();
    home.control("queue", format!("smtp 127.0.0.1:{port}\n"));
    let mut s = home.session(&[]).await;
    s.greeting().await;
    s.mail("a@example.org", &["bob@ref.test"], "hi\r\n")
        .await
        .text("451 connection to mail server failed (#4.4.1)");
}

#[tokio::test]
async fn refusals_at_mail_and_end_of_data_are_relayed_sanitised() {
    let (home, mta) = forwarding_home(r#"{"mail": "553 5.7.1 sender \u001b[31mrejected"}"#, |p| {
        format!("smtp 127.0.0.1:{p}")
    });
    let mut s = home.session(&[]).await;
    s.greeting().await;
    s.mail("a@example.org", &["bob@ref.test"], "hi\r\n")
        .await
        .text("553 5.7.1 sender ?[31mrejected");
    drop(s);
    drop(mta);
    let (home, mta) = forwarding_home(r#"{"final": "554 5.6.0 content rejected"}"#, |p| {
        format!("smtp 127.0.0.1:{p}")
    });
    let mut s = home.session(&[]).await;
    s.greeting().await;
    s.mail("a@example.org", &["bob@ref.test"], "hi\r\n")
        .await
        .text("554 5.6.0 content rejected");
    let (_h, _m) = (home, mta);
}

#[tokio::test]
async fn stalled_downstream_and_lost_connection_give_451() {
    let (home, _mta) = forwarding_home(r#"{"final_delay": 5}"#, |p| {
        format!("smtp 127.0.0.1:{p} timeout=1s")
    });
    let mut s = home.session(&[]).await;
    s.greeting().await;
    let started = Instant::now();
    s.mail("a@example.org", &["bob@ref.test"], "hi\r\n")
        .await
        .text("451 connection to mail server timed out (#4.4.1)");
    assert!(started.elapsed() < Duration::from_secs(4));
    drop(s);
    let (home, _mta) = forwarding_home(r#"{"close_in_data": true}"#, |p| {
        format!("smtp 127.0.0.1:{p}")
    });
    let mut s = home.session(&[]).await;
    s.greeting().await;
    let body = "line\r\n".repeat(20_000);
    s.mail("a@example.org", &["bob@ref.test"], &body)
        .await
        .text("451 communication with mail server failed (#4.4.2)");
}

#[tokio::test]
async fn lmtp_results_per_recipient() {
    let home = TestHome::new();
    let script = r#"{"lmtp": true, "final_by_rcpt": {"full@ref.test": "452 4.2.2 <full@ref.test> over quota", "gone@ref.test": "550 5.1.1 <gone@ref.test> gone"}}"#;
    let mta = ScriptedMta::start(&home, script, Some("lmtp.sock"));
    home.control(
        "queue",
        format!("lmtp {}\n", home.path.join("lmtp.sock").display()),
    );
    let mut s = home.session(&[]).await;
    s.greeting().await;
    s.mail(
        "a@example.org",
        &["bob@ref.test", "carol@ref.test"],
        "hi\r\n",
    )
    .await
    .text("250 ok delivered to 2 recipients: 2.0.0 <bob@ref.test> saved");
    assert!(mta.conn(1).starts_with("LHLO mx.ref.test\r\n"));
    // A temporary failure of one recipient: 4xx, so the client retries.
    s.mail(
        "a@example.org",
        &["bob@ref.test", "full@ref.test"],
        "hi\r\n",
    )
    .await
    .text("452 4.2.2 <full@ref.test> over quota");
    // A permanent failure of one: its 5xx, so the sender hears of it.
    s.mail(
        "a@example.org",
        &["bob@ref.test", "gone@ref.test"],
        "hi\r\n",
    )
    .await
    .text("550 5.1.1 <gone@ref.test> gone");
    // Both: the temporary one wins.
    s.mail(
        "a@example.org",
        &["gone@ref.test", "full@ref.test"],
        "hi\r\n",
    )
    .await
    .code(452);
}

/// A sendmail stand-in: records its arguments and stdin, exits with the
/// status in `sendmail-exit` (or kills itself with `crash`).
const FAKE_SENDMAIL: &str = r#"#!/bin/sh
mkdir -p sent
n=$$
printf '%s\n' "$@" > sent/$n.args
cat > sent/$n.msg
code=$(cat sendmail-exit 2>/dev/null || echo 0)
[ "$code" = crash ] && kill -SEGV $$
exit $code
"#;

#[tokio::test]
async fn sendmail_backend_arguments_and_exit_codes() {
    let home = TestHome::new();
    home.write("bin/sendmail", FAKE_SENDMAIL);
    std::fs::set_permissions(
        home.path.join("bin/sendmail"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    home.control("queue", "sendmail bin/sendmail\n");
    let mut s = home.session(&[]).await;
    s.greeting().await;
    s.mail(
        "",
        &["-bob@ref.test", "carol@ref.test"],
        "Subject: x\r\n\r\n..x\r\n",
    )
    .await
    .text("250 ok handed to sendmail");
    let sent: Vec<PathBuf> = std::fs::read_dir(home.path.join("sent"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let args = sent
        .iter()
        .find(|p| p.extension().unwrap() == "args")
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(args).unwrap(),
        "-i\n-f\n<>\n--\n-bob@ref.test\ncarol@ref.test\n"
    );
    let msg = std::fs::read_to_string(args.with_extension("msg")).unwrap();
    assert!(msg.starts_with("Received: "), "{msg}");
    assert!(msg.ends_with("Subject: x\n\n.x\n"), "{msg}");
    for (exit, reply) in [
        ("75", "451 sendmail temporary failure, exit 75 (#4.3.0)"),
        ("69", "554 sendmail permanent failure, exit 69 (#5.3.0)"),
        ("crash", "451 sendmail crashed (#4.3.0)"),
    ] {
        home.write("sendmail-exit", exit);
        s.mail("a@example.org", &["bob@ref.test"], "hi\r\n")
            .await
            .text(reply);
    }
    drop(s);
    home.control("queue", "sendmail bin/missing\n");
    let mut s = home.session(&[]).await;
    s.greeting().await;
    s.mail("a@example.org", &["bob@ref.test"], "hi\r\n")
        .await
        .text("451 unable to exec sendmail (#4.3.0)");
}

#[tokio::test]
async fn a_pooled_connection_closed_by_a_restarted_downstream_is_replaced() {
    let (home, first) = forwarding_home("{}", |p| format!("smtp 127.0.0.1:{p}"));
    let port = first.port;
    let mut s = home.session(&[]).await;
    s.greeting().await;
    s.mail("a@example.org", &["bob@ref.test"], "one\r\n")
        .await
        .code(250);
    drop(first);
    let second = ScriptedMta::start_on(&home, "{}", None, port, "restarted");
    s.mail("a@example.org", &["bob@ref.test"], "two\r\n")
        .await
        .code(250);
    assert_eq!(second.messages().len(), 1);
    assert!(
        !second.conn(1).contains("RSET"),
        "the message went on a new connection"
    );
}

#[tokio::test]
async fn addresses_another_mta_would_route_elsewhere_are_refused() {
    let (home, mta) = forwarding_home("{}", |p| format!("smtp 127.0.0.1:{p}"));
    home.write("bin/sendmail", FAKE_SENDMAIL);
    std::fs::set_permissions(
        home.path.join("bin/sendmail"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let form = "553 sorry, that address form is not accepted here (#5.1.3)";
    for queue in [
        format!("smtp 127.0.0.1:{}", mta.port),
        "sendmail bin/sendmail".to_string(),
    ] {
        home.control("queue", format!("{queue}\n"));
        let mut s = home.session(&[]).await;
        s.greeting().await;
        s.cmd("MAIL FROM:<a,b@example.org>").await.text(form);
        s.cmd("MAIL FROM:<a@example.org>").await.code(250);
        for rcpt in [
            "<evil@remote.test,bob@ref.test>",
            "<evil%remote.test@ref.test>",
            "<remote.test!evil@ref.test>",
            "<\"evil@remote.test\"@ref.test>",
        ] {
            s.cmd(&format!("RCPT TO:{rcpt}")).await.text(form);
        }
        s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
        s.cmd("QUIT").await.code(221);
    }
    assert!(mta.conn(1).is_empty() || !mta.conn(1).contains("remote.test"));
    // With the Maildir (qmail's rules), the same address is taken as qmail
    // takes it: its domain is the part after the last @.
    home.remove_control("queue");
    let mut s = home.session(&[]).await;
    s.greeting().await;
    s.cmd("MAIL FROM:<a@example.org>").await.code(250);
    s.cmd("RCPT TO:<evil%remote.test@ref.test>").await.code(250);
}

#[tokio::test]
async fn a_permanent_refusal_at_connect_is_temporary_for_the_client() {
    let (home, _mta) = forwarding_home(r#"{"greeting": "554 5.3.2 not accepting mail"}"#, |p| {
        format!("lmtp 127.0.0.1:{p}")
    });
    let mut s = home.session(&[]).await;
    s.greeting().await;
    s.cmd("MAIL FROM:<a@example.org>").await.code(250);
    // verify-rcpt (the lmtp default) asks at RCPT.
    s.cmd("RCPT TO:<bob@ref.test>")
        .await
        .text("451 4.3.2 not accepting mail");
}

#[tokio::test]
async fn a_verified_transaction_closed_by_the_downstream_is_handed_over_afresh() {
    let (home, mta) = forwarding_home(r#"{"idle_close": 1}"#, |p| {
        format!("smtp 127.0.0.1:{p} verify-rcpt=yes")
    });
    let mut s = home.session(&[]).await;
    s.greeting().await;
    s.cmd("MAIL FROM:<a@example.org>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    // The client is slow: the downstream gives up on the transaction.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.cmd("DATA").await.code(354);
    s.body("late\r\n").await.code(250);
    assert_eq!(mta.messages().len(), 1);
    assert_eq!(mta.connections(), 2);
}

#[tokio::test]
async fn many_recipients_are_pipelined_in_groups() {
    let (home, mta) = forwarding_home("{}", |p| format!("smtp 127.0.0.1:{p}"));
    let rcpts: Vec<String> = (0..250).map(|i| format!("r{i}@ref.test")).collect();
    let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let mut s = home.session(&[]).await;
    s.greeting().await;
    s.mail("a@example.org", &rcpts, "many\r\n").await.code(250);
    let wire = mta.conn(1);
    assert_eq!(wire.matches("RCPT TO:<").count(), 250);
    assert_eq!(mta.messages().len(), 1);
}
