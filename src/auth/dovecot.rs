//! A client for Dovecot's authentication protocol: the "auth client"
//! protocol spoken on Dovecot's `auth-client` unix socket, the one Postfix's
//! Dovecot SASL integration uses.
//!
//! The protocol is line based: each line is a command name and its
//! parameters separated by TAB and ended by LF. Optional parameters are
//! `name=value` pairs or bare booleans, and unknown ones are ignored.
//! Dovecot tab-escapes values with `\x01` as the escape character
//! (`\x01` `0` NUL, `1` `\x01`, `t` TAB, `r` CR, `n` LF).
//!
//! A connection starts with a handshake. The client sends
//! `VERSION 1 <minor>` and `CPID <pid>`. The server answers
//! `VERSION 1 <minor>`, then `MECH <name> [flags]` lines, `SPID`, `CUID`,
//! `COOKIE` and finally `DONE`. After that the client sends
//! `AUTH <id> <mech> service=smtp ...` and the server answers
//! `OK <id> [user=...]`, `FAIL <id> [temp] [reason=...]` or
//! `CONT <id> <base64 challenge>`. A `CONT` is answered with
//! `CONT <id> <base64 response>`.
//!
//! Limits against broken or hostile servers: every request and its reply
//! (and the handshake as a whole) is bounded by the caller's timeout, a line
//! is at most [`MAX_LINE`] bytes, and the handshake is at most
//! [`MAX_HANDSHAKE_LINES`] lines with at most [`MAX_MECHANISMS`]
//! mechanisms. Anything malformed is a [`DovecotError::Protocol`], never a
//! panic. Nothing we send can carry a TAB, CR, LF or NUL: initial data and
//! responses travel in base64, mechanism names must be ones the server
//! offered, and a user name that contains one of these bytes is refused
//! before anything is sent.
//!
//! After an I/O error, a timeout or a protocol error in the middle of an
//! exchange, the connection may be out of step with the server, so every
//! later call on it fails. Open a new connection instead.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The longest line accepted from the server, LF excluded (64 KiB).
pub const MAX_LINE: usize = 64 * 1024;
/// The most handshake lines read before `DONE`.
pub const MAX_HANDSHAKE_LINES: usize = 1024;
/// The most mechanisms accepted from one server.
pub const MAX_MECHANISMS: usize = 64;
/// The longest accepted mechanism name. RFC 4422 allows 20 characters;
/// this leaves some room.
const MAX_MECH_NAME: usize = 64;
/// The most replies for other request ids skipped while waiting for ours.
const MAX_STALE_REPLIES: usize = 64;
/// The protocol version we speak. Version 1.2 adds tab-escaping, which we
/// undo on the values we read.
const VERSION_MAJOR: u32 = 1;
const VERSION_MINOR: u32 = 2;

/// Result of one authentication exchange step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DovecotReply {
    /// OK: authenticated; the user name Dovecot reports (user=...), if any.
    Ok {
        /// The `user=` parameter of the OK line, unescaped. It is `None` when
        /// absent or empty.
        user: Option<String>,
    },
    /// CONT: the server sends this challenge (already base64-decoded bytes).
    Continue(Vec<u8>),
    /// FAIL: bad credentials (or other permanent refusal); `temp` is true when Dovecot flagged it temporary (the `temp` parameter), so the SMTP side answers 454 instead of 535.
    Fail {
        /// Dovecot flagged the failure as temporary: the `temp` parameter
        /// or `code=temp_fail`.
        temp: bool,
    },
}

/// What went wrong talking to Dovecot. In every case the credentials are
/// still unchecked: the SMTP side should answer with a temporary failure.
#[derive(Debug)]
pub enum DovecotError {
    /// Connecting, reading or writing failed, including the server closing
    /// the connection.
    Io(std::io::Error),
    /// The server did not finish the handshake or answer a request within
    /// the timeout.
    Timeout,
    /// The server said something we cannot use (wrong version, malformed or
    /// overlong line, bad base64). Also returned for a value we refuse to
    /// send (a user name with TAB, CR, LF or NUL) and for calls the
    /// connection's state does not allow.
    Protocol(String),
    /// The server does not offer this mechanism.
    NoMechanism(String),
}

impl fmt::Display for DovecotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DovecotError::Io(e) => write!(f, "dovecot auth socket: {e}"),
            DovecotError::Timeout => f.write_str("dovecot auth: timed out"),
            DovecotError::Protocol(m) => write!(f, "dovecot auth: {m}"),
            DovecotError::NoMechanism(m) => {
                write!(f, "dovecot auth: mechanism {m:?} is not offered")
            }
        }
    }
}

impl std::error::Error for DovecotError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DovecotError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for DovecotError {
    fn from(e: std::io::Error) -> Self {
        DovecotError::Io(e)
    }
}

fn protocol(msg: impl Into<String>) -> DovecotError {
    DovecotError::Protocol(msg.into())
}

/// One connection to the auth socket, handshake done (VERSION 1 x, reading MECH lines, SPID, CUID, COOKIE, DONE; send VERSION and CPID = our pid).
pub struct DovecotAuth {
    stream: UnixStream,
    /// Bytes read from the server and not yet consumed as lines.
    buf: Vec<u8>,
    /// Offered mechanisms, upper case, without `private` ones.
    mechanisms: Vec<String>,
    /// The bound on each request and its reply.
    timeout: Duration,
    /// The id of the last AUTH sent. Ids start at 1.
    last_id: u32,
    /// The id of the exchange in progress, if any.
    current: Option<u32>,
    /// An earlier failure may have put us out of step with the server.
    broken: bool,
}

