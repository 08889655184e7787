//! The private mail servers of `util::mta` themselves: each one accepts,
//! refuses and delivers the way the queue-backend and content-filter tests
//! rely on. A server that is not installed makes its test print `SKIP:`.

use crate::util::mta::{
    DovecotLmtp, LineClient, PrivatePostfix, LMTP_USER_FULL, LMTP_USER_TEMPFULL,
    POSTFIX_DATA_REJECT, POSTFIX_DATA_TEMPFAIL, POSTFIX_RCPT_REJECT, POSTFIX_RCPT_TEMPFAIL,
};
use crate::util::process::run_with_input;
use crate::util::TestHome;
use std::process::Command;
use std::time::Duration;

/// How long a delivery may take to show up in a Maildir.
const DELIVERY: Duration = Duration::from_secs(20);

fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: sender@sender.test\nTo: someone@example.test\nSubject: {subject}\n\n\
         first line\n.a line starting with a dot\nlast line\n"
    )
    .into_bytes()
}

/// Whether `delivered` (a stored message, with the headers the server
/// added) ends with the body of `message` and carries its subject.
fn contains_message(delivered: &[u8], subject: &str) -> bool {
    let text = String::from_utf8_lossy(delivered).replace("\r\n", "\n");
    text.contains(&format!("\nSubject: {subject}\n"))
        && text.ends_with("\n\nfirst line\n.a line starting with a dot\nlast line\n")
}

#[test]
fn postfix_accepts_listed_users_refuses_others_and_delivers() {
    let home = TestHome::new();
    let Some(pf) = PrivatePostfix::start(home.dir(), &["bob", "carol"]) else {
        return;
    };
    let mut c = LineClient::tcp(pf.port);
    assert!(c.reply().starts_with("220 mx.example.test"));
    let ehlo = c.command_lines("EHLO client.test");
    assert!(ehlo.last().unwrap().starts_with("250 "), "{ehlo:?}");
    assert!(
        !ehlo.iter().any(|l| l.ends_with("STARTTLS")),
        "no STARTTLS without a certificate: {ehlo:?}"
    );
    assert!(c
        .command("MAIL FROM:<sender@sender.test>")
        .starts_with("250 "));
    let unknown = c.command("RCPT TO:<nobody@example.test>");
    assert!(unknown.starts_with("550 5.1.1 "), "{unknown}");
    let relay = c.command("RCPT TO:<someone@elsewhere.test>");
    assert!(relay.starts_with("554 5.7.1 "), "{relay}");
    assert_eq!(
        c.command(&format!("RCPT TO:<{POSTFIX_RCPT_TEMPFAIL}>")),
        format!("451 4.3.0 <{POSTFIX_RCPT_TEMPFAIL}>: Recipient address rejected: try later")
    );
    assert_eq!(
        c.command(&format!("RCPT TO:<{POSTFIX_RCPT_REJECT}>")),
        format!("554 5.7.1 <{POSTFIX_RCPT_REJECT}>: Recipient address rejected: rejected")
    );
    assert!(c.command("RCPT TO:<bob@example.test>").starts_with("250 "));
    assert!(c.command("DATA").starts_with("354 "));
    c.send_message(&message("over smtp"));
    let queued = c.reply();
    assert!(queued.starts_with("250 2.0.0 Ok: queued as "), "{queued}");

    // Refusals after the final dot, chosen by the envelope sender.
    for (sender, reply) in [
        (POSTFIX_DATA_TEMPFAIL, "451 4.3.0"),
        (POSTFIX_DATA_REJECT, "554 5.7.1"),
    ] {
        assert!(c.command("RSET").starts_with("250 "));
        assert!(c
            .command(&format!("MAIL FROM:<{sender}>"))
            .starts_with("250 "));
        assert!(c
            .command("RCPT TO:<carol@example.test>")
            .starts_with("250 "));
        assert!(c.command("DATA").starts_with("354 "));
        c.send_message(&message("refused at the dot"));
        let answer = c.reply();
        assert!(answer.starts_with(reply), "{sender}: {answer}");
    }
    assert!(c.command("QUIT").starts_with("221 "));

    let bob = pf.wait_messages("bob", 1, DELIVERY);
    assert_eq!(bob.len(), 1);
    assert!(contains_message(&bob[0], "over smtp"));
    let text = String::from_utf8_lossy(&bob[0]).into_owned();
    assert!(
        text.starts_with("Return-Path: <sender@sender.test>\n"),
        "{text}"
    );
    assert!(text.contains("Delivered-To: bob@example.test\n"), "{text}");

    // The sendmail wrapper submits through Postfix's own pickup.
    let mut cmd = Command::new(pf.sendmail());
    cmd.args(["-i", "-f", "sender@sender.test", "--", "carol@example.test"]);
    let run = run_with_input(cmd, &message("via sendmail"), Duration::from_secs(30));
    assert_eq!(run.code, 0, "sendmail failed: {}", run.stderr);
    let carol = pf.wait_messages("carol", 1, DELIVERY);
    assert_eq!(carol.len(), 1, "the refused messages must not arrive");
    assert!(contains_message(&carol[0], "via sendmail"));
    assert!(String::from_utf8_lossy(&carol[0]).starts_with("Return-Path: <sender@sender.test>\n"));
    assert!(
        pf.messages("nobody").is_empty() && pf.messages("bob").len() == 1,
        "nothing else was delivered"
    );
}

