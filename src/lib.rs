//! spp-smtpd: an SMTP server whose policy lives in small external programs
//! (the qmail-spp plugin protocol).
//!
//! Architecture map:
//! - [`protocol`]: pure SMTP pieces (command lines, addresses, DATA decoding,
//!   Received: line, replies and their enhanced status codes). No I/O.
//! - [`config`]: qmail control files and `smtpplugins` → an immutable
//!   [`config::Config`] snapshot; `check` diagnostics with file:line.
//! - [`plugin`]: running one plugin (environment, timeout, output limits,
//!   the message on stdin for `[body]`) and parsing its directives.
//! - [`session`]: the SMTP state machine, generic over the byte stream; it
//!   runs hooks and hands accepted mail to the queue.
//! - [`queue`]: the backends — qmail-queue program, embedded Maildir,
//!   sendmail program, downstream SMTP/LMTP (`forward`) — and the spool
//!   that holds a message for `[body]` plugins and downstreams.
//! - [`checks`]: DNS lists, the resolvable sender and SPF over the one
//!   DNS resolver (the session applies their verdicts).
//! - [`blocking`]: blocking file work, in place for `stdio`, on the
//!   blocking pool for `serve`.
//! - [`child`]: the one place that starts programs (plugins, queue
//!   program, sendmail).
//! - [`net`]: the transports — `stdio` (tcpserver/inetd) and the `serve`
//!   daemon — and local address enumeration.
//! - [`trial`]: `spp-smtpd try` — a scripted client drives a real session
//!   in memory and prints every plugin run (above `session`, like `net`).
//! - [`tls`]: certificates and the rustls configuration (STARTTLS, implicit TLS).
//! - [`logging`]: the log subscriber (stderr or journald).

pub mod auth;
pub mod blocking;
pub mod checks;
pub mod child;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod plugin;
pub mod protocol;
pub mod queue;
pub mod session;
pub mod tls;
pub mod trial;

#[cfg(test)]
mod testing;
