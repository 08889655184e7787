//! The `smtp` and `lmtp` backends: hand the message to a downstream MTA and
//! answer the client with the downstream's verdict. `250` is only said
//! after the downstream said 2xx (for LMTP, for every recipient).
//!
//! Two ways to run a transaction:
//! - [`deliver`]: the whole transaction after the client's final dot
//!   (MAIL, RCPTs and DATA pipelined when the downstream offers it).
//! - [`Transaction`]: opened at the client's first RCPT, each RCPT passed
//!   through (`verify-rcpt=yes`), so an unknown user is refused at RCPT
//!   with the downstream's own reply; the data follows after the dot.
//!
//! SMTPUTF8: the parameter goes on MAIL when the downstream offers the
//! extension. When it does not, a transaction whose addresses are all
//! ASCII is downgraded (MAIL without the parameter, the message as is);
//! one with a UTF-8 address is refused before anything is sent for it:
//! that RCPT with `553` under `verify-rcpt`, else the message with `554`.
//!
//! Results, recipient by recipient (see README, "Downstream replies"):
//! every recipient accepted gives `250`; otherwise a temporary failure of
//! any recipient gives that 4xx (the client retries the whole message, so
//! recipients that accepted may get a duplicate), and else the first
//! permanent failure's 5xx. A recipient is never dropped silently.

mod conn;
pub mod pool;

use super::spool::Spooled;
use super::{Envelope, JobResult};
use crate::config::queue::{ForwardSetting, TlsMode};
use crate::protocol::encode::{wire_size, DataEncoder};
use conn::Conn;
pub use conn::{ConnError, Reply};
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// Client reply when the downstream cannot be reached.
const CONNECT_FAILED: &str = "451 connection to mail server failed (#4.4.1)";
/// Client reply when the downstream did not answer in time.
const TIMED_OUT: &str = "451 connection to mail server timed out (#4.4.1)";
/// Client reply when the connection broke during the transaction.
const LOST: &str = "451 communication with mail server failed (#4.4.2)";
/// Client reply when the required TLS could not be set up.
const TLS_FAILED: &str = "451 secure connection to mail server failed (#4.7.5)";
/// RCPT reply (`verify-rcpt`) when a UTF-8 address cannot go downstream.
const NO_SMTPUTF8_RCPT: &str =
    "553 sorry, UTF-8 addresses cannot be passed on: the next mail server does not offer SMTPUTF8 (#5.6.7)";
/// Message reply when a UTF-8 address cannot go downstream.
const NO_SMTPUTF8_DATA: &str =
    "554 sorry, UTF-8 addresses cannot be passed on: the next mail server does not offer SMTPUTF8 (#5.6.7)";
/// Commands sent in one pipelined write before their replies are read.
const PIPELINE_GROUP: usize = 100;
/// Bytes of message put on the wire per write.
const WRITE_CHUNK: usize = 64 * 1024;

/// What the client said in MAIL that the downstream should hear.
#[derive(Debug, Clone, Copy, Default)]
pub struct MailParams {
    /// The message size (declared by the client, or the spooled size).
    pub size: Option<u64>,
    /// The client declared `BODY=8BITMIME`.
    pub eight_bit: bool,
    /// The client declared `SMTPUTF8`.
    pub smtputf8: bool,
}

impl MailParams {
    /// An SMTPUTF8 transaction on a connection whose downstream does not
    /// offer SMTPUTF8: it can only go without the parameter (downgraded),
    /// and only with ASCII addresses.
    fn downgraded(&self, conn: &Conn) -> bool {
        self.smtputf8 && !conn.caps.smtputf8
    }
}

/// How to talk to the downstream for one session.
#[derive(Debug, Clone)]
pub struct Downstream {
    /// The `control/queue` setting.
    pub setting: Arc<ForwardSetting>,
    /// EHLO name (`control/me`).
    pub me: String,
    /// Bound for each exchange (`timeout=`, else `timeoutsmtpd`).
    pub timeout: Duration,
}

