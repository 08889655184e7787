//! Nothing lost under faults: `bench/nothing-lost --quick` sends messages
//! through `serve` with the smtp backend to a scripted downstream that
//! refuses, stalls and drops connections at random, kills both processes
//! with SIGKILL in the middle, and (as root) puts the spool on a tmpfs too
//! small for some messages. Every `250` the clients got must be stored
//! downstream. Not root: the tmpfs part is skipped with a `SKIP:` line.

use std::collections::HashMap;
use std::process::Command;

/// The `key=value` pairs of the script's `RESULT` line.
fn result_line(stdout: &str) -> HashMap<String, String> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line in:\n{stdout}"));
    line["RESULT ".len()..]
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn every_acknowledged_message_is_stored_downstream_under_faults() {
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/nothing-lost"))
        .args([
            "--quick",
            "--tmpfs",
            "--binary",
            env!("CARGO_BIN_EXE_spp-smtpd"),
        ])
        .output()
        .expect("run python3 bench/nothing-lost");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    for skip in stdout.lines().filter(|l| l.starts_with("SKIP:")) {
        eprintln!("{skip}");
    }
    assert!(
        out.status.success(),
        "bench/nothing-lost failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.lines().any(|l| l.trim() == "lost 0"),
        "no `lost 0` in:\n{stdout}"
    );
    let r = result_line(&stdout);
    let n = |k: &str| -> u64 {
        r.get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("RESULT has no number `{k}`:\n{stdout}"))
    };
    assert_eq!(n("lost"), 0, "{stdout}");
    assert_eq!(n("corrupt"), 0, "{stdout}");
    assert_eq!(n("panics"), 0, "{stdout}");
    // The faults really happened, and mail still went through.
    assert!(n("acked") > 0, "nothing was acknowledged:\n{stdout}");
    assert!(n("tempfail") > 0, "no 4xx reached the clients:\n{stdout}");
    assert!(
        n("chaos_faults") > 0,
        "the downstream injected nothing:\n{stdout}"
    );
    assert!(
        n("spp_restarts") >= 1,
        "spp-smtpd was not killed:\n{stdout}"
    );
    assert!(
        n("mta_restarts") >= 1,
        "the downstream was not killed:\n{stdout}"
    );
    assert!(n("duplicates") > 0, "no stored-then-failed case:\n{stdout}");
    if r.get("tmpfs").map(String::as_str) == Some("yes") {
        assert!(n("enospc") > 0, "the tiny spool never filled up:\n{stdout}");
    } else {
        eprintln!("SKIP: the tmpfs spool part of nothing_lost (needs root)");
    }
}
