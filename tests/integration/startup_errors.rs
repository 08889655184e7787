//! Mistakes made when starting the server, each answered by a message
//! that says what is wrong and how to put it right (exit 78 for `serve`,
//! 1 for `check`, a clap usage error for a malformed flag), never a panic
//! or a daemon that dies later.

use crate::util::process::{bin, run_with_input, Finished};
use crate::util::TestHome;
use std::process::Command;
use std::time::Duration;

/// `spp-smtpd --home HOME ARGS...` with a clean environment, bounded: a
/// server that starts instead of refusing fails the test.
fn run(home: &std::path::Path, args: &[&str]) -> Finished {
    let mut cmd = Command::new(bin());
    cmd.arg("--home").arg(home).args(args).env_clear();
    cmd.env("PATH", "/usr/bin:/bin");
    run_with_input(cmd, b"QUIT\r\n", Duration::from_secs(15))
}

/// `serve` on a port of the system's choosing, with `args`.
fn serve(home: &TestHome, args: &[&str]) -> Finished {
    let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    run(home.dir(), &all)
}

#[test]
fn huge_limits_and_durations_are_refused_instead_of_panicking() {
    let home = TestHome::new();
    let permits = "2305843009213693951";
    let year = "31536000 seconds (a year)";
    for (flag, value, most) in [
        ("--max-connections", "18446744073709551615", permits),
        ("--max-plugins", "2305843009213693952", permits),
        ("--dns-timeout", "18446744073709551615", year),
        ("--session-lifetime", "18446744073709551615", year),
        ("--shutdown-deadline", "31536001", year),
        ("--greeting-delay", "18446744073709551615", year),
        ("--auth-failure-delay", "18446744073709551615", year),
    ] {
        let out = serve(&home, &[flag, value]);
        assert_eq!(out.code, 78, "{flag} {value}: {}", out.stderr);
        let want = format!("command line: {flag} must be at most {most}");
        assert!(out.stderr.contains(&want), "{flag}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{flag}: {}", out.stderr);
    }
    let out = run(
        home.dir(),
        &["stdio", "--auth-failure-delay", "18446744073709551615"],
    );
    assert_eq!(out.code, 78, "{}", out.stderr);
    assert!(
        out.stderr.contains("--auth-failure-delay must be at most"),
        "{}",
        out.stderr
    );
    // The same values in the settings file: check names file and line.
    home.control(
        "spp-smtpd.ini",
        "max-plugins = 3000000000000000000\ndns-timeout = 99999999999\n",
    );
    let out = run(home.dir(), &["check"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let ini = home.dir().join("control/spp-smtpd.ini");
    for want in [
        format!("{}:1: max-plugins must be at most {permits}", ini.display()),
        format!("{}:2: dns-timeout must be at most {year}", ini.display()),
    ] {
        assert!(out.stdout.contains(&want), "{want}\n{}", out.stdout);
    }
}

#[test]
fn a_home_that_does_not_exist_is_named() {
    let home = TestHome::new();
    let missing = home.dir().join("no-such-home");
    let want = format!(
        "{}: the home directory (--home or SPP_HOME) does not exist",
        missing.display()
    );
    let out = run(&missing, &["check"]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout.trim_end(), want, "only the home is reported");
    let out = run(&missing, &["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(out.code, 78);
    assert!(out.stderr.contains(&want), "{}", out.stderr);
    let out = run(&missing, &["stdio"]);
    assert_eq!(out.stdout, "421 unable to read controls (#4.3.0)\r\n");
    assert!(out.stderr.contains(&want), "{}", out.stderr);
}

#[test]
fn an_unknown_user_is_named() {
    let home = TestHome::new();
    let out = serve(&home, &["--user", "spp-no-such-user"]);
    assert_eq!(out.code, 78, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("command line: --user: unknown user \"spp-no-such-user\""),
        "{}",
        out.stderr
    );
    let out = serve(&home, &["--user", "nobody", "--group", "spp-no-such-group"]);
    assert_eq!(out.code, 78, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("command line: --group: unknown group \"spp-no-such-group\""),
        "{}",
        out.stderr
    );
    home.control("spp-smtpd.ini", "\nuser = spp-no-such-user\n");
    let out = run(home.dir(), &["check"]);
    let ini = home.dir().join("control/spp-smtpd.ini");
    assert!(
        out.stdout.contains(&format!(
            "{}:2: user: unknown user \"spp-no-such-user\"",
            ini.display()
        )),
        "{}",
        out.stdout
    );
}

#[test]
fn an_address_without_a_port_says_how_to_write_one() {
    let home = TestHome::new();
    for (flag, value, example) in [
        ("--listen", "127.0.0.1", "e.g. 127.0.0.1:25"),
        ("--listen-tls", "::1", "e.g. [::1]:25"),
        ("--metrics", "localhost:9100", "with a numeric address"),
    ] {
        let out = run(home.dir(), &["serve", flag, value]);
        assert_eq!(out.code, 2, "{flag} {value}: {}", out.stderr);
        assert!(
            out.stderr.contains(flag) && out.stderr.contains("needs ADDR:PORT"),
            "{flag}: {}",
            out.stderr
        );
        assert!(out.stderr.contains(example), "{flag}: {}", out.stderr);
    }
    home.control("spp-smtpd.ini", "listen = 127.0.0.1\n");
    let out = run(home.dir(), &["check"]);
    assert!(
        out.stdout
            .contains("spp-smtpd.ini:1: listen: needs ADDR:PORT, e.g. 127.0.0.1:25"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_certificate_without_its_key_names_the_file_and_where_the_key_goes() {
    let home = TestHome::new();
    let pem = String::from_utf8(home.make_cert("mx.ref.test")).unwrap();
    let cert_only = &pem[..pem.find("-----BEGIN PRIVATE KEY").expect("a PKCS#8 key")];
    home.control("servercert.pem", cert_only);
    let combined = home.dir().join("control/servercert.pem");
    let want = format!(
        "{}: has no private key: put the key in this PEM file too, or name a key file \
         with --tls-key",
        combined.display()
    );
    let out = run(home.dir(), &["check"]);
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains(&want), "{}", out.stdout);
    let out = serve(&home, &[]);
    assert_eq!(out.code, 78);
    assert!(out.stderr.contains(&want), "{}", out.stderr);
    // A key file that holds no key (the certificate, by mistake).
    home.remove_control("servercert.pem");
    home.write("cert.pem", cert_only);
    home.write("key.pem", cert_only);
    let out = serve(&home, &["--tls-cert", "cert.pem", "--tls-key", "key.pem"]);
    assert_eq!(out.code, 78);
    assert!(
        out.stderr.contains(&format!(
            "{}: has no private key (no PRIVATE KEY block in it)",
            home.dir().join("key.pem").display()
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn a_privileged_port_without_root_says_how_to_get_one() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: needs root, to run the server as nobody with setpriv");
        return;
    }
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    if start.is_none_or(|p| p <= 25) {
        eprintln!("SKIP: port 25 is not privileged here (ip_unprivileged_port_start {start:?})");
        return;
    }
    let home = TestHome::new();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(bin())
        .arg("--home")
        .arg(home.dir())
        .args(["serve", "--listen", "127.0.0.1:25"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin");
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("SKIP: setpriv is not installed (Debian package util-linux)");
        return;
    }
    let out = run_with_input(cmd, b"", Duration::from_secs(15));
    if out.stderr.contains("Permission denied") && !out.stderr.contains("127.0.0.1:25") {
        eprintln!("SKIP: nobody cannot run the binary here: {}", out.stderr);
        return;
    }
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "cannot listen on 127.0.0.1:25: Permission denied (os error 13): ports below \
             1024 need root: start as root with --user NAME"
        ),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("socket activation"), "{}", out.stderr);
}