impl Downstream {
    /// The setting, with `fallback` as timeout unless it sets one.
    pub fn new(setting: Arc<ForwardSetting>, me: &[u8], fallback: Duration) -> Downstream {
        // The first word (the greeting may carry more text), printable.
        let me = String::from_utf8_lossy(me)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .collect::<String>();
        Downstream {
            timeout: setting.timeout.unwrap_or(fallback),
            me: if me.is_empty() {
                "localhost".into()
            } else {
                me
            },
            setting,
        }
    }

    /// A new connection: connect, greeting, EHLO, STARTTLS as configured.
    async fn open(&self, session: &str) -> Result<Conn, String> {
        let tls = match self.setting.tls {
            TlsMode::No => None,
            // Reading the CA file is blocking work (once per setting).
            _ => {
                let setting = self.setting.clone();
                tokio::task::spawn_blocking(move || pool::tls_config(&setting))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))
                    .map_err(|e| {
                        tracing::error!(session, downstream = %self.setting.target, error = %e, "TLS client configuration");
                        TLS_FAILED.to_string()
                    })?
            }
        };
        Conn::open(&self.setting, &self.me, self.timeout, tls)
            .await
            .map_err(|e| self.conn_failure(session, "connect", &e))
    }

    /// Logs a connection failure; the client's reply.
    fn conn_failure(&self, session: &str, stage: &str, e: &ConnError) -> String {
        tracing::warn!(session, downstream = %self.setting.target, stage, error = %e, "downstream failure");
        match e {
            ConnError::Io(io) => io_reply(io, true).to_string(),
            // A refusal at connect (greeting, EHLO) says nothing about this
            // message: temporary, with the downstream's text.
            ConnError::Refused(r) => r.as_temporary(),
            ConnError::Tls(_) => TLS_FAILED.to_string(),
        }
    }

    /// Logs an I/O failure during a transaction; the client's reply.
    fn io_failure(&self, session: &str, stage: &str, e: &io::Error) -> String {
        tracing::warn!(session, downstream = %self.setting.target, stage, error = %e, "downstream failure");
        io_reply(e, false).to_string()
    }

    /// Opens a transaction for RCPT-time verification: connection and MAIL.
    /// A UTF-8 sender that the downstream cannot take (no SMTPUTF8) is
    /// refused (`553 ... (#5.6.7)`) and nothing is sent.
    pub async fn begin(
        &self,
        session: &str,
        sender: &[u8],
        params: MailParams,
    ) -> Result<Transaction, String> {
        let (conn, replies) = self
            .envelope(session, |conn| {
                if params.downgraded(conn) && !sender.is_ascii() {
                    return Err(NO_SMTPUTF8_RCPT.to_string());
                }
                Ok(vec![mail_command(conn, sender, params)])
            })
            .await?;
        let downgraded = params.downgraded(&conn);
        if downgraded {
            self.log_downgrade(session);
        }
        let r = &replies[0];
        if !r.positive() {
            tracing::info!(session, downstream = %self.setting.target, reply = %r.for_client(), "downstream refused MAIL");
            self.reuse(conn);
            return Err(r.for_client());
        }
        Ok(Transaction {
            downstream: self.clone(),
            conn,
            accepted: Vec::new(),
            downgraded,
        })
    }

    /// Logs that an SMTPUTF8 transaction goes without the parameter.
    fn log_downgrade(&self, session: &str) {
        tracing::info!(session, downstream = %self.setting.target,
            "downstream does not offer SMTPUTF8; the addresses are ASCII: MAIL goes without it");
    }

    /// Puts a connection back after an abandoned or refused transaction;
    /// its next use starts with RSET.
    fn reuse(&self, conn: Conn) {
        pool::checkin(&self.setting, conn);
    }

    /// Sends the envelope `commands` (MAIL, RCPTs, maybe DATA) and reads
    /// their replies, on a pooled connection (RSET first, in the same write
    /// when the downstream offers PIPELINING) or a new one. A pooled
    /// connection found dead before its RSET was answered is replaced by a
    /// new one (nothing was done on it). Without PIPELINING the commands go
    /// one at a time: RCPTs only after an accepted MAIL, DATA only when
    /// everything before it was accepted. `commands` may refuse the
    /// envelope for what the connection offers (its `Err` is the client's
    /// reply); then nothing is sent and the connection goes back to the pool.
    async fn envelope(
        &self,
        session: &str,
        commands: impl Fn(&Conn) -> Result<Vec<Vec<u8>>, String>,
    ) -> Result<(Conn, Vec<Reply>), String> {
        let mut pooled = pool::checkout(&self.setting);
        loop {
            let reused = pooled.is_some();
            let mut conn = match pooled.take() {
                Some(c) => c,
                None => self.open(session).await?,
            };
            let cmds = match commands(&conn) {
                Ok(cmds) => cmds,
                Err(reply) => {
                    tracing::info!(session, downstream = %self.setting.target, reply, "envelope not sent");
                    self.reuse(conn);
                    return Err(reply);
                }
            };
            let mut replies = Vec::with_capacity(cmds.len());
            let mut reset = !reused;
            let exchange: io::Result<()> = async {
                if conn.caps.pipelining {
                    // In groups: a server answering thousands of RCPTs
                    // while we still write could otherwise block both.
                    for (i, group) in cmds.chunks(PIPELINE_GROUP).enumerate() {
                        let rset = i == 0 && reused;
                        let mut batch = if rset {
                            b"RSET\r\n".to_vec()
                        } else {
                            Vec::new()
                        };
                        batch.extend(group.iter().flatten());
                        conn.send(&batch).await?;
                        if rset {
                            expect_positive(conn.reply().await?)?;
                            reset = true;
                        }
                        for _ in group {
                            replies.push(conn.reply().await?);
                        }
                    }
                } else {
                    if reused {
                        expect_positive(conn.command(b"RSET\r\n").await?)?;
                        reset = true;
                    }
                    for (i, cmd) in cmds.iter().enumerate() {
                        let is_data = cmd.as_slice() == b"DATA\r\n";
                        let go = match i {
                            0 => true,
                            _ if is_data => replies.iter().all(Reply::positive),
                            _ => replies[0].positive(),
                        };
                        if go {
                            replies.push(conn.command(cmd).await?);
                        }
                    }
                }
                Ok(())
            }
            .await;
            match exchange {
                Ok(()) => return Ok((conn, replies)),
                Err(e) if !reset => {
                    tracing::debug!(session, downstream = %self.setting.target, error = %e, "pooled connection was closed; opening a new one");
                    pool::discard_idle(&self.setting);
                }
                Err(e) => return Err(self.io_failure(session, "envelope", &e)),
            }
        }
    }

    /// The whole transaction after the client's final dot: MAIL, every
    /// RCPT and DATA (pipelined when offered), then the message.
    pub async fn deliver(
        &self,
        session: &str,
        envelope: &Envelope,
        eight_bit: bool,
        head: &[u8],
        spool: &Spooled,
    ) -> JobResult {
        let params = MailParams {
            size: Some(wire_size(head) + spool.size + spool.lines),
            eight_bit,
            smtputf8: envelope.smtputf8,
        };
        let ascii = envelope.sender.is_ascii() && envelope.recipients.iter().all(|r| r.is_ascii());
        let envelope_commands = |conn: &Conn| {
            if params.downgraded(conn) && !ascii {
                return Err(NO_SMTPUTF8_DATA.to_string());
            }
            let mut cmds = vec![mail_command(conn, &envelope.sender, params)];
            cmds.extend(envelope.recipients.iter().map(|r| rcpt_command(r)));
            cmds.push(b"DATA\r\n".to_vec());
            Ok(cmds)
        };
        let (conn, replies) = match self.envelope(session, envelope_commands).await {
            Ok(x) => x,
            Err(reply) => return JobResult::Failed(reply),
        };
        if params.downgraded(&conn) {
            self.log_downgrade(session);
        }
        let data_open = replies.len() == envelope.recipients.len() + 2
            && replies.last().is_some_and(|r| r.code == 354);
        if !replies[0].positive() {
            tracing::info!(session, downstream = %self.setting.target, reply = %replies[0].for_client(), "downstream refused MAIL");
            self.end_refused(conn, data_open);
            return JobResult::Failed(replies[0].for_client());
        }
        let rcpt_replies = &replies[1..replies.len().min(envelope.recipients.len() + 1)];
        let refused: Vec<(&[u8], &Reply)> = envelope
            .recipients
            .iter()
            .zip(rcpt_replies)
            .filter(|(_, r)| !r.positive())
            .map(|(a, r)| (a.as_slice(), r))
            .collect();
        if !refused.is_empty() {
            for (addr, r) in &refused {
                tracing::info!(session, downstream = %self.setting.target, rcpt = %addr.escape_ascii(), reply = %r.for_client(), "downstream refused RCPT");
            }
            self.end_refused(conn, data_open);
            return JobResult::Failed(verdict_for_refusals(&refused));
        }
        if !data_open {
            let last = replies.last().expect("DATA was sent");
            tracing::info!(session, downstream = %self.setting.target, reply = %last.for_client(), "downstream refused DATA");
            // Anything but a refusal (a 2xx or 3xx other than 354) leaves
            // the downstream in an unknown state: the connection is closed.
            self.end_refused(conn, !(400..600).contains(&last.code));
            return JobResult::Failed(last.for_client());
        }
        let rcpts: Vec<&[u8]> = envelope.recipients.iter().map(Vec::as_slice).collect();
        self.send_message(session, conn, &rcpts, head, spool).await
    }

    /// After a refusal: back to the pool, or closed when DATA was already
    /// accepted or the state is unknown (closing without the final dot
    /// abandons the message).
    fn end_refused(&self, conn: Conn, close: bool) {
        if close {
            drop(conn);
        } else {
            self.reuse(conn);
        }
    }

    /// After `354`: the message, the final dot, and the final reply (one
    /// per recipient for LMTP).
    async fn send_message(
        &self,
        session: &str,
        mut conn: Conn,
        rcpts: &[&[u8]],
        head: &[u8],
        spool: &Spooled,
    ) -> JobResult {
        let mut encoder = DataEncoder::default();
        let mut out = Vec::with_capacity(WRITE_CHUNK + 1024);
        encoder.feed(head, &mut out);
        let mut reader = spool.reader();
        let sent: io::Result<()> = async {
            loop {
                match reader.next_chunk().await? {
                    Some(chunk) => encoder.feed(&chunk, &mut out),
                    None => {
                        encoder.end(&mut out);
                        conn.send(&out).await?;
                        return Ok(());
                    }
                }
                if out.len() >= WRITE_CHUNK {
                    conn.send(&out).await?;
                    out.clear();
                }
            }
        }
        .await;
        if let Err(e) = sent {
            // Closing without the final dot: the downstream drops the message.
            return JobResult::Failed(self.io_failure(session, "message", &e));
        }
        let expected = if self.setting.lmtp { rcpts.len() } else { 1 };
        let mut finals = Vec::with_capacity(expected);
        for _ in 0..expected {
            match conn.reply().await {
                Ok(r) => finals.push(r),
                Err(e) => {
                    // Some recipients may already have it: the client's
                    // retry can bring a duplicate, never a loss.
                    return JobResult::Failed(self.io_failure(session, "end of data", &e));
                }
            }
        }
        pool::checkin(&self.setting, conn);
        if self.setting.lmtp {
            let failed: Vec<(&[u8], &Reply)> = rcpts
                .iter()
                .zip(&finals)
                .filter(|(_, r)| !r.positive())
                .map(|(a, r)| (*a, r))
                .collect();
            for (addr, r) in &failed {
                tracing::info!(session, downstream = %self.setting.target, rcpt = %addr.escape_ascii(), reply = %r.for_client(), "downstream refused the message for a recipient");
            }
            if failed.is_empty() {
                return JobResult::Queued(format!(
                    "250 ok delivered to {} recipient{}: {}",
                    rcpts.len(),
                    if rcpts.len() == 1 { "" } else { "s" },
                    finals[0].text()
                ));
            }
            return JobResult::Failed(verdict_for_refusals(&failed));
        }
        let r = &finals[0];
        if r.positive() {
            JobResult::Queued(format!("250 ok {}", r.text()))
        } else {
            tracing::info!(session, downstream = %self.setting.target, reply = %r.for_client(), "downstream refused the message");
            JobResult::Failed(r.for_client())
        }
    }
}

