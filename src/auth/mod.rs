//! SMTP AUTH (RFC 4954): which mechanisms a session offers (the qmail AUTH
//! patch's `SMTPAUTH` variable), and the backends that check credentials:
//! a checkpassword program or Dovecot's auth socket.

pub mod checkpassword;
pub mod dovecot;

use crate::session::env::SessionEnv;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// `AUTH PLAIN`.
    Plain,
    /// `AUTH LOGIN`.
    Login,
    /// `AUTH CRAM-MD5`.
    CramMd5,
}

impl Mechanism {
    /// The name in EHLO and AUTH.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::CramMd5 => "CRAM-MD5",
        }
    }

    /// The lower-case name plugins see in `SMTPAUTHMETHOD`.
    pub fn env_name(self) -> &'static str {
        match self {
            Mechanism::Plain => "plain",
            Mechanism::Login => "login",
            Mechanism::CramMd5 => "cram-md5",
        }
    }

    /// Parses a mechanism name (case-insensitive).
    pub fn parse(name: &[u8]) -> Option<Mechanism> {
        [Mechanism::Plain, Mechanism::Login, Mechanism::CramMd5]
            .into_iter()
            .find(|m| m.name().as_bytes().eq_ignore_ascii_case(name))
    }
}

/// What a session offers, from `SMTPAUTH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Mechanisms in EHLO order.
    pub mechanisms: Vec<Mechanism>,
    /// AUTH is required before MAIL.
    pub required: bool,
}

/// The offer for a session, as the qmail AUTH patch reads `SMTPAUTH`:
/// `-` off; `!` required; a value starting `cram` CRAM-MD5 only; `+cram`
/// all three; `!cram`, `!+cram` required variants; anything else LOGIN
/// PLAIN. Unset: off in `stdio` mode (as qmail), LOGIN PLAIN for the
/// daemon (`default_on`). `cram` needs a backend that can do it.
pub fn offer(smtpauth: Option<&[u8]>, default_on: bool, cram_possible: bool) -> Option<Offer> {
    let value = match smtpauth {
        None if default_on => b"".as_slice(),
        None => return None,
        Some(b"-") => return None,
        Some(v) => v,
    };
    let (required, rest) = match value.strip_prefix(b"!") {
        Some(r) => (true, r),
        None => (false, value),
    };
    let login_plain = vec![Mechanism::Login, Mechanism::Plain];
    let mechanisms = if rest.starts_with(b"+cram") {
        let mut all = login_plain;
        if cram_possible {
            all.push(Mechanism::CramMd5);
        }
        all
    } else if rest.starts_with(b"cram") && cram_possible {
        vec![Mechanism::CramMd5]
    } else {
        login_plain
    };
    Some(Offer {
        mechanisms,
        required,
    })
}

/// How a backend judged the credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Accepted.
    Ok,
    /// Refused (535).
    Bad,
    /// Could not decide now (454).
    TempFail,
}

/// Credentials as the client gave them.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// PLAIN or LOGIN: a user and a password.
    Password {
        /// The user name.
        user: String,
        /// The password.
        password: Vec<u8>,
    },
    /// CRAM-MD5: the challenge sent and the client's hex digest.
    Cram {
        /// The user name.
        user: String,
        /// The challenge we sent.
        challenge: Vec<u8>,
        /// The client's HMAC-MD5 digest, in hex.
        digest: Vec<u8>,
    },
}

impl Credentials {
    /// The user name.
    pub fn user(&self) -> &str {
        match self {
            Credentials::Password { user, .. } | Credentials::Cram { user, .. } => user,
        }
    }
}

/// A credentials checker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A checkpassword program and its arguments (the qmail convention).
    Checkpassword(Vec<String>),
    /// Dovecot's auth socket.
    Dovecot(PathBuf),
}

/// AUTH as configured for a transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Who checks the credentials.
    pub backend: Backend,
    /// Offer AUTH on connections without TLS (loopback tests, legacy sites).
    pub allow_without_tls: bool,
    /// Delay before answering a failed attempt.
    pub failure_delay: Duration,
    /// Failed attempts after which the connection is closed.
    pub max_failures: u32,
    /// Offer AUTH when `SMTPAUTH` is unset (the daemon; not `stdio`).
    pub default_on: bool,
}

/// Bound on one backend check.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

impl Backend {
    /// Whether CRAM-MD5 can be offered: checkpassword, by the qmail
    /// convention (digest and challenge on fd 3). Not through Dovecot,
    /// which would need to issue the challenge itself.
    pub fn cram_possible(&self) -> bool {
        matches!(self, Backend::Checkpassword(_))
    }

    /// Checks credentials.
    pub async fn check(&self, creds: &Credentials, env: &SessionEnv, home: &Path) -> Check {
        match self {
            Backend::Checkpassword(argv) => {
                checkpassword::check(argv, creds, env, home, CHECK_TIMEOUT).await
            }
            Backend::Dovecot(path) => dovecot_check(path, creds, env).await,
        }
    }
}

/// Checks credentials against Dovecot with a PLAIN exchange (SMTP PLAIN
/// and LOGIN). CRAM-MD5 is never offered with Dovecot (see
/// [`Backend::cram_possible`]), so CRAM credentials cannot arrive here.
async fn dovecot_check(path: &Path, creds: &Credentials, env: &SessionEnv) -> Check {
    let ip = env
        .get("TCPREMOTEIP")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse().ok());
    match creds {
        Credentials::Password { user, password } => {
            match dovecot::verify_plain(path, user, password, ip, CHECK_TIMEOUT).await {
                Ok(dovecot::DovecotReply::Ok { .. }) => Check::Ok,
                Ok(dovecot::DovecotReply::Fail { temp: false }) => Check::Bad,
                Ok(_) => Check::TempFail,
                Err(e) => {
                    tracing::error!(socket = %path.display(), error = %e, "dovecot auth failed");
                    Check::TempFail
                }
            }
        }
        Credentials::Cram { .. } => Check::TempFail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Mechanism::*;

    #[test]
    fn smtpauth_values() {
        let o = |v: Option<&str>, on| offer(v.map(str::as_bytes), on, true);
        assert_eq!(o(None, false), None);
        assert_eq!(
            o(None, true),
            Some(Offer {
                mechanisms: vec![Login, Plain],
                required: false
            })
        );
        assert_eq!(o(Some("-"), true), None);
        assert_eq!(
            o(Some(""), false),
            Some(Offer {
                mechanisms: vec![Login, Plain],
                required: false
            })
        );
        assert_eq!(
            o(Some("!"), false),
            Some(Offer {
                mechanisms: vec![Login, Plain],
                required: true
            })
        );
        assert_eq!(
            o(Some("cram"), false),
            Some(Offer {
                mechanisms: vec![CramMd5],
                required: false
            })
        );
        assert_eq!(
            o(Some("+cram"), false),
            Some(Offer {
                mechanisms: vec![Login, Plain, CramMd5],
                required: false
            })
        );
        assert_eq!(
            o(Some("!cram"), false),
            Some(Offer {
                mechanisms: vec![CramMd5],
                required: true
            })
        );
        assert_eq!(
            o(Some("!+cram"), false),
            Some(Offer {
                mechanisms: vec![Login, Plain, CramMd5],
                required: true
            })
        );
        assert_eq!(
            o(Some("yes"), false),
            Some(Offer {
                mechanisms: vec![Login, Plain],
                required: false
            })
        );
        assert_eq!(Mechanism::parse(b"cram-md5"), Some(CramMd5));
        assert_eq!(Mechanism::parse(b"GSSAPI"), None);
    }
}
