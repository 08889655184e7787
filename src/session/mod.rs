//! The SMTP session: one state machine for both transports, generic over
//! the byte stream. `mod.rs` owns the state and the command loop; each verb
//! with a hook has its own file, and [`hooks`] applies plugin directives.

mod auth;
mod body;
mod checks;
mod chunking;
mod data;
pub mod env;
mod helo;
mod hooks;
pub mod io;
mod mail;
mod rcpt;
mod report;
mod tls;
pub mod trace;

use crate::config::plugins::{Hook, PluginTable};
use crate::config::{Config, ConfigError};
use crate::protocol::command::{Command, Verb};
use crate::protocol::enhanced::ReplyContext;
use crate::protocol::reply::text;
use crate::queue::Backend;
use env::SessionEnv;
use io::{IoEnd, Line, RunState, SmtpIo};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

/// What the command loop does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next command.
    Continue,
    /// End the session (after flushing) with this exit status.
    Close(i32),
}

/// The result of a hook (qmail-spp verdict).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on with the server's own checks (A, N, no verdict, plugins off).
    Accept,
    /// Go on, skipping the server's check for this command (O).
    AcceptSkipChecks,
    /// The command is refused; the reply was already queued (E, failure).
    Refuse,
    /// Close the connection (R after its reply, or D).
    Disconnect,
}

/// An open mail transaction (qmail's `seenmail`).
#[derive(Debug, Clone, Default)]
pub struct Transaction {
    /// Envelope sender.
    pub sender: Vec<u8>,
    /// Accepted recipients, with any RELAYCLIENT suffix.
    pub recipients: Vec<Vec<u8>>,
    /// The bytes of `recipients` (their addresses added up), held to
    /// 1 MiB (`MAX_RECIPIENT_BYTES` in `rcpt.rs`) so one session's envelope stays small.
    pub recipient_bytes: usize,
    /// The client declared `BODY=8BITMIME` (passed on downstream).
    pub eight_bit: bool,
    /// The client's `SIZE=` (passed on downstream at RCPT time).
    pub declared_size: Option<u64>,
    /// The client declared `SMTPUTF8` (RFC 6531): addresses must be UTF-8,
    /// domains match control files in their IDNA forms too, and the queue
    /// and plugins are told (`SMTPUTF8=1`).
    pub smtputf8: bool,
}

/// qmail-spp state (see the lifecycle table: what RSET, MAIL, DATA clear).
#[derive(Debug, Default)]
pub struct SppState {
    /// The plugin table; `None` with `NOSPP`.
    pub plugins: Option<Arc<PluginTable>>,
    /// Plugins are off: `NOSPP`, or a plugin answered `A`.
    pub off: bool,
    /// Texts queued with `LM`, sent at every MAIL until cleared.
    pub queued_mail: Vec<Vec<u8>>,
    /// Texts queued with `LR`, sent at every RCPT until cleared.
    pub queued_rcpt: Vec<Vec<u8>>,
    /// Texts queued with `LD`, sent at every DATA until cleared.
    pub queued_data: Vec<Vec<u8>>,
    /// Header lines added with `H` (LF-terminated), for the next message.
    pub headers: Vec<u8>,
    /// Recipients accepted in this transaction.
    pub rcpt_count: u64,
    /// RCPTs of this transaction that reached the hook.
    pub rcpt_count_all: u64,
}

impl SppState {
    /// What RSET and a DATA that reached 354 clear.
    fn clear_transaction(&mut self) {
        self.queued_mail.clear();
        self.queued_rcpt.clear();
        self.queued_data.clear();
        self.headers.clear();
        self.rcpt_count = 0;
        self.rcpt_count_all = 0;
    }
}

/// Values read once from the environment at the start (later `S`
/// directives do not change them, as in qmail).
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// `TCPREMOTEIP` or `unknown`.
    pub remote_ip: Vec<u8>,
    /// `TCPREMOTEHOST` or `unknown`.
    pub remote_host: Vec<u8>,
    /// `TCPREMOTEINFO`, if set.
    pub remote_info: Option<Vec<u8>>,
    /// `TCPLOCALHOST`, else `TCPLOCALIP`, else `unknown`.
    pub local: Vec<u8>,
    /// `RELAYCLIENT`, if set: every recipient allowed, value appended.
    pub relay_client: Option<Vec<u8>>,
    /// Size limit: `DATABYTES` if set, else `control/databytes`.
    pub databytes: u64,
}