/// A downstream transaction opened at RCPT time (`verify-rcpt=yes`).
pub struct Transaction {
    downstream: Downstream,
    conn: Conn,
    /// Recipients the downstream accepted, in order.
    accepted: Vec<Vec<u8>>,
    /// An SMTPUTF8 transaction opened without the parameter (the
    /// downstream does not offer it): a UTF-8 recipient is refused.
    downgraded: bool,
}

impl Transaction {
    /// Passes one RCPT through. `Err` is the reply for the client (the
    /// downstream's own refusal, or a 451 when it cannot be asked).
    pub async fn rcpt(&mut self, session: &str, addr: &[u8]) -> Result<(), RcptError> {
        if self.downgraded && !addr.is_ascii() {
            tracing::info!(session, downstream = %self.downstream.setting.target, rcpt = %addr.escape_ascii(),
                "downstream does not offer SMTPUTF8: a UTF-8 recipient cannot be passed on");
            return Err(RcptError::Refused(NO_SMTPUTF8_RCPT.into()));
        }
        match self.conn.command(&rcpt_command(addr)).await {
            Ok(r) if r.positive() => {
                self.accepted.push(addr.to_vec());
                Ok(())
            }
            Ok(r) => {
                tracing::info!(session, downstream = %self.downstream.setting.target, rcpt = %addr.escape_ascii(), reply = %r.for_client(), "downstream refused RCPT");
                Err(RcptError::Refused(r.for_client()))
            }
            Err(e) => Err(RcptError::Broken(
                self.downstream.io_failure(session, "RCPT", &e),
            )),
        }
    }

