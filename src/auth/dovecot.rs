//! Placeholder until the Dovecot auth client lands (being written).

/// Result of one authentication exchange step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DovecotReply {
    /// Authenticated.
    Ok {
        /// User name reported.
        user: Option<String>,
    },
    /// Challenge.
    Continue(Vec<u8>),
    /// Refused.
    Fail {
        /// Temporary.
        temp: bool,
    },
}

/// Errors.
#[derive(Debug)]
pub struct DovecotError;

impl std::fmt::Display for DovecotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dovecot client not available")
    }
}

/// PLAIN exchange.
pub async fn verify_plain(
    _path: &std::path::Path,
    _user: &str,
    _password: &[u8],
    _client_ip: Option<std::net::IpAddr>,
    _timeout: std::time::Duration,
) -> Result<DovecotReply, DovecotError> {
    Err(DovecotError)
}
