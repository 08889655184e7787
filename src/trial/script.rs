//! The client side of `spp-smtpd try`: the steps to send, and an
//! in-memory connection that hands them to the session one at a time and
//! records the conversation.
//!
//! The session flushes its replies before every read, so the moment it
//! asks for input is the moment everything before has been answered: the
//! next step is handed over only then, and the [`Transcript`] holds the
//! steps, the plugin runs and the replies in the order they happened,
//! with no waiting and no timing guesses.

use crate::protocol::encode::DataEncoder;
use crate::session::trace::PluginRun;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc::UnboundedReceiver;

/// One thing the client sends: a command line, or the message after DATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// How the report shows it (the command line, or a summary of the
    /// message).
    pub label: String,
    /// The bytes on the wire.
    pub bytes: Vec<u8>,
}

impl Step {
    /// A command line (CRLF added).
    fn command(line: String) -> Step {
        let bytes = format!("{line}\r\n").into_bytes();
        Step { label: line, bytes }
    }
}

/// What the client of one trial sends.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// The EHLO argument.
    pub helo: &'a str,
    /// The MAIL FROM address (empty: the null sender); MAIL is only sent
    /// with recipients.
    pub from: &'a str,
    /// The RCPT TO addresses.
    pub rcpts: &'a [String],
    /// The message for DATA, as stored in a file (LF or CRLF line ends).
    pub message: Option<&'a [u8]>,
}

/// The steps of a session: EHLO, then MAIL and RCPTs if there are
/// recipients, DATA and the message (CRLF line ends, dot-stuffed, the
/// final dot) if there is one, and QUIT.
pub fn steps(envelope: &Envelope<'_>) -> Vec<Step> {
    let mut steps = vec![Step::command(format!("EHLO {}", envelope.helo))];
    if !envelope.rcpts.is_empty() {
        steps.push(Step::command(format!("MAIL FROM:<{}>", envelope.from)));
        for rcpt in envelope.rcpts {
            steps.push(Step::command(format!("RCPT TO:<{rcpt}>")));
        }
        if let Some(message) = envelope.message {
            steps.push(Step::command("DATA".into()));
            let mut bytes = Vec::new();
            let mut encoder = DataEncoder::default();
            encoder.feed(message, &mut bytes);
            encoder.end(&mut bytes);
            // Without the final `.` CRLF.
            let size = bytes.len() - 3;
            let lines = bytes[..size].iter().filter(|&&b| b == b'\n').count();
            steps.push(Step {
                label: format!("(the message: {lines} lines, {size} bytes, then \".\")"),
                bytes,
            });
        }
    }
    steps.push(Step::command("QUIT".into()));
    steps
}

/// One entry of the conversation.
#[derive(Debug)]
pub enum Event {
    /// The client sent this step (its label).
    Sent(String),
    /// The server wrote these bytes.
    Received(Vec<u8>),
    /// A plugin ran.
    Plugin(Box<PluginRun>),
}

/// The conversation so far, shared by the connection and the trial.
#[derive(Clone)]
pub struct Transcript(Arc<Mutex<Log>>);

/// The events, and the plugin runs the session reported that are not
/// among them yet.
struct Log {
    /// In order.
    events: Vec<Event>,
    /// The session's trace sink.
    runs: UnboundedReceiver<PluginRun>,
}

impl Log {
    /// Moves the plugin runs reported so far into the events: they
    /// happened before whatever the connection sees next.
    fn catch_up(&mut self) {
        while let Ok(run) = self.runs.try_recv() {
            self.events.push(Event::Plugin(Box::new(run)));
        }
    }
}

impl Transcript {
    /// An empty transcript fed by the session's trace sink.
    pub fn new(runs: UnboundedReceiver<PluginRun>) -> Transcript {
        Transcript(Arc::new(Mutex::new(Log {
            events: Vec::new(),
            runs,
        })))
    }

    /// Every event, plugin runs included, once the session has ended.
    pub fn take(&self) -> Vec<Event> {
        let mut log = self.lock();
        log.catch_up();
        std::mem::take(&mut log.events)
    }

