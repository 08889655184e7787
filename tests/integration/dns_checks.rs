//! The built-in checks through the real binary (`stdio`, as under
//! tcpserver, and `serve`), against a real DNS server started here on
//! loopback: dnsmasq holding the list entries and SPF records, and a
//! hostile responder of our own for answers no real server gives
//! (garbage, SERVFAIL, CNAME loops, wrong ids, silence). Nothing is asked
//! of any other resolver: `control/dnsserver` names the loopback one, and
//! one test checks every packet the server sends under strace.

use crate::util::mta::find_program;
use crate::util::process::{stdio, DnsServer, Finished, Server};
use crate::util::TestHome;
use std::net::UdpSocket;
use std::time::Duration;

/// The records of the test zones (dnsmasq options). Names under a
/// `--local` zone that are not listed get NXDOMAIN.
const RECORDS: &[&str] = &[
    "--local=/zen.test/",
    "--local=/bl.test/",
    "--local=/rhs.test/",
    "--local=/example/",
    // The client 127.0.0.2 is on zen.test, with a TXT text.
    "--address=/2.0.0.127.zen.test/127.0.0.2",
    "--txt-record=2.0.0.127.zen.test,Listed by zen see https://zen.test/",
    // 127.0.0.5 gets zen.test's "query refused" code, not a listing.
    "--address=/5.0.0.127.zen.test/127.255.255.254",
    // 127.0.0.6 is listed with a TXT of 600 bytes (three strings).
    "--address=/6.0.0.127.zen.test/127.0.0.2",
    // 2001:db8::1 is on bl.test (nibble form, RFC 5782 §2.4).
    "--address=/1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test/127.0.0.4",
    // A sender domain on rhs.test.
    "--address=/spammer.example.rhs.test/127.0.0.2",
    // Resolvable and not.
    "--mx-host=good.example,mx.good.example,10",
    "--host-record=mx.good.example,192.0.2.25",
    "--host-record=aonly.example,192.0.2.26",
    "--host-record=spammer.example,192.0.2.27",
    // SPF (RFC 7208).
    "--txt-record=pass.example,v=spf1 ip4:127.0.0.0/8 -all",
    "--txt-record=fail.example,v=spf1 -all",
    "--txt-record=soft.example,v=spf1 ~all",
    "--txt-record=neutral.example,v=spf1 ?all",
    "--txt-record=client.example,v=spf1 ip4:127.0.0.0/8 -all",
    "--txt-record=perm.example,v=spf1 include:i1.example include:i2.example include:i3.example include:i4.example include:i5.example include:i6.example include:i7.example include:i8.example include:i9.example include:i10.example include:i11.example -all",
    "--txt-record=i1.example,v=spf1 -all",
    "--txt-record=i2.example,v=spf1 -all",
    "--txt-record=i3.example,v=spf1 -all",
    "--txt-record=i4.example,v=spf1 -all",
    "--txt-record=i5.example,v=spf1 -all",
    "--txt-record=i6.example,v=spf1 -all",
    "--txt-record=i7.example,v=spf1 -all",
    "--txt-record=i8.example,v=spf1 -all",
    "--txt-record=i9.example,v=spf1 -all",
    "--txt-record=i10.example,v=spf1 -all",
    "--txt-record=i11.example,v=spf1 -all",
];

/// dnsmasq with [`RECORDS`] (plus `extra`), or `None` after saying why not.
fn dns_server(extra: &[&str]) -> Option<DnsServer> {
    if find_program(&["/usr/sbin/dnsmasq"], "dnsmasq").is_none() {
        eprintln!("SKIP: dnsmasq is not installed (Debian package dnsmasq-base)");
        return None;
    }
    let long_txt = format!(
        "--txt-record=6.0.0.127.zen.test,{},{},{}",
        "a".repeat(200),
        "b".repeat(200),
        "c".repeat(200)
    );
    let mut records: Vec<&str> = RECORDS.to_vec();
    records.push(&long_txt);
    records.extend_from_slice(extra);
    Some(DnsServer::start(&records))
}

