//! The smtp, lmtp and sendmail backends end to end: the real binary
//! (`serve`, and `stdio` under tcpserver) with real clients (swaks,
//! smtplib), handing mail to a private Postfix (smtpd and its sendmail) and
//! to Dovecot's LMTP (TCP and unix socket), all started by the tests on
//! loopback. A server that is not installed makes its test print `SKIP:`.

use crate::util::mta::{
    DovecotLmtp, PrivatePostfix, LMTP_USER_FULL, POSTFIX_DATA_REJECT, POSTFIX_RCPT_TEMPFAIL,
};
use crate::util::process::{python, swaks, Server};
use crate::util::TestHome;
use std::time::Duration;

/// How long a delivery may take to show up in a Maildir.
const DELIVERY: Duration = Duration::from_secs(30);

/// A home accepting mail for `example.test` with `queue` as backend.
fn home_with_queue(queue: &str) -> TestHome {
    let home = TestHome::new();
    home.control("rcpthosts", "example.test\nfail.test\n");
    home.control("queue", format!("{queue}\n"));
    home
}

/// Runs an smtplib session against `port`: MAIL from `from`, each RCPT,
/// DATA with a small message; prints one line per reply (`MAIL 250`,
/// `RCPT bob@example.test 550 ...`, `DATA 250 ...`).
const SMTPLIB_SESSION: &str = r#"
import smtplib, sys
port, sender, rcpts = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
s = smtplib.SMTP("127.0.0.1", port, timeout=60)
s.ehlo("client.test")
code, text = s.mail(sender)
print("MAIL", code, text.decode())
ok = 0
for r in rcpts:
    code, text = s.rcpt(r)
    print("RCPT", r, code, text.decode())
    ok += code == 250
if ok:
    code, text = s.data(b"Subject: through spp-smtpd\r\n\r\nhello\r\n.dot\r\n")
    print("DATA", code, text.decode())
s.quit()
"#;

/// One smtplib session; its reply lines.
fn session(port: u16, from: &str, rcpts: &[&str]) -> Vec<String> {
    let mut args = vec![port.to_string(), from.to_string()];
    args.extend(rcpts.iter().map(|r| r.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = python(SMTPLIB_SESSION, &args);
    assert_eq!(out.code, 0, "smtplib: {}{}", out.stdout, out.stderr);
    out.stdout.lines().map(str::to_string).collect()
}

#[test]
fn smtp_to_postfix_delivers_and_relays_its_refusals() {
    let home = TestHome::new();
    let Some(pf) = PrivatePostfix::start(home.dir(), &["bob", "carol"]) else {
        return;
    };
    home.control("rcpthosts", "example.test\nfail.test\n");
    home.control("queue", format!("smtp 127.0.0.1:{}\n", pf.port));
    let server = Server::daemon(&home, &[]);
    let out = swaks(&[
        "--server",
        &format!("127.0.0.1:{}", server.port),
        "--from",
        "a@sender.test",
        "--to",
        "bob@example.test,carol@example.test",
        "--header",
        "Subject: via postfix",
    ]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stdout.contains("<-  250 ok 2.0.0 Ok: queued as"),
        "{}",
        out.stdout
    );
    for user in ["bob", "carol"] {
        let got = pf.wait_messages(user, 1, DELIVERY);
        let text = String::from_utf8_lossy(&got[0]);
        assert!(text.contains("Subject: via postfix"), "{text}");
        assert!(
            text.contains("Received: from unknown (HELO "),
            "our Received: line reached Postfix: {text}"
        );
    }
    // Without verify-rcpt, an unknown user refuses the message after DATA
    // with Postfix's own reply, and nobody gets it.
    let lines = session(
        server.port,
        "a@sender.test",
        &["bob@example.test", "nobody@example.test"],
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("RCPT nobody@example.test 250")),
        "{lines:?}"
    );
    let data = lines.iter().find(|l| l.starts_with("DATA")).unwrap();
    assert!(
        data.starts_with("DATA 550 5.1.1 <nobody@example.test>"),
        "{data}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        pf.messages("bob").len(),
        1,
        "nothing delivered to bob the second time"
    );
    // Postfix refusing after the final dot: its 5xx reaches the client.
    let lines = session(server.port, POSTFIX_DATA_REJECT, &["bob@example.test"]);
    assert!(
        lines.iter().any(|l| l.starts_with("DATA 554 5.7.1")),
        "{lines:?}"
    );
    drop(server);
    drop(pf);
}

#[test]
fn smtp_recipient_verification_against_postfix() {
    let home = TestHome::new();
    let Some(pf) = PrivatePostfix::start(home.dir(), &["bob"]) else {
        return;
    };
    home.control("rcpthosts", "example.test\n");
    home.control(
        "queue",
        // tls=opportunistic: this Postfix offers no STARTTLS: plaintext.
        format!(
            "smtp 127.0.0.1:{} verify-rcpt=yes tls=opportunistic\n",
            pf.port
        ),
    );
    let server = Server::daemon(&home, &[]);
    let lines = session(
        server.port,
        "a@sender.test",
        &[
            "nobody@example.test",
            POSTFIX_RCPT_TEMPFAIL,
            "bob@example.test",
        ],
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("RCPT nobody@example.test 550 5.1.1")
                && l.contains("User unknown")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("RCPT {POSTFIX_RCPT_TEMPFAIL} 451 4.3.0"))),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("DATA 250 ok")),
        "{lines:?}"
    );
    let got = pf.wait_messages("bob", 1, DELIVERY);
    assert!(String::from_utf8_lossy(&got[0]).contains("through spp-smtpd"));
}