impl ClientInfo {
    /// Reads the variables from the session environment.
    pub fn from_env(env: &SessionEnv, control_databytes: u64) -> ClientInfo {
        let or_unknown = |v: Option<&[u8]>| v.unwrap_or(b"unknown").to_vec();
        ClientInfo {
            remote_ip: or_unknown(env.get("TCPREMOTEIP")),
            remote_host: or_unknown(env.get("TCPREMOTEHOST")),
            remote_info: env.get("TCPREMOTEINFO").map(<[u8]>::to_vec),
            local: or_unknown(env.get("TCPLOCALHOST").or_else(|| env.get("TCPLOCALIP"))),
            relay_client: env.get("RELAYCLIENT").map(<[u8]>::to_vec),
            databytes: match env.get("DATABYTES") {
                Some(v) => crate::config::control::leading_number(v).unwrap_or(0),
                None => control_databytes,
            },
        }
    }
}

/// What the daemon adds to a session: shared limits and signals.
#[derive(Debug, Default, Clone)]
pub struct SessionControls {
    /// Permits for running plugin processes (shared by all sessions).
    pub plugin_slots: Option<Arc<Semaphore>>,
    /// The daemon's run state (shutdown).
    pub shutdown: Option<watch::Receiver<RunState>>,
    /// The session's lifetime cap.
    pub lifetime: Option<Duration>,
    /// Silence required from the client before the greeting (zero: none).
    pub greeting_delay: Duration,
    /// The connection starts with a TLS handshake (port 465 style).
    pub implicit_tls: bool,
    /// MAIL is refused until STARTTLS.
    pub require_tls: bool,
    /// AUTH, if configured.
    pub auth: Option<Arc<crate::auth::AuthConfig>>,
    /// Submission: AUTH is required before MAIL whatever `SMTPAUTH` says.
    pub require_auth: bool,
    /// The DNS server the checks ask (`serve --dns-server`), over
    /// `control/dnsserver`.
    pub dns_server: Option<std::net::SocketAddr>,
}

