//! The real binary: `stdio` on pipes, `stdio` under tcpserver with smtplib
//! and swaks, and `serve` with smtplib. Accepted messages are read back
//! from the Maildir and from the test qmail-queue and compared byte for
//! byte.

use crate::util::process::{self, stdio, Server};
use crate::util::{strip_received_date, TestHome};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

/// tcpserver's variables for a loopback client.
const TCPENV: &[(&str, &str)] = &[
    ("PROTO", "TCP"),
    ("TCPREMOTEIP", "127.0.0.1"),
    ("TCPREMOTEPORT", "40000"),
    ("TCPLOCALIP", "127.0.0.1"),
    ("TCPLOCALPORT", "25"),
    ("TCPLOCALHOST", "mx.ref.test"),
];

const SESSION: &[u8] = b"EHLO client.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@ref.test>\r\nRCPT TO:<eve@elsewhere.test>\r\nRCPT TO:<carol@ref.test>\r\nDATA\r\nSubject: test\r\n\r\nline 1\r\n..dotted\r\n\r\n.\r\nQUIT\r\n";

#[test]
fn stdio_pipelined_session_delivers_to_maildir_byte_for_byte() {
    let home = TestHome::new();
    let out = stdio(&home, TCPENV, SESSION);
    let lines = out.lines();
    assert_eq!(
        &lines[..10],
        [
            "220 mx.ref.test ESMTP",
            "250-mx.ref.test",
            "250-PIPELINING",
            "250-8BITMIME",
            "250-SMTPUTF8",
            "250 CHUNKING",
            "250 ok",
            "250 ok",
            "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)",
            "250 ok",
        ]
    );
    assert_eq!(lines[10], "354 go ahead");
    assert!(lines[11].starts_with("250 ok "), "{lines:?}");
    assert_eq!(lines[12], "221 mx.ref.test");
    assert_eq!(out.code, 0);
    let msgs = home.maildir();
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        strip_received_date(&msgs[0]),
        "Return-Path: <a@example.org>\nX-Original-To: <bob@ref.test>\nX-Original-To: <carol@ref.test>\n\
         Received: from unknown (HELO client.test) (127.0.0.1)\n  by mx.ref.test with SMTP; DATE\n\
         Subject: test\n\nline 1\n.dotted\n\n"
    );
    assert_eq!(home.maildir_tmp_count(), 0);
}

#[test]
fn stdio_hands_message_envelope_and_environment_to_qmail_queue() {
    let home = TestHome::new();
    home.install_qmail_queue();
    home.plugin_printing("rcpt", "SFROM_PLUGIN=yes\\nHX-Checked: yes\\n");
    let out = stdio(&home, TCPENV, SESSION);
    let reply = out.lines()[11].to_string();
    assert!(
        reply.starts_with("250 ok ") && reply.contains(" qp "),
        "{reply}"
    );
    let queued = home.queued();
    assert_eq!(queued.len(), 1);
    let (message, envelope, environment) = &queued[0];
    assert_eq!(
        envelope,
        b"Fa@example.org\0Tbob@ref.test\0Tcarol@ref.test\0\0"
    );
    assert_eq!(
        strip_received_date(message),
        "Received: from unknown (HELO client.test) (127.0.0.1)\n  by mx.ref.test with SMTP; DATE\n\
         X-Checked: yes\nX-Checked: yes\nX-Checked: yes\n\
         Subject: test\n\nline 1\n.dotted\n\n"
    );
    for var in [
        "FROM_PLUGIN=yes",
        "TCPREMOTEIP=127.0.0.1",
        "SMTPRCPTCOUNTALL=3",
        "SMTPHELOHOST=client.test",
    ] {
        assert!(
            environment.lines().any(|l| l == var),
            "{var} missing in {environment}"
        );
    }
    // qp is the queue program's pid, as with qmail.
    assert!(
        reply.split(' ').nth(4).unwrap().parse::<u32>().is_ok(),
        "{reply}"
    );
}

