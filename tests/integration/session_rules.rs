//! One test per behaviour rule of SPEC.md §3–8 (qmail-smtpd + qmail-spp),
//! driven through the in-memory session driver. Test names follow the
//! rule they check.
//!
//! Conventions: plugins are small `#!/bin/sh` scripts under `plugins/` in a
//! throw-away home; a plugin that needs to be inspected afterwards appends
//! its environment (`env-<name>`) or a line per run (`ran-<name>`) to a
//! file in the home (plugins run with the home as cwd). The test
//! qmail-queue (`install_qmail_queue`) records message, envelope and
//! environment of every run.

use crate::util::{strip_received_date, Driver, TestHome};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const LOCAL: &[(&str, &str)] = &[("TCPREMOTEIP", "127.0.0.1"), ("TCPLOCALIP", "127.0.0.1")];

/// The Received: line of a session with [`LOCAL`] and no HELO (date
/// stripped).
const RECEIVED: &str = "Received: from unknown (127.0.0.1)\n  by 127.0.0.1 with SMTP; DATE\n";

/// A small message body as the client sends it, and as it is stored.
const BODY: &str = "Subject: t\r\n\r\nbody\r\n";
const STORED: &str = "Subject: t\n\nbody\n";

const MAIL_FIRST: &str = "503 MAIL first (#5.5.1)";
const RCPT_FIRST: &str = "503 RCPT first (#5.5.1)";
const SYNTAX: &str = "555 syntax error (#5.5.4)";
const NOT_RCPTHOST: &str = "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)";
const BADMAILFROM: &str = "553 sorry, your envelope sender is in my badmailfrom list (#5.7.1)";
const TOO_BIG: &str = "552 sorry, that message size exceeds my databytes limit (#5.3.4)";
const LOOPING: &str = "554 too many hops, this message is looping (#5.4.6)";
const BARE_LF: &str = "451 See http://pobox.com/~djb/docs/smtplf.html.";
const BARE_CR: &str = "554 bare CR in message body; lines must end in CRLF (#5.6.2)";
const UNIMPLEMENTED: &str = "502 unimplemented (#5.5.1)";
const UNREADABLE: &str = "421 unable to read controls (#4.3.0)";
const GO_AHEAD: &str = "354 go ahead";

// ---------------------------------------------------------------------------
// Helpers

/// A fresh home with the test qmail-queue installed.
fn qq_home() -> TestHome {
    let home = TestHome::new();
    home.install_qmail_queue();
    home
}

/// Starts a session with [`LOCAL`] and reads the plain greeting.
async fn start(home: &TestHome) -> Driver {
    start_with(home, LOCAL).await
}

/// Starts a session with `env` and reads the plain greeting.
async fn start_with(home: &TestHome, env: &[(&str, &str)]) -> Driver {
    let mut s = home.session(env).await;
    s.greeting().await.all(&["220 mx.ref.test ESMTP"]);
    s
}

/// [`LOCAL`] plus more variables.
fn local_and(more: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut v = LOCAL.to_vec();
    v.extend_from_slice(more);
    v
}

/// Writes `plugins/<name>` printing `fmt` (a printf format, quoted with
/// single quotes); returns the configuration line.
fn printing(home: &TestHome, name: &str, fmt: &str) -> String {
    home.plugin(name, &format!("#!/bin/sh\nprintf '{fmt}'\n"))
}

/// Writes `plugins/<name>` that notes each run in `ran-<name>`, then
/// prints `fmt` (printf format).
fn counted(home: &TestHome, name: &str, fmt: &str) -> String {
    home.plugin(
        name,
        &format!("#!/bin/sh\necho run >> ran-{name}\nprintf '{fmt}'\n"),
    )
}