    /// DATA and the message, after the client's final dot.
    /// If the downstream closed the transaction meanwhile (it timed out
    /// while the client sent the message or `[body]` plugins ran: an I/O
    /// error or a 421 at DATA), the message is handed over afresh on
    /// another connection with `envelope`; nothing was sent yet.
    pub async fn data(
        mut self,
        session: &str,
        envelope: &Envelope,
        eight_bit: bool,
        head: &[u8],
        spool: &Spooled,
    ) -> JobResult {
        let r = match self.conn.command(b"DATA\r\n").await {
            Ok(r) if r.code != 421 => r,
            stale => {
                let why = match stale {
                    Ok(r) => r.for_client(),
                    Err(e) => e.to_string(),
                };
                tracing::info!(session, downstream = %self.downstream.setting.target, why, "downstream transaction closed before DATA; handing over on a new connection");
                drop(self.conn);
                return self
                    .downstream
                    .deliver(session, envelope, eight_bit, head, spool)
                    .await;
            }
        };
        if r.code != 354 {
            tracing::info!(session, downstream = %self.downstream.setting.target, reply = %r.for_client(), "downstream refused DATA");
            self.downstream
                .end_refused(self.conn, !(400..600).contains(&r.code));
            return JobResult::Failed(r.for_client());
        }
        let rcpts: Vec<&[u8]> = self.accepted.iter().map(Vec::as_slice).collect();
        self.downstream
            .send_message(session, self.conn, &rcpts, head, spool)
            .await
    }

