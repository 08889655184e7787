//! AUTH (RFC 4954): PLAIN, LOGIN and CRAM-MD5 exchanges, the backend
//! check, the `[auth]` hook, relaying for the authenticated client, and
//! the failure delay and limit.

use super::io::Line;
use super::{Flow, Session, Verdict};
use crate::auth::{Check, Credentials, Mechanism};
use crate::config::plugins::Hook;
use crate::logging::quoted;
use crate::protocol::reply::text;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::time::{SystemTime, UNIX_EPOCH};

/// How reading one SASL response ended.
enum Response {
    /// The decoded bytes.
    Data(Vec<u8>),
    /// The client sent `*`.
    Refused,
    /// Not base64 (or an over-long line).
    Malformed,
    /// The connection ended.
    Closed(Flow),
}

impl Session {
    /// Whether AUTH may be used now (a backend, an offer, and TLS unless
    /// plain-text AUTH is allowed).
    pub(crate) fn auth_usable(&self) -> bool {
        match (&self.auth, &self.offer) {
            (Some(cfg), Some(_)) => {
                self.tls.is_some() || (cfg.allow_without_tls && !self.require_tls)
            }
            _ => false,
        }
    }

    /// The EHLO line for AUTH, if AUTH is usable.
    pub(crate) fn auth_ehlo_line(&self) -> Option<String> {
        if !self.auth_usable() {
            return None;
        }
        let offer = self.offer.as_ref()?;
        let names: Vec<&str> = offer.mechanisms.iter().map(|m| m.name()).collect();
        Some(format!("250-AUTH {}", names.join(" ")))
    }

    /// AUTH mechanism [initial-response]
    pub(crate) async fn auth(&mut self, arg: Vec<u8>) -> Flow {
        let Some(cfg) = self.auth.clone() else {
            return self.simple(text::UNIMPLEMENTED);
        };
        if self.offer.is_none() {
            return self.simple("503 auth not available (#5.3.3)");
        }
        if self.tls.is_none() && (!cfg.allow_without_tls || self.require_tls) {
            return self
                .simple("538 encryption required for authentication, use STARTTLS (#5.7.11)");
        }
        if self.authenticated.is_some() {
            return self.simple("503 you're already authenticated (#5.5.0)");
        }
        if self.tx.is_some() {
            return self.simple("503 no auth during mail transaction (#5.5.0)");
        }
        let mut words = arg.splitn(2, |&b| b == b' ');
        let mech_name = words.next().unwrap_or(b"");
        let initial = words.next().map(|w| w.to_vec());
        let offered = self
            .offer
            .as_ref()
            .map(|o| o.mechanisms.clone())
            .unwrap_or_default();
        let Some(mech) = Mechanism::parse(mech_name).filter(|m| offered.contains(m)) else {
            return self.simple("504 auth type unimplemented (#5.5.1)");
        };
        let creds = match self.exchange(mech, initial).await {
            Ok(Some(c)) => c,
            Ok(None) => return Flow::Continue,
            Err(flow) => return flow,
        };
        if !credentials_are_clean(&creds) {
            return self.simple("501 malformed auth input (#5.5.4)");
        }
        let user = creds.user().to_string();
        let check = cfg.backend.check(&creds, &self.env, &self.cfg.home).await;
        let result = match check {
            Check::Ok => "ok",
            Check::Bad => "fail",
            Check::TempFail => "tempfail",
        };
        tracing::info!(
            session = %self.id,
            client = %quoted(&self.client.remote_ip),
            user = %quoted(user.as_bytes()),
            method = mech.env_name(),
            result,
            "auth"
        );
        crate::metrics::auth(matches!(check, Check::Ok));
        match check {
            Check::Ok => self.auth_accepted(mech, user).await,
            Check::TempFail => self.simple("454 temporary authentication failure (#4.3.0)"),
            Check::Bad => {
                tokio::time::sleep(cfg.failure_delay).await;
                self.auth_failures += 1;
                self.io.reply("535 authentication failed (#5.7.1)");
                if self.auth_failures >= cfg.max_failures {
                    let me = String::from_utf8_lossy(&self.cfg.control.greeting).into_owned();
                    self.io.reply(format!(
                        "421 {me} too many authentication failures (#4.7.0)"
                    ));
                    return Flow::Close(1);
                }
                Flow::Continue
            }
        }
    }

    /// The backend said yes: run `[auth]`, then grant relaying.
    async fn auth_accepted(&mut self, mech: Mechanism, user: String) -> Flow {
        self.env.set("SMTPAUTHMETHOD", mech.env_name());
        self.env.set("SMTPAUTHUSER", &user);
        match self.run_hook(Hook::Auth, None).await {
            Verdict::Refuse => return Flow::Continue,
            Verdict::Disconnect => return Flow::Close(0),
            Verdict::Accept | Verdict::AcceptSkipChecks => {}
        }
        self.client.relay_client = Some(Vec::new());
        self.env.set("RELAYCLIENT", "");
        self.client.remote_info = Some(user.clone().into_bytes());
        self.env.set("TCPREMOTEINFO", &user);
        self.authenticated = Some(user);
        self.simple("235 ok, go ahead (#2.0.0)")
    }

