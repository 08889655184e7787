//! The client connection as the session sees it: an input buffer that
//! yields command lines (bounded) and raw bytes for DATA, and an output
//! buffer that is flushed before every read, so a pipelined batch gets all
//! its replies in order, in as few writes as possible. Replies queue up to
//! [`MAX_OUT`] bytes; beyond that they are written before the next command
//! is read, so a client that sends without reading stalls its own session
//! instead of growing the server's buffer.
//!
//! Reads time out after `timeoutsmtpd` without input, and a command line
//! must be complete within `timeoutsmtpd` of its first byte, so a client
//! dribbling a byte at a time cannot hold the connection; a message body
//! has the deadlines of its data rate (`control/mindatarate`), passed to
//! [`SmtpIo::fill_by`].

use crate::protocol::enhanced::{self, ReplyContext};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

/// Longest command line accepted, without its CRLF (RFC 5321 says 512).
pub const MAX_LINE: usize = 4096;
/// Largest input buffer: a full line plus room for pipelined commands.
const INBUF: usize = MAX_LINE + 2048;
/// Input buffer of an idle session; it grows (doubling, up to [`INBUF`])
/// only while a long line or a pipelined batch is being read, and shrinks
/// back once consumed, so idle connections stay small.
const IDLE_INBUF: usize = 512;
/// Input buffer while a message body is read (`bulk`).
const BULK_INBUF: usize = 32 * 1024;
/// Queued output beyond which replies are written before the next command
/// line is taken from the input (backpressure on a pipelining client).
pub const MAX_OUT: usize = 64 * 1024;

/// Why the connection cannot be used any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoEnd {
    /// The client closed the connection (or it failed).
    Closed,
    /// No input within `timeoutsmtpd`, a command line not complete within
    /// `timeoutsmtpd` of its first byte, or a message body too slow.
    ReadTimeout,
    /// Output could not be written within `timeoutsmtpd`.
    WriteTimeout,
    /// The daemon is shutting down and the session is not needed any more.
    Shutdown,
    /// The session reached its lifetime cap.
    Lifetime,
}

/// What the daemon tells running sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Normal operation.
    Running,
    /// Shutting down: sessions outside a transaction close at their next
    /// read; sessions in a transaction may finish it.
    Draining,
    /// The shutdown deadline passed: every session closes at its next read.
    Stopping,
}

/// Reasons for a session to stop reading besides its client.
#[derive(Debug, Default)]
pub struct StopSignals {
    /// The daemon's run state.
    pub shutdown: Option<watch::Receiver<RunState>>,
    /// When the session's lifetime ends.
    pub deadline: Option<Instant>,
}

/// A command line read from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// The line without LF and without one CR before it.
    Complete(Vec<u8>),
    /// The line was longer than [`MAX_LINE`]; it was read and discarded.
    TooLong,
}

/// Buffered, timed access to the client stream.
/// A client connection: a socket, stdin/stdout joined, a TLS stream, or an
/// in-memory pipe in tests.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The connection, boxed so that STARTTLS can replace it in place.
pub type BoxStream = Box<dyn Stream>;

/// Buffered, timed access to the client stream.
pub struct SmtpIo {
    stream: BoxStream,
    inbuf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    /// `timeoutsmtpd`, for each read and each write.
    pub timeout: Duration,
    /// Shutdown and lifetime signals (daemon mode).
    pub stop: StopSignals,
    /// The session is in a transaction: a drain lets it go on.
    pub busy: bool,
    /// A message body is being read: use a large buffer.
    pub bulk: bool,
    /// ENHANCEDSTATUSCODES is on: every reply gets its code here.
    pub enhanced: bool,
    /// What the replies being queued answer (set per command), for their
    /// enhanced status codes; the greeting is sent in the exempt default.
    pub context: ReplyContext,
    /// The last 4xx or 5xx reply queued since the session cleared it (the
    /// current command's refusal, for the log).
    pub refusal: Option<Vec<u8>>,
    /// The code of the last reply queued (0: none since cleared), for
    /// metrics.
    pub last_code: u16,
}

impl SmtpIo {
    /// Wraps a connection.
    pub fn new(stream: BoxStream, timeout: Duration) -> Self {
        SmtpIo {
            stream,
            inbuf: Vec::new(),
            start: 0,
            end: 0,
            out: Vec::new(),
            timeout,
            stop: StopSignals::default(),
            busy: false,
            bulk: false,
            enhanced: false,
            context: ReplyContext::Exempt,
            refusal: None,
            last_code: 0,
        }
    }

    /// Queues one reply line (CRLF is added), with its enhanced status
    /// code when those are on.
    pub fn reply(&mut self, line: impl AsRef<[u8]>) {
        let text = line.as_ref();
        if let Some(code) = text.get(..3).filter(|c| c.iter().all(u8::is_ascii_digit)) {
            self.last_code = code.iter().fold(0, |n, &d| n * 10 + u16::from(d - b'0'));
        }
        if matches!(text.first(), Some(b'4' | b'5')) {
            self.refusal = Some(text.to_vec());
        }
        if self.enhanced {
            enhanced::annotate_into(line.as_ref(), self.context, &mut self.out);
        } else {
            self.out.extend_from_slice(line.as_ref());
        }
        self.out.extend_from_slice(b"\r\n");
    }

