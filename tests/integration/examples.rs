//! The example plugins in `plugins-examples/` and the configuration a fresh
//! clone runs with (`control/`, `samples/`).
//!
//! The plugins are run directly, the way the server runs them but without a
//! server: an empty environment apart from `PATH` and the variables the hook
//! would set, a scratch directory standing in for the home as the working
//! directory, stdin from `/dev/null`. Every test checks the exact stdout,
//! because that is the plugin's whole answer to the server.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

/// The example plugins, by file name under `plugins-examples/`.
const EXAMPLE_PLUGINS: &[&str] = &["check-helo.sh", "greylist.py", "rcpt-limit.pl"];

const HELO_EMPTY: &str = "E501 syntax error in HELO: a host name is required (#5.5.4)\n";
const GREYLISTED: &str = "E451 greylisted, try again later (#4.7.1)\n";
const TOO_MANY_RECIPIENTS: &str = "E452 too many recipients (#4.5.3)\n";

/// Absolute path of a file in the source tree.
fn source_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// A new, uniquely named directory under the system's temporary directory;
/// removed with everything in it when dropped, also when a test fails.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn new(tag: &str) -> ScratchDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "spp-smtpd-examples-{tag}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
        ));
        fs::create_dir(&path)
            .unwrap_or_else(|error| panic!("cannot create {}: {error}", path.display()));
        ScratchDir { path }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// What one run of a plugin printed.
struct PluginOutput {
    stdout: String,
    stderr: String,
}

/// Runs `plugins-examples/<plugin> <args>` in `home` with only `PATH` and
/// `vars` in its environment, and checks that it exited with status 0.
fn run_plugin(plugin: &str, args: &[&str], vars: &[(&str, &str)], home: &Path) -> PluginOutput {
    let program = source_path(&format!("plugins-examples/{plugin}"));
    let mut command = Command::new(&program);
    command
        .args(args)
        .env_clear()
        .current_dir(home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The scripts start with `#!/usr/bin/env python3` / `perl`.
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command.envs(vars.iter().copied());

    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", program.display()));
    let stdout = String::from_utf8(output.stdout)
        .unwrap_or_else(|error| panic!("{plugin} printed something that is not UTF-8: {error}"));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{plugin} {args:?} with {vars:?} exited with {}; stderr:\n{stderr}",
        output.status
    );
    PluginOutput { stdout, stderr }
}

/// Asserts the exact stdout, showing the plugin's log when it differs.
#[track_caller]
fn assert_prints(output: &PluginOutput, expected: &str, what: &str) {
    assert_eq!(
        output.stdout, expected,
        "{what}; stderr:\n{}",
        output.stderr
    );
}

// ---------------------------------------------------------------------------
// check-helo.sh ([helo])

fn check_helo(helo: &str) -> PluginOutput {
    let home = ScratchDir::new("helo");
    run_plugin("check-helo.sh", &[], &[("SMTPHELOHOST", helo)], home.path())
}

#[test]
fn check_helo_refuses_an_empty_or_blank_name() {
    for helo in ["", "   ", "\t", " \t "] {
        assert_prints(&check_helo(helo), HELO_EMPTY, &format!("HELO {helo:?}"));
    }
}

#[test]
fn check_helo_refuses_a_bare_ipv4_address() {
    let refused =
        "E501 syntax error in HELO: an address literal needs brackets: [192.0.2.1] (#5.5.4)\n";
    // SMTPHELOHOST keeps the trailing blanks of the HELO argument.
    for helo in ["192.0.2.1", "192.0.2.1  ", " 192.0.2.1"] {
        assert_prints(&check_helo(helo), refused, &format!("HELO {helo:?}"));
    }
    // RFC 1123: a host name never has the form #.#.#.#, whatever the numbers.
    assert_prints(
        &check_helo("300.1.1.1"),
        "E501 syntax error in HELO: an address literal needs brackets: [300.1.1.1] (#5.5.4)\n",
        "HELO 300.1.1.1",
    );
}