    /// Runs the SASL exchange; `Ok(None)` when the client cancelled or sent
    /// bad input (the reply is queued).
    async fn exchange(
        &mut self,
        mech: Mechanism,
        initial: Option<Vec<u8>>,
    ) -> Result<Option<Credentials>, Flow> {
        match mech {
            Mechanism::Plain => {
                let data = match initial {
                    Some(i) => decode_initial(&i),
                    None => self.ask(b"").await,
                };
                let data = match data {
                    Response::Data(d) => d,
                    Response::Refused => return Ok(self.cancelled()),
                    Response::Malformed => return Ok(self.malformed()),
                    Response::Closed(f) => return Err(f),
                };
                let mut parts = data.split(|&b| b == 0);
                let (_authzid, user, password) = (parts.next(), parts.next(), parts.next());
                match (user, password, parts.next()) {
                    (Some(u), Some(p), None) if !u.is_empty() => Ok(Some(Credentials::Password {
                        user: String::from_utf8_lossy(u).into_owned(),
                        password: p.to_vec(),
                    })),
                    _ => Ok(self.malformed()),
                }
            }
            Mechanism::Login => {
                let user = match initial {
                    Some(i) => decode_initial(&i),
                    None => self.ask(b"Username:").await,
                };
                let user = match user {
                    Response::Data(d) if !d.is_empty() => d,
                    Response::Data(_) => return Ok(self.malformed()),
                    Response::Refused => return Ok(self.cancelled()),
                    Response::Malformed => return Ok(self.malformed()),
                    Response::Closed(f) => return Err(f),
                };
                let password = match self.ask(b"Password:").await {
                    Response::Data(d) => d,
                    Response::Refused => return Ok(self.cancelled()),
                    Response::Malformed => return Ok(self.malformed()),
                    Response::Closed(f) => return Err(f),
                };
                Ok(Some(Credentials::Password {
                    user: String::from_utf8_lossy(&user).into_owned(),
                    password,
                }))
            }
            Mechanism::CramMd5 => {
                if initial.is_some() {
                    return Ok(self.malformed());
                }
                let me =
                    String::from_utf8_lossy(self.cfg.control.me.as_deref().unwrap_or(b"localhost"))
                        .into_owned();
                let challenge = format!("<{}@{me}>", unique_nonce()).into_bytes();
                let answer = match self.ask(&challenge).await {
                    Response::Data(d) => d,
                    Response::Refused => return Ok(self.cancelled()),
                    Response::Malformed => return Ok(self.malformed()),
                    Response::Closed(f) => return Err(f),
                };
                match answer.iter().rposition(|&b| b == b' ') {
                    Some(i) if i > 0 && i + 1 < answer.len() => Ok(Some(Credentials::Cram {
                        user: String::from_utf8_lossy(&answer[..i]).into_owned(),
                        challenge,
                        digest: answer[i + 1..].to_vec(),
                    })),
                    _ => Ok(self.malformed()),
                }
            }
        }
    }

    /// Sends `334 <base64 prompt>` and reads the client's response.
    async fn ask(&mut self, prompt: &[u8]) -> Response {
        self.io.reply(format!("334 {}", B64.encode(prompt)));
        match self.io.read_line().await {
            Ok(Line::Complete(line)) => decode_line(&line),
            Ok(Line::TooLong) => Response::Malformed,
            Err(e) => Response::Closed(Flow::Close(self.io_ended(e).await)),
        }
    }

    /// Queues the reply for a cancelled exchange.
    fn cancelled(&mut self) -> Option<Credentials> {
        self.io.reply("501 auth exchange canceled (#5.0.0)");
        None
    }

    /// Queues the reply for input that is not what the mechanism expects.
    fn malformed(&mut self) -> Option<Credentials> {
        self.io.reply("501 malformed auth input (#5.5.4)");
        None
    }
}

/// Longest user name and secret passed to a backend (the checkpassword
/// record must fit a pipe buffer, and no real credential is longer).
const MAX_CREDENTIAL: usize = 1024;

/// Credentials a backend may see: no NUL anywhere (it would shift the
/// NUL-separated checkpassword record), no control characters in the user
/// name (it reaches logs and the environment), bounded lengths.
fn credentials_are_clean(creds: &Credentials) -> bool {
    let user_ok = |u: &str| {
        !u.is_empty() && u.len() <= MAX_CREDENTIAL && !u.bytes().any(|b| b < 0x20 || b == 0x7f)
    };
    let secret_ok = |s: &[u8]| s.len() <= MAX_CREDENTIAL && !s.contains(&0);
    match creds {
        Credentials::Password { user, password } => user_ok(user) && secret_ok(password),
        Credentials::Cram { user, digest, .. } => user_ok(user) && secret_ok(digest),
    }
}

/// A challenge nonce that never repeats: time, process, a counter and
/// random bits from the kernel.
fn unique_nonce() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut random = [0u8; 8];
    // SAFETY: getrandom writes at most `random.len()` bytes into the buffer.
    let got = unsafe { libc::getrandom(random.as_mut_ptr().cast(), random.len(), 0) };
    let random = if got == 8 {
        u64::from_ne_bytes(random)
    } else {
        0
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}.{}.{}.{:016x}",
        std::process::id(),
        now.as_micros(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        random
    )
}

/// Decodes a response line: `*` cancels; otherwise base64.
fn decode_line(line: &[u8]) -> Response {
    if line == b"*" {
        return Response::Refused;
    }
    match B64.decode(line) {
        Ok(d) => Response::Data(d),
        Err(_) => Response::Malformed,
    }
}

/// An initial response: `=` means empty.
fn decode_initial(arg: &[u8]) -> Response {
    if arg == b"=" {
        return Response::Data(Vec::new());
    }
    decode_line(arg)
}