/// How often the plugin written by [`counted`] ran.
fn runs_of(home: &TestHome, name: &str) -> usize {
    fs::read_to_string(home.path.join(format!("ran-{name}")))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Writes `plugins/dump-<name>` that appends its environment to
/// `env-<name>` (runs separated by `--` lines) and prints `fmt`.
fn dumper(home: &TestHome, name: &str, fmt: &str) -> String {
    home.plugin(
        &format!("dump-{name}"),
        &format!("#!/bin/sh\n{{ env; echo --; }} >> env-{name}\nprintf '{fmt}'\n"),
    )
}

/// The environments recorded by [`dumper`], one per run.
fn dumps(home: &TestHome, name: &str) -> Vec<BTreeMap<String, String>> {
    let text = fs::read_to_string(home.path.join(format!("env-{name}"))).unwrap_or_default();
    text.split("--\n")
        .filter(|b| !b.is_empty())
        .map(env_map)
        .collect()
}

/// `NAME=value` lines into a map.
fn env_map(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A variable of a recorded environment.
fn var<'a>(env: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    env.get(name).map(String::as_str)
}

/// SMTPRCPTCOUNT and SMTPRCPTCOUNTALL of a recorded environment as
/// `COUNT/ALL` (`-` for an unset variable).
fn counts(env: &BTreeMap<String, String>) -> String {
    let get = |n: &str| var(env, n).unwrap_or("-").to_string();
    format!("{}/{}", get("SMTPRCPTCOUNT"), get("SMTPRCPTCOUNTALL"))
}

/// One run of the test qmail-queue.
struct QueueRun {
    /// The message with the Received: date replaced by `DATE`.
    message: String,
    /// The envelope, NULs kept.
    envelope: String,
    /// The environment it ran with.
    env: BTreeMap<String, String>,
}

/// Every run of the test qmail-queue, oldest first.
fn queue_runs(home: &TestHome) -> Vec<QueueRun> {
    home.queued()
        .into_iter()
        .map(|(m, e, env)| QueueRun {
            message: strip_received_date(&m),
            envelope: String::from_utf8_lossy(&e).into_owned(),
            env: env_map(&env),
        })
        .collect()
}

/// The only run of the test qmail-queue.
fn single_run(home: &TestHome) -> QueueRun {
    let mut runs = queue_runs(home);
    assert_eq!(runs.len(), 1, "expected exactly one qmail-queue run");
    runs.remove(0)
}

/// Sends a body and expects the `250 ok ... qp ...` reply.
async fn body_ok(s: &mut Driver, body: &str) {
    let r = s.body(body).await;
    assert!(r.last().starts_with("250 ok "), "{:?}", r.lines);
}

/// MAIL, RCPTs, DATA and [`BODY`]; expects the message to be accepted.
async fn deliver(s: &mut Driver, from: &str, to: &[&str]) {
    let r = s.mail(from, to, BODY).await;
    assert!(r.last().starts_with("250 ok "), "{:?}", r.lines);
}

/// A copy of the test qmail-queue that records into `<dir>/` instead of
/// `qq/`, installed as `bin/<name>`.
fn install_queue_copy(home: &TestHome, name: &str, dir: &str) {
    let script =
        crate::util::TEST_QMAIL_QUEUE.replace("dir=\"qq/$n\"", &format!("dir=\"{dir}/$n\""));
    assert_ne!(script, crate::util::TEST_QMAIL_QUEUE);
    let p = home.write(&format!("bin/{name}"), script);
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Number of entries in a directory under the home (0 if missing).
fn entries(home: &TestHome, dir: &str) -> usize {
    fs::read_dir(home.path.join(dir))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// The two original tests

#[tokio::test]
async fn greeting_uses_me_and_ehlo_lists_extensions() {
    let home = TestHome::new();
    let mut s = home.session(LOCAL).await;
    s.greeting().await.all(&["220 mx.ref.test ESMTP"]);
    s.cmd("EHLO client.test").await.all(&[
        "250-mx.ref.test",
        "250-PIPELINING",
        "250-8BITMIME",
        "250-SMTPUTF8",
        "250 CHUNKING",
    ]);
    s.cmd("HELO client.test").await.all(&["250 mx.ref.test"]);
    s.cmd("QUIT").await.all(&["221 mx.ref.test"]);
    assert_eq!(s.closed().await, 0);
}

#[tokio::test]
async fn ehlo_extensions_follow_their_control_files() {
    let home = TestHome::new();
    home.control("smtputf8", "0\n");
    home.control("chunking", "No\n");
    let mut s = home.session(LOCAL).await;
    s.greeting().await;
    s.cmd("EHLO client.test")
        .await
        .all(&["250-mx.ref.test", "250-PIPELINING", "250 8BITMIME"]);
    home.remove_control("smtputf8");
    home.remove_control("chunking");
    home.control("enhancedstatuscodes", "\n");
    let mut s = home.session(LOCAL).await;
    s.greeting().await;
    s.cmd("EHLO client.test").await.all(&[
        "250-mx.ref.test",
        "250-PIPELINING",
        "250-8BITMIME",
        "250-ENHANCEDSTATUSCODES",
        "250-SMTPUTF8",
        "250 CHUNKING",
    ]);
}

#[tokio::test]
async fn accepted_message_is_stored_in_maildir_with_received_line() {
    let home = TestHome::new();
    let mut s = home.session(LOCAL).await;
    s.greeting().await;
    s.cmd("HELO client.test").await.code(250);
    let r = s
        .mail(
            "a@example.org",
            &["bob@ref.test"],
            "Subject: x\r\n\r\n..dot\r\nline\r\n",
        )
        .await;
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

// ---------------------------------------------------------------------------
// §3 Command loop

#[tokio::test]
async fn verbs_are_case_insensitive() {
    let home = TestHome::new();
    let mut s = start(&home).await;
    s.cmd("helo client.test").await.all(&["250 mx.ref.test"]);
    s.cmd("eHlO client.test").await.all(&[
        "250-mx.ref.test",
        "250-PIPELINING",
        "250-8BITMIME",
        "250-SMTPUTF8",
        "250 CHUNKING",
    ]);
    s.cmd("mail from:<a@x.test>").await.all(&["250 ok"]);
    s.cmd("RcPt To:<bob@ref.test>").await.all(&["250 ok"]);
    s.cmd("nOoP").await.all(&["250 ok"]);
    s.cmd("rset").await.all(&["250 flushed"]);
    s.cmd("vrfy bob")
        .await
        .all(&["252 send some mail, i'll try my best"]);
    s.cmd("quit").await.all(&["221 mx.ref.test"]);
    assert_eq!(s.closed().await, 0);
}

#[tokio::test]
async fn unknown_verbs_and_empty_line_get_502_unimplemented() {
    let home = TestHome::new();
    let mut s = start(&home).await;
    for line in [
        "EXPN staff",
        "ETRN ref.test",
        "TURN",
        "",
        "XYZZY plugh",
        "MAILFROM:<a@x>",
    ] {
        s.cmd(line).await.all(&[UNIMPLEMENTED]);
    }
    // The session goes on.
    s.cmd("NOOP").await.all(&["250 ok"]);
}

#[tokio::test]
async fn only_a_space_separates_verb_and_argument() {
    let home = TestHome::new();
    let mut s = start(&home).await;
    s.cmd("NOOP\tx").await.all(&[UNIMPLEMENTED]);
    s.cmd(" NOOP").await.all(&[UNIMPLEMENTED]);
    s.cmd("HELO\tclient.test").await.all(&[UNIMPLEMENTED]);
    // A run of spaces after the verb is skipped.
    s.cmd("NOOP     x").await.all(&["250 ok"]);
    s.cmd("MAIL    FROM:<a@x.test>").await.all(&["250 ok"]);
}

#[tokio::test]
async fn bare_lf_ends_a_command_line() {
    let home = TestHome::new();
    let mut s = start(&home).await;
    s.send("NOOP\n").await;
    s.reply().await.all(&["250 ok"]);
    s.send("HELO client.test\nMAIL FROM:<a@x.test>\nRCPT TO:<bob@ref.test>\r\n")
        .await;
    s.reply().await.all(&["250 mx.ref.test"]);
    s.reply().await.all(&["250 ok"]);
    s.reply().await.all(&["250 ok"]);
}

#[tokio::test]
async fn only_one_cr_before_lf_is_removed() {
    let home = TestHome::new();
    let mut s = start(&home).await;
    // The verb is then `NOOP\r`, which is unknown.
    s.send("NOOP\r\r\n").await;
    s.reply().await.all(&[UNIMPLEMENTED]);
    s.send("NOOP\r\n").await;
    s.reply().await.all(&["250 ok"]);
}

#[tokio::test]
async fn over_long_command_line_gets_500_line_too_long_and_session_continues() {
    // DESIGN §3.7: command lines are limited to 4096 octets.
    let home = TestHome::new();
    let mut s = start(&home).await;
    let longest = format!("NOOP {}", "x".repeat(4096 - 5));
    assert_eq!(longest.len(), 4096);
    s.cmd(&longest).await.all(&["250 ok"]);
    let too_long = format!("NOOP {}", "x".repeat(4096 - 4));
    s.cmd(&too_long).await.all(&["500 line too long (#5.5.2)"]);
    let much_too_long = format!("MAIL FROM:<{}@x.test>", "a".repeat(20_000));
    s.cmd(&much_too_long)
        .await
        .all(&["500 line too long (#5.5.2)"]);
    // Nothing of the long lines was taken as a command.
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&[MAIL_FIRST]);
    s.cmd("NOOP").await.all(&["250 ok"]);
}

#[tokio::test]
async fn pipelined_commands_get_all_replies_in_order() {
    let home = TestHome::new();
    let mut s = start(&home).await;
    s.send(
        "HELO client.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<bob@ref.test>\r\n\
         RCPT TO:<x@else.test>\r\nVRFY x\r\nBOGUS\r\nRSET\r\nRCPT TO:<bob@ref.test>\r\nNOOP\r\n",
    )
    .await;
    let expected: &[&[&str]] = &[
        &["250 mx.ref.test"],
        &["250 ok"],
        &["250 ok"],
        &[NOT_RCPTHOST],
        &["252 send some mail, i'll try my best"],
        &[UNIMPLEMENTED],
        &["250 flushed"],
        &[MAIL_FIRST],
        &["250 ok"],
    ];
    for want in expected {
        s.reply().await.all(want);
    }
}

#[tokio::test]
async fn pipelined_transaction_with_data_and_quit_in_one_write() {
    let home = qq_home();
    let mut s = start(&home).await;
    s.send(
        "MAIL FROM:<a@x.test>\r\nRCPT TO:<bob@ref.test>\r\nDATA\r\nSubject: t\r\n\r\nbody\r\n.\r\n\
         MAIL FROM:<b@x.test>\r\nQUIT\r\n",
    )
    .await;
    s.reply().await.all(&["250 ok"]);
    s.reply().await.all(&["250 ok"]);
    s.reply().await.all(&[GO_AHEAD]);
    let r = s.reply().await;
    assert!(r.last().starts_with("250 ok "), "{:?}", r.lines);
    s.reply().await.all(&["250 ok"]);
    s.reply().await.all(&["221 mx.ref.test"]);
    assert_eq!(s.closed().await, 0);
    let run = single_run(&home);
    assert_eq!(run.message, format!("{RECEIVED}{STORED}"));
    assert_eq!(run.envelope, "Fa@x.test\0Tbob@ref.test\0\0");
}

#[tokio::test]
async fn eof_from_client_ends_session_with_exit_1_silently() {
    let home = TestHome::new();
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.all(&["250 ok"]);
    s.send("NOOP").await; // an unterminated line, then EOF
    s.hang_up().await;
    assert_eq!(s.closed().await, 1);
}

#[tokio::test]
async fn eof_during_data_ends_session_with_exit_1_and_nothing_queued() {
    let home = qq_home();
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    s.send("Subject: cut\r\n\r\npartial").await;
    s.hang_up().await;
    assert_eq!(s.closed().await, 1);
    for run in queue_runs(&home) {
        assert_eq!(
            run.envelope, "",
            "no envelope may be written for a cut message"
        );
    }
}

#[tokio::test]
async fn read_timeout_gets_451_timeout_and_exit_1() {
    let home = TestHome::new();
    home.control("timeoutsmtpd", "1\n");
    let mut s = start(&home).await;
    s.cmd("NOOP").await.all(&["250 ok"]);
    let started = std::time::Instant::now();
    assert_eq!(s.line().await, "451 timeout (#4.4.2)");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.closed().await, 1);
}

#[tokio::test]
async fn helo_without_argument_is_accepted_and_recorded_as_empty() {
    let home = qq_home();
    home.smtpplugins(&format!("[m]\n{}\n", dumper(&home, "mail", "")));
    let mut s = start(&home).await;
    s.cmd("HELO").await.all(&["250 mx.ref.test"]);
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    assert_eq!(var(&dumps(&home, "mail")[0], "SMTPHELOHOST"), Some(""));
    // The empty HELO name differs from `unknown`, so it is shown.
    assert_eq!(
        single_run(&home).message,
        format!(
            "Received: from unknown (HELO ) (127.0.0.1)\n  by 127.0.0.1 with SMTP; DATE\n{STORED}"
        )
    );
}

#[tokio::test]
async fn helo_is_not_required_and_may_be_repeated() {
    let home = qq_home();
    let mut s = start(&home).await;
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    s.cmd("HELO one.test").await.all(&["250 mx.ref.test"]);
    s.cmd("EHLO two.test").await.code(250);
    s.cmd("HELO three.test").await.all(&["250 mx.ref.test"]);
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    let runs = queue_runs(&home);
    assert_eq!(runs[0].message, format!("{RECEIVED}{STORED}"));
    // The last accepted name is used.
    assert!(
        runs[1]
            .message
            .starts_with("Received: from unknown (HELO three.test) (127.0.0.1)\n"),
        "{}",
        runs[1].message
    );
}

#[tokio::test]
async fn accepted_helo_ends_the_open_transaction() {
    let home = TestHome::new();
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
    s.cmd("HELO client.test").await.all(&["250 mx.ref.test"]);
    s.cmd("DATA").await.all(&[MAIL_FIRST]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&[MAIL_FIRST]);
    s.cmd("MAIL FROM:<a@x.test>").await.all(&["250 ok"]);
    s.cmd("EHLO client.test").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&[MAIL_FIRST]);
}

#[tokio::test]
async fn rset_replies_250_flushed_and_ends_the_transaction() {
    let home = TestHome::new();
    let mut s = start(&home).await;
    s.cmd("RSET").await.all(&["250 flushed"]);
    s.cmd("MAIL FROM:<a@x.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
    s.cmd("RSET with argument").await.all(&["250 flushed"]);
    s.cmd("DATA").await.all(&[MAIL_FIRST]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&[MAIL_FIRST]);
}

#[tokio::test]
async fn noop_and_vrfy_replies() {
    let home = TestHome::new();
    let mut s = start(&home).await;
    s.cmd("NOOP").await.all(&["250 ok"]);
    s.cmd("NOOP anything at all").await.all(&["250 ok"]);
    s.cmd("VRFY")
        .await
        .all(&["252 send some mail, i'll try my best"]);
    s.cmd("VRFY bob@ref.test")
        .await
        .all(&["252 send some mail, i'll try my best"]);
}

#[tokio::test]
async fn help_gets_214_with_our_own_text() {
    // Deliberate difference (README): the code is qmail's, the text names
    // this server instead of another project's home page.
    let home = TestHome::new();
    let mut s = start(&home).await;
    s.cmd("HELP")
        .await
        .all(&["214 spp-smtpd: qmail-spp compatible SMTP server"]);
    s.cmd("HELP MAIL")
        .await
        .all(&["214 spp-smtpd: qmail-spp compatible SMTP server"]);
}

#[tokio::test]
async fn quit_replies_221_greeting_and_exits_0() {
    let home = TestHome::new();
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("QUIT now please").await.all(&["221 mx.ref.test"]);
    assert_eq!(s.closed().await, 0);
}

#[tokio::test]
async fn smtpgreeting_first_line_replaces_me_in_220_250_and_221() {
    let home = TestHome::new();
    home.control("smtpgreeting", "greet.ref.test welcome \t\nsecond line\n");
    let mut s = home.session(LOCAL).await;
    s.greeting()
        .await
        .all(&["220 greet.ref.test welcome ESMTP"]);
    s.cmd("HELO c.test")
        .await
        .all(&["250 greet.ref.test welcome"]);
    s.cmd("EHLO c.test").await.all(&[
        "250-greet.ref.test welcome",
        "250-PIPELINING",
        "250-8BITMIME",
        "250-SMTPUTF8",
        "250 CHUNKING",
    ]);
    s.cmd("QUIT").await.all(&["221 greet.ref.test welcome"]);
    assert_eq!(s.closed().await, 0);
}

// ---------------------------------------------------------------------------
// §4 MAIL, RCPT, addresses

#[tokio::test]
async fn rcpt_without_mail_gets_503_mail_first() {
    let home = TestHome::new();
    let mut s = start(&home).await;
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&[MAIL_FIRST]);
    // Even an unparsable RCPT gets 503 first.
    let long = format!("RCPT TO:<{}>", "a".repeat(1000));
    s.cmd(&long).await.all(&[MAIL_FIRST]);
}

#[tokio::test]
async fn new_mail_replaces_sender_and_empties_recipients() {
    let home = qq_home();
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
    s.cmd("MAIL FROM:<b@x.test>").await.all(&["250 ok"]);
    s.cmd("DATA").await.all(&[RCPT_FIRST]);
    s.cmd("RCPT TO:<carol@ref.test>").await.all(&["250 ok"]);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    body_ok(&mut s, BODY).await;
    assert_eq!(single_run(&home).envelope, "Fb@x.test\0Tcarol@ref.test\0\0");
}

#[tokio::test]
async fn address_in_angle_brackets_ignores_esmtp_parameters() {
    let home = qq_home();
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test> BODY=8BITMIME SIZE=12")
        .await
        .all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test> NOTIFY=NEVER")
        .await
        .all(&["250 ok"]);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    body_ok(&mut s, BODY).await;
    assert_eq!(single_run(&home).envelope, "Fa@x.test\0Tbob@ref.test\0\0");
}

#[tokio::test]
async fn address_without_angle_brackets_is_the_word_after_the_colon() {
    let home = qq_home();
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:   a@x.test ignored words")
        .await
        .all(&["250 ok"]);
    s.cmd("RCPT TO:bob@ref.test").await.all(&["250 ok"]);
    s.cmd("RCPT carol@ref.test").await.all(&["250 ok"]);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    body_ok(&mut s, BODY).await;
    assert_eq!(
        single_run(&home).envelope,
        "Fa@x.test\0Tbob@ref.test\0Tcarol@ref.test\0\0"
    );
}

#[tokio::test]
async fn mail_without_argument_means_the_null_sender() {
    let home = qq_home();
    let mut s = start(&home).await;
    s.cmd("MAIL").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    body_ok(&mut s, BODY).await;
    s.cmd("MAIL FROM:<>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    body_ok(&mut s, BODY).await;
    for run in queue_runs(&home) {
        assert_eq!(run.envelope, "F\0Tbob@ref.test\0\0");
    }
}

#[tokio::test]
async fn from_and_to_keywords_are_not_checked() {
    let home = qq_home();
    let mut s = start(&home).await;
    s.cmd("MAIL XYZZY:<a@x.test>").await.all(&["250 ok"]);
    s.cmd("RCPT <bob@ref.test>").await.all(&["250 ok"]);
    s.cmd("RCPT FROM:<carol@ref.test>").await.all(&["250 ok"]);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    body_ok(&mut s, BODY).await;
    assert_eq!(
        single_run(&home).envelope,
        "Fa@x.test\0Tbob@ref.test\0Tcarol@ref.test\0\0"
    );
}

#[tokio::test]
async fn source_route_is_dropped() {
    let home = qq_home();
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<@relay.test:a@x.test>")
        .await
        .all(&["250 ok"]);
    s.cmd("RCPT TO:<@r1.test,@r2.test:bob@ref.test>")
        .await
        .all(&["250 ok"]);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    body_ok(&mut s, BODY).await;
    assert_eq!(single_run(&home).envelope, "Fa@x.test\0Tbob@ref.test\0\0");
}

#[tokio::test]
async fn quotes_and_backslashes_are_removed_from_addresses() {
    let home = qq_home();
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<\"a b\"@x.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<\"b>o\"@ref.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<c\\>a\\\\r@ref.test>")
        .await
        .all(&["250 ok"]);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    body_ok(&mut s, BODY).await;
    assert_eq!(
        single_run(&home).envelope,
        "Fa b@x.test\0Tb>o@ref.test\0Tc>a\\r@ref.test\0\0"
    );
}

#[tokio::test]
async fn unbalanced_and_empty_addresses_are_accepted() {
    let home = qq_home();
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob smith@ref.test>").await.all(&["250 ok"]);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    body_ok(&mut s, BODY).await;
    assert_eq!(
        single_run(&home).envelope,
        "Fa@x.test\0T\0Tbob smith@ref.test\0\0"
    );
}

#[tokio::test]
async fn address_of_899_bytes_is_accepted_and_900_gets_555_syntax_error() {
    let home = qq_home();
    let mut s = start(&home).await;
    let a899 = "a".repeat(899);
    let a900 = "a".repeat(900);
    s.cmd(&format!("MAIL FROM:<{a900}>")).await.all(&[SYNTAX]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&[MAIL_FIRST]);
    s.cmd(&format!("MAIL FROM:{a900}")).await.all(&[SYNTAX]);
    s.cmd(&format!("MAIL FROM:<{a899}>")).await.all(&["250 ok"]);
    s.cmd(&format!("RCPT TO:<{a900}>")).await.all(&[SYNTAX]);
    // Without `@` the recipient is allowed.
    s.cmd(&format!("RCPT TO:<{a899}>")).await.all(&["250 ok"]);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    body_ok(&mut s, BODY).await;
    assert_eq!(single_run(&home).envelope, format!("F{a899}\0T{a899}\0\0"));
}

#[tokio::test]
async fn mail_syntax_error_runs_no_hook() {
    let home = TestHome::new();
    home.smtpplugins(&format!("[m]\n{}\n", counted(&home, "m", "")));
    let mut s = start(&home).await;
    s.cmd(&format!("MAIL FROM:<{}>", "a".repeat(900)))
        .await
        .all(&[SYNTAX]);
    assert_eq!(runs_of(&home, "m"), 0);
    s.cmd("MAIL FROM:<a@x.test>").await.all(&["250 ok"]);
    assert_eq!(runs_of(&home, "m"), 1);
}

#[tokio::test]
async fn local_ip_literal_is_replaced_by_me() {
    let home = qq_home();
    home.control("rcpthosts", "ref.test\nmx.ref.test\n");
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@[127.0.0.1]>").await.all(&["250 ok"]);
    // rcpthosts sees the replaced name.
    s.cmd("RCPT TO:<bob@[127.0.0.1]>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<carol@[0.0.0.0]>").await.all(&["250 ok"]);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    body_ok(&mut s, BODY).await;
    assert_eq!(
        single_run(&home).envelope,
        "Fa@mx.ref.test\0Tbob@mx.ref.test\0Tcarol@mx.ref.test\0\0"
    );
}

#[tokio::test]
async fn localiphost_file_replaces_local_ip_literals() {
    let home = qq_home();
    home.control("localiphost", "lo.ref.test\n");
    home.control("rcpthosts", "lo.ref.test\n");
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@[127.0.0.1]>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@[127.0.0.1]>").await.all(&["250 ok"]);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    body_ok(&mut s, BODY).await;
    assert_eq!(
        single_run(&home).envelope,
        "Fa@lo.ref.test\0Tbob@lo.ref.test\0\0"
    );
}

#[tokio::test]
async fn foreign_ip_literal_is_kept_and_checked_against_rcpthosts() {
    let home = qq_home();
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@[198.51.100.7]>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@[198.51.100.7]>")
        .await
        .all(&[NOT_RCPTHOST]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    body_ok(&mut s, BODY).await;
    assert_eq!(
        single_run(&home).envelope,
        "Fa@[198.51.100.7]\0Tbob@ref.test\0\0"
    );
}

#[tokio::test]
async fn rcpthosts_allows_a_listed_domain_case_insensitively() {
    let home = TestHome::new();
    home.control("rcpthosts", "Ref.Test\n");
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@REF.TEST>").await.all(&["250 ok"]);
}

#[tokio::test]
async fn foreign_recipient_gets_553_not_in_rcpthosts() {
    let home = TestHome::new();
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@else.test>").await.all(&[NOT_RCPTHOST]);
    // The transaction is still open.
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
}

#[tokio::test]
async fn rcpthosts_entry_without_dot_matches_only_that_host() {
    let home = TestHome::new();
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@x.ref.test>").await.all(&[NOT_RCPTHOST]);
    s.cmd("RCPT TO:<bob@xref.test>").await.all(&[NOT_RCPTHOST]);
    s.cmd("RCPT TO:<bob@ref.test.>").await.all(&[NOT_RCPTHOST]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
}

#[tokio::test]
async fn rcpthosts_dot_entry_matches_every_subdomain_but_not_itself() {
    let home = TestHome::new();
    home.control("rcpthosts", ".sub.ref.test\n");
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@a.sub.ref.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@x.A.Sub.ref.test>")
        .await
        .all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@sub.ref.test>")
        .await
        .all(&[NOT_RCPTHOST]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&[NOT_RCPTHOST]);
}

#[tokio::test]
async fn rcpthosts_host_is_the_part_after_the_last_at() {
    let home = TestHome::new();
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@else.test@ref.test>")
        .await
        .all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test@else.test>")
        .await
        .all(&[NOT_RCPTHOST]);
}

#[tokio::test]
async fn address_without_at_is_always_allowed() {
    let home = TestHome::new();
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<postmaster>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob%else.test>").await.all(&["250 ok"]);
}

#[tokio::test]
async fn missing_rcpthosts_allows_every_recipient() {
    let home = TestHome::new();
    home.remove_control("rcpthosts");
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@else.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@anything.example>")
        .await
        .all(&["250 ok"]);
}

#[tokio::test]
async fn rcpthosts_list_rules_comments_blank_lines_and_blanks() {
    let home = TestHome::new();
    home.control(
        "rcpthosts",
        "# ref.test\n\ntrail.test \t\n  lead.test\n#comment.test\nlast.test",
    );
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@trail.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@last.test>").await.all(&["250 ok"]);
    // Leading blanks stay part of the entry; comments are not entries.
    s.cmd("RCPT TO:<bob@lead.test>").await.all(&[NOT_RCPTHOST]);
    s.cmd("RCPT TO:<bob@comment.test>")
        .await
        .all(&[NOT_RCPTHOST]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&[NOT_RCPTHOST]);
}

#[tokio::test]
async fn morercpthosts_cdb_adds_domains_with_the_same_suffix_rule() {
    let home = TestHome::new();
    spp_smtpd::config::cdb::write(
        &home.path.join("control/morercpthosts.cdb"),
        &[b"more.test", b".sub.more.test"],
    )
    .unwrap();
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@more.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@MORE.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@a.sub.more.test>")
        .await
        .all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@x.more.test>")
        .await
        .all(&[NOT_RCPTHOST]);
    s.cmd("RCPT TO:<bob@sub.more.test>")
        .await
        .all(&[NOT_RCPTHOST]);
    // rcpthosts itself still counts.
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
}

#[tokio::test]
async fn relayclient_allows_every_recipient_and_appends_its_value() {
    let home = qq_home();
    let env = local_and(&[("RELAYCLIENT", ".relayed")]);
    let mut s = start_with(&home, &env).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@else.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<carol@ref.test>").await.all(&["250 ok"]);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    body_ok(&mut s, BODY).await;
    assert_eq!(
        single_run(&home).envelope,
        "Fa@x.test\0Tbob@else.test.relayed\0Tcarol@ref.test.relayed\0\0"
    );
}

#[tokio::test]
async fn empty_relayclient_allows_relaying_without_suffix() {
    let home = qq_home();
    let env = local_and(&[("RELAYCLIENT", "")]);
    let mut s = start_with(&home, &env).await;
    deliver(&mut s, "a@x.test", &["bob@else.test"]).await;
    assert_eq!(single_run(&home).envelope, "Fa@x.test\0Tbob@else.test\0\0");
}

#[tokio::test]
async fn badmailfrom_sender_gets_250_then_553_at_every_rcpt() {
    let home = TestHome::new();
    home.control("badmailfrom", "bad@evil.test\n");
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<BAD@Evil.Test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&[BADMAILFROM]);
    s.cmd("RCPT TO:<carol@ref.test>").await.all(&[BADMAILFROM]);
    s.cmd("DATA").await.all(&[RCPT_FIRST]);
    s.cmd("MAIL FROM:<good@evil.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
}

#[tokio::test]
async fn badmailfrom_at_domain_entry_matches_that_domain_only() {
    let home = TestHome::new();
    home.control("badmailfrom", "@evil.test\n");
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<anyone@EVIL.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&[BADMAILFROM]);
    s.cmd("MAIL FROM:<x@sub.evil.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
    s.cmd("MAIL FROM:<x@notevil.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
}

#[tokio::test]
async fn null_sender_never_matches_badmailfrom() {
    let home = TestHome::new();
    home.control("badmailfrom", "@\n<>\n\n#\n");
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
}

#[tokio::test]
async fn badmailfrom_refusal_comes_before_rcpthosts_and_the_rcpt_hook() {
    let home = TestHome::new();
    home.control("badmailfrom", "bad@evil.test\n");
    home.smtpplugins(&format!("[r]\n{}\n", counted(&home, "r", "")));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<bad@evil.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@else.test>").await.all(&[BADMAILFROM]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&[BADMAILFROM]);
    // The address is parsed before badmailfrom is reported.
    s.cmd(&format!("RCPT TO:<{}>", "a".repeat(900)))
        .await
        .all(&[SYNTAX]);
    assert_eq!(runs_of(&home, "r"), 0);
}

#[tokio::test]
async fn there_is_no_limit_on_recipients() {
    let home = qq_home();
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    let batch: String = (0..300)
        .map(|i| format!("RCPT TO:<u{i}@ref.test>\r\n"))
        .collect();
    s.send(batch).await;
    for _ in 0..300 {
        s.reply().await.all(&["250 ok"]);
    }
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    body_ok(&mut s, BODY).await;
    let env = single_run(&home).envelope;
    assert_eq!(env.matches('T').count(), 300);
    assert!(env.ends_with("Tu299@ref.test\0\0"));
}

// ---------------------------------------------------------------------------
// §5 DATA

#[tokio::test]
async fn data_without_mail_gets_503_mail_first() {
    let home = TestHome::new();
    let mut s = start(&home).await;
    s.cmd("DATA").await.all(&[MAIL_FIRST]);
    s.cmd("NOOP").await.all(&["250 ok"]);
}

#[tokio::test]
async fn data_without_rcpt_gets_503_rcpt_first() {
    let home = TestHome::new();
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("DATA").await.all(&[RCPT_FIRST]);
    s.cmd("RCPT TO:<bob@else.test>").await.all(&[NOT_RCPTHOST]);
    s.cmd("DATA").await.all(&[RCPT_FIRST]);
}

#[tokio::test]
async fn data_argument_is_ignored() {
    let home = qq_home();
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    s.cmd("DATA please now").await.all(&[GO_AHEAD]);
    body_ok(&mut s, BODY).await;
    assert_eq!(single_run(&home).message, format!("{RECEIVED}{STORED}"));
}

#[tokio::test]
async fn data_ends_the_transaction_whatever_the_outcome() {
    let home = TestHome::new();
    home.control("databytes", "5\n");
    let mut s = start(&home).await;
    let r = s.mail("a@x.test", &["bob@ref.test"], "123\r\n").await;
    assert!(r.last().starts_with("250 ok "), "{:?}", r.lines);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&[MAIL_FIRST]);
    s.cmd("DATA").await.all(&[MAIL_FIRST]);
    s.mail("a@x.test", &["bob@ref.test"], "123456789\r\n")
        .await
        .all(&[TOO_BIG]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&[MAIL_FIRST]);
    s.cmd("DATA").await.all(&[MAIL_FIRST]);
}

#[tokio::test]
async fn body_crlf_is_stored_as_lf_after_the_received_line() {
    let home = qq_home();
    let mut s = start(&home).await;
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    let run = single_run(&home);
    assert_eq!(run.message, format!("{RECEIVED}{STORED}"));
    assert!(!run.message.contains('\r'));
}

#[tokio::test]
async fn dot_unstuffing_removes_one_leading_dot() {
    let home = qq_home();
    let mut s = start(&home).await;
    let r = s
        .mail(
            "a@x.test",
            &["bob@ref.test"],
            "S: d\r\n\r\n..x\r\n.x\r\n. x\r\n...\r\nmid.dot\r\n",
        )
        .await;
    assert!(r.last().starts_with("250 ok "), "{:?}", r.lines);
    assert_eq!(
        single_run(&home).message,
        format!("{RECEIVED}S: d\n\n.x\nx\n x\n..\nmid.dot\n")
    );
}

#[tokio::test]
async fn empty_body_is_valid() {
    let home = qq_home();
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    body_ok(&mut s, "").await;
    let run = single_run(&home);
    assert_eq!(run.message, RECEIVED);
    assert_eq!(run.envelope, "Fa@x.test\0Tbob@ref.test\0\0");
}

#[tokio::test]
async fn nul_bytes_and_long_lines_pass_through_the_body() {
    let home = qq_home();
    let mut s = start(&home).await;
    let long = "y".repeat(100_000);
    let body = format!("X: a\0b\r\n\r\n{long}\r\n");
    let r = s.mail("a@x.test", &["bob@ref.test"], &body).await;
    assert!(r.last().starts_with("250 ok "), "{:?}", r.lines);
    assert_eq!(
        single_run(&home).message,
        format!("{RECEIVED}X: a\0b\n\n{long}\n")
    );
}

#[tokio::test]
async fn bare_lf_in_data_gets_451_smtplf_and_exit_1() {
    let home = qq_home();
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    s.send("Subject: x\r\n\r\nbare\nline\r\n.\r\nNOOP\r\n")
        .await;
    assert_eq!(s.line().await, BARE_LF);
    assert_eq!(s.closed().await, 1);
    for run in queue_runs(&home) {
        assert_eq!(
            run.envelope, "",
            "a message with a bare LF must not get an envelope"
        );
    }
}

#[tokio::test]
async fn bare_lf_after_a_leading_dot_gets_451_smtplf() {
    let home = TestHome::new();
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    s.send("x\r\n.\n").await;
    assert_eq!(s.line().await, BARE_LF);
    assert_eq!(s.closed().await, 1);
    assert!(home.maildir().is_empty());
    assert_eq!(home.maildir_tmp_count(), 0);
}

#[tokio::test]
async fn bare_cr_in_data_gets_554_after_the_final_dot_and_nothing_stored() {
    // DESIGN §5: a bare CR is refused, never forwarded.
    let home = TestHome::new();
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    // Nothing is said before the final dot.
    s.send("Subject: x\r\n\r\nbare\rCR\r\nmore\r\n").await;
    s.send(".\r\n").await;
    s.reply().await.all(&[BARE_CR]);
    assert!(home.maildir().is_empty());
    assert_eq!(home.maildir_tmp_count(), 0);
    // The session continues; a new MAIL is needed.
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&[MAIL_FIRST]);
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    assert_eq!(home.maildir().len(), 1);
}

#[tokio::test]
async fn hundred_hops_get_554_too_many_hops() {
    let home = TestHome::new();
    let mut s = start(&home).await;
    let body = format!("{}\r\nbody\r\n", "Received: from x\r\n".repeat(100));
    s.mail("a@x.test", &["bob@ref.test"], &body)
        .await
        .all(&[LOOPING]);
    assert!(home.maildir().is_empty());
    assert_eq!(home.maildir_tmp_count(), 0);
    s.cmd("NOOP").await.all(&["250 ok"]);
}

#[tokio::test]
async fn ninety_nine_hops_are_accepted() {
    let home = qq_home();
    let mut s = start(&home).await;
    let body = format!("{}\r\nbody\r\n", "Received: from x\r\n".repeat(99));
    let r = s.mail("a@x.test", &["bob@ref.test"], &body).await;
    assert!(r.last().starts_with("250 ok "), "{:?}", r.lines);
    assert_eq!(single_run(&home).envelope, "Fa@x.test\0Tbob@ref.test\0\0");
}

#[tokio::test]
async fn hops_count_received_and_delivered_lines_in_the_header_only() {
    let home = TestHome::new();
    let mut s = start(&home).await;
    // 50 + 50 header lines, letter by letter case-insensitive, no colon needed.
    let header = format!(
        "{}{}",
        "rECEIVED x\r\n".repeat(50),
        "Delivered-To: y\r\n".repeat(50)
    );
    s.mail(
        "a@x.test",
        &["bob@ref.test"],
        &format!("{header}\r\nbody\r\n"),
    )
    .await
    .all(&[LOOPING]);
    // The same lines after the first empty line are body, not hops.
    let body = format!("Subject: x\r\n\r\n{}", "Received: z\r\n".repeat(150));
    let r = s.mail("a@x.test", &["bob@ref.test"], &body).await;
    assert!(r.last().starts_with("250 ok "), "{:?}", r.lines);
    // `Receive` and `Deliver` alone are not hops.
    let near = format!("{}\r\nbody\r\n", "Receive: x\r\nDeliver: y\r\n".repeat(100));
    let r = s.mail("a@x.test", &["bob@ref.test"], &near).await;
    assert!(r.last().starts_with("250 ok "), "{:?}", r.lines);
    assert_eq!(home.maildir().len(), 2);
}

#[tokio::test]
async fn databytes_control_file_limits_the_stored_body() {
    let home = qq_home();
    home.control("databytes", "10\n");
    let mut s = start(&home).await;
    // 9 characters + LF = 10 stored bytes: accepted.
    let r = s.mail("a@x.test", &["bob@ref.test"], "123456789\r\n").await;
    assert!(r.last().starts_with("250 ok "), "{:?}", r.lines);
    // 11 stored bytes: refused after the whole message was read.
    s.mail(
        "a@x.test",
        &["bob@ref.test"],
        "1234567890\r\nand a lot more\r\n",
    )
    .await
    .all(&[TOO_BIG]);
    s.cmd("NOOP").await.all(&["250 ok"]);
    let runs = queue_runs(&home);
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].envelope, "Fa@x.test\0Tbob@ref.test\0\0");
    assert_eq!(runs[1].envelope, "", "a refused message gets no envelope");
}

