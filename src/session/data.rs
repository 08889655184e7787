//! DATA: checks, queued `LD` errors, the `[data]` hook, then the message
//! is streamed into the queue (Received: line and plugin headers first) and
//! the reply waits for the queue's answer.

use super::io::IoEnd;
use super::{Flow, Session, Verdict};
use crate::config::plugins::Hook;
use crate::logging::quoted;
use crate::plugin::directive::Queued;
use crate::protocol::data::{DataDecoder, Progress};
use crate::protocol::received::{received_line, ReceivedInfo};
use crate::protocol::reply::text;
use crate::queue::{Backend, Envelope, Job, JobResult};
use std::time::{Instant, SystemTime};

/// Hop count at which a message is considered looping.
const MAX_HOPS: u32 = 100;

/// How reading the body ended.
enum BodyEnd {
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
        let Some(tx) = self.tx.take() else {
            return Flow::Continue;
        };
        let envelope = Envelope {
            sender: tx.sender,
            recipients: tx.recipients,
        };
        let started = Instant::now();
        let backend = self
            .backend
            .get_or_insert_with(|| {
                Backend::select(self.cfg.control.queue.as_ref(), &self.env, &self.cfg.home)
            })
            .clone();
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
        let mut head = received_line(
            &ReceivedInfo {
                remote_host: &self.client.remote_host,
                helo: &self.helo,
                remote_info: self.client.remote_info.as_deref(),
                remote_ip: &self.client.remote_ip,
                local: &self.client.local,
                protocol: self.received_protocol(),
            },
            SystemTime::now(),
        );
        head.extend_from_slice(&self.spp.headers);
        self.spp.clear_transaction();
        job.write(&head).await;

        let mut decoder = DataDecoder::default();
        let end = self.copy_body(&mut job, &mut decoder).await;
        let too_big = self.client.databytes > 0 && decoder.size > self.client.databytes;
        let looping = decoder.hops >= MAX_HOPS;
        let abandoned = too_big || looping || decoder.bare_cr || !matches!(end, BodyEnd::Complete);
        let result = job.finish((!abandoned).then_some(&envelope)).await;
        let reply = match (&end, result) {
            (BodyEnd::BareLf, _) => text::BARE_LF.to_string(),
            (BodyEnd::Io(_), _) => String::new(),
            (BodyEnd::Complete, JobResult::Queued(ok)) => ok,
            (BodyEnd::Complete, JobResult::Failed(_)) if looping => text::LOOPING.into(),
            (BodyEnd::Complete, JobResult::Failed(_)) if too_big => text::TOO_BIG.into(),
            (BodyEnd::Complete, JobResult::Failed(_)) if decoder.bare_cr => text::BARE_CR.into(),
            (BodyEnd::Complete, JobResult::Failed(r)) => r,
        };
        tracing::info!(
            session = %self.id,
            client = %quoted(&self.client.remote_ip),
            helo = %quoted(&self.helo),
            from = %quoted(&envelope.sender),
            rcpts = envelope.recipients.len(),
            size = decoder.size,
            verdicts = %quoted(self.verdicts.join(" ").as_bytes()),
            ms = started.elapsed().as_millis() as u64,
            result = %quoted(if reply.is_empty() { b"connection lost" } else { reply.as_bytes() }),
            "transaction"
        );
        self.verdicts.clear();
        match end {
            BodyEnd::Complete => self.simple(&reply),
            BodyEnd::BareLf => {
                self.io.reply(reply);
                Flow::Close(1)
            }
            BodyEnd::Io(e) => Flow::Close(self.io_ended(e).await),
        }
    }

    /// Decodes the body from the connection into the job until the
    /// terminator; stops writing once the message is to be refused.
    async fn copy_body(&mut self, job: &mut Job, decoder: &mut DataDecoder) -> BodyEnd {
        let databytes = self.client.databytes;
        let mut chunk = Vec::with_capacity(8192);
        self.io.busy = true;
        self.io.bulk = true;
        let end = self
            .copy_body_inner(job, decoder, databytes, &mut chunk)
            .await;
        self.io.bulk = false;
        end
    }

    /// The loop of [`Session::copy_body`].
    async fn copy_body_inner(
        &mut self,
        job: &mut Job,
        decoder: &mut DataDecoder,
        databytes: u64,
        chunk: &mut Vec<u8>,
    ) -> BodyEnd {
        loop {
            if self.io.buffered().is_empty() {
                if let Err(e) = self.io.fill().await {
                    return BodyEnd::Io(e);
                }
            }
            chunk.clear();
            let (n, progress) = decoder.feed(self.io.buffered(), chunk);
            self.io.consume(n);
            let refused = decoder.hops >= MAX_HOPS
                || (databytes > 0 && decoder.size > databytes)
                || decoder.bare_cr;
            if !refused && !chunk.is_empty() {
                job.write(chunk).await;
            }
            match progress {
                Progress::NeedMore => {}
                Progress::End => return BodyEnd::Complete,
                Progress::BareLf => return BodyEnd::BareLf,
            }
        }
    }
}