#[test]
fn stdio_qmail_queue_exit_status_becomes_the_reply() {
    let home = TestHome::new();
    home.install_qmail_queue();
    for (code, reply) in [
        (
            "31",
            "554 mail server permanently rejected message (#5.3.0)",
        ),
        ("53", "451 qq write error or disk full (#4.3.0)"),
        (
            "71",
            "451 mail server temporarily rejected message (#4.3.0)",
        ),
        ("99", "451 qq temporary problem (#4.3.0)"),
    ] {
        home.write("qq-exit", code);
        let out = stdio(&home, TCPENV, SESSION);
        assert_eq!(out.lines()[11], reply, "exit {code}");
    }
}

#[test]
fn stdio_without_smtpplugins_says_421_and_exits_1() {
    let home = TestHome::new();
    home.remove_control("smtpplugins");
    let out = stdio(&home, TCPENV, b"HELO x\r\n");
    assert_eq!(out.stdout, "421 unable to read controls (#4.3.0)\r\n");
    assert_eq!(out.code, 1);
    // With NOSPP the file is not needed.
    let out = stdio(&home, &[("NOSPP", "")], b"HELO x\r\nQUIT\r\n");
    assert_eq!(
        out.lines(),
        [
            "220 mx.ref.test ESMTP",
            "250 mx.ref.test",
            "221 mx.ref.test"
        ]
    );
}

#[test]
fn stdio_without_greeting_says_421() {
    let home = TestHome::new();
    home.remove_control("me");
    let out = stdio(&home, TCPENV, b"QUIT\r\n");
    assert_eq!(out.stdout, "421 unable to read controls (#4.3.0)\r\n");
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("control/me"), "{}", out.stderr);
}

#[test]
fn stdio_exits_1_on_eof_and_0_after_quit() {
    let home = TestHome::new();
    assert_eq!(stdio(&home, TCPENV, b"NOOP\r\n").code, 1);
    assert_eq!(stdio(&home, TCPENV, b"NOOP\r\nQUIT\r\n").code, 0);
}

#[test]
fn stdio_read_timeout_says_451_timeout() {
    let home = TestHome::new();
    home.control("timeoutsmtpd", "1\n");
    let mut cmd = Command::new(process::bin());
    cmd.arg("--home").arg(home.dir()).arg("stdio");
    let out = process::run_keeping_stdin_open(cmd, b"", Duration::from_secs(30));
    assert_eq!(
        out.stdout,
        "220 mx.ref.test ESMTP\r\n451 timeout (#4.4.2)\r\n"
    );
    assert_eq!(out.code, 1);
}

#[test]
fn stdio_bare_lf_in_data_closes_with_451_and_stores_nothing() {
    let home = TestHome::new();
    let out = stdio(
        &home,
        TCPENV,
        b"MAIL FROM:<a@b>\r\nRCPT TO:<x@ref.test>\r\nDATA\r\nbad\nline\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(
        out.lines(),
        [
            "220 mx.ref.test ESMTP",
            "250 ok",
            "250 ok",
            "354 go ahead",
            "451 See http://pobox.com/~djb/docs/smtplf.html."
        ]
    );
    assert_eq!(out.code, 1);
    assert!(home.maildir().is_empty());
    assert_eq!(home.maildir_tmp_count(), 0);
}

/// smtplib: one message with two recipients; prints the refused ones.
const SMTPLIB_SEND: &str = r#"
import smtplib, sys
port = int(sys.argv[1])
msg = "From: a@example.org\r\nTo: bob@ref.test\r\nSubject: smtplib\r\n\r\nHello from smtplib.\r\n.leading dot\r\n"
with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
    s.ehlo("pyclient.test")
    refused = s.sendmail("a@example.org", sys.argv[2:], msg)
    print("refused:", sorted(refused))
"#;

fn assert_smtplib_message(home: &TestHome, rcpts: &str) {
    let msgs = home.maildir();
    assert_eq!(msgs.len(), 1);
    let text = strip_received_date(&msgs[0]);
    let expected_tail = "From: a@example.org\nTo: bob@ref.test\nSubject: smtplib\n\nHello from smtplib.\n.leading dot\n";
    assert!(text.ends_with(expected_tail), "{text}");
    assert!(text.starts_with(&format!("Return-Path: <a@example.org>\n{rcpts}Received: from unknown (HELO pyclient.test) (127.0.0.1)\n  by ")), "{text}");
}

