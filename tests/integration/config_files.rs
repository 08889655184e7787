//! Configuration files that cannot be used: a corrupt
//! `morercpthosts.cdb`, and FIFOs (or other non-regular files) where a
//! file belongs. `check` reports them with the path and what is wrong,
//! `stdio` answers 421 at once, `serve` refuses to start; nothing hangs.

use crate::util::process::{bin, run_with_input, Finished};
use crate::util::TestHome;
use spp_smtpd::config::cdb;
use std::process::Command;
use std::time::{Duration, Instant};

/// Longer than any of these runs needs; a hang fails the test.
const LIMIT: Duration = Duration::from_secs(15);

/// `spp-smtpd --home HOME ARGS...`, bounded.
fn run(home: &TestHome, args: &[&str], input: &[u8]) -> Finished {
    let mut cmd = Command::new(bin());
    cmd.arg("--home").arg(home.dir()).args(args).env_clear();
    cmd.env("PATH", "/usr/bin:/bin");
    run_with_input(cmd, input, LIMIT)
}

/// The greeting a session gets when the configuration cannot be loaded.
const UNREADABLE: &str = "421 unable to read controls (#4.3.0)\r\n";

/// A valid cdb of 200 domains, and the position of a used slot.
fn valid_cdb() -> (Vec<u8>, usize) {
    let keys: Vec<Vec<u8>> = (0..200)
        .map(|i| format!("d{i}.more.test").into_bytes())
        .collect();
    let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
    let db = cdb::image(&refs);
    let u32_at = |p: usize| u32::from_le_bytes(db[p..p + 4].try_into().unwrap()) as usize;
    let table = (0..256).find(|&t| u32_at(t * 8 + 4) > 0).unwrap();
    let (tpos, slots) = (u32_at(table * 8), u32_at(table * 8 + 4));
    let slot = (0..slots)
        .map(|s| tpos + s * 8)
        .find(|&p| u32_at(p + 4) != 0)
        .unwrap();
    (db, slot)
}

#[test]
fn a_valid_morercpthosts_cdb_passes_check_and_is_used() {
    let home = TestHome::new();
    home.control("morercpthosts.cdb", valid_cdb().0);
    let out = run(&home, &["check"], b"");
    assert_eq!(out.code, 0, "{}", out.stdout);
    let out = run(
        &home,
        &["stdio"],
        b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@d7.more.test>\r\nQUIT\r\n",
    );
    assert_eq!(out.lines()[2], "250 ok", "{}", out.stdout);
}

#[test]
fn a_corrupt_morercpthosts_cdb_is_reported_by_check_and_refused_at_load() {
    let (db, slot) = valid_cdb();
    let put = |db: &mut Vec<u8>, pos: usize, v: u32| {
        db[pos..pos + 4].copy_from_slice(&v.to_le_bytes());
    };
    let mut huge_key = db.clone();
    put(&mut huge_key, 2048, 0x7fff_0000);
    let mut garbage_slot = db.clone();
    put(&mut garbage_slot, slot + 4, 2049);
    // Another table's keys: the records are renamed, the tables are not.
    let mut wrong_keys = db.clone();
    for i in 0..db.len() - 5 {
        if &db[i..i + 5] == b".more" {
            wrong_keys[i + 1] = b'l';
        }
    }
    let cases = [
        (
            "truncated",
            db[..db.len() / 2].to_vec(),
            "lies outside the file",
        ),
        (
            "header only",
            db[..1000].to_vec(),
            "shorter than the 2048-byte header",
        ),
        ("huge key length", huge_key, "key length 2147418112"),
        (
            "garbage in a slot",
            garbage_slot,
            "not the start of a record",
        ),
        ("wrong keys", wrong_keys, "does not belong there"),
    ];
    for (name, bytes, what) in cases {
        let home = TestHome::new();
        home.control("morercpthosts.cdb", &bytes);
        let path = home.dir().join("control/morercpthosts.cdb");
        let out = run(&home, &["check"], b"");
        assert_eq!(out.code, 1, "{name}: {}", out.stdout);
        let line = format!("{}: not a usable cdb file: ", path.display());
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with(&line) && l.contains(what)),
            "{name}: want {line}...{what} in\n{}",
            out.stdout
        );
        let out = run(&home, &["stdio"], b"QUIT\r\n");
        assert_eq!(out.stdout, UNREADABLE, "{name}");
        assert!(out.stderr.contains(what), "{name}: {}", out.stderr);
        let out = run(&home, &["serve", "--listen", "127.0.0.1:0"], b"");
        assert_eq!(out.code, 78, "{name}: {}", out.stderr);
        assert!(out.stderr.contains(&line), "{name}: {}", out.stderr);
    }
}

/// Replaces `rel` (under the home) with a FIFO nobody writes to.
fn make_fifo(home: &TestHome, rel: &str) {
    let path = home.dir().join(rel);
    let _ = std::fs::remove_file(&path);
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o644) },
        0,
        "mkfifo {rel}"
    );
}

/// The run finished well within the limit.
fn quick(started: Instant, what: &str) {
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{what} took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_fifo_in_place_of_a_control_file_is_refused_without_blocking() {
    for rel in [
        "control/rcpthosts",
        "control/me",
        "control/smtpplugins",
        "control/morercpthosts.cdb",
        "control/servercert.pem",
    ] {
        let home = TestHome::new();
        make_fifo(&home, rel);
        let expected = format!("{}: ", home.dir().join(rel).display());
        let started = Instant::now();
        let out = run(&home, &["check"], b"");
        quick(started, &format!("check with a FIFO at {rel}"));
        assert_eq!(out.code, 1, "{rel}: {}", out.stdout);
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with(&expected) && l.contains("not a regular file (a FIFO)")),
            "{rel}: {}",
            out.stdout
        );
        let started = Instant::now();
        let out = run(&home, &["stdio"], b"QUIT\r\n");
        quick(started, &format!("stdio with a FIFO at {rel}"));
        assert_eq!(out.stdout, UNREADABLE, "{rel}");
        assert!(
            out.stderr.contains("not a regular file (a FIFO)"),
            "{rel}: {}",
            out.stderr
        );
    }
}

#[test]
fn a_fifo_as_the_settings_or_rules_file_is_refused_without_blocking() {
    for rel in ["control/spp-smtpd.ini", "control/tcp.smtp"] {
        let home = TestHome::new();
        make_fifo(&home, rel);
        let expected = format!(
            "{}: not a regular file (a FIFO)",
            home.dir().join(rel).display()
        );
        let started = Instant::now();
        let out = run(&home, &["check"], b"");
        quick(started, &format!("check with a FIFO at {rel}"));
        assert_eq!(out.code, 1, "{rel}: {}", out.stdout);
        assert!(out.stdout.contains(&expected), "{rel}: {}", out.stdout);
        let started = Instant::now();
        let out = run(&home, &["serve", "--listen", "127.0.0.1:0"], b"");
        quick(started, &format!("serve with a FIFO at {rel}"));
        assert_eq!(out.code, 78, "{rel}: {}", out.stderr);
        assert!(out.stderr.contains(&expected), "{rel}: {}", out.stderr);
    }
}
