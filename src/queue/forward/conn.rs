//! One connection to a downstream SMTP or LMTP server: connect (TCP or a
//! unix socket), greeting, EHLO/LHLO, optional STARTTLS, then commands and
//! their replies, each exchange bounded by the downstream timeout and every
//! reply bounded in size.

use crate::config::queue::{ForwardSetting, Target, TlsMode};
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::time::Instant;

/// Longest reply line read from a downstream.
const MAX_REPLY_LINE: usize = 2048;
/// Most lines of one reply.
const MAX_REPLY_LINES: usize = 64;
/// Longest downstream text relayed to a client.
const MAX_RELAYED_TEXT: usize = 400;

/// A byte stream to the downstream: TCP, unix socket or TLS.
pub trait DownStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> DownStream for T {}

/// A downstream reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The text of each line, after `NNN-` or `NNN `.
    pub lines: Vec<Vec<u8>>,
}

impl Reply {
    /// 2xx.
    pub fn positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx.
    pub fn temporary(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// The reply as one printable line for the client: a 4xx or 5xx code
    /// is kept, except 421 (to the client it would mean "closing") and
    /// anything else, which become 451; the text is the lines joined by
    /// spaces, control and non-ASCII bytes replaced by `?`, bounded.
    pub fn for_client(&self) -> String {
        let code = if (400..600).contains(&self.code) && self.code != 421 {
            self.code
        } else {
            451
        };
        format!("{code} {}", self.text())
    }

    /// The reply made temporary for the client: `451` and the text, with a
    /// leading enhanced status code's class changed to 4 so the two agree.
    pub fn as_temporary(&self) -> String {
        let mut text = self.text();
        let b = text.as_bytes();
        if b.len() > 4 && b[0] == b'5' && b[1] == b'.' && b[2].is_ascii_digit() {
            text.replace_range(0..1, "4");
        }
        format!("451 {text}")
    }

    /// The text, sanitised to one bounded printable line.
    pub fn text(&self) -> String {
        let mut text = String::new();
        for line in &self.lines {
            if !text.is_empty() {
                text.push(' ');
            }
            for &b in line {
                if text.len() >= MAX_RELAYED_TEXT {
                    break;
                }
                text.push(if (0x20..0x7f).contains(&b) {
                    b as char
                } else {
                    '?'
                });
            }
        }
        text
    }
}

/// What the downstream offered in its EHLO/LHLO reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    /// PIPELINING (always used with LMTP, which requires it).
    pub pipelining: bool,
    /// SIZE.
    pub size: bool,
    /// 8BITMIME.
    pub eight_bit: bool,
    /// STARTTLS.
    pub starttls: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
}

impl Caps {
    /// Reads the keywords of an EHLO reply (first line is the greeting).
    fn from_reply(r: &Reply) -> Caps {
        let mut caps = Caps::default();
        for line in r.lines.iter().skip(1) {
            let word = line.split(|&b| b == b' ').next().unwrap_or(b"");
            match word.to_ascii_uppercase().as_slice() {
                b"PIPELINING" => caps.pipelining = true,
                b"SIZE" => caps.size = true,
                b"8BITMIME" => caps.eight_bit = true,
                b"STARTTLS" => caps.starttls = true,
                b"SMTPUTF8" => caps.smtputf8 = true,
                _ => {}
            }
        }
        caps
    }
}

/// Why a connection could not be made or used.
#[derive(Debug)]
pub enum ConnError {
    /// Connecting, reading or writing failed or timed out.
    Io(io::Error),
    /// The downstream answered with a refusal (greeting, EHLO, STARTTLS).
    Refused(Reply),
    /// TLS was required or failed.
    Tls(String),
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> Self {
        ConnError::Io(e)
    }
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Io(e) => write!(f, "{e}"),
            ConnError::Refused(r) => write!(f, "refused: {}", r.for_client()),
            ConnError::Tls(t) => write!(f, "TLS: {t}"),
        }
    }
}

/// An open, greeted connection.
pub struct Conn {
    stream: BufReader<Box<dyn DownStream>>,
    /// What the downstream offered.
    pub caps: Caps,
    /// Bound for each exchange.
    timeout: Duration,
    /// Transactions started on this connection.
    pub uses: u32,
    /// When it was last returned to the pool.
    pub idle_since: Instant,
    /// Encrypted with STARTTLS.
    pub tls: bool,
}

