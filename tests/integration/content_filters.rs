//! The content-filter example plugins (`plugins-examples/spamassassin.sh`,
//! `plugins-examples/clamav.sh`) against a real spamd and a real clamd
//! started for the test (`util::mta`).
//!
//! The plugins are run the way the server runs a `[body]` plugin, without a
//! server: the message as a read-only file on stdin, the home as working
//! directory, an environment of `PATH` plus what the hook sets. Every test
//! checks the exact stdout, which is the plugin's whole answer.

use crate::util::mta::{Clamd, Spamd, GTUBE, TEST_VIRUS_NAME, TEST_VIRUS_STRING};
use crate::util::process::{free_port, wait_bounded};
use crate::util::TestHome;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const CLEAN: &str = "Return-Path: <sender@sender.test>\n\
    Received: from client.test (127.0.0.1)\n  by mx.example.test; Mon, 1 Jan 2024 10:00:00 +0000\n\
    From: Sender <sender@sender.test>\n\
    To: Bob <bob@example.test>\n\
    Subject: lunch\n\
    Date: Mon, 1 Jan 2024 10:00:00 +0000\n\
    Message-ID: <lunch-1@sender.test>\n\
    \n\
    Shall we meet at noon?\n";

const VIRUS_FOUND: &str = "E554 message contains a virus: SPP.Test.Virus.UNOFFICIAL (#5.7.0)\n";
const SCANNER_DOWN: &str = "E451 virus scanner unavailable (#4.3.0)\n";
const CLEAN_SCANNED: &str = "HX-Virus-Scanned: clamav\n";

/// The clean message with `text` added to its body.
fn with_body_line(text: &str) -> String {
    format!("{CLEAN}{text}\n")
}

/// What a plugin printed and its exit status.
struct Run {
    stdout: String,
    stderr: String,
    code: i32,
}

fn plugin_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("plugins-examples")
        .join(name)
}

/// Runs `plugins-examples/<plugin> <args>` as a `[body]` hook would: the
/// message in a read-only file on stdin, cwd the home, an environment of
/// `path` plus the session's variables.
fn run_body_plugin(home: &Path, plugin: &str, args: &[&str], message: &str, path: &str) -> Run {
    let file = home.join("spool-message");
    fs::write(&file, message).unwrap();
    let stdin = fs::File::open(&file).unwrap();
    let mut child = Command::new(plugin_path(plugin))
        .args(args)
        .env_clear()
        .env("PATH", path)
        .env("TCPREMOTEIP", "127.0.0.1")
        .env("TCPLOCALIP", "127.0.0.1")
        .env("PROTO", "SMTP")
        .env("SMTPHELOHOST", "client.test")
        .env("SMTPMAILFROM", "sender@sender.test")
        .env("SMTPRCPTTO", "bob@example.test")
        .env("SMTPRCPTS", "bob@example.test\n")
        .env("SMTPMESSAGESIZE", message.len().to_string())
        .current_dir(home)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {plugin}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let ereader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    // The server's default plugin time limit.
    let code = wait_bounded(&mut child, Duration::from_secs(30));
    Run {
        stdout: reader.join().unwrap(),
        stderr: ereader.join().unwrap(),
        code,
    }
}

fn system_path() -> String {
    std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
}

/// Runs a plugin with the normal PATH and checks it exited 0.
fn body_plugin(home: &Path, plugin: &str, args: &[&str], message: &str) -> Run {
    let run = run_body_plugin(home, plugin, args, message, &system_path());
    assert_eq!(run.code, 0, "{plugin} exit status; stderr: {}", run.stderr);
    run
}

fn installed(program: &str) -> bool {
    std::env::split_paths(&system_path()).any(|d| d.join(program).is_file())
}

/// spamd's own verdict on `message`, from `spamc -c`: (score, required).
fn spamc_score(connection: &[&str], message: &str, home: &Path) -> (String, String) {
    let file = home.join("spamc-message");
    fs::write(&file, message).unwrap();
    let out = Command::new("spamc")
        .arg("-c")
        .args(connection)
        .stdin(fs::File::open(&file).unwrap())
        .output()
        .expect("run spamc");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (score, required) = text
        .split_once('/')
        .unwrap_or_else(|| panic!("spamc -c printed {text:?}"));
    (score.to_string(), required.to_string())
}

