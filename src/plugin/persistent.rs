//! Persistent plugins: a plugin line marked `persistent` is started once
//! and asked over its stdin and stdout, request after request, instead of
//! being started for every command. Each plugin line has a small pool of
//! processes, started when first needed, living as long as the
//! configuration snapshot that names the line.
//!
//! The wire format (version 1), every line ending in LF:
//!
//! ```text
//! server: spp-persistent 1                       handshake: versions offered
//! plugin: spp-persistent 1                       the version it speaks
//! server: request ID HOOK SESSION COUNT SIZE     one request; SIZE bytes follow:
//! server: LENGTH                                 COUNT times: the byte length
//! server: NAME=VALUE                               of one variable, its bytes, LF
//! plugin: E550 no such user                      directives, as a classic run
//! plugin: end ID                                 the end of the reply
//! ```
//!
//! The variables are the environment a classic run would get; values are
//! sent by length, so any byte is safe in them. SIZE, the length of the
//! whole variable block, lets a plugin read it with one call. The reply is read with the
//! limits of a classic run; everything after the first terminating
//! directive and before `end ID` is ignored. A process serves one request
//! at a time; it is replaced after `max-requests` requests, and killed (its
//! whole process group) after a timeout, a crash, a protocol error or too
//! much output. Restarts after failures back off, from 100 ms doubling to
//! 30 s. Requests wait for a free process in a bounded queue.

use super::directive::Directive;
use super::runner::{log_stderr, parse_directive_line, Failure, RunLimits, RunOutcome};
use super::runner::{MAX_DIRECTIVES, MAX_OUTPUT};
use crate::child;
use crate::config::plugins::{Hook, PersistentOptions, Plugin, Program};
use crate::session::env::SessionEnv;
use std::any::Any;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// The protocol version this server speaks.
pub const VERSION: u32 = 1;
/// The environment variable set for a persistent plugin's process, so
/// one script can tell the two modes apart.
pub const MODE_VARIABLE: &str = "SPP_PERSISTENT";
/// The request variable naming the spooled message at `[body]` (a
/// classic run reads it on stdin).
pub const MESSAGE_VARIABLE: &str = "SPP_MESSAGE_FILE";
/// First delay before a restart after a failure.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// Longest delay before a restart.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Longest reply line read (a directive line and its LF).
const MAX_LINE: usize = 8 * 1024;

/// Asks the persistent plugin `plugin` about one command: the same
/// outcome a classic run gives.
pub async fn request(
    plugin: &Plugin,
    env: &SessionEnv,
    home: &Path,
    limits: RunLimits,
    session: &str,
    hook: Hook,
    message: Option<&Path>,
) -> RunOutcome {
    let pool = pool_of(plugin, home);
    pool.request(env, limits, session, hook, message).await
}

/// The pool of `plugin`, made at first use and kept with the plugin.
fn pool_of(plugin: &Plugin, home: &Path) -> Arc<Pool> {
    let slot = plugin.runtime.get_or_init(|| {
        let pool: Arc<dyn Any + Send + Sync> = Arc::new(Pool::new(plugin, home));
        pool
    });
    match Arc::clone(slot).downcast::<Pool>() {
        Ok(pool) => pool,
        // Only this module fills the slot.
        Err(_) => unreachable!("a plugin's runtime slot holds its pool"),
    }
}

/// The processes of one persistent plugin line.
pub struct Pool {
    /// The plugin line, for logs.
    name: String,
    /// The plugin line, as a metrics label.
    label: String,
    /// What to start.
    program: Program,
    /// Working directory.
    home: PathBuf,
    /// Pool size, recycling and queue bound.
    options: PersistentOptions,
    /// Processes waiting for a request.
    idle: Mutex<Vec<Worker>>,
    /// One permit per process that may run: a request holds one.
    slots: Semaphore,
    /// Requests waiting for a permit.
    waiting: AtomicUsize,
    /// When the next process may be started, and the delay after the
    /// next failure.
    backoff: Mutex<Backoff>,
    /// Request identifiers.
    next_id: AtomicU64,
    /// Processes started so far (for logs and tests).
    started: AtomicU64,
}

/// Restart pacing after failures.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    /// No process is started before this.
    until: Option<Instant>,
    /// The delay the next failure imposes.
    delay: Duration,
}