/// One SMTP session.
pub struct Session {
    /// The client connection.
    pub(crate) io: SmtpIo,
    /// The configuration snapshot this session started with.
    pub(crate) cfg: Arc<Config>,
    /// The environment given to plugins and the queue.
    pub(crate) env: SessionEnv,
    /// Identifier in logs.
    pub(crate) id: String,
    /// Facts about the client, read once.
    pub(crate) client: ClientInfo,
    /// The argument of the last accepted HELO/EHLO (initially the remote host).
    pub(crate) helo: Vec<u8>,
    /// The open transaction, if any.
    pub(crate) tx: Option<Transaction>,
    /// The transaction being received declared SMTPUTF8. Follows `tx`
    /// after every command, and so lasts through DATA (which takes `tx` at
    /// its start) for the Received: line; see [`Session::follow_smtputf8`].
    pub(crate) smtputf8: bool,
    /// The sender of the last evaluated MAIL is in badmailfrom.
    pub(crate) bad_sender: bool,
    /// Plugin state.
    pub(crate) spp: SppState,
    /// The queue backend, chosen at the first DATA.
    pub(crate) backend: Option<Backend>,
    /// Permits for plugin processes, shared by the daemon's sessions.
    pub(crate) plugin_slots: Option<Arc<Semaphore>>,
    /// Early-talker check before the greeting.
    pub(crate) greeting_delay: Duration,
    /// Plugin verdicts since the last transaction ended (`hook:verdict`),
    /// for the transaction's log line.
    pub(crate) verdicts: Vec<String>,
    /// The TLS connection, once established.
    pub(crate) tls: Option<crate::tls::TlsInfo>,
    /// Start with a TLS handshake.
    pub(crate) implicit_tls: bool,
    /// Refuse MAIL before STARTTLS.
    pub(crate) require_tls: bool,
    /// AUTH configuration.
    pub(crate) auth: Option<Arc<crate::auth::AuthConfig>>,
    /// What this session offers (from `SMTPAUTH`), decided at the start.
    pub(crate) offer: Option<crate::auth::Offer>,
    /// Submission mode: AUTH required.
    pub(crate) require_auth: bool,
    /// The authenticated user.
    pub(crate) authenticated: Option<String>,
    /// Failed AUTH attempts so far.
    pub(crate) auth_failures: u32,
    /// The environment as the connection started (restored by STARTTLS).
    pub(crate) initial_env: SessionEnv,
    /// The downstream transaction opened at the first RCPT when the
    /// backend verifies recipients (`verify-rcpt=yes`).
    pub(crate) downstream: Option<Box<crate::queue::forward::Transaction>>,
    /// The spooled message while `[body]` plugins run (their stdin).
    pub(crate) body_file: Option<std::path::PathBuf>,
    /// The message being received in BDAT chunks, between its first and
    /// its `LAST` chunk (the transaction is ended; `tx` is `None`).
    pub(crate) chunked: Option<Box<chunking::ChunkedMessage>>,
    /// The plugin that decided the current command, if one refused it
    /// (for the `refused` log line).
    pub(crate) decider: Option<report::Decider>,
    /// The RCPTs of the open transaction and their reply codes (for the
    /// `transaction` log line).
    pub(crate) rcpt_outcomes: Vec<report::RcptOutcome>,
    /// Where every plugin run is reported (`spp-smtpd try`); `None` in
    /// `stdio` and `serve`.
    pub(crate) trace: Option<trace::TraceSender>,
    /// The DNS server named by the daemon for the checks, if any.
    pub(crate) dns_server: Option<std::net::SocketAddr>,
    /// The built-in checks' state; `None` when none is configured.
    pub(crate) checks: Option<Box<checks::SessionChecks>>,
}

impl Session {
    /// Prepares a session over a connection with the given environment.
    pub fn new(stream: io::BoxStream, cfg: Arc<Config>, env: SessionEnv, id: String) -> Self {
        let client = ClientInfo::from_env(&env, cfg.control.databytes);
        let mut io = SmtpIo::new(stream, cfg.control.timeout);
        io.enhanced = cfg.control.extensions.enhanced_status_codes;
        Session {
            io,
            helo: client.remote_host.clone(),
            client,
            cfg,
            env,
            id,
            tx: None,
            smtputf8: false,
            bad_sender: false,
            spp: SppState::default(),
            backend: None,
            plugin_slots: None,
            greeting_delay: Duration::ZERO,
            verdicts: Vec::new(),
            tls: None,
            implicit_tls: false,
            require_tls: false,
            auth: None,
            offer: None,
            require_auth: false,
            authenticated: None,
            auth_failures: 0,
            initial_env: SessionEnv::default(),
            downstream: None,
            body_file: None,
            chunked: None,
            decider: None,
            rcpt_outcomes: Vec::new(),
            trace: None,
            dns_server: None,
            checks: None,
        }
    }

    /// Reports every plugin run of this session to `sink`.
    pub fn traced(mut self, sink: trace::TraceSender) -> Self {
        self.trace = Some(sink);
        self
    }

    /// Attaches the daemon's limits and signals.
    pub fn with_controls(mut self, controls: SessionControls) -> Self {
        self.plugin_slots = controls.plugin_slots;
        self.greeting_delay = controls.greeting_delay;
        self.implicit_tls = controls.implicit_tls;
        self.require_tls = controls.require_tls;
        self.auth = controls.auth;
        self.require_auth = controls.require_auth;
        self.dns_server = controls.dns_server;
        self.io.stop.shutdown = controls.shutdown;
        self.io.stop.deadline = controls
            .lifetime
            .and_then(|l| tokio::time::Instant::now().checked_add(l));
        self
    }

