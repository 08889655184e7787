//! `serve --metrics`: the daemon's counters scraped over HTTP with curl,
//! after real sessions (smtplib), in both text formats, and validated by
//! `promtool check metrics` (Debian's prometheus package).

use crate::util::process::{free_port, python, run_with_input, Server};
use crate::util::TestHome;
use std::process::Command;
use std::time::{Duration, Instant};

/// One smtplib session: a refused and an accepted recipient, a message.
const SESSION: &str = r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30)
s.ehlo("client.test")
s.mail("a@example.org")
print(s.rcpt("eve@ref.test")[0], s.rcpt("bob@ref.test")[0])
print(s.data(b"Subject: m\r\n\r\nhi\r\n")[0])
s.quit()
"#;

/// `curl -s` of `url` with extra headers; its output.
fn curl(url: &str, headers: &[&str]) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--max-time", "10", "-D", "-"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    cmd.arg(url);
    let out = run_with_input(cmd, b"", Duration::from_secs(20));
    assert_eq!(out.code, 0, "curl {url}: {}", out.stderr);
    out.stdout
}

/// The sample value of the line starting with `series ` in `text`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn counters_after_real_sessions_in_both_formats_pass_promtool() {
    let home = TestHome::new();
    let allowlist = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/plugins-examples/rcpt-allowlist.py"
    );
    home.write("allowed", "bob@ref.test\n");
    home.smtpplugins(&format!(
        "[rcpt]\n:case \"$SMTPRCPTTO\" in eve@*) echo 'E550 no \"eve\" here';; esac\n\
         #spp: persistent workers=1\n{allowlist} allowed\n"
    ));
    let mport = free_port();
    let server = Server::daemon_with(
        &home,
        &[],
        &[
            "--metrics",
            &format!("127.0.0.1:{mport}"),
            "--max-per-ip",
            "5",
        ],
    );
    let out = python(SESSION, &[&server.port.to_string()]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(out.stdout, "550 250\n250\n");
    let url = format!("http://127.0.0.1:{mport}/metrics");
    // The session's counters settle once its connection is closed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let t = curl(&url, &[]);
        if value(&t, "spp_smtpd_connections_open") == Some(0.0) {
            break t;
        }
        assert!(Instant::now() < deadline, "{t}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    // The session only: the test server reports ready without a probe.
    assert_eq!(
        value(&text, "spp_smtpd_connections_total"),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.contains("Content-Type: text/plain; version=0.0.4"),
        "{text}"
    );
    let plugin = r#"plugin=":case \"$SMTPRCPTTO\" in eve@*) echo 'E550 no \"eve\" here';; esac""#;
    for (series, want) in [
        (
            r#"spp_smtpd_replies_total{command="RCPT",class="5xx"}"#.into(),
            1.0,
        ),
        (
            r#"spp_smtpd_replies_total{command="RCPT",class="2xx"}"#.into(),
            1.0,
        ),
        (
            r#"spp_smtpd_replies_total{command="DATA",class="2xx"}"#.into(),
            1.0,
        ),
        (
            format!(r#"spp_smtpd_plugin_runs_total{{{plugin},hook="rcpt",verdict="refuse"}}"#),
            1.0,
        ),
        (
            format!(r#"spp_smtpd_plugin_runs_total{{{plugin},hook="rcpt",verdict="none"}}"#),
            1.0,
        ),
        (
            format!(r#"spp_smtpd_plugin_run_seconds_count{{{plugin}}}"#),
            2.0,
        ),
        (
            r#"spp_smtpd_queue_handoffs_total{backend="maildir",result="queued"}"#.into(),
            1.0,
        ),
    ] {
        assert_eq!(value(&text, &series), Some(want), "{series}\n{text}");
    }
    // OpenMetrics for a client that asks for it.
    let open = curl(
        &url,
        &["Accept: application/openmetrics-text; version=1.0.0"],
    );
    assert!(
        open.contains("Content-Type: application/openmetrics-text"),
        "{open}"
    );
    assert!(open.trim_end().ends_with("# EOF"), "{open}");
    assert!(open.contains("# TYPE spp_smtpd_replies counter"), "{open}");
    // Anything else is not found.
    assert!(curl(&format!("http://127.0.0.1:{mport}/"), &[]).starts_with("HTTP/1.1 404"));
    let Some(promtool) = ["/usr/bin/promtool"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        eprintln!("SKIP: promtool is not installed (Debian package prometheus): the text was not validated");
        return;
    };
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let mut cmd = Command::new(promtool);
    cmd.args(["check", "metrics"]);
    let checked = run_with_input(cmd, body.as_bytes(), Duration::from_secs(30));
    assert_eq!(
        checked.code, 0,
        "promtool: {}{}\n{body}",
        checked.stdout, checked.stderr
    );
}

#[test]
fn refused_connections_are_counted_by_reason() {
    let home = TestHome::new();
    let mport = free_port();
    let server = Server::daemon_with(
        &home,
        &[],
        &[
            "--metrics",
            &format!("127.0.0.1:{mport}"),
            "--max-per-ip",
            "1",
        ],
    );
    let url = format!("http://127.0.0.1:{mport}/metrics");
    // The harness's probe that the port is open must be gone first.
    let deadline = Instant::now() + Duration::from_secs(10);
    while value(&curl(&url, &[]), "spp_smtpd_connections_open") != Some(0.0) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    use std::io::{BufRead, Read};
    let first = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let mut greeting = String::new();
    std::io::BufReader::new(&first)
        .read_line(&mut greeting)
        .unwrap();
    assert!(greeting.starts_with("220 "), "{greeting}");
    let mut second = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let mut refusal = String::new();
    second.read_to_string(&mut refusal).unwrap();
    assert!(refusal.starts_with("421 "), "{refusal}");
    let text = curl(&url, &[]);
    assert_eq!(
        value(
            &text,
            r#"spp_smtpd_connections_refused_total{reason="per-address"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "spp_smtpd_connections_open"),
        Some(1.0),
        "{text}"
    );
    drop(first);
}