/// One running process of the pool.
struct Worker {
    /// The process; its group is killed when the worker is dropped.
    child: child::Process,
    /// Requests go here.
    stdin: ChildStdin,
    /// Replies come from here.
    stdout: BufReader<ChildStdout>,
    /// Requests served.
    served: u64,
    /// Its plugin's label, when it is counted in the metrics.
    counted: Option<String>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let (Some(plugin), Some(m)) = (self.counted.take(), crate::metrics::get()) {
            m.pool_workers
                .get_or_create(&crate::metrics::PluginLabels { plugin })
                .dec();
        }
    }
}

impl Pool {
    /// A pool for `plugin`; nothing is started yet.
    fn new(plugin: &Plugin, home: &Path) -> Pool {
        let options = plugin.options.persistent.unwrap_or_default();
        Pool {
            name: crate::logging::quoted(&plugin.line),
            label: crate::metrics::label(&plugin.line),
            program: plugin.program.clone(),
            home: home.to_path_buf(),
            options,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(options.workers),
            waiting: AtomicUsize::new(0),
            backoff: Mutex::new(Backoff {
                until: None,
                delay: BACKOFF_FIRST,
            }),
            next_id: AtomicU64::new(1),
            started: AtomicU64::new(0),
        }
    }

    /// One request, from waiting for a process to the parsed reply.
    async fn request(
        &self,
        env: &SessionEnv,
        limits: RunLimits,
        session: &str,
        hook: Hook,
        message: Option<&Path>,
    ) -> RunOutcome {
        let deadline = child::deadline_after(limits.timeout);
        let _permit = match self.slots.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.options.queue {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    self.count_queue();
                    tracing::warn!(session, plugin = %self.name, "all workers busy and the queue is full");
                    return RunOutcome::failed(Failure::Busy);
                }
                self.count_queue();
                let p = tokio::time::timeout_at(deadline, self.slots.acquire()).await;
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                self.count_queue();
                match p {
                    Ok(Ok(p)) => p,
                    _ => {
                        tracing::warn!(session, plugin = %self.name, "no worker became free before the deadline");
                        return RunOutcome::failed(Failure::Busy);
                    }
                }
            }
        };
        let idle = self.idle.lock().map(|mut v| v.pop()).unwrap_or(None);
        let mut worker = match idle {
            Some(w) => w,
            None => match self.start(deadline, session).await {
                Ok(w) => w,
                Err(f) => {
                    tracing::warn!(session, plugin = %self.name, failure = f.reason(), "persistent plugin cannot be started");
                    return RunOutcome::failed(f);
                }
            },
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut directives = Vec::new();
        let exchange = worker.exchange(id, hook, session, env, message, &mut directives);
        let failure = match tokio::time::timeout_at(deadline, exchange).await {
            Ok(Ok(())) => None,
            Ok(Err(f)) => Some(f),
            Err(_) => Some(Failure::Timeout),
        };
        match failure {
            None => {
                worker.served += 1;
                if let Ok(mut b) = self.backoff.lock() {
                    b.delay = BACKOFF_FIRST;
                    b.until = None;
                }
                let max = self.options.max_requests;
                if max == 0 || worker.served < max {
                    if let Ok(mut idle) = self.idle.lock() {
                        idle.push(worker);
                    }
                } else {
                    tracing::debug!(plugin = %self.name, served = worker.served, "worker retired");
                    tokio::spawn(retire(worker));
                }
            }
            Some(f) => {
                tracing::warn!(session, plugin = %self.name, failure = f.reason(), "persistent plugin failed; its process is killed");
                drop(worker);
                self.failed_once();
            }
        }
        RunOutcome {
            directives,
            failure,
            status: None,
        }
    }

    /// Sets the queue-depth gauge to the requests waiting now.
    fn count_queue(&self) {
        if let Some(m) = crate::metrics::get() {
            let waiting = self.waiting.load(Ordering::SeqCst) as i64;
            m.pool_queue
                .get_or_create(&crate::metrics::PluginLabels {
                    plugin: self.label.clone(),
                })
                .set(waiting);
        }
    }

    /// Notes a failure: the next start waits for the back-off delay,
    /// which doubles up to its maximum.
    fn failed_once(&self) {
        if let Ok(mut b) = self.backoff.lock() {
            b.until = Some(Instant::now() + b.delay);
            b.delay = (b.delay * 2).min(BACKOFF_MAX);
        }
    }

    /// Starts a process (after any back-off) and does the handshake.
    async fn start(&self, deadline: Instant, session: &str) -> Result<Worker, Failure> {
        let until = self.backoff.lock().ok().and_then(|b| b.until);
        if let (Some(_), Some(m)) = (until, crate::metrics::get()) {
            m.pool_restarts
                .get_or_create(&crate::metrics::PluginLabels {
                    plugin: self.label.clone(),
                })
                .inc();
        }
        if let Some(until) = until {
            if until > deadline {
                return Err(Failure::Restarting);
            }
            tokio::time::sleep_until(until).await;
        }
        let mut env = SessionEnv::default();
        env.set(
            "PATH",
            std::env::var_os("PATH")
                .map(|p| p.into_encoded_bytes())
                .unwrap_or_else(|| b"/usr/local/bin:/usr/bin:/bin".to_vec()),
        );
        env.set(MODE_VARIABLE, VERSION.to_string());
        let mut cmd = match &self.program {
            Program::Shell(text) => child::command(
                Path::new("/bin/sh"),
                OsStr::new("/bin/sh"),
                [OsStr::new("-c"), text.as_os_str()],
                &env,
                &self.home,
            ),
            Program::Direct { path, argv } => {
                child::command(path, &argv[0], &argv[1..], &env, &self.home)
            }
        };
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut process = match child::Process::spawn(&mut cmd) {
            Ok(c) => c,
            Err(e) => {
                self.failed_once();
                tracing::warn!(session, plugin = %self.name, error = %e, "persistent plugin cannot be started");
                return Err(if child::is_resource_error(&e) {
                    Failure::ForkFailed
                } else {
                    Failure::CantExecute
                });
            }
        };
        self.started.fetch_add(1, Ordering::Relaxed);
        if let Some(stderr) = process.take_stderr() {
            tokio::spawn(log_stderr(stderr, self.name.clone(), None));
        }
        let (Some(stdin), Some(stdout)) = (process.take_stdin(), process.take_stdout()) else {
            return Err(Failure::CantExecute);
        };
        let mut worker = Worker {
            child: process,
            stdin,
            stdout: BufReader::new(stdout),
            served: 0,
            counted: None,
        };
        match tokio::time::timeout_at(deadline, worker.handshake()).await {
            Ok(Ok(())) => {
                tracing::info!(plugin = %self.name, pid = worker.child.id(), "persistent plugin started");
                if let Some(m) = crate::metrics::get() {
                    m.pool_workers
                        .get_or_create(&crate::metrics::PluginLabels {
                            plugin: self.label.clone(),
                        })
                        .inc();
                    worker.counted = Some(self.label.clone());
                }
                Ok(worker)
            }
            Ok(Err(f)) => {
                self.failed_once();
                Err(f)
            }
            Err(_) => {
                self.failed_once();
                Err(Failure::Timeout)
            }
        }
    }
}