impl fmt::Debug for DovecotAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DovecotAuth")
            .field("mechanisms", &self.mechanisms)
            .field("timeout", &self.timeout)
            .field("current", &self.current)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl DovecotAuth {
    /// Connects to the unix socket at `path` and performs the handshake within `timeout`.
    ///
    /// The same `timeout` then bounds each later [`start`](Self::start) and
    /// [`respond`](Self::respond).
    pub async fn connect(path: &Path, timeout: Duration) -> Result<DovecotAuth, DovecotError> {
        match tokio::time::timeout(timeout, Self::connect_inner(path, timeout)).await {
            Ok(result) => result,
            Err(_) => Err(DovecotError::Timeout),
        }
    }

    async fn connect_inner(path: &Path, timeout: Duration) -> Result<DovecotAuth, DovecotError> {
        let stream = UnixStream::connect(path).await?;
        let mut conn = DovecotAuth {
            stream,
            buf: Vec::new(),
            mechanisms: Vec::new(),
            timeout,
            last_id: 0,
            current: None,
            broken: false,
        };
        // Our half of the handshake does not depend on the server's, so it
        // goes out at once.
        let hello = format!(
            "VERSION\t{VERSION_MAJOR}\t{VERSION_MINOR}\nCPID\t{}\n",
            std::process::id()
        );
        conn.stream.write_all(hello.as_bytes()).await?;

        let line = conn.read_line().await?;
        let fields: Vec<&[u8]> = line.split(|&b| b == b'\t').collect();
        if fields[0] != b"VERSION" {
            return Err(protocol(format!(
                "expected VERSION from the server, got {}",
                shown(&line)
            )));
        }
        let major = fields.get(1).and_then(|v| parse_u32(v));
        let minor = fields.get(2).and_then(|v| parse_u32(v));
        match (major, minor) {
            (Some(VERSION_MAJOR), Some(_)) => {}
            (Some(_), Some(_)) => {
                return Err(protocol(format!(
                    "unsupported protocol version {}",
                    shown(&line)
                )))
            }
            _ => return Err(protocol(format!("malformed VERSION line {}", shown(&line)))),
        }

        for _ in 0..MAX_HANDSHAKE_LINES {
            let line = conn.read_line().await?;
            let fields: Vec<&[u8]> = line.split(|&b| b == b'\t').collect();
            match fields[0] {
                b"MECH" => {
                    let name = fields.get(1).copied().unwrap_or_default();
                    if !valid_mech_name(name) {
                        return Err(protocol(format!("bad MECH line {}", shown(&line))));
                    }
                    if fields.iter().skip(2).any(|&p| p == b"private") {
                        // Not to be advertised (e.g. APOP).
                        continue;
                    }
                    let name = String::from_utf8_lossy(name).to_ascii_uppercase();
                    if conn.mechanisms.contains(&name) {
                        continue;
                    }
                    if conn.mechanisms.len() == MAX_MECHANISMS {
                        return Err(protocol(format!(
                            "more than {MAX_MECHANISMS} mechanisms offered"
                        )));
                    }
                    conn.mechanisms.push(name);
                }
                b"DONE" => return Ok(conn),
                b"VERSION" => return Err(protocol("second VERSION line in the handshake")),
                // SPID, CUID and COOKIE matter only to a login process
                // handing the user to Dovecot's master. Skipping other lines
                // allows for handshake lines added in later versions.
                _ => {}
            }
        }
        Err(protocol(format!(
            "no DONE within {MAX_HANDSHAKE_LINES} handshake lines"
        )))
    }

    /// Mechanisms the server offered (upper case, e.g. "PLAIN", "LOGIN", "CRAM-MD5").
    ///
    /// Mechanisms the server flags `private` (not to be advertised, such as
    /// APOP) are left out.
    pub fn mechanisms(&self) -> &[String] {
        &self.mechanisms
    }

    /// Starts an exchange: AUTH <id> <mech> service=smtp [nologin] rip=<client ip> lip=<local ip> [secured] [resp=<base64 of initial response>]; returns the first reply.
    ///
    /// `mech` is matched without regard to case against
    /// [`mechanisms`](Self::mechanisms); one the server did not offer is
    /// [`DovecotError::NoMechanism`] and nothing is sent. `nologin` is
    /// always sent because no login follows: we only check credentials.
    /// `secured` tells Dovecot the client's transport is protected (TLS,
    /// or the SMTP side's own judgement). Without it Dovecot may refuse
    /// plaintext mechanisms, depending on its `disable_plaintext_auth`
    /// setting. `Some(&[])` sends an empty initial response (`resp=`,
    /// SMTP's `=`). `None` sends none, and the server usually answers with
    /// a [`DovecotReply::Continue`].
    ///
    /// An exchange still in progress is abandoned: a late reply to it is
    /// skipped. The reply and the write are bounded together by the
    /// connection's timeout.
    pub async fn start(
        &mut self,
        mech: &str,
        initial: Option<&[u8]>,
        client_ip: Option<IpAddr>,
        local_ip: Option<IpAddr>,
        secured: bool,
    ) -> Result<DovecotReply, DovecotError> {
        self.check_usable()?;
        // Offered names were checked to be [A-Za-z0-9_-] when they were read,
        // so the name we send can hold no TAB or LF.
        let name = match self
            .mechanisms
            .iter()
            .find(|m| m.eq_ignore_ascii_case(mech))
        {
            Some(name) => name.clone(),
            None => return Err(DovecotError::NoMechanism(mech.to_string())),
        };
        let id = match self.last_id.wrapping_add(1) {
            0 => 1,
            id => id,
        };
        self.last_id = id;
        self.current = Some(id);

        let mut line = format!("AUTH\t{id}\t{name}\tservice=smtp\tnologin");
        if let Some(ip) = client_ip {
            line.push_str(&format!("\trip={}", ip.to_canonical()));
        }
        if let Some(ip) = local_ip {
            line.push_str(&format!("\tlip={}", ip.to_canonical()));
        }
        if secured {
            line.push_str("\tsecured");
        }
        // resp= must be the last parameter (the protocol ignores anything
        // after it).
        if let Some(data) = initial {
            line.push_str("\tresp=");
            BASE64.encode_string(data, &mut line);
        }
        line.push('\n');
        self.exchange(line).await
    }

    /// Continues the current exchange with the client's response: CONT <id> <base64>.
    ///
    /// It is an error (not sent) unless the last reply of the exchange was a
    /// [`DovecotReply::Continue`].
    pub async fn respond(&mut self, response: &[u8]) -> Result<DovecotReply, DovecotError> {
        self.check_usable()?;
        let Some(id) = self.current else {
            return Err(protocol("no exchange in progress to respond to"));
        };
        let mut line = format!("CONT\t{id}\t");
        BASE64.encode_string(response, &mut line);
        line.push('\n');
        self.exchange(line).await
    }

    fn check_usable(&self) -> Result<(), DovecotError> {
        if self.broken {
            Err(protocol(
                "connection unusable after an earlier error; reconnect",
            ))
        } else {
            Ok(())
        }
    }

    /// Sends one request line and reads its reply, all within the timeout.
    /// Any failure leaves the connection unusable.
    async fn exchange(&mut self, line: String) -> Result<DovecotReply, DovecotError> {
        let result = match tokio::time::timeout(self.timeout, self.send_and_read(&line)).await {
            Ok(result) => result,
            Err(_) => Err(DovecotError::Timeout),
        };
        match &result {
            Ok(DovecotReply::Continue(_)) => {}
            Ok(_) => self.current = None,
            Err(_) => {
                self.current = None;
                self.broken = true;
            }
        }
        result
    }

    async fn send_and_read(&mut self, line: &str) -> Result<DovecotReply, DovecotError> {
        let Some(id) = self.current else {
            return Err(protocol("no exchange in progress"));
        };
        self.stream.write_all(line.as_bytes()).await?;
        for _ in 0..=MAX_STALE_REPLIES {
            let line = self.read_line().await?;
            if let Some(reply) = parse_reply(&line, id)? {
                return Ok(reply);
            }
        }
        Err(protocol(format!(
            "more than {MAX_STALE_REPLIES} replies for other requests"
        )))
    }

    /// Reads one LF-terminated line (without the LF, and without a CR
    /// before it), at most [`MAX_LINE`] bytes long.
    async fn read_line(&mut self) -> Result<Vec<u8>, DovecotError> {
        let mut scanned = 0;
        loop {
            if let Some(pos) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + pos;
                if end > MAX_LINE {
                    return Err(protocol(format!(
                        "line from the server longer than {MAX_LINE} bytes"
                    )));
                }
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            scanned = self.buf.len();
            if scanned > MAX_LINE {
                return Err(protocol(format!(
                    "line from the server longer than {MAX_LINE} bytes"
                )));
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(DovecotError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the auth server closed the connection",
                )));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Parses a reply line. It returns `None` for a well-formed reply to a
/// request other than `id` (a late reply to an abandoned exchange).
pub fn parse_reply(line: &[u8], id: u32) -> Result<Option<DovecotReply>, DovecotError> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b'\t').collect();
    let command = fields[0];
    if !matches!(command, b"OK" | b"FAIL" | b"CONT") {
        return Err(protocol(format!("unexpected reply {}", shown(line))));
    }
    let Some(reply_id) = fields.get(1).and_then(|v| parse_u32(v)) else {
        return Err(protocol(format!(
            "reply without a valid id: {}",
            shown(line)
        )));
    };
    if reply_id != id {
        return Ok(None);
    }
    let params = fields.get(2..).unwrap_or_default();
    match command {
        b"OK" => {
            let mut user = None;
            for p in params {
                if let Some(v) = p.strip_prefix(b"user=") {
                    user = decode_user(v)?;
                }
            }
            Ok(Some(DovecotReply::Ok { user }))
        }
        b"FAIL" => {
            let temp = params
                .iter()
                .any(|&p| p == b"temp" || p == b"code=temp_fail");
            Ok(Some(DovecotReply::Fail { temp }))
        }
        _ => {
            let Some(data) = params.first() else {
                return Err(protocol(format!("CONT without data: {}", shown(line))));
            };
            let data = BASE64
                .decode(data)
                .map_err(|e| protocol(format!("CONT with bad base64 ({e})")))?;
            Ok(Some(DovecotReply::Continue(data)))
        }
    }
}

