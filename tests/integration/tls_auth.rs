//! TLS and SMTP AUTH with real clients: Python's smtplib, swaks, openssl
//! s_client and curl, against `serve` and against `stdio` under tcpserver.

use crate::util::process::{self, Server};
use crate::util::TestHome;
use std::process::Command;
use std::time::Duration;

/// A home with a certificate and the test checkpassword.
pub(crate) fn tls_home() -> TestHome {
    let home = TestHome::new();
    home.install_cert();
    home.install_checkpassword();
    home
}

/// smtplib: EHLO, STARTTLS, EHLO, optional login, send to the given
/// recipients; prints the features seen and the refused recipients.
const SMTPLIB_TLS: &str = r#"
import smtplib, ssl, sys
port, user, password, mech = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl._create_unverified_context()
with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
    s.ehlo("py.test")
    print("before:", "starttls" in s.esmtp_features, "auth" in s.esmtp_features)
    s.starttls(context=ctx)
    s.ehlo("py.test")
    print("after:", "starttls" in s.esmtp_features, s.esmtp_features.get("auth", ""))
    if user != "-":
        s.user, s.password = user, password
        code, resp = s.auth(mech, getattr(s, "auth_" + mech.lower().replace("-", "_")), initial_response_ok=(mech == "PLAIN"))
        print("auth:", code)
    try:
        refused = s.sendmail("a@example.org", sys.argv[5:], "Subject: tls\r\n\r\nover tls\r\n")
        print("refused:", sorted(refused))
    except smtplib.SMTPRecipientsRefused as e:
        print("refused:", sorted(e.recipients))
"#;

fn smtplib_tls(port: u16, user: &str, password: &str, mech: &str, rcpts: &[&str]) -> String {
    let mut args = vec![
        port.to_string(),
        user.to_string(),
        password.to_string(),
        mech.to_string(),
    ];
    args.extend(rcpts.iter().map(|r| r.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = process::python(SMTPLIB_TLS, &args);
    format!("{}{}", out.stdout, out.stderr)
}

/// Server arguments for AUTH: the test checkpassword, no failure delay,
/// then `extra`.
pub(crate) fn serve_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "--checkpassword",
        "bin/checkpassword",
        "--auth-failure-delay",
        "0",
    ];
    v.extend_from_slice(extra);
    v
}

#[test]
fn serve_starttls_then_auth_plain_and_login_allow_relaying() {
    let home = tls_home();
    let server = Server::daemon_with(&home, &[], &serve_args(&[]));
    for mech in ["PLAIN", "LOGIN"] {
        let out = smtplib_tls(
            server.port,
            "alice",
            "secret",
            mech,
            &["bob@ref.test", "far@away.test"],
        );
        // AUTH is only offered after STARTTLS.
        assert!(out.contains("before: True False"), "{out}");
        assert!(
            out.contains("after: False") && out.contains("LOGIN PLAIN"),
            "{out}"
        );
        assert!(out.contains("auth: 235"), "{mech}: {out}");
        assert!(out.contains("refused: []"), "{mech}: {out}");
    }
    let msg = String::from_utf8_lossy(&home.maildir()[0]).into_owned();
    assert!(
        msg.contains("(alice@127.0.0.1)\n  by mx.ref.test with ESMTPSA;"),
        "{msg}"
    );
    // CRAM-MD5 when SMTPAUTH asks for it (here from the daemon's environment).
    let cram = Server::daemon_with(&home, &[("SMTPAUTH", "+cram")], &serve_args(&[]));
    let out = smtplib_tls(cram.port, "alice", "secret", "CRAM-MD5", &["far@away.test"]);
    assert!(out.contains("LOGIN PLAIN CRAM-MD5"), "{out}");
    assert!(out.contains("auth: 235"), "{out}");
    let out = smtplib_tls(cram.port, "alice", "wrong", "CRAM-MD5", &["far@away.test"]);
    assert!(out.contains("535"), "{out}");
}

