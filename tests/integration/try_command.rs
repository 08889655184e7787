//! `spp-smtpd try`: the real binary runs a synthetic session in memory and
//! prints every plugin run; its exit status says accepted (0), refused (1)
//! or failed (2).

use crate::util::process::{bin, run_with_input, Finished};
use crate::util::TestHome;
use std::process::Command;
use std::time::Duration;

/// `spp-smtpd --home HOME try ARGS` with PATH only and warnings-only logs.
fn trial(home: &TestHome, args: &[&str]) -> Finished {
    let mut cmd = Command::new(bin());
    cmd.arg("--home")
        .arg(home.dir())
        .arg("try")
        .args(args)
        .env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        )
        .env("SPP_LOG", "warn");
    run_with_input(cmd, b"", Duration::from_secs(60))
}

/// `try --hook HOOK --plugin LINE` and `more` options.
fn with_plugin(home: &TestHome, hook: &str, line: &str, more: &[&str]) -> Finished {
    let mut args = vec!["--hook", hook, "--plugin", line];
    args.extend_from_slice(more);
    trial(home, &args)
}

/// Asserts the exit status, showing the output when it is not `code`.
fn exits(out: &Finished, code: i32) {
    assert_eq!(out.code, code, "{}\n{}", out.stdout, out.stderr);
}

/// Asserts that `out` has these lines, in this order (others between).
fn in_order(out: &Finished, lines: &[&str]) {
    let all: Vec<&str> = out.stdout.lines().collect();
    let mut at = 0;
    for want in lines {
        match all[at..].iter().position(|l| l == want) {
            Some(i) => at += i + 1,
            None => panic!(
                "{want:?} missing or out of order in:\n{}\nstderr:\n{}",
                out.stdout, out.stderr
            ),
        }
    }
}

/// Asserts one line of `out` starts with `prefix`.
fn has_line_starting(out: &Finished, prefix: &str) {
    assert!(
        out.stdout.lines().any(|l| l.starts_with(prefix)),
        "no line starts with {prefix:?}:\n{}",
        out.stdout
    );
}

#[test]
fn a_refusing_plugin_shows_its_environment_output_and_reply_and_exits_1() {
    let home = TestHome::new();
    let out = with_plugin(
        &home,
        "rcpt",
        ":echo E550 no",
        &["--rcpt", "a@example.test"],
    );
    exits(&out, 1);
    in_order(
        &out,
        &[
            "reply: 220 mx.ref.test ESMTP",
            "client: EHLO client.example",
            "client: MAIL FROM:<>",
            "reply: 250 ok",
            "client: RCPT TO:<a@example.test>",
            "  plugin [rcpt] :echo E550 no",
            "    env: PROTO=TCP",
            "    env: SMTPRCPTTO=a@example.test",
            "    env: TCPREMOTEIP=127.0.0.1",
            "    printed: E550 no",
            "reply: 550 no",
            "client: QUIT",
            "reply: 221 mx.ref.test",
            "result: refused: RCPT TO:<a@example.test> got 550 no",
        ],
    );
    has_line_starting(&out, "    exit: 0 in ");
    assert_eq!(
        out.stdout.matches("  plugin ").count(),
        1,
        "only the one plugin runs: {}",
        out.stdout
    );
}

#[test]
fn an_accepting_plugin_exits_0() {
    let home = TestHome::new();
    let out = with_plugin(
        &home,
        "rcpt",
        ":echo N",
        &["--from", "s@example.org", "--rcpt", "a@ref.test"],
    );
    exits(&out, 0);
    in_order(
        &out,
        &[
            "client: MAIL FROM:<s@example.org>",
            "client: RCPT TO:<a@ref.test>",
            "    env: SMTPMAILFROM=s@example.org",
            "    printed: N",
            "reply: 250 ok",
            "result: accepted",
        ],
    );
}

#[test]
fn a_crashing_plugin_exits_2_with_the_reason_whatever_its_policy() {
    let home = TestHome::new();
    let crash = |more: &[&str]| {
        let mut args = vec!["--rcpt", "a@ref.test"];
        args.extend_from_slice(more);
        with_plugin(&home, "rcpt", ":kill -SEGV $$", &args)
    };
    let out = crash(&[]);
    exits(&out, 2);
    in_order(
        &out,
        &[
            "  plugin [rcpt] :kill -SEGV $$",
            "    printed: nothing",
            "    failure: child crashed (on-failure=tempfail)",
            "reply: 451 qmail-spp failure: :kill -SEGV $$: child crashed (#4.3.0)",
            "result: failed: plugin [rcpt] :kill -SEGV $$: child crashed",
        ],
    );
    has_line_starting(&out, "    exit: killed by signal 11 in ");
    // With on-failure=accept the client sees 250, and try still says the
    // plugin failed.
    let out = crash(&["--options", "on-failure=accept"]);
    exits(&out, 2);
    in_order(
        &out,
        &[
            "    failure: child crashed (on-failure=accept)",
            "reply: 250 ok",
            "result: failed: plugin [rcpt] :kill -SEGV $$: child crashed",
        ],
    );
}

