//! The one place that starts programs: plugins, the queue program and
//! sendmail all get a command built here (the session's environment only,
//! the home as working directory, a process group of their own), and the
//! helpers to classify spawn errors and to kill a whole process group.

use crate::session::env::SessionEnv;
use std::ffi::OsStr;
use std::path::Path;
use tokio::process::{Child, Command};

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

/// Errors that mean "no process could be created" (as opposed to "the
/// program could not be executed").
pub fn is_resource_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAGAIN | libc::ENOMEM | libc::EMFILE | libc::ENFILE)
    )
}

/// Kills what is left of the process group `pid` led (its own, see
/// [`command`]) after the leader exited: background jobs a plugin left
/// behind. The group cannot be reused while any member lives, and a
/// group with no members left is simply not found.
pub fn kill_group_of(pid: u32) {
    // SAFETY: killpg only sends a signal, to a group this process created.
    unsafe { libc::killpg(pid as libc::pid_t, libc::SIGKILL) };
}

/// Kills the child's whole process group (it leads its own group).
pub fn kill_group(child: &mut Child) {
    if let Some(pid) = child.id() {
        // SAFETY: killpg only sends a signal; the group is the child's own
        // (`command` made the child its leader).
        unsafe { libc::killpg(pid as libc::pid_t, libc::SIGKILL) };
    }
    let _ = child.start_kill();
}
