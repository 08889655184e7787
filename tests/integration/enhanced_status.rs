//! ENHANCEDSTATUSCODES (`control/enhancedstatuscodes`): the codes every
//! reply gets when it is on, the replies that keep their own or get none,
//! and qmail's replies byte for byte when it is off. The in-memory driver
//! for sessions; the real binary under tcpserver with smtplib for what a
//! client library sees, over STARTTLS and AUTH.

use crate::tls_auth::{serve_args, tls_home};
use crate::util::process::{self, Server};
use crate::util::{Driver, TestHome};
use spp_smtpd::protocol::reply::text;

const LOCAL: &[(&str, &str)] = &[("TCPREMOTEIP", "127.0.0.1"), ("TCPLOCALIP", "127.0.0.1")];

/// One step of a session: what the client sends, and the reply lines
/// without and with enhanced status codes. A line ending in `*` is a
/// prefix (the queue's reply names the message).
struct Step {
    send: String,
    off: Vec<&'static str>,
    on: Vec<&'static str>,
}

fn step(send: impl Into<String>, off: &[&'static str], on: &[&'static str]) -> Step {
    Step {
        send: send.into(),
        off: off.to_vec(),
        on: on.to_vec(),
    }
}

/// A whole session touching every kind of reply the server makes itself.
fn script() -> Vec<Step> {
    let long_address = format!("<{}@ref.test>", "a".repeat(900));
    vec![
        step(
            "EHLO client.test",
            &[
                "250-mx.ref.test",
                "250-PIPELINING",
                "250-8BITMIME",
                "250-SMTPUTF8",
                "250 CHUNKING",
            ],
            &[
                "250-mx.ref.test",
                "250-PIPELINING",
                "250-8BITMIME",
                "250-ENHANCEDSTATUSCODES",
                "250-SMTPUTF8",
                "250 CHUNKING",
            ],
        ),
        step(
            "HELO client.test",
            &["250 mx.ref.test"],
            &["250 mx.ref.test"],
        ),
        step("NOOP", &["250 ok"], &["250 2.0.0 ok"]),
        step(
            "VRFY bob",
            &["252 send some mail, i'll try my best"],
            &["252 2.0.0 send some mail, i'll try my best"],
        ),
        step(
            "HELP",
            &["214 spp-smtpd: qmail-spp compatible SMTP server"],
            &["214 2.0.0 spp-smtpd: qmail-spp compatible SMTP server"],
        ),
        step(
            "FROB",
            &[text::UNIMPLEMENTED],
            &["502 5.5.1 unimplemented (#5.5.1)"],
        ),
        step(
            "STARTTLS",
            &[text::UNIMPLEMENTED],
            &["502 5.5.1 unimplemented (#5.5.1)"],
        ),
        step(
            "RCPT TO:<bob@ref.test>",
            &[text::MAIL_FIRST],
            &["503 5.5.1 MAIL first (#5.5.1)"],
        ),
        step(
            "DATA",
            &[text::MAIL_FIRST],
            &["503 5.5.1 MAIL first (#5.5.1)"],
        ),
        step(
            format!("MAIL FROM:{long_address}"),
            &[text::SYNTAX],
            &["555 5.5.4 syntax error (#5.5.4)"],
        ),
        step(
            format!("NOOP {}", "x".repeat(5000)),
            &[text::LINE_TOO_LONG],
            &["500 5.5.2 line too long (#5.5.2)"],
        ),
        step("MAIL FROM:<a@example.org>", &["250 ok"], &["250 2.1.0 ok"]),
        step(
            "DATA",
            &[text::RCPT_FIRST],
            &["503 5.5.1 RCPT first (#5.5.1)"],
        ),
        step("RCPT TO:<bob@ref.test>", &["250 ok"], &["250 2.1.5 ok"]),
        step(
            "RCPT TO:<eve@other.test>",
            &[text::NOT_RCPTHOST],
            &["553 5.7.1 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"],
        ),
        step(
            format!("RCPT TO:{long_address}"),
            &[text::SYNTAX],
            &["555 5.5.4 syntax error (#5.5.4)"],
        ),
        step("DATA", &[text::GO_AHEAD], &["354 go ahead"]),
        step(
            "Subject: codes\r\n\r\nbody\r\n.",
            &["250 ok *"],
            &["250 2.0.0 ok *"],
        ),
        step("RSET", &["250 flushed"], &["250 2.0.0 flushed"]),
        step("QUIT", &["221 mx.ref.test"], &["221 2.0.0 mx.ref.test"]),
    ]
}