impl Worker {
    /// Offers the protocol version and checks the answer.
    async fn handshake(&mut self) -> Result<(), Failure> {
        let hello = format!("spp-persistent {VERSION}\n");
        self.stdin
            .write_all(hello.as_bytes())
            .await
            .map_err(|_| Failure::CantExecute)?;
        self.stdin.flush().await.map_err(|_| Failure::CantExecute)?;
        let line = match self.read_line().await? {
            Some(l) => l,
            None => return Err(Failure::CantExecute),
        };
        if line == hello.trim_end().as_bytes() {
            Ok(())
        } else {
            tracing::warn!(answer = %line.escape_ascii(), "persistent plugin answered the handshake with something else");
            Err(Failure::Protocol)
        }
    }

    /// Sends one request and reads its reply into `directives`.
    async fn exchange(
        &mut self,
        id: u64,
        hook: Hook,
        session: &str,
        env: &SessionEnv,
        message: Option<&Path>,
        directives: &mut Vec<Directive>,
    ) -> Result<(), Failure> {
        let request = encode_request(id, hook, session, env, message);
        self.stdin
            .write_all(&request)
            .await
            .map_err(|_| Failure::Crashed)?;
        self.stdin.flush().await.map_err(|_| Failure::Crashed)?;
        let end = format!("end {id}");
        let mut total = 0usize;
        let mut verdict = false;
        loop {
            let Some(line) = self.read_line().await? else {
                return Err(Failure::Crashed);
            };
            total += line.len() + 1;
            if total > MAX_OUTPUT {
                return Err(Failure::TooMuchOutput);
            }
            if line == end.as_bytes() {
                return Ok(());
            }
            if line.starts_with(b"end ") {
                return Err(Failure::Protocol);
            }
            if verdict {
                continue;
            }
            if let Some(d) = parse_directive_line(&line) {
                verdict = d.terminates();
                directives.push(d);
                if directives.len() > MAX_DIRECTIVES {
                    return Err(Failure::TooMuchOutput);
                }
            }
        }
    }