#[test]
fn check_helo_accepts_host_names_and_address_literals() {
    for helo in [
        "mail.example.test",
        "localhost",
        "mx-1.example.test ",
        "[192.0.2.1]",
        "[IPv6:2001:db8::1]",
        "1.2.3",
        "1.2.3.4.5",
        "1..2.3",
        "192.0.2.1.example.test",
        "*",
    ] {
        assert_prints(&check_helo(helo), "", &format!("HELO {helo:?}"));
    }
}

#[test]
fn check_helo_outside_the_helo_hook_refuses_nothing() {
    let home = ScratchDir::new("helo-unset");
    let output = run_plugin("check-helo.sh", &[], &[], home.path());
    assert_prints(&output, "", "SMTPHELOHOST not set");
    assert!(
        output.stderr.contains("[helo]"),
        "stderr: {}",
        output.stderr
    );
}

// ---------------------------------------------------------------------------
// greylist.py ([rcpt])

const CLIENT: (&str, &str) = ("TCPREMOTEIP", "192.0.2.7");
const SENDER: (&str, &str) = ("SMTPMAILFROM", "sender@example.org");
const RECIPIENT: (&str, &str) = ("SMTPRCPTTO", "rcpt@example.test");

fn greylist(home: &ScratchDir, vars: &[(&str, &str)]) -> PluginOutput {
    run_plugin("greylist.py", &[], vars, home.path())
}

/// Every regular file below `dir`.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn greylist_refuses_a_new_triple_until_the_delay_has_passed() {
    let home = ScratchDir::new("grey");
    let triple = [CLIENT, SENDER, RECIPIENT];

    assert_prints(&greylist(&home, &triple), GREYLISTED, "first attempt");
    assert_prints(
        &greylist(&home, &triple),
        GREYLISTED,
        "retry within the default 300 s",
    );
    assert_prints(
        &greylist(
            &home,
            &[CLIENT, SENDER, RECIPIENT, ("GREYLIST_DELAY", "3600")],
        ),
        GREYLISTED,
        "retry within GREYLIST_DELAY",
    );
    assert_prints(
        &greylist(&home, &[CLIENT, SENDER, RECIPIENT, ("GREYLIST_DELAY", "0")]),
        "",
        "retry after GREYLIST_DELAY",
    );
    // Once passed, the triple is accepted at once, whatever the delay.
    assert_prints(&greylist(&home, &triple), "", "a triple that passed before");

    // The default state directory, relative to the working directory.
    assert!(home.path().join("var/greylist").is_dir());
}

#[test]
fn greylist_accepts_a_retry_after_the_default_delay() {
    let home = ScratchDir::new("grey-default");
    let triple = [CLIENT, SENDER, RECIPIENT];
    assert_prints(&greylist(&home, &triple), GREYLISTED, "first attempt");

    // Pretend the first attempt was 400 s ago: the state file's mtime is
    // when the triple was first seen.
    let state = files_below(&home.path().join("var/greylist"));
    assert_eq!(state.len(), 1, "one state file per triple: {state:?}");
    let first_seen = SystemTime::now() - Duration::from_secs(400);
    fs::File::options()
        .write(true)
        .open(&state[0])
        .and_then(|file| file.set_modified(first_seen))
        .unwrap_or_else(|error| panic!("cannot backdate {}: {error}", state[0].display()));

    assert_prints(
        &greylist(&home, &triple),
        "",
        "retry 400 s after the first attempt",
    );
    assert_prints(&greylist(&home, &triple), "", "a triple that passed before");
}

#[test]
fn greylist_keys_on_client_network_sender_and_recipient() {
    let home = ScratchDir::new("grey-triple");
    let pass = [CLIENT, SENDER, RECIPIENT, ("GREYLIST_DELAY", "0")];
    assert_prints(&greylist(&home, &pass), GREYLISTED, "first attempt");
    assert_prints(&greylist(&home, &pass), "", "retry");

    // Another machine of the same /24, addresses in another case: same triple.
    let same = [
        ("TCPREMOTEIP", "192.0.2.200"),
        ("SMTPMAILFROM", "Sender@EXAMPLE.org"),
        ("SMTPRCPTTO", "RCPT@example.test"),
    ];
    assert_prints(
        &greylist(&home, &same),
        "",
        "same /24, sender and recipient",
    );

    let others: [[(&str, &str); 3]; 4] = [
        [CLIENT, SENDER, ("SMTPRCPTTO", "other@example.test")],
        [CLIENT, ("SMTPMAILFROM", "other@example.org"), RECIPIENT],
        [CLIENT, ("SMTPMAILFROM", ""), RECIPIENT],
        [("TCPREMOTEIP", "192.0.3.7"), SENDER, RECIPIENT],
    ];
    for triple in others {
        assert_prints(
            &greylist(&home, &triple),
            GREYLISTED,
            &format!("new triple {triple:?}"),
        );
    }
}