#[test]
fn a_plugin_past_its_timeout_option_fails() {
    let home = TestHome::new();
    let out = with_plugin(
        &home,
        "mail",
        ":sleep 5",
        &["--options", "timeout=1s", "--rcpt", "a@ref.test"],
    );
    exits(&out, 2);
    in_order(
        &out,
        &[
            "  plugin [mail] :sleep 5",
            "    failure: timeout (on-failure=tempfail)",
            "reply: 451 qmail-spp failure: :sleep 5: timeout (#4.3.0)",
            "result: failed: plugin [mail] :sleep 5: timeout",
        ],
    );
    has_line_starting(&out, "    exit: killed by signal 9 in ");
}

#[test]
fn a_plugin_file_with_an_observed_plugin_shows_the_verdict_it_would_give() {
    let home = TestHome::new();
    // The home's own file refuses every sender; --plugins replaces it.
    home.smtpplugins("[mail]\n:echo E550 from the home file\n");
    home.write(
        "trial-plugins",
        "[rcpt]\n#spp: mode=observe\n:echo E550 not here\n:echo N\n",
    );
    let out = trial(
        &home,
        &["--plugins", "trial-plugins", "--rcpt", "a@ref.test"],
    );
    exits(&out, 0);
    in_order(
        &out,
        &[
            "client: MAIL FROM:<>",
            "reply: 250 ok",
            "  plugin [rcpt] :echo E550 not here",
            "    printed: E550 not here",
            "    observe: would refuse: 550 not here; nothing of it took effect",
            "  plugin [rcpt] :echo N",
            "reply: 250 ok",
            "result: accepted",
        ],
    );
    // Without --plugins, the home's control/smtpplugins runs.
    let out = trial(&home, &["--rcpt", "a@ref.test"]);
    exits(&out, 1);
    in_order(
        &out,
        &[
            "  plugin [mail] :echo E550 from the home file",
            "reply: 550 from the home file",
            "result: refused: MAIL FROM:<> got 550 from the home file",
        ],
    );
}

#[test]
fn a_body_plugin_reads_the_message() {
    let home = TestHome::new();
    let filter = ":if grep -q '^buy now'; then echo 'E554 spam'; else echo N; fi";
    let spam = home.write("spam.eml", "Subject: offer\n\nbuy now\n");
    let ham = home.write("ham.eml", "Subject: hello\r\n\r\n.a line with a dot\r\n");
    let run = |message: &std::path::Path| {
        let message = message.to_str().unwrap();
        with_plugin(
            &home,
            "body",
            filter,
            &["--rcpt", "a@ref.test", "--message", message],
        )
    };
    let out = run(&spam);
    exits(&out, 1);
    in_order(
        &out,
        &[
            "client: DATA",
            "reply: 354 go ahead",
            "client: (the message: 3 lines, 27 bytes, then \".\")",
            &format!("  plugin [body] {filter}"),
        ],
    );
    in_order(
        &out,
        &[
            "    printed: E554 spam",
            "reply: 554 spam",
            "result: refused: (the message: 3 lines, 27 bytes, then \".\") got 554 spam",
        ],
    );
    assert!(!out.stdout.contains("delivered:"), "{}", out.stdout);
    let out = run(&ham);
    exits(&out, 0);
    in_order(
        &out,
        &[
            "    printed: N",
            "result: accepted",
            "delivered: into a temporary Maildir, now removed (--maildir DIR keeps it)",
        ],
    );
    has_line_starting(&out, "    env: SMTPMESSAGESIZE=");
}

#[test]
fn maildir_keeps_the_message_with_the_plugins_headers() {
    let home = TestHome::new();
    let message = home.write("m.eml", "Subject: kept\n\n.starts with a dot\n");
    let out_dir = home.dir().join("kept");
    let out = with_plugin(
        &home,
        "data",
        ":echo HX-Tried: yes",
        &[
            "--rcpt",
            "a@ref.test",
            "--message",
            message.to_str().unwrap(),
            "--maildir",
            out_dir.to_str().unwrap(),
        ],
    );
    exits(&out, 0);
    in_order(
        &out,
        &[
            "client: DATA",
            "    printed: HX-Tried: yes",
            "reply: 354 go ahead",
        ],
    );
    let delivered: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("delivered: "))
        .collect();
    assert_eq!(delivered.len(), 1, "{}", out.stdout);
    assert!(delivered[0].starts_with(out_dir.join("new").to_str().unwrap()));
    let stored = std::fs::read_to_string(delivered[0]).unwrap();
    assert!(stored.contains("X-Tried: yes\n"), "{stored}");
    assert!(
        stored.ends_with("Subject: kept\n\n.starts with a dot\n"),
        "dot-stuffing undone: {stored}"
    );
}