impl Conn {
    /// Connects, reads the greeting, says EHLO (LHLO) as `me`, and does
    /// STARTTLS as the setting asks (`tls` is the client configuration).
    pub async fn open(
        setting: &ForwardSetting,
        me: &str,
        timeout: Duration,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Conn, ConnError> {
        let stream: Box<dyn DownStream> = match &setting.target {
            Target::Tcp { host, port } => {
                let s = bounded(
                    timeout,
                    tokio::net::TcpStream::connect((host.as_str(), *port)),
                )
                .await?;
                let _ = s.set_nodelay(true);
                Box::new(s)
            }
            Target::Unix(path) => {
                Box::new(bounded(timeout, tokio::net::UnixStream::connect(path)).await?)
            }
        };
        let mut conn = Conn {
            stream: BufReader::with_capacity(4096, stream),
            caps: Caps::default(),
            timeout,
            uses: 0,
            idle_since: Instant::now(),
            tls: false,
        };
        let greeting = conn.reply().await?;
        if greeting.code != 220 {
            return Err(ConnError::Refused(greeting));
        }
        conn.hello(setting.lmtp, me).await?;
        let want_tls = match setting.tls {
            TlsMode::No => false,
            TlsMode::Opportunistic => conn.caps.starttls,
            TlsMode::Required if !conn.caps.starttls => {
                return Err(ConnError::Tls(
                    "the downstream does not offer STARTTLS".into(),
                ))
            }
            TlsMode::Required => true,
        };
        if want_tls {
            let Some(config) = tls else {
                return Err(ConnError::Tls("no TLS client configuration".into()));
            };
            conn = conn.starttls(setting, config).await?;
            conn.hello(setting.lmtp, me).await?;
        }
        Ok(conn)
    }

    /// EHLO (or LHLO); an SMTP server that refuses EHLO gets HELO.
    async fn hello(&mut self, lmtp: bool, me: &str) -> Result<(), ConnError> {
        let verb = if lmtp { "LHLO" } else { "EHLO" };
        let r = self.command(format!("{verb} {me}\r\n").as_bytes()).await?;
        if r.positive() {
            self.caps = Caps::from_reply(&r);
            if lmtp {
                self.caps.pipelining = true;
            }
            return Ok(());
        }
        if lmtp || !(500..600).contains(&r.code) {
            return Err(ConnError::Refused(r));
        }
        let r = self.command(format!("HELO {me}\r\n").as_bytes()).await?;
        if !r.positive() {
            return Err(ConnError::Refused(r));
        }
        self.caps = Caps::default();
        Ok(())
    }

    /// STARTTLS and the handshake; the connection continues over TLS.
    async fn starttls(
        mut self,
        setting: &ForwardSetting,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<Conn, ConnError> {
        let r = self.command(b"STARTTLS\r\n").await?;
        if r.code != 220 {
            return Err(ConnError::Tls(format!(
                "STARTTLS refused: {}",
                r.for_client()
            )));
        }
        let name = match (&setting.tls_name, &setting.target) {
            (Some(n), _) => n.clone(),
            (None, Target::Tcp { host, .. }) => host.clone(),
            (None, Target::Unix(_)) => return Err(ConnError::Tls("no name to verify".into())),
        };
        let server_name = rustls_pki_types::ServerName::try_from(name.clone())
            .map_err(|e| ConnError::Tls(format!("bad name {name:?}: {e}")))?;
        if !self.stream.buffer().is_empty() {
            return Err(ConnError::Tls("data after the STARTTLS reply".into()));
        }
        let inner = self.stream.into_inner();
        let connector = tokio_rustls::TlsConnector::from(config);
        let tls = bounded(self.timeout, connector.connect(server_name, inner))
            .await
            .map_err(|e| ConnError::Tls(e.to_string()))?;
        Ok(Conn {
            stream: BufReader::with_capacity(4096, Box::new(tls)),
            caps: Caps::default(),
            timeout: self.timeout,
            uses: 0,
            idle_since: Instant::now(),
            tls: true,
        })
    }

    /// Writes bytes and flushes them.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let timeout = self.timeout;
        let s = self.stream.get_mut();
        bounded(timeout, async {
            s.write_all(bytes).await?;
            s.flush().await
        })
        .await
    }

    /// Sends one command and reads its reply.
    pub async fn command(&mut self, line: &[u8]) -> io::Result<Reply> {
        self.send(line).await?;
        self.reply().await
    }

    /// Reads one (possibly multi-line) reply.
    pub async fn reply(&mut self) -> io::Result<Reply> {
        let timeout = self.timeout;
        bounded(timeout, read_reply(&mut self.stream)).await
    }

    /// Sends QUIT and closes, without waiting long for the answer.
    pub async fn quit(mut self) {
        self.timeout = self.timeout.min(Duration::from_secs(5));
        let _ = self.command(b"QUIT\r\n").await;
    }
}

/// Reads one reply from `r`.
async fn read_reply(r: &mut (impl tokio::io::AsyncBufRead + Unpin)) -> io::Result<Reply> {
    let mut lines = Vec::new();
    let mut code = 0;
    loop {
        let mut line = Vec::new();
        let n = (&mut *r)
            .take(MAX_REPLY_LINE as u64 + 2)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the downstream closed the connection",
            ));
        }
        if !line.ends_with(b"\n") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "reply line too long",
            ));
        }
        line.pop();
        if line.ends_with(b"\r") {
            line.pop();
        }
        let Some((c, more, text)) = crate::protocol::reply::parse_line(&line) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not a reply: {:?}", line.escape_ascii().to_string()),
            ));
        };
        if !lines.is_empty() && c != code {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "reply codes differ between lines",
            ));
        }
        code = c;
        lines.push(text.to_vec());
        if !more {
            return Ok(Reply { code, lines });
        }
        if lines.len() >= MAX_REPLY_LINES {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "reply too long"));
        }
    }
}