    /// The log (a panic elsewhere does not hide it).
    fn lock(&self) -> MutexGuard<'_, Log> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The session's end of the in-memory connection.
pub struct ScriptedClient {
    /// Steps not handed over yet.
    steps: VecDeque<Step>,
    /// The step being read, and how much of it has been.
    current: Option<(Vec<u8>, usize)>,
    /// Where the conversation is recorded.
    log: Transcript,
}

impl ScriptedClient {
    /// A connection that sends `steps` and records into `log`.
    pub fn new(steps: Vec<Step>, log: Transcript) -> ScriptedClient {
        ScriptedClient {
            steps: steps.into(),
            current: None,
            log,
        }
    }
}

impl AsyncRead for ScriptedClient {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.current.is_none() {
            // Nothing left: the end of input.
            let Some(step) = this.steps.pop_front() else {
                return Poll::Ready(Ok(()));
            };
            let mut log = this.log.lock();
            log.catch_up();
            log.events.push(Event::Sent(step.label));
            this.current = Some((step.bytes, 0));
        }
        if let Some((bytes, pos)) = &mut this.current {
            let n = buf.remaining().min(bytes.len() - *pos);
            buf.put_slice(&bytes[*pos..*pos + n]);
            *pos += n;
            if *pos == bytes.len() {
                this.current = None;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ScriptedClient {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut log = self.log.lock();
        log.catch_up();
        match log.events.last_mut() {
            Some(Event::Received(bytes)) => bytes.extend_from_slice(data),
            _ => log.events.push(Event::Received(data.to_vec())),
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn the_steps_of_an_envelope() {
        let labels =
            |e: &Envelope<'_>| -> Vec<String> { steps(e).into_iter().map(|s| s.label).collect() };
        let mut e = Envelope {
            helo: "c.example",
            from: "",
            rcpts: &[],
            message: None,
        };
        assert_eq!(labels(&e), ["EHLO c.example", "QUIT"]);
        let rcpts = ["a@x.test".to_string(), "b@x.test".to_string()];
        e.rcpts = &rcpts;
        assert_eq!(
            labels(&e),
            [
                "EHLO c.example",
                "MAIL FROM:<>",
                "RCPT TO:<a@x.test>",
                "RCPT TO:<b@x.test>",
                "QUIT"
            ]
        );
        e.from = "s@y.test";
        e.message = Some(b"Subject: hi\n\n.dot\r\nlast");
        let all = steps(&e);
        assert_eq!(all[1].bytes, b"MAIL FROM:<s@y.test>\r\n");
        assert_eq!(all[4].label, "DATA");
        assert_eq!(
            all[5].bytes, b"Subject: hi\r\n\r\n..dot\r\nlast\r\n.\r\n",
            "CRLF, dot-stuffed, terminated"
        );
        assert_eq!(all[5].label, "(the message: 4 lines, 28 bytes, then \".\")");
    }

    #[tokio::test]
    async fn steps_are_handed_over_one_at_a_time_between_replies() {
        let (sink, runs) = tokio::sync::mpsc::unbounded_channel();
        drop(sink);
        let log = Transcript::new(runs);
        let steps = vec![Step::command("NOOP".into()), Step::command("QUIT".into())];
        let mut conn = ScriptedClient::new(steps, log.clone());
        conn.write_all(b"220 hi\r\n").await.unwrap();
        let mut buf = [0u8; 4];
        let n = conn.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"NOOP");
        let n = conn.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"\r\n", "the rest of the step, no more");
        conn.write_all(b"250 ").await.unwrap();
        conn.write_all(b"ok\r\n").await.unwrap();
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"QUIT\r\n", "then the end of input");
        let events: Vec<String> = log
            .take()
            .iter()
            .map(|e| match e {
                Event::Sent(l) => format!("> {l}"),
                Event::Received(b) => format!("< {}", String::from_utf8_lossy(b)),
                Event::Plugin(_) => "plugin".into(),
            })
            .collect();
        assert_eq!(events, ["< 220 hi\r\n", "> NOOP", "< 250 ok\r\n", "> QUIT"]);
    }
}
