//! One test per behaviour rule of SPEC.md §3–8 (qmail-smtpd + qmail-spp),
//! driven through the in-memory session driver. Test names follow the
//! rule they check.

use crate::util::{strip_received_date, TestHome};

const LOCAL: &[(&str, &str)] = &[("TCPREMOTEIP", "127.0.0.1"), ("TCPLOCALIP", "127.0.0.1")];

#[tokio::test]
async fn greeting_uses_me_and_ehlo_lists_extensions() {
    let home = TestHome::new();
    let mut s = home.session(LOCAL).await;
    s.greeting().await.all(&["220 mx.ref.test ESMTP"]);
    s.cmd("EHLO client.test").await.all(&["250-mx.ref.test", "250-PIPELINING", "250 8BITMIME"]);
    s.cmd("HELO client.test").await.all(&["250 mx.ref.test"]);
    s.cmd("QUIT").await.all(&["221 mx.ref.test"]);
    assert_eq!(s.closed().await, 0);
}

#[tokio::test]
async fn accepted_message_is_stored_in_maildir_with_received_line() {
    let home = TestHome::new();
    let mut s = home.session(LOCAL).await;
    s.greeting().await;
    s.cmd("HELO client.test").await.code(250);
    let r = s.mail("a@example.org", &["bob@ref.test"], "Subject: x\r\n\r\n..dot\r\nline\r\n").await;
    assert!(r.last().starts_with("250 ok "), "{:?}", r.lines);
    s.cmd("QUIT").await.code(221);
    let msgs = home.maildir();
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        strip_received_date(&msgs[0]),
        "Return-Path: <a@example.org>\nX-Original-To: <bob@ref.test>\n\
         Received: from unknown (HELO client.test) (127.0.0.1)\n  by 127.0.0.1 with SMTP; DATE\n\
         Subject: x\n\n.dot\nline\n"
    );
}
