//! Implicit-TLS listeners (port 465 is submission: AUTH required; the MX
//! variant is not) and certificates after the daemon switched to its
//! `--user`.

use crate::tls_auth::{peer_cn, raw, serve_args, tls_home, wait_for_log};
use crate::util::process::{self, Server};

/// Python's SMTP_SSL: sends one message without AUTH; prints the result.
const SMTP_SSL_SEND: &str = r#"
import smtplib, ssl, sys
ctx = ssl._create_unverified_context()
with smtplib.SMTP_SSL("127.0.0.1", int(sys.argv[1]), context=ctx, timeout=30) as s:
    s.ehlo("py.test")
    try:
        print("refused:", sorted(s.sendmail("a@example.org", ["bob@ref.test"], "Subject: 465\r\n\r\nhi\r\n")))
    except smtplib.SMTPSenderRefused as e:
        print("sender refused:", e.smtp_code, e.smtp_error.decode())
"#;

#[test]
fn the_implicit_tls_port_requires_auth_and_the_mx_listener_does_not() {
    let home = tls_home();
    let (sub, mx) = (process::free_port(), process::free_port());
    let (sub_addr, mx_addr) = (format!("127.0.0.1:{sub}"), format!("127.0.0.1:{mx}"));
    let _server = Server::daemon_with(
        &home,
        &[],
        &serve_args(&["--listen-tls", &sub_addr, "--listen-tls-mx", &mx_addr]),
    );
    // 465: MAIL before AUTH gets submission's refusal, exactly.
    let out = raw(
        sub,
        "implicit",
        &[
            ">HELO x",
            "<",
            ">MAIL FROM:<a@b.test>",
            "<",
            ">AUTH PLAIN AGFsaWNlAHNlY3JldA==",
            "<",
            ">MAIL FROM:<a@b.test>",
            "<",
        ],
    );
    assert_eq!(out[2], "< 530 Authorization required (#5.7.1) ", "{out:?}");
    assert_eq!(out[3], "< 235 ok, go ahead (#2.0.0)", "{out:?}");
    assert_eq!(out[4], "< 250 ok", "{out:?}");
    let ssl = process::python(SMTP_SSL_SEND, &[&sub.to_string()]);
    assert!(
        ssl.stdout.contains("sender refused: 530"),
        "{}{}",
        ssl.stdout,
        ssl.stderr
    );
    // The MX listener: implicit TLS, mail accepted without AUTH.
    let ssl = process::python(SMTP_SSL_SEND, &[&mx.to_string()]);
    assert!(
        ssl.stdout.contains("refused: []"),
        "{}{}",
        ssl.stdout,
        ssl.stderr
    );
    assert_eq!(home.maildir().len(), 1);
}

#[test]
fn the_implicit_tls_port_without_an_auth_backend_refuses_to_start() {
    let home = tls_home();
    let out = process::run_spp(
        &home,
        &[
            "serve",
            "--listen",
            "127.0.0.1:1",
            "--listen-tls",
            "127.0.0.1:1",
        ],
    );
    assert_eq!(out.code, 78, "{}", out.stderr);
    assert!(
        out.stderr.contains("listen-tls requires AUTH"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("listen-tls-mx"), "{}", out.stderr);
}

#[test]
fn a_key_only_root_can_read_is_reported_at_start_and_a_readable_renewal_loads() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("SKIP: not root: switching to --user nobody needs root");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let home = tls_home();
    let pem = home.dir().join("control/servercert.pem");
    std::fs::set_permissions(&pem, std::fs::Permissions::from_mode(0o600)).unwrap();
    let tport = process::free_port();
    let taddr = format!("127.0.0.1:{tport}");
    let server = Server::daemon_with(
        &home,
        &[],
        &[
            "--user",
            "nobody",
            "--group",
            "nogroup",
            "--listen-tls-mx",
            &taddr,
        ],
    );
    // Read as root at start; a reload as nobody could not: said at start,
    // with the file and the reason.
    wait_for_log(&home, "as user nobody");
    wait_for_log(&home, "INFO ready");
    let log = std::fs::read_to_string(home.dir().join("daemon.log")).unwrap();
    let warning = log.lines().find(|l| l.contains("as user nobody")).unwrap();
    assert!(warning.contains(&pem.display().to_string()), "{warning}");
    assert!(warning.contains("Permission denied"), "{warning}");
    assert!(peer_cn(tport, "mx.ref.test").ends_with("CN = mx.ref.test"));
    // A renewal nobody cannot read: the reload names it; the running
    // certificate stays.
    home.control("servercert.pem", home.make_cert("renewed.test"));
    std::fs::set_permissions(&pem, std::fs::Permissions::from_mode(0o600)).unwrap();
    server.signal(1);
    wait_for_log(&home, "reload refused");
    let log = std::fs::read_to_string(home.dir().join("daemon.log")).unwrap();
    let refused = log.lines().find(|l| l.contains("reload refused")).unwrap();
    assert!(refused.contains(&pem.display().to_string()), "{refused}");
    assert!(peer_cn(tport, "mx.ref.test").ends_with("CN = mx.ref.test"));
    // Readable by the service's group, as README says: the renewal loads.
    let gid = spp_smtpd::net::privileges::lookup_group("nogroup").unwrap();
    std::os::unix::fs::chown(&pem, None, Some(gid)).unwrap();
    std::fs::set_permissions(&pem, std::fs::Permissions::from_mode(0o640)).unwrap();
    server.signal(1);
    wait_for_log(&home, "reloaded configuration");
    assert!(peer_cn(tport, "mx.ref.test").ends_with("CN = renewed.test"));
}