    /// Runs the whole session; returns the exit status for stdio mode
    /// (0 after QUIT, R or D; 1 otherwise).
    ///
    /// Not an `async fn`: its body works on the session the future owns,
    /// where an `async fn` would keep a second copy of it (its argument)
    /// in the future of every connection.
    #[allow(clippy::manual_async_fn)] // the point: see above
    pub fn run(mut self) -> impl std::future::Future<Output = i32> + Send {
        async move { self.run_owned().await }
    }

    /// The body of [`Session::run`].
    async fn run_owned(&mut self) -> i32 {
        let code = match self.start().await {
            Flow::Continue => self.command_loop().await,
            Flow::Close(code) => code,
        };
        let _ = self.io.flush().await;
        let open = match (&self.tx, &self.chunked) {
            (Some(tx), _) => Some((tx.sender.clone(), tx.recipients.len())),
            (None, Some(c)) => Some(c.envelope_summary()),
            (None, None) => None,
        };
        self.end_transaction();
        if let Some((sender, rcpts)) = open {
            let outcomes = self.take_outcomes();
            tracing::info!(
                session = %self.id,
                client = %crate::logging::quoted(&self.client.remote_ip),
                helo = %crate::logging::quoted(&self.helo),
                from = %crate::logging::quoted(&sender),
                rcpts,
                outcomes = %crate::logging::quoted(outcomes.as_bytes()),
                verdicts = %crate::logging::quoted(self.verdicts.join(" ").as_bytes()),
                result = %crate::logging::quoted(b"abandoned"),
                "transaction"
            );
        }
        tracing::debug!(session = %self.id, code, "session ended");
        code
    }