#[tokio::test]
async fn databytes_env_overrides_control_file() {
    let home = TestHome::new();
    home.control("databytes", "1000\n");
    let env = local_and(&[("DATABYTES", "5")]);
    let mut s = start_with(&home, &env).await;
    s.mail("a@x.test", &["bob@ref.test"], "123456\r\n")
        .await
        .all(&[TOO_BIG]);
    s.cmd("EHLO c.test").await.all(&[
        "250-mx.ref.test",
        "250-PIPELINING",
        "250-8BITMIME",
        "250-SMTPUTF8",
        "250-CHUNKING",
        "250 SIZE 5",
    ]);
    // DATABYTES=0 means unlimited even if the control file says otherwise.
    home.control("databytes", "5\n");
    let env = local_and(&[("DATABYTES", "0")]);
    let mut s = start_with(&home, &env).await;
    let r = s
        .mail(
            "a@x.test",
            &["bob@ref.test"],
            &format!("{}\r\n", "z".repeat(500)),
        )
        .await;
    assert!(r.last().starts_with("250 ok "), "{:?}", r.lines);
    s.cmd("EHLO c.test").await.all(&[
        "250-mx.ref.test",
        "250-PIPELINING",
        "250-8BITMIME",
        "250-SMTPUTF8",
        "250 CHUNKING",
    ]);
    assert_eq!(home.maildir().len(), 1);
}

#[tokio::test]
async fn databytes_counts_the_body_after_unstuffing_but_not_received_or_plugin_headers() {
    let home = TestHome::new();
    home.control("databytes", "6\n");
    let header = format!("HX-Long: {}\\n", "h".repeat(200));
    home.smtpplugins(&format!("[d]\n{}\n", printing(&home, "hdr", &header)));
    let mut s = start(&home).await;
    // `..2345` CRLF is stored as `.2345` LF: 6 bytes.
    let r = s.mail("a@x.test", &["bob@ref.test"], "..2345\r\n").await;
    assert!(r.last().starts_with("250 ok "), "{:?}", r.lines);
    s.mail("a@x.test", &["bob@ref.test"], "123456\r\n")
        .await
        .all(&[TOO_BIG]);
    assert_eq!(home.maildir().len(), 1);
}

#[tokio::test]
async fn hops_take_precedence_over_databytes() {
    let home = TestHome::new();
    home.control("databytes", "10\n");
    let mut s = start(&home).await;
    let body = format!("{}\r\nbody\r\n", "Received: from x\r\n".repeat(100));
    s.mail("a@x.test", &["bob@ref.test"], &body)
        .await
        .all(&[LOOPING]);
}

#[tokio::test]
async fn ehlo_advertises_size_when_databytes_is_set() {
    let home = TestHome::new();
    home.control("databytes", "1000\n");
    let mut s = start(&home).await;
    s.cmd("EHLO c.test").await.all(&[
        "250-mx.ref.test",
        "250-PIPELINING",
        "250-8BITMIME",
        "250-SMTPUTF8",
        "250-CHUNKING",
        "250 SIZE 1000",
    ]);
    s.cmd("HELO c.test").await.all(&["250 mx.ref.test"]);
}

#[tokio::test]
async fn mail_with_size_above_databytes_gets_552_immediately() {
    let home = TestHome::new();
    home.control("databytes", "1000\n");
    home.smtpplugins(&format!("[m]\n{}\n", counted(&home, "m", "")));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test> SIZE=1001")
        .await
        .all(&[TOO_BIG]);
    assert_eq!(runs_of(&home, "m"), 0, "the mail hook must not run");
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&[MAIL_FIRST]);
    s.cmd("MAIL FROM:<a@x.test> SIZE=1000")
        .await
        .all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
    // Without databytes SIZE is not checked.
    let home = TestHome::new();
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test> SIZE=999999999999")
        .await
        .all(&["250 ok"]);
}

#[tokio::test]
async fn received_has_no_helo_part_before_any_helo() {
    let home = qq_home();
    let mut s = start(&home).await;
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    assert_eq!(single_run(&home).message, format!("{RECEIVED}{STORED}"));
}

#[tokio::test]
async fn received_shows_helo_only_when_it_differs_from_the_remote_host() {
    let home = qq_home();
    let env = local_and(&[("TCPREMOTEHOST", "client.test")]);
    let mut s = start_with(&home, &env).await;
    s.cmd("HELO CLIENT.Test").await.code(250);
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    s.cmd("EHLO other.test").await.code(250);
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    let runs = queue_runs(&home);
    assert_eq!(
        runs[0].message,
        format!("Received: from client.test (127.0.0.1)\n  by 127.0.0.1 with SMTP; DATE\n{STORED}")
    );
    assert_eq!(
        runs[1].message,
        format!(
            "Received: from client.test (HELO other.test) (127.0.0.1)\n  by 127.0.0.1 with SMTP; DATE\n{STORED}"
        )
    );
}

#[tokio::test]
async fn received_uses_tcpremoteinfo_and_prefers_tcplocalhost() {
    let home = qq_home();
    let env = local_and(&[
        ("TCPREMOTEINFO", "ident"),
        ("TCPLOCALHOST", "mx.local.test"),
    ]);
    let mut s = start_with(&home, &env).await;
    s.cmd("HELO c.test").await.code(250);
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    assert_eq!(
        single_run(&home).message,
        format!("Received: from unknown (HELO c.test) (ident@127.0.0.1)\n  by mx.local.test with SMTP; DATE\n{STORED}")
    );
}

#[tokio::test]
async fn received_falls_back_to_unknown_without_tcp_variables() {
    let home = qq_home();
    let mut s = start_with(&home, &[]).await;
    s.cmd("HELO c.test").await.code(250);
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    assert_eq!(
        single_run(&home).message,
        format!("Received: from unknown (HELO c.test) (unknown)\n  by unknown with SMTP; DATE\n{STORED}")
    );
}

#[tokio::test]
async fn received_replaces_unsafe_characters_with_question_marks() {
    let home = qq_home();
    let env = [
        ("TCPREMOTEIP", "127.0.0.1"),
        ("TCPREMOTEHOST", "r h"),
        ("TCPREMOTEINFO", "i(x)"),
        ("TCPLOCALHOST", "l_h"),
    ];
    let mut s = start_with(&home, &env).await;
    s.cmd("HELO a b<c>\"  ").await.code(250);
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    s.cmd("HELO x.%+/=:-@y_Z9").await.code(250);
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    let runs = queue_runs(&home);
    assert_eq!(
        runs[0].message,
        format!("Received: from r?h (HELO a?b?c????) (i?x?@127.0.0.1)\n  by l?h with SMTP; DATE\n{STORED}")
    );
    assert!(
        runs[1]
            .message
            .starts_with("Received: from r?h (HELO x.%+/=:-@y?Z9) (i?x?@127.0.0.1)\n"),
        "{}",
        runs[1].message
    );
}