    /// Writes all queued output.
    pub async fn flush(&mut self) -> Result<(), IoEnd> {
        if self.out.is_empty() {
            return Ok(());
        }
        let write = async {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(())) => {
                self.out.clear();
                if self.out.capacity() > 8192 {
                    self.out = Vec::new();
                }
                Ok(())
            }
            Ok(Err(_)) => Err(IoEnd::Closed),
            Err(_) => Err(IoEnd::WriteTimeout),
        }
    }

    /// Takes the stream out (for a TLS handshake); the session must put a
    /// stream back with [`SmtpIo::set_stream`] before reading again.
    pub fn take_stream(&mut self) -> BoxStream {
        std::mem::replace(
            &mut self.stream,
            Box::new(tokio::io::join(tokio::io::empty(), tokio::io::sink())),
        )
    }

    /// Continues on `stream` (the TLS stream after a handshake).
    pub fn set_stream(&mut self, stream: BoxStream) {
        self.stream = stream;
    }

    /// Drops any input received but not processed; returns how much.
    pub fn discard_input(&mut self) -> usize {
        let n = self.end - self.start;
        self.start = 0;
        self.end = 0;
        n
    }

    /// Bytes received but not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.inbuf[self.start..self.end]
    }

    /// Marks `n` buffered bytes as consumed.
    pub fn consume(&mut self, n: usize) {
        self.start += n.min(self.end - self.start);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Flushes output, then reads more input (waiting at most `timeout`).
    pub async fn fill(&mut self) -> Result<(), IoEnd> {
        self.fill_by(None).await
    }

    /// As [`SmtpIo::fill`], and input must arrive by `deadline` too.
    pub async fn fill_by(&mut self, deadline: Option<Instant>) -> Result<(), IoEnd> {
        self.flush().await?;
        let wait = match deadline {
            None => self.timeout,
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => left.min(self.timeout),
                _ => return Err(IoEnd::ReadTimeout),
            },
        };
        if self.start > 0 {
            self.inbuf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let want = if self.bulk {
            BULK_INBUF.max(self.end)
        } else if self.end == 0 {
            IDLE_INBUF
        } else if self.end == self.inbuf.len() {
            (self.inbuf.len() * 2).clamp(IDLE_INBUF, INBUF)
        } else {
            self.inbuf.len()
        };
        if want != self.inbuf.len() {
            self.inbuf.truncate(self.end);
            self.inbuf.resize(want, 0);
            self.inbuf.shrink_to(want);
        }
        if self.end == self.inbuf.len() {
            return Ok(());
        }
        let read = tokio::time::timeout(wait, self.stream.read(&mut self.inbuf[self.end..]));
        let stop = wait_stop(&mut self.stop, self.busy);
        tokio::select! {
            r = read => match r {
                Ok(Ok(0)) | Ok(Err(_)) => Err(IoEnd::Closed),
                Ok(Ok(n)) => {
                    self.end += n;
                    Ok(())
                }
                Err(_) => Err(IoEnd::ReadTimeout),
            },
            end = stop => Err(end),
        }
    }

    /// Flushes, then waits `delay` for the client to stay silent. Returns
    /// false (keeping what it sent) if it talked first.
    pub async fn quiet_for(&mut self, delay: Duration) -> Result<bool, IoEnd> {
        self.flush().await?;
        if self.inbuf.len() < IDLE_INBUF {
            self.inbuf.resize(IDLE_INBUF, 0);
        }
        let read = self.stream.read(&mut self.inbuf[self.end..]);
        tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(true),
            r = read => match r {
                Ok(0) | Err(_) => Err(IoEnd::Closed),
                Ok(n) => {
                    self.end += n;
                    Ok(false)
                }
            },
        }
    }

    /// Reads one command line. A bare LF ends a line too. The line must be
    /// complete within `timeout` of the first of its bytes being seen.
    pub async fn read_line(&mut self) -> Result<Line, IoEnd> {
        if self.out.len() >= MAX_OUT {
            self.flush().await?;
        }
        let mut too_long = false;
        let mut deadline = None;
        loop {
            let buf = &self.inbuf[self.start..self.end];
            if let Some(lf) = buf.iter().position(|&b| b == b'\n') {
                let line = crate::protocol::command::strip_line_end(&buf[..=lf]).to_vec();
                self.consume(lf + 1);
                if too_long || line.len() > MAX_LINE {
                    return Ok(Line::TooLong);
                }
                return Ok(Line::Complete(line));
            }
            if !buf.is_empty() {
                deadline.get_or_insert_with(|| Instant::now() + self.timeout);
            }
            if buf.len() > MAX_LINE + 1 {
                too_long = true;
                self.consume(buf.len());
            }
            self.fill_by(deadline).await?;
        }
    }
}