/// A home whose checks ask `port` on loopback.
fn home_asking(port: u16) -> TestHome {
    let home = TestHome::new();
    home.control("rcpthosts", "ref.test\n");
    home.control("dnsserver", format!("127.0.0.1:{port}\n"));
    home
}

/// One pipelined session from `ip` with `commands` (CRLF added), QUIT
/// at the end.
fn session(home: &TestHome, ip: &str, env: &[(&str, &str)], commands: &[&str]) -> Finished {
    let mut input = String::new();
    for c in commands {
        input.push_str(c);
        input.push_str("\r\n");
    }
    input.push_str("QUIT\r\n");
    let mut vars = vec![("TCPREMOTEIP", ip)];
    vars.extend_from_slice(env);
    stdio(home, &vars, input.as_bytes())
}

/// The reply lines after the greeting.
fn replies(f: &Finished) -> Vec<String> {
    f.lines().iter().skip(1).map(|l| l.to_string()).collect()
}

#[test]
fn dnsbl_refuses_listed_ipv4_and_ipv6_clients_but_not_postmaster() {
    let Some(dns) = dns_server(&[]) else {
        return;
    };
    let home = home_asking(dns.port);
    home.control(
        "dnsbl_zones",
        "zen.test\nbl.test Blocked: see https://bl.test/\n",
    );
    let cmds = [
        "HELO client.example",
        "MAIL FROM:<a@good.example>",
        "RCPT TO:<user@ref.test>",
        "RCPT TO:<postmaster@ref.test>",
        "RCPT TO:<Abuse@ref.test>",
    ];
    let f = session(&home, "127.0.0.2", &[], &cmds);
    let r = replies(&f);
    assert_eq!(
        r[2],
        "553 sorry, your address is listed in zen.test: Listed by zen see https://zen.test/ (#5.7.1)",
        "{f:?}"
    );
    assert_eq!(&r[3..5], ["250 ok", "250 ok"], "{f:?}");
    assert!(f.stderr.contains("check=\"dnsbl\""), "{}", f.stderr);

    let f = session(&home, "2001:db8::1", &[], &cmds);
    assert_eq!(
        replies(&f)[2],
        "553 sorry, your address is listed in bl.test: Blocked: see https://bl.test/ (#5.7.1)",
        "{f:?}"
    );
    // Not listed: IPv4, and IPv6 in another /64.
    for ip in ["127.0.0.3", "2001:db8:1::1"] {
        let f = session(&home, ip, &[], &cmds);
        assert_eq!(
            &replies(&f)[2..5],
            ["250 ok", "250 ok", "250 ok"],
            "{ip}: {f:?}"
        );
    }
    // A refusal code (127.255.255.x) is a list failure, not a listing.
    let f = session(&home, "127.0.0.5", &[], &cmds);
    assert_eq!(replies(&f)[2], "250 ok", "{f:?}");
    assert!(f.stderr.contains("DNS list did not answer"), "{}", f.stderr);
    // A huge TXT record is cut to 200 printable bytes in the reply.
    let f = session(&home, "127.0.0.6", &[], &cmds);
    let refusal = &replies(&f)[2];
    assert!(
        refusal.starts_with("553 sorry, your address is listed in zen.test: aaaa"),
        "{f:?}"
    );
    assert!(refusal.len() < 300, "{refusal}");
}

