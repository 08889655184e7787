//! `spp-smtpd check`: every problem reported as file:line, exit 1; a clean
//! configuration (including the one a fresh clone runs with) exits 0.

use crate::util::process::{bin, run_with_input};
use crate::util::TestHome;
use std::process::Command;
use std::time::Duration;

fn check(home: &std::path::Path) -> crate::util::process::Finished {
    let mut cmd = Command::new(bin());
    cmd.arg("--home").arg(home).arg("check");
    run_with_input(cmd, b"", Duration::from_secs(30))
}

#[test]
fn clean_home_passes() {
    let home = TestHome::new();
    let rel = home.plugin("ok", "#!/bin/sh\n");
    home.smtpplugins(&format!("[mail]\n{rel}\n[rcpt]\n:exit 0\n"));
    let out = check(home.dir());
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stdout.starts_with("ok: no problems found"),
        "{}",
        out.stdout
    );
}

#[test]
fn the_configuration_of_a_fresh_clone_passes() {
    let out = check(std::path::Path::new(env!("CARGO_MANIFEST_DIR")));
    assert_eq!(out.code, 0, "{}", out.stdout);
}

#[test]
fn every_problem_is_reported_with_file_and_line() {
    let home = TestHome::new();
    let ok = home.plugin("ok", "#!/bin/sh\n");
    let noexec = home.plugin("noexec", "#!/bin/sh\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        home.dir().join(&noexec),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    home.smtpplugins(&format!(
        "early-line\n[mail]\n{ok}\nplugins/missing\n[HELO]\n{noexec}\n[rcpt]\n{noexec}\n{ok} --flag\n"
    ));
    home.control("rcpthosts", "ref.test\nsecond.test\r\n");
    home.control("databytes", "ten\n");
    home.control("queue", "mbox /var/mail\n");
    home.control("me", "mx.ref.test\r\n");
    home.control("morercpthosts", "more.test\n");
    let out = check(home.dir());
    assert_eq!(out.code, 1);
    let c = home.dir().join("control");
    let c = c.display();
    // Sorted by file, then line; CR line ends are warnings.
    let expected = [
        format!("{c}/databytes:1: does not start with a number"),
        format!("{c}/me:1: warning: ends with CR"),
        format!("{c}/morercpthosts: warning: is not consulted"),
        format!("{c}/queue:1: unknown queue type \"mbox\""),
        format!("{c}/rcpthosts:2: warning: ends with CR"),
        format!("{c}/smtpplugins:1: plugin line before any section"),
        format!(
            "{c}/smtpplugins:4: plugin {}/plugins/missing cannot be used",
            home.dir().display()
        ),
        format!("{c}/smtpplugins:5: unknown section [HELO]"),
        format!(
            "{c}/smtpplugins:8: plugin {}/plugins/noexec is not executable",
            home.dir().display()
        ),
    ];
    let lines: Vec<&str> = out.stdout.lines().collect();
    for (i, e) in expected.iter().enumerate() {
        assert!(
            lines.get(i).is_some_and(|l| l.starts_with(e.as_str())),
            "line {i}: expected {e:?} in:\n{}",
            out.stdout
        );
    }
    // The discarded [HELO] section's plugin is not checked; `ok --flag` is
    // split into words and names an existing program.
    assert!(!out.stdout.contains(":6:"), "{}", out.stdout);
    assert!(!out.stdout.contains(":9:"), "{}", out.stdout);
    assert_eq!(out.stdout.lines().count(), expected.len(), "{}", out.stdout);
}

