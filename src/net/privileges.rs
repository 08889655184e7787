//! Dropping root once the listening sockets are bound: resolving the
//! configured user and group (`getpwnam_r`/`getgrnam_r`, by name or
//! number), switching to them (`setgroups`, `setgid`, `setuid`, in that
//! order) and checking afterwards that root cannot be regained.

use std::ffi::CString;
use std::io;
use std::mem::MaybeUninit;
use std::ptr;

/// Largest buffer offered to a `get*_r` lookup before giving up on `ERANGE`.
const MAX_LOOKUP_BUFFER: usize = 1 << 20;

/// Switches the whole process to `user` and `group` for good.
///
/// `user` is a name or a numeric uid; `group` is a name or a numeric gid,
/// and defaults to the user's primary group. Numbers are still looked up
/// (see [`lookup_user`]), so a typo is an error rather than an anonymous id.
///
/// Running as root, it then
/// 1. sets the supplementary groups to exactly `[gid]` with `setgroups`.
///    This is a deliberate choice over `initgroups`: like daemontools'
///    `setuidgid`, the server and its plugins get the one group configured
///    and no memberships that happen to be listed in `/etc/group` (give
///    that group whatever access plugins need);
/// 2. `setgid(gid)`, which as root sets the real, effective and saved gid;
/// 3. `setuid(uid)`, likewise for the uids (and, on Linux, clears the
///    capabilities).
///
/// Then it verifies that the real and effective uid and gid are the new
/// ones, that the supplementary groups are just `[gid]`, and that
/// `setuid(0)` (and `setgid(0)`, unless gid is 0) now fail — which also
/// proves that the saved ids are not root. Any failure is an error naming
/// the user (and group); after an error the process may be partly switched,
/// or — if the final check found `setuid(0)` succeeding — root again, so
/// the caller must exit rather than go on.
///
/// Refused up front, before anything is changed: an unknown user or group,
/// uid 0, and running without root unless the process already runs as
/// exactly `user`/`group` (e.g. `User=` in a systemd unit with socket
/// activation), in which case only the verification is done.
///
/// Threads: the C library's `setgroups`/`setgid`/`setuid` change the
/// credentials of every thread of the process (POSIX semantics; glibc and
/// musl broadcast the change to all threads), and this relies on that — a
/// raw system call would change only the calling thread. It is still meant
/// to be called after binding and before the tokio runtime is built, so
/// that no other thread is doing anything as root meanwhile.
pub fn drop_privileges(user: &str, group: Option<&str>) -> io::Result<()> {
    let (uid, primary) = lookup_user(user)?;
    let gid = match group {
        Some(group) => lookup_group(group)?,
        None => primary,
    };
    let who = match group {
        Some(group) => format!("user {user:?} (uid {uid}) and group {group:?} (gid {gid})"),
        None => format!("user {user:?} (uid {uid}, gid {gid})"),
    };
    if uid == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to drop privileges to {who}: uid 0 is root"),
        ));
    }
    // SAFETY: the id getters have no preconditions and cannot fail.
    let (ruid, euid, rgid, egid) = unsafe {
        (
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
            libc::getegid(),
        )
    };
    if euid == 0 {
        let os_error = |call: String| {
            let e = io::Error::last_os_error();
            io::Error::new(e.kind(), format!("switching to {who}: {call}: {e}"))
        };
        let groups = [gid as libc::gid_t];
        // SAFETY: `groups` is an array of one gid_t, and its length is 1.
        if unsafe { libc::setgroups(1, groups.as_ptr()) } == -1 {
            return Err(os_error(format!("setgroups([{gid}])")));
        }
        // SAFETY: setgid takes a plain id and has no memory preconditions.
        if unsafe { libc::setgid(gid) } == -1 {
            return Err(os_error(format!("setgid({gid})")));
        }
        // SAFETY: setuid takes a plain id and has no memory preconditions.
        if unsafe { libc::setuid(uid) } == -1 {
            return Err(os_error(format!("setuid({uid})")));
        }
        verify(uid, gid, &who, true)
    } else if (ruid, euid, rgid, egid) == (uid, uid, gid, gid) {
        tracing::debug!("already running as {who}");
        verify(uid, gid, &who, false)
    } else {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "cannot switch to {who}: not running as root \
                 (uid {ruid}, euid {euid}, gid {rgid}, egid {egid})"
            ),
        ))
    }
}