#[test]
fn relay_clients_rblsmtpd_and_plugins_skip_or_set_the_lists() {
    let Some(dns) = dns_server(&[]) else {
        return;
    };
    let home = home_asking(dns.port);
    home.control("dnsbl_zones", "zen.test\n");
    let cmds = [
        "HELO x",
        "MAIL FROM:<a@good.example>",
        "RCPT TO:<user@ref.test>",
    ];
    // RBLSMTPD empty: the lists are skipped for this client.
    let f = session(&home, "127.0.0.2", &[("RBLSMTPD", "")], &cmds);
    assert_eq!(replies(&f)[2], "250 ok", "{f:?}");
    // RBLSMTPD with a text: 451 with it, or 553 with a leading '-'.
    let f = session(&home, "127.0.0.3", &[("RBLSMTPD", "slow down")], &cmds);
    assert_eq!(replies(&f)[2], "451 slow down", "{f:?}");
    let f = session(&home, "127.0.0.3", &[("RBLSMTPD", "-go away")], &cmds);
    assert_eq!(replies(&f)[2], "553 go away", "{f:?}");
    // RELAYCLIENT skips the lists.
    let f = session(&home, "127.0.0.2", &[("RELAYCLIENT", "")], &cmds);
    assert_eq!(replies(&f)[2], "250 ok", "{f:?}");
    // A plugin's O at RCPT skips them, as it skips rcpthosts; plugins see
    // the results.
    let plugin = home.plugin(
        "rcpt",
        "#!/bin/sh\necho \"DNSBL=$DNSBL TEXT=$DNSBL_TEXT\" >> seen\necho O\n",
    );
    home.smtpplugins(&format!("[rcpt]\n{plugin}\n"));
    let f = session(&home, "127.0.0.2", &[], &cmds);
    assert_eq!(replies(&f)[2], "250 ok", "{f:?}");
    let seen = std::fs::read_to_string(home.dir().join("seen")).unwrap();
    assert_eq!(
        seen,
        "DNSBL=zen.test TEXT=Listed by zen see https://zen.test/\n"
    );
}

#[test]
fn rhsbl_and_resolvable_sender() {
    let Some(dns) = dns_server(&[]) else {
        return;
    };
    let home = home_asking(dns.port);
    home.control("rhsbl_zones", "rhs.test\n");
    home.control("require_resolvable_fromhost", "1\n");
    let run = |sender: &str| {
        let f = session(
            &home,
            "127.0.0.3",
            &[],
            &[
                "HELO x",
                &format!("MAIL FROM:<{sender}>"),
                "RCPT TO:<user@ref.test>",
            ],
        );
        replies(&f)
    };
    assert_eq!(run("a@good.example")[1..3], ["250 ok", "250 ok"]);
    assert_eq!(run("a@aonly.example")[1..3], ["250 ok", "250 ok"]);
    assert_eq!(
        run("")[1..3],
        ["250 ok", "250 ok"],
        "the null sender is not checked"
    );
    let r = run("a@nowhere.example");
    assert_eq!(
        r[1],
        "450 sorry, I can't find a mail exchanger or address for your sender domain (#4.1.8)"
    );
    assert_eq!(r[2], "503 MAIL first (#5.5.1)");
    let r = run("a@spammer.example");
    assert_eq!(
        r[2],
        "553 sorry, your sender domain is listed in rhs.test: listed in rhs.test (#5.7.1)"
    );
    // Switched off with 0, as in qpsmtpd.
    home.control("require_resolvable_fromhost", "0\n");
    assert_eq!(run("a@nowhere.example")[1], "250 ok");
}

/// Delivers one message from `sender` (HELO `helo`) and returns the
/// replies and the stored message.
fn deliver(home: &TestHome, helo: &str, sender: &str, body: &str) -> (Vec<String>, Option<String>) {
    // Only this message is in Maildir/new afterwards.
    if let Ok(entries) = std::fs::read_dir(home.dir().join("Maildir/new")) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let data = format!("{body}\r\n.");
    let f = session(
        home,
        "127.0.0.1",
        &[],
        &[
            &format!("HELO {helo}"),
            &format!("MAIL FROM:<{sender}>"),
            "RCPT TO:<user@ref.test>",
            "DATA",
            &data,
        ],
    );
    let msgs = home.maildir();
    assert!(msgs.len() <= 1, "{msgs:?}");
    let stored = msgs
        .first()
        .map(|m| String::from_utf8_lossy(m).into_owned());
    (replies(&f), stored)
}