#[test]
fn greylist_uses_greylist_dir() {
    let home = ScratchDir::new("grey-dir");
    let vars = [CLIENT, SENDER, RECIPIENT, ("GREYLIST_DIR", "state/grey")];
    assert_prints(&greylist(&home, &vars), GREYLISTED, "first attempt");
    assert_eq!(files_below(&home.path().join("state/grey")).len(), 1);
    assert!(
        !home.path().join("var").exists(),
        "the default directory was used"
    );
}

#[test]
fn greylist_leaves_relay_clients_alone() {
    let home = ScratchDir::new("grey-relay");
    let vars = [CLIENT, SENDER, RECIPIENT, ("RELAYCLIENT", "")];
    assert_prints(&greylist(&home, &vars), "", "RELAYCLIENT set (empty)");
    assert_prints(&greylist(&home, &vars), "", "RELAYCLIENT set, again");
    assert!(
        !home.path().join("var").exists(),
        "state written for a relay client"
    );
}

#[test]
fn greylist_never_blocks_mail_because_of_its_own_errors() {
    let home = ScratchDir::new("grey-error");
    // A state directory that cannot be created: a path below a regular file.
    fs::write(home.path().join("not-a-directory"), b"").expect("write file");
    let vars = [
        CLIENT,
        SENDER,
        RECIPIENT,
        ("GREYLIST_DIR", "not-a-directory/greylist"),
    ];
    let output = greylist(&home, &vars);
    assert_prints(&output, "", "unusable GREYLIST_DIR");
    assert!(
        output.stderr.contains("internal error"),
        "stderr: {}",
        output.stderr
    );

    // Not listed under [rcpt]: no recipient to greylist.
    let output = greylist(&home, &[CLIENT, SENDER]);
    assert_prints(&output, "", "SMTPRCPTTO not set");
    assert!(
        output.stderr.contains("[rcpt]"),
        "stderr: {}",
        output.stderr
    );
}

// ---------------------------------------------------------------------------
// rcpt-limit.pl ([rcpt])

fn rcpt_limit(args: &[&str], accepted_so_far: &str) -> PluginOutput {
    let home = ScratchDir::new("rcpt");
    run_plugin(
        "rcpt-limit.pl",
        args,
        &[("SMTPRCPTCOUNT", accepted_so_far)],
        home.path(),
    )
}

#[test]
fn rcpt_limit_refuses_from_the_nth_recipient_on() {
    // (limit argument, SMTPRCPTCOUNT, expected stdout)
    let cases: [(Option<&str>, &str, &str); 10] = [
        (Some("2"), "0", ""),
        (Some("2"), "1", ""),
        (Some("2"), "2", TOO_MANY_RECIPIENTS),
        (Some("2"), "3", TOO_MANY_RECIPIENTS),
        (Some("1"), "0", ""),
        (Some("1"), "1", TOO_MANY_RECIPIENTS),
        (Some("100"), "99", ""),
        (Some("100"), "100", TOO_MANY_RECIPIENTS),
        // No argument: the default limit, 50.
        (None, "49", ""),
        (None, "50", TOO_MANY_RECIPIENTS),
    ];
    for (limit, count, expected) in cases {
        assert_prints(
            &rcpt_limit(limit.as_slice(), count),
            expected,
            &format!("limit {limit:?}, SMTPRCPTCOUNT={count}"),
        );
    }
}