#[test]
fn serve_wrong_password_gets_535_and_no_relaying() {
    let home = tls_home();
    let server = Server::daemon_with(&home, &[], &serve_args(&[]));
    let out = smtplib_tls(server.port, "alice", "wrong", "PLAIN", &["far@away.test"]);
    assert!(out.contains("535"), "{out}");
    let out = smtplib_tls(server.port, "-", "-", "PLAIN", &["far@away.test"]);
    assert!(out.contains("refused: ['far@away.test']"), "{out}");
    let msg_count = home.maildir().len();
    assert_eq!(msg_count, 0);
    let log = std::fs::read_to_string(home.dir().join("daemon.log")).unwrap();
    assert!(
        log.contains(r#"user="alice" method="plain" result="fail""#),
        "{log}"
    );
    assert!(
        !log.contains("wrong"),
        "passwords must never be logged:\n{log}"
    );
}

/// A raw client over TLS in Python for exact replies: runs `script` lines
/// (`>` sends, `<` expects a line starting with the text).
const RAW_TLS: &str = r#"
import socket, ssl, sys
port, mode = int(sys.argv[1]), sys.argv[2]
sock = socket.create_connection(("127.0.0.1", port), timeout=20)
ctx = ssl._create_unverified_context()
if mode == "implicit":
    sock = ctx.wrap_socket(sock, server_hostname="mx.ref.test")
f = sock.makefile("rb")
def line():
    l = f.readline().decode("latin-1").rstrip("\r\n")
    print("<", l)
    return l
line()
for step in sys.argv[3:]:
    if step == "TLS":
        sock = ctx.wrap_socket(sock, server_hostname="mx.ref.test")
        f = sock.makefile("rb")
        print("= tls", sock.version())
    elif step.startswith(">"):
        sock.sendall(step[1:].encode().replace(b"\\r\\n", b"\r\n") + b"\r\n")
    elif step.startswith("<"):
        line()
    elif step.startswith("*"):
        for _ in range(int(step[1:])):
            line()
"#;

pub(crate) fn raw(port: u16, mode: &str, steps: &[&str]) -> Vec<String> {
    let mut args = vec![port.to_string(), mode.to_string()];
    args.extend(steps.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = process::python(RAW_TLS, &args);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    out.stdout.lines().map(str::to_string).collect()
}

#[test]
fn commands_pipelined_after_starttls_are_not_executed() {
    let home = tls_home();
    let server = Server::daemon_with(&home, &[], &serve_args(&[]));
    let out = raw(
        server.port,
        "plain",
        &[
            ">EHLO x",
            "*6",
            ">STARTTLS\\r\\nMAIL FROM:<evil@x.test>",
            "<",
            "TLS",
            ">RCPT TO:<bob@ref.test>",
            "<",
        ],
    );
    assert_eq!(out[7], "< 220 ready to start TLS", "{out:?}");
    assert!(out[8].starts_with("= tls TLSv1."), "{out:?}");
    assert_eq!(out[9], "< 503 MAIL first (#5.5.1)", "{out:?}");
}

#[test]
fn auth_is_refused_before_tls_and_during_a_transaction() {
    let home = tls_home();
    let server = Server::daemon_with(&home, &[], &serve_args(&[]));
    let out = raw(
        server.port,
        "plain",
        &[">AUTH PLAIN AGFsaWNlAHNlY3JldA==", "<"],
    );
    assert_eq!(
        out[1],
        "< 538 encryption required for authentication, use STARTTLS (#5.7.11)"
    );
    let out = raw(
        server.port,
        "plain",
        &[
            ">STARTTLS",
            "<",
            "TLS",
            ">MAIL FROM:<a@b.test>",
            "<",
            ">AUTH PLAIN AGFsaWNlAHNlY3JldA==",
            "<",
        ],
    );
    assert_eq!(
        out[4], "< 503 no auth during mail transaction (#5.5.0)",
        "{out:?}"
    );
}

#[test]
fn three_failures_close_the_connection_and_tempfail_is_454() {
    let home = tls_home();
    let server = Server::daemon_with(&home, &[], &serve_args(&[]));
    // base64("\0alice\0bad") and base64("\0tempfail\0x")
    let out = raw(
        server.port,
        "implicit-no",
        &[
            ">STARTTLS",
            "<",
            "TLS",
            ">AUTH PLAIN AHRlbXBmYWlsAHg=",
            "<",
            ">AUTH PLAIN AGFsaWNlAGJhZA==",
            "<",
            ">AUTH PLAIN AGFsaWNlAGJhZA==",
            "<",
            ">AUTH PLAIN AGFsaWNlAGJhZA==",
            "<",
            "<",
        ],
    );
    assert_eq!(
        out[3], "< 454 temporary authentication failure (#4.3.0)",
        "{out:?}"
    );
    assert_eq!(out[4], "< 535 authentication failed (#5.7.1)");
    assert_eq!(out[5], "< 535 authentication failed (#5.7.1)");
    assert_eq!(out[6], "< 535 authentication failed (#5.7.1)");
    assert_eq!(
        out[7],
        "< 421 mx.ref.test too many authentication failures (#4.7.0)"
    );
}

#[test]
fn auth_hook_can_refuse_and_sees_user_method_and_tls_variables() {
    let home = tls_home();
    let p = home.plugin(
        "authcheck",
        "#!/bin/sh\necho \"P250-$SMTPAUTHUSER $SMTPAUTHMETHOD $SSL_PROTOCOL\"\n[ \"$SMTPAUTHUSER\" = alice ] && echo 'E535 not today (#5.7.1)'\n",
    );
    home.smtpplugins(&format!("[auth]\n{p}\n"));
    let server = Server::daemon_with(&home, &[], &serve_args(&[]));
    let out = raw(
        server.port,
        "plain",
        &[
            ">STARTTLS",
            "<",
            "TLS",
            ">AUTH PLAIN AGFsaWNlAHNlY3JldA==",
            "<",
            "<",
            ">MAIL FROM:<a@b.test>",
            "<",
            ">RCPT TO:<x@far.test>",
            "<",
        ],
    );
    assert!(out[3].starts_with("< 250-alice plain TLSv1."), "{out:?}");
    assert_eq!(out[4], "< 535 not today (#5.7.1)");
    // Refused by the plugin: no relaying.
    assert_eq!(
        out[6],
        "< 553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"
    );
}

#[test]
fn require_tls_and_submission_refuse_mail() {
    let home = tls_home();
    let sub = process::free_port();
    let sub_addr = format!("127.0.0.1:{sub}");
    let server = Server::daemon_with(
        &home,
        &[],
        &serve_args(&["--require-tls", "--listen-submission", &sub_addr]),
    );
    let out = raw(server.port, "plain", &[">MAIL FROM:<a@b.test>", "<"]);
    assert_eq!(out[1], "< 530 Must issue a STARTTLS command first (#5.7.0)");
    let out = raw(
        sub,
        "plain",
        &[
            ">STARTTLS",
            "<",
            "TLS",
            ">MAIL FROM:<a@b.test>",
            "<",
            ">AUTH PLAIN AGFsaWNlAHNlY3JldA==",
            "<",
            ">MAIL FROM:<a@b.test>",
            "<",
        ],
    );
    assert_eq!(out[3], "< 530 Authorization required (#5.7.1) ", "{out:?}");
    assert_eq!(out[4], "< 235 ok, go ahead (#2.0.0)");
    assert_eq!(out[5], "< 250 ok");
}

#[test]
fn implicit_tls_listener_with_swaks_and_a_stalled_handshake_does_not_block_others() {
    let home = tls_home();
    let tport = process::free_port();
    let taddr = format!("127.0.0.1:{tport}");
    let _server = Server::daemon_with(&home, &[], &serve_args(&["--listen-tls", &taddr]));
    // A client that connects and never starts its handshake.
    let _stalled = std::net::TcpStream::connect(("127.0.0.1", tport)).unwrap();
    let out = process::swaks(&[
        "--server",
        &taddr,
        "--tlsc",
        "--from",
        "a@example.org",
        "--to",
        "far@away.test",
        "--auth",
        "LOGIN",
        "--auth-user",
        "alice",
        "--auth-password",
        "secret",
        "--body",
        "implicit tls",
    ]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(out.stdout.contains("235 ok, go ahead"), "{}", out.stdout);
    let msg = String::from_utf8_lossy(&home.maildir()[0]).into_owned();
    assert!(msg.contains("with ESMTPSA;"), "{msg}");
}

/// The same TLS/AUTH set-up as a daemon and as stdio under tcpserver.
fn both_servers(home: &TestHome) -> Vec<Server> {
    vec![
        Server::daemon_with(home, &[], &serve_args(&[])),
        Server::tcpserver_with(home, &[("SMTPAUTH", "")], &serve_args(&[])),
    ]
}

#[test]
fn swaks_starttls_and_auth_plain() {
    let home = tls_home();
    for server in both_servers(&home) {
        let addr = format!("127.0.0.1:{}", server.port);
        let out = process::swaks(&[
            "--server",
            &addr,
            "--tls",
            "--from",
            "a@example.org",
            "--to",
            "far@away.test",
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice",
            "--auth-password",
            "secret",
        ]);
        assert_eq!(out.code, 0, "{}", out.stdout);
        assert!(out.stdout.contains("<~  250 ok "), "{}", out.stdout);
    }
    assert_eq!(home.maildir().len(), 2);
}

#[test]
fn openssl_s_client_starttls() {
    let home = tls_home();
    for server in both_servers(&home) {
        let mut cmd = Command::new("openssl");
        cmd.args(["s_client", "-starttls", "smtp", "-quiet", "-connect"])
            .arg(format!("127.0.0.1:{}", server.port))
            .args(["-servername", "mx.ref.test"]);
        let out = process::run_with_input(cmd, b"EHLO s.test\r\nQUIT\r\n", Duration::from_secs(30));
        assert!(
            out.stdout.contains("250 AUTH LOGIN PLAIN"),
            "{}{}",
            out.stdout,
            out.stderr
        );
        assert!(out.stdout.contains("221 mx.ref.test"), "{}", out.stdout);
        assert!(
            !out.stdout.contains("250-STARTTLS"),
            "STARTTLS offered again over TLS: {}",
            out.stdout
        );
    }
}

#[test]
fn curl_with_ssl_reqd_sends_mail() {
    let home = tls_home();
    let body = home.write("mail.txt", "Subject: via curl\r\n\r\ncurl body\r\n");
    for server in both_servers(&home) {
        let out = process::run_with_input(
            {
                let mut c = Command::new("curl");
                c.args(["-sS", "--ssl-reqd", "-k", "--url"])
                    .arg(format!("smtp://127.0.0.1:{}/curl.test", server.port))
                    .args([
                        "--mail-from",
                        "a@example.org",
                        "--mail-rcpt",
                        "far@away.test",
                        "--user",
                        "alice:secret",
                        "--upload-file",
                    ])
                    .arg(&body);
                c
            },
            b"",
            Duration::from_secs(30),
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    assert_eq!(home.maildir().len(), 2);
    for msg in home.maildir() {
        let msg = String::from_utf8_lossy(&msg).into_owned();
        assert!(msg.contains("curl body"), "{msg}");
        assert!(msg.contains("with ESMTPSA;"), "{msg}");
    }
}

#[test]
fn tcpserver_stdio_honours_smtpauth_and_offers_starttls() {
    let home = tls_home();
    // SMTPAUTH unset: no AUTH (as qmail's AUTH patch).
    let plain = Server::tcpserver_with(
        &home,
        &[],
        &[
            "--checkpassword",
            "bin/checkpassword",
            "--auth-failure-delay",
            "0",
        ],
    );
    let out = smtplib_tls(plain.port, "-", "-", "PLAIN", &["bob@ref.test"]);
    assert!(
        out.contains("after: False \n") || out.contains("after: False"),
        "{out}"
    );
    assert!(!out.contains("LOGIN PLAIN"), "{out}");
    // SMTPAUTH="" from the tcpserver environment: LOGIN PLAIN.
    let with_auth = Server::tcpserver_with(
        &home,
        &[("SMTPAUTH", "")],
        &[
            "--checkpassword",
            "bin/checkpassword",
            "--auth-failure-delay",
            "0",
        ],
    );
    let out = smtplib_tls(
        with_auth.port,
        "alice",
        "secret",
        "LOGIN",
        &["far@away.test"],
    );
    assert!(out.contains("auth: 235"), "{out}");
    assert!(out.contains("refused: []"), "{out}");
}

/// The subject CN of the certificate the server presents for `sni`.
const PEER_CN: &str = r#"
import socket, ssl, sys
port, sni = int(sys.argv[1]), sys.argv[2]
ctx = ssl._create_unverified_context()
with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
    with ctx.wrap_socket(raw, server_hostname=sni) as s:
        der = s.getpeercert(binary_form=True)
import subprocess
out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject"], input=der, capture_output=True).stdout.decode()
print(out.strip())
"#;

/// Waits (bounded) until the server's log contains `needle`.
pub(crate) fn wait_for_log(home: &TestHome, needle: &str) {
    for _ in 0..400 {
        if std::fs::read_to_string(home.dir().join("daemon.log"))
            .unwrap_or_default()
            .contains(needle)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{needle:?} never logged");
}

pub(crate) fn peer_cn(port: u16, sni: &str) -> String {
    let out = process::python(PEER_CN, &[&port.to_string(), sni]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout.trim().to_string()
}

#[test]
fn sni_chooses_the_certificate_and_sighup_reloads_certificates() {
    let home = tls_home();
    home.write(
        "control/servercerts/other.test.pem",
        home.make_cert("other.test"),
    );
    let tport = process::free_port();
    let taddr = format!("127.0.0.1:{tport}");
    let server = Server::daemon_with(&home, &[], &serve_args(&["--listen-tls", &taddr]));
    let cn = peer_cn(tport, "other.test");
    assert!(cn.ends_with("CN = other.test"), "{cn}");
    assert!(peer_cn(tport, "mx.ref.test").ends_with("CN = mx.ref.test"));
    assert!(
        peer_cn(tport, "unknown.test").ends_with("CN = mx.ref.test"),
        "default certificate"
    );
    // A new default certificate after SIGHUP, without restarting.
    home.control("servercert.pem", home.make_cert("renewed.test"));
    server.signal(1);
    wait_for_log(&home, "reloaded configuration");
    assert!(peer_cn(tport, "mx.ref.test").ends_with("CN = renewed.test"));
    // A broken certificate is refused; the running one stays.
    home.control("servercert.pem", "not a certificate\n");
    server.signal(1);
    wait_for_log(&home, "reload refused");
    assert!(peer_cn(tport, "mx.ref.test").ends_with("CN = renewed.test"));
}

#[test]
fn stdio_implicit_tls_under_tcpserver() {
    let home = tls_home();
    let server = Server::tcpserver_with(
        &home,
        &[("SMTPAUTH", "")],
        &["--tls", "--checkpassword", "bin/checkpassword"],
    );
    let out = raw(
        server.port,
        "implicit",
        &[
            ">EHLO x",
            "*6",
            ">AUTH PLAIN AGFsaWNlAHNlY3JldA==",
            "<",
            ">QUIT",
            "<",
        ],
    );
    assert_eq!(out[1], "< 250-mx.ref.test", "{out:?}");
    assert!(!out.iter().any(|l| l.contains("STARTTLS")), "{out:?}");
    assert_eq!(out[7], "< 235 ok, go ahead (#2.0.0)", "{out:?}");
}

#[test]
fn dovecot_auth_socket_as_the_backend() {
    let home = tls_home();
    let dovecot = crate::util::process::DovecotServer::start(&home.dir().join("dovecot"));
    let socket = dovecot.socket();
    let socket = socket.to_str().unwrap();
    let server = Server::daemon_with(
        &home,
        &[],
        &["--dovecot-auth", socket, "--auth-failure-delay", "0"],
    );
    for mech in ["PLAIN", "LOGIN"] {
        let out = smtplib_tls(server.port, "alice", "secret", mech, &["far@away.test"]);
        assert!(out.contains("auth: 235"), "{mech}: {out}");
        assert!(out.contains("refused: []"), "{mech}: {out}");
    }
    let out = smtplib_tls(server.port, "alice", "wrong", "PLAIN", &["far@away.test"]);
    assert!(out.contains("535"), "{out}");
    assert_eq!(home.maildir().len(), 2);
}

#[test]
fn check_reports_a_broken_certificate() {
    let home = TestHome::new();
    home.control(
        "servercert.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    );
    let mut cmd = Command::new(process::bin());
    cmd.arg("--home").arg(home.dir()).arg("check");
    let out = process::run_with_input(cmd, b"", Duration::from_secs(30));
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout.contains("control/servercert.pem"),
        "{}",
        out.stdout
    );
    // stdio sessions answer 421 rather than run without their certificate.
    let out = process::stdio(&home, &[], b"QUIT\r\n");
    assert_eq!(out.stdout, "421 unable to read controls (#4.3.0)\r\n");
}

#[test]
fn plain_without_initial_response_cancel_and_plaintext_permission() {
    let home = tls_home();
    let server = Server::daemon_with(&home, &[], &serve_args(&["--allow-auth-without-tls"]));
    // Without TLS, allowed here: PLAIN with "334 " then the response.
    let out = raw(
        server.port,
        "plain",
        &[
            ">AUTH PLAIN",
            "<",
            ">AGFsaWNlAHNlY3JldA==",
            "<",
            ">MAIL FROM:<a@b.test>",
            "<",
            ">RCPT TO:<x@far.test>",
            "<",
        ],
    );
    assert_eq!(out[1], "< 334 ", "{out:?}");
    assert_eq!(out[2], "< 235 ok, go ahead (#2.0.0)");
    assert_eq!(out[4], "< 250 ok", "relaying after AUTH: {out:?}");
    let out = raw(
        server.port,
        "plain",
        &[">AUTH PLAIN AGFsaWNlAHNlY3JldA==", "<", ">STARTTLS", "<"],
    );
    assert_eq!(
        out[2], "< 503 STARTTLS is not allowed after AUTH (#5.5.1)",
        "{out:?}"
    );
    // A cancelled exchange changes nothing; bad base64 is malformed.
    let out = raw(
        server.port,
        "plain",
        &[
            ">AUTH LOGIN",
            "<",
            ">*",
            "<",
            ">AUTH PLAIN !!!",
            "<",
            ">MAIL FROM:<a@b.test>",
            "<",
            ">RCPT TO:<x@far.test>",
            "<",
        ],
    );
    assert_eq!(out[1], "< 334 VXNlcm5hbWU6");
    assert_eq!(out[2], "< 501 auth exchange canceled (#5.0.0)");
    assert_eq!(out[3], "< 501 malformed auth input (#5.5.4)");
    assert_eq!(
        out[5],
        "< 553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"
    );
}

#[test]
fn tcpserver_smtpauth_required_refuses_mail_before_auth() {
    let home = tls_home();
    let server = Server::tcpserver_with(&home, &[("SMTPAUTH", "!")], &serve_args(&[]));
    let out = raw(
        server.port,
        "plain",
        &[
            ">MAIL FROM:<a@b.test>",
            "<",
            ">STARTTLS",
            "<",
            "TLS",
            ">AUTH LOGIN YWxpY2U=",
            "<",
            ">c2VjcmV0",
            "<",
            ">MAIL FROM:<a@b.test>",
            "<",
        ],
    );
    assert_eq!(out[1], "< 530 Authorization required (#5.7.1) ");
    assert_eq!(out[4], "< 334 UGFzc3dvcmQ6", "{out:?}");
    assert_eq!(out[5], "< 235 ok, go ahead (#2.0.0)");
    assert_eq!(out[6], "< 250 ok");
}

#[test]
fn a_failing_auth_delay_does_not_block_other_sessions() {
    let home = tls_home();
    let server = Server::daemon_with(
        &home,
        &[],
        &[
            "--checkpassword",
            "bin/checkpassword",
            "--auth-failure-delay",
            "30",
        ],
    );
    // One client fails and waits out its delay ...
    let mut slow = Command::new("python3");
    slow.arg("-c")
        .arg(RAW_TLS)
        .arg(server.port.to_string())
        .arg("plain")
        .args([">STARTTLS", "<", "TLS", ">AUTH PLAIN AGFsaWNlAGJhZA==", "<"])
        .stdout(std::process::Stdio::null());
    let mut slow = slow.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // ... while another authenticates and sends.
    let out = smtplib_tls(server.port, "alice", "secret", "PLAIN", &["far@away.test"]);
    assert!(
        out.contains("auth: 235") && out.contains("refused: []"),
        "{out}"
    );
    assert_eq!(
        slow.try_wait().unwrap(),
        None,
        "the failing client is still waiting"
    );
    let _ = slow.kill();
    let _ = slow.wait();
}

#[test]
fn serve_uses_tls_cert_and_key_flags_and_refuses_inconsistent_settings() {
    let home = TestHome::new();
    home.install_checkpassword();
    let dir = home.dir().join("certgen/mx.ref.test");
    home.make_cert("flags.test");
    let _ = dir;
    let cert = home.dir().join("certgen/flags.test/cert.pem");
    let key = home.dir().join("certgen/flags.test/key.pem");
    let tport = process::free_port();
    let taddr = format!("127.0.0.1:{tport}");
    let _server = Server::daemon_with(
        &home,
        &[],
        &serve_args(&[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--listen-tls",
            &taddr,
        ]),
    );
    assert!(peer_cn(tport, "flags.test").ends_with("CN = flags.test"));
    // No certificate with listen-tls, or submission without a backend: exit 78.
    for args in [
        vec!["--listen-tls", "127.0.0.1:1"],
        vec!["--listen-submission", "127.0.0.1:1"],
        vec!["--require-tls"],
    ] {
        let mut cmd = Command::new(process::bin());
        cmd.arg("--home")
            .arg(home.dir())
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:1")
            .args(&args);
        let out = process::run_with_input(cmd, b"", Duration::from_secs(30));
        assert_eq!(out.code, 78, "{args:?}: {}", out.stderr);
    }
}

#[test]
fn nul_bytes_in_credentials_are_refused_and_cram_challenges_never_repeat() {
    let home = tls_home();
    let server = Server::daemon_with(&home, &[("SMTPAUTH", "+cram")], &serve_args(&[]));
    // LOGIN user "alice\0secret" (base64 YWxpY2UAc2VjcmV0), any password.
    let out = raw(
        server.port,
        "plain",
        &[
            ">STARTTLS",
            "<",
            "TLS",
            ">AUTH LOGIN YWxpY2UAc2VjcmV0",
            "<",
            ">eA==",
            "<",
        ],
    );
    assert_eq!(out[4], "< 501 malformed auth input (#5.5.4)", "{out:?}");
    let log = std::fs::read_to_string(home.dir().join("daemon.log")).unwrap();
    assert!(!log.contains("secret"), "{log}");
    // Two CRAM-MD5 challenges in quick succession differ.
    let c1 = raw(
        server.port,
        "plain",
        &[">STARTTLS", "<", "TLS", ">AUTH CRAM-MD5", "<", ">*", "<"],
    );
    let c2 = raw(
        server.port,
        "plain",
        &[">STARTTLS", "<", "TLS", ">AUTH CRAM-MD5", "<", ">*", "<"],
    );
    assert!(c1[3].starts_with("< 334 "), "{c1:?}");
    assert_ne!(c1[3], c2[3]);
}

#[test]
fn require_tls_wins_over_plaintext_auth_and_starttls_resets_plugin_state() {
    let home = tls_home();
    let p = home.plugin("mark", "#!/bin/sh\necho \"P250-mark=${MARK-unset}\"\n[ \"$SMTPHELOHOST\" = set ] && echo SMARK=1\n");
    home.smtpplugins(&format!("[helo]\n{p}\n"));
    let server = Server::daemon_with(
        &home,
        &[],
        &serve_args(&["--require-tls", "--allow-auth-without-tls"]),
    );
    let out = raw(
        server.port,
        "plain",
        &[
            ">AUTH PLAIN AGFsaWNlAHNlY3JldA==",
            "<",
            ">HELO set",
            "*2",
            ">HELO again",
            "*2",
            ">STARTTLS",
            "<",
            "TLS",
            ">HELO after",
            "<",
        ],
    );
    assert_eq!(
        out[1], "< 538 encryption required for authentication, use STARTTLS (#5.7.11)",
        "{out:?}"
    );
    assert_eq!(out[4], "< 250-mark=1", "{out:?}");
    // Variables set from commands sent in the clear do not survive TLS.
    assert_eq!(out[8], "< 250-mark=unset", "{out:?}");
}

#[test]
fn shutdown_does_not_wait_for_a_stalled_handshake() {
    let home = tls_home();
    let tport = process::free_port();
    let taddr = format!("127.0.0.1:{tport}");
    let server = Server::daemon_with(
        &home,
        &[],
        &serve_args(&["--listen-tls", &taddr, "--shutdown-deadline", "120"]),
    );
    let _stalled = std::net::TcpStream::connect(("127.0.0.1", tport)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = std::time::Instant::now();
    server.signal(15);
    assert_eq!(server.wait_exit(), 0);
    // Far less than the 120 s deadline: nothing was in a transaction.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}