#[test]
fn spf_results_are_recorded_and_fail_can_be_refused() {
    let Some(dns) = dns_server(&[]) else {
        return;
    };
    let home = home_asking(dns.port);
    home.control("spf", "record\n");
    // The [data] hook sees the results.
    let plugin = home.plugin(
        "data",
        "#!/bin/sh\necho \"HX-Seen: SPF=$SPF SPF_HELO=$SPF_HELO SPF_DOMAIN=$SPF_DOMAIN\"\n",
    );
    home.smtpplugins(&format!("[data]\n{plugin}\n"));
    let body = "Authentication-Results: mx.ref.test; spf=pass smtp.mailfrom=forged.example\r\n\
                Authentication-Results: other.example; dkim=pass\r\n\
                Subject: t\r\n\r\nhello";
    let cases = [
        ("pass.example", "pass"),
        ("fail.example", "fail"),
        ("soft.example", "softfail"),
        ("neutral.example", "neutral"),
        ("perm.example", "permerror"),
        ("nospf.example", "none"),
    ];
    for (domain, result) in cases {
        let (r, stored) = deliver(&home, "client.example", &format!("a@{domain}"), body);
        assert_eq!(r[1], "250 ok", "{domain}: {r:?}");
        let stored = stored.unwrap_or_else(|| panic!("{domain}: nothing stored: {r:?}"));
        // One field, first in the message, with both identities.
        let field = stored
            .split("\nAuthentication-Results: mx.ref.test;\n")
            .nth(1)
            .unwrap_or_else(|| panic!("{domain}: no field: {stored}"));
        let mut lines = field.lines();
        let helo = lines.next().unwrap();
        assert!(
            helo.starts_with("\tspf=pass (") && helo.ends_with(" smtp.helo=client.example;"),
            "{helo}"
        );
        let mail = lines.next().unwrap();
        assert!(
            mail.starts_with(&format!("\tspf={result} ("))
                && mail.ends_with(&format!(" smtp.mailfrom=a@{domain}")),
            "{mail}"
        );
        assert!(lines.next().unwrap().starts_with("Received: "), "{stored}");
        assert!(
            stored.contains(&format!(
                "X-Seen: SPF={result} SPF_HELO=pass SPF_DOMAIN={domain}"
            )),
            "{stored}"
        );
        // The forged field claiming our name is gone; the other stays.
        assert!(!stored.contains("forged.example"), "{stored}");
        assert!(
            stored.contains("Authentication-Results: other.example; dkim=pass"),
            "{stored}"
        );
    }
    // refuse: fail is refused at MAIL, softfail is not.
    home.control("spf", "refuse\n");
    let (r, stored) = deliver(&home, "client.example", "a@fail.example", "x");
    assert_eq!(
        r[1],
        "550 sorry, SPF check failed: fail.example does not allow this host to send its mail (#5.7.23)"
    );
    assert!(stored.is_none());
    let (r, _) = deliver(&home, "client.example", "a@soft.example", "x");
    assert_eq!(r[1], "250 ok", "{r:?}");
}

/// A DNS responder answering every query with what a hostile or broken
/// server might send, chosen by the zone asked: `garbage.test` (random
/// bytes with the query's id), `servfail.test`, `loop.test` (a CNAME to
/// itself), `wrongid.test` (a listing answer under another id),
/// `short.test` (an answer count with no records), `silent.test` (no
/// answer). Runs until the test ends.
fn hostile_dns() -> u16 {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        for _ in 0..10_000 {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                return;
            };
            if n < 12 {
                continue;
            }
            let q = &buf[..n];
            let name = String::from_utf8_lossy(q).to_ascii_lowercase();
            let mut reply = q.to_vec();
            reply[2] = 0x81; // QR, RD
            reply[3] = 0x80; // RA, NOERROR
            if name.contains("silent") {
                continue;
            } else if name.contains("garbage") {
                reply.truncate(2);
                reply.extend_from_slice(&[0xff, 0x13, 0x00, 0x07, 0xde, 0xad, 0xbe]);
            } else if name.contains("servfail") {
                reply[3] = 0x82;
            } else if name.contains("loop") {
                reply[7] = 1; // ANCOUNT
                              // NAME (pointer to the question), CNAME, IN, TTL, RDLENGTH, RDATA (pointer).
                reply.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xc0, 12]);
            } else if name.contains("wrongid") {
                reply[0] ^= 0x55;
                reply[7] = 1;
                reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 2]);
            } else if name.contains("short") {
                reply[7] = 3;
            }
            let _ = sock.send_to(&reply, from);
        }
    });
    port
}