    /// One line of output without its LF (`None` at end of output); a
    /// line longer than the limit is too much output.
    async fn read_line(&mut self) -> Result<Option<Vec<u8>>, Failure> {
        let mut line = Vec::new();
        loop {
            let buf = self.stdout.fill_buf().await.map_err(|_| Failure::Crashed)?;
            if buf.is_empty() {
                return Ok((!line.is_empty()).then_some(line));
            }
            match buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    line.extend_from_slice(&buf[..i]);
                    self.stdout.consume(i + 1);
                    return Ok(Some(line));
                }
                None => {
                    let n = buf.len();
                    line.extend_from_slice(buf);
                    self.stdout.consume(n);
                }
            }
            if line.len() > MAX_LINE {
                return Err(Failure::TooMuchOutput);
            }
        }
    }
}

/// Ends a worker that served its share: its stdin is closed, so it can
/// exit by itself; after a grace period it is killed.
async fn retire(mut worker: Worker) {
    let Worker { child, stdin, .. } = &mut worker;
    let _ = stdin.shutdown().await;
    let _ = child
        .wait_until(Instant::now() + Duration::from_secs(5))
        .await;
}

/// A request on the wire (see the module documentation).
pub fn encode_request(
    id: u64,
    hook: Hook,
    session: &str,
    env: &SessionEnv,
    message: Option<&Path>,
) -> Vec<u8> {
    let mut vars: Vec<Vec<u8>> = env
        .iter()
        .filter(|(name, _)| *name != MESSAGE_VARIABLE.as_bytes())
        .map(|(name, value)| [name, b"=", value].concat())
        .collect();
    if let Some(path) = message {
        vars.push(
            [
                MESSAGE_VARIABLE.as_bytes(),
                b"=",
                path.as_os_str().as_encoded_bytes(),
            ]
            .concat(),
        );
    }
    // The session id is ours, but keep the line one token per field.
    let session: String = session
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect();
    let mut block = Vec::new();
    for v in &vars {
        block.extend_from_slice(v.len().to_string().as_bytes());
        block.push(b'\n');
        block.extend_from_slice(v);
        block.push(b'\n');
    }
    let mut out = format!(
        "request {id} {} {session} {} {}\n",
        hook.name(),
        vars.len(),
        block.len()
    )
    .into_bytes();
    out.extend_from_slice(&block);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_frame_any_byte() {
        let mut env = SessionEnv::default();
        env.set("SMTPRCPTTO", b"a\nb=c\r\xff");
        env.set("EMPTY", b"");
        let wire = encode_request(7, Hook::Rcpt, "s 1", &env, None);
        let text = wire.escape_ascii().to_string();
        assert!(text.starts_with("request 7 rcpt s_1 2 31\\n"), "{text}");
        assert_eq!(wire.len(), "request 7 rcpt s_1 2 31\n".len() + 31);
        assert!(
            text.contains("\\n18\\nSMTPRCPTTO=a\\nb=c\\r\\xff\\n"),
            "{text}"
        );
        assert!(text.contains("\\n6\\nEMPTY=\\n"), "{text}");
        let body = encode_request(8, Hook::Body, "s", &env, Some(Path::new("/spool/m")));
        let text = body.escape_ascii().to_string();
        assert!(text.contains("25\\nSPP_MESSAGE_FILE=/spool/m\\n"), "{text}");
    }
}