/// Resolves when the session must stop reading: its lifetime ended, or the
/// daemon stops (or drains and the session is not `busy`).
pub(crate) async fn wait_stop(stop: &mut StopSignals, busy: bool) -> IoEnd {
    let deadline = stop.deadline;
    let lifetime = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    let shutdown = async {
        let Some(rx) = &mut stop.shutdown else {
            return std::future::pending().await;
        };
        loop {
            let state = *rx.borrow_and_update();
            if state == RunState::Stopping || (state == RunState::Draining && !busy) {
                return;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    };
    tokio::select! {
        _ = lifetime => IoEnd::Lifetime,
        _ = shutdown => IoEnd::Shutdown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Trickle;

    async fn lines(input: &[u8], chunk: usize) -> Vec<Line> {
        let stream = tokio::io::join(Trickle::new(input, chunk), tokio::io::sink());
        let mut io = SmtpIo::new(Box::new(stream), Duration::from_secs(5));
        let mut out = Vec::new();
        while let Ok(l) = io.read_line().await {
            out.push(l);
        }
        out
    }

    #[tokio::test]
    async fn command_lines_with_lf_crlf_and_split_reads() {
        let c = |s: &str| Line::Complete(s.as_bytes().to_vec());
        let long = format!("NOOP {}\r\nQUIT\r\n", "x".repeat(MAX_LINE));
        let exact = format!("{}\r\n", "y".repeat(MAX_LINE));
        for chunk in [1, 2, 3, 7, 512, 100_000] {
            assert_eq!(
                lines(b"HELO a\r\nMAIL b\nRCPT\r\r\n\r\n", chunk).await,
                vec![c("HELO a"), c("MAIL b"), c("RCPT\r"), c("")],
                "chunk {chunk}"
            );
            assert_eq!(
                lines(long.as_bytes(), chunk).await,
                vec![Line::TooLong, c("QUIT")],
                "chunk {chunk}"
            );
            assert_eq!(
                lines(exact.as_bytes(), chunk).await,
                vec![c(&"y".repeat(MAX_LINE))]
            );
            assert_eq!(lines(b"NOOP", chunk).await, vec![], "no line without LF");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn queued_replies_stay_bounded_when_the_client_never_reads() {
        // 1,000 pipelined commands with long replies, and a client that
        // never reads: the session must stall on its output (and time out)
        // rather than queue every reply.
        let input = b"EHLO\r\n".repeat(1000);
        let (_peer, blocked) = tokio::io::duplex(1);
        let stream = tokio::io::join(Trickle::new(&input, 100_000), blocked);
        let mut io = SmtpIo::new(Box::new(stream), Duration::from_secs(5));
        // As after a message body: the input buffer is large, so one read
        // takes the whole batch.
        io.bulk = true;
        io.fill().await.unwrap();
        io.bulk = false;
        let reply = "250-".to_string() + &"x".repeat(296);
        let (mut most, mut answered) = (0, 0);
        let end = loop {
            match io.read_line().await {
                Ok(_) => {
                    io.reply(&reply);
                    answered += 1;
                    most = most.max(io.out.len());
                }
                Err(end) => break end,
            }
        };
        assert_eq!(end, IoEnd::WriteTimeout);
        assert!(most <= MAX_OUT + 302, "{most} bytes queued");
        assert!(answered < 1000, "all {answered} commands were answered");
    }

    #[tokio::test(start_paused = true)]
    async fn a_command_line_must_be_complete_within_the_timeout() {
        // One byte every 4 s: each read is within the 5 s timeout, the
        // line is not.
        let (client, server) = tokio::io::duplex(1024);
        let mut io = SmtpIo::new(Box::new(server), Duration::from_secs(5));
        let (_cr, mut cw) = tokio::io::split(client);
        let started = Instant::now();
        let dribble = tokio::spawn(async move {
            for &b in b"NOOP\r\n" {
                cw.write_all(&[b]).await.unwrap();
                tokio::time::sleep(Duration::from_secs(4)).await;
            }
            cw
        });
        assert_eq!(io.read_line().await, Err(IoEnd::ReadTimeout));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(5) && took < Duration::from_secs(6),
            "{took:?}"
        );
        let _ = dribble.await;
        // Between lines, only the per-read timeout applies.
        let (client, server) = tokio::io::duplex(1024);
        let mut io = SmtpIo::new(Box::new(server), Duration::from_secs(5));
        let (_cr, mut cw) = tokio::io::split(client);
        tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                cw.write_all(b"NOOP\r\n").await.unwrap();
            }
            cw
        });
        for _ in 0..3 {
            assert_eq!(io.read_line().await, Ok(Line::Complete(b"NOOP".to_vec())));
        }
    }

    #[tokio::test]
    async fn replies_are_flushed_before_reading() {
        let (client, server) = tokio::io::duplex(1024);
        let mut io = SmtpIo::new(Box::new(server), Duration::from_secs(5));
        io.reply("220 hi");
        let (mut cr, mut cw) = tokio::io::split(client);
        let reader = tokio::spawn(async move { io.read_line().await });
        let mut buf = [0u8; 8];
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        cr.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"220 hi\r\n");
        cw.write_all(b"QUIT\r\n").await.unwrap();
        assert_eq!(reader.await.unwrap(), Ok(Line::Complete(b"QUIT".to_vec())));
    }
}
