//! SMTPUTF8 (RFC 6531): the MAIL parameter and the UTF-8 rule for
//! addresses, domains compared in both IDNA forms (rcpthosts,
//! morercpthosts.cdb, badmailfrom) only in an SMTPUTF8 transaction, what
//! plugins, qmail-queue and the Maildir get, the Received: protocol, the
//! switch that turns it all off, and what a downstream gets: a scripted one
//! with and without the extension, and a real Postfix.

use crate::downstream::forwarding_home;
use crate::tls_auth::{serve_args, tls_home};
use crate::util::driver::Reply;
use crate::util::mta::PrivatePostfix;
use crate::util::process::{python, Server};
use crate::util::{strip_received_date, Driver, TestHome};
use std::time::Duration;

/// `例子.广告` and its A-label form (Python: `'例子.广告'.encode('idna')`).
const U_DOMAIN: &str = "例子.广告";
const A_DOMAIN: &str = "xn--fsqu00a.xn--4rr70v";

const SENDER_NOT_UTF8: &str = "553 sorry, that address is not valid UTF-8 (#5.1.7)";
const RCPT_NOT_UTF8: &str = "553 sorry, that address is not valid UTF-8 (#5.1.3)";
const NOT_RCPTHOST: &str = "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)";
const BADMAILFROM: &str = "553 sorry, your envelope sender is in my badmailfrom list (#5.7.1)";
const NO_SMTPUTF8_RCPT: &str = "553 sorry, UTF-8 addresses cannot be passed on: the next mail server does not offer SMTPUTF8 (#5.6.7)";
const NO_SMTPUTF8_DATA: &str = "554 sorry, UTF-8 addresses cannot be passed on: the next mail server does not offer SMTPUTF8 (#5.6.7)";

/// The scripted downstream's EHLO keywords with SMTPUTF8.
const CAPS_UTF8: &str = r#"{"caps": ["PIPELINING", "SIZE 100000", "8BITMIME", "SMTPUTF8"]}"#;

/// Sends raw bytes as one command line and reads the reply's last line.
async fn raw(s: &mut Driver, line: &[u8]) -> String {
    s.send([line, b"\r\n"].concat()).await;
    s.reply().await.last().to_string()
}

/// MAIL with SMTPUTF8 from `from`, RCPT to `to`, DATA with `body`;
/// asserts the intermediate replies and returns the final one.
async fn utf8_mail(s: &mut Driver, from: &str, to: &str, body: &str) -> Reply {
    s.cmd(&format!("MAIL FROM:<{from}> SMTPUTF8"))
        .await
        .text("250 ok");
    s.cmd(&format!("RCPT TO:<{to}>")).await.text("250 ok");
    s.cmd("DATA").await.text("354 go ahead");
    s.body(body).await
}

/// The first MAIL command in a downstream transcript.
fn mail_line(wire: &str) -> &str {
    wire.lines()
        .find(|l| l.starts_with("MAIL "))
        .unwrap_or_else(|| panic!("no MAIL in {wire}"))
}

#[tokio::test]
async fn utf8_envelope_is_stored_as_received_with_utf8smtp() {
    let home = TestHome::new();
    let mut s = home.session(&[]).await;
    s.greeting().await;
    let ehlo = s.cmd("EHLO client.test").await;
    assert!(ehlo.lines.iter().any(|l| l == "250-SMTPUTF8"), "{ehlo:?}");
    s.cmd(&format!(
        "MAIL FROM:<用户@{U_DOMAIN}> smtputf8 BODY=8BITMIME"
    ))
    .await
    .text("250 ok");
    s.cmd("RCPT TO:<josé@ref.test>").await.text("250 ok");
    s.cmd("DATA").await.text("354 go ahead");
    s.body("Subject: 你好\r\n\r\nhé\r\n").await.code(250);
    // The next transaction, without the parameter, is plain SMTP again.
    s.mail("a@example.org", &["bob@ref.test"], "plain\r\n")
        .await
        .code(250);
    let msgs = home.maildir();
    assert_eq!(msgs.len(), 2);
    let first = strip_received_date(&msgs[0]);
    assert!(
        first.starts_with(&format!(
            "Return-Path: <用户@{U_DOMAIN}>\nX-Original-To: <josé@ref.test>\nReceived: from "
        )),
        "{first}"
    );
    assert!(
        first.ends_with(" with UTF8SMTP; DATE\nSubject: 你好\n\nhé\n"),
        "{first}"
    );
    let second = strip_received_date(&msgs[1]);
    assert!(second.contains(" with SMTP; DATE\n"), "{second}");
}

