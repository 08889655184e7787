//! Clients that try to make the daemon hold memory or connections: huge
//! pipelined envelopes, clients that send without ever reading, and
//! clients that dribble a byte a second. Each drives the real daemon over
//! loopback sockets and looks at what the daemon answers and how much
//! memory it holds (`VmRSS`).

use crate::util::process::{rss_kib, Server};
use crate::util::TestHome;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A connection with bounded reads and writes.
fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Reads reply lines until a final one (code and a space); returns it.
fn final_reply(r: &mut impl BufRead) -> String {
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).expect("reply") > 0, "closed");
        if line.as_bytes().get(3) != Some(&b'-') {
            return line.trim_end().to_string();
        }
    }
}

#[test]
fn a_pipelined_flood_of_long_recipients_stops_at_the_byte_budget() {
    const RCPTS: usize = 20_000;
    const SESSIONS: usize = 2;
    let home = TestHome::new();
    let server = Server::daemon_with(&home, &[], &[]);
    // 800-byte addresses: 1 MiB of them is 1,310 recipients.
    let addr = format!("{}@ref.test", "a".repeat(791));
    let accepted = (1 << 20) / addr.len();
    let mut batch = b"EHLO x\r\nMAIL FROM:<a@example.org>\r\n".to_vec();
    for _ in 0..RCPTS {
        batch.extend_from_slice(format!("RCPT TO:<{addr}>\r\n").as_bytes());
    }
    let before = rss_kib(server.pid());
    let mut open = Vec::new();
    for _ in 0..SESSIONS {
        let s = connect(server.port);
        let mut w = s.try_clone().unwrap();
        let batch = batch.clone();
        // The whole batch goes out at once; replies are left unread for
        // a second.
        let writer = std::thread::spawn(move || w.write_all(&batch).is_ok());
        open.push((s, writer));
    }
    std::thread::sleep(Duration::from_secs(1));
    let mut readers = Vec::new();
    for (s, writer) in open {
        let mut r = BufReader::new(s.try_clone().unwrap());
        assert!(final_reply(&mut r).starts_with("220 "));
        assert!(final_reply(&mut r).starts_with("250 "), "EHLO");
        assert_eq!(final_reply(&mut r), "250 ok", "MAIL");
        let mut codes = std::collections::BTreeMap::<String, usize>::new();
        let mut first_refused = None;
        for i in 0..RCPTS {
            let reply = final_reply(&mut r);
            if reply != "250 ok" && first_refused.is_none() {
                first_refused = Some(i);
            }
            *codes.entry(reply).or_default() += 1;
        }
        assert!(writer.join().unwrap(), "the batch was read whole");
        assert_eq!(first_refused, Some(accepted), "{codes:?}");
        assert_eq!(codes.get("250 ok"), Some(&accepted), "{codes:?}");
        assert_eq!(
            codes.get("452 too many recipients (#4.5.3)"),
            Some(&(RCPTS - accepted)),
            "{codes:?}"
        );
        readers.push((s, r));
    }
    // Both transactions are still open, holding their recipients.
    let grown = rss_kib(server.pid()).saturating_sub(before);
    eprintln!("daemon grew by {grown} KiB with {SESSIONS} open transactions");
    assert!(
        grown < 8 * 1024,
        "daemon grew by {grown} KiB for {SESSIONS} sessions"
    );
    for (mut s, mut r) in readers {
        s.write_all(b"QUIT\r\n").unwrap();
        assert!(final_reply(&mut r).starts_with("221 "));
    }
}

