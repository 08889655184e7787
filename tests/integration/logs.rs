//! Logs that explain refusals, through the real binary: one `refused`
//! line per refused command (with the deciding plugin when there is one),
//! per-recipient outcomes on the `transaction` line, no credentials, and
//! the time stamp that `--log-format` / `SPP_LOG_FORMAT` choose.

use crate::util::process::{bin, run_with_input, stdio};
use crate::util::TestHome;
use std::process::Command;
use std::time::Duration;

const LOCAL: &[(&str, &str)] = &[("TCPREMOTEIP", "127.0.0.9"), ("TCPLOCALIP", "127.0.0.1")];

/// The log lines whose message is `what`.
fn lines_of<'a>(stderr: &'a str, what: &str) -> Vec<&'a str> {
    stderr
        .lines()
        .filter(|l| l.contains(&format!(" {what} ")))
        .collect()
}

#[test]
fn every_refused_command_is_logged_once_with_what_decided_it() {
    let home = TestHome::new();
    home.smtpplugins(
        "[rcpt]\n:case \"$SMTPRCPTTO\" in eve@*) echo 'E550 no eve here (#5.1.1)';; esac\n\
         #spp: timeout=200ms\n:case \"$SMTPRCPTTO\" in slow@*) sleep 5;; esac\n",
    );
    let out = stdio(
        &home,
        LOCAL,
        b"HELO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@ref.test>\r\nRCPT TO:<eve@ref.test>\r\n\
          RCPT TO:<x@elsewhere.test>\r\nRCPT TO:<slow@ref.test>\r\nDATA\r\nSubject: l\r\n\r\n.\r\n\
          AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nFROB x\r\nQUIT\r\n",
    );
    let refused = lines_of(&out.stderr, "refused");
    assert_eq!(refused.len(), 5, "{}", out.stderr);
    assert!(refused[0].contains(
        r#"client="127.0.0.9" command="RCPT" arg="TO:<eve@ref.test>" hook="rcpt" plugin=":case \"$SMTPRCPTTO\" in eve@*) echo \'E550 no eve here (#5.1.1)\';; esac" verdict="refuse" reply="550 no eve here (#5.1.1)""#
    ), "{}", refused[0]);
    assert!(refused[1].contains(
        r#"command="RCPT" arg="TO:<x@elsewhere.test>" reply="553 sorry, that domain isn\'t in my list of allowed rcpthosts (#5.7.1)""#
    ), "{}", refused[1]);
    assert!(
        refused[2].contains(r#"verdict="fail(timeout)""#),
        "{}",
        refused[2]
    );
    assert!(
        refused[2].contains(r#"arg="TO:<slow@ref.test>""#),
        "{}",
        refused[2]
    );
    // AUTH's argument is never logged; an unknown verb is shown whole.
    assert!(
        refused[3].contains(r#"command="AUTH" arg="""#),
        "{}",
        refused[3]
    );
    assert!(!out.stderr.contains("AGFsaWNl"), "{}", out.stderr);
    assert!(
        refused[4].contains(r#"command="unknown" arg="FROB x""#),
        "{}",
        refused[4]
    );
    for l in &refused {
        assert!(l.contains(" session="), "{l}");
    }
    let tx = lines_of(&out.stderr, "transaction");
    assert_eq!(tx.len(), 1, "{}", out.stderr);
    assert!(
        tx[0].contains(
            r#"outcomes="bob@ref.test:250 eve@ref.test:550 x@elsewhere.test:553 slow@ref.test:451""#
        ),
        "{}",
        tx[0]
    );
}

#[test]
fn log_lines_carry_an_rfc3339_time_unless_bare() {
    let home = TestHome::new();
    let input = b"HELO x\r\nFROB\r\nQUIT\r\n";
    let stamp = |line: &str| {
        let b = line.as_bytes();
        b.len() > 25
            && b[4] == b'-'
            && b[10] == b'T'
            && b[19] == b'.'
            && b[23] == b'Z'
            && line[..4].chars().all(|c| c.is_ascii_digit())
    };
    let out = stdio(&home, LOCAL, input);
    let line = lines_of(&out.stderr, "refused")[0];
    assert!(stamp(line), "{line}");
    let out = stdio(&home, &[LOCAL[0], ("SPP_LOG_FORMAT", "bare")], input);
    let line = lines_of(&out.stderr, "refused")[0];
    assert!(line.starts_with(" INFO refused "), "{line}");
    let mut cmd = Command::new(bin());
    cmd.args(["--home"])
        .arg(home.dir())
        .args(["--log-format", "bare", "stdio"])
        .env_clear()
        .env("TCPREMOTEIP", "127.0.0.9");
    let out = run_with_input(cmd, input, Duration::from_secs(30));
    let line = lines_of(&out.stderr, "refused")[0];
    assert!(line.starts_with(" INFO refused "), "{line}");
    let out = stdio(&home, &[LOCAL[0], ("SPP_LOG_FORMAT", "iso")], input);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("invalid value 'iso'"), "{}", out.stderr);
}