    /// Ends the transaction without a message (RSET, MAIL again, the
    /// client left, a refusal): the connection is reset and reused.
    pub fn abandon(self) {
        self.downstream.reuse(self.conn);
    }
}

/// A RCPT the downstream did not accept.
#[derive(Debug)]
pub enum RcptError {
    /// The downstream refused this recipient; the reply for the client.
    Refused(String),
    /// The connection failed; the reply for the client (the transaction
    /// is dead).
    Broken(String),
}

/// An error unless `r` is 2xx (a pooled connection's RSET).
fn expect_positive(r: Reply) -> io::Result<()> {
    if r.positive() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "RSET refused: {}",
            r.for_client()
        )))
    }
}

/// `MAIL FROM:<sender>` with SIZE, BODY and SMTPUTF8 as the downstream
/// allows.
fn mail_command(conn: &Conn, sender: &[u8], params: MailParams) -> Vec<u8> {
    let mut cmd = b"MAIL FROM:<".to_vec();
    cmd.extend(clean_address(sender));
    cmd.push(b'>');
    if let (true, Some(size)) = (conn.caps.size, params.size) {
        cmd.extend_from_slice(format!(" SIZE={size}").as_bytes());
    }
    if params.eight_bit && conn.caps.eight_bit {
        cmd.extend_from_slice(b" BODY=8BITMIME");
    }
    if params.smtputf8 && conn.caps.smtputf8 {
        cmd.extend_from_slice(b" SMTPUTF8");
    }
    cmd.extend_from_slice(b"\r\n");
    cmd
}