#[test]
fn tcpserver_stdio_with_smtplib() {
    let home = TestHome::new();
    let server = Server::tcpserver(&home, &[]);
    let out = process::python(
        SMTPLIB_SEND,
        &[&server.port.to_string(), "bob@ref.test", "eve@other.test"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "refused: ['eve@other.test']");
    assert_smtplib_message(&home, "X-Original-To: <bob@ref.test>\n");
    // tcpserver's own TCPLOCALHOST (-l 0) names the local host in Received:.
    assert!(strip_received_date(&home.maildir()[0]).contains("  by 0 with SMTP"));
}

#[test]
fn tcpserver_relayclient_from_the_environment_allows_relaying() {
    let home = TestHome::new();
    let server = Server::tcpserver(&home, &[("RELAYCLIENT", "")]);
    let out = process::python(SMTPLIB_SEND, &[&server.port.to_string(), "eve@other.test"]);
    assert_eq!(out.stdout.trim(), "refused: []", "{}", out.stderr);
    assert_smtplib_message(&home, "X-Original-To: <eve@other.test>\n");
}

#[test]
fn tcpserver_stdio_with_swaks() {
    let home = TestHome::new();
    let server = Server::tcpserver(&home, &[]);
    let out = process::swaks(&[
        "--server",
        &format!("127.0.0.1:{}", server.port),
        "--from",
        "sender@example.org",
        "--to",
        "bob@ref.test",
        "--helo",
        "swaks.test",
        "--header",
        "Subject: via swaks",
        "--body",
        "swaks body line",
    ]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(out.stdout.contains("<-  250 ok "), "{}", out.stdout);
    let msgs = home.maildir();
    assert_eq!(msgs.len(), 1);
    let text = String::from_utf8_lossy(&msgs[0]);
    assert!(text.contains("(HELO swaks.test) (127.0.0.1)"), "{text}");
    assert!(text.contains("Subject: via swaks\n"), "{text}");
    assert!(text.contains("\nswaks body line\n"), "{text}");
    // swaks to a foreign domain: refused at RCPT, exit status 24.
    let out = process::swaks(&[
        "--server",
        &format!("127.0.0.1:{}", server.port),
        "--to",
        "x@other.test",
        "--from",
        "a@b.test",
    ]);
    assert!(
        out.stdout
            .contains("<** 553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"),
        "{}",
        out.stdout
    );
    assert_ne!(out.code, 0);
}

/// Sends `batch` in one write and reads `n` reply lines.
pub(crate) fn pipelined(port: u16, batch: impl AsRef<[u8]>, n: usize) -> Vec<String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    (&stream).write_all(batch.as_ref()).unwrap();
    (0..n)
        .map(|_| {
            let mut l = String::new();
            reader.read_line(&mut l).unwrap();
            l.trim_end().to_string()
        })
        .collect()
}

#[test]
fn tcpserver_pipelined_batch_gets_replies_in_order() {
    let home = TestHome::new();
    let server = Server::tcpserver(&home, &[]);
    let replies = pipelined(
        server.port,
        "EHLO p.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@ref.test>\r\nRCPT TO:<y@nope.test>\r\nDATA\r\nhi\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n",
        13,
    );
    assert_eq!(
        replies[..9],
        [
            "250-mx.ref.test",
            "250-PIPELINING",
            "250-8BITMIME",
            "250-SMTPUTF8",
            "250 CHUNKING",
            "250 ok",
            "250 ok",
            "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)",
            "354 go ahead"
        ]
    );
    assert!(replies[9].starts_with("250 ok "));
    assert_eq!(replies[10..], ["250 flushed", "250 ok", "221 mx.ref.test"]);
}

#[test]
fn serve_with_smtplib_and_the_tcpserver_environment() {
    let home = TestHome::new();
    let rel = home.plugin("env", "#!/bin/sh\nenv > helo-env\n");
    home.smtpplugins(&format!("[helo]\n{rel}\n"));
    let server = Server::daemon(&home, &[("TCPREMOTEHOST", "leak.test")]);
    let out = process::python(SMTPLIB_SEND, &[&server.port.to_string(), "bob@ref.test"]);
    assert_eq!(out.stdout.trim(), "refused: []", "{}", out.stderr);
    assert_smtplib_message(&home, "X-Original-To: <bob@ref.test>\n");
    let env = std::fs::read_to_string(home.dir().join("helo-env")).unwrap();
    for var in [
        "PROTO=TCP",
        "TCPREMOTEIP=127.0.0.1",
        "TCPLOCALIP=127.0.0.1",
        &format!("TCPLOCALPORT={}", server.port),
        "SMTPHELOHOST=pyclient.test",
    ] {
        assert!(env.lines().any(|l| l == var), "{var} missing:\n{env}");
    }
    assert!(env.lines().any(|l| l.starts_with("TCPREMOTEPORT=")));
    // The daemon's own TCPREMOTEHOST must not leak into sessions.
    assert!(!env.contains("leak.test"), "{env}");
    assert_eq!(server.terminate(), 0);
}

#[test]
fn serve_a_waiting_plugin_does_not_block_other_sessions() {
    let home = TestHome::new();
    // The HELO plugin of the first client waits for a file (bounded).
    let rel = home.plugin(
        "gate",
        "#!/bin/sh\n[ \"$SMTPHELOHOST\" = slow.test ] || exit 0\ni=0\nwhile [ ! -f open ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done\n",
    );
    home.smtpplugins(&format!("[helo]\n{rel}\n"));
    let server = Server::daemon(&home, &[]);
    let slow = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut slow_reader = BufReader::new(slow.try_clone().unwrap());
    let mut l = String::new();
    slow_reader.read_line(&mut l).unwrap();
    (&slow).write_all(b"HELO slow.test\r\n").unwrap();
    // While the first session waits in its plugin, a second one completes.
    let out = process::python(SMTPLIB_SEND, &[&server.port.to_string(), "bob@ref.test"]);
    assert_eq!(out.stdout.trim(), "refused: []", "{}", out.stderr);
    assert!(!home.dir().join("open").exists());
    assert_eq!(home.maildir().len(), 1);
    std::fs::write(home.dir().join("open"), "").unwrap();
    let started = Instant::now();
    l.clear();
    slow_reader.read_line(&mut l).unwrap();
    assert_eq!(l, "250 mx.ref.test\r\n");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn client_bytes_cannot_forge_log_lines() {
    let home = TestHome::new();
    let out = stdio(
        &home,
        TCPENV,
        b"HELO h\0INFO forged helo line\r\nMAIL FROM:<a@b\0ERROR forged sender>\r\nRCPT TO:<x@ref.test>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(out.stderr.contains(" transaction "), "{}", out.stderr);
    for line in out.stderr.lines() {
        assert!(
            !line.starts_with("INFO forged") && !line.starts_with("ERROR forged"),
            "forged line: {line}"
        );
    }
    assert!(
        out.stderr.contains("h\\nINFO forged helo line"),
        "{}",
        out.stderr
    );
}

#[test]
fn stalled_queue_program_is_killed_and_the_reply_is_451_qq_timeout() {
    let home = TestHome::new();
    home.control("timeoutsmtpd", "2\n");
    let q = home.write(
        "bin/qmail-queue",
        "#!/bin/sh\necho $$ > qq.pid\nexec sleep 300\n",
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&q, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut input = b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@ref.test>\r\nDATA\r\n".to_vec();
    for _ in 0..4000 {
        input.extend_from_slice(
            b"0123456789012345678901234567890123456789012345678901234567890123456789\r\n",
        );
    }
    input.extend_from_slice(b".\r\nQUIT\r\n");
    let out = stdio(&home, TCPENV, &input);
    assert_eq!(
        out.lines()[4],
        "451 qq timeout (#4.3.0)",
        "{:?}",
        out.lines()
    );
    assert_eq!(out.lines()[5], "221 mx.ref.test");
    let pid: u32 = std::fs::read_to_string(home.dir().join("qq.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        !process::process_exists(pid),
        "queue program {pid} left behind"
    );
}
