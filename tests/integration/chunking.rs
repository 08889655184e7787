//! CHUNKING / BDAT (RFC 3030): chunk boundaries anywhere, pipelining,
//! refusals that consume their chunk, size limits, and the smuggling cases
//! (nothing inside a chunk is ever a command or a second message; bare CR
//! and LF are refused), through the in-memory session driver; then raw
//! clients against the real binary under tcpserver, and a message received
//! in chunks forwarded to a real Postfix with DATA.

use crate::binary::pipelined;
use crate::util::mta::PrivatePostfix;
use crate::util::process::Server;
use crate::util::{strip_received_date, Driver, TestHome};
use std::time::Duration;

const LOCAL: &[(&str, &str)] = &[("TCPREMOTEIP", "127.0.0.1"), ("TCPLOCALIP", "127.0.0.1")];
const MAIL_FIRST: &str = "503 MAIL first (#5.5.1)";
const RCPT_FIRST: &str = "503 RCPT first (#5.5.1)";
const BARE_LF: &str = "451 See http://pobox.com/~djb/docs/smtplf.html.";
const BARE_CR: &str = "554 bare CR in message body; lines must end in CRLF (#5.6.2)";
const TOO_BIG: &str = "552 sorry, that message size exceeds my databytes limit (#5.3.4)";