/// Checks that the process runs as `uid`/`gid` and cannot become root
/// again; `groups` also checks that the supplementary groups are `[gid]`.
fn verify(uid: u32, gid: u32, who: &str, groups: bool) -> io::Result<()> {
    let fail = |what: String| io::Error::other(format!("after switching to {who}: {what}"));
    // SAFETY: the id getters have no preconditions and cannot fail.
    let ids = unsafe {
        (
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
            libc::getegid(),
        )
    };
    if ids != (uid, uid, gid, gid) {
        let (ruid, euid, rgid, egid) = ids;
        return Err(fail(format!(
            "running as uid {ruid}, euid {euid}, gid {rgid}, egid {egid}"
        )));
    }
    if groups {
        let list = supplementary_groups().map_err(|e| fail(format!("getgroups: {e}")))?;
        if list.iter().any(|&g| g != gid) {
            return Err(fail(format!("supplementary groups are {list:?}")));
        }
    }
    // SAFETY: setuid takes a plain id; it is expected to fail here.
    if unsafe { libc::setuid(0) } == 0 {
        return Err(fail(
            "setuid(0) still succeeds: the process is root again".into(),
        ));
    }
    // SAFETY: setgid takes a plain id; it is expected to fail here.
    if gid != 0 && unsafe { libc::setgid(0) } == 0 {
        return Err(fail("setgid(0) still succeeds".into()));
    }
    Ok(())
}

/// The supplementary group list of the process.
fn supplementary_groups() -> io::Result<Vec<u32>> {
    // SAFETY: with a size of 0, getgroups only returns the count and does
    // not touch the (null) list.
    let n = unsafe { libc::getgroups(0, ptr::null_mut()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut list: Vec<libc::gid_t> = vec![0; n as usize];
    // SAFETY: `list` has room for `n` gids, the size passed.
    let n = unsafe { libc::getgroups(n, list.as_mut_ptr()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    list.truncate(n as usize);
    Ok(list)
}

/// Resolves `user` — a login name, or a numeric uid (all digits) that must
/// also have a user database entry — to its uid and primary gid.
///
/// Errors: `NotFound` for an unknown user, `InvalidInput` for an empty
/// name, a NUL byte or an out-of-range number, and the C library's error
/// when the lookup itself fails (e.g. an unreachable directory service);
/// each names the user.
pub fn lookup_user(user: &str) -> io::Result<(u32, u32)> {
    let found = match parse_key("user", user)? {
        Key::Name(name) => nss_lookup(
            libc::_SC_GETPW_R_SIZE_MAX,
            // SAFETY: `name` is a NUL-terminated string, and the entry,
            // buffer (with its length) and result pointers come from
            // nss_lookup, which keeps them valid for the call.
            |pwd, buf, len, result| unsafe {
                libc::getpwnam_r(name.as_ptr(), pwd, buf, len, result)
            },
            |pwd: &libc::passwd| (pwd.pw_uid, pwd.pw_gid),
        ),
        Key::Id(uid) => nss_lookup(
            libc::_SC_GETPW_R_SIZE_MAX,
            // SAFETY: as above; the uid is a plain value.
            |pwd, buf, len, result| unsafe { libc::getpwuid_r(uid, pwd, buf, len, result) },
            |pwd: &libc::passwd| (pwd.pw_uid, pwd.pw_gid),
        ),
    };
    match found {
        Ok(Some(ids)) => Ok(ids),
        Ok(None) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("unknown user {user:?}"),
        )),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("looking up user {user:?}: {e}"),
        )),
    }
}

/// Resolves `group` — a group name, or a numeric gid (all digits) that
/// must also have a group database entry — to its gid. Errors as for
/// [`lookup_user`], naming the group.
pub fn lookup_group(group: &str) -> io::Result<u32> {
    let found = match parse_key("group", group)? {
        Key::Name(name) => nss_lookup(
            libc::_SC_GETGR_R_SIZE_MAX,
            // SAFETY: `name` is a NUL-terminated string, and the entry,
            // buffer (with its length) and result pointers come from
            // nss_lookup, which keeps them valid for the call.
            |grp, buf, len, result| unsafe {
                libc::getgrnam_r(name.as_ptr(), grp, buf, len, result)
            },
            |grp: &libc::group| grp.gr_gid,
        ),
        Key::Id(gid) => nss_lookup(
            libc::_SC_GETGR_R_SIZE_MAX,
            // SAFETY: as above; the gid is a plain value.
            |grp, buf, len, result| unsafe { libc::getgrgid_r(gid, grp, buf, len, result) },
            |grp: &libc::group| grp.gr_gid,
        ),
    };
    match found {
        Ok(Some(gid)) => Ok(gid),
        Ok(None) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("unknown group {group:?}"),
        )),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("looking up group {group:?}: {e}"),
        )),
    }
}