#[test]
fn smtp_starttls_to_postfix_verifies_its_certificate() {
    let home = TestHome::new();
    let Some(pf) = PrivatePostfix::start_with_tls(home.dir(), &["bob"]) else {
        return;
    };
    home.control("rcpthosts", "example.test\n");
    // A relative cafile= is relative to the home.
    std::fs::copy(pf.ca_file(), home.dir().join("control/downstream-ca.pem")).unwrap();
    home.control(
        "queue",
        format!(
            "smtp 127.0.0.1:{} tls=required cafile=control/downstream-ca.pem tls-name=mx.example.test\n",
            pf.port
        ),
    );
    let server = Server::daemon(&home, &[]);
    let lines = session(server.port, "a@sender.test", &["bob@example.test"]);
    assert!(
        lines.iter().any(|l| l.starts_with("DATA 250 ok")),
        "{lines:?}"
    );
    let got = pf.wait_messages("bob", 1, DELIVERY);
    let text = String::from_utf8_lossy(&got[0]);
    // Postfix says ESMTPS in its Received: line when the session used TLS.
    assert!(text.contains("with ESMTPS"), "{text}");
    drop(server);
    // Opportunistic TLS uses STARTTLS when offered (verify=no: encrypted,
    // certificate not checked).
    home.control(
        "queue",
        format!("smtp 127.0.0.1:{} tls=opportunistic verify=no\n", pf.port),
    );
    let server = Server::daemon(&home, &[]);
    let lines = session(server.port, "a@sender.test", &["bob@example.test"]);
    assert!(
        lines.iter().any(|l| l.starts_with("DATA 250 ok")),
        "{lines:?}"
    );
    let got = pf.wait_messages("bob", 2, DELIVERY);
    assert!(got
        .iter()
        .all(|m| String::from_utf8_lossy(m).contains("with ESMTPS")));
    drop(server);
    // The system's CA bundle does not know the test certificate: 451, and
    // nothing is sent in the clear.
    home.control(
        "queue",
        format!(
            "smtp 127.0.0.1:{} tls=required tls-name=mx.example.test\n",
            pf.port
        ),
    );
    let server = Server::daemon(&home, &[]);
    let lines = session(server.port, "a@sender.test", &["bob@example.test"]);
    assert!(
        lines
            .iter()
            .any(|l| l == "DATA 451 secure connection to mail server failed (#4.7.5)"),
        "{lines:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pf.messages("bob").len(), 2);
}

#[test]
fn sendmail_backend_with_postfix_sendmail() {
    let home = TestHome::new();
    let Some(pf) = PrivatePostfix::start(home.dir(), &["bob"]) else {
        return;
    };
    home.control("rcpthosts", "example.test\n");
    home.control("queue", format!("sendmail {}\n", pf.sendmail().display()));
    let out = crate::util::process::stdio(
        &home,
        &[("TCPREMOTEIP", "192.0.2.7")],
        b"HELO client.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nSubject: by sendmail\r\n\r\n..dot line\r\n.\r\nQUIT\r\n",
    );
    assert!(
        out.lines().contains(&"250 ok handed to sendmail"),
        "{:?} {}",
        out.lines(),
        out.stderr
    );
    let got = pf.wait_messages("bob", 1, DELIVERY);
    let text = String::from_utf8_lossy(&got[0]);
    assert!(text.contains("Subject: by sendmail"), "{text}");
    assert!(text.contains("\n.dot line\n"), "{text}");
    assert!(text.contains("(192.0.2.7)"), "our Received: line: {text}");
}

#[test]
fn lmtp_to_dovecot_over_tcp_and_unix_socket() {
    let home = TestHome::new();
    let Some(lmtp) = DovecotLmtp::start(home.dir(), &["bob", "carol", LMTP_USER_FULL]) else {
        return;
    };
    home.control("rcpthosts", "example.test\n");
    for queue in [
        format!("lmtp 127.0.0.1:{}", lmtp.port),
        format!("lmtp {}", lmtp.socket().display()),
    ] {
        home.control("queue", format!("{queue}\n"));
        let server = Server::daemon(&home, &[]);
        // Unknown users are refused at RCPT (verify-rcpt is on for lmtp).
        let lines = session(
            server.port,
            "a@sender.test",
            &[
                "nobody@example.test",
                "bob@example.test",
                "carol@example.test",
            ],
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("RCPT nobody@example.test 550")),
            "{queue}: {lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("DATA 250 ok delivered to 2 recipients")),
            "{queue}: {lines:?}"
        );
        drop(server);
    }
    assert_eq!(lmtp.wait_messages("bob", 2, DELIVERY).len(), 2);
    assert_eq!(lmtp.wait_messages("carol", 2, DELIVERY).len(), 2);
    // A recipient over quota after the data: the message is refused for
    // the client (bob's copy stays; the sender hears of the failure).
    home.control("queue", format!("lmtp 127.0.0.1:{}\n", lmtp.port));
    let server = Server::daemon(&home, &[]);
    let full = format!("{LMTP_USER_FULL}@example.test");
    let lines = session(server.port, "a@sender.test", &["bob@example.test", &full]);
    let data = lines.iter().find(|l| l.starts_with("DATA")).unwrap();
    assert!(
        data.starts_with("DATA 4") || data.starts_with("DATA 5"),
        "{lines:?}"
    );
    assert!(data.contains("quota") || data.contains("Quota"), "{data}");
}

