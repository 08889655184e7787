//! BDAT (CHUNKING, RFC 3030): a message sent in chunks of announced size,
//! without dot-stuffing.
//!
//! The first BDAT of a transaction does what DATA does before `354`: the
//! MAIL and RCPT checks, queued `LD` texts and the `[data]` hook, all
//! before its chunk is read. Every chunk is then decoded into the spool
//! with DATA's rules (CRLF stored as LF, bare CR and bare LF refused,
//! `databytes`, hop count), and the `LAST` chunk hands the message over as
//! DATA's final dot does. A refused chunk ends the transaction: chunks
//! the client already pipelined after it are read and get `503 MAIL first`,
//! so no part of a message is ever taken for the start of another.

use super::body::{PendingMessage, SPOOL_FAILURE};
use super::data::{refuses, BodyEnd};
use super::io::IoEnd;
use super::{Flow, Session, Verdict};
use crate::config::plugins::Hook;
use crate::plugin::directive::Queued;
use crate::protocol::command::parse_bdat;
use crate::protocol::data::DataDecoder;
use crate::protocol::reply::text;
use crate::queue::spool::SpoolWriter;

/// A message being received in BDAT chunks (between its first and its
/// `LAST` chunk).
pub(crate) struct ChunkedMessage {
    /// The ended transaction and what delivery needs.
    msg: PendingMessage,
    /// The spool the chunks are decoded into.
    writer: SpoolWriter,
    /// The decoder state carried from one chunk to the next (a CR at the
    /// end of a chunk pairs with a LF at the start of the next).
    decoder: DataDecoder,
}

impl ChunkedMessage {
    /// The sender and the number of recipients (for the log line of an
    /// abandoned transaction).
    pub(crate) fn envelope_summary(&self) -> (Vec<u8>, usize) {
        let e = &self.msg.envelope;
        (e.sender.clone(), e.recipients.len())
    }

    /// The message's transaction declared SMTPUTF8.
    pub(crate) fn smtputf8(&self) -> bool {
        self.msg.envelope.smtputf8
    }
}

/// How the first BDAT of a transaction went.
enum Start {
    /// The message is open; its chunk can be read.
    Open(Box<ChunkedMessage>),
    /// Refused; the reply is queued and the chunk must be read and dropped.
    Refused,
    /// A plugin ended the session.
    Close(Flow),
}

impl Session {
    /// BDAT size [LAST]
    pub(crate) async fn bdat(&mut self, arg: Vec<u8>) -> Flow {
        if !self.cfg.control.extensions.chunking {
            return self.simple(text::UNIMPLEMENTED);
        }
        let Some((size, last)) = parse_bdat(&arg) else {
            // Without a size the chunk cannot be told apart from commands:
            // nothing after this line is read.
            self.io.reply(text::BDAT_SYNTAX);
            return Flow::Close(1);
        };
        let mut chunked = match self.chunked.take() {
            Some(c) => c,
            None => match self.open_chunks().await {
                Start::Open(c) => c,
                Start::Refused => return self.discard_chunk(size).await,
                Start::Close(flow) => return flow,
            },
        };
        self.io.busy = true;
        if let Err(e) = self.read_chunk(Some(&mut chunked), size).await {
            let ChunkedMessage { msg, decoder, .. } = *chunked;
            self.end_transaction();
            return self
                .finish_data(
                    &msg.envelope,
                    decoder.size,
                    msg.started,
                    String::new(),
                    BodyEnd::Io(e),
                )
                .await;
        }
        let ChunkedMessage {
            msg,
            mut writer,
            mut decoder,
        } = *chunked;
        if last {
            let mut end = Vec::new();
            decoder.finish_chunks(&mut end);
            if !refuses(&decoder, self.client.databytes) {
                writer.write(&end).await;
            }
        }
        if let Some(refusal) = self.body_refusal(&BodyEnd::Complete, &decoder) {
            drop(writer);
            self.end_transaction();
            return self
                .finish_data(
                    &msg.envelope,
                    decoder.size,
                    msg.started,
                    refusal,
                    BodyEnd::Complete,
                )
                .await;
        }
        if !last {
            self.chunked = Some(Box::new(ChunkedMessage {
                msg,
                writer,
                decoder,
            }));
            return self.simple(&format!("250 ok {size} octets"));
        }
        self.deliver_spool(msg, writer, decoder.size).await
    }

    /// The first BDAT of a transaction: DATA's checks and hook, then the
    /// transaction becomes a message being received.
    async fn open_chunks(&mut self) -> Start {
        match &self.tx {
            None => {
                self.io.reply(text::MAIL_FIRST);
                return Start::Refused;
            }
            Some(tx) if tx.recipients.is_empty() => {
                self.io.reply(text::RCPT_FIRST);
                return Start::Refused;
            }
            Some(_) => {}
        }
        if self.send_queued(Queued::Data) {
            self.abandon_transaction();
            return Start::Refused;
        }
        match self.run_hook(Hook::Data, None).await {
            Verdict::Refuse => {
                self.abandon_transaction();
                return Start::Refused;
            }
            Verdict::Disconnect => return Start::Close(Flow::Close(0)),
            Verdict::Accept | Verdict::AcceptSkipChecks => {}
        }
        let Some(msg) = self.take_transaction() else {
            return Start::Refused;
        };
        let Some(mut writer) = self.open_spool(msg.body_hooks).await else {
            self.io.reply(SPOOL_FAILURE);
            return Start::Refused;
        };
        let head = self.message_head();
        writer.write(&head).await;
        Start::Open(Box::new(ChunkedMessage {
            msg,
            writer,
            decoder: self.body_decoder(true),
        }))
    }

    /// Ends the transaction after its first chunk was refused, so that
    /// chunks already pipelined cannot start a message without it.
    fn abandon_transaction(&mut self) {
        self.tx = None;
        self.end_transaction();
        self.spp.clear_transaction();
    }

    /// Reads `size` bytes of chunk into the message `c`, decoding them
    /// (storing stops once the message is to be refused), or drops them
    /// when there is no message. The chunk must keep up with
    /// `control/mindatarate`.
    async fn read_chunk(
        &mut self,
        mut c: Option<&mut ChunkedMessage>,
        size: u64,
    ) -> Result<(), IoEnd> {
        let databytes = self.client.databytes;
        let (rate, start) = (self.cfg.control.data_rate, tokio::time::Instant::now());
        let mut left = size;
        let mut out = Vec::new();
        self.io.bulk = true;
        let result = loop {
            if left == 0 {
                break Ok(());
            }
            if self.io.buffered().is_empty() {
                let deadline = rate.deadline(start, size - left);
                if let Err(e) = self.io.fill_by(deadline).await {
                    break Err(e);
                }
            }
            let input = self.io.buffered();
            let take = input.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            out.clear();
            if let Some(c) = c.as_deref_mut() {
                if !refuses(&c.decoder, databytes) {
                    c.decoder.feed(&input[..take], &mut out);
                }
            }
            self.io.consume(take);
            left -= take as u64;
            if let Some(c) = c.as_deref_mut() {
                if !out.is_empty() && !refuses(&c.decoder, databytes) {
                    c.writer.write(&out).await;
                }
            }
        };
        self.io.bulk = false;
        result
    }

    /// Reads and drops a refused chunk; the reply is already queued.
    async fn discard_chunk(&mut self, size: u64) -> Flow {
        match self.read_chunk(None, size).await {
            Ok(()) => Flow::Continue,
            Err(e) => Flow::Close(self.io_ended(e).await),
        }
    }
}
