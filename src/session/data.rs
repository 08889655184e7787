//! DATA: checks, queued `LD` errors, the `[data]` hook, then the message
//! is streamed into the queue (Received: line and plugin headers first) and
//! the reply waits for the queue's answer. When a `[body]` hook or the
//! backend needs the whole message first, [`super::body`] takes over after
//! the `[data]` hook.

use super::body::PendingMessage;
use super::io::IoEnd;
use super::{Flow, Session, Verdict};
use crate::config::control::DataRate;
use crate::config::plugins::Hook;
use crate::logging::quoted;
use crate::plugin::directive::Queued;
use crate::protocol::data::{DataDecoder, Progress};
use crate::protocol::received::{received_line, ReceivedInfo};
use crate::protocol::reply::text;
use crate::queue::spool::SpoolWriter;
use crate::queue::{Envelope, Job, JobResult};
use std::time::{Instant, SystemTime};

/// Hop count at which a message is considered looping.
const MAX_HOPS: u32 = 100;

/// How reading the body ended.
pub(crate) enum BodyEnd {
    /// The terminating `.` line was read.
    Complete,
    /// A bare LF: the session ends.
    BareLf,
    /// The connection broke or timed out.
    Io(IoEnd),
}

impl Session {
    /// DATA
    pub(crate) async fn data(&mut self) -> Flow {
        if self.chunked.is_some() {
            return self.simple(text::DATA_AFTER_BDAT);
        }
        match &self.tx {
            None => return self.simple(text::MAIL_FIRST),
            Some(tx) if tx.recipients.is_empty() => return self.simple(text::RCPT_FIRST),
            Some(_) => {}
        }
        if self.send_queued(Queued::Data) {
            return Flow::Continue;
        }
        match self.run_hook(Hook::Data, None).await {
            Verdict::Refuse => return Flow::Continue,
            Verdict::Disconnect => return Flow::Close(0),
            Verdict::Accept | Verdict::AcceptSkipChecks => {}
        }
        let Some(msg) = self.take_transaction() else {
            return Flow::Continue;
        };
        if msg.body_hooks
            || msg.backend.needs_spool()
            || self.cfg.control.checks.verifies_messages()
        {
            return Box::pin(self.data_spooled(msg)).await;
        }
        let PendingMessage {
            envelope,
            backend,
            started,
            ..
        } = msg;
        let limit = self.cfg.control.timeout;
        let mut job = match Job::start(&backend, &self.env, &self.cfg.home, &envelope, limit).await
        {
            Ok(job) => job,
            Err(e) => {
                tracing::error!(session = %self.id, error = %e, backend = ?backend, "cannot start queue");
                return self.simple(text::QQT_FAILURE);
            }
        };
        self.io.reply(text::GO_AHEAD);
        let head = self.message_head();
        job.write(&head).await;

        let mut decoder = self.body_decoder(false);
        let end = self.copy_body(&mut Sink::Job(&mut job), &mut decoder).await;
        let refusal = self.body_refusal(&end, &decoder);
        let refused = refusal.is_some();
        let result = job.finish(refusal.is_none().then_some(&envelope)).await;
        let reply = match (refusal, result) {
            (Some(r), _) => r,
            (None, JobResult::Queued(ok)) => ok,
            (None, JobResult::Failed(r)) => r,
        };
        if !refused {
            crate::metrics::handoff(backend.kind(), reply_code(&reply));
        }
        self.finish_data(&envelope, decoder.size, started, reply, end)
            .await
    }

    /// Ends the open transaction for its message: the envelope, the
    /// backend, and whether `[body]` plugins will read it.
    pub(crate) fn take_transaction(&mut self) -> Option<PendingMessage> {
        let tx = self.tx.take()?;
        let backend = self.backend();
        let body_hooks = !self.spp.off
            && self
                .spp
                .plugins
                .as_ref()
                .is_some_and(|t| !t.for_hook(Hook::Body).is_empty());
        Some(PendingMessage {
            envelope: Envelope {
                sender: tx.sender,
                recipients: tx.recipients,
                smtputf8: tx.smtputf8,
            },
            eight_bit: tx.eight_bit,
            backend,
            body_hooks,
            started: Instant::now(),
        })
    }

    /// Logs the transaction and sends the final reply (or ends the
    /// session after a bare LF or a lost connection).
    pub(crate) async fn finish_data(
        &mut self,
        envelope: &Envelope,
        size: u64,
        started: Instant,
        reply: String,
        end: BodyEnd,
    ) -> Flow {
        let result = if reply.is_empty() {
            "connection lost"
        } else {
            &reply
        };
        self.log_transaction(envelope, size, started, result);
        match end {
            BodyEnd::Complete => self.simple(&reply),
            BodyEnd::BareLf => {
                self.io.reply(reply);
                Flow::Close(1)
            }
            BodyEnd::Io(e) => Flow::Close(self.io_ended(e).await),
        }
    }

