//! The checkpassword interface: the program reads `user\0password\0
//! timestamp\0` from fd 3 (for CRAM-MD5: `user\0digest\0challenge\0`) and
//! exits 0 (accepted), 1 (refused) or 111 (temporary failure).

use super::{Check, Credentials};
use crate::session::env::SessionEnv;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Runs the program `argv` on `creds`, bounded by `timeout`.
pub async fn check(
    argv: &[String],
    creds: &Credentials,
    env: &SessionEnv,
    home: &Path,
    timeout: Duration,
) -> Check {
    let Some((program, args)) = argv.split_first() else {
        return Check::TempFail;
    };
    let mut data = Vec::new();
    match creds {
        Credentials::Password { user, password } => {
            let stamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            data.extend_from_slice(user.as_bytes());
            data.push(0);
            data.extend_from_slice(password);
            data.push(0);
            data.extend_from_slice(stamp.to_string().as_bytes());
            data.push(0);
        }
        Credentials::Cram {
            user,
            challenge,
            digest,
        } => {
            data.extend_from_slice(user.as_bytes());
            data.push(0);
            data.extend_from_slice(digest);
            data.push(0);
            data.extend_from_slice(challenge);
            data.push(0);
        }
    }
    let (reader, mut writer) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "checkpassword: cannot make a pipe");
            return Check::TempFail;
        }
    };
    let reader: OwnedFd = reader.into();
    let fd = reader.as_raw_fd();
    let mut cmd = crate::child::command(&home.join(program), program.as_ref(), args, env, home);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    // SAFETY: between fork and exec only dup2/fcntl, async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                if libc::fcntl(3, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = match crate::child::Process::spawn(&mut cmd) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(program, error = %e, "checkpassword cannot be started");
            return Check::TempFail;
        }
    };
    drop(reader);
    // At most about 2 KiB (the session caps user and secret at 1 KiB each),
    // less than the smallest pipe buffer: this write cannot block.
    let _ = writer.write_all(&data);
    drop(writer);
    match child
        .wait_until(crate::child::deadline_after(timeout))
        .await
    {
        Ok(Ok(status)) => match status.code() {
            Some(0) => Check::Ok,
            Some(1) => Check::Bad,
            Some(111) => Check::TempFail,
            other => {
                tracing::warn!(program, status = ?other, "checkpassword: unexpected exit");
                Check::TempFail
            }
        },
        Ok(Err(_)) => Check::TempFail,
        Err(_) => {
            tracing::warn!(program, "checkpassword timed out; killed");
            Check::TempFail
        }
    }
}