/// A session after EHLO, with MAIL and one accepted RCPT.
async fn in_transaction(home: &TestHome) -> Driver {
    let mut s = home.session(LOCAL).await;
    s.greeting().await;
    s.cmd("EHLO client.test").await.code(250);
    s.cmd("MAIL FROM:<a@example.org>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    s
}

/// `BDAT n [LAST]` with its chunk.
fn bdat(chunk: &[u8], last: bool) -> Vec<u8> {
    let mut v = format!(
        "BDAT {}{}\r\n",
        chunk.len(),
        if last { " LAST" } else { "" }
    )
    .into_bytes();
    v.extend_from_slice(chunk);
    v
}

/// The stored message after the Received: line (the envelope lines and
/// the Received: line of the Maildir copy removed).
fn body_of(stored: &[u8]) -> String {
    let text = strip_received_date(stored);
    let at = text.find("; DATE\n").expect("a Received: line") + "; DATE\n".len();
    text[at..].to_string()
}

#[tokio::test]
async fn ehlo_offers_chunking_and_a_message_in_chunks_is_stored_like_data() {
    let home = TestHome::new();
    let mut s = home.session(LOCAL).await;
    s.greeting().await;
    let ehlo = s.cmd("EHLO client.test").await;
    assert!(ehlo.lines.iter().any(|l| l == "250 CHUNKING"), "{ehlo:?}");
    s.cmd("MAIL FROM:<a@example.org>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    let first: &[u8] = b"Subject: t\r\n\r\nline one\r\n.\r\n..two";
    s.send(bdat(first, false)).await;
    s.reply()
        .await
        .all(&[&format!("250 ok {} octets", first.len())]);
    s.send(bdat(b"\r\n", true)).await;
    let r = s.reply().await;
    assert!(r.last().starts_with("250 ok "), "{r:?}");
    s.cmd("QUIT").await.code(221);
    let msgs = home.maildir();
    assert_eq!(msgs.len(), 1);
    // No dot-stuffing in BDAT: a `.` line and `..two` are data.
    assert_eq!(body_of(&msgs[0]), "Subject: t\n\nline one\n.\n..two\n");
    assert!(strip_received_date(&msgs[0]).starts_with(
        "Return-Path: <a@example.org>\nX-Original-To: <bob@ref.test>\nReceived: from unknown (HELO client.test)"
    ));
}

#[tokio::test]
async fn chunk_boundaries_at_every_position_store_the_same_message() {
    let home = TestHome::new();
    let msg: &[u8] = b"Subject: cut\r\n\r\na\r\n\r\n.\r\nend\r\n";
    for cut in 0..=msg.len() {
        let mut s = in_transaction(&home).await;
        let mut batch = bdat(&msg[..cut], false);
        batch.extend(bdat(&msg[cut..], true));
        s.send(batch).await;
        s.reply().await.code(250);
        let r = s.reply().await;
        assert!(r.last().starts_with("250 ok "), "cut {cut}: {r:?}");
        s.cmd("QUIT").await.code(221);
    }
    let msgs = home.maildir();
    assert_eq!(msgs.len(), msg.len() + 1);
    for m in &msgs {
        assert_eq!(body_of(m), "Subject: cut\n\na\n\n.\nend\n");
    }
}

#[tokio::test]
async fn a_pipelined_transaction_with_an_empty_last_chunk_then_quit() {
    let home = TestHome::new();
    let mut s = home.session(LOCAL).await;
    s.greeting().await;
    s.cmd("EHLO client.test").await.code(250);
    let mut batch = b"MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@ref.test>\r\n".to_vec();
    let chunk: &[u8] = b"Subject: p\r\n\r\nbody\r\n";
    batch.extend(bdat(chunk, false));
    batch.extend(bdat(b"", true));
    batch.extend(b"QUIT\r\n");
    s.send(batch).await;
    s.reply().await.all(&["250 ok"]);
    s.reply().await.all(&["250 ok"]);
    s.reply()
        .await
        .all(&[&format!("250 ok {} octets", chunk.len())]);
    let queued = s.reply().await;
    assert!(queued.last().starts_with("250 ok "), "{queued:?}");
    s.reply().await.all(&["221 mx.ref.test"]);
    assert_eq!(s.closed().await, 0);
    assert_eq!(body_of(&home.maildir()[0]), "Subject: p\n\nbody\n");
}

#[tokio::test]
async fn bdat_without_mail_or_rcpt_consumes_its_chunk() {
    let home = TestHome::new();
    let mut s = home.session(LOCAL).await;
    s.greeting().await;
    s.cmd("EHLO client.test").await.code(250);
    // The chunk holds commands: they are data, never executed.
    s.send(bdat(b"RSET\r\nQUIT\r\n", true)).await;
    s.reply().await.all(&[MAIL_FIRST]);
    s.cmd("NOOP").await.all(&["250 ok"]);
    s.cmd("MAIL FROM:<a@example.org>").await.code(250);
    s.cmd("RCPT TO:<eve@elsewhere.test>").await.code(553);
    s.send(bdat(b"MAIL FROM:<x@y>\r\n", false)).await;
    s.reply().await.all(&[RCPT_FIRST]);
    s.cmd("NOOP").await.all(&["250 ok"]);
    s.cmd("QUIT").await.code(221);
    assert!(home.maildir().is_empty());
}

#[tokio::test]
async fn a_refused_first_chunk_ends_the_transaction_and_pipelined_chunks_are_dropped() {
    let home = TestHome::new();
    home.plugin_printing("data", "E554 no data today\\n");
    let mut s = in_transaction(&home).await;
    let mut batch = bdat(b"Subject: x\r\n\r\nfirst\r\n", false);
    batch.extend(bdat(b"second part\r\n", true));
    batch.extend(b"NOOP\r\n");
    s.send(batch).await;
    s.reply().await.all(&["554 no data today"]);
    // The second chunk must not start a message of its own.
    s.reply().await.all(&[MAIL_FIRST]);
    s.reply().await.all(&["250 ok"]);
    s.cmd("QUIT").await.code(221);
    assert!(home.maildir().is_empty());
}

#[tokio::test]
async fn the_data_hook_runs_once_at_the_first_chunk() {
    let home = TestHome::new();
    let rel = home.plugin(
        "count",
        "#!/bin/sh\necho \"$SMTPMAILFROM\" >> ran-data\necho HX-Data-Hook: ran\n",
    );
    home.smtpplugins(&format!("[data]\n{rel}\n"));
    let mut s = in_transaction(&home).await;
    for (i, part) in ["Subject: h\r\n", "\r\n", "one\r\n"].iter().enumerate() {
        s.send(bdat(part.as_bytes(), false)).await;
        s.reply().await.code(250);
        let runs = std::fs::read_to_string(home.dir().join("ran-data")).unwrap();
        assert_eq!(runs, "a@example.org\n", "after chunk {i}");
    }
    s.send(bdat(b"two\r\n", true)).await;
    assert!(s.reply().await.last().starts_with("250 ok "));
    let msgs = home.maildir();
    // The plugin's header follows the Received: line, as with DATA.
    assert_eq!(
        body_of(&msgs[0]),
        "X-Data-Hook: ran\nSubject: h\n\none\ntwo\n"
    );
}

#[tokio::test]
async fn data_after_bdat_is_refused_and_rset_clears_it() {
    let home = TestHome::new();
    let mut s = in_transaction(&home).await;
    s.send(bdat(b"Subject: mix\r\n", false)).await;
    s.reply().await.code(250);
    s.cmd("DATA")
        .await
        .all(&["503 DATA after BDAT is not allowed, send RSET (#5.5.1)"]);
    s.cmd("RSET").await.all(&["250 flushed"]);
    s.send(bdat(b"x\r\n", true)).await;
    s.reply().await.all(&[MAIL_FIRST]);
    let r = s
        .mail(
            "a@example.org",
            &["bob@ref.test"],
            "Subject: ok\r\n\r\nfine\r\n",
        )
        .await;
    assert!(r.last().starts_with("250 ok "), "{r:?}");
    let msgs = home.maildir();
    assert_eq!(msgs.len(), 1);
    assert_eq!(body_of(&msgs[0]), "Subject: ok\n\nfine\n");
}

#[tokio::test]
async fn bdat_after_last_is_out_of_sequence() {
    let home = TestHome::new();
    let mut s = in_transaction(&home).await;
    s.send(bdat(b"Subject: one\r\n\r\n", true)).await;
    assert!(s.reply().await.last().starts_with("250 ok "));
    s.send(bdat(b"more\r\n", true)).await;
    s.reply().await.all(&[MAIL_FIRST]);
    assert_eq!(home.maildir().len(), 1);
}

#[tokio::test]
async fn sizes_are_checked_against_databytes_as_chunks_arrive() {
    let home = TestHome::new();
    home.control("databytes", "100\n");
    let mut s = in_transaction(&home).await;
    s.send(bdat(&[b'a'; 60], false)).await;
    s.reply().await.all(&["250 ok 60 octets"]);
    // The second chunk takes the message over the limit: refused at once,
    // its bytes read, and the transaction is over.
    let mut big = vec![b'b'; 5000];
    big.extend_from_slice(b"\r\nQUIT\r\n");
    s.send(bdat(&big, false)).await;
    s.reply().await.all(&[TOO_BIG]);
    s.send(bdat(b"\r\n", true)).await;
    s.reply().await.all(&[MAIL_FIRST]);
    s.cmd("NOOP").await.all(&["250 ok"]);
    assert!(home.maildir().is_empty());
}

#[tokio::test]
async fn a_huge_declared_size_never_reaches_the_queue() {
    let home = TestHome::new();
    home.control("databytes", "1000\n");
    let mut s = in_transaction(&home).await;
    s.send(b"BDAT 18446744073709551615 LAST\r\nSubject: x\r\n\r\nshort\r\n")
        .await;
    s.hang_up().await;
    assert_eq!(s.closed().await, 1);
    assert!(home.maildir().is_empty());
    assert_eq!(home.maildir_tmp_count(), 0);
    // Too large for 64 bits, or not a number: the chunk cannot be framed,
    // so the connection is closed without reading on.
    for arg in ["18446744073709551616", "ten", "", "5 LAST x", "-5"] {
        let mut s = in_transaction(&home).await;
        s.send(format!("BDAT {arg}\r\nRSET\r\n")).await;
        s.reply()
            .await
            .all(&["501 syntax error in BDAT, closing connection (#5.5.4)"]);
        assert_eq!(s.closed().await, 1, "BDAT {arg:?}");
    }
}

#[tokio::test]
async fn bare_cr_and_bare_lf_inside_chunks_are_refused() {
    let home = TestHome::new();
    let cases: &[(&[&[u8]], &str)] = &[
        (&[b"a\r\n.\r.\r\nMAIL FROM:<e@x>\r\n"], BARE_CR),
        (&[b"a\r\n.\n.\r\nMAIL FROM:<e@x>\r\n"], BARE_LF),
        (&[b"a\r\n\n.\n\r\n"], BARE_LF),
        (&[b"ends in CR\r"], BARE_CR),
        (&[b"x\r", b"y\r\n"], BARE_CR),
    ];
    for (chunks, refusal) in cases {
        let mut s = in_transaction(&home).await;
        let mut replies = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            s.send(bdat(chunk, i + 1 == chunks.len())).await;
            let r = s.reply().await;
            let done = !r.last().starts_with("250 ok ") || i + 1 == chunks.len();
            replies.push(r.last().to_string());
            if done {
                break;
            }
        }
        assert_eq!(replies.last().unwrap(), refusal, "{chunks:?}: {replies:?}");
        // The session goes on (the chunk sizes keep the framing).
        s.cmd("NOOP").await.all(&["250 ok"]);
    }
    assert!(home.maildir().is_empty());
}

#[tokio::test]
async fn smuggled_commands_and_terminators_inside_chunks_stay_data() {
    let home = TestHome::new();
    let smuggle: &[u8] = b"Subject: s\r\n\r\nhi\r\n.\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<bob@ref.test>\r\nDATA\r\nSubject: smuggled\r\n\r\n.\r\n";
    // One chunk holding CRLF.CRLF and commands, then the terminator split
    // across two chunks.
    let mut s = in_transaction(&home).await;
    s.send(bdat(smuggle, true)).await;
    assert!(s.reply().await.last().starts_with("250 ok "));
    let mut s = in_transaction(&home).await;
    let mut batch = bdat(b"Subject: split\r\n\r\nx\r\n.", false);
    batch.extend(bdat(b"\r\nRCPT TO:<eve@elsewhere.test>\r\n", true));
    s.send(batch).await;
    s.reply().await.code(250);
    assert!(s.reply().await.last().starts_with("250 ok "));
    s.cmd("QUIT").await.code(221);
    let msgs = home.maildir();
    assert_eq!(msgs.len(), 2, "exactly one message per transaction");
    let bodies: Vec<String> = msgs.iter().map(|m| body_of(m)).collect();
    assert!(bodies.contains(&"Subject: s\n\nhi\n.\nMAIL FROM:<evil@x.test>\nRCPT TO:<bob@ref.test>\nDATA\nSubject: smuggled\n\n.\n".to_string()), "{bodies:?}");
    assert!(
        bodies.contains(&"Subject: split\n\nx\n.\nRCPT TO:<eve@elsewhere.test>\n".to_string()),
        "{bodies:?}"
    );
    for m in &msgs {
        assert!(!m.contains(&b'\r'), "no CR is stored");
        assert!(strip_received_date(m).matches("Return-Path:").count() == 1);
    }
}

#[tokio::test]
async fn bdat_through_qmail_queue_and_body_plugins() {
    let home = TestHome::new();
    home.install_qmail_queue();
    let rel = home.plugin("copy", "#!/bin/sh\ncat > body-seen\necho HX-Body: seen\n");
    home.smtpplugins(&format!("[body]\n{rel}\n"));
    let mut s = in_transaction(&home).await;
    let mut batch = bdat(b"Subject: q\r\n\r\nline\r", false);
    batch.extend(bdat(b"\nlast line without end", true));
    s.send(batch).await;
    s.reply().await.code(250);
    let r = s.reply().await;
    assert!(
        r.last().starts_with("250 ok ") && r.last().contains(" qp "),
        "{r:?}"
    );
    let queued = home.queued();
    assert_eq!(queued.len(), 1);
    let (message, envelope, _) = &queued[0];
    let message = strip_received_date(message);
    assert!(
        message.starts_with("X-Body: seen\nReceived: from unknown (HELO client.test)"),
        "{message}"
    );
    assert!(
        message.ends_with("; DATE\nSubject: q\n\nline\nlast line without end\n"),
        "{message}"
    );
    assert_eq!(envelope, b"Fa@example.org\0Tbob@ref.test\0\0");
    let seen = std::fs::read(home.dir().join("body-seen")).unwrap();
    assert!(strip_received_date(&seen).ends_with("Subject: q\n\nline\nlast line without end\n"));
}

#[tokio::test]
async fn chunking_switched_off_answers_bdat_as_unknown() {
    let home = TestHome::new();
    home.control("chunking", "0\n");
    let mut s = in_transaction(&home).await;
    s.cmd("BDAT 0 LAST")
        .await
        .all(&["502 unimplemented (#5.5.1)"]);
    s.cmd("QUIT").await.code(221);
}

#[tokio::test]
async fn a_connection_lost_mid_chunk_leaves_nothing() {
    let home = TestHome::new();
    home.smtpplugins("[body]\n:exit 0\n");
    let mut s = in_transaction(&home).await;
    s.send(bdat(b"Subject: first\r\n", false)).await;
    s.reply().await.code(250);
    s.send(b"BDAT 1000 LAST\r\nonly part").await;
    s.hang_up().await;
    assert_eq!(s.closed().await, 1);
    assert!(home.maildir().is_empty());
    let spool = home.dir().join("spool");
    let left = std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "spool files left in {}", spool.display());
}