/// Runs [`script`] with the switch `on` or off, asserting every reply.
async fn run_script(on: bool) {
    let home = TestHome::new();
    if on {
        home.control("enhancedstatuscodes", "1\n");
    }
    let mut s = home.session(LOCAL).await;
    s.greeting().await.all(&["220 mx.ref.test ESMTP"]);
    for step in script() {
        let expected = if on { &step.on } else { &step.off };
        let got = s.cmd(&step.send).await;
        assert_eq!(got.lines.len(), expected.len(), "{:?}", got.lines);
        for (line, want) in got.lines.iter().zip(expected) {
            match want.strip_suffix('*') {
                Some(prefix) => assert!(line.starts_with(prefix), "{line:?} vs {want:?}"),
                None => assert_eq!(line, want, "after {:.40}", step.send),
            }
        }
    }
    assert_eq!(s.closed().await, 0);
    let stored = home.maildir();
    assert_eq!(stored.len(), 1);
    assert!(stored[0].ends_with(b"Subject: codes\n\nbody\n"));
}

#[tokio::test]
async fn every_reply_gets_its_code_when_switched_on() {
    run_script(true).await;
}

#[tokio::test]
async fn switched_off_every_reply_is_qmails() {
    run_script(false).await;
}

/// A session with the switch on and `[r]` running `plugins/rcpt`, which
/// answers by recipient.
async fn rcpt_plugin_session(home: &TestHome) -> Driver {
    home.control("enhancedstatuscodes", "\n");
    let plugin = home.plugin(
        "rcpt",
        "#!/bin/sh\n\
         case \"$SMTPRCPTTO\" in\n\
         unknown@*) printf 'E550 5.1.1 no such user\\n' ;;\n\
         soft@*) printf 'E451 4.2.1 mailbox busy\\n' ;;\n\
         plain@*) printf 'E550 go away\\n' ;;\n\
         later@*) printf 'E550 try later (#4.7.1)\\n' ;;\n\
         multi@*) printf 'P550-first line\\nE550 second line\\n' ;;\n\
         esac\n",
    );
    home.smtpplugins(&format!("[r]\n{plugin}\n"));
    let mut s = home.session(LOCAL).await;
    s.greeting().await.all(&["220 mx.ref.test ESMTP"]);
    s.cmd("MAIL FROM:<a@example.org>")
        .await
        .all(&["250 2.1.0 ok"]);
    s
}