#[test]
fn spamassassin_plugin_marks_and_refuses_with_a_real_spamd() {
    if !installed("spamc") {
        eprintln!("SKIP: spamc is not installed (Debian package spamc)");
        return;
    }
    let home = TestHome::new();
    let Some(spamd) = Spamd::start(home.dir()) else {
        return;
    };
    let port = spamd.port.to_string();
    let conn = ["-d", "127.0.0.1", "-p", port.as_str()];
    let gtube = with_body_line(GTUBE);

    // spamd's own numbers, to compare the plugin's lines with.
    let (clean, required) = spamc_score(&conn, CLEAN, home.dir());
    let (spam, _) = spamc_score(&conn, &gtube, home.dir());
    assert_eq!(required, "5.0", "{}", spamd.log());
    let clean_value: f64 = clean.parse().unwrap();
    let spam_value: f64 = spam.parse().unwrap();
    assert!(clean_value < 5.0, "clean message scored {clean}");
    assert!(spam_value >= 1000.0, "GTUBE scored {spam}");

    let with = |extra: &[&str]| -> Vec<String> {
        extra
            .iter()
            .chain(conn.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let run = |args: Vec<String>, message: &str| -> Run {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        body_plugin(home.dir(), "spamassassin.sh", &args, message)
    };

    // Clean, below the limit: scored, not flagged.
    let r = run(with(&["-s", "10"]), CLEAN);
    assert_eq!(
        r.stdout,
        format!("HX-Spam-Score: {clean}\nHX-Spam-Status: No, score={clean} required=5.0\n"),
        "stderr: {}",
        r.stderr
    );

    // GTUBE at or above the limit: refused after the final dot.
    let r = run(with(&["-s", "10"]), &gtube);
    assert_eq!(
        r.stdout,
        format!("E550 message looks like spam (score {spam}) (#5.7.1)\n")
    );
    let r = run(with(&["-s", &spam]), &gtube);
    assert_eq!(
        r.stdout,
        format!("E550 message looks like spam (score {spam}) (#5.7.1)\n"),
        "a score equal to the limit is refused"
    );

    // Without a limit, or above its score: spam is flagged, never refused.
    let flagged =
        format!("HX-Spam-Score: {spam}\nHX-Spam-Status: Yes, score={spam} required=5.0\nHX-Spam-Flag: YES\n");
    assert_eq!(run(with(&[]), &gtube).stdout, flagged);
    assert_eq!(run(with(&["-s", "5000"]), &gtube).stdout, flagged);
    assert!(run(with(&[]), &gtube).stderr.is_empty());

    // A message over spamc's size limit is not scored ("0/0"): accepted
    // without headers, the reason logged.
    let r = run(with(&["-s", "10", "--max-size=100"]), &gtube);
    assert_eq!(r.stdout, "");
    assert!(r.stderr.contains("output '0/0'"), "{}", r.stderr);
}

#[test]
fn spamassassin_plugin_accepts_when_spamd_is_unreachable() {
    let home = TestHome::new();
    let gtube = with_body_line(GTUBE);

    // A bad limit: nothing refused, the reason logged.
    let r = body_plugin(home.dir(), "spamassassin.sh", &["-s", "ten"], &gtube);
    assert_eq!(r.stdout, "");
    assert!(r.stderr.contains("-s needs a score"), "{}", r.stderr);

    // No spamc at all.
    let r = run_body_plugin(
        home.dir(),
        "spamassassin.sh",
        &["-s", "1"],
        &gtube,
        "/nonexistent",
    );
    assert_eq!((r.stdout.as_str(), r.code), ("", 0));
    assert!(r.stderr.contains("spamc not found"), "{}", r.stderr);

    if !installed("spamc") {
        eprintln!("SKIP: spamc is not installed (Debian package spamc)");
        return;
    }
    // Nothing listens on the port: accepted unscored, even with a limit
    // the message would exceed.
    let port = free_port().to_string();
    let args = [
        "-s",
        "1",
        "-d",
        "127.0.0.1",
        "-p",
        port.as_str(),
        "--connect-retries=1",
    ];
    let started = std::time::Instant::now();
    let r = body_plugin(home.dir(), "spamassassin.sh", &args, &gtube);
    assert_eq!(r.stdout, "", "stderr: {}", r.stderr);
    assert!(
        r.stderr.contains("no score from spamd") && r.stderr.contains("accepted unscored"),
        "{}",
        r.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn clamav_plugin_refuses_the_test_signature_with_a_real_clamd() {
    if !installed("clamdscan") {
        eprintln!("SKIP: clamdscan is not installed (Debian package clamdscan)");
        return;
    }
    let home = TestHome::new();
    let Some(clamd) = Clamd::start(home.dir()) else {
        return;
    };
    assert_eq!(TEST_VIRUS_NAME, "SPP.Test.Virus.UNOFFICIAL");
    let unix = format!("--config-file={}", clamd.config_file.display());
    let tcp = format!("--config-file={}", clamd.tcp_config_file.display());
    let infected = with_body_line(&format!("see {TEST_VIRUS_STRING} here"));
    // The signature only inside a base64 attachment: found after decoding.
    let attachment = format!(
        "From: sender@sender.test\nTo: bob@example.test\nSubject: report\n\
         MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b1\"\n\n\
         --b1\nContent-Type: text/plain\n\nsee the attachment\n\
         --b1\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\
         Content-Disposition: attachment; filename=\"report.bin\"\n\n{}\n--b1--\n",
        base64_lines(format!("header {TEST_VIRUS_STRING} trailer\n").as_bytes())
    );
    assert!(!attachment.contains(TEST_VIRUS_STRING));

    for config in [&unix, &tcp] {
        let r = body_plugin(home.dir(), "clamav.sh", &[config], CLEAN);
        assert_eq!(r.stdout, CLEAN_SCANNED, "{config}: {}", r.stderr);
        let r = body_plugin(home.dir(), "clamav.sh", &[config], &infected);
        assert_eq!(r.stdout, VIRUS_FOUND, "{config}: {}", r.stderr);
        let r = body_plugin(home.dir(), "clamav.sh", &[config], &attachment);
        assert_eq!(r.stdout, VIRUS_FOUND, "{config}: {}", r.stderr);
    }
    // --accept-on-error changes nothing while clamd answers.
    let r = body_plugin(
        home.dir(),
        "clamav.sh",
        &["--accept-on-error", &unix],
        &infected,
    );
    assert_eq!(r.stdout, VIRUS_FOUND);

    // clamd goes away: temporary refusal by default, or let through.
    drop(clamd);
    for config in [&unix, &tcp] {
        let r = body_plugin(home.dir(), "clamav.sh", &[config], &infected);
        assert_eq!(r.stdout, SCANNER_DOWN, "{config}");
        assert!(
            r.stderr.contains("clamdscan failed (exit 2)"),
            "{}",
            r.stderr
        );
        let r = body_plugin(
            home.dir(),
            "clamav.sh",
            &["--accept-on-error", config],
            &infected,
        );
        assert_eq!(r.stdout, "", "{config}");
        assert!(r.stderr.contains("accepted unscanned"), "{}", r.stderr);
    }
}

#[test]
fn clamav_plugin_refuses_temporarily_without_clamdscan() {
    let home = TestHome::new();
    let message = with_body_line("nothing to see");
    let r = run_body_plugin(home.dir(), "clamav.sh", &[], &message, "/nonexistent");
    assert_eq!((r.stdout.as_str(), r.code), (SCANNER_DOWN, 0));
    assert!(r.stderr.contains("clamdscan not found"), "{}", r.stderr);
    let r = run_body_plugin(
        home.dir(),
        "clamav.sh",
        &["--accept-on-error"],
        &message,
        "/nonexistent",
    );
    assert_eq!((r.stdout.as_str(), r.code), ("", 0));
}

#[test]
fn content_filters_are_documented_executable_scripts() {
    for plugin in ["spamassassin.sh", "clamav.sh"] {
        let path = plugin_path(plugin);
        let mode = fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode();
        assert_ne!(mode & 0o111, 0, "{plugin} is not executable");
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("#!/bin/sh\n"),
            "{plugin} is not a sh script"
        );
        assert!(
            text.contains("# Hook:      [body]"),
            "{plugin} names its hook"
        );
        // dash is Debian's /bin/sh: the script must at least parse there.
        let syntax = Command::new("sh").arg("-n").arg(&path).output().unwrap();
        assert!(
            syntax.status.success(),
            "{plugin}: {}",
            String::from_utf8_lossy(&syntax.stderr)
        );
    }
}

/// Base64 in lines of 76 characters, as MIME writes it.
fn base64_lines(data: &[u8]) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    encoded
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}