#[tokio::test]
async fn a_label_rcpthosts_entry_takes_the_u_label_only_with_smtputf8() {
    let home = TestHome::new();
    home.control("rcpthosts", format!("ref.test\n{A_DOMAIN}\n"));
    let mut s = home.session(&[]).await;
    s.greeting().await;
    s.cmd("MAIL FROM:<a@example.org> SMTPUTF8").await.code(250);
    s.cmd(&format!("RCPT TO:<用户@{U_DOMAIN}>"))
        .await
        .text("250 ok");
    // The full stop 。 maps to `.` as IDNA says.
    s.cmd("RCPT TO:<用户@例子。广告>").await.text("250 ok");
    // The suffix rule still holds: no entry for a subdomain.
    s.cmd(&format!("RCPT TO:<用户@sub.{U_DOMAIN}>"))
        .await
        .text(NOT_RCPTHOST);
    s.cmd("RSET").await.code(250);
    // Without SMTPUTF8: qmail's byte comparison, so today's refusal.
    s.cmd("MAIL FROM:<a@example.org>").await.code(250);
    s.cmd(&format!("RCPT TO:<用户@{U_DOMAIN}>"))
        .await
        .text(NOT_RCPTHOST);
    s.cmd(&format!("RCPT TO:<用户@{A_DOMAIN}>"))
        .await
        .text("250 ok");
}

#[tokio::test]
async fn u_label_entries_take_the_a_label_only_with_smtputf8() {
    let home = TestHome::new();
    home.control("rcpthosts", format!("ref.test\n{U_DOMAIN}\n"));
    spp_smtpd::config::cdb::write(
        &home.path.join("control/morercpthosts.cdb"),
        &[".bücher.example".as_bytes(), b"xn--bcher-kva.test"],
    )
    .unwrap();
    let mut s = home.session(&[]).await;
    s.greeting().await;
    s.cmd("MAIL FROM:<a@example.org> SMTPUTF8").await.code(250);
    for rcpt in [
        format!("用户@{A_DOMAIN}"),
        format!("用户@{}", A_DOMAIN.to_ascii_uppercase()),
        "x@a.xn--bcher-kva.example".to_string(),
        // Upper case U-labels are mapped to lower case for the A-label.
        "x@BÜCHER.test".to_string(),
    ] {
        s.cmd(&format!("RCPT TO:<{rcpt}>")).await.text("250 ok");
    }
    s.cmd("RCPT TO:<x@xn--bcher-kva.example>")
        .await
        .text(NOT_RCPTHOST);
    s.cmd("RSET").await.code(250);
    s.cmd("MAIL FROM:<a@example.org>").await.code(250);
    for rcpt in [
        format!("用户@{A_DOMAIN}"),
        "x@a.xn--bcher-kva.example".to_string(),
        "x@BÜCHER.test".to_string(),
    ] {
        s.cmd(&format!("RCPT TO:<{rcpt}>")).await.text(NOT_RCPTHOST);
    }
    s.cmd(&format!("RCPT TO:<用户@{U_DOMAIN}>"))
        .await
        .text("250 ok");
    s.cmd("RCPT TO:<x@a.bücher.example>").await.text("250 ok");
}

#[tokio::test]
async fn badmailfrom_u_label_entries_refuse_a_label_senders_with_smtputf8() {
    let home = TestHome::new();
    home.control(
        "badmailfrom",
        format!("@{U_DOMAIN}\nspam@xn--bcher-kva.example\n"),
    );
    let mut s = home.session(&[]).await;
    s.greeting().await;
    for sender in [format!("x@{A_DOMAIN}"), "SPAM@Bücher.example".to_string()] {
        s.cmd(&format!("MAIL FROM:<{sender}> SMTPUTF8"))
            .await
            .code(250);
        s.cmd("RCPT TO:<bob@ref.test>").await.text(BADMAILFROM);
        // The same sender without SMTPUTF8: bytes only, as qmail.
        s.cmd(&format!("MAIL FROM:<{sender}>")).await.code(250);
        s.cmd("RCPT TO:<bob@ref.test>").await.text("250 ok");
    }
    // An entry as written still matches without SMTPUTF8.
    s.cmd(&format!("MAIL FROM:<x@{U_DOMAIN}>")).await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.text(BADMAILFROM);
    s.cmd("MAIL FROM:<good@bücher.example> SMTPUTF8")
        .await
        .code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.text("250 ok");
}