/// Decodes a `user=` value. Empty means none. A name that is not UTF-8 or
/// holds control characters (which would be unsafe in logs, headers or
/// plugin environments) is an error rather than a success.
fn decode_user(value: &[u8]) -> Result<Option<String>, DovecotError> {
    let raw = tab_unescape(value);
    if raw.is_empty() {
        return Ok(None);
    }
    let user =
        String::from_utf8(raw).map_err(|_| protocol("user name from the server is not UTF-8"))?;
    if user.chars().any(char::is_control) {
        return Err(protocol(format!(
            "user name from the server holds control characters: {user:?}"
        )));
    }
    Ok(Some(user))
}

/// Undoes Dovecot's tab-escaping. The protocol documents differ on whether
/// LF is escaped as `n` or `l`, so both are read as LF. Any other escaped
/// byte stands for itself, and a lone escape at the end is dropped.
fn tab_unescape(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut bytes = value.iter();
    while let Some(&b) = bytes.next() {
        if b != 0x01 {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'0') => out.push(0),
            Some(b'1') => out.push(0x01),
            Some(b't') => out.push(b'\t'),
            Some(b'r') => out.push(b'\r'),
            Some(b'n') | Some(b'l') => out.push(b'\n'),
            Some(&other) => out.push(other),
            None => {}
        }
    }
    out
}

/// A decimal number as Dovecot writes it: digits only.
fn parse_u32(v: &[u8]) -> Option<u32> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A SASL mechanism name (RFC 4422: letters, digits, `-`, `_`). Lower case
/// is tolerated.
fn valid_mech_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_MECH_NAME
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A server line for an error message: escaped, and cut to a sane length.
fn shown(line: &[u8]) -> String {
    const MAX_SHOWN: usize = 120;
    let cut = &line[..line.len().min(MAX_SHOWN)];
    let mut s = format!("\"{}\"", cut.escape_ascii());
    if line.len() > MAX_SHOWN {
        s.push_str("...");
    }
    s
}

/// Refuses bytes that would break the line protocol, or (NUL) a PLAIN
/// message.
fn check_sendable(what: &str, value: &[u8]) -> Result<(), DovecotError> {
    if value.iter().any(|b| matches!(b, b'\t' | b'\n' | b'\r' | 0)) {
        return Err(protocol(format!(
            "{what} contains TAB, CR, LF or NUL; not sent"
        )));
    }
    Ok(())
}

