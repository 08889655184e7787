//! DATA through the spool: used when `[body]` plugins are configured or
//! the backend (smtp, lmtp, sendmail) needs the whole message. The message
//! is received into the spool, the `[body]` hook reads it, and only then is
//! it handed to the backend; the client's reply is the backend's verdict.

use super::data::{BodyEnd, Sink};
use super::{Flow, Session, Verdict};
use crate::config::plugins::Hook;
use crate::protocol::reply::text;
use crate::queue::spool::{SpoolWriter, Spooled};
use crate::queue::{deliver_spooled, Backend, Envelope, Handoff, JobResult};
use std::time::Instant;

/// Most bytes of `SMTPRCPTS`: one environment string may not exceed
/// 128 KiB (the kernel refuses to start the program), so the list holds
/// the first recipients that fit; `SMTPRCPTCOUNT` has their number.
const MAX_RCPTS_VAR: usize = 64 * 1024;

/// The reply when the spool cannot take the message.
pub(crate) const SPOOL_FAILURE: &str = "451 qq write error or disk full (#4.3.0)";

/// A message whose transaction has ended and whose body is being
/// received: what its delivery needs.
pub(crate) struct PendingMessage {
    /// Sender and recipients.
    pub envelope: Envelope,
    /// The client declared `BODY=8BITMIME` (passed on downstream).
    pub eight_bit: bool,
    /// Where it goes.
    pub backend: Backend,
    /// `[body]` plugins will read it (it is spooled on file).
    pub body_hooks: bool,
    /// When DATA or the first BDAT was accepted (for the log line).
    pub started: Instant,
}

impl Session {
    /// DATA after the `[data]` hook, through the spool.
    pub(crate) async fn data_spooled(&mut self, msg: PendingMessage) -> Flow {
        let Some(mut writer) = self.open_spool(msg.body_hooks).await else {
            return self.simple(SPOOL_FAILURE);
        };
        self.io.reply(text::GO_AHEAD);
        let head = self.message_head();
        writer.write(&head).await;
        let mut decoder = self.body_decoder(false);
        let end = self
            .copy_body(&mut Sink::Spool(&mut writer), &mut decoder)
            .await;
        if let Some(refusal) = self.body_refusal(&end, &decoder) {
            drop(writer);
            self.end_transaction();
            return self
                .finish_data(&msg.envelope, decoder.size, msg.started, refusal, end)
                .await;
        }
        self.deliver_spool(msg, writer, decoder.size).await
    }

    /// A spool for a message: on file when `[body]` plugins will read it,
    /// else in memory until it grows large. `None` (logged, the downstream
    /// transaction ended) when no spool file can be made.
    pub(crate) async fn open_spool(&mut self, body_hooks: bool) -> Option<SpoolWriter> {
        let dir = self.cfg.control.spooldir.clone();
        if !body_hooks {
            return Some(SpoolWriter::in_memory(&dir));
        }
        match SpoolWriter::on_file(&dir).await {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(session = %self.id, dir = %dir.display(), error = %e, "cannot create a spool file");
                self.end_transaction();
                None
            }
        }
    }

    /// A message received whole into the spool (`size` stored bytes):
    /// the `[body]` hook reads it, then the backend takes it, and the
    /// client gets the backend's verdict.
    pub(crate) async fn deliver_spool(
        &mut self,
        msg: PendingMessage,
        writer: SpoolWriter,
        size: u64,
    ) -> Flow {
        let PendingMessage {
            envelope,
            eight_bit,
            backend,
            body_hooks,
            started,
        } = msg;
        let spooled = match writer.finish().await {
            Ok(s) => s,
            Err(e) => {
                let dir = self.cfg.control.spooldir.display();
                tracing::error!(session = %self.id, dir = %dir, error = %e, "cannot write the spool file");
                self.end_transaction();
                return self
                    .finish_data(
                        &envelope,
                        size,
                        started,
                        SPOOL_FAILURE.into(),
                        BodyEnd::Complete,
                    )
                    .await;
            }
        };
        // DKIM, ARC and DMARC (control/dmarc): their field goes on top.
        let results = match self.verify_message(&spooled).await {
            Ok(field) => field,
            Err(refusal) => {
                self.end_transaction();
                return self
                    .finish_data(&envelope, size, started, refusal, BodyEnd::Complete)
                    .await;
            }
        };
        // Headers added by the [body] plugins go on top of the message.
        let mut added = Vec::new();
        if body_hooks {
            let verdict = self.run_body_hook(&envelope, &spooled).await;
            // `H` lines of [body] plugins belong to this message only:
            // taken now, whatever the verdict, so none reaches the next.
            added = std::mem::take(&mut self.spp.headers);
            match verdict {
                Verdict::Accept | Verdict::AcceptSkipChecks => {}
                Verdict::Refuse => {
                    self.end_transaction();
                    self.log_transaction(
                        &envelope,
                        spooled.size,
                        started,
                        "refused by a [body] plugin",
                    );
                    return Flow::Continue;
                }
                Verdict::Disconnect => {
                    self.end_transaction();
                    self.log_transaction(
                        &envelope,
                        spooled.size,
                        started,
                        "disconnected by a [body] plugin",
                    );
                    return Flow::Close(0);
                }
            }
        }
        if !results.is_empty() {
            added.splice(0..0, results);
        }
        let reply = match self
            .hand_over(&backend, &envelope, eight_bit, &added, &spooled)
            .await
        {
            JobResult::Queued(ok) => ok,
            JobResult::Failed(r) => r,
        };
        crate::metrics::handoff(backend.kind(), super::data::reply_code(&reply));
        drop(spooled);
        self.finish_data(&envelope, size, started, reply, BodyEnd::Complete)
            .await
    }

    /// Runs the `[body]` plugins with the spooled message on stdin.
    async fn run_body_hook(&mut self, envelope: &Envelope, spooled: &Spooled) -> Verdict {
        let mut rcpts = Vec::new();
        for r in &envelope.recipients {
            if rcpts.len() + r.len() + 1 > MAX_RCPTS_VAR {
                tracing::warn!(session = %self.id, rcpts = envelope.recipients.len(),
                    "SMTPRCPTS holds only the first recipients (64 KiB)");
                break;
            }
            rcpts.extend_from_slice(r);
            rcpts.push(b'\n');
        }
        self.env.set("SMTPRCPTS", &rcpts);
        self.env
            .set("SMTPRCPTCOUNT", envelope.recipients.len().to_string());
        self.env.set("SMTPMESSAGESIZE", spooled.size.to_string());
        self.body_file = spooled.path().map(std::path::Path::to_path_buf);
        let verdict = self.run_hook(Hook::Body, None).await;
        self.body_file = None;
        self.env.remove("SMTPRCPTS");
        self.env.remove("SMTPMESSAGESIZE");
        verdict
    }

    /// Gives the spooled message to the backend.
    async fn hand_over(
        &mut self,
        backend: &Backend,
        envelope: &Envelope,
        eight_bit: bool,
        added: &[u8],
        spooled: &Spooled,
    ) -> JobResult {
        let Backend::Forward(setting) = backend else {
            let handoff = Handoff {
                env: &self.env,
                home: &self.cfg.home,
                envelope,
                head: added,
                spooled,
                limit: self.cfg.control.timeout,
                session: &self.id,
            };
            return deliver_spooled(backend, &handoff).await;
        };
        if let Some(t) = self.downstream.take() {
            return t.data(&self.id, envelope, eight_bit, added, spooled).await;
        }
        self.downstream_for(setting.clone())
            .deliver(&self.id, envelope, eight_bit, added, spooled)
            .await
    }
}