#[tokio::test]
async fn addresses_that_are_not_utf8_are_refused_only_with_smtputf8() {
    let home = TestHome::new();
    let mut s = home.session(&[]).await;
    s.greeting().await;
    for sender in [
        &b"\xff@example.org"[..],
        b"jos\xc3@example.org",
        b"\xed\xa0\x80@x",
    ] {
        let line = [b"MAIL FROM:<", sender, b"> SMTPUTF8"].concat();
        assert_eq!(raw(&mut s, &line).await, SENDER_NOT_UTF8);
    }
    // A refused MAIL opens no transaction.
    s.cmd("RCPT TO:<bob@ref.test>").await.code(503);
    // Without SMTPUTF8 any bytes are taken, as qmail takes them.
    assert_eq!(raw(&mut s, b"MAIL FROM:<\xff@example.org>").await, "250 ok");
    assert_eq!(raw(&mut s, b"RCPT TO:<\xfe@ref.test>").await, "250 ok");
    s.cmd("RSET").await.code(250);
    s.cmd("MAIL FROM:<a@example.org> SMTPUTF8").await.code(250);
    assert_eq!(raw(&mut s, b"RCPT TO:<\xfe@ref.test>").await, RCPT_NOT_UTF8);
    assert_eq!(
        raw(&mut s, b"RCPT TO:<jos\xc3@ref.test>").await,
        RCPT_NOT_UTF8
    );
    s.cmd("RCPT TO:<josé@ref.test>").await.text("250 ok");
    s.cmd("DATA").await.code(354);
    s.body("hi\r\n").await.code(250);
    let msg = strip_received_date(&home.maildir()[0]);
    assert!(
        msg.starts_with("Return-Path: <a@example.org>\nX-Original-To: <josé@ref.test>\nReceived:"),
        "{msg}"
    );
}

/// A plugin that appends `HOOK SMTPUTF8-value address` to `HOME/seen`.
const SEEN_PLUGIN: &str = r#"#!/bin/sh
case "$1" in
mail) a="$SMTPMAILFROM" ;;
rcpt) a="$SMTPRCPTTO" ;;
*) a=- ;;
esac
printf '%s %s %s\n' "$1" "${SMTPUTF8-unset}" "$a" >> seen
"#;