    /// The `transaction` log line; the plugin verdicts are then cleared.
    pub(crate) fn log_transaction(
        &mut self,
        envelope: &Envelope,
        size: u64,
        started: Instant,
        result: &str,
    ) {
        let outcomes = self.take_outcomes();
        tracing::info!(
            session = %self.id,
            client = %quoted(&self.client.remote_ip),
            helo = %quoted(&self.helo),
            from = %quoted(&envelope.sender),
            rcpts = envelope.recipients.len(),
            outcomes = %quoted(outcomes.as_bytes()),
            size,
            verdicts = %quoted(self.verdicts.join(" ").as_bytes()),
            ms = started.elapsed().as_millis() as u64,
            result = %quoted(result.as_bytes()),
            "transaction"
        );
        self.verdicts.clear();
    }

    /// The Received: line and the pending `H` headers, which start the
    /// stored message; the transaction's plugin state is cleared.
    pub(crate) fn message_head(&mut self) -> Vec<u8> {
        let mut head = self.auth_results_field().unwrap_or_default();
        head.extend_from_slice(&received_line(
            &ReceivedInfo {
                remote_host: &self.client.remote_host,
                helo: &self.helo,
                remote_info: self.client.remote_info.as_deref(),
                remote_ip: &self.client.remote_ip,
                local: &self.client.local,
                protocol: self.received_protocol(),
            },
            SystemTime::now(),
        ));
        head.extend_from_slice(&self.spp.headers);
        self.spp.clear_transaction();
        head
    }

    /// The reply when the body itself is refused (looping, too big, bare
    /// CR or LF) or the connection was lost (empty); `None` when it can be
    /// queued.
    pub(crate) fn body_refusal(&self, end: &BodyEnd, decoder: &DataDecoder) -> Option<String> {
        match end {
            BodyEnd::BareLf => Some(text::BARE_LF.to_string()),
            BodyEnd::Io(_) => Some(String::new()),
            BodyEnd::Complete if decoder.hops >= MAX_HOPS => Some(text::LOOPING.into()),
            BodyEnd::Complete
                if self.client.databytes > 0 && decoder.size > self.client.databytes =>
            {
                Some(text::TOO_BIG.into())
            }
            BodyEnd::Complete if decoder.bare_lf => Some(text::BARE_LF.into()),
            BodyEnd::Complete if decoder.bare_cr => Some(text::BARE_CR.into()),
            BodyEnd::Complete => None,
        }
    }

    /// Decodes the body from the connection into `sink` until the
    /// terminator; stops writing once the message is to be refused. The
    /// body must keep up with `control/mindatarate`.
    pub(crate) async fn copy_body(
        &mut self,
        sink: &mut Sink<'_>,
        decoder: &mut DataDecoder,
    ) -> BodyEnd {
        let databytes = self.client.databytes;
        let mut chunk = Vec::with_capacity(8192);
        let floor = (self.cfg.control.data_rate, tokio::time::Instant::now());
        self.io.busy = true;
        self.io.bulk = true;
        let end = self
            .copy_body_inner(sink, decoder, databytes, &mut chunk, floor)
            .await;
        self.io.bulk = false;
        end
    }

    /// The loop of [`Session::copy_body`].
    async fn copy_body_inner(
        &mut self,
        sink: &mut Sink<'_>,
        decoder: &mut DataDecoder,
        databytes: u64,
        chunk: &mut Vec<u8>,
        (rate, start): (DataRate, tokio::time::Instant),
    ) -> BodyEnd {
        let mut received = 0u64;
        loop {
            if self.io.buffered().is_empty() {
                if let Err(e) = self.io.fill_by(rate.deadline(start, received)).await {
                    return BodyEnd::Io(e);
                }
            }
            chunk.clear();
            let (n, progress) = decoder.feed(self.io.buffered(), chunk);
            self.io.consume(n);
            received += n as u64;
            let refused = refuses(decoder, databytes);
            if !refused && !chunk.is_empty() {
                sink.write(chunk).await;
            }
            match progress {
                Progress::NeedMore => {}
                Progress::End => return BodyEnd::Complete,
                Progress::BareLf => return BodyEnd::BareLf,
            }
        }
    }
}

/// The code of a reply line (0 if it has none), for metrics.
pub(crate) fn reply_code(reply: &str) -> u16 {
    reply.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Whether what was decoded so far already refuses the message, so
/// nothing more need be stored.
pub(crate) fn refuses(decoder: &DataDecoder, databytes: u64) -> bool {
    decoder.hops >= MAX_HOPS
        || (databytes > 0 && decoder.size > databytes)
        || decoder.bare_cr
        || decoder.bare_lf
}

/// Where the body goes while it is read: the queue directly, or the spool.
pub(crate) enum Sink<'a> {
    /// A Maildir or qmail-queue job.
    Job(&'a mut Job),
    /// The spool.
    Spool(&'a mut SpoolWriter),
}

impl Sink<'_> {
    /// Writes decoded message bytes.
    async fn write(&mut self, data: &[u8]) {
        match self {
            Sink::Job(j) => j.write(data).await,
            Sink::Spool(s) => s.write(data).await,
        }
    }
}