#[test]
fn a_client_that_never_reads_stalls_its_session_not_the_daemons_memory() {
    const SESSIONS: usize = 16;
    // Every EHLO reply starts with this 1,000-byte greeting, so six bytes
    // of input ask for about 1 KiB of output.
    let home = TestHome::new();
    home.control("me", format!("{}\n", "m".repeat(1000)));
    let server = Server::daemon_with(&home, &[], &[]);
    let before = rss_kib(server.pid());
    let floods: Vec<_> = (0..SESSIONS)
        .map(|_| {
            let port = server.port;
            std::thread::spawn(move || {
                let s = connect(port);
                s.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut w = s.try_clone().unwrap();
                assert!(final_reply(&mut r).starts_with("220 "));
                w.write_all(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@ref.test>\r\nDATA\r\n")
                    .unwrap();
                assert_eq!(final_reply(&mut r), "250 ok");
                assert_eq!(final_reply(&mut r), "250 ok");
                assert!(final_reply(&mut r).starts_with("354 "));
                // The end of the message and then EHLOs, never reading
                // again, until the daemon stops taking them (the write
                // times out) or 16 MiB went out.
                let mut flood = b"hi\r\n.\r\n".to_vec();
                flood.extend_from_slice(&b"EHLO\r\n".repeat(5000));
                let mut sent = 0;
                while sent < 16 << 20 {
                    match w.write(&flood) {
                        Ok(n) => sent += n,
                        Err(_) => break,
                    }
                    flood = b"EHLO\r\n".repeat(5000);
                }
                assert!(sent < 16 << 20, "the daemon kept reading");
                s
            })
        })
        .collect();
    let streams: Vec<TcpStream> = floods.into_iter().map(|t| t.join().unwrap()).collect();
    let grown = rss_kib(server.pid()).saturating_sub(before);
    eprintln!("daemon grew by {grown} KiB with {SESSIONS} stalled sessions");
    assert!(
        grown < 16 * 1024,
        "daemon grew by {grown} KiB for {SESSIONS} sessions that do not read"
    );
    drop(streams);
    assert_eq!(server.terminate(), 0);
}

/// A client that dribbles one byte a second.
struct Dribbler {
    stream: TcpStream,
    /// What it sends, a byte a tick (never all of it).
    text: &'static [u8],
    sent: usize,
    /// What the daemon sent after the setup.
    got: Vec<u8>,
    /// How long after its first dribbled byte the daemon closed it.
    closed: Option<Duration>,
    started: Instant,
}

impl Dribbler {
    /// Connects from `source`, reads the greeting, sends `setup` and
    /// reads until `until`, then sends its first byte.
    fn start(
        rt: &tokio::runtime::Runtime,
        source: &str,
        port: u16,
        setup: &[u8],
        until: &str,
        text: &'static [u8],
    ) -> Dribbler {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let stream = rt
            .block_on(socket.connect(format!("127.0.0.1:{port}").parse().unwrap()))
            .expect("connect")
            .into_std()
            .unwrap();
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut r = BufReader::new(stream.try_clone().unwrap());
        assert!(final_reply(&mut r).starts_with("220 "));
        (&stream).write_all(setup).unwrap();
        if !until.is_empty() {
            while !final_reply(&mut r).starts_with(until) {}
        }
        stream.set_nonblocking(true).unwrap();
        let mut d = Dribbler {
            stream,
            text,
            sent: 0,
            got: Vec::new(),
            closed: None,
            started: Instant::now(),
        };
        d.dribble();
        d
    }

    /// Sends its next byte (the daemon may have closed: errors are fine).
    fn dribble(&mut self) {
        if self.closed.is_none() && self.sent < self.text.len() {
            let _ = (&self.stream).write(&self.text[self.sent..=self.sent]);
            self.sent += 1;
        }
    }

    /// Takes what arrived; notes when the daemon closed.
    fn poll(&mut self) {
        let mut buf = [0u8; 512];
        while self.closed.is_none() {
            match (&self.stream).read(&mut buf) {
                Ok(0) => self.closed = Some(self.started.elapsed()),
                Ok(n) => self.got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => self.closed = Some(self.started.elapsed()),
            }
        }
    }
}

#[test]
fn clients_dribbling_a_byte_a_second_are_closed_while_a_real_client_gets_through() {
    const PER_ADDRESS: usize = 50;
    let home = TestHome::new();
    home.control("timeoutsmtpd", "2\n");
    home.control("mindatarategrace", "2\n");
    let server = Server::daemon_with(
        &home,
        &[],
        &["--max-per-ip", "100", "--max-connections", "1000"],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    // From 127.0.0.2-9: half dribble a command line, half a message body.
    let mut slow = Vec::new();
    for i in 0..8 * PER_ADDRESS {
        let source = format!("127.0.0.{}", 2 + i % 8);
        let d = if i % 2 == 0 {
            Dribbler::start(&rt, &source, server.port, b"", "", b"HELO slow.example.org")
        } else {
            let setup = b"HELO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@ref.test>\r\nDATA\r\n";
            Dribbler::start(
                &rt,
                &source,
                server.port,
                setup,
                "354 ",
                b"Subject: slow\r\n\r\n",
            )
        };
        slow.push(d);
    }
    // A real client meanwhile.
    let port = server.port.to_string();
    let real = std::thread::spawn(move || {
        crate::util::process::python(
            "import smtplib, sys\n\
             s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=20)\n\
             s.sendmail('a@example.org', ['real@ref.test'], 'Subject: real\\r\\n\\r\\nreal client\\r\\n')\n\
             s.quit()\n\
             print('sent')\n",
            &[&port],
        )
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut tick = Instant::now();
    while slow.iter().any(|d| d.closed.is_none()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let due = tick.elapsed() >= Duration::from_secs(1);
        if due {
            tick = Instant::now();
        }
        for d in &mut slow {
            // What the daemon sent is read before the next byte goes out.
            d.poll();
            if due {
                d.dribble();
            }
        }
    }
    let real = real.join().unwrap();
    assert_eq!(real.stdout.trim(), "sent", "{real:?}");
    let messages = home.maildir();
    assert_eq!(messages.len(), 1);
    assert!(String::from_utf8_lossy(&messages[0]).contains("real client"));
    let open = slow.iter().filter(|d| d.closed.is_none()).count();
    assert_eq!(open, 0, "{open} slow clients still connected after 15 s");
    for d in &slow {
        assert_eq!(String::from_utf8_lossy(&d.got), "451 timeout (#4.4.2)\r\n");
        let took = d.closed.unwrap();
        assert!(took < Duration::from_secs(8), "closed after {took:?}");
    }
}