#[tokio::test]
async fn plugins_see_smtputf8_while_the_transaction_lasts() {
    let home = TestHome::new();
    let seen = home.plugin("seen", SEEN_PLUGIN);
    home.smtpplugins(&format!(
        "[helo]\n{seen} helo\n[mail]\n{seen} mail\n[rcpt]\n{seen} rcpt\n[data]\n{seen} data\n[body]\n{seen} body\n"
    ));
    let mut s = home.session(&[]).await;
    s.greeting().await;
    s.cmd("EHLO client.test").await.code(250);
    s.cmd(&format!("MAIL FROM:<用户@{U_DOMAIN}> SMTPUTF8"))
        .await
        .code(250);
    s.cmd("RCPT TO:<josé@ref.test>").await.code(250);
    s.cmd("DATA").await.code(354);
    s.body("hi\r\n").await.code(250);
    // After DATA, after RSET, and for a MAIL without the parameter: gone.
    s.cmd("EHLO client.test").await.code(250);
    s.cmd("MAIL FROM:<a@example.org> SMTPUTF8").await.code(250);
    s.cmd("RSET").await.code(250);
    s.cmd("EHLO client.test").await.code(250);
    s.cmd("MAIL FROM:<a@example.org> SMTPUTF8").await.code(250);
    s.cmd("MAIL FROM:<b@example.org>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    let seen = std::fs::read_to_string(home.path.join("seen")).unwrap();
    assert_eq!(
        seen,
        format!(
            "helo unset -\n\
             mail 1 用户@{U_DOMAIN}\n\
             rcpt 1 josé@ref.test\n\
             data 1 -\n\
             body 1 -\n\
             helo unset -\n\
             mail 1 a@example.org\n\
             helo unset -\n\
             mail 1 a@example.org\n\
             mail unset b@example.org\n\
             rcpt unset bob@ref.test\n"
        )
    );
}

#[tokio::test]
async fn qmail_queue_gets_smtputf8_for_an_smtputf8_transaction_only() {
    let home = TestHome::new();
    home.install_qmail_queue();
    let mut s = home.session(&[]).await;
    s.greeting().await;
    utf8_mail(
        &mut s,
        &format!("用户@{U_DOMAIN}"),
        "josé@ref.test",
        "hi\r\n",
    )
    .await
    .code(250);
    s.mail("a@example.org", &["bob@ref.test"], "plain\r\n")
        .await
        .code(250);
    let queued = home.queued();
    assert_eq!(queued.len(), 2);
    let (message, envelope, environment) = &queued[0];
    assert_eq!(
        envelope,
        format!("F用户@{U_DOMAIN}\0Tjosé@ref.test\0\0").as_bytes()
    );
    assert!(
        environment.lines().any(|l| l == "SMTPUTF8=1"),
        "{environment}"
    );
    assert!(strip_received_date(message).contains(" with UTF8SMTP; DATE\n"));
    let (message, _, environment) = &queued[1];
    assert!(
        !environment.lines().any(|l| l.starts_with("SMTPUTF8=")),
        "{environment}"
    );
    assert!(strip_received_date(message).contains(" with SMTP; DATE\n"));
}

#[tokio::test]
async fn switched_off_the_parameter_is_ignored_as_qmail_does() {
    let home = TestHome::new();
    home.control("smtputf8", "0\n");
    home.control("rcpthosts", format!("ref.test\n{A_DOMAIN}\n"));
    home.install_qmail_queue();
    let seen = home.plugin("seen", SEEN_PLUGIN);
    home.smtpplugins(&format!("[rcpt]\n{seen} rcpt\n"));
    let mut s = home.session(&[]).await;
    s.greeting().await;
    let ehlo = s.cmd("EHLO client.test").await;
    assert!(
        !ehlo.lines.iter().any(|l| l.contains("SMTPUTF8")),
        "{ehlo:?}"
    );
    assert_eq!(
        raw(&mut s, b"MAIL FROM:<\xff@example.org> SMTPUTF8").await,
        "250 ok"
    );
    s.cmd(&format!("RCPT TO:<用户@{U_DOMAIN}>"))
        .await
        .text(NOT_RCPTHOST);
    s.cmd("RCPT TO:<josé@ref.test>").await.text("250 ok");
    s.cmd("DATA").await.code(354);
    s.body("hi\r\n").await.code(250);
    let (message, _, environment) = &home.queued()[0];
    assert!(!environment.contains("SMTPUTF8="), "{environment}");
    assert!(strip_received_date(message).contains(" with SMTP; DATE\n"));
    let seen = std::fs::read_to_string(home.path.join("seen")).unwrap();
    assert_eq!(
        seen,
        format!("rcpt unset 用户@{U_DOMAIN}\nrcpt unset josé@ref.test\n")
    );
}

// ---------------------------------------------------------------------------
// A scripted downstream

#[tokio::test]
async fn a_downstream_offering_smtputf8_gets_the_parameter() {
    let (home, mta) = forwarding_home(CAPS_UTF8, |p| format!("smtp 127.0.0.1:{p}"));
    let mut s = home.session(&[]).await;
    s.greeting().await;
    let from = format!("用户@{U_DOMAIN}");
    utf8_mail(
        &mut s,
        &from,
        "josé@ref.test",
        "Subject: 你好\r\n\r\nhi\r\n",
    )
    .await
    .text("250 ok 2.0.0 queued as X");
    // The next transaction without it: no parameter downstream.
    s.mail("a@example.org", &["bob@ref.test"], "plain\r\n")
        .await
        .code(250);
    let wire = mta.conn(1);
    let (first, second) = wire.split_once("RSET\r\n").expect("a second transaction");
    let mail = mail_line(first);
    assert!(
        mail.starts_with(&format!("MAIL FROM:<用户@{U_DOMAIN}> SIZE="))
            && mail.ends_with(" SMTPUTF8"),
        "{wire}"
    );
    assert!(
        first.contains("\r\nRCPT TO:<josé@ref.test>\r\nDATA\r\n"),
        "{wire}"
    );
    assert!(
        second.starts_with("MAIL FROM:<a@example.org> SIZE="),
        "{wire}"
    );
    assert!(!second.contains("SMTPUTF8"), "{wire}");
    let msgs = mta.messages();
    assert_eq!(msgs.len(), 2);
    let text = String::from_utf8_lossy(&msgs[0]);
    assert!(text.contains(" with UTF8SMTP; "), "{text}");
    assert!(text.contains("\r\nSubject: 你好\r\n"), "{text}");
}

#[tokio::test]
async fn an_ascii_envelope_is_downgraded_for_a_downstream_without_smtputf8() {
    let (home, mta) = forwarding_home("{}", |p| format!("smtp 127.0.0.1:{p}"));
    let mut s = home.session(&[]).await;
    s.greeting().await;
    utf8_mail(
        &mut s,
        "a@example.org",
        "bob@ref.test",
        "Subject: 你好\r\n\r\nhi\r\n",
    )
    .await
    .text("250 ok 2.0.0 queued as X");
    let wire = mta.conn(1);
    let mail = mail_line(&wire);
    assert!(
        mail.starts_with("MAIL FROM:<a@example.org> SIZE="),
        "{wire}"
    );
    assert!(!mail.contains("SMTPUTF8"), "{wire}");
    // The message itself is passed as it is.
    let msgs = mta.messages();
    assert_eq!(msgs.len(), 1);
    let text = String::from_utf8_lossy(&msgs[0]);
    assert!(text.contains("\r\nSubject: 你好\r\n"), "{text}");
}

#[tokio::test]
async fn a_utf8_address_for_a_downstream_without_smtputf8_is_refused_at_data() {
    let (home, mta) = forwarding_home("{}", |p| format!("smtp 127.0.0.1:{p}"));
    let mut s = home.session(&[]).await;
    s.greeting().await;
    for (from, to) in [
        ("a@example.org".to_string(), "josé@ref.test"),
        (format!("用户@{U_DOMAIN}"), "bob@ref.test"),
    ] {
        utf8_mail(&mut s, &from, to, "hi\r\n")
            .await
            .text(NO_SMTPUTF8_DATA);
    }
    assert!(mta.messages().is_empty());
    assert!(!mta.conn(1).contains("MAIL"), "{}", mta.conn(1));
    // The connection is still good for a message it can take.
    s.mail("a@example.org", &["bob@ref.test"], "hi\r\n")
        .await
        .code(250);
    assert_eq!(mta.messages().len(), 1);
    assert_eq!(mta.connections(), 1);
}

#[tokio::test]
async fn with_verify_rcpt_a_utf8_address_is_refused_at_rcpt() {
    let (home, mta) = forwarding_home("{}", |p| format!("smtp 127.0.0.1:{p} verify-rcpt=yes"));
    let mut s = home.session(&[]).await;
    s.greeting().await;
    s.cmd("MAIL FROM:<a@example.org> SMTPUTF8").await.code(250);
    s.cmd("RCPT TO:<josé@ref.test>")
        .await
        .text(NO_SMTPUTF8_RCPT);
    s.cmd("RCPT TO:<bob@ref.test>").await.text("250 ok");
    s.cmd("DATA").await.code(354);
    s.body("hi\r\n").await.code(250);
    let wire = mta.conn(1);
    assert!(!wire.contains("jos"), "{wire}");
    assert!(wire.contains("MAIL FROM:<a@example.org>"), "{wire}");
    assert!(!wire.contains("SMTPUTF8"), "{wire}");
    assert_eq!(mta.messages().len(), 1);
    // A UTF-8 sender: every recipient is refused, nothing is sent.
    s.cmd(&format!("MAIL FROM:<用户@{U_DOMAIN}> SMTPUTF8"))
        .await
        .code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.text(NO_SMTPUTF8_RCPT);
    s.cmd("DATA").await.code(503);
    assert!(!mta.conn(1).contains("用户"), "{}", mta.conn(1));
    assert_eq!(mta.messages().len(), 1);
}

// ---------------------------------------------------------------------------
// Real clients and a real Postfix

/// smtplib: `sendmail(..., mail_options=['SMTPUTF8'])` to 127.0.0.1:PORT,
/// with STARTTLS and AUTH as alice when MODE is `tls-auth`; prints whether
/// SMTPUTF8 was offered and the outcome.
const SMTPLIB_UTF8: &str = r#"
import os, smtplib, ssl, sys
port, mode = int(sys.argv[1]), sys.argv[2]
sender, rcpts = [os.fsencode(a).decode("utf-8") for a in sys.argv[3:4]][0], [os.fsencode(a).decode("utf-8") for a in sys.argv[4:]]
msg = "Subject: 你好\r\n\r\nhé\r\n".encode("utf-8")
with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
    s.ehlo("client.test")
    if mode == "tls-auth":
        s.starttls(context=ssl._create_unverified_context())
        s.ehlo("client.test")
        s.login("alice", "secret")
    print("offered:", s.has_extn("smtputf8"))
    try:
        refused = s.sendmail(sender, rcpts, msg, mail_options=["SMTPUTF8"])
        print("sent, refused:", sorted(refused))
    except smtplib.SMTPException as e:
        print("error:", e)
"#;

/// Runs [`SMTPLIB_UTF8`]; its output.
fn smtplib_utf8(port: u16, mode: &str, from: &str, to: &[&str]) -> String {
    let port = port.to_string();
    let mut args = vec![port.as_str(), mode, from];
    args.extend_from_slice(to);
    let out = python(SMTPLIB_UTF8, &args);
    assert_eq!(out.code, 0, "smtplib: {}{}", out.stdout, out.stderr);
    out.stdout
}

#[test]
fn smtplib_under_tcpserver_stores_the_utf8_envelope_in_the_maildir() {
    let home = TestHome::new();
    let server = Server::tcpserver(&home, &[]);
    let out = smtplib_utf8(
        server.port,
        "plain",
        &format!("用户@{U_DOMAIN}"),
        &["josé@ref.test"],
    );
    assert!(out.contains("offered: True"), "{out}");
    assert!(out.contains("sent, refused: []"), "{out}");
    let msgs = home.maildir();
    assert_eq!(msgs.len(), 1);
    let msg = strip_received_date(&msgs[0]);
    assert!(
        msg.starts_with(&format!(
            "Return-Path: <用户@{U_DOMAIN}>\nX-Original-To: <josé@ref.test>\nReceived: from "
        )),
        "{msg}"
    );
    assert!(
        msg.ends_with(" with UTF8SMTP; DATE\nSubject: 你好\n\nhé\n"),
        "{msg}"
    );
}

#[test]
fn smtplib_with_starttls_and_auth_gets_utf8smtpsa() {
    let home = tls_home();
    let server = Server::daemon_with(&home, &[], &serve_args(&[]));
    let out = smtplib_utf8(
        server.port,
        "tls-auth",
        &format!("用户@{U_DOMAIN}"),
        &["josé@elsewhere.test"],
    );
    assert!(out.contains("sent, refused: []"), "{out}");
    let msg = strip_received_date(&home.maildir()[0]);
    assert!(
        msg.contains("X-Original-To: <josé@elsewhere.test>\n"),
        "{msg}"
    );
    assert!(msg.contains(" with UTF8SMTPSA; DATE\n"), "{msg}");
}

#[test]
fn smtputf8_to_a_real_postfix() {
    let home = TestHome::new();
    let Some(pf) = PrivatePostfix::start(home.dir(), &["bob", "josé"]) else {
        return;
    };
    home.control("rcpthosts", "example.test\n");
    home.control("queue", format!("smtp 127.0.0.1:{}\n", pf.port));
    let server = Server::daemon(&home, &[]);
    let sender = format!("用户@{U_DOMAIN}");
    let out = smtplib_utf8(
        server.port,
        "plain",
        &sender,
        &["josé@example.test", "bob@example.test"],
    );
    assert!(out.contains("sent, refused: []"), "{out}\n{}", pf.log());
    // Postfix refuses a UTF-8 sender unless MAIL declared SMTPUTF8 (`501
    // 5.1.7 Bad sender address syntax`): delivery shows it was sent, and
    // Postfix's own Received: line names the protocol.
    for user in ["josé", "bob"] {
        let got = pf.wait_messages(user, 1, Duration::from_secs(30));
        let text = String::from_utf8_lossy(&got[0]).into_owned();
        assert!(
            text.starts_with(&format!("Return-Path: <{sender}>\n")),
            "{text}"
        );
        assert!(text.contains(" with UTF8SMTP id "), "{text}");
        assert!(
            text.contains(" with UTF8SMTP; "),
            "our Received: line: {text}"
        );
        assert!(text.contains("\nSubject: 你好\n"), "{text}");
        assert!(
            text.contains(&format!("\nDelivered-To: {user}@example.test\n")),
            "{text}"
        );
    }
}