#[test]
fn missing_smtpplugins_and_greeting_are_reported() {
    let home = TestHome::new();
    home.remove_control("smtpplugins");
    home.remove_control("me");
    let out = check(home.dir());
    assert_eq!(out.code, 1);
    assert!(
        out.stdout
            .contains("control/me: missing, and so is control/smtpgreeting"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("control/smtpplugins: cannot read"),
        "{}",
        out.stdout
    );
}

#[test]
fn unreadable_control_file_is_reported_and_sessions_get_421() {
    let home = TestHome::new();
    // A directory where a file is expected cannot be read (even by root).
    home.remove_control("rcpthosts");
    std::fs::create_dir(home.dir().join("control/rcpthosts")).unwrap();
    let out = check(home.dir());
    assert_eq!(out.code, 1);
    assert!(
        out.stdout
            .contains("control/rcpthosts: not a regular file (a directory)"),
        "{}",
        out.stdout
    );
    let out = crate::util::process::stdio(&home, &[], b"QUIT\r\n");
    assert_eq!(out.stdout, "421 unable to read controls (#4.3.0)\r\n");
    assert_eq!(out.code, 1);
}

#[test]
fn queue_backends_are_checked() {
    let home = TestHome::new();
    let c = home.dir().join("control");
    for (line, expect) in [
        ("sendmail bin/none", "queue:1: queue program".to_string()),
        (
            "smtp 127.0.0.1:25 tls=sometimes",
            "queue:1: tls=\"sometimes\"".to_string(),
        ),
        (
            "lmtp 127.0.0.1",
            "queue:1: \"127.0.0.1\": `lmtp` needs a port".to_string(),
        ),
        (
            "smtp 127.0.0.1:25 tls=required cafile=control/none.pem",
            "none.pem: cannot read CA certificates".to_string(),
        ),
    ] {
        home.control("queue", format!("{line}\n"));
        let out = check(home.dir());
        assert_eq!(out.code, 1, "{line}: {}", out.stdout);
        assert!(out.stdout.contains(&expect), "{line}: {}", out.stdout);
    }
    home.control("queue", "smtp 127.0.0.1:25 tls=required verify=no\n");
    home.write("spool-file", "x");
    home.control("spooldir", "spool-file\n");
    let out = check(home.dir());
    assert_eq!(out.code, 1);
    assert!(
        out.stdout
            .contains(&format!("{}/spooldir:1: ", c.display()))
            && out.stdout.contains("is not a directory"),
        "{}",
        out.stdout
    );
    home.remove_control("spooldir");
    home.write("bin/sendmail", "#!/bin/sh\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        home.dir().join("bin/sendmail"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    for ok in [
        "sendmail bin/sendmail",
        "lmtp /run/lmtp verify-rcpt=no",
        "smtp [::1]:2525 pool=0",
    ] {
        home.control("queue", format!("{ok}\n"));
        let out = check(home.dir());
        assert_eq!(out.code, 0, "{ok}: {}", out.stdout);
    }
}

#[test]
fn an_extension_switch_that_is_neither_on_nor_off_is_reported() {
    let home = TestHome::new();
    home.smtpplugins("");
    home.control("chunking", "maybe\n");
    home.control("smtputf8", "off\n");
    let out = check(home.dir());
    assert_eq!(out.code, 1, "{}", out.stdout);
    let c = home.dir().join("control");
    assert!(
        out.stdout
            .contains(&format!("{}/chunking:1: expected 1", c.display())),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("smtputf8"), "{}", out.stdout);
}

#[test]
fn bad_plugin_options_are_reported_with_file_and_line() {
    let home = TestHome::new();
    home.smtpplugins(
        "[rcpt]\n#spp: timeout=soon colour=blue\n:echo N\n#spp: persistent\n\n:echo N\n",
    );
    let out = check(home.dir());
    assert_eq!(out.code, 1, "{}", out.stdout);
    let file = home.dir().join("control/smtpplugins");
    let f = file.display();
    for want in [
        format!("{f}:2: \"soon\": expected a duration"),
        format!("{f}:2: unknown option \"colour\""),
        format!("{f}:4: #spp: options must be on the line right above a plugin line"),
    ] {
        assert!(out.stdout.contains(&want), "{want}\n{}", out.stdout);
    }
}