#[test]
fn broken_and_hostile_answers_never_stall_or_list() {
    let port = hostile_dns();
    let home = TestHome::new();
    home.control("dnsserver", format!("127.0.0.1:{port}\n"));
    home.control("timeoutdns", "2\n");
    home.control(
        "dnsbl_zones",
        "garbage.test\nservfail.test\nloop.test\nwrongid.test\nshort.test\nsilent.test\n",
    );
    home.control("rhsbl_zones", "garbage.test\nloop.test\nsilent.test\n");
    home.control("require_resolvable_fromhost", "1\n");
    home.control("spf", "record\n");
    let started = std::time::Instant::now();
    let f = session(
        &home,
        "127.0.0.2",
        &[],
        &[
            "HELO x",
            "MAIL FROM:<a@silent.test>",
            "RCPT TO:<user@ref.test>",
        ],
    );
    let r = replies(&f);
    // The sender's domain could not be looked up: 450, within the deadline.
    assert_eq!(
        r[1], "450 sorry, I can't find a mail exchanger or address for your sender domain (#4.1.8)",
        "{f:?}"
    );
    assert!(
        f.stderr.contains("sender domain lookup failed"),
        "{}",
        f.stderr
    );
    for zone in [
        "garbage.test",
        "servfail.test",
        "loop.test",
        "wrongid.test",
        "short.test",
        "silent.test",
    ] {
        assert!(
            f.stderr.contains(&format!("zone={zone}")),
            "{zone}: {}",
            f.stderr
        );
    }
    assert!(!f.stderr.contains("listed in"), "{}", f.stderr);
    // Lists and SPF failing never refuse the recipient by themselves.
    home.control("require_resolvable_fromhost", "0\n");
    let f = session(
        &home,
        "127.0.0.2",
        &[],
        &[
            "HELO x",
            "MAIL FROM:<a@silent.test>",
            "RCPT TO:<user@ref.test>",
        ],
    );
    assert_eq!(&replies(&f)[1..3], ["250 ok", "250 ok"], "{f:?}");
    // dnslistfailure=defer: a list that did not answer defers RCPT.
    home.control("dnslistfailure", "defer\n");
    let f = session(
        &home,
        "127.0.0.2",
        &[],
        &[
            "HELO x",
            "MAIL FROM:<a@silent.test>",
            "RCPT TO:<user@ref.test>",
        ],
    );
    assert_eq!(
        replies(&f)[2],
        "451 sorry, the DNS list garbage.test did not answer, try again later (#4.4.3)",
        "{f:?}"
    );
    // Four sessions with a 2 s deadline per stage: well under a minute.
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_list_that_times_out_is_skipped_and_logged() {
    // dnsmasq forwards slow.test to a socket that never answers.
    let black_hole = UdpSocket::bind("127.0.0.1:0").unwrap();
    let hole = format!(
        "--server=/slow.test/127.0.0.1#{}",
        black_hole.local_addr().unwrap().port()
    );
    let Some(dns) = dns_server(&[&hole]) else {
        return;
    };
    let home = home_asking(dns.port);
    home.control("timeoutdns", "1\n");
    home.control("dnsbl_zones", "slow.test\nzen.test\n");
    let f = session(
        &home,
        "127.0.0.3",
        &[],
        &[
            "HELO x",
            "MAIL FROM:<a@good.example>",
            "RCPT TO:<user@ref.test>",
        ],
    );
    assert_eq!(&replies(&f)[1..3], ["250 ok", "250 ok"], "{f:?}");
    assert!(
        f.stderr.contains("DNS list did not answer") && f.stderr.contains("zone=slow.test"),
        "{}",
        f.stderr
    );
    assert!(!f.stderr.contains("zone=zen.test"), "{}", f.stderr);
}

#[test]
fn the_daemon_caches_answers_and_asks_only_the_loopback_server() {
    let Some(_) = find_program(&["/usr/bin/strace"], "strace") else {
        eprintln!("SKIP: strace is not installed");
        return;
    };
    let log = std::env::temp_dir().join(format!("spp-dnsmasq-{}.log", std::process::id()));
    let log_arg = format!("--log-facility={}", log.display());
    // Answers with a TTL (dnsmasq's own records have none by default).
    let Some(dns) = dns_server(&["--log-queries", &log_arg, "--local-ttl=300"]) else {
        return;
    };
    let home = TestHome::new();
    home.control("dnsbl_zones", "zen.test\n");
    home.control("spf", "record\n");
    let server = Server::daemon_with(
        &home,
        &[],
        &["--dns-server", &format!("127.0.0.1:{}", dns.port)],
    );
    // Three sessions from the same listed address: one query per name.
    for _ in 0..3 {
        let f = crate::util::process::swaks(&[
            "--server",
            &format!("127.0.0.1:{}", server.port),
            "--from",
            "a@pass.example",
            "--to",
            "user@ref.test",
            "--helo",
            "client.example",
            "--local-interface",
            "127.0.0.2",
        ]);
        assert!(
            f.stdout
                .contains("<** 553 sorry, your address is listed in zen.test"),
            "{}",
            f.stdout
        );
    }
    let queries = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let asked = |name: &str| {
        queries
            .lines()
            .filter(|l| l.contains(&format!("query[A] {name} ")))
            .count()
    };
    assert_eq!(asked("2.0.0.127.zen.test"), 1, "{queries}");
    drop(server);

    // stdio under strace: every datagram and connection goes to the
    // loopback server.
    let home = home_asking(dns.port);
    home.control("dnsbl_zones", "zen.test\n");
    home.control("spf", "record\n");
    home.control("require_resolvable_fromhost", "1\n");
    let trace = std::env::temp_dir().join(format!("spp-strace-{}", std::process::id()));
    let mut cmd = std::process::Command::new("strace");
    cmd.arg("-f")
        .arg("-e")
        .arg("trace=connect,sendto,sendmsg,sendmmsg")
        .arg("-o")
        .arg(&trace)
        .arg(crate::util::process::bin())
        .arg("--home")
        .arg(home.dir())
        .arg("stdio")
        .env_clear()
        .env("TCPREMOTEIP", "127.0.0.2")
        .env("PATH", "/usr/bin:/bin");
    let f = crate::util::process::run_with_input(
        cmd,
        b"HELO client.example\r\nMAIL FROM:<a@good.example>\r\nRCPT TO:<user@ref.test>\r\nQUIT\r\n",
        Duration::from_secs(60),
    );
    let calls = std::fs::read_to_string(&trace).unwrap_or_default();
    let _ = std::fs::remove_file(&trace);
    if calls.is_empty() && f.stderr.contains("ptrace") {
        eprintln!("SKIP: strace cannot trace here: {}", f.stderr.trim());
        return;
    }
    assert!(
        f.stdout.contains("553 sorry, your address is listed"),
        "{f:?}"
    );
    let inet: Vec<&str> = calls.lines().filter(|l| l.contains("AF_INET")).collect();
    assert!(!inet.is_empty(), "no DNS traffic traced:\n{calls}");
    let ours = format!("sin_port=htons({})", dns.port);
    for l in &inet {
        assert!(
            l.contains(&ours) && l.contains("127.0.0.1"),
            "a packet not for the loopback DNS server: {l}"
        );
    }
}

#[test]
fn check_reports_bad_check_files_with_their_line() {
    let home = TestHome::new();
    home.control("dnsbl_zones", "ok.test\nbad/zone\n");
    let f = crate::util::process::run_spp(&home, &["check"]);
    assert_ne!(f.code, 0);
    assert!(
        f.stdout.contains("control/dnsbl_zones:2:") || f.stderr.contains("control/dnsbl_zones:2:"),
        "{f:?}"
    );
    let home = TestHome::new();
    home.control("spf", "reject\n");
    let f = crate::util::process::run_spp(&home, &["check"]);
    assert_ne!(f.code, 0);
    assert!(
        format!("{f:?}").contains("control/spf:1: expected record, refuse or off"),
        "{f:?}"
    );
    let home = TestHome::new();
    home.control("dnsserver", "localhost\n");
    let f = crate::util::process::run_spp(&home, &["check"]);
    assert!(format!("{f:?}").contains("control/dnsserver:1:"), "{f:?}");
}

/// Runs `program args` with `input` on stdin and returns its stdout.
fn filter_through(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    let f = crate::util::process::run_with_input(cmd, input, Duration::from_secs(60));
    assert_eq!(f.code, 0, "{program} {args:?}: {}", f.stderr);
    f.stdout.into_bytes()
}

/// `text` with CRLF line ends and dot-stuffed, ending with the `.` line.
fn as_data(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text).replace("\r\n", "\n");
    let mut data = String::new();
    for line in text.lines() {
        if line.starts_with('.') {
            data.push('.');
        }
        data.push_str(line);
        data.push_str("\r\n");
    }
    data.push('.');
    data
}