/// Convenience: a whole PLAIN exchange for `user`/`password` (authzid empty), used for SMTP AUTH PLAIN and LOGIN.
///
/// It connects, checks that PLAIN is offered, and sends one
/// `AUTH ... PLAIN` with the initial response `\0user\0password`, with
/// `rip=` `client_ip` and with `secured`. The SMTP side decides whether
/// plaintext AUTH is allowed on a connection (it offers it only over TLS,
/// or when so configured) before it gets here. A `user` with TAB, CR, LF or
/// NUL, or a `password` with NUL, is refused before connecting, as
/// [`DovecotError::Protocol`]. The handshake and the request are each
/// bounded by `timeout`, so the whole call takes at most twice that.
///
/// Dovecot delays failures (`auth_failure_delay`, and a growing penalty
/// per client IP), and the delay counts against the timeout.
pub async fn verify_plain(
    path: &Path,
    user: &str,
    password: &[u8],
    client_ip: Option<IpAddr>,
    timeout: Duration,
) -> Result<DovecotReply, DovecotError> {
    check_sendable("user name", user.as_bytes())?;
    if password.contains(&0) {
        return Err(protocol("password contains NUL; not sent"));
    }
    let mut auth = DovecotAuth::connect(path, timeout).await?;
    if !auth.mechanisms().iter().any(|m| m == "PLAIN") {
        return Err(DovecotError::NoMechanism("PLAIN".to_string()));
    }
    let mut initial = Vec::with_capacity(user.len() + password.len() + 2);
    initial.push(0);
    initial.extend_from_slice(user.as_bytes());
    initial.push(0);
    initial.extend_from_slice(password);
    let reply = auth
        .start("PLAIN", Some(&initial), client_ip, None, true)
        .await;
    initial.fill(0);
    match reply? {
        DovecotReply::Continue(_) => Err(protocol(
            "server asked to continue a complete PLAIN exchange",
        )),
        reply => Ok(reply),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::UnixListener;
    use tokio::task::JoinHandle;

    const T: Duration = Duration::from_secs(5);

    /// A directory removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "spp-dove-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The server side of one connection, for the fake server's script.
    struct Peer {
        io: BufReader<UnixStream>,
    }

    impl Peer {
        /// Reads one line without its LF; `None` at EOF.
        async fn line(&mut self) -> Option<String> {
            let mut line = String::new();
            match self.io.read_line(&mut line).await {
                Ok(0) | Err(_) => None,
                Ok(_) => {
                    assert!(line.ends_with('\n'), "unterminated line {line:?}");
                    line.pop();
                    Some(line)
                }
            }
        }

        async fn send(&mut self, data: &[u8]) {
            let _ = self.io.get_mut().write_all(data).await;
        }

        /// Reads the client's VERSION and CPID, and answers with `hello`.
        async fn handshake(&mut self, hello: &[u8]) {
            let version = self.line().await.unwrap();
            assert!(version.starts_with("VERSION\t1\t"), "{version:?}");
            let cpid = self.line().await.unwrap();
            assert_eq!(cpid, format!("CPID\t{}", std::process::id()));
            self.send(hello).await;
        }
    }

    const HELLO: &[u8] = b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\n\
MECH\tcram-md5\tdictionary\tactive\nMECH\tAPOP\tprivate\nSPID\t4242\nCUID\t7\n\
COOKIE\t0123456789abcdef0123456789abcdef\nDONE\n";

    /// A fake auth server on a socket in a fresh temporary directory, which
    /// runs `script` on the first connection.
    fn fake_server<F, Fut>(script: F) -> (TempDir, PathBuf, JoinHandle<()>)
    where
        F: FnOnce(Peer) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let dir = TempDir::new("fake");
        let path = dir.0.join("auth-client");
        let listener = UnixListener::bind(&path).unwrap();
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            script(Peer {
                io: BufReader::new(stream),
            })
            .await;
        });
        (dir, path, task)
    }

    fn b64(data: &[u8]) -> String {
        BASE64.encode(data)
    }

    #[tokio::test]
    async fn handshake_lists_mechanisms() {
        let (_dir, path, server) = fake_server(move |mut p| async move {
            p.handshake(HELLO).await;
            assert_eq!(p.line().await, None);
        });
        let auth = DovecotAuth::connect(&path, T).await.unwrap();
        assert_eq!(auth.mechanisms(), ["PLAIN", "LOGIN", "CRAM-MD5"]);
        assert!(format!("{auth:?}").contains("CRAM-MD5"));
        drop(auth);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn handshake_in_other_order_with_unknown_lines_and_crlf() {
        let hello = b"VERSION\t1\t3\r\nSPID\t1\nNEWTHING\tx\nMECH\tPLAIN\nMECH\tPLAIN\n\nDONE\n";
        let (_dir, path, server) = fake_server(move |mut p| async move {
            p.handshake(hello).await;
        });
        let auth = DovecotAuth::connect(&path, T).await.unwrap();
        assert_eq!(auth.mechanisms(), ["PLAIN"]);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn plain_ok_sends_every_parameter() {
        let (_dir, path, server) = fake_server(move |mut p| async move {
            p.handshake(HELLO).await;
            let auth = p.line().await.unwrap();
            assert_eq!(
                auth,
                format!(
                    "AUTH\t1\tPLAIN\tservice=smtp\tnologin\trip=192.0.2.7\tlip=2001:db8::1\tsecured\tresp={}",
                    b64(b"\0alice\0pw")
                )
            );
            p.send(b"OK\t1\tuser=alice\tsome=thing\n").await;
            assert_eq!(p.line().await, None);
        });
        let mut auth = DovecotAuth::connect(&path, T).await.unwrap();
        let reply = auth
            .start(
                "plain",
                Some(b"\0alice\0pw"),
                Some("192.0.2.7".parse().unwrap()),
                Some("2001:db8::1".parse().unwrap()),
                true,
            )
            .await
            .unwrap();
        assert_eq!(
            reply,
            DovecotReply::Ok {
                user: Some("alice".into())
            }
        );
        drop(auth);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn fail_temp_and_ids_increase() {
        let (_dir, path, server) = fake_server(move |mut p| async move {
            p.handshake(HELLO).await;
            // IPv4-mapped addresses go out as plain IPv4; an empty initial
            // response is `resp=` and stays last.
            assert_eq!(
                p.line().await.unwrap(),
                "AUTH\t1\tPLAIN\tservice=smtp\tnologin\trip=192.0.2.9\tresp="
            );
            p.send(b"FAIL\t1\tuser=alice\treason=nope\n").await;
            assert!(p.line().await.unwrap().starts_with("AUTH\t2\tPLAIN\t"));
            p.send(b"FAIL\t2\ttemp\treason=db down\n").await;
            assert!(p.line().await.unwrap().starts_with("AUTH\t3\tPLAIN\t"));
            p.send(b"FAIL\t3\tcode=temp_fail\n").await;
            assert!(p.line().await.unwrap().starts_with("AUTH\t4\tPLAIN\t"));
            p.send(b"FAIL\t4\tauthz\n").await;
        });
        let mut auth = DovecotAuth::connect(&path, T).await.unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.9".parse().unwrap();
        let r = auth.start("PLAIN", Some(b""), Some(mapped), None, false);
        assert_eq!(r.await.unwrap(), DovecotReply::Fail { temp: false });
        for temp in [true, true, false] {
            let r = auth.start("PLAIN", Some(b"x"), None, None, false).await;
            assert_eq!(r.unwrap(), DovecotReply::Fail { temp });
        }
        server.await.unwrap();
    }

    #[tokio::test]
    async fn login_exchange_with_cont() {
        let (_dir, path, server) = fake_server(move |mut p| async move {
            p.handshake(HELLO).await;
            assert_eq!(
                p.line().await.unwrap(),
                "AUTH\t1\tLOGIN\tservice=smtp\tnologin"
            );
            p.send(format!("CONT\t1\t{}\n", b64(b"Username:")).as_bytes())
                .await;
            assert_eq!(p.line().await.unwrap(), format!("CONT\t1\t{}", b64(b"bob")));
            p.send(format!("CONT\t1\t{}\n", b64(b"Password:")).as_bytes())
                .await;
            assert_eq!(
                p.line().await.unwrap(),
                format!("CONT\t1\t{}", b64(b"p\tw\r\n\0"))
            );
            p.send(b"OK\t1\n").await;
        });
        let mut auth = DovecotAuth::connect(&path, T).await.unwrap();
        let r = auth.start("LOGIN", None, None, None, false).await.unwrap();
        assert_eq!(r, DovecotReply::Continue(b"Username:".to_vec()));
        let r = auth.respond(b"bob").await.unwrap();
        assert_eq!(r, DovecotReply::Continue(b"Password:".to_vec()));
        // Responses travel in base64, so any byte is fine.
        let r = auth.respond(b"p\tw\r\n\0").await.unwrap();
        assert_eq!(r, DovecotReply::Ok { user: None });
        // The exchange is over.
        let e = auth.respond(b"more").await.unwrap_err();
        assert!(matches!(e, DovecotError::Protocol(_)), "{e:?}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn user_is_unescaped_and_late_replies_skipped() {
        let (_dir, path, server) = fake_server(move |mut p| async move {
            p.handshake(HELLO).await;
            p.line().await.unwrap();
            p.send(format!("CONT\t1\t{}\n", b64(b"c")).as_bytes()).await;
            // The client abandons exchange 1 and starts 2; the late reply
            // to 1 is skipped.
            assert!(p.line().await.unwrap().starts_with("AUTH\t2\t"));
            p.send(b"FAIL\t1\n").await;
            p.send(b"OK\t2\tuser=j\x01.doe@ex\x01ample\n").await;
        });
        let mut auth = DovecotAuth::connect(&path, T).await.unwrap();
        let r = auth.start("CRAM-MD5", None, None, None, false).await;
        assert_eq!(r.unwrap(), DovecotReply::Continue(b"c".to_vec()));
        let r = auth.start("PLAIN", Some(b"\0a\0b"), None, None, false);
        assert_eq!(
            r.await.unwrap(),
            DovecotReply::Ok {
                user: Some("j.doe@example".into())
            }
        );
        server.await.unwrap();
    }

    #[test]
    fn unescape_and_user_checks() {
        assert_eq!(
            tab_unescape(b"a\x01tb\x01rc\x01nd\x01le\x010f\x011g\x01"),
            b"a\tb\rc\nd\ne\0f\x01g"
        );
        assert_eq!(tab_unescape(b"\x01\x01"), b"\x01");
        assert_eq!(decode_user(b"").unwrap(), None);
        assert_eq!(decode_user(b"bob@x").unwrap(), Some("bob@x".into()));
        assert_eq!(
            decode_user("jürgen".as_bytes()).unwrap(),
            Some("jürgen".into())
        );
        assert!(decode_user(b"a\x01tb").is_err());
        assert!(decode_user(b"a\x01nb").is_err());
        assert!(decode_user(b"a\x7fb").is_err());
        assert!(decode_user(b"\xff\xfe").is_err());
        assert_eq!(parse_u32(b"12"), Some(12));
        for bad in [&b""[..], b"+1", b"-1", b" 1", b"4294967296", b"1x"] {
            assert_eq!(parse_u32(bad), None, "{bad:?}");
        }
        assert!(valid_mech_name(b"SCRAM-SHA-256"));
        assert!(valid_mech_name(b"X_Y"));
        assert!(!valid_mech_name(b""));
        assert!(!valid_mech_name(b"A B"));
        assert!(!valid_mech_name(&[b'A'; 65]));
        let long = shown(&[b'\t'; 500]);
        assert!(long.starts_with("\"\\t") && long.ends_with("..."));
    }

    #[tokio::test]
    async fn unknown_mechanism_sends_nothing() {
        let (_dir, path, server) = fake_server(move |mut p| async move {
            p.handshake(HELLO).await;
            // The first line after the handshake is the PLAIN request.
            assert!(p.line().await.unwrap().starts_with("AUTH\t1\tPLAIN\t"));
            p.send(b"OK\t1\tuser=a\n").await;
        });
        let mut auth = DovecotAuth::connect(&path, T).await.unwrap();
        for mech in ["DIGEST-MD5", "APOP", "PLAIN\tresp=x", ""] {
            let e = auth.start(mech, None, None, None, false).await.unwrap_err();
            assert!(
                matches!(&e, DovecotError::NoMechanism(m) if m == mech),
                "{e:?}"
            );
            assert!(e.to_string().contains("not offered"));
        }
        // Still usable.
        let r = auth.start("PLAIN", Some(b"\0a\0b"), None, None, false);
        assert!(matches!(r.await.unwrap(), DovecotReply::Ok { .. }));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn verify_plain_over_fake_server() {
        let (_dir, path, server) = fake_server(move |mut p| async move {
            p.handshake(HELLO).await;
            assert_eq!(
                p.line().await.unwrap(),
                format!(
                    "AUTH\t1\tPLAIN\tservice=smtp\tnologin\trip=203.0.113.5\tsecured\tresp={}",
                    b64(b"\0alice@example.org\0s3cr\tet")
                )
            );
            p.send(b"OK\t1\tuser=alice@example.org\n").await;
        });
        let ip = Some("203.0.113.5".parse().unwrap());
        let r = verify_plain(&path, "alice@example.org", b"s3cr\tet", ip, T).await;
        assert_eq!(
            r.unwrap(),
            DovecotReply::Ok {
                user: Some("alice@example.org".into())
            }
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn verify_plain_refuses_bad_values_before_connecting() {
        // The socket does not exist: a Protocol error shows nothing was
        // attempted.
        let path = Path::new("/nonexistent/spp-dove/auth-client");
        for user in ["a\tb", "a\nb", "a\rb", "a\0b"] {
            let e = verify_plain(path, user, b"pw", None, T).await.unwrap_err();
            assert!(matches!(e, DovecotError::Protocol(_)), "{user:?}: {e:?}");
            assert!(e.to_string().contains("not sent"));
        }
        let e = verify_plain(path, "a", b"p\0w", None, T).await.unwrap_err();
        assert!(matches!(e, DovecotError::Protocol(_)), "{e:?}");
        let e = verify_plain(path, "a", b"pw", None, T).await.unwrap_err();
        assert!(matches!(e, DovecotError::Io(_)), "{e:?}");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[tokio::test]
    async fn verify_plain_needs_plain() {
        let (_dir, path, server) = fake_server(move |mut p| async move {
            p.handshake(b"VERSION\t1\t2\nMECH\tCRAM-MD5\nDONE\n").await;
            assert_eq!(p.line().await, None);
        });
        let e = verify_plain(&path, "a", b"b", None, T).await.unwrap_err();
        assert!(
            matches!(&e, DovecotError::NoMechanism(m) if m == "PLAIN"),
            "{e:?}"
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn verify_plain_refuses_cont() {
        let (_dir, path, server) = fake_server(move |mut p| async move {
            p.handshake(HELLO).await;
            p.line().await.unwrap();
            p.send(b"CONT\t1\t\n").await;
        });
        let e = verify_plain(&path, "a", b"b", None, T).await.unwrap_err();
        assert!(matches!(e, DovecotError::Protocol(_)), "{e:?}");
        server.await.unwrap();
    }

    /// Connects to a fake server that sends `hello` and returns the error.
    async fn handshake_error(hello: Vec<u8>) -> DovecotError {
        let (_dir, path, server) = fake_server(move |mut p| async move {
            p.handshake(&hello).await;
            // Hold the connection open until the client gives up.
            let _ = p.line().await;
        });
        let e = DovecotAuth::connect(&path, T).await.unwrap_err();
        server.await.unwrap();
        e
    }

    #[tokio::test]
    async fn malformed_handshakes() {
        let mut too_many = b"VERSION\t1\t2\n".to_vec();
        for i in 0..=MAX_MECHANISMS {
            too_many.extend_from_slice(format!("MECH\tM{i}\n").as_bytes());
        }
        let mut endless = b"VERSION\t1\t2\n".to_vec();
        endless.extend(b"SPID\t1\n".repeat(MAX_HANDSHAKE_LINES + 1));
        let mut overlong = b"VERSION\t1\t2\nMECH\t".to_vec();
        overlong.extend(vec![b'A'; MAX_LINE + 10]);
        overlong.push(b'\n');
        let mut no_newline = b"VERSION\t1\t2\n".to_vec();
        no_newline.extend(vec![b'x'; 3 * MAX_LINE]);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("not VERSION first", b"HELLO\nDONE\n".to_vec()),
            ("binary junk", b"\xff\xfe\x00\n".to_vec()),
            ("major 2", b"VERSION\t2\t0\nDONE\n".to_vec()),
            ("major missing", b"VERSION\nDONE\n".to_vec()),
            ("minor missing", b"VERSION\t1\nDONE\n".to_vec()),
            ("major not a number", b"VERSION\tone\t2\nDONE\n".to_vec()),
            ("MECH without name", b"VERSION\t1\t2\nMECH\nDONE\n".to_vec()),
            (
                "MECH empty name",
                b"VERSION\t1\t2\nMECH\t\tplaintext\nDONE\n".to_vec(),
            ),
            (
                "MECH bad name",
                b"VERSION\t1\t2\nMECH\tPL AIN\nDONE\n".to_vec(),
            ),
            (
                "two VERSIONs",
                b"VERSION\t1\t2\nVERSION\t1\t2\nDONE\n".to_vec(),
            ),
            ("too many mechanisms", too_many),
            ("no DONE", endless),
            ("overlong line", overlong),
            ("overlong unterminated line", no_newline),
        ];
        for (what, hello) in cases {
            let e = handshake_error(hello).await;
            assert!(matches!(e, DovecotError::Protocol(_)), "{what}: {e:?}");
        }
        // EOF in the middle of the handshake.
        let (_dir, path, server) = fake_server(move |mut p| async move {
            p.handshake(b"VERSION\t1\t2\nMECH\tPLAIN\n").await;
        });
        let e = DovecotAuth::connect(&path, T).await.unwrap_err();
        server.await.unwrap();
        assert!(
            matches!(&e, DovecotError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn eof_before_handshake_is_io() {
        let (_dir, path, server) = fake_server(move |p| async move {
            drop(p);
        });
        let e = DovecotAuth::connect(&path, T).await.unwrap_err();
        assert!(matches!(e, DovecotError::Io(_)), "{e:?}");
        server.await.unwrap();
    }

    /// Starts a PLAIN exchange against a fake server that answers `reply`,
    /// checks that the connection refuses further use, and returns the
    /// error.
    async fn reply_error(reply: Vec<u8>) -> DovecotError {
        let (_dir, path, server) = fake_server(move |mut p| async move {
            p.handshake(HELLO).await;
            p.line().await.unwrap();
            p.send(&reply).await;
            let _ = p.line().await;
        });
        let mut auth = DovecotAuth::connect(&path, T).await.unwrap();
        let e = auth
            .start("PLAIN", Some(b"\0a\0b"), None, None, false)
            .await
            .unwrap_err();
        // The connection is now out of step and refuses further use.
        let again = auth.start("PLAIN", Some(b"\0a\0b"), None, None, false);
        assert!(matches!(again.await, Err(DovecotError::Protocol(m)) if m.contains("unusable")));
        assert!(matches!(
            auth.respond(b"x").await,
            Err(DovecotError::Protocol(_))
        ));
        drop(auth);
        server.await.unwrap();
        e
    }

    #[tokio::test]
    async fn malformed_replies() {
        let mut overlong = b"OK\t1\tuser=".to_vec();
        overlong.extend(vec![b'a'; MAX_LINE]);
        overlong.push(b'\n');
        let stale = b"FAIL\t7\n".repeat(MAX_STALE_REPLIES + 1);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("no id", b"OK\n".to_vec()),
            ("empty id", b"OK\t\n".to_vec()),
            ("id not a number", b"FAIL\tabc\n".to_vec()),
            ("negative id", b"OK\t-1\n".to_vec()),
            ("unknown reply", b"WHAT\t1\n".to_vec()),
            ("empty line", b"\n".to_vec()),
            ("CONT without data", b"CONT\t1\n".to_vec()),
            ("CONT bad base64", b"CONT\t1\t!!!notbase64\n".to_vec()),
            ("user not UTF-8", b"OK\t1\tuser=\xff\n".to_vec()),
            ("user with control", b"OK\t1\tuser=a\x01nb\n".to_vec()),
            ("overlong", overlong),
            ("endless stale replies", stale),
        ];
        for (what, reply) in cases {
            let e = reply_error(reply).await;
            assert!(matches!(e, DovecotError::Protocol(_)), "{what}: {e:?}");
        }
    }

    #[tokio::test]
    async fn eof_during_exchange_is_io() {
        let (_dir, path, server) = fake_server(move |mut p| async move {
            p.handshake(HELLO).await;
            p.line().await.unwrap();
            p.send(b"OK\t1").await; // no LF, then EOF
        });
        let mut auth = DovecotAuth::connect(&path, T).await.unwrap();
        let e = auth
            .start("PLAIN", Some(b"\0a\0b"), None, None, false)
            .await;
        assert!(matches!(e, Err(DovecotError::Io(_))), "{e:?}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn timeouts() {
        let short = Duration::from_millis(300);
        // The server never finishes the handshake.
        let (_dir, path, server) = fake_server(move |mut p| async move {
            p.handshake(b"VERSION\t1\t2\nMECH\tPLAIN\n").await;
            let _ = p.line().await;
        });
        let began = std::time::Instant::now();
        let e = DovecotAuth::connect(&path, short).await.unwrap_err();
        assert!(matches!(e, DovecotError::Timeout), "{e:?}");
        assert!(began.elapsed() < Duration::from_secs(3));
        assert_eq!(e.to_string(), "dovecot auth: timed out");
        server.await.unwrap();

        // The server never answers the request.
        let (_dir, path, server) = fake_server(move |mut p| async move {
            p.handshake(HELLO).await;
            p.line().await.unwrap();
            let _ = p.line().await;
        });
        let mut auth = DovecotAuth::connect(&path, short).await.unwrap();
        let began = std::time::Instant::now();
        let r = auth
            .start("PLAIN", Some(b"\0a\0b"), None, None, false)
            .await;
        assert!(matches!(r, Err(DovecotError::Timeout)), "{r:?}");
        assert!(began.elapsed() < Duration::from_secs(3));
        drop(auth);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn respond_without_exchange() {
        let (_dir, path, server) = fake_server(move |mut p| async move {
            p.handshake(HELLO).await;
            assert_eq!(p.line().await, None);
        });
        let mut auth = DovecotAuth::connect(&path, T).await.unwrap();
        let e = auth.respond(b"x").await.unwrap_err();
        assert!(matches!(e, DovecotError::Protocol(_)), "{e:?}");
        drop(auth);
        server.await.unwrap();
    }

    // ---- A real Dovecot ------------------------------------------------

    /// MD5 (RFC 1321), for the CRAM-MD5 test only.
    fn md5(data: &[u8]) -> [u8; 16] {
        const SHIFT: [u32; 16] = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];
        let k: Vec<u32> = (1..=64)
            .map(|i| ((i as f64).sin().abs() * 4_294_967_296.0) as u32)
            .collect();
        let mut state: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
        let mut msg = data.to_vec();
        msg.push(0x80);
        while msg.len() % 64 != 56 {
            msg.push(0);
        }
        msg.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_le_bytes());
        for block in msg.chunks_exact(64) {
            let m: Vec<u32> = block
                .chunks_exact(4)
                .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
                .collect();
            let [mut a, mut b, mut c, mut d] = state;
            for i in 0..64 {
                let (f, g) = match i / 16 {
                    0 => ((b & c) | (!b & d), i),
                    1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                    2 => (b ^ c ^ d, (3 * i + 5) % 16),
                    _ => (c ^ (b | !d), (7 * i) % 16),
                };
                let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
                a = d;
                d = c;
                c = b;
                b = b.wrapping_add(f.rotate_left(SHIFT[(i / 16) * 4 + i % 4]));
            }
            for (s, v) in state.iter_mut().zip([a, b, c, d]) {
                *s = s.wrapping_add(v);
            }
        }
        let mut out = [0u8; 16];
        for (chunk, s) in out.chunks_exact_mut(4).zip(state) {
            chunk.copy_from_slice(&s.to_le_bytes());
        }
        out
    }

    /// HMAC-MD5 (RFC 2104).
    fn hmac_md5(key: &[u8], msg: &[u8]) -> [u8; 16] {
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..16].copy_from_slice(&md5(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let mut inner: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
        inner.extend_from_slice(msg);
        let mut outer: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
        outer.extend_from_slice(&md5(&inner));
        md5(&outer)
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn md5_and_hmac_vectors() {
        assert_eq!(hex(&md5(b"")), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(hex(&md5(b"abc")), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            hex(&md5(b"The quick brown fox jumps over the lazy dog")),
            "9e107d9d372bb6826bd81d3542a419d6"
        );
        assert_eq!(hex(&md5(&[b'a'; 1000])), "cabe45dcc9ae5b66ba86600cca6b8ba8");
        assert_eq!(
            hex(&hmac_md5(&[0x0b; 16], b"Hi There")),
            "9294727a3638bb1c13f48ef8158bfc9d"
        );
        assert_eq!(
            hex(&hmac_md5(b"Jefe", b"what do ya want for nothing?")),
            "750c783e6ab0b503eaa86e310a5db738"
        );
        // RFC 2195's CRAM-MD5 example.
        assert_eq!(
            hex(&hmac_md5(
                b"tanstaaftanstaaf",
                b"<1896.697170952@postoffice.reston.mci.net>"
            )),
            "b913a602c7eda7a495b4e6e7334d3890"
        );
    }

    /// A Dovecot master process; stopped (SIGTERM, then SIGKILL) on drop.
    struct Dovecot {
        child: std::process::Child,
    }

    impl Drop for Dovecot {
        fn drop(&mut self) {
            let pid = self.child.id() as libc::pid_t;
            // SAFETY: kill(2) on our own child's pid, which has not been
            // reaped yet, so it cannot have been reused.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(3);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// The whole config used for the real-Dovecot test.
    fn dovecot_conf(dir: &Path) -> String {
        let d = dir.display();
        format!(
            "base_dir = {d}/run
state_dir = {d}/state
instance_name = spp-dove-test
protocols =
ssl = no
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
default_internal_user = root
default_internal_group = root
default_login_user = root
auth_mechanisms = plain login cram-md5
auth_failure_delay = 0
auth_verbose = yes
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}}
service auth {{
  unix_listener auth-client {{
    mode = 0666
  }}
}}
"
        )
    }

    fn dovecot_binary() -> PathBuf {
        let sbin = PathBuf::from("/usr/sbin/dovecot");
        if sbin.exists() {
            sbin
        } else {
            PathBuf::from("dovecot")
        }
    }

    /// Authenticates against a real Dovecot started for the test. Dovecot
    /// must be installed (Debian: `apt-get install dovecot-core`); without
    /// it the test fails and says so.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn real_dovecot() {
        let dir = TempDir::new("real");
        let root = &dir.0;
        for sub in ["run", "state"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::write(
            root.join("passwd"),
            "alice:{PLAIN}s3cret pw\nbob@example.org:{PLAIN}hunter2\n",
        )
        .unwrap();
        let conf = root.join("dovecot.conf");
        std::fs::write(&conf, dovecot_conf(root)).unwrap();
        let log = root.join("dovecot.log");
        let show_log =
            || std::fs::read_to_string(&log).unwrap_or_else(|e| format!("(no log: {e})"));

        let child = std::process::Command::new(dovecot_binary())
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(root.join("stderr")).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run dovecot ({e}): the real-Dovecot test needs it installed \
                     (Debian: apt-get install dovecot-core)"
                )
            });
        let mut dovecot = Dovecot { child };

        let socket = root.join("run/auth-client");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !socket.exists() {
            if let Ok(Some(status)) = dovecot.child.try_wait() {
                panic!(
                    "dovecot exited at start ({status}); stderr: {}; log: {}",
                    std::fs::read_to_string(root.join("stderr")).unwrap_or_default(),
                    show_log()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "dovecot did not create {} within 5 s; log: {}",
                socket.display(),
                show_log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let t = Duration::from_secs(5);
        let ip: Option<IpAddr> = Some("192.0.2.10".parse().unwrap());

        // PLAIN, good password.
        let r = verify_plain(&socket, "alice", b"s3cret pw", ip, t).await;
        assert_eq!(
            r.unwrap_or_else(|e| panic!("{e}; log: {}", show_log())),
            DovecotReply::Ok {
                user: Some("alice".into())
            }
        );

        // One connection: the mechanisms, then LOGIN and CRAM-MD5 in turn.
        let mut auth = DovecotAuth::connect(&socket, t).await.unwrap();
        assert_eq!(auth.mechanisms(), ["PLAIN", "LOGIN", "CRAM-MD5"]);
        let local: Option<IpAddr> = Some("127.0.0.1".parse().unwrap());
        let r = auth.start("LOGIN", None, ip, local, true).await.unwrap();
        assert!(matches!(r, DovecotReply::Continue(_)), "{r:?}");
        let r = auth.respond(b"bob@example.org").await.unwrap();
        assert!(matches!(r, DovecotReply::Continue(_)), "{r:?}");
        let r = auth.respond(b"hunter2").await.unwrap();
        assert_eq!(
            r,
            DovecotReply::Ok {
                user: Some("bob@example.org".into())
            }
        );

        let r = auth
            .start("cram-md5", None, ip, local, false)
            .await
            .unwrap();
        let DovecotReply::Continue(challenge) = r else {
            panic!("CRAM-MD5 did not send a challenge: {r:?}")
        };
        assert!(challenge.starts_with(b"<") && challenge.ends_with(b">"));
        let digest = hex(&hmac_md5(b"s3cret pw", &challenge));
        let r = auth.respond(format!("alice {digest}").as_bytes()).await;
        assert_eq!(
            r.unwrap(),
            DovecotReply::Ok {
                user: Some("alice".into())
            }
        );
        drop(auth);

        // Bad password last (from another client IP): Dovecot's penalty
        // for failures would delay later requests from the same IP.
        let other: Option<IpAddr> = Some("192.0.2.99".parse().unwrap());
        let r = verify_plain(&socket, "alice", b"wrong", other, t).await;
        assert_eq!(r.unwrap(), DovecotReply::Fail { temp: false });
        let third: Option<IpAddr> = Some("192.0.2.100".parse().unwrap());
        let r = verify_plain(&socket, "nobody-here", b"x", third, t).await;
        assert_eq!(r.unwrap(), DovecotReply::Fail { temp: false });

        drop(dovecot);
    }
}