#[test]
fn postfix_offers_starttls_with_a_certificate_the_ca_file_verifies() {
    let home = TestHome::new();
    let Some(pf) = PrivatePostfix::start_with_tls(home.dir(), &["bob"]) else {
        return;
    };
    let mut c = LineClient::tcp(pf.port);
    c.reply();
    let ehlo = c.command_lines("EHLO client.test");
    assert!(
        ehlo.iter().any(|l| l.get(4..) == Some("STARTTLS")),
        "STARTTLS is offered: {ehlo:?}"
    );
    assert!(c.command("STARTTLS").starts_with("220 "));
    drop(c);

    // openssl verifies the chain and the name against the CA file.
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-brief", "-starttls", "smtp", "-connect"])
        .arg(format!("127.0.0.1:{}", pf.port))
        .arg("-CAfile")
        .arg(pf.ca_file())
        .args([
            "-verify_hostname",
            "mx.example.test",
            "-verify_return_error",
        ]);
    let run = run_with_input(cmd, b"QUIT\r\n", Duration::from_secs(30));
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("Verification: OK"),
        "{}{}",
        run.stdout,
        run.stderr
    );
    // A wrong name fails verification with the same CA file.
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-brief", "-starttls", "smtp", "-connect"])
        .arg(format!("127.0.0.1:{}", pf.port))
        .arg("-CAfile")
        .arg(pf.ca_file())
        .args([
            "-verify_hostname",
            "other.example.test",
            "-verify_return_error",
        ]);
    let run = run_with_input(cmd, b"QUIT\r\n", Duration::from_secs(30));
    assert_ne!(run.code, 0, "a wrong host name must not verify");
}

/// Sends one LMTP transaction; returns the RCPT replies and the replies
/// after the final dot (one per accepted recipient).
fn lmtp_transaction(
    c: &mut LineClient,
    recipients: &[&str],
    subject: &str,
) -> (Vec<String>, Vec<String>) {
    assert!(c
        .command("MAIL FROM:<sender@sender.test>")
        .starts_with("250 "));
    let rcpt: Vec<String> = recipients
        .iter()
        .map(|r| c.command(&format!("RCPT TO:<{r}>")))
        .collect();
    let accepted = rcpt.iter().filter(|r| r.starts_with("250 ")).count();
    assert!(c.command("DATA").starts_with("354 "));
    c.send_message(&message(subject));
    let data = (0..accepted).map(|_| c.reply()).collect();
    (rcpt, data)
}

#[test]
fn dovecot_lmtp_delivers_over_tcp_and_unix_socket() {
    let home = TestHome::new();
    let Some(lmtp) = DovecotLmtp::start(
        home.dir(),
        &["bob", "carol", LMTP_USER_FULL, LMTP_USER_TEMPFULL],
    ) else {
        return;
    };

    let mut tcp = LineClient::tcp(lmtp.port);
    assert!(tcp.reply().starts_with("220 "));
    assert!(tcp.command("LHLO client.test").starts_with("250 "));
    let (rcpt, data) = lmtp_transaction(
        &mut tcp,
        &["bob@example.test", "nobody@example.test", "bob@other.test"],
        "over tcp",
    );
    assert!(rcpt[0].starts_with("250 "), "{rcpt:?}");
    assert_eq!(
        rcpt[1],
        "550 5.1.1 <nobody@example.test> User doesn't exist: nobody@example.test"
    );
    assert!(rcpt[2].starts_with("550 5.1.1 "), "{rcpt:?}");
    assert_eq!(data.len(), 1);
    assert!(
        data[0].starts_with("250 2.0.0 <bob@example.test> "),
        "{data:?}"
    );
    assert!(tcp.command("QUIT").starts_with("221 "));

    let mut unix = LineClient::unix(&lmtp.socket());
    assert!(unix.reply().starts_with("220 "));
    assert!(unix.command("LHLO client.test").starts_with("250 "));
    let (rcpt, data) = lmtp_transaction(
        &mut unix,
        &[
            "carol@example.test",
            "full@example.test",
            "tempfull@example.test",
        ],
        "over the socket",
    );
    assert!(rcpt.iter().all(|r| r.starts_with("250 ")), "{rcpt:?}");
    assert!(
        data[0].starts_with("250 2.0.0 <carol@example.test> "),
        "{data:?}"
    );
    assert_eq!(
        data[1],
        "552 5.2.2 <full@example.test> Quota exceeded (mailbox for user is full)"
    );
    assert_eq!(
        data[2],
        "452 4.2.2 <tempfull@example.test> Quota exceeded (mailbox for user is full)"
    );
    assert!(unix.command("QUIT").starts_with("221 "));

    let bob = lmtp.wait_messages("bob", 1, DELIVERY);
    assert!(contains_message(&bob[0], "over tcp"));
    let carol = lmtp.wait_messages("carol", 1, DELIVERY);
    assert!(contains_message(&carol[0], "over the socket"));
    assert!(lmtp.messages(LMTP_USER_FULL).is_empty());
    assert!(lmtp.messages(LMTP_USER_TEMPFULL).is_empty());
    assert_eq!(lmtp.messages("bob").len(), 1);
}
