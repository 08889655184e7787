//! The one place that starts programs: plugins (classic and persistent),
//! checkpassword, the queue program and sendmail all get a command built
//! here (the session's environment only, the home as working directory, a
//! process group of their own) and run as a [`Process`], which bounds every
//! wait, kills the whole group at a deadline or when dropped, and always
//! reaps.

use crate::session::env::SessionEnv;
use std::ffi::OsStr;
use std::path::Path;
use std::process::ExitStatus;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::time::Instant;

/// What dropping a [`Process`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnDrop {
    /// Kill its process group: what still runs of it, or what it left
    /// behind after it exited (plugins, checkpassword).
    KillGroup,
    /// Kill its process group only if it has not exited: a mail program
    /// may leave a delivery running in the background (sendmail).
    KillIfRunning,
    /// Nothing (the queue program: it only commits a complete message).
    Nothing,
}

/// A started program: every wait on it can be bounded, a deadline kills
/// its whole process group and reaps it, and dropping it does what its
/// kind needs (see the constructors).
pub struct Process {
    child: Child,
    /// The process id, which is also its group's id.
    pid: Option<u32>,
    /// It has been reaped.
    reaped: bool,
    on_drop: OnDrop,
}

impl Process {
    /// Starts `cmd` (built by [`command`]); when dropped, whatever is left
    /// of its process group is killed, also after it exited.
    pub fn spawn(cmd: &mut Command) -> std::io::Result<Process> {
        Process::start(cmd, OnDrop::KillGroup)
    }

    /// Starts a program that hands mail on (sendmail): dropped while it
    /// runs, its group is killed (it must not queue part of a message);
    /// after it exited, what it left running is left alone.
    pub fn spawn_handoff(cmd: &mut Command) -> std::io::Result<Process> {
        Process::start(cmd, OnDrop::KillIfRunning)
    }

    /// Starts the queue program, which dropping leaves alone: it commits a
    /// message only once it has all of it and its envelope.
    pub fn spawn_lasting(cmd: &mut Command) -> std::io::Result<Process> {
        Process::start(cmd.kill_on_drop(false), OnDrop::Nothing)
    }

    fn start(cmd: &mut Command, on_drop: OnDrop) -> std::io::Result<Process> {
        let child = cmd.spawn()?;
        Ok(Process {
            pid: child.id(),
            child,
            reaped: false,
            on_drop,
        })
    }

    /// Its process id (also its process group's).
    pub fn id(&self) -> Option<u32> {
        self.pid
    }

    /// Its stdin, if piped and not taken yet.
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    /// Its stdout, if piped and not taken yet.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// Its stderr, if piped and not taken yet.
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.stderr.take()
    }

    /// Waits for it to exit, unbounded: for a `select!` that has its own
    /// deadline.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let status = self.child.wait().await;
        self.reaped |= status.is_ok();
        status
    }

    /// Its exit status if it has exited (reaping it), without waiting.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let status = self.child.try_wait().ok().flatten();
        self.reaped |= status.is_some();
        status
    }

    /// Waits until `deadline`. Past it, its process group is killed and
    /// reaped, and `Err` carries how it ended, if known.
    pub async fn wait_until(
        &mut self,
        deadline: Instant,
    ) -> Result<std::io::Result<ExitStatus>, Option<ExitStatus>> {
        match tokio::time::timeout_at(deadline, self.wait()).await {
            Ok(status) => Ok(status),
            Err(_) => Err(self.kill().await),
        }
    }

    /// Kills its process group and reaps it; how it ended.
    pub async fn kill(&mut self) -> Option<ExitStatus> {
        if let Some(pid) = self.pid {
            kill_group_of(pid);
        }
        let _ = self.child.start_kill();
        self.wait().await.ok()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let kill = match self.on_drop {
            OnDrop::KillGroup => true,
            OnDrop::KillIfRunning => !self.reaped,
            OnDrop::Nothing => false,
        };
        if let (true, Some(pid)) = (kill, self.pid) {
            kill_group_of(pid);
        }
    }
}

/// A command for `program` with `args`, `argv[0]` set to `arg0`, the
/// session environment `env` (nothing inherited), `home` as working
/// directory, its own process group, and killed if dropped while running.
/// Standard streams are the caller's to set.
pub fn command<I, A>(
    program: &Path,
    arg0: &OsStr,
    args: I,
    env: &SessionEnv,
    home: &Path,
) -> Command
where
    I: IntoIterator<Item = A>,
    A: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.arg0(arg0)
        .args(args)
        .env_clear()
        .envs(env.iter_os())
        .current_dir(home)
        .process_group(0)
        .kill_on_drop(true);
    cmd
}

/// `now + timeout`, or a far-away instant if that overflows: the deadline
/// of a wait.
pub fn deadline_after(timeout: std::time::Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + std::time::Duration::from_secs(86_400 * 365 * 30))
}

/// Errors that mean "no process could be created" (as opposed to "the
/// program could not be executed").
pub fn is_resource_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAGAIN | libc::ENOMEM | libc::EMFILE | libc::ENFILE)
    )
}

/// Kills the process group `pid` leads (its own, see [`command`]), or
/// what is left of it after the leader exited. The group's id cannot be
/// reused while any member lives, and a group with no members left is
/// simply not found.
fn kill_group_of(pid: u32) {
    // SAFETY: killpg only sends a signal, to a group this process created.
    unsafe { libc::killpg(pid as libc::pid_t, libc::SIGKILL) };
}