#[test]
fn env_and_ip_options_reach_the_plugin() {
    let home = TestHome::new();
    let out = with_plugin(
        &home,
        "helo",
        ":echo \"E451 $GREETING, $SMTPHELOHOST from $TCPREMOTEIP\"",
        &[
            "--ip",
            "192.0.2.7",
            "--helo",
            "client.example.org",
            "--env",
            "GREETING=hello there",
            "--env",
            "RELAYCLIENT=",
        ],
    );
    exits(&out, 1);
    in_order(
        &out,
        &[
            "client: EHLO client.example.org",
            "    env: GREETING=hello there",
            "    env: RELAYCLIENT=",
            "    env: TCPREMOTEIP=192.0.2.7",
            "reply: 451 hello there, client.example.org from 192.0.2.7",
            "result: refused: EHLO client.example.org got 451 hello there, client.example.org from 192.0.2.7",
        ],
    );
    assert!(
        !out.stdout.contains("client: MAIL"),
        "no recipient, no MAIL: {}",
        out.stdout
    );
}

#[test]
fn a_plugin_that_drops_the_connection_ends_the_script() {
    let home = TestHome::new();
    let out = with_plugin(&home, "mail", ":echo D", &["--rcpt", "a@ref.test"]);
    exits(&out, 1);
    in_order(
        &out,
        &[
            "client: MAIL FROM:<>",
            "    printed: D",
            "result: refused: MAIL FROM:<> got no reply",
        ],
    );
    assert!(!out.stdout.contains("client: RCPT"), "{}", out.stdout);
    assert!(!out.stdout.contains("client: QUIT"), "{}", out.stdout);
}

#[test]
fn nothing_reaches_the_homes_queue_or_the_network() {
    let home = TestHome::new();
    home.install_qmail_queue();
    let downstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    downstream.set_nonblocking(true).unwrap();
    let port = downstream.local_addr().unwrap().port();
    home.control("queue", format!("smtp 127.0.0.1:{port} verify-rcpt=yes\n"));
    let message = home.write("m.eml", "Subject: x\n\nbody\n");
    let args = [
        "--rcpt",
        "a@ref.test",
        "--message",
        message.to_str().unwrap(),
    ];
    let out = trial(&home, &args);
    exits(&out, 0);
    has_line_starting(&out, "reply: 250 ok ");
    has_line_starting(&out, "delivered: into a temporary Maildir");
    assert!(
        matches!(downstream.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the downstream was contacted"
    );
    // Without control/queue the session would run bin/qmail-queue.
    home.remove_control("queue");
    let out = trial(&home, &args);
    exits(&out, 0);
    assert!(home.queued().is_empty(), "qmail-queue ran");
    assert!(!home.dir().join("Maildir").exists());
    assert!(!home.dir().join("spool").exists());
}

#[test]
fn a_persistent_plugin_answers_through_its_pool() {
    let home = TestHome::new();
    home.write("allowed", "a@ref.test\n");
    // A copy, so that Python's byte-code cache is not written in the tree.
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins-examples");
    home.write(
        "plugins/spp.py",
        std::fs::read(examples.join("spp.py")).unwrap(),
    );
    let script = std::fs::read_to_string(examples.join("rcpt-allowlist.py")).unwrap();
    let plugin = format!("{} allowed", home.plugin("rcpt-allowlist.py", &script));
    let out = with_plugin(
        &home,
        "rcpt",
        &plugin,
        &[
            "--options",
            "persistent workers=1",
            "--rcpt",
            "a@ref.test",
            "--rcpt",
            "b@ref.test",
        ],
    );
    exits(&out, 1);
    in_order(
        &out,
        &[
            "client: RCPT TO:<a@ref.test>",
            "    printed: N",
            "reply: 250 ok",
            "client: RCPT TO:<b@ref.test>",
            "    printed: E550 sorry, no mailbox here by that name (#5.1.1)",
            "reply: 550 sorry, no mailbox here by that name (#5.1.1)",
            "result: refused: RCPT TO:<b@ref.test> got 550 sorry, no mailbox here by that name (#5.1.1)",
        ],
    );
    has_line_starting(&out, "    exit: none, persistent (answered) in ");
}

#[test]
fn bad_options_exit_2_before_anything_runs() {
    let home = TestHome::new();
    home.write("m.eml", "x\n");
    for (args, says) in [
        (
            &[
                "--hook",
                "rcpt",
                "--plugin",
                ":echo N",
                "--options",
                "colour=blue",
            ][..],
            "unknown option",
        ),
        (&["--plugin", ":echo N"][..], "--hook"),
        (&["--hook", "auth", "--plugin", ":echo N"][..], "AUTH"),
        (&["--message", "m.eml"][..], "--rcpt"),
        (&["--plugins", "no-such-file"][..], "no-such-file"),
        (&["--env", "NOVALUE"][..], "NAME=VALUE"),
    ] {
        let out = trial(&home, args);
        assert_eq!(out.code, 2, "{args:?}: {}\n{}", out.stdout, out.stderr);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
        assert!(!out.stdout.contains("client:"), "{args:?}: {}", out.stdout);
    }
}