#[test]
fn stdio_under_tcpserver_forwards_to_postfix() {
    let home = TestHome::new();
    let Some(pf) = PrivatePostfix::start(home.dir(), &["bob"]) else {
        return;
    };
    home.control("rcpthosts", "example.test\n");
    home.control("queue", format!("smtp 127.0.0.1:{}\n", pf.port));
    let server = Server::tcpserver(&home, &[]);
    let lines = session(server.port, "a@sender.test", &["bob@example.test"]);
    assert!(
        lines.iter().any(|l| l.starts_with("DATA 250 ok")),
        "{lines:?}"
    );
    pf.wait_messages("bob", 1, DELIVERY);
    // The session's process says QUIT downstream before it exits.
    let deadline = std::time::Instant::now() + DELIVERY;
    while !pf.log().contains("data=1 quit=1") {
        assert!(std::time::Instant::now() < deadline, "{}", pf.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn queue_backends_share_one_home_example() {
    // The setting is per home: the example layouts in README parse.
    for line in [
        "smtp 127.0.0.1:10025 verify-rcpt=yes",
        "sendmail /usr/sbin/sendmail",
        "lmtp /var/spool/spp-smtpd/dovecot-lmtp",
        "lmtp 127.0.0.1:24",
    ] {
        let home = home_with_queue(line);
        let out = crate::util::process::run_with_input(
            {
                let mut c = std::process::Command::new(crate::util::process::bin());
                c.arg("--home").arg(home.dir()).arg("check");
                c
            },
            b"",
            Duration::from_secs(30),
        );
        // The sendmail program may be missing on this machine; the others
        // must pass.
        if !line.starts_with("sendmail") || std::path::Path::new("/usr/sbin/sendmail").exists() {
            assert_eq!(out.code, 0, "{line}: {}", out.stdout);
        }
    }
}

#[test]
fn content_filters_as_body_plugins_through_the_daemon() {
    use crate::util::mta::{Clamd, Spamd, GTUBE, TEST_VIRUS_NAME, TEST_VIRUS_STRING};
    let home = TestHome::new();
    let Some(clamd) = Clamd::start(home.dir()) else {
        return;
    };
    let Some(spamd) = Spamd::start(home.dir()) else {
        return;
    };
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/plugins-examples");
    home.smtpplugins(&format!(
        "[body]\n{examples}/clamav.sh --config-file={}\n{examples}/spamassassin.sh -s 10 -d 127.0.0.1 -p {}\n",
        clamd.config_file.display(),
        spamd.port
    ));
    let server = Server::daemon(&home, &[]);
    let send = |body: &str| {
        swaks(&[
            "--server",
            &format!("127.0.0.1:{}", server.port),
            "--from",
            "a@sender.test",
            "--to",
            "bob@ref.test",
            "--body",
            body,
        ])
    };
    let clean = send("an ordinary message");
    assert!(clean.stdout.contains("<-  250 ok"), "{}", clean.stdout);
    let stored = String::from_utf8_lossy(&home.maildir()[0]).into_owned();
    assert!(stored.contains("\nX-Virus-Scanned: clamav\n"), "{stored}");
    assert!(stored.contains("\nX-Spam-Status: No, score="), "{stored}");
    let virus = send(&format!("attached: {TEST_VIRUS_STRING}"));
    assert!(
        virus.stdout.contains(&format!(
            "<** 554 message contains a virus: {TEST_VIRUS_NAME}"
        )),
        "{}",
        virus.stdout
    );
    let spam = send(GTUBE);
    assert!(
        spam.stdout.contains("<** 550 message looks like spam"),
        "{}",
        spam.stdout
    );
    assert_eq!(home.maildir().len(), 1, "refused messages are not stored");
    assert!(
        std::fs::read_dir(home.dir().join("spool"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "no spool file left"
    );
}