#[test]
fn rcpt_limit_survives_bad_settings() {
    // A bad limit is logged and the default (50) is used.
    for bad in ["0", "-5", "ten", ""] {
        let output = rcpt_limit(&[bad], "49");
        assert_prints(&output, "", &format!("limit {bad:?}, 49 accepted"));
        assert!(!output.stderr.is_empty(), "limit {bad:?} was not logged");
        assert_prints(
            &rcpt_limit(&[bad], "50"),
            TOO_MANY_RECIPIENTS,
            &format!("limit {bad:?}, 50 accepted"),
        );
    }
    // A missing or malformed count lets the recipient through.
    let output = rcpt_limit(&["2"], "many");
    assert_prints(&output, "", "SMTPRCPTCOUNT=many");
    assert!(
        !output.stderr.is_empty(),
        "bad SMTPRCPTCOUNT was not logged"
    );
    let home = ScratchDir::new("rcpt-unset");
    assert_prints(
        &run_plugin("rcpt-limit.pl", &["2"], &[], home.path()),
        "",
        "SMTPRCPTCOUNT not set",
    );
}

// ---------------------------------------------------------------------------
// The files themselves

#[test]
fn example_plugins_are_documented_executable_scripts() {
    for plugin in EXAMPLE_PLUGINS {
        let path = source_path(&format!("plugins-examples/{plugin}"));
        let mode = fs::metadata(&path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
            .permissions()
            .mode();
        assert_ne!(mode & 0o111, 0, "{plugin} is not executable");
        let text = fs::read_to_string(&path).expect("read plugin");
        assert!(text.starts_with("#!"), "{plugin} has no #! line");
        assert!(
            text.contains("Hook:"),
            "{plugin} does not say which hook it is for"
        );
    }
}

#[test]
fn shipped_text_files_have_lf_line_ends() {
    for dir in ["control", "samples", "plugins-examples"] {
        for path in files_below(&source_path(dir)) {
            let bytes = fs::read(&path).expect("read file");
            assert!(!bytes.contains(&b'\r'), "{} contains a CR", path.display());
            assert!(
                bytes.is_empty() || bytes.ends_with(b"\n"),
                "{} does not end with a newline",
                path.display()
            );
        }
    }
}

#[test]
fn control_files_of_a_fresh_clone() {
    // Single-value file: only the first line counts, so no comments.
    assert_eq!(
        fs::read_to_string(source_path("control/me")).unwrap(),
        "localhost\n"
    );

    let rcpthosts = fs::read_to_string(source_path("control/rcpthosts")).unwrap();
    let hosts: Vec<&str> = rcpthosts
        .lines()
        .filter(|line| !line.starts_with('#'))
        .collect();
    assert_eq!(hosts, ["localhost", "example.test"]);
}

/// The program named by each plugin line of an smtpplugins file that is not
/// a `:` shell line, with its line number.
fn plugin_programs(config: &str) -> Vec<(usize, String)> {
    config
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line.trim_end_matches([' ', '\t'])))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with(['#', '[', ':']))
        .map(|(number, line)| {
            let program = line.split_whitespace().next().unwrap_or_default();
            (number, program.to_string())
        })
        .collect()
}

#[test]
fn smtpplugins_files_name_existing_plugins() {
    for file in ["control/smtpplugins", "samples/smtpplugins"] {
        let config = fs::read_to_string(source_path(file)).unwrap();
        let programs = plugin_programs(&config);
        assert!(!programs.is_empty(), "{file} lists no plugin");
        for (number, program) in programs {
            let path = source_path(&program);
            let mode = fs::metadata(&path)
                .unwrap_or_else(|error| panic!("{file}:{number}: {program}: {error}"))
                .permissions()
                .mode();
            assert_ne!(
                mode & 0o111,
                0,
                "{file}:{number}: {program} is not executable"
            );
        }
    }

    let sample = fs::read_to_string(source_path("samples/smtpplugins")).unwrap();
    for section in [
        "[connection]",
        "[helo]",
        "[mail]",
        "[rcpt]",
        "[data]",
        "[auth]",
    ] {
        assert!(
            sample.lines().any(|line| line == section),
            "samples/smtpplugins has no {section}"
        );
    }
    assert!(
        sample.lines().any(|line| line.starts_with(':')),
        "samples/smtpplugins has no ':' line"
    );
}