/// Runs `f` with a deadline; running past it is a `TimedOut` error.
async fn bounded<T>(
    limit: Duration,
    f: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {} ms", limit.as_millis()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn multi_line_replies_and_limits() {
        let mut r = &b"250-mx\r\n250-PIPELINING\r\n250 8BITMIME\r\n550 no\n"[..];
        let ehlo = read_reply(&mut r).await.unwrap();
        assert_eq!(ehlo.code, 250);
        let caps = Caps::from_reply(&ehlo);
        assert!(caps.pipelining && caps.eight_bit && !caps.starttls && !caps.size);
        assert!(!caps.smtputf8);
        let mut utf8 = &b"250-mx\r\n250-smtputf8\r\n250 SIZE 10\r\n"[..];
        let caps = Caps::from_reply(&read_reply(&mut utf8).await.unwrap());
        assert!(caps.smtputf8 && caps.size);
        assert_eq!(read_reply(&mut r).await.unwrap().code, 550);
        assert!(read_reply(&mut r).await.is_err(), "EOF");
        let mut mixed = &b"250-a\r\n550 b\r\n"[..];
        assert!(read_reply(&mut mixed).await.is_err());
        let long = [
            b"250 ".to_vec(),
            vec![b'x'; MAX_REPLY_LINE + 10],
            b"\r\n".to_vec(),
        ]
        .concat();
        assert!(read_reply(&mut &long[..]).await.is_err());
        let many = "250-x\r\n".repeat(MAX_REPLY_LINES + 1);
        assert!(read_reply(&mut many.as_bytes()).await.is_err());
    }

    #[test]
    fn relayed_text_is_one_printable_line() {
        let r = Reply {
            code: 550,
            lines: vec![
                b"5.1.1 <a@b>: unknown\x1b[2J".to_vec(),
                b"second \xff".to_vec(),
            ],
        };
        assert_eq!(r.for_client(), "550 5.1.1 <a@b>: unknown?[2J second ?");
        let odd = Reply {
            code: 354,
            lines: vec![b"go".to_vec()],
        };
        assert_eq!(odd.for_client(), "451 go");
        let gone = Reply {
            code: 554,
            lines: vec![b"5.3.2 go away".to_vec()],
        };
        assert_eq!(gone.as_temporary(), "451 4.3.2 go away");
        let long = Reply {
            code: 452,
            lines: vec![vec![b'y'; 5000]],
        };
        assert!(long.for_client().len() <= MAX_RELAYED_TEXT + 4);
    }
}