#[tokio::test]
async fn received_date_is_utc_in_rfc822_form() {
    let home = qq_home();
    let mut s = start(&home).await;
    let before = SystemTime::now();
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    let after = SystemTime::now();
    let raw = String::from_utf8(home.queued().remove(0).0).unwrap();
    let by = raw.lines().nth(1).unwrap();
    let date = by.strip_prefix("  by 127.0.0.1 with SMTP; ").expect(by);
    let fields: Vec<&str> = date.split(' ').collect();
    assert_eq!(fields.len(), 5, "{date}");
    assert!(
        !fields[0].starts_with('0') && (1..=31).contains(&fields[0].parse::<u32>().unwrap()),
        "{date}"
    );
    assert!(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
            .contains(&fields[1]),
        "{date}"
    );
    assert_eq!(fields[2].len(), 4, "{date}");
    assert_eq!(fields[3].len(), 8, "{date}");
    assert_eq!(fields[4], "-0000");
    use spp_smtpd::protocol::received::rfc822_date_utc;
    assert!(
        date == rfc822_date_utc(before) || date == rfc822_date_utc(after),
        "{date} is not the current UTC time"
    );
}

#[tokio::test]
async fn queue_gets_message_envelope_and_environment() {
    let home = qq_home();
    home.smtpplugins(&format!(
        "[m]\n{}\n",
        printing(&home, "setvar", "SFROM_PLUGIN=yes\\nHX-Plugin: 1\\n")
    ));
    let env = local_and(&[("TCPREMOTEPORT", "4711")]);
    let mut s = start_with(&home, &env).await;
    s.cmd("HELO c.test").await.code(250);
    s.cmd("MAIL FROM:<>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    s.cmd("RCPT TO:<carol@ref.test>").await.code(250);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    body_ok(&mut s, BODY).await;
    let run = single_run(&home);
    assert_eq!(
        run.message,
        format!("Received: from unknown (HELO c.test) (127.0.0.1)\n  by 127.0.0.1 with SMTP; DATE\nX-Plugin: 1\n{STORED}")
    );
    assert_eq!(run.envelope, "F\0Tbob@ref.test\0Tcarol@ref.test\0\0");
    assert_eq!(var(&run.env, "FROM_PLUGIN"), Some("yes"));
    assert_eq!(var(&run.env, "TCPREMOTEIP"), Some("127.0.0.1"));
    assert_eq!(var(&run.env, "TCPREMOTEPORT"), Some("4711"));
    assert_eq!(var(&run.env, "SMTPHELOHOST"), Some("c.test"));
    assert_eq!(var(&run.env, "SMTPMAILFROM"), Some(""));
    assert_eq!(var(&run.env, "SMTPRCPTTO"), Some("carol@ref.test"));
}

#[tokio::test]
async fn queue_exit_0_replies_250_ok_time_qp_pid() {
    let home = qq_home();
    let mut s = start(&home).await;
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let r = s.mail("a@x.test", &["bob@ref.test"], BODY).await;
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let pid: String = fs::read_dir(home.path.join("qq"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name()
        .into_string()
        .unwrap();
    let ok = (before..=after).any(|t| r.last() == format!("250 ok {t} qp {pid}"));
    assert!(ok, "{:?} (qmail-queue pid {pid})", r.lines);
}

#[tokio::test]
async fn queue_exit_status_maps_to_the_reply_table() {
    let home = qq_home();
    let table: &[(i32, &str)] = &[
        (11, "554 envelope address too long for qq (#5.1.3)"),
        (115, "554 envelope address too long for qq (#5.1.3)"),
        (31, "554 mail server permanently rejected message (#5.3.0)"),
        (51, "451 qq out of memory (#4.3.0)"),
        (52, "451 qq timeout (#4.3.0)"),
        (53, "451 qq write error or disk full (#4.3.0)"),
        (54, "451 qq read error (#4.3.0)"),
        (55, "451 qq unable to read configuration (#4.3.0)"),
        (56, "451 qq trouble making network connection (#4.3.0)"),
        (61, "451 qq trouble in home directory (#4.3.0)"),
        (62, "451 qq trouble creating files in queue (#4.3.0)"),
        (66, "451 qq trouble creating files in queue (#4.3.0)"),
        (71, "451 mail server temporarily rejected message (#4.3.0)"),
        (72, "451 connection to mail server timed out (#4.4.1)"),
        (73, "451 connection to mail server rejected (#4.4.1)"),
        (74, "451 communication with mail server failed (#4.4.2)"),
        (81, "451 qq internal bug (#4.3.0)"),
        (91, "451 qq internal bug (#4.3.0)"),
        (120, "451 unable to exec qq (#4.3.0)"),
        (12, "554 qq permanent problem (#5.3.0)"),
        (40, "554 qq permanent problem (#5.3.0)"),
        (1, "451 qq temporary problem (#4.3.0)"),
        (41, "451 qq temporary problem (#4.3.0)"),
        (100, "451 qq temporary problem (#4.3.0)"),
    ];
    let mut s = start(&home).await;
    for (code, reply) in table {
        home.write("qq-exit", code.to_string());
        let r = s.mail("a@x.test", &["bob@ref.test"], BODY).await;
        assert_eq!(r.lines, [*reply], "qmail-queue exit status {code}");
    }
}

#[tokio::test]
async fn queue_killed_by_signal_gets_451_qq_crashed() {
    let home = TestHome::new();
    let p = home.write(
        "bin/qmail-queue",
        "#!/bin/sh\ncat > /dev/null\nkill -9 $$\n",
    );
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    let mut s = start(&home).await;
    s.mail("a@x.test", &["bob@ref.test"], BODY)
        .await
        .all(&["451 qq crashed (#4.3.0)"]);
}

#[tokio::test]
async fn queue_exec_failure_gets_451_unable_to_exec_qq_after_the_message() {
    let home = TestHome::new();
    let env = local_and(&[("QMAILQUEUE", "bin/does-not-exist")]);
    let mut s = start_with(&home, &env).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    s.body(BODY).await.all(&["451 unable to exec qq (#4.3.0)"]);
    assert!(home.maildir().is_empty());
    s.cmd("NOOP").await.all(&["250 ok"]);
}

#[tokio::test]
async fn qmailqueue_env_selects_the_queue_program() {
    let home = qq_home();
    install_queue_copy(&home, "alt-queue", "qq-alt");
    let env = local_and(&[("QMAILQUEUE", "bin/alt-queue")]);
    let mut s = start_with(&home, &env).await;
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    assert_eq!(entries(&home, "qq-alt"), 1);
    assert!(queue_runs(&home).is_empty());
}

#[tokio::test]
async fn qmailqueue_set_by_plugin_with_s_before_the_first_data_is_used() {
    let home = qq_home();
    install_queue_copy(&home, "alt-queue", "qq-alt");
    home.smtpplugins(&format!(
        "[c]\n{}\n",
        printing(&home, "setqq", "SQMAILQUEUE=bin/alt-queue\\n")
    ));
    let mut s = start(&home).await;
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    assert_eq!(entries(&home, "qq-alt"), 1);
    assert!(queue_runs(&home).is_empty());
}

#[tokio::test]
async fn qmailqueue_is_looked_up_at_the_first_data_and_remembered() {
    let home = qq_home();
    install_queue_copy(&home, "alt-queue", "qq-alt");
    let p = home.plugin(
        "setqq",
        "#!/bin/sh\n[ \"$SMTPRCPTTO\" = second@ref.test ] && echo SQMAILQUEUE=bin/alt-queue\nexit 0\n",
    );
    home.smtpplugins(&format!("[r]\n{p}\n"));
    let mut s = start(&home).await;
    deliver(&mut s, "a@x.test", &["first@ref.test"]).await;
    deliver(&mut s, "a@x.test", &["second@ref.test"]).await;
    assert_eq!(entries(&home, "qq-alt"), 0);
    let runs = queue_runs(&home);
    assert_eq!(runs.len(), 2);
    // The variable reached the program, but did not choose it.
    assert_eq!(var(&runs[1].env, "QMAILQUEUE"), Some("bin/alt-queue"));
}

#[tokio::test]
async fn control_queue_selects_the_backend() {
    let home = qq_home();
    install_queue_copy(&home, "other-queue", "qq-other");
    home.control("queue", "qmail-queue bin/other-queue\n");
    let mut s = start(&home).await;
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    assert_eq!(entries(&home, "qq-other"), 1);
    assert!(queue_runs(&home).is_empty());

    let home = qq_home();
    home.control("queue", "maildir Spool\n");
    let mut s = start(&home).await;
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    assert_eq!(home.maildir_in("Spool").len(), 1);
    assert!(queue_runs(&home).is_empty());
}

// ---------------------------------------------------------------------------
// §6.1 Enabling qmail-spp

#[tokio::test]
async fn missing_smtpplugins_gets_421_unable_to_read_controls_and_exit_1() {
    let home = TestHome::new();
    home.remove_control("smtpplugins");
    let mut s = home.session(LOCAL).await;
    assert_eq!(s.line().await, UNREADABLE);
    assert_eq!(s.closed().await, 1);
}

#[tokio::test]
async fn nospp_turns_plugins_off_and_needs_no_smtpplugins() {
    let home = TestHome::new();
    home.smtpplugins(&format!(
        "[c]\n{}\n[h]\n{}\n",
        counted(&home, "c", "E554 refused\\n"),
        counted(&home, "h", "E550 refused\\n")
    ));
    let env = local_and(&[("NOSPP", "")]);
    let mut s = start_with(&home, &env).await;
    s.cmd("HELO c.test").await.all(&["250 mx.ref.test"]);
    assert_eq!(runs_of(&home, "c") + runs_of(&home, "h"), 0);

    home.remove_control("smtpplugins");
    let mut s = start_with(&home, &env).await;
    s.cmd("HELO c.test").await.all(&["250 mx.ref.test"]);
}

#[tokio::test]
async fn nospp_still_sets_helo_and_rcpt_variables_but_not_mailfrom_and_rcptto() {
    let home = qq_home();
    home.remove_control("smtpplugins");
    let env = local_and(&[("NOSPP", "1")]);
    let mut s = start_with(&home, &env).await;
    s.cmd("HELO c.test").await.code(250);
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    s.cmd("RCPT TO:<x@else.test>").await.all(&[NOT_RCPTHOST]);
    s.cmd("RCPT TO:<carol@ref.test>").await.code(250);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    body_ok(&mut s, BODY).await;
    let run = single_run(&home);
    assert_eq!(var(&run.env, "SMTPHELOHOST"), Some("c.test"));
    assert_eq!(counts(&run.env), "1/3");
    assert_eq!(var(&run.env, "SMTPRCPTHOSTSOK"), Some("1"));
    assert_eq!(var(&run.env, "SMTPMAILFROM"), None);
    assert_eq!(var(&run.env, "SMTPRCPTTO"), None);
    assert_eq!(
        run.envelope,
        "Fa@x.test\0Tbob@ref.test\0Tcarol@ref.test\0\0"
    );
}

#[tokio::test]
async fn sppconffile_names_the_plugin_configuration_relative_to_the_home() {
    let home = TestHome::new();
    home.smtpplugins(&format!(
        "[h]\n{}\n",
        printing(&home, "default", "E550 default\\n")
    ));
    home.control(
        "alt-plugins",
        format!("[h]\n{}\n", printing(&home, "alt", "E550 alt\\n")),
    );
    let env = local_and(&[("SPPCONFFILE", "control/alt-plugins")]);
    let mut s = start_with(&home, &env).await;
    s.cmd("HELO c.test").await.all(&["550 alt"]);
    // An absolute name works as well.
    let abs = home.path.join("control/alt-plugins");
    let env = [
        ("TCPREMOTEIP", "127.0.0.1"),
        ("SPPCONFFILE", abs.to_str().unwrap()),
    ];
    let mut s = start_with(&home, &env).await;
    s.cmd("HELO c.test").await.all(&["550 alt"]);
}

#[tokio::test]
async fn empty_sppconffile_means_control_smtpplugins() {
    let home = TestHome::new();
    home.smtpplugins(&format!(
        "[h]\n{}\n",
        printing(&home, "default", "E550 default\\n")
    ));
    let env = local_and(&[("SPPCONFFILE", "")]);
    let mut s = start_with(&home, &env).await;
    s.cmd("HELO c.test").await.all(&["550 default"]);
}

#[tokio::test]
async fn missing_sppconffile_gets_421_unable_to_read_controls() {
    let home = TestHome::new();
    let env = local_and(&[("SPPCONFFILE", "control/none")]);
    let mut s = home.session(&env).await;
    assert_eq!(s.line().await, UNREADABLE);
    assert_eq!(s.closed().await, 1);
}

#[tokio::test]
async fn empty_smtpplugins_is_fine() {
    let home = TestHome::new();
    home.smtpplugins("");
    let mut s = start(&home).await;
    s.cmd("HELO c.test").await.all(&["250 mx.ref.test"]);
}

// ---------------------------------------------------------------------------
// §6.2 Configuration syntax

#[tokio::test]
async fn sections_are_selected_by_the_lower_case_letter_after_the_bracket() {
    let home = TestHome::new();
    let p = |name: &str| printing(&home, name, &format!("P{name}\\n"));
    let conf = format!(
        "{}\n[conn]\n{}\n[HELO]\n{}\n[hxyz\n{}\n[Data]\n{}\n[zzz]\n{}\n[\n{}\n[auth]\n{}\n[c\n{}\n[m\n{}\n[rcpt]\n{}\n[d]\n{}\n",
        p("before"),
        p("c1"),
        p("bad1"),
        p("h1"),
        p("bad2"),
        p("bad3"),
        p("bad4"),
        p("auth1"),
        p("c2"),
        p("m1"),
        p("r1"),
        p("d1"),
    );
    home.smtpplugins(&conf);
    let mut s = home.session(LOCAL).await;
    s.greeting()
        .await
        .all(&["c1", "c2", "220 mx.ref.test ESMTP"]);
    s.cmd("HELO c.test").await.all(&["h1", "250 mx.ref.test"]);
    s.cmd("MAIL FROM:<a@x.test>").await.all(&["m1", "250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["r1", "250 ok"]);
    s.cmd("DATA").await.all(&["d1", GO_AHEAD]);
    body_ok(&mut s, BODY).await;
}

#[tokio::test]
async fn comments_blank_lines_and_trailing_blanks_in_smtpplugins_are_skipped() {
    let home = TestHome::new();
    let m1 = printing(&home, "m1", "Pm1\\n");
    let hidden = printing(&home, "hidden", "Phidden\\n");
    home.smtpplugins(&format!("# comment\n[m]\n\n{m1} \t\n   \n#{hidden}\n"));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.all(&["m1", "250 ok"]);
}

#[tokio::test]
async fn repeated_sections_accumulate_in_file_order() {
    let home = TestHome::new();
    let p = |name: &str| printing(&home, name, &format!("P{name}\\n"));
    home.smtpplugins(&format!(
        "[m]\n{}\n[r]\n{}\n[m]\n{}\n{}\n",
        p("m1"),
        p("r1"),
        p("m2"),
        p("m3")
    ));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>")
        .await
        .all(&["m1", "m2", "m3", "250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["r1", "250 ok"]);
}

#[tokio::test]
async fn shell_lines_run_through_sh_c_with_the_rest_of_the_line() {
    let home = TestHome::new();
    home.smtpplugins("[h]\n:printf 'E550 helo=%s args=%s\\n' \"$SMTPHELOHOST\" \"$((40 + 2))\"\n");
    let mut s = start(&home).await;
    s.cmd("HELO c.test").await.all(&["550 helo=c.test args=42"]);
}

#[tokio::test]
async fn shell_line_exit_127_is_ignored() {
    let home = TestHome::new();
    home.smtpplugins(&format!(
        "[h]\n:no-such-command-spp-test\n{}\n",
        printing(&home, "after", "Pafter\\n")
    ));
    let mut s = start(&home).await;
    s.cmd("HELO c.test")
        .await
        .all(&["after", "250 mx.ref.test"]);
}

#[tokio::test]
async fn shell_line_failure_names_the_line_with_its_colon() {
    let home = TestHome::new();
    home.smtpplugins("[h]\n:exit 120\n");
    let mut s = start(&home).await;
    s.cmd("HELO c.test")
        .await
        .all(&["451 qmail-spp failure: :exit 120: can't execute (#4.3.0)"]);
}

#[tokio::test]
async fn plugin_line_is_split_into_arguments_with_shell_words() {
    // DESIGN §3.4.
    let home = TestHome::new();
    let p = home.plugin(
        "args",
        "#!/bin/sh\nprintf 'P%s|%s|%s\\n' \"$#\" \"$1\" \"$2\"\n",
    );
    home.smtpplugins(&format!("[h]\n{p} one 'two words'\n"));
    let mut s = start(&home).await;
    s.cmd("HELO c.test")
        .await
        .all(&["2|one|two words", "250 mx.ref.test"]);
}

#[tokio::test]
async fn plugin_line_naming_an_existing_file_runs_as_is() {
    // DESIGN §3.4: the whole line wins if it names an existing file.
    let home = TestHome::new();
    let p = home.plugin("say two", "#!/bin/sh\nprintf 'P%s\\n' \"$#\"\n");
    assert_eq!(p, "plugins/say two");
    home.smtpplugins(&format!("[h]\n{p}\n"));
    let mut s = start(&home).await;
    s.cmd("HELO c.test").await.all(&["0", "250 mx.ref.test"]);
}

#[tokio::test]
async fn plugin_program_is_not_searched_in_path() {
    let home = TestHome::new();
    home.smtpplugins("[h]\ntrue\n[m]\n:true\n");
    let mut s = start(&home).await;
    s.cmd("HELO c.test")
        .await
        .all(&["451 qmail-spp failure: true: can't execute (#4.3.0)"]);
    s.cmd("MAIL FROM:<a@x.test>").await.all(&["250 ok"]);
}

#[tokio::test]
async fn crlf_smtpplugins_breaks_plugin_paths() {
    let home = TestHome::new();
    let p = printing(&home, "ok", "Pok\\n");
    home.smtpplugins(&format!("[h]\r\n{p}\r\n"));
    let mut s = start(&home).await;
    s.cmd("HELO c.test").await.all(&[&format!(
        "451 qmail-spp failure: {p}\r: can't execute (#4.3.0)"
    )]);
}

// ---------------------------------------------------------------------------
// §6.3 Running one plugin

#[tokio::test]
async fn plugins_of_a_hook_run_sequentially_in_file_order() {
    let home = TestHome::new();
    let one = home.plugin("one", "#!/bin/sh\nsleep 0.3\necho one >> order\n");
    let two = home.plugin("two", "#!/bin/sh\necho two >> order\n");
    let three = home.plugin("three", "#!/bin/sh\necho three >> order\n");
    home.smtpplugins(&format!("[h]\n{one}\n{two}\n{three}\n"));
    let mut s = start(&home).await;
    s.cmd("HELO c.test").await.all(&["250 mx.ref.test"]);
    assert_eq!(
        fs::read_to_string(home.path.join("order")).unwrap(),
        "one\ntwo\nthree\n"
    );
}

#[tokio::test]
async fn plugin_gets_no_client_input_on_stdin_and_runs_in_the_home() {
    let home = TestHome::new();
    let p = home.plugin(
        "probe",
        "#!/bin/sh\n[ -f control/me ] && echo Pcwd-is-home\nif read line; then echo \"Pstdin:$line\"; else echo Pstdin-empty; fi\n",
    );
    home.smtpplugins(&format!("[h]\n{p}\n"));
    let mut s = start(&home).await;
    s.send("HELO c.test\r\nNOOP\r\n").await;
    s.reply()
        .await
        .all(&["cwd-is-home", "stdin-empty", "250 mx.ref.test"]);
    s.reply().await.all(&["250 ok"]);
}

#[tokio::test]
async fn plugin_sees_the_tcpserver_environment() {
    let home = TestHome::new();
    home.smtpplugins(&format!("[c]\n{}\n", dumper(&home, "conn", "")));
    let env = local_and(&[
        ("PROTO", "TCP"),
        ("TCPREMOTEPORT", "4711"),
        ("RELAYCLIENT", ""),
    ]);
    let _s = start_with(&home, &env).await;
    let d = &dumps(&home, "conn")[0];
    assert_eq!(var(d, "PROTO"), Some("TCP"));
    assert_eq!(var(d, "TCPREMOTEIP"), Some("127.0.0.1"));
    assert_eq!(var(d, "TCPREMOTEPORT"), Some("4711"));
    assert_eq!(var(d, "RELAYCLIENT"), Some(""));
}

#[tokio::test]
async fn plugin_exit_120_gets_451_cant_execute_and_refuses_the_command() {
    let home = TestHome::new();
    let p = home.plugin("fail", "#!/bin/sh\nexit 120\n");
    home.smtpplugins(&format!("[r]\n{p}\n"));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>")
        .await
        .all(&["451 qmail-spp failure: plugins/fail: can't execute (#4.3.0)"]);
    s.cmd("DATA").await.all(&[RCPT_FIRST]);
}

#[tokio::test]
async fn plugin_exec_failures_get_451_cant_execute() {
    type Setup = fn(&TestHome) -> String;
    let cases: &[(&str, Setup)] = &[
        ("missing file", |_h| "plugins/missing".to_string()),
        ("not executable", |h| {
            h.write("plugins/noexec", "#!/bin/sh\necho E550 ran\n");
            "plugins/noexec".to_string()
        }),
        ("directory", |h| {
            fs::create_dir_all(h.path.join("plugins/dir")).unwrap();
            "plugins/dir".to_string()
        }),
        ("script without #!", |h| {
            h.plugin("noshebang", "echo E550 ran by a shell\n")
        }),
    ];
    for (what, setup) in cases {
        let home = TestHome::new();
        let line = setup(&home);
        home.smtpplugins(&format!("[h]\n{line}\n"));
        let mut s = start(&home).await;
        let r = s.cmd("HELO c.test").await;
        assert_eq!(
            r.lines,
            [format!(
                "451 qmail-spp failure: {line}: can't execute (#4.3.0)"
            )],
            "{what}"
        );
    }
}

#[tokio::test]
async fn plugin_killed_by_signal_gets_451_child_crashed() {
    let home = TestHome::new();
    let p = home.plugin("crash", "#!/bin/sh\nkill -9 $$\n");
    home.smtpplugins(&format!("[m]\n{p}\n"));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>")
        .await
        .all(&["451 qmail-spp failure: plugins/crash: child crashed (#4.3.0)"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&[MAIL_FIRST]);
}

#[tokio::test]
async fn other_plugin_exit_statuses_are_ignored() {
    let home = TestHome::new();
    let e1 = home.plugin("exit1", "#!/bin/sh\nexit 1\n");
    let e7 = home.plugin("exit7", "#!/bin/sh\necho Pseven\nexit 7\n");
    let e127 = home.plugin("exit127", "#!/bin/sh\nexit 127\n");
    let e121 = home.plugin("exit121", "#!/bin/sh\nexit 121\n");
    home.smtpplugins(&format!("[h]\n{e1}\n{e7}\n{e127}\n{e121}\n"));
    let mut s = start(&home).await;
    s.cmd("HELO c.test")
        .await
        .all(&["seven", "250 mx.ref.test"]);
}

#[tokio::test]
async fn commands_printed_before_a_failure_take_effect() {
    let home = qq_home();
    let p = home.plugin(
        "crash",
        "#!/bin/sh\n[ \"$SMTPRCPTTO\" = crash@ref.test ] || exit 0\n\
         printf 'P250-noted\\nHX-Before-Crash: yes\\nSCRASHVAR=set\\nLM451 queued before crash\\n'\nkill -9 $$\n",
    );
    home.smtpplugins(&format!("[r]\n{p}\n"));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<crash@ref.test>").await.all(&[
        "250-noted",
        "451 qmail-spp failure: plugins/crash: child crashed (#4.3.0)",
    ]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
    s.cmd("MAIL FROM:<b@x.test>")
        .await
        .all(&["451 queued before crash"]);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    body_ok(&mut s, BODY).await;
    let run = single_run(&home);
    assert_eq!(run.envelope, "Fa@x.test\0Tbob@ref.test\0\0");
    assert_eq!(
        run.message,
        format!("{RECEIVED}X-Before-Crash: yes\n{STORED}")
    );
    assert_eq!(var(&run.env, "CRASHVAR"), Some("set"));
}

#[tokio::test]
async fn e_printed_before_exit_120_is_sent_then_the_451_line() {
    let home = TestHome::new();
    let p = home.plugin("e120", "#!/bin/sh\nprintf 'E550 refused\\n'\nexit 120\n");
    home.smtpplugins(&format!("[h]\n{p}\n"));
    let mut s = start(&home).await;
    s.send("HELO c.test\r\n").await;
    assert_eq!(
        s.lines(2).await,
        [
            "550 refused",
            "451 qmail-spp failure: plugins/e120: can't execute (#4.3.0)"
        ]
    );
    s.cmd("NOOP").await.all(&["250 ok"]);
}

#[tokio::test]
async fn silent_plugin_has_no_effect_and_the_next_plugin_runs() {
    let home = TestHome::new();
    let silent = counted(&home, "silent", "");
    let second = counted(&home, "second", "E550 second\\n");
    home.smtpplugins(&format!("[h]\n{silent}\n[m]\n{silent}\n{second}\n"));
    let mut s = start(&home).await;
    s.cmd("HELO c.test").await.all(&["250 mx.ref.test"]);
    s.cmd("MAIL FROM:<a@x.test>").await.all(&["550 second"]);
    assert_eq!((runs_of(&home, "silent"), runs_of(&home, "second")), (2, 1));
}

#[tokio::test]
async fn only_the_first_terminating_command_counts_and_ends_the_hook() {
    let home = TestHome::new();
    let first = printing(&home, "first", "Pa\\nN\\nE550 ignored\\nPb\\n");
    let later = counted(&home, "later", "E550 later plugin\\n");
    let refuse = printing(&home, "refuse", "E550 first\\nN\\n");
    home.smtpplugins(&format!("[h]\n{first}\n{later}\n[m]\n{refuse}\n{later}\n"));
    let mut s = start(&home).await;
    s.cmd("HELO c.test").await.all(&["a", "250 mx.ref.test"]);
    s.cmd("MAIL FROM:<a@x.test>").await.all(&["550 first"]);
    assert_eq!(runs_of(&home, "later"), 0);
}

#[tokio::test]
async fn output_after_the_terminator_is_discarded_and_the_reply_waits_for_exit() {
    let home = TestHome::new();
    let p = home.plugin(
        "slow",
        "#!/bin/sh\nprintf 'E550 first\\n'\nsleep 0.5\nprintf 'E550 second\\nP250-late\\n'\necho done > slow-done\n",
    );
    home.smtpplugins(&format!("[h]\n{p}\n"));
    let mut s = start(&home).await;
    s.cmd("HELO c.test").await.all(&["550 first"]);
    assert!(
        home.path.join("slow-done").exists(),
        "the reply came before the plugin exited"
    );
    s.cmd("NOOP").await.all(&["250 ok"]);
}

// ---------------------------------------------------------------------------
// §6.4 Output format

#[tokio::test]
async fn empty_lines_unknown_letters_and_bad_l_lines_are_ignored() {
    let home = TestHome::new();
    home.smtpplugins(&format!(
        "[h]\n{}\n",
        printing(
            &home,
            "noise",
            "\\nx\\ne550 lower\\nLX550 bad\\nL\\nn\\n#c\\nPvisible\\nE550 real\\n"
        )
    ));
    let mut s = start(&home).await;
    s.cmd("HELO c.test").await.all(&["visible", "550 real"]);
}

#[tokio::test]
async fn text_is_cut_at_the_first_nul_but_h_keeps_the_whole_line() {
    let home = qq_home();
    home.smtpplugins(&format!(
        "[m]\n{}\n[r]\n{}\n",
        printing(&home, "nulh", "P250-a\\000b\\nHX-Nul: a\\000b\\n"),
        printing(&home, "nule", "E550 c\\000d\\n")
    ));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>")
        .await
        .all(&["250-a", "250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["550 c"]);
    // Show the header through a message: turn the rcpt plugin off.
    drop(s);
    home.smtpplugins(&format!(
        "[m]\n{}\n",
        printing(&home, "nulh2", "HX-Nul: a\\000b\\n")
    ));
    let mut s = start(&home).await;
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    assert_eq!(
        single_run(&home).message,
        format!("{RECEIVED}X-Nul: a\0b\n{STORED}")
    );
}

#[tokio::test]
async fn unterminated_last_line_is_taken_whole() {
    // DESIGN §3.3 (qmail-spp would drop the last byte).
    let home = TestHome::new();
    home.smtpplugins(&format!(
        "[h]\n{}\n",
        printing(&home, "unterminated", "P250-x\\nE550 no")
    ));
    let mut s = start(&home).await;
    s.cmd("HELO c.test").await.all(&["250-x", "550 no"]);

    let home = TestHome::new();
    home.smtpplugins(&format!("[h]\n{}\n", printing(&home, "d", "D")));
    let mut s = start(&home).await;
    s.send("HELO c.test\r\n").await;
    assert_eq!(s.closed().await, 0);
}

#[tokio::test]
async fn trailing_cr_of_plugin_lines_is_stripped() {
    // DESIGN §3.3 (qmail-spp would send `550 x` CR CR LF).
    let home = TestHome::new();
    home.smtpplugins(&format!(
        "[h]\n{}\n",
        printing(&home, "crlf", "P250-x\\r\\nE550 y\\r\\n")
    ));
    let mut s = start(&home).await;
    s.cmd("HELO c.test").await.all(&["250-x", "550 y"]);
    home.smtpplugins(&format!("[h]\n{}\n", printing(&home, "crlf2", "E550 z\\r")));
    let mut s = start(&home).await;
    s.cmd("HELO c.test").await.all(&["550 z"]);
}

// ---------------------------------------------------------------------------
// §6.5 Commands

#[tokio::test]
async fn a_switches_plugins_off_for_the_rest_of_the_connection_even_after_rset() {
    let home = TestHome::new();
    let accept = counted(&home, "accept", "A\\n");
    let refuse_helo = counted(&home, "refuse-helo", "E550 helo refused\\n");
    let refuse_mail = counted(&home, "refuse-mail", "E550 mail refused\\n");
    home.smtpplugins(&format!(
        "[h]\n{accept}\n{refuse_helo}\n[m]\n{refuse_mail}\n"
    ));
    let mut s = start(&home).await;
    s.cmd("HELO c.test").await.all(&["250 mx.ref.test"]);
    s.cmd("RSET").await.all(&["250 flushed"]);
    s.cmd("MAIL FROM:<a@x.test>").await.all(&["250 ok"]);
    s.cmd("HELO c.test").await.all(&["250 mx.ref.test"]);
    assert_eq!(runs_of(&home, "accept"), 1);
    assert_eq!(
        runs_of(&home, "refuse-helo") + runs_of(&home, "refuse-mail"),
        0
    );
}

#[tokio::test]
async fn a_keeps_the_server_checks_and_queued_errors() {
    let home = TestHome::new();
    home.control("badmailfrom", "bad@evil.test\n");
    home.smtpplugins(&format!(
        "[c]\n{}\n",
        printing(&home, "a", "LR550 queued before A\\nA\\n")
    ));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>")
        .await
        .all(&["550 queued before A"]);
    s.cmd("RSET").await.all(&["250 flushed"]);
    s.cmd("MAIL FROM:<a@x.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@else.test>").await.all(&[NOT_RCPTHOST]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
    s.cmd("MAIL FROM:<bad@evil.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&[BADMAILFROM]);
}

#[tokio::test]
async fn a_stops_smtpmailfrom_and_smtprcptto_updates_but_not_the_others() {
    let home = qq_home();
    home.smtpplugins(&format!("[m]\n{}\n", printing(&home, "a", "A\\n")));
    let mut s = start(&home).await;
    s.cmd("HELO c.test").await.code(250);
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    s.cmd("HELO d.test").await.code(250);
    deliver(&mut s, "b@x.test", &["carol@ref.test", "dave@ref.test"]).await;
    let runs = queue_runs(&home);
    // SMTPMAILFROM was set before the plugin that answered A ran.
    assert_eq!(var(&runs[0].env, "SMTPMAILFROM"), Some("a@x.test"));
    assert_eq!(var(&runs[0].env, "SMTPRCPTTO"), None);
    assert_eq!(var(&runs[1].env, "SMTPMAILFROM"), Some("a@x.test"));
    assert_eq!(var(&runs[1].env, "SMTPRCPTTO"), None);
    assert_eq!(var(&runs[1].env, "SMTPHELOHOST"), Some("d.test"));
    assert_eq!(counts(&runs[1].env), "1/2");
    assert_eq!(var(&runs[1].env, "SMTPRCPTHOSTSOK"), Some("1"));
    assert_eq!(
        runs[1].envelope,
        "Fb@x.test\0Tcarol@ref.test\0Tdave@ref.test\0\0"
    );
}

#[tokio::test]
async fn n_accepts_and_the_server_checks_still_apply() {
    let home = TestHome::new();
    home.control("badmailfrom", "bad@evil.test\n");
    let n = printing(&home, "n", "N\\n");
    home.smtpplugins(&format!("[m]\n{n}\n[r]\n{n}\n"));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@else.test>").await.all(&[NOT_RCPTHOST]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
    s.cmd("MAIL FROM:<bad@evil.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&[BADMAILFROM]);
}

#[tokio::test]
async fn o_on_rcpt_skips_the_rcpthosts_refusal() {
    let home = qq_home();
    home.smtpplugins(&format!("[r]\n{}\n", dumper(&home, "rcpt", "O\\n")));
    let mut s = start(&home).await;
    deliver(&mut s, "a@x.test", &["bob@else.test"]).await;
    assert_eq!(var(&dumps(&home, "rcpt")[0], "SMTPRCPTHOSTSOK"), Some("0"));
    assert_eq!(single_run(&home).envelope, "Fa@x.test\0Tbob@else.test\0\0");
}

#[tokio::test]
async fn o_on_mail_keeps_previous_badmailfrom_verdict() {
    let home = TestHome::new();
    home.control("badmailfrom", "bad@evil.test\no-bad@evil.test\n");
    let p = home.plugin(
        "o",
        "#!/bin/sh\ncase \"$SMTPMAILFROM\" in o-*) echo O;; *) echo N;; esac\n",
    );
    home.smtpplugins(&format!("[m]\n{p}\n"));
    let mut s = start(&home).await;
    // Initially "not bad": O skips the check even for a listed sender.
    s.cmd("MAIL FROM:<o-bad@evil.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
    s.cmd("MAIL FROM:<bad@evil.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&[BADMAILFROM]);
    // O keeps the stale "bad" verdict for a good sender.
    s.cmd("MAIL FROM:<o-good@x.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&[BADMAILFROM]);
    s.cmd("MAIL FROM:<good@x.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
}

#[tokio::test]
async fn o_in_connection_helo_and_data_acts_like_n() {
    let home = qq_home();
    let o = printing(&home, "o", "O\\n");
    home.smtpplugins(&format!("[c]\n{o}\n[h]\n{o}\n[d]\n{o}\n"));
    let mut s = start(&home).await;
    s.cmd("HELO c.test").await.all(&["250 mx.ref.test"]);
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@else.test>").await.all(&[NOT_RCPTHOST]);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    body_ok(&mut s, BODY).await;
}

#[tokio::test]
async fn e_refuses_the_command_with_its_text_sent_verbatim() {
    let home = TestHome::new();
    home.smtpplugins(&format!(
        "[h]\n{}\n[r]\n{}\n",
        printing(&home, "h", "Eno code at all\\n"),
        printing(&home, "r", "E553 5.7.1 <bob@ref.test> custom\\n")
    ));
    let mut s = start(&home).await;
    s.send("HELO c.test\r\n").await;
    assert_eq!(s.line().await, "no code at all");
    // Nothing more was sent for HELO.
    s.cmd("NOOP").await.all(&["250 ok"]);
    s.cmd("MAIL FROM:<a@x.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>")
        .await
        .all(&["553 5.7.1 <bob@ref.test> custom"]);
    s.cmd("DATA").await.all(&[RCPT_FIRST]);
}

#[tokio::test]
async fn e_with_empty_text_sends_an_empty_line() {
    let home = TestHome::new();
    home.smtpplugins(&format!("[h]\n{}\n", printing(&home, "e", "E\\n")));
    let mut s = start(&home).await;
    s.send("HELO c.test\r\nNOOP\r\n").await;
    assert_eq!(s.line().await, "");
    s.reply().await.all(&["250 ok"]);
}

#[tokio::test]
async fn r_sends_its_text_and_closes_with_exit_0() {
    let home = TestHome::new();
    home.smtpplugins(&format!(
        "[m]\n{}\n",
        printing(&home, "r", "P451-first\\nR421 closing now\\n")
    ));
    let mut s = start(&home).await;
    s.send("MAIL FROM:<a@x.test>\r\nNOOP\r\n").await;
    assert_eq!(s.lines(2).await, ["451-first", "421 closing now"]);
    assert_eq!(s.closed().await, 0);
}

#[tokio::test]
async fn d_closes_without_a_reply_with_exit_0() {
    let home = TestHome::new();
    home.smtpplugins(&format!(
        "[h]\n{}\n",
        printing(&home, "d", "P250-partial\\nD\\nE550 never\\n")
    ));
    let mut s = start(&home).await;
    s.send("HELO c.test\r\nNOOP\r\n").await;
    assert_eq!(s.line().await, "250-partial");
    assert_eq!(s.closed().await, 0);
}

#[tokio::test]
async fn p_lines_come_before_the_server_reply() {
    let home = TestHome::new();
    home.smtpplugins(&format!(
        "[m]\n{}\n[r]\n{}\n",
        printing(&home, "p", "P250-first\\nP250-second\\n"),
        printing(&home, "p2", "Pjust text\\nP\\nE550 no\\n")
    ));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>")
        .await
        .all(&["250-first", "250-second", "250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>")
        .await
        .all(&["just text", "", "550 no"]);
}

#[tokio::test]
async fn h_headers_follow_received_in_the_order_added() {
    let home = qq_home();
    home.smtpplugins(&format!(
        "[c]\n{}\n[h]\n{}\n[m]\n{}\n[r]\n{}\n[d]\n{}\n",
        printing(&home, "c", "HX-Conn: 1\\n"),
        printing(&home, "h", "HX-Helo: 2\\n"),
        printing(&home, "m", "HX-Mail: 3\\n"),
        printing(&home, "r", "HX-Rcpt: 4\\n"),
        printing(&home, "d", "HX-Data: 5\\n"),
    ));
    let mut s = start(&home).await;
    s.cmd("HELO c.test").await.code(250);
    deliver(&mut s, "a@x.test", &["bob@ref.test", "carol@ref.test"]).await;
    assert_eq!(
        single_run(&home).message,
        format!(
            "Received: from unknown (HELO c.test) (127.0.0.1)\n  by 127.0.0.1 with SMTP; DATE\n\
             X-Conn: 1\nX-Helo: 2\nX-Mail: 3\nX-Rcpt: 4\nX-Rcpt: 4\nX-Data: 5\n{STORED}"
        )
    );
}

#[tokio::test]
async fn h_with_empty_text_inserts_an_empty_line() {
    let home = qq_home();
    home.smtpplugins(&format!(
        "[d]\n{}\n",
        printing(&home, "d", "HX-A: 1\\nH\\n")
    ));
    let mut s = start(&home).await;
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    assert_eq!(
        single_run(&home).message,
        format!("{RECEIVED}X-A: 1\n\n{STORED}")
    );
}

#[tokio::test]
async fn s_sets_a_variable_for_later_plugins_and_the_queue() {
    let home = qq_home();
    home.smtpplugins(&format!(
        "[c]\n{}\n[h]\n{}\n[m]\n{}\n",
        printing(&home, "c", "SSPPVAR=one\\nSTCPREMOTEIP=10.9.8.7\\n"),
        dumper(&home, "helo", ""),
        printing(&home, "m", "SSPPVAR=two=2\\n"),
    ));
    let mut s = start(&home).await;
    s.cmd("HELO c.test").await.code(250);
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    let d = &dumps(&home, "helo")[0];
    assert_eq!(var(d, "SPPVAR"), Some("one"));
    assert_eq!(var(d, "TCPREMOTEIP"), Some("10.9.8.7"));
    let run = single_run(&home);
    assert_eq!(var(&run.env, "SPPVAR"), Some("two=2"));
    // The server's own copy of TCPREMOTEIP is unchanged.
    assert!(
        run.message
            .starts_with("Received: from unknown (HELO c.test) (127.0.0.1)\n"),
        "{}",
        run.message
    );
}

#[tokio::test]
async fn s_cannot_change_the_server_settings_read_at_start() {
    let home = qq_home();
    home.smtpplugins(&format!(
        "[c]\n{}\n",
        printing(
            &home,
            "c",
            "SRELAYCLIENT=\\nSDATABYTES=5\\nSTCPREMOTEHOST=evil.test\\nSTCPLOCALHOST=x.test\\n"
        )
    ));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@else.test>").await.all(&[NOT_RCPTHOST]);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    body_ok(&mut s, "1234567890\r\n").await;
    let run = single_run(&home);
    assert_eq!(run.message, format!("{RECEIVED}1234567890\n"));
    // Child processes do see the new values.
    assert_eq!(var(&run.env, "RELAYCLIENT"), Some(""));
    assert_eq!(var(&run.env, "DATABYTES"), Some("5"));
    assert_eq!(var(&run.env, "TCPREMOTEHOST"), Some("evil.test"));
}

#[tokio::test]
async fn u_removes_a_variable_for_later_plugins_and_the_queue() {
    let home = qq_home();
    home.smtpplugins(&format!(
        "[c]\n{}\n[h]\n{}\n",
        printing(&home, "c", "UFOO\\nUTCPREMOTEIP\\nUNOT_SET\\n"),
        dumper(&home, "helo", ""),
    ));
    let env = local_and(&[("FOO", "bar")]);
    let mut s = start_with(&home, &env).await;
    s.cmd("HELO c.test").await.code(250);
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    let d = &dumps(&home, "helo")[0];
    assert_eq!((var(d, "FOO"), var(d, "TCPREMOTEIP")), (None, None));
    assert_eq!(var(d, "TCPLOCALIP"), Some("127.0.0.1"));
    let run = single_run(&home);
    assert_eq!(
        (var(&run.env, "FOO"), var(&run.env, "TCPREMOTEIP")),
        (None, None)
    );
    assert!(
        run.message
            .starts_with("Received: from unknown (HELO c.test) (127.0.0.1)\n"),
        "{}",
        run.message
    );
}

#[tokio::test]
async fn c_on_mail_replaces_the_sender_for_the_envelope_and_later_plugins() {
    let home = qq_home();
    home.smtpplugins(&format!(
        "[m]\n{}\n{}\n",
        printing(&home, "c", "Cnew@x.test\\n"),
        dumper(&home, "mail", ""),
    ));
    let mut s = start(&home).await;
    deliver(&mut s, "old@x.test", &["bob@ref.test"]).await;
    assert_eq!(
        var(&dumps(&home, "mail")[0], "SMTPMAILFROM"),
        Some("new@x.test")
    );
    let run = single_run(&home);
    assert_eq!(run.envelope, "Fnew@x.test\0Tbob@ref.test\0\0");
    assert_eq!(var(&run.env, "SMTPMAILFROM"), Some("new@x.test"));
}

#[tokio::test]
async fn c_on_rcpt_does_not_rerun_rcpthosts() {
    let home = qq_home();
    let p = home.plugin(
        "c",
        "#!/bin/sh\ncase \"$SMTPRCPTTO\" in\n  *@else.test) echo Cbob@ref.test;;\n  bob@ref.test) echo Cx@foreign.test;;\nesac\n",
    );
    home.smtpplugins(&format!("[r]\n{p}\n{}\n", dumper(&home, "rcpt", "")));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@else.test>").await.all(&[NOT_RCPTHOST]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    body_ok(&mut s, BODY).await;
    let d = dumps(&home, "rcpt");
    assert_eq!(var(&d[0], "SMTPRCPTTO"), Some("bob@ref.test"));
    assert_eq!(var(&d[1], "SMTPRCPTTO"), Some("x@foreign.test"));
    assert_eq!(single_run(&home).envelope, "Fa@x.test\0Tx@foreign.test\0\0");
}

#[tokio::test]
async fn c_on_mail_is_checked_against_badmailfrom() {
    let home = TestHome::new();
    home.control("badmailfrom", "bad@evil.test\n");
    let p = home.plugin(
        "c",
        "#!/bin/sh\ncase \"$SMTPMAILFROM\" in\n  good@x.test) echo Cbad@evil.test;;\n  bad@evil.test) echo Cgood@x.test;;\nesac\n",
    );
    home.smtpplugins(&format!("[m]\n{p}\n"));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<good@x.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&[BADMAILFROM]);
    s.cmd("MAIL FROM:<bad@evil.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
}

#[tokio::test]
async fn c_is_ignored_outside_mail_and_rcpt() {
    let home = qq_home();
    home.smtpplugins(&format!(
        "[c]\n{}\n[h]\n{}\n[d]\n{}\n",
        printing(&home, "c", "Cconn@x.test\\n"),
        printing(&home, "h", "Chelo@x.test\\n"),
        printing(&home, "d", "Cdata@x.test\\n"),
    ));
    let mut s = start(&home).await;
    s.cmd("HELO c.test").await.all(&["250 mx.ref.test"]);
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    let run = single_run(&home);
    assert_eq!(run.envelope, "Fa@x.test\0Tbob@ref.test\0\0");
    assert_eq!(var(&run.env, "SMTPMAILFROM"), Some("a@x.test"));
    assert_eq!(var(&run.env, "SMTPRCPTTO"), Some("bob@ref.test"));
}

#[tokio::test]
async fn c_skips_the_length_check_and_may_make_an_empty_address() {
    let home = qq_home();
    let long = format!("{}@x.test", "l".repeat(1000));
    home.smtpplugins(&format!(
        "[m]\n{}\n[r]\n{}\n",
        printing(&home, "m", &format!("C{long}\\n")),
        printing(&home, "r", "C\\n"),
    ));
    let mut s = start(&home).await;
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    assert_eq!(single_run(&home).envelope, format!("F{long}\0T\0\0"));
}

#[tokio::test]
async fn relayclient_suffix_is_appended_to_the_address_changed_by_c() {
    let home = qq_home();
    home.smtpplugins(&format!(
        "[r]\n{}\n",
        printing(&home, "r", "Cnew@else.test\\n")
    ));
    let env = local_and(&[("RELAYCLIENT", ".relay")]);
    let mut s = start_with(&home, &env).await;
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    assert_eq!(
        single_run(&home).envelope,
        "Fa@x.test\0Tnew@else.test.relay\0\0"
    );
}

#[tokio::test]
async fn all_queued_texts_of_a_kind_are_sent_in_order() {
    let home = TestHome::new();
    home.smtpplugins(&format!(
        "[c]\n{}\n",
        printing(&home, "c", "LR550-first\\nLR550 second\\n")
    ));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>")
        .await
        .all(&["550-first", "550 second"]);
}

// ---------------------------------------------------------------------------
// §7 Hooks

#[tokio::test]
async fn connection_hook_e_replaces_greeting_and_session_continues() {
    let home = qq_home();
    home.smtpplugins(&format!(
        "[c]\n{}\n",
        printing(&home, "c", "E554 go away\\n")
    ));
    let mut s = home.session(LOCAL).await;
    s.greeting().await.all(&["554 go away"]);
    s.cmd("HELO c.test").await.all(&["250 mx.ref.test"]);
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    s.cmd("QUIT").await.all(&["221 mx.ref.test"]);
    assert_eq!(s.closed().await, 0);
    assert_eq!(single_run(&home).envelope, "Fa@x.test\0Tbob@ref.test\0\0");
}

#[tokio::test]
async fn connection_hook_failure_replaces_greeting_and_session_continues() {
    let home = TestHome::new();
    home.smtpplugins("[c]\nplugins/missing\n");
    let mut s = home.session(LOCAL).await;
    s.greeting()
        .await
        .all(&["451 qmail-spp failure: plugins/missing: can't execute (#4.3.0)"]);
    s.cmd("HELO c.test").await.all(&["250 mx.ref.test"]);
}

#[tokio::test]
async fn connection_hook_p_lines_precede_the_greeting() {
    let home = TestHome::new();
    home.smtpplugins(&format!(
        "[c]\n{}\n",
        printing(&home, "c", "P220-hello\\nP220-there\\nN\\n")
    ));
    let mut s = home.session(LOCAL).await;
    s.greeting()
        .await
        .all(&["220-hello", "220-there", "220 mx.ref.test ESMTP"]);
}

#[tokio::test]
async fn connection_hook_r_sends_text_and_closes() {
    let home = TestHome::new();
    home.smtpplugins(&format!(
        "[c]\n{}\n",
        printing(&home, "c", "R554 no service for you\\n")
    ));
    let mut s = home.session(LOCAL).await;
    assert_eq!(s.line().await, "554 no service for you");
    assert_eq!(s.closed().await, 0);
}

#[tokio::test]
async fn connection_hook_d_closes_without_output() {
    let home = TestHome::new();
    home.smtpplugins(&format!("[c]\n{}\n", printing(&home, "c", "D\\n")));
    let mut s = home.session(LOCAL).await;
    assert_eq!(s.closed().await, 0);
}

#[tokio::test]
async fn connection_hook_sees_no_smtp_variables() {
    let home = TestHome::new();
    home.smtpplugins(&format!("[c]\n{}\n", dumper(&home, "conn", "")));
    let _s = start(&home).await;
    let d = &dumps(&home, "conn")[0];
    let smtp: Vec<&String> = d.keys().filter(|k| k.starts_with("SMTP")).collect();
    assert!(smtp.is_empty(), "{smtp:?}");
    assert_eq!(var(d, "TCPREMOTEIP"), Some("127.0.0.1"));
}

#[tokio::test]
async fn connection_hook_queued_errors_and_headers_apply_to_the_first_transaction() {
    let home = qq_home();
    home.smtpplugins(&format!(
        "[c]\n{}\n",
        printing(&home, "c", "LM451 not yet\\nHX-Conn: yes\\n")
    ));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.all(&["451 not yet"]);
    s.cmd("MAIL FROM:<a@x.test>").await.all(&["451 not yet"]);
    s.cmd("RSET").await.all(&["250 flushed"]);
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    // RSET dropped the header as well.
    assert_eq!(single_run(&home).message, format!("{RECEIVED}{STORED}"));

    let home = qq_home();
    home.smtpplugins(&format!(
        "[c]\n{}\n",
        printing(&home, "c", "HX-Conn: yes\\n")
    ));
    let mut s = start(&home).await;
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    assert_eq!(
        single_run(&home).message,
        format!("{RECEIVED}X-Conn: yes\n{STORED}")
    );
}

#[tokio::test]
async fn helo_hook_runs_for_helo_and_ehlo_before_the_reply() {
    let home = TestHome::new();
    home.smtpplugins(&format!("[h]\n{}\n", counted(&home, "h", "Phook\\n")));
    let mut s = start(&home).await;
    s.cmd("HELO c.test").await.all(&["hook", "250 mx.ref.test"]);
    s.cmd("EHLO c.test").await.all(&[
        "hook",
        "250-mx.ref.test",
        "250-PIPELINING",
        "250-8BITMIME",
        "250-SMTPUTF8",
        "250 CHUNKING",
    ]);
    assert_eq!(runs_of(&home, "h"), 2);
}

#[tokio::test]
async fn smtpheloshost_is_the_raw_argument_and_keeps_a_refused_value() {
    let home = TestHome::new();
    let p = home.plugin(
        "h",
        "#!/bin/sh\ncase \"$SMTPHELOHOST\" in bad*) echo 'E550 bad helo';; esac\nexit 0\n",
    );
    home.smtpplugins(&format!("[h]\n{p}\n[m]\n{}\n", dumper(&home, "mail", "")));
    let mut s = start(&home).await;
    s.cmd("HELO good.test").await.all(&["250 mx.ref.test"]);
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("EHLO   bad  name  ").await.all(&["550 bad helo"]);
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    let d = dumps(&home, "mail");
    assert_eq!(var(&d[0], "SMTPHELOHOST"), Some("good.test"));
    assert_eq!(var(&d[1], "SMTPHELOHOST"), Some("bad  name  "));
}

#[tokio::test]
async fn refused_helo_is_not_recorded_and_keeps_the_transaction() {
    let home = qq_home();
    let p = home.plugin(
        "h",
        "#!/bin/sh\ncase \"$SMTPHELOHOST\" in bad*) echo 'E550 bad helo';; esac\nexit 0\n",
    );
    home.smtpplugins(&format!("[h]\n{p}\n"));
    let mut s = start(&home).await;
    s.cmd("HELO good.test").await.all(&["250 mx.ref.test"]);
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    s.cmd("HELO bad.test").await.all(&["550 bad helo"]);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    body_ok(&mut s, BODY).await;
    let run = single_run(&home);
    assert!(
        run.message
            .starts_with("Received: from unknown (HELO good.test) (127.0.0.1)\n"),
        "{}",
        run.message
    );
}

#[tokio::test]
async fn mail_hook_sees_the_parsed_address_in_smtpmailfrom() {
    let home = TestHome::new();
    home.smtpplugins(&format!("[m]\n{}\n", dumper(&home, "mail", "")));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<@route.test:\"a b\"@x.test> SIZE=10")
        .await
        .code(250);
    s.cmd("MAIL").await.code(250);
    let d = dumps(&home, "mail");
    assert_eq!(var(&d[0], "SMTPMAILFROM"), Some("a b@x.test"));
    assert_eq!(var(&d[1], "SMTPMAILFROM"), Some(""));
}

#[tokio::test]
async fn mail_refused_by_plugin_keeps_the_previous_transaction() {
    let home = qq_home();
    let p = home.plugin(
        "m",
        "#!/bin/sh\ncase \"$SMTPMAILFROM\" in\n  refuse-e*) echo 'E550 refused';;\n  refuse-crash*) kill -9 $$;;\nesac\nexit 0\n",
    );
    home.smtpplugins(&format!("[m]\n{p}\n"));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
    s.cmd("MAIL FROM:<refuse-e@x.test>")
        .await
        .all(&["550 refused"]);
    s.cmd("MAIL FROM:<refuse-crash@x.test>")
        .await
        .all(&["451 qmail-spp failure: plugins/m: child crashed (#4.3.0)"]);
    s.cmd("RCPT TO:<carol@ref.test>").await.all(&["250 ok"]);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    body_ok(&mut s, BODY).await;
    assert_eq!(
        single_run(&home).envelope,
        "Fa@x.test\0Tbob@ref.test\0Tcarol@ref.test\0\0"
    );
}

#[tokio::test]
async fn queued_lm_error_is_sent_without_running_the_mail_plugins() {
    let home = TestHome::new();
    home.smtpplugins(&format!(
        "[m]\n{}\n[r]\n{}\n",
        counted(&home, "m", ""),
        printing(&home, "r", "LM451 later\\n")
    ));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
    s.cmd("MAIL FROM:<b@x.test>").await.all(&["451 later"]);
    s.cmd("MAIL FROM:<c@x.test>").await.all(&["451 later"]);
    assert_eq!(runs_of(&home, "m"), 1);
    // The first transaction is still open.
    s.cmd("RCPT TO:<carol@ref.test>").await.all(&["250 ok"]);
}

#[tokio::test]
async fn mail_refused_by_a_queued_lm_error_leaves_the_counters_untouched() {
    let home = TestHome::new();
    let p = home.plugin(
        "r",
        "#!/bin/sh\n{ env; echo --; } >> env-rcpt\n[ \"$SMTPRCPTTO\" = bob@ref.test ] && echo 'LM451 later'\nexit 0\n",
    );
    home.smtpplugins(&format!("[r]\n{p}\n"));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
    s.cmd("MAIL FROM:<b@x.test>").await.all(&["451 later"]);
    s.cmd("RCPT TO:<carol@ref.test>").await.all(&["250 ok"]);
    let d = dumps(&home, "rcpt");
    assert_eq!(counts(&d[0]), "0/1");
    assert_eq!(counts(&d[1]), "1/2");
}

#[tokio::test]
async fn mail_resets_the_rcpt_counters() {
    let home = TestHome::new();
    home.smtpplugins(&format!("[r]\n{}\n", dumper(&home, "rcpt", "")));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    s.cmd("RCPT TO:<carol@ref.test>").await.code(250);
    s.cmd("MAIL FROM:<b@x.test>").await.code(250);
    s.cmd("RCPT TO:<dave@ref.test>").await.code(250);
    let d = dumps(&home, "rcpt");
    let got: Vec<_> = d.iter().map(counts).collect();
    assert_eq!(got, ["0/1", "1/2", "0/1"]);
}

#[tokio::test]
async fn rcpt_hook_sees_smtprcptto_and_the_counters() {
    let home = TestHome::new();
    home.smtpplugins(&format!("[r]\n{}\n", dumper(&home, "rcpt", "")));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<@r.test:Bob@Ref.Test> NOTIFY=NEVER")
        .await
        .code(250);
    s.cmd("RCPT TO:<carol@ref.test>").await.code(250);
    let d = dumps(&home, "rcpt");
    assert_eq!(var(&d[0], "SMTPRCPTTO"), Some("Bob@Ref.Test"));
    assert_eq!(counts(&d[0]), "0/1");
    assert_eq!(var(&d[1], "SMTPRCPTTO"), Some("carol@ref.test"));
    assert_eq!(counts(&d[1]), "1/2");
    assert_eq!(var(&d[1], "SMTPMAILFROM"), Some("a@x.test"));
}

#[tokio::test]
async fn smtprcpthostsok_reflects_rcpthosts_or_relayclient() {
    let home = TestHome::new();
    home.smtpplugins(&format!("[r]\n{}\n", dumper(&home, "rcpt", "")));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    s.cmd("RCPT TO:<bob@else.test>").await.all(&[NOT_RCPTHOST]);
    s.cmd("RCPT TO:<postmaster>").await.code(250);
    let env = local_and(&[("RELAYCLIENT", "")]);
    let mut s = start_with(&home, &env).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@else.test>").await.code(250);
    let got: Vec<_> = dumps(&home, "rcpt")
        .iter()
        .map(|d| var(d, "SMTPRCPTHOSTSOK").map(str::to_string))
        .collect();
    let want: Vec<_> = ["1", "0", "1", "1"]
        .iter()
        .map(|v| Some(v.to_string()))
        .collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn rcpt_refused_by_a_plugin_or_rcpthosts_counts_in_all_not_in_count() {
    let home = TestHome::new();
    let p = home.plugin(
        "r",
        "#!/bin/sh\n{ env; echo --; } >> env-rcpt\ncase \"$SMTPRCPTTO\" in no*) echo 'E550 no';; esac\nexit 0\n",
    );
    home.smtpplugins(&format!("[r]\n{p}\n"));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<a@ref.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<no@ref.test>").await.all(&["550 no"]);
    s.cmd("RCPT TO:<x@else.test>").await.all(&[NOT_RCPTHOST]);
    s.cmd("RCPT TO:<b@ref.test>").await.all(&["250 ok"]);
    let got: Vec<_> = dumps(&home, "rcpt").iter().map(counts).collect();
    assert_eq!(got, ["0/1", "1/2", "1/3", "1/4"]);
}

#[tokio::test]
async fn rcpts_refused_before_the_hook_do_not_count() {
    let home = TestHome::new();
    home.smtpplugins(&format!("[r]\n{}\n", dumper(&home, "rcpt", "")));
    let mut s = start(&home).await;
    s.cmd("RCPT TO:<a@ref.test>").await.all(&[MAIL_FIRST]);
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<a@ref.test>").await.all(&["250 ok"]);
    s.cmd(&format!("RCPT TO:<{}>", "a".repeat(900)))
        .await
        .all(&[SYNTAX]);
    s.cmd("RCPT TO:<b@ref.test>").await.all(&["250 ok"]);
    let got: Vec<_> = dumps(&home, "rcpt").iter().map(counts).collect();
    assert_eq!(got, ["0/1", "1/2"]);
}

#[tokio::test]
async fn relayclient_suffix_is_appended_after_the_rcpt_hook() {
    let home = qq_home();
    home.smtpplugins(&format!("[r]\n{}\n", dumper(&home, "rcpt", "")));
    let env = local_and(&[("RELAYCLIENT", ".relay")]);
    let mut s = start_with(&home, &env).await;
    deliver(&mut s, "a@x.test", &["bob@else.test"]).await;
    let d = &dumps(&home, "rcpt")[0];
    assert_eq!(var(d, "SMTPRCPTTO"), Some("bob@else.test"));
    assert_eq!(var(d, "SMTPRCPTHOSTSOK"), Some("1"));
    assert_eq!(
        single_run(&home).envelope,
        "Fa@x.test\0Tbob@else.test.relay\0\0"
    );
}

#[tokio::test]
async fn smtprcptcount_seen_by_data_hook_lags_by_last_recipient() {
    let home = qq_home();
    home.smtpplugins(&format!("[d]\n{}\n", dumper(&home, "data", "")));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    s.cmd("RCPT TO:<x@else.test>").await.all(&[NOT_RCPTHOST]);
    s.cmd("RCPT TO:<carol@ref.test>").await.code(250);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    body_ok(&mut s, BODY).await;
    let d = &dumps(&home, "data")[0];
    assert_eq!(counts(d), "1/3");
    assert_eq!(var(d, "SMTPRCPTTO"), Some("carol@ref.test"));
    assert_eq!(var(d, "SMTPMAILFROM"), Some("a@x.test"));
    // The queue sees the same values.
    assert_eq!(counts(&single_run(&home).env), "1/3");
}

#[tokio::test]
async fn data_hook_refusal_keeps_the_transaction_for_a_retry() {
    let home = qq_home();
    let p = home.plugin(
        "grey",
        "#!/bin/sh\nif [ -f seen ]; then exit 0; fi\ntouch seen\necho 'E451 greylisted, try again'\n",
    );
    home.smtpplugins(&format!("[d]\n{p}\n"));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    s.cmd("DATA").await.all(&["451 greylisted, try again"]);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    body_ok(&mut s, BODY).await;
    assert_eq!(single_run(&home).envelope, "Fa@x.test\0Tbob@ref.test\0\0");
}

#[tokio::test]
async fn data_hook_runs_after_the_503_checks_and_its_p_lines_precede_354() {
    let home = qq_home();
    home.smtpplugins(&format!("[d]\n{}\n", counted(&home, "d", "P354-note\\n")));
    let mut s = start(&home).await;
    s.cmd("DATA").await.all(&[MAIL_FIRST]);
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("DATA").await.all(&[RCPT_FIRST]);
    assert_eq!(runs_of(&home, "d"), 0);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    s.cmd("DATA").await.all(&["354-note", GO_AHEAD]);
    body_ok(&mut s, BODY).await;
}

#[tokio::test]
async fn queued_ld_error_refuses_data_without_running_the_data_plugins() {
    let home = qq_home();
    let r = home.plugin(
        "r",
        "#!/bin/sh\n[ \"$SMTPRCPTTO\" = bob@ref.test ] && echo 'LD554 no data for you'\nexit 0\n",
    );
    home.smtpplugins(&format!("[r]\n{r}\n[d]\n{}\n", counted(&home, "d", "")));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
    s.cmd("DATA").await.all(&["554 no data for you"]);
    s.cmd("DATA").await.all(&["554 no data for you"]);
    assert_eq!(runs_of(&home, "d"), 0);
    s.cmd("RSET").await.all(&["250 flushed"]);
    deliver(&mut s, "a@x.test", &["carol@ref.test"]).await;
    assert_eq!(runs_of(&home, "d"), 1);
}

// ---------------------------------------------------------------------------
// §8 Lifecycles

#[tokio::test]
async fn queued_lr_error_repeats_until_rset() {
    let home = TestHome::new();
    let m = home.plugin(
        "m",
        "#!/bin/sh\n[ \"$SMTPMAILFROM\" = a@x.test ] && echo 'LR550 no rcpt'\nexit 0\n",
    );
    home.smtpplugins(&format!("[m]\n{m}\n[r]\n{}\n", counted(&home, "r", "")));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["550 no rcpt"]);
    s.cmd("RCPT TO:<carol@ref.test>")
        .await
        .all(&["550 no rcpt"]);
    assert_eq!(runs_of(&home, "r"), 0, "the rcpt plugins must not run");
    // Neither MAIL nor HELO clears it.
    s.cmd("MAIL FROM:<b@x.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["550 no rcpt"]);
    s.cmd("HELO c.test").await.all(&["250 mx.ref.test"]);
    s.cmd("MAIL FROM:<b@x.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["550 no rcpt"]);
    s.cmd("RSET").await.all(&["250 flushed"]);
    s.cmd("MAIL FROM:<b@x.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
    assert_eq!(runs_of(&home, "r"), 1);
}

#[tokio::test]
async fn queued_errors_are_cleared_by_a_data_that_reaches_354() {
    let home = qq_home();
    let r = home.plugin(
        "r",
        "#!/bin/sh\n[ \"$SMTPRCPTTO\" = bob@ref.test ] && echo 'LM451 no more mail'\nexit 0\n",
    );
    home.smtpplugins(&format!("[r]\n{r}\n"));
    let mut s = start(&home).await;
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    s.cmd("MAIL FROM:<b@x.test>").await.all(&["250 ok"]);
    // Without the DATA the queued text would be reported.
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
    s.cmd("MAIL FROM:<c@x.test>")
        .await
        .all(&["451 no more mail"]);
}

#[tokio::test]
async fn h_headers_survive_new_mail_and_are_dropped_by_rset() {
    let home = qq_home();
    let m = home.plugin("m", "#!/bin/sh\necho \"HX-Mail: $SMTPMAILFROM\"\n");
    home.smtpplugins(&format!("[m]\n{m}\n"));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("MAIL FROM:<b@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    body_ok(&mut s, BODY).await;
    s.cmd("MAIL FROM:<c@x.test>").await.code(250);
    s.cmd("RSET").await.all(&["250 flushed"]);
    s.cmd("MAIL FROM:<d@x.test>").await.code(250);
    s.cmd("RCPT TO:<bob@ref.test>").await.code(250);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    body_ok(&mut s, BODY).await;
    let runs = queue_runs(&home);
    assert_eq!(
        runs[0].message,
        format!("{RECEIVED}X-Mail: a@x.test\nX-Mail: b@x.test\n{STORED}")
    );
    assert_eq!(
        runs[1].message,
        format!("{RECEIVED}X-Mail: d@x.test\n{STORED}")
    );
}

#[tokio::test]
async fn h_headers_survive_helo_and_are_cleared_once_written_after_354() {
    let home = qq_home();
    let h = home.plugin("h", "#!/bin/sh\necho \"HX-Helo: $SMTPHELOHOST\"\n");
    home.smtpplugins(&format!("[h]\n{h}\n"));
    let mut s = start(&home).await;
    s.cmd("HELO one.test").await.code(250);
    s.cmd("HELO two.test").await.code(250);
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    let runs = queue_runs(&home);
    let received =
        "Received: from unknown (HELO two.test) (127.0.0.1)\n  by 127.0.0.1 with SMTP; DATE\n";
    assert_eq!(
        runs[0].message,
        format!("{received}X-Helo: one.test\nX-Helo: two.test\n{STORED}")
    );
    assert_eq!(runs[1].message, format!("{received}{STORED}"));
}

#[tokio::test]
async fn environment_changes_survive_rset_and_transactions() {
    let home = qq_home();
    let m = home.plugin(
        "m",
        "#!/bin/sh\n[ \"$SMTPMAILFROM\" = a@x.test ] && echo 'SSEEN_A=yes'\nexit 0\n",
    );
    home.smtpplugins(&format!("[m]\n{m}\n"));
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    s.cmd("RSET").await.all(&["250 flushed"]);
    deliver(&mut s, "b@x.test", &["bob@ref.test"]).await;
    deliver(&mut s, "c@x.test", &["bob@ref.test"]).await;
    for run in queue_runs(&home) {
        assert_eq!(var(&run.env, "SEEN_A"), Some("yes"));
    }
    assert_eq!(queue_runs(&home).len(), 2);
}

// ---------------------------------------------------------------------------
// More rules: timeouts, start-up, child process details

#[tokio::test]
async fn timeoutsmtpd_of_zero_becomes_one_second() {
    let home = TestHome::new();
    home.control("timeoutsmtpd", "0\n");
    let mut s = start(&home).await;
    let started = std::time::Instant::now();
    assert_eq!(s.line().await, "451 timeout (#4.4.2)");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert_eq!(s.closed().await, 1);
}

#[tokio::test]
async fn timeoutsmtpd_does_not_apply_while_a_plugin_runs() {
    let home = TestHome::new();
    home.control("timeoutsmtpd", "1\n");
    let p = home.plugin("slow", "#!/bin/sh\nsleep 1.6\necho Pslow\n");
    home.smtpplugins(&format!("[h]\n{p}\n"));
    let mut s = start(&home).await;
    s.cmd("HELO c.test").await.all(&["slow", "250 mx.ref.test"]);
    s.cmd("NOOP").await.all(&["250 ok"]);
}

#[tokio::test]
async fn write_timeout_ends_the_session_with_exit_1() {
    let home = TestHome::new();
    home.control("timeoutsmtpd", "1\n");
    let mut s = home.session(LOCAL).await;
    // 80 KB of replies that the client never reads.
    s.send("NOOP\r\n".repeat(10_000)).await;
    assert_eq!(s.exit_code().await, 1);
}

#[tokio::test]
async fn mail_refused_by_syntax_or_size_keeps_the_previous_transaction() {
    let home = qq_home();
    home.control("databytes", "1000\n");
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
    s.cmd(&format!("MAIL FROM:<{}>", "a".repeat(900)))
        .await
        .all(&[SYNTAX]);
    s.cmd("MAIL FROM:<b@x.test> SIZE=5000")
        .await
        .all(&[TOO_BIG]);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    body_ok(&mut s, BODY).await;
    assert_eq!(single_run(&home).envelope, "Fa@x.test\0Tbob@ref.test\0\0");
}

#[tokio::test]
async fn failure_reply_names_the_configuration_line_with_its_leading_blanks() {
    let home = TestHome::new();
    home.smtpplugins("[h]\n  plugins/missing\n");
    let mut s = start(&home).await;
    s.cmd("HELO c.test")
        .await
        .all(&["451 qmail-spp failure:   plugins/missing: can't execute (#4.3.0)"]);
}

#[tokio::test]
async fn smtpplugins_is_read_once_per_connection() {
    let home = TestHome::new();
    let refuse = printing(&home, "refuse", "E550 refused\\n");
    let mut s = start(&home).await;
    home.smtpplugins(&format!("[h]\n{refuse}\n"));
    s.cmd("HELO c.test").await.all(&["250 mx.ref.test"]);
    let mut s = start(&home).await;
    s.cmd("HELO c.test").await.all(&["550 refused"]);
}

#[tokio::test]
async fn a_in_the_connection_hook_disables_all_later_hooks() {
    let home = TestHome::new();
    home.smtpplugins(&format!(
        "[c]\n{}\n[h]\n{}\n[m]\n{}\n[r]\n{}\n[d]\n{}\n",
        printing(&home, "a", "A\\n"),
        counted(&home, "h", "E550 h\\n"),
        counted(&home, "m", "E550 m\\n"),
        counted(&home, "r", "E550 r\\n"),
        counted(&home, "d", "E550 d\\n"),
    ));
    let mut s = start(&home).await;
    s.cmd("HELO c.test").await.all(&["250 mx.ref.test"]);
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    let ran: usize = ["h", "m", "r", "d"].iter().map(|n| runs_of(&home, n)).sum();
    assert_eq!(ran, 0);
}

#[tokio::test]
async fn qmailqueue_set_by_the_data_hook_of_the_first_data_is_used() {
    let home = qq_home();
    install_queue_copy(&home, "alt-queue", "qq-alt");
    home.smtpplugins(&format!(
        "[d]\n{}\n",
        printing(&home, "setqq", "SQMAILQUEUE=bin/alt-queue\\n")
    ));
    let mut s = start(&home).await;
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    assert_eq!(entries(&home, "qq-alt"), 1);
    assert!(queue_runs(&home).is_empty());
}

#[tokio::test]
async fn s_without_equals_removes_the_variable() {
    // Deliberate difference (README): qmail leaves a malformed entry without
    // `=` that getenv() cannot see; here the variable is removed, which is
    // what every program observes in both cases.
    let home = TestHome::new();
    home.smtpplugins(&format!(
        "[c]\n{}\n[h]\n{}\n",
        printing(&home, "c", "SBARE=1\\nSBARE\\n"),
        dumper(&home, "helo", ""),
    ));
    let mut s = start(&home).await;
    s.cmd("HELO c.test").await.code(250);
    let text = fs::read_to_string(home.path.join("env-helo")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        !lines.iter().any(|l| l.starts_with("BARE")),
        "BARE is still set: {lines:?}"
    );
}

#[tokio::test]
async fn plugins_and_the_queue_run_with_sigpipe_at_its_default() {
    // Deliberate difference (README): children start with default signal
    // dispositions. The server never closes a plugin's stdout early (DESIGN
    // §3.5), and pipelines inside plugins behave as in any shell.
    let probe = "yes 2>sigpipe-err-$$ | head -n 1 > /dev/null\n\
                 if [ -s sigpipe-err-$$ ]; then r=ignored; else r=default; fi\nrm -f sigpipe-err-$$\n";
    let home = TestHome::new();
    let p = home.plugin("sigpipe", &format!("#!/bin/sh\n{probe}echo \"P$r\"\n"));
    home.smtpplugins(&format!("[h]\n{p}\n"));
    let q = home.write(
        "bin/qmail-queue",
        format!(
            "#!/bin/sh\ncat > /dev/null\ncat <&1 > /dev/null\n{probe}echo $r > queue-sigpipe\n"
        ),
    );
    fs::set_permissions(&q, fs::Permissions::from_mode(0o755)).unwrap();
    let mut s = start(&home).await;
    let r = s.cmd("HELO c.test").await;
    deliver(&mut s, "a@x.test", &["bob@ref.test"]).await;
    let queue = fs::read_to_string(home.path.join("queue-sigpipe")).unwrap();
    assert_eq!(
        (r.lines[0].as_str(), queue.trim()),
        ("default", "default"),
        "SIGPIPE disposition in (plugin, qmail-queue)"
    );
}

#[tokio::test]
async fn output_after_the_verdict_is_drained_not_reported_as_a_crash() {
    // DESIGN §3.5.
    let home = TestHome::new();
    let p = home.plugin(
        "chatty",
        "#!/bin/sh\necho N\ni=0\nwhile [ $i -lt 300 ]; do echo 'P250-chatter chatter chatter chatter'; i=$((i+1)); done\necho done > chatty-done\n",
    );
    home.smtpplugins(&format!("[h]\n{p}\n"));
    let mut s = start(&home).await;
    s.cmd("HELO c.test").await.all(&["250 mx.ref.test"]);
    assert!(
        home.path.join("chatty-done").exists(),
        "the plugin was cut off"
    );
}

#[tokio::test]
async fn hung_plugin_gets_451_timeout_after_the_plugin_deadline() {
    // DESIGN §3.1 (control/plugintimeout).
    let home = TestHome::new();
    home.control("plugintimeout", "1\n");
    let p = home.plugin("hang", "#!/bin/sh\necho Pbefore\nsleep 30\n");
    home.smtpplugins(&format!("[h]\n{p}\n"));
    let mut s = start(&home).await;
    let started = std::time::Instant::now();
    s.cmd("HELO c.test").await.all(&[
        "before",
        "451 qmail-spp failure: plugins/hang: timeout (#4.3.0)",
    ]);
    assert!(started.elapsed() < Duration::from_secs(10));
    s.cmd("NOOP").await.all(&["250 ok"]);
}

#[tokio::test]
async fn numeric_control_files_use_their_leading_digits() {
    let home = TestHome::new();
    home.control("databytes", "6 bytes, not more\n");
    let mut s = start(&home).await;
    s.cmd("EHLO c.test").await.all(&[
        "250-mx.ref.test",
        "250-PIPELINING",
        "250-8BITMIME",
        "250-SMTPUTF8",
        "250-CHUNKING",
        "250 SIZE 6",
    ]);
    s.mail("a@x.test", &["bob@ref.test"], "123456\r\n")
        .await
        .all(&[TOO_BIG]);
    // Not starting with a digit: the default (unlimited) is kept.
    home.control("databytes", "six\n");
    let mut s = start(&home).await;
    s.cmd("EHLO c.test").await.all(&[
        "250-mx.ref.test",
        "250-PIPELINING",
        "250-8BITMIME",
        "250-SMTPUTF8",
        "250 CHUNKING",
    ]);
}

// ---------------------------------------------------------------------------
// Robustness rules (DESIGN §3, §5 and review findings)

#[tokio::test]
async fn dot_stuffed_received_lines_are_not_hops() {
    // qmail counts hops on the raw client bytes: `..Received` is not a hop.
    let home = TestHome::new();
    let mut s = start(&home).await;
    let body = format!("{}\r\nbody\r\n", "..Received: from x\r\n".repeat(100));
    let r = s.mail("a@x.test", &["bob@ref.test"], &body).await;
    assert!(r.last().starts_with("250 ok "), "{:?}", r.lines);
    let stored = strip_received_date(&home.maildir()[0]);
    assert!(stored.contains("\n.Received: from x\n"), "{stored}");
}

#[tokio::test]
async fn unreadable_morercpthosts_cdb_gets_421_not_a_permanent_refusal() {
    let home = TestHome::new();
    let cdb = home.path.join("control/morercpthosts.cdb");
    spp_smtpd::config::cdb::write(&cdb, &[b"other.test"]).unwrap();
    let mut s = start(&home).await;
    // Truncated in place after the configuration was loaded (a corrupt
    // file is refused at load): lookups in the open file fail.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&cdb)
        .unwrap()
        .set_len(0)
        .unwrap();
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    // rcpthosts itself answers without the cdb.
    s.cmd("RCPT TO:<bob@ref.test>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<bob@more.test>").await.all(&[UNREADABLE]);
    assert_eq!(s.closed().await, 1);
}

#[tokio::test]
async fn recipients_are_capped_at_ten_thousand() {
    let home = TestHome::new();
    let mut s = start(&home).await;
    s.cmd("MAIL FROM:<a@x.test>").await.code(250);
    let batch: String = (0..10_000)
        .map(|i| format!("RCPT TO:<u{i}@ref.test>\r\n"))
        .collect();
    s.send(batch).await;
    for _ in 0..10_000 {
        assert_eq!(s.line().await, "250 ok");
    }
    s.cmd("RCPT TO:<one-more@ref.test>")
        .await
        .all(&["452 too many recipients (#4.5.3)"]);
    s.cmd("DATA").await.all(&[GO_AHEAD]);
    let r = s.body("x\r\n").await;
    assert!(r.last().starts_with("250 ok "), "{:?}", r.lines);
}

#[tokio::test]
async fn pending_header_block_is_bounded() {
    // A [helo] plugin adds a 1 KiB header; a client repeating EHLO cannot
    // grow the block beyond 64 KiB.
    let home = TestHome::new();
    let long = "x".repeat(1000);
    home.smtpplugins(&format!(
        "[h]\n{}\n",
        printing(&home, "hdr", &format!("HX-Long: {long}\\n"))
    ));
    let mut s = start(&home).await;
    for _ in 0..100 {
        s.cmd("HELO c.test").await.code(250);
    }
    let r = s.mail("a@x.test", &["bob@ref.test"], "body\r\n").await;
    assert!(r.last().starts_with("250 ok "), "{:?}", r.lines);
    let stored = String::from_utf8(home.maildir()[0].clone()).unwrap();
    let n = stored.matches("X-Long: ").count();
    assert!(n > 0 && n < 66, "{n} headers kept");
}

#[tokio::test]
async fn an_idle_session_task_stays_small() {
    // The daemon holds one such future per connection: the plugin run and
    // the DATA/queue state are boxed so they only cost while in use
    // (bench/idle-connections measures the whole connection).
    let home = TestHome::new();
    let (_client, server) = tokio::io::duplex(64);
    let session = spp_smtpd::session::Session::new(
        Box::new(server),
        home.config(),
        Default::default(),
        "x".into(),
    );
    eprintln!("session: {} bytes", std::mem::size_of_val(&session));
    let future = session.run();
    eprintln!("session future: {} bytes", std::mem::size_of_val(&future));
    assert!(
        std::mem::size_of_val(&future) <= 2048,
        "session future is {} bytes",
        std::mem::size_of_val(&future)
    );
}