#[tokio::test]
async fn a_plugin_reply_with_its_own_code_keeps_it() {
    let home = TestHome::new();
    let mut s = rcpt_plugin_session(&home).await;
    s.cmd("RCPT TO:<unknown@ref.test>")
        .await
        .all(&["550 5.1.1 no such user"]);
    s.cmd("RCPT TO:<soft@ref.test>")
        .await
        .all(&["451 4.2.1 mailbox busy"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 2.1.5 ok"]);
}

#[tokio::test]
async fn a_plugin_reply_without_a_code_gets_the_default_or_its_trailing_one() {
    let home = TestHome::new();
    let mut s = rcpt_plugin_session(&home).await;
    s.cmd("RCPT TO:<plain@ref.test>")
        .await
        .all(&["550 5.0.0 go away"]);
    // The reply's class wins over the trailing code's.
    s.cmd("RCPT TO:<later@ref.test>")
        .await
        .all(&["550 5.7.1 try later (#4.7.1)"]);
    // Every line of a multi-line reply.
    s.cmd("RCPT TO:<multi@ref.test>")
        .await
        .all(&["550-5.0.0 first line", "550 5.0.0 second line"]);
}

#[tokio::test]
async fn the_greeting_and_a_connection_hook_refusal_get_no_code() {
    let home = TestHome::new();
    home.control("enhancedstatuscodes", "1\n");
    let plugin = home.plugin("c", "#!/bin/sh\nprintf 'E554 go away\\n'\n");
    home.smtpplugins(&format!("[c]\n{plugin}\n"));
    let mut s = home.session(LOCAL).await;
    s.greeting().await.all(&["554 go away"]);
    s.cmd("HELO client.test").await.all(&["250 mx.ref.test"]);
    s.cmd("NOOP").await.all(&["250 2.0.0 ok"]);
}

#[tokio::test]
async fn a_timeout_after_ehlo_gets_a_code() {
    let home = TestHome::new();
    home.control("enhancedstatuscodes", "1\n");
    home.control("timeoutsmtpd", "1\n");
    let mut s = home.session(LOCAL).await;
    s.greeting().await;
    s.cmd("EHLO client.test").await.code(250);
    assert_eq!(s.line().await, "451 4.4.2 timeout (#4.4.2)");
    assert_eq!(s.closed().await, 1);
}

/// smtplib under tcpserver with the switch on: the EHLO keyword, then
/// MAIL, a refused RCPT, STARTTLS, a failed and a good AUTH (with the
/// 334 prompt left alone), a relayed message and QUIT. Prints one line
/// per reply: `name: code text`.
const SMTPLIB_CODES: &str = r#"
import smtplib, ssl, sys
port = int(sys.argv[1])
ctx = ssl._create_unverified_context()
def show(name, reply):
    print(name + ":", reply[0], reply[1].decode())
s = smtplib.SMTP("127.0.0.1", port, timeout=30)
s.ehlo("py.test")
print("feature:", "enhancedstatuscodes" in s.esmtp_features)
show("mail", s.mail("a@example.org"))
show("rcpt", s.rcpt("eve@other.test"))
show("rset", s.rset())
show("starttls", s.starttls(context=ctx))
s.ehlo("py.test")
print("feature-tls:", "enhancedstatuscodes" in s.esmtp_features)
show("starttls-again", s.docmd("STARTTLS"))
show("login-prompt", s.docmd("AUTH", "LOGIN"))
show("cancel", s.docmd("*"))
s.user, s.password = "alice", "wrong"
try:
    s.auth("PLAIN", s.auth_plain)
except smtplib.SMTPAuthenticationError as e:
    show("auth-bad", (e.smtp_code, e.smtp_error))
s.user, s.password = "alice", "secret"
show("auth", s.auth("PLAIN", s.auth_plain))
show("auth-again", s.docmd("AUTH", "PLAIN AGFsaWNlAHNlY3JldA=="))
print("refused:", sorted(s.sendmail("a@example.org", ["eve@other.test"], "Subject: esc\r\n\r\nrelayed\r\n")))
show("quit", s.quit())
"#;

#[test]
fn smtplib_sees_the_extension_and_the_codes_over_starttls_and_auth() {
    let home = tls_home();
    home.control("enhancedstatuscodes", "1\n");
    let server = Server::tcpserver_with(&home, &[("SMTPAUTH", "")], &serve_args(&[]));
    let out = process::python(SMTPLIB_CODES, &[&server.port.to_string()]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "feature: True",
            "mail: 250 2.1.0 ok",
            "rcpt: 553 5.7.1 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)",
            "rset: 250 2.0.0 flushed",
            "starttls: 220 2.0.0 ready to start TLS",
            "feature-tls: True",
            "starttls-again: 503 5.5.1 TLS already active (#5.5.1)",
            "login-prompt: 334 VXNlcm5hbWU6",
            "cancel: 501 5.0.0 auth exchange canceled (#5.0.0)",
            "auth-bad: 535 5.7.1 authentication failed (#5.7.1)",
            "auth: 235 2.0.0 ok, go ahead (#2.0.0)",
            "auth-again: 503 5.5.0 you're already authenticated (#5.5.0)",
            "refused: []",
            "quit: 221 2.0.0 mx.ref.test",
        ],
        "{}",
        out.stderr
    );
    let stored = home.maildir();
    assert_eq!(stored.len(), 1);
    assert!(stored[0].ends_with(b"Subject: esc\n\nrelayed\n"));
}