/// `RCPT TO:<addr>`.
fn rcpt_command(addr: &[u8]) -> Vec<u8> {
    let mut cmd = b"RCPT TO:<".to_vec();
    cmd.extend(clean_address(addr));
    cmd.extend_from_slice(b">\r\n");
    cmd
}

/// An address for a command line: CR, LF, NUL, `<` and `>` cannot end or
/// split the command.
fn clean_address(addr: &[u8]) -> Vec<u8> {
    addr.iter()
        .map(|&b| match b {
            b'\r' | b'\n' | 0 | b'<' | b'>' => b'?',
            _ => b,
        })
        .collect()
}

/// The client's reply for an I/O failure (`connecting`: before any
/// command was answered).
fn io_reply(e: &io::Error, connecting: bool) -> &'static str {
    match e.kind() {
        io::ErrorKind::TimedOut => TIMED_OUT,
        _ if connecting => CONNECT_FAILED,
        _ => LOST,
    }
}

/// The client's reply when some recipients were refused: a temporary
/// refusal wins (the client retries), else the first permanent one, named.
fn verdict_for_refusals(refused: &[(&[u8], &Reply)]) -> String {
    if let Some((_, r)) = refused.iter().find(|(_, r)| r.temporary()) {
        return r.for_client();
    }
    match refused {
        [(_, r)] => r.for_client(),
        [(addr, r), ..] => {
            let code = if (500..600).contains(&r.code) {
                r.code
            } else {
                554
            };
            format!(
                "{code} {} of the recipients refused; <{}>: {}",
                refused.len(),
                String::from_utf8_lossy(&clean_address(addr))
                    .replace(|c: char| !c.is_ascii_graphic(), "?"),
                r.text()
            )
        }
        [] => LOST.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, text: &str) -> Reply {
        Reply {
            code,
            lines: vec![text.as_bytes().to_vec()],
        }
    }

    #[test]
    fn refusal_verdicts() {
        let perm = reply(550, "5.1.1 unknown");
        let temp = reply(452, "4.2.2 over quota");
        assert_eq!(
            verdict_for_refusals(&[(b"a@x", &perm)]),
            "550 5.1.1 unknown"
        );
        assert_eq!(
            verdict_for_refusals(&[(b"a@x", &perm), (b"b@x", &temp)]),
            "452 4.2.2 over quota"
        );
        assert_eq!(
            verdict_for_refusals(&[(b"a@x", &perm), (b"b\r\n@x", &perm)]),
            "550 2 of the recipients refused; <a@x>: 5.1.1 unknown"
        );
    }

    #[test]
    fn commands_are_single_lines() {
        assert_eq!(rcpt_command(b"a>\r\nRSET@x"), b"RCPT TO:<a???RSET@x>\r\n");
        assert_eq!(clean_address(b""), b"");
    }
}