    /// Loads the plugin table, runs the connection hook and greets.
    async fn start(&mut self) -> Flow {
        self.env.freeze();
        self.initial_env = self.env.clone();
        if self.implicit_tls {
            let Some(config) = self.cfg.tls.clone() else {
                tracing::error!(session = %self.id, "implicit TLS without a certificate");
                return Flow::Close(1);
            };
            if !Box::pin(self.handshake(config)).await {
                return Flow::Close(1);
            }
        }
        if let Some(cfg) = &self.auth {
            let smtpauth = self.env.get("SMTPAUTH");
            self.offer = crate::auth::offer(smtpauth, cfg.default_on, cfg.backend.cram_possible());
            if self.require_auth {
                let offer = self.offer.get_or_insert(crate::auth::Offer {
                    mechanisms: vec![crate::auth::Mechanism::Login, crate::auth::Mechanism::Plain],
                    required: true,
                });
                offer.required = true;
            }
        }
        match self.plugin_table().await {
            Ok(p) => {
                self.spp.off = p.is_none();
                self.spp.plugins = p;
            }
            Err(e) => {
                tracing::error!(session = %self.id, error = %e, "plugin configuration unreadable");
                self.io.reply(text::UNREADABLE_CONTROLS);
                return Flow::Close(1);
            }
        }
        self.start_checks(self.dns_server);
        self.report_start();
        let verdict = self.run_hook(Hook::Connection, None).await;
        self.report_end("CONNECT", None, false);
        match verdict {
            Verdict::Accept | Verdict::AcceptSkipChecks => {
                if !self.greeting_delay.is_zero() {
                    match self.io.quiet_for(self.greeting_delay).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::info!(session = %self.id, client = %self.client.remote_ip.escape_ascii(), "early talker");
                            let me = &self.cfg.control.greeting;
                            self.io.reply(
                                [
                                    b"554 ",
                                    &me[..],
                                    b" talking before the greeting is not allowed (#5.5.1)",
                                ]
                                .concat(),
                            );
                            return Flow::Close(1);
                        }
                        Err(_) => return Flow::Close(1),
                    }
                }
                let greeting = [b"220 ", &self.cfg.control.greeting[..], b" ESMTP"].concat();
                self.io.reply(greeting);
                Flow::Continue
            }
            Verdict::Refuse => Flow::Continue,
            Verdict::Disconnect => Flow::Close(0),
        }
    }

    /// The session's plugin table ([`Config::plugins_for`]); a file named
    /// by `SPPCONFFILE` is read through [`crate::blocking`].
    async fn plugin_table(&mut self) -> Result<Option<Arc<PluginTable>>, ConfigError> {
        let nospp = self.env.contains("NOSPP");
        let file = self.env.get("SPPCONFFILE");
        if !Config::plugins_read_file(nospp, file) {
            return self.cfg.plugins_for(nospp, file);
        }
        let (cfg, file) = (self.cfg.clone(), file.map(<[u8]>::to_vec));
        let read = crate::blocking::run(move || cfg.plugins_for(nospp, file.as_deref()));
        Box::pin(read)
            .await
            .unwrap_or_else(|e| Err(ConfigError::io(Path::new("SPPCONFFILE"), &e)))
    }

    /// Reads and dispatches commands until the session ends.
    async fn command_loop(&mut self) -> i32 {
        loop {
            self.io.busy = self.tx.is_some() || self.chunked.is_some();
            self.io.context = ReplyContext::Other;
            let line = match self.io.read_line().await {
                Ok(Line::Complete(l)) => l,
                Ok(Line::TooLong) => {
                    self.io.reply(text::LINE_TOO_LONG);
                    continue;
                }
                Err(end) => return self.io_ended(end).await,
            };
            let cmd = Command::parse(&line);
            let verb = cmd.verb;
            // AUTH's argument carries credentials; an unknown verb is
            // shown whole.
            let arg = match verb {
                Verb::Auth => None,
                Verb::Unknown => Some(line.clone()),
                _ => Some(cmd.arg.clone()),
            };
            self.report_start();
            let flow = self.dispatch(cmd).await;
            self.report_end(report::verb_name(verb), arg.as_deref(), verb == Verb::Rcpt);
            self.follow_smtputf8();
            if let Flow::Close(code) = flow {
                return code;
            }
        }
    }

    /// Handles a broken, timed-out or stopped connection.
    async fn io_ended(&mut self, end: IoEnd) -> i32 {
        let greeting = String::from_utf8_lossy(&self.cfg.control.greeting).into_owned();
        let last = match end {
            IoEnd::ReadTimeout => text::TIMEOUT.to_string(),
            IoEnd::Shutdown => {
                format!("421 {greeting} service shutting down, try again later (#4.3.2)")
            }
            IoEnd::Lifetime => format!("421 {greeting} session too long, closing (#4.4.2)"),
            IoEnd::Closed | IoEnd::WriteTimeout => return 1,
        };
        self.io.reply(last);
        let _ = self.io.flush().await;
        1
    }

    /// Runs one command.
    async fn dispatch(&mut self, cmd: Command) -> Flow {
        self.io.context = ReplyContext::of(cmd.verb);
        match cmd.verb {
            Verb::Helo => self.helo(cmd.arg, false).await,
            Verb::Ehlo => self.helo(cmd.arg, true).await,
            Verb::Mail => self.mail(cmd.arg).await,
            Verb::Rcpt => self.rcpt(cmd.arg).await,
            // Boxed: the DATA and queue state is only allocated during DATA.
            Verb::Data => Box::pin(self.data()).await,
            Verb::Rset => {
                self.rcpt_outcomes.clear();
                self.spp.clear_transaction();
                self.tx = None;
                self.end_transaction();
                self.verdicts.clear();
                self.io.reply("250 flushed");
                Flow::Continue
            }
            Verb::Noop => self.simple("250 ok"),
            Verb::Vrfy => self.simple("252 send some mail, i'll try my best"),
            Verb::Help => self.simple("214 spp-smtpd: qmail-spp compatible SMTP server"),
            Verb::Quit => {
                let bye = [b"221 ", &self.cfg.control.greeting[..]].concat();
                self.io.reply(bye);
                Flow::Close(0)
            }
            // Boxed: the handshake's state is only allocated during STARTTLS.
            Verb::Starttls => Box::pin(self.starttls()).await,
            Verb::Auth => Box::pin(self.auth(cmd.arg)).await,
            // Boxed like DATA.
            Verb::Bdat => Box::pin(self.bdat(cmd.arg)).await,
            Verb::Unknown => self.simple(text::UNIMPLEMENTED),
        }
    }

    /// The queue backend, chosen at first use for the whole session.
    pub(crate) fn backend(&mut self) -> Backend {
        self.backend
            .get_or_insert_with(|| {
                Backend::select(self.cfg.control.queue.as_ref(), &self.env, &self.cfg.home)
            })
            .clone()
    }

    /// How this session talks to the downstream of `setting`: EHLO as
    /// `control/me` (else the greeting), `timeoutsmtpd` unless it sets one.
    pub(crate) fn downstream_for(
        &self,
        setting: Arc<crate::config::queue::ForwardSetting>,
    ) -> crate::queue::forward::Downstream {
        let control = &self.cfg.control;
        let me = control.me.as_deref().unwrap_or(&control.greeting);
        crate::queue::forward::Downstream::new(setting, me, control.timeout)
    }

    /// Whether `addr` may be accepted: always with the Maildir and
    /// qmail-queue backends (qmail's rules); when `control/queue` hands the
    /// envelope to another MTA (sendmail, smtp, lmtp), only the plain form
    /// it reads exactly as we do, so no address can be relayed past
    /// rcpthosts.
    pub(crate) fn address_form_ok(&self, addr: &[u8]) -> bool {
        use crate::config::queue::QueueSetting;
        match &self.cfg.control.queue {
            Some(QueueSetting::Sendmail(_) | QueueSetting::Forward(_)) => {
                crate::protocol::address::is_plain_form(addr)
            }
            _ => true,
        }
    }

    /// Ends the downstream transaction, if one is open, and drops a
    /// message being received in chunks (RSET, a new MAIL or HELO,
    /// STARTTLS, the end of the session).
    pub(crate) fn end_transaction(&mut self) {
        self.chunked = None;
        if let Some(t) = self.downstream.take() {
            t.abandon();
        }
    }

    /// After each command: `SMTPUTF8=1` is in the environment exactly
    /// while an SMTPUTF8 transaction is open (set for the `[mail]` hook by
    /// MAIL itself; removed once the transaction ended with RSET, MAIL,
    /// HELO, STARTTLS or its DATA or `LAST` BDAT), whatever a plugin set
    /// meanwhile.
    fn follow_smtputf8(&mut self) {
        self.smtputf8 = match (&self.tx, &self.chunked) {
            (Some(tx), _) => tx.smtputf8,
            (None, Some(c)) => c.smtputf8(),
            (None, None) => false,
        };
        self.announce_smtputf8(self.smtputf8);
    }

    /// Sets `SMTPUTF8=1` in the environment, or removes it.
    pub(crate) fn announce_smtputf8(&mut self, on: bool) {
        match (on, self.env.get("SMTPUTF8")) {
            (true, Some(b"1")) | (false, None) => {}
            (true, _) => self.env.set("SMTPUTF8", "1"),
            (false, Some(_)) => self.env.remove("SMTPUTF8"),
        }
    }

    /// Queues a fixed reply.
    fn simple(&mut self, reply: &str) -> Flow {
        self.io.reply(reply);
        Flow::Continue
    }

    /// Parses a MAIL/RCPT argument with this host's `[ip]` rule. `Err`
    /// when an `[ip]` literal needed this host's addresses and they could
    /// not be enumerated: the reply (421) is queued and the session ends.
    pub(crate) fn parse_address(&mut self, arg: &[u8]) -> Result<Option<Vec<u8>>, Flow> {
        let unknown = std::cell::Cell::new(false);
        let parsed = crate::protocol::address::parse(
            arg,
            |ip| match self.cfg.local_ips.get() {
                Ok(ips) => ips.contains(ip),
                Err(_) => {
                    unknown.set(true);
                    false
                }
            },
            self.cfg.control.localiphost.as_deref(),
        );
        if let (true, Err(e)) = (unknown.get(), self.cfg.local_ips.get()) {
            tracing::error!(session = %self.id, error = %e, "cannot enumerate local addresses");
            self.io.reply(text::NO_LOCAL_IPS);
            return Err(Flow::Close(1));
        }
        Ok(parsed)
    }
}