/// One message with DATA from 127.0.0.1; the replies and what is stored.
fn deliver_raw(home: &TestHome, sender: &str, message: &[u8]) -> (Vec<String>, Option<String>) {
    if let Ok(entries) = std::fs::read_dir(home.dir().join("Maildir/new")) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let data = as_data(message);
    let f = session(
        home,
        "127.0.0.1",
        &[],
        &[
            "HELO client.example",
            &format!("MAIL FROM:<{sender}>"),
            "RCPT TO:<user@ref.test>",
            "DATA",
            &data,
        ],
    );
    let msgs = home.maildir();
    (
        replies(&f),
        msgs.first()
            .map(|m| String::from_utf8_lossy(m).into_owned()),
    )
}

#[test]
fn dkim_arc_and_dmarc_are_verified_recorded_and_enforced() {
    if !std::path::Path::new("/usr/bin/dkimsign").exists() {
        eprintln!("SKIP: dkimsign is not installed (Debian package python3-dkim)");
        return;
    }
    let home = TestHome::new();
    let key = home.dir().join("dkim.pem");
    let key_s = key.to_str().unwrap();
    filter_through("openssl", &["genrsa", "-out", key_s, "2048"], b"");
    let der = filter_through(
        "openssl",
        &["rsa", "-in", key_s, "-pubout", "-outform", "DER"],
        b"",
    );
    let _ = der;
    let public = filter_through(
        "sh",
        &[
            "-c",
            &format!("openssl rsa -in {key_s} -pubout -outform DER 2>/dev/null | base64 -w0"),
        ],
        b"",
    );
    let public = String::from_utf8(public).unwrap();
    // A 2048-bit key does not fit one TXT string: three of them.
    let (a, rest) = public.split_at(150);
    let (b, c) = rest.split_at(150);
    let key_record =
        format!("--txt-record=sel._domainkey.signed.example,v=DKIM1; k=rsa; p={a},{b},{c}");
    let Some(dns) = dns_server(&[
        &key_record,
        "--txt-record=_dmarc.signed.example,v=DMARC1; p=reject",
        "--txt-record=_dmarc.quar.example,v=DMARC1; p=quarantine",
    ]) else {
        return;
    };
    home.control("dnsserver", format!("127.0.0.1:{}\n", dns.port));
    home.control("dmarc", "record\n");
    // [body] plugins see the results.
    let plugin = home.plugin(
        "body",
        "#!/bin/sh\necho \"HX-Body: DKIM=$DKIM DKIM_DOMAINS=$DKIM_DOMAINS DMARC=$DMARC DMARC_POLICY=$DMARC_POLICY ARC=$ARC\"\n",
    );
    home.smtpplugins(&format!("[body]\n{plugin}\n"));
    let message = b"From: Alice <alice@signed.example>\r\nTo: user@ref.test\r\nSubject: signed\r\n\
                    Authentication-Results: relay.example; dkim=pass header.d=signed.example\r\n\
                    \r\nHello there.\r\n.leading dot\r\n";
    let signed = filter_through(
        "/usr/bin/dkimsign",
        &["sel", "signed.example", key_s],
        message,
    );

    // Signed: dkim=pass, and DMARC passes through DKIM alone (the
    // envelope sender's domain has no SPF record).
    let (r, stored) = deliver_raw(&home, "bounce@nospf.example", &signed);
    assert!(r[4].starts_with("250 ok"), "{r:?}");
    let stored = stored.expect("stored");
    let field = stored
        .split("Authentication-Results: mx.ref.test;")
        .nth(1)
        .and_then(|f| f.split("\nReceived:").next())
        .unwrap_or_else(|| panic!("no field: {stored}"));
    assert!(
        field.contains("\tdkim=pass") && field.contains("signed.example"),
        "{field}"
    );
    assert!(
        field.contains("\tdmarc=pass") && field.contains("header.from=signed.example"),
        "{field}"
    );
    assert!(field.contains("\tspf=none"), "{field}");
    assert!(field.contains("\tarc=none"), "{field}");
    assert!(
        stored.contains(
            "X-Body: DKIM=pass DKIM_DOMAINS=signed.example DMARC=pass DMARC_POLICY=reject ARC=none"
        ),
        "{stored}"
    );
    // Exactly one field of ours, above our Received: line.
    assert_eq!(
        stored
            .matches("Authentication-Results: mx.ref.test")
            .count(),
        1,
        "{stored}"
    );
    assert!(
        stored.find("Authentication-Results: mx.ref.test") < stored.find("Received: from"),
        "{stored}"
    );

    // Tampered with: dkim=fail and DMARC fails; recorded only.
    let tampered = String::from_utf8_lossy(&signed).replace("Hello there.", "Hello there!");
    let (r, stored) = deliver_raw(&home, "bounce@nospf.example", tampered.as_bytes());
    assert!(r[4].starts_with("250 ok"), "{r:?}");
    let stored = stored.expect("stored");
    assert!(stored.contains("\tdkim=fail"), "{stored}");
    assert!(stored.contains("\tdmarc=fail"), "{stored}");
    assert!(
        stored.contains("X-Body: DKIM=fail DKIM_DOMAINS= DMARC=fail DMARC_POLICY=reject"),
        "{stored}"
    );

    // ARC: a chain sealed by a forwarder verifies (when dkimpy can seal).
    let arc = std::process::Command::new("/usr/bin/arcsign")
        .args(["sel", "signed.example", key_s, "relay.example"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&signed)?;
            c.wait_with_output()
        });
    match arc {
        Ok(out) if out.status.success() && out.stdout.starts_with(b"ARC-Seal:") => {
            // arcsign prints the whole sealed message.
            let (r, stored) = deliver_raw(&home, "bounce@nospf.example", &out.stdout);
            assert!(r[4].starts_with("250 ok"), "{r:?}");
            let stored = stored.expect("stored");
            assert!(stored.contains("\tarc=pass"), "{stored}");
        }
        _ => eprintln!("SKIP: ARC case: arcsign cannot seal here (Debian package python3-authres)"),
    }

    // enforce: p=reject refuses a failing message; p=quarantine marks it.
    home.control("dmarc", "enforce\n");
    let (r, stored) = deliver_raw(&home, "bounce@nospf.example", tampered.as_bytes());
    assert_eq!(
        r[4],
        "550 sorry, the message fails DMARC and signed.example asks to reject it (#5.7.1)"
    );
    assert!(stored.is_none());
    let (r, stored) = deliver_raw(&home, "bounce@nospf.example", &signed);
    assert!(r[4].starts_with("250 ok"), "{r:?}");
    assert!(stored.is_some());
    let unsigned = b"From: x@quar.example\r\nSubject: q\r\n\r\nbody\r\n";
    let (r, stored) = deliver_raw(&home, "x@fail.example", unsigned);
    assert!(r[4].starts_with("250 ok"), "{r:?}");
    let stored = stored.expect("stored");
    assert!(
        stored.contains("X-DMARC-Quarantine: quar.example\n"),
        "{stored}"
    );
}