#[test]
fn raw_client_under_tcpserver_smuggles_nothing() {
    let home = TestHome::new();
    let server = Server::tcpserver(&home, &[]);
    let smuggle: &[u8] = b"Subject: raw\r\n\r\nhi\r\n.\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<bob@ref.test>\r\nDATA\r\nSubject: smuggled\r\n\r\n.\r\n";
    let mut batch =
        b"EHLO raw.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@ref.test>\r\n".to_vec();
    batch.extend(bdat(&smuggle[..20], false));
    batch.extend(bdat(&smuggle[20..], false));
    batch.extend(bdat(b"", true));
    // A second transaction whose chunks hold CR.CR and LF.LF.
    batch.extend(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@ref.test>\r\n");
    batch.extend(bdat(b"x\r\n.\r.\rMAIL FROM:<evil@x.test>\r\n", true));
    batch.extend(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@ref.test>\r\n");
    batch.extend(bdat(b"x\n.\nMAIL FROM:<evil@x.test>\r\n", true));
    batch.extend(b"QUIT\r\n");
    let replies = pipelined(server.port, &batch, 17);
    assert_eq!(
        replies[5..9],
        [
            "250 ok",
            "250 ok",
            "250 ok 20 octets",
            &format!("250 ok {} octets", smuggle.len() - 20)
        ]
    );
    assert!(replies[9].starts_with("250 ok "), "{replies:?}");
    assert_eq!(
        replies[10..],
        [
            "250 ok",
            "250 ok",
            BARE_CR,
            "250 ok",
            "250 ok",
            BARE_LF,
            "221 mx.ref.test"
        ][..],
        "{replies:?}"
    );
    let msgs = home.maildir();
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        body_of(&msgs[0]),
        "Subject: raw\n\nhi\n.\nMAIL FROM:<evil@x.test>\nRCPT TO:<bob@ref.test>\nDATA\nSubject: smuggled\n\n.\n"
    );
}

#[test]
fn a_message_in_chunks_is_forwarded_to_postfix_with_data() {
    let home = TestHome::new();
    let Some(pf) = PrivatePostfix::start(home.dir(), &["bob"]) else {
        return;
    };
    home.control("rcpthosts", "example.test\n");
    home.control("queue", format!("smtp 127.0.0.1:{}\n", pf.port));
    let server = Server::tcpserver(&home, &[]);
    // Lines that need dot-stuffing on the way out, a CRLF split across
    // chunks, and no line end at the very end.
    let msg: &[u8] = b"Subject: chunks\r\n\r\n.\r\n..two\r\n.three\r\nlast";
    let mut batch =
        b"EHLO raw.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<bob@example.test>\r\n".to_vec();
    batch.extend(bdat(&msg[..18], false));
    batch.extend(bdat(&msg[18..], true));
    batch.extend(b"QUIT\r\n");
    let replies = pipelined(server.port, &batch, 10);
    assert!(replies[8].starts_with("250 ok"), "{replies:?}");
    assert_eq!(replies[9], "221 mx.ref.test");
    let stored = pf.wait_messages("bob", 1, Duration::from_secs(30));
    let text = String::from_utf8_lossy(&stored[0]);
    assert!(
        text.contains("\nSubject: chunks\n") && text.ends_with("\n\n.\n..two\n.three\nlast\n"),
        "{text}"
    );
    assert!(text.contains("Return-Path: <a@sender.test>"), "{text}");
}

#[tokio::test]
async fn chunk_replies_carry_enhanced_codes_when_switched_on() {
    let home = TestHome::new();
    home.control("enhancedstatuscodes", "1\n");
    let mut s = home.session(LOCAL).await;
    s.greeting().await;
    s.cmd("EHLO client.test").await.code(250);
    s.send(bdat(b"x\r\n", true)).await;
    s.reply().await.all(&["503 5.5.1 MAIL first (#5.5.1)"]);
    s.cmd("MAIL FROM:<a@example.org>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    s.send(bdat(b"Subject: e\r\n", false)).await;
    s.reply().await.all(&["250 2.0.0 ok 12 octets"]);
    s.send(bdat(b"\r\nbody\r\n", true)).await;
    let r = s.reply().await;
    assert!(r.last().starts_with("250 2.0.0 ok "), "{r:?}");
}

#[tokio::test]
async fn an_smtputf8_message_in_chunks_keeps_its_flag_to_the_end() {
    let home = TestHome::new();
    home.install_qmail_queue();
    let rel = home.plugin(
        "env",
        "#!/bin/sh\necho \"SMTPUTF8=$SMTPUTF8\" >> seen-body\n",
    );
    home.smtpplugins(&format!("[body]\n{rel}\n"));
    let mut s = home.session(LOCAL).await;
    s.greeting().await;
    s.cmd("EHLO client.test").await.code(250);
    s.cmd("MAIL FROM:<jos\u{e9}@example.org> SMTPUTF8")
        .await
        .code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    s.send(bdat("Subject: caf\u{e9}\r\n".as_bytes(), false))
        .await;
    s.reply().await.code(250);
    s.send(bdat(b"\r\nbody\r\n", true)).await;
    assert!(s.reply().await.last().starts_with("250 ok "));
    let seen = std::fs::read_to_string(home.dir().join("seen-body")).unwrap();
    assert_eq!(seen, "SMTPUTF8=1\n");
    let queued = home.queued();
    let (message, _, environment) = &queued[0];
    assert!(
        strip_received_date(message).contains(" with UTF8SMTP;"),
        "{}",
        strip_received_date(message)
    );
    assert!(
        environment.lines().any(|l| l == "SMTPUTF8=1"),
        "{environment}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_chunk_that_arrives_too_slowly_gets_451_timeout() {
    // A byte every half second: every read is within timeoutsmtpd (1 s),
    // but after the 1 s grace the chunk falls behind 1 KiB/s.
    let home = TestHome::new();
    home.control("timeoutsmtpd", "1\n");
    home.control("mindatarategrace", "1\n");
    let mut s = in_transaction(&home).await;
    s.send("BDAT 100\r\n").await;
    let mut reply = None;
    for sent in 1..=20 {
        s.send("x").await;
        let wait = Duration::from_millis(500);
        if let Ok(line) = tokio::time::timeout(wait, s.try_line()).await {
            reply = Some((sent, line));
            break;
        }
    }
    let (sent, line) = reply.expect("no reply while the chunk dribbled in");
    assert_eq!(line.as_deref(), Some("451 timeout (#4.4.2)"));
    assert!(sent <= 3, "closed after {sent} bytes");
    assert_eq!(s.closed().await, 1);
}