/// A user or group as configured: a name, or a number.
enum Key {
    /// A name, for `get*nam_r`.
    Name(CString),
    /// A number, for `get*id_r`.
    Id(u32),
}

/// Reads `value` (a `what`, "user" or "group") as a number when it is all
/// ASCII digits, else as a name.
fn parse_key(what: &str, value: &str) -> io::Result<Key> {
    let invalid = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} {value:?}: {why}"),
        )
    };
    if value.is_empty() {
        return Err(invalid("empty name"));
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        return value
            .parse()
            .map(Key::Id)
            .map_err(|_| invalid("number out of range"));
    }
    CString::new(value)
        .map(Key::Name)
        .map_err(|_| invalid("contains a NUL byte"))
}

/// Runs a reentrant user/group database lookup (`getpwnam_r` and
/// friends), growing the buffer while the C library answers `ERANGE`.
/// `call` gets the entry to fill, the string buffer, its length and the
/// result pointer; `extract` reads what is needed from a found entry while
/// the buffer its strings point into is still alive.
fn nss_lookup<T, R>(
    size_hint: libc::c_int,
    call: impl Fn(*mut T, *mut libc::c_char, libc::size_t, *mut *mut T) -> libc::c_int,
    extract: impl Fn(&T) -> R,
) -> io::Result<Option<R>> {
    // SAFETY: sysconf has no preconditions; -1 means "no fixed size".
    let hint = unsafe { libc::sysconf(size_hint) };
    let mut len = usize::try_from(hint)
        .unwrap_or(0)
        .clamp(1024, MAX_LOOKUP_BUFFER);
    loop {
        let mut buf: Vec<libc::c_char> = vec![0; len];
        let mut entry = MaybeUninit::<T>::uninit();
        let mut result: *mut T = ptr::null_mut();
        let rc = call(entry.as_mut_ptr(), buf.as_mut_ptr(), buf.len(), &mut result);
        match rc {
            0 if result.is_null() => return Ok(None),
            // SAFETY: on success `result` points to `entry`, which the C
            // library filled in; its strings point into `buf`, alive here.
            0 => return Ok(Some(extract(unsafe { &*result }))),
            libc::ERANGE if len < MAX_LOOKUP_BUFFER => len *= 2,
            // Some C libraries report "no such entry" this way (POSIX allows it).
            libc::ENOENT | libc::ESRCH => return Ok(None),
            _ => return Err(io::Error::from_raw_os_error(rc)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::env;
    use std::process::Command;

    /// Set in a child process: the scenario [`child_entry`] runs.
    const CHILD_VAR: &str = "SPP_PRIVILEGES_TEST_CHILD";

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// Runs scenario `scenario` of [`child_entry`] in a new process of this
    /// test binary (dropping privileges is irreversible, so it must not
    /// happen in the process running the other tests). Panics with the
    /// child's output unless its one test passed.
    fn run_child(scenario: &str) {
        let module = module_path!();
        let module = module.split_once("::").map_or(module, |(_, rest)| rest);
        let out = Command::new(env::current_exe().unwrap())
            .arg("--exact")
            .arg(format!("{module}::child_entry"))
            .arg("--include-ignored")
            .arg("--test-threads=1")
            .arg("--nocapture")
            .env(CHILD_VAR, scenario)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "child scenario {scenario} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The child side of the process tests, run only by [`run_child`]
    /// (ignored in a normal run).
    #[test]
    #[ignore = "run by run_child in a child process"]
    fn child_entry() {
        let Ok(scenario) = env::var(CHILD_VAR) else {
            eprintln!("SKIP: the child side of a process test, run by run_child only");
            return;
        };
        let (uid, primary) = lookup_user("nobody").unwrap();
        let gid = match scenario.as_str() {
            "default" => {
                drop_privileges("nobody", None).unwrap();
                primary
            }
            "group" => {
                let gid = lookup_group("daemon").unwrap();
                assert_ne!(gid, primary);
                drop_privileges("nobody", Some("daemon")).unwrap();
                gid
            }
            other => panic!("unknown scenario {other}"),
        };
        // SAFETY: the id getters have no preconditions.
        let ids = unsafe {
            (
                libc::getuid(),
                libc::geteuid(),
                libc::getgid(),
                libc::getegid(),
            )
        };
        assert_eq!(ids, (uid, uid, gid, gid));
        assert_eq!(supplementary_groups().unwrap(), vec![gid]);
        // SAFETY: setuid/setgid take plain ids; both must fail now.
        assert_eq!(unsafe { libc::setuid(0) }, -1);
        assert_eq!(
            io::Error::last_os_error().kind(),
            io::ErrorKind::PermissionDenied
        );
        // SAFETY: as above.
        assert_eq!(unsafe { libc::setgid(0) }, -1);
        // Asking again for what we already are only verifies.
        let group = (scenario == "group").then_some("daemon");
        drop_privileges("nobody", group).unwrap();
        drop_privileges(&uid.to_string(), group).unwrap();
        // Anything else needs root, which is gone.
        let err = drop_privileges("daemon", None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        assert!(err.to_string().contains("\"daemon\""), "{err}");
    }

    #[test]
    fn dropping_to_nobody_is_complete_and_irreversible() {
        if !is_root() {
            eprintln!("SKIP: dropping privileges needs root");
            return;
        }
        run_child("default");
    }

    #[test]
    fn dropping_to_nobody_with_an_explicit_group() {
        if !is_root() {
            eprintln!("SKIP: dropping privileges needs root");
            return;
        }
        run_child("group");
    }

    #[test]
    fn root_and_unknown_names_are_refused_before_any_change() {
        // SAFETY: the id getters have no preconditions.
        let before = unsafe { (libc::getuid(), libc::geteuid(), libc::getgid()) };
        let err = drop_privileges("root", None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("\"root\""), "{err}");
        let err = drop_privileges("0", Some("nogroup")).unwrap_err();
        assert!(err.to_string().contains("uid 0"), "{err}");

        let err = drop_privileges("spp-no-such-user", None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("spp-no-such-user"), "{err}");
        let err = drop_privileges("nobody", Some("spp-no-such-group")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("spp-no-such-group"), "{err}");

        // SAFETY: as above.
        let after = unsafe { (libc::getuid(), libc::geteuid(), libc::getgid()) };
        assert_eq!(before, after);
    }

    #[test]
    fn without_root_switching_is_refused() {
        if is_root() {
            eprintln!("SKIP: running as root, so switching users is allowed here");
            return;
        }
        let err = drop_privileges("daemon", None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
    }

    #[test]
    fn users_resolve_by_name_and_number() {
        assert_eq!(lookup_user("root").unwrap(), (0, 0));
        assert_eq!(lookup_user("0").unwrap(), (0, 0));
        let (uid, gid) = lookup_user("nobody").unwrap();
        assert_ne!(uid, 0);
        assert_eq!(lookup_user(&uid.to_string()).unwrap(), (uid, gid));
    }

    #[test]
    fn groups_resolve_by_name_and_number() {
        assert_eq!(lookup_group("root").unwrap(), 0);
        assert_eq!(lookup_group("0").unwrap(), 0);
        let gid = lookup_group("daemon").unwrap();
        assert_eq!(lookup_group(&gid.to_string()).unwrap(), gid);
        let (_, nobody_gid) = lookup_user("nobody").unwrap();
        assert_eq!(lookup_group(&nobody_gid.to_string()).unwrap(), nobody_gid);
    }

    #[test]
    fn unknown_and_malformed_names_are_errors_naming_them() {
        for (user, kind) in [
            ("spp-no-such-user", io::ErrorKind::NotFound),
            ("4000000000", io::ErrorKind::NotFound),
            ("99999999999", io::ErrorKind::InvalidInput),
            ("", io::ErrorKind::InvalidInput),
            ("no\0body", io::ErrorKind::InvalidInput),
        ] {
            let err = lookup_user(user).unwrap_err();
            assert_eq!(err.kind(), kind, "{user:?}: {err}");
            assert!(err.to_string().contains(&format!("{user:?}")), "{err}");
            let err = lookup_group(user).unwrap_err();
            assert_eq!(err.kind(), kind, "{user:?}: {err}");
            assert!(err.to_string().contains(&format!("{user:?}")), "{err}");
        }
    }
}
