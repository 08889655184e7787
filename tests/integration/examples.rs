//! The example plugins in `plugins-examples/`, the configuration a fresh
//! clone runs with (`control/`, `samples/`), and the plugins the documents
//! name.
//!
//! Each plugin is run directly, the way the server runs it but without a
//! server: an empty environment apart from `PATH` and the variables the hook
//! would set, a scratch directory standing in for the home as the working
//! directory, stdin from `/dev/null`. Every such test checks the exact
//! stdout, because that is the plugin's whole answer to the server. Then
//! each plugin is listed in the `smtpplugins` of a test home and used by an
//! in-memory session, which checks the replies a client gets.
//!
//! `rbl.pl` asks a dnsmasq started on 127.0.0.1 for the test; `greylist.py`
//! keeps its state in SQLite and in a redis-server started on 127.0.0.1;
//! the C example is compiled with `cc`. A test whose program is missing
//! prints `SKIP: <reason>` and checks nothing else.

use crate::util::mta::{find_program, Redis};
use crate::util::process::DnsServer;
use crate::util::{Driver, TestHome};
use std::fs;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// The example plugins that are scripts, by file name under
/// `plugins-examples/`.
const EXAMPLE_PLUGINS: &[&str] = &[
    "check-helo.sh",
    "check-sender.sh",
    "greylist.py",
    "rbl.pl",
    "rcpt-limit.pl",
];

/// The compiled example: its source under `plugins-examples/`.
const C_PLUGIN_SOURCE: &str = "plugins-examples/c/rcpt-check.c";

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
    run_program(
        &source_path(&format!("plugins-examples/{plugin}")),
        args,
        vars,
        home,
    )
}

/// Runs `program <args>` as [`run_plugin`] runs an example.
fn run_program(program: &Path, args: &[&str], vars: &[(&str, &str)], home: &Path) -> PluginOutput {
    let plugin = program.display();
    let mut command = Command::new(program);
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
        .unwrap_or_else(|error| panic!("cannot run {plugin}: {error}"));
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

/// Asserts that the plugin logged `text` (on stderr).
#[track_caller]
fn assert_logged(output: &PluginOutput, text: &str) {
    assert!(
        output.stderr.contains(text),
        "{text:?} not logged; stderr:\n{}",
        output.stderr
    );
}

/// The line that lists `plugins-examples/<plugin> <args>` in smtpplugins: the
/// absolute path, quoted (the line is split into words like a shell would).
fn plugin_line(plugin: &str, args: &str) -> String {
    quoted_line(&source_path(&format!("plugins-examples/{plugin}")), args)
}

/// `'program' args`, for smtpplugins.
fn quoted_line(program: &Path, args: &str) -> String {
    let program = program.display().to_string();
    assert!(!program.contains('\''), "a quote in {program}");
    format!("'{program}' {args}")
}

/// A test home whose smtpplugins is `config`, with the test qmail-queue.
fn home_with_plugins(config: &str) -> TestHome {
    let home = TestHome::new();
    home.install_qmail_queue();
    home.smtpplugins(config);
    home
}

/// An in-memory session from `client` (not a relay client), greeting read.
async fn session_from(home: &TestHome, client: &str) -> Driver {
    let mut session = home
        .session(&[("TCPREMOTEIP", client), ("TCPLOCALIP", "127.0.0.1")])
        .await;
    session.greeting().await.all(&["220 mx.ref.test ESMTP"]);
    session
}

/// The reply a client gets for a plugin's `E` line.
fn reply_of(line: &str) -> &str {
    line.strip_prefix('E')
        .and_then(|text| text.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("not an E line: {line:?}"))
}

/// `MAIL FROM:<sender@example.org>`, a RCPT for each (recipient, reply) of
/// `expected` asserting the reply, then RSET.
async fn rcpts(session: &mut Driver, expected: &[(&str, &str)]) {
    session
        .cmd("MAIL FROM:<sender@example.org>")
        .await
        .all(&["250 ok"]);
    for (recipient, reply) in expected {
        session
            .cmd(&format!("RCPT TO:<{recipient}>"))
            .await
            .all(&[*reply]);
    }
    session.cmd("RSET").await.all(&["250 flushed"]);
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
    assert_logged(&output, "[helo]");
}

#[tokio::test]
async fn check_helo_in_a_session() {
    let home = home_with_plugins(&format!("[helo]\n{}\n", plugin_line("check-helo.sh", "")));
    let mut s = session_from(&home, "192.0.2.7").await;
    s.cmd("HELO 192.0.2.1").await.all(&[
        "501 syntax error in HELO: an address literal needs brackets: [192.0.2.1] (#5.5.4)",
    ]);
    s.cmd("EHLO").await.all(&[reply_of(HELO_EMPTY)]);
    s.cmd("HELO mail.example.org")
        .await
        .all(&["250 mx.ref.test"]);
}

// ---------------------------------------------------------------------------
// greylist.py ([rcpt])

const CLIENT: (&str, &str) = ("TCPREMOTEIP", "192.0.2.7");
const SENDER: (&str, &str) = ("SMTPMAILFROM", "sender@example.org");
const RECIPIENT: (&str, &str) = ("SMTPRCPTTO", "rcpt@example.test");
const TRIPLE: [(&str, &str); 3] = [CLIENT, SENDER, RECIPIENT];

/// The default database, relative to the home.
const GREYLIST_DB: &str = "var/greylist.sqlite";

fn greylist(home: &ScratchDir, vars: &[(&str, &str)]) -> PluginOutput {
    greylist_with(home, &[], vars)
}

fn greylist_with(home: &ScratchDir, args: &[&str], vars: &[(&str, &str)]) -> PluginOutput {
    run_plugin("greylist.py", args, vars, home.path())
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

/// Runs one SQL statement on the greylist database with Python's sqlite3
/// module (the one the plugin uses), to change the clock of its entries.
fn greylist_sql(db: &Path, statement: &str) {
    let output = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1])\n\
             n = c.execute(sys.argv[2]).rowcount\n\
             c.commit()\n\
             print(n)",
        ])
        .arg(db)
        .arg(statement)
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "{statement}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "1",
        "{statement} changed no single entry"
    );
}

#[test]
fn greylist_refuses_a_new_triple_until_the_delay_has_passed() {
    let home = ScratchDir::new("grey");

    let first = greylist(&home, &TRIPLE);
    assert_prints(&first, GREYLISTED, "first attempt");
    assert_logged(&first, "first attempt");
    assert_prints(
        &greylist(&home, &TRIPLE),
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
    assert_prints(&greylist(&home, &TRIPLE), "", "a triple that passed before");

    // The default database, relative to the working directory.
    assert!(home.path().join(GREYLIST_DB).is_file());
}

#[test]
fn greylist_accepts_a_retry_after_the_default_delay() {
    let home = ScratchDir::new("grey-default");
    assert_prints(&greylist(&home, &TRIPLE), GREYLISTED, "first attempt");

    // Pretend the first attempt was 400 s ago.
    greylist_sql(
        &home.path().join(GREYLIST_DB),
        "UPDATE greylist SET first_seen = first_seen - 400",
    );
    assert_prints(
        &greylist(&home, &TRIPLE),
        "",
        "retry 400 s after the first attempt",
    );
    assert_prints(&greylist(&home, &TRIPLE), "", "a triple that passed before");
}

#[test]
fn greylist_arguments_win_over_the_environment() {
    let home = ScratchDir::new("grey-args");
    let slow = [CLIENT, SENDER, RECIPIENT, ("GREYLIST_DELAY", "0")];
    assert_prints(
        &greylist_with(&home, &["--delay", "3600"], &slow),
        GREYLISTED,
        "first attempt",
    );
    assert_prints(
        &greylist_with(&home, &["--delay=3600"], &slow),
        GREYLISTED,
        "--delay=3600 with GREYLIST_DELAY=0",
    );
    assert_prints(
        &greylist_with(&home, &["--delay", "0"], &TRIPLE),
        "",
        "--delay 0",
    );

    // A bad value or an unknown argument is logged and changes nothing.
    let other = [CLIENT, SENDER, ("SMTPRCPTTO", "other@example.test")];
    let output = greylist_with(&home, &["--delay", "soon", "--colour", "grey"], &other);
    assert_prints(&output, GREYLISTED, "bad arguments, first attempt");
    assert_logged(&output, "'soon'");
    assert_logged(&output, "--colour");
}

#[test]
fn greylist_forgets_a_triple_after_its_expiry_and_keep_time() {
    let home = ScratchDir::new("grey-expire");
    // Not retried within --expire: the retry is a first attempt again.
    assert_prints(
        &greylist_with(&home, &["--expire", "1"], &TRIPLE),
        GREYLISTED,
        "first attempt",
    );
    std::thread::sleep(Duration::from_millis(1500));
    let output = greylist_with(&home, &["--expire", "1", "--delay", "0"], &TRIPLE);
    assert_prints(&output, GREYLISTED, "retry after the expiry");
    assert_logged(&output, "first attempt");

    // Passed, then no mail for longer than --keep: greylisted again.
    assert_prints(
        &greylist_with(&home, &["--delay", "0", "--keep", "1"], &TRIPLE),
        "",
        "retry within the expiry",
    );
    assert_prints(
        &greylist_with(&home, &["--keep", "1"], &TRIPLE),
        "",
        "passed before",
    );
    std::thread::sleep(Duration::from_millis(1500));
    let output = greylist_with(&home, &["--keep", "1"], &TRIPLE);
    assert_prints(&output, GREYLISTED, "mail after the keep time");
    assert_logged(&output, "first attempt");
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
fn greylist_uses_greylist_db_and_the_db_argument() {
    let home = ScratchDir::new("grey-db");
    let vars = [CLIENT, SENDER, RECIPIENT, ("GREYLIST_DB", "state/grey.db")];
    assert_prints(&greylist(&home, &vars), GREYLISTED, "first attempt");
    assert_eq!(
        files_below(&home.path().join("state")),
        [home.path().join("state/grey.db")]
    );
    assert_prints(
        &greylist_with(&home, &["--db", "other.db"], &vars),
        GREYLISTED,
        "another database: a first attempt again",
    );
    assert!(home.path().join("other.db").is_file());
    assert!(
        !home.path().join("var").exists(),
        "the default database was used"
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
    // A database that cannot be created: a path below a regular file.
    fs::write(home.path().join("not-a-directory"), b"").expect("write file");
    let vars = [
        CLIENT,
        SENDER,
        RECIPIENT,
        ("GREYLIST_DB", "not-a-directory/greylist.sqlite"),
    ];
    let output = greylist(&home, &vars);
    assert_prints(&output, "", "unusable GREYLIST_DB");
    assert_logged(&output, "internal error");

    // A Redis server that hangs up at once (a port of our own, so that no
    // other test's server is reached).
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a TCP port");
    let server = listener.local_addr().expect("local address").to_string();
    let hang_up = std::thread::spawn(move || drop(listener.accept()));
    let output = greylist_with(&home, &["--redis", &server], &TRIPLE);
    hang_up.join().expect("the listener thread");
    assert_prints(&output, "", "a Redis server that hangs up");
    assert_logged(&output, "internal error");

    // Not listed under [rcpt]: no recipient to greylist.
    let output = greylist(&home, &[CLIENT, SENDER]);
    assert_prints(&output, "", "SMTPRCPTTO not set");
    assert_logged(&output, "[rcpt]");
}

/// The keys Redis holds (`KEYS *`), from its raw reply.
fn redis_keys(redis: &Redis) -> Vec<String> {
    let reply = redis.command(&["KEYS", "*"]);
    reply
        .split("\r\n")
        .skip(1)
        .filter(|line| !line.is_empty() && !line.starts_with('$'))
        .map(str::to_string)
        .collect()
}

/// The number in a RESP integer reply (`:42\r\n`).
fn redis_integer(reply: &str) -> i64 {
    reply
        .strip_prefix(':')
        .and_then(|rest| rest.trim_end().parse().ok())
        .unwrap_or_else(|| panic!("not an integer reply: {reply:?}"))
}

#[test]
fn greylist_in_redis() {
    let home = ScratchDir::new("grey-redis");
    let Some(redis) = Redis::start(home.path()) else {
        return;
    };
    let server = format!("127.0.0.1:{}", redis.port);
    let in_redis = ["--redis", server.as_str()];

    let first = greylist_with(&home, &in_redis, &TRIPLE);
    assert_prints(&first, GREYLISTED, "first attempt");
    assert_logged(&first, "first attempt");
    assert_prints(
        &greylist_with(&home, &in_redis, &TRIPLE),
        GREYLISTED,
        "retry within the default 300 s",
    );

    // One key, pending, that Redis forgets after the expiry (one day).
    let keys = redis_keys(&redis);
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].starts_with("greylist:"), "{keys:?}");
    assert_eq!(keys[0].len(), "greylist:".len() + 64, "{keys:?}");
    let ttl = redis_integer(&redis.command(&["TTL", &keys[0]]));
    assert!((86_300..=86_400).contains(&ttl), "TTL {ttl}");

    // GREYLIST_REDIS works as --redis does.
    assert_prints(
        &greylist(
            &home,
            &[
                CLIENT,
                SENDER,
                RECIPIENT,
                ("GREYLIST_REDIS", &server),
                ("GREYLIST_DELAY", "0"),
            ],
        ),
        "",
        "retry after GREYLIST_DELAY",
    );
    assert_prints(
        &greylist_with(&home, &in_redis, &TRIPLE),
        "",
        "a triple that passed before",
    );
    assert_eq!(
        redis.command(&["GET", &keys[0]]),
        "$6\r\npassed\r\n",
        "the passed entry"
    );
    let ttl = redis_integer(&redis.command(&["TTL", &keys[0]]));
    assert!(
        (35 * 86_400 - 100..=35 * 86_400).contains(&ttl),
        "TTL {ttl}"
    );

    // A pending entry not retried within --expire is gone.
    let other = [CLIENT, SENDER, ("SMTPRCPTTO", "other@example.test")];
    let expire_soon = ["--redis", server.as_str(), "--expire", "1"];
    assert_prints(
        &greylist_with(&home, &expire_soon, &other),
        GREYLISTED,
        "first attempt, --expire 1",
    );
    std::thread::sleep(Duration::from_millis(1500));
    let output = greylist_with(&home, &["--redis", &server, "--delay", "0"], &other);
    assert_prints(&output, GREYLISTED, "retry after the expiry");
    assert_logged(&output, "first attempt");

    // Nothing was written to the home.
    assert!(
        !home.path().join("var").exists(),
        "SQLite used as well as Redis"
    );
}

/// The smtpplugins of one mail server that greylists with `args`.
fn greylisting_home(args: &str) -> TestHome {
    home_with_plugins(&format!("[rcpt]\n{}\n", plugin_line("greylist.py", args)))
}

#[tokio::test]
async fn greylist_in_a_session_with_sqlite() {
    let home = greylisting_home("--delay 0");
    let mut s = session_from(&home, "192.0.2.7").await;
    rcpts(
        &mut s,
        &[
            ("rcpt@ref.test", reply_of(GREYLISTED)),
            ("rcpt@ref.test", "250 ok"),
            ("other@ref.test", reply_of(GREYLISTED)),
        ],
    )
    .await;
    assert!(home.dir().join(GREYLIST_DB).is_file());

    // A relay client is never greylisted.
    let mut s = home
        .session(&[("TCPREMOTEIP", "192.0.2.7"), ("RELAYCLIENT", "")])
        .await;
    s.greeting().await.code(220);
    rcpts(&mut s, &[("new@ref.test", "250 ok")]).await;
}

/// Two mail servers (two homes) greylisting with one Redis: the client is
/// greylisted by the first, retries at the second too early, then after the
/// delay, and is accepted; from then on both accept the triple at once.
#[tokio::test]
async fn greylist_state_in_redis_is_shared_by_two_servers() {
    let dir = ScratchDir::new("grey-shared");
    let Some(redis) = Redis::start(dir.path()) else {
        return;
    };
    // Long enough that the early retry surely comes before it, even on a
    // busy machine.
    let delay = Duration::from_secs(3);
    let args = format!(
        "--redis 127.0.0.1:{} --delay {}",
        redis.port,
        delay.as_secs()
    );
    let server_a = greylisting_home(&args);
    let server_b = greylisting_home(&args);

    let started = Instant::now();
    let mut a = session_from(&server_a, "192.0.2.7").await;
    rcpts(&mut a, &[("rcpt@ref.test", reply_of(GREYLISTED))]).await;
    let mut b = session_from(&server_b, "192.0.2.8").await;
    rcpts(&mut b, &[("rcpt@ref.test", reply_of(GREYLISTED))]).await;
    assert!(
        started.elapsed() < delay,
        "the early retry came after the delay"
    );

    tokio::time::sleep(delay + Duration::from_millis(200)).await;
    let mut b = session_from(&server_b, "192.0.2.9").await;
    rcpts(
        &mut b,
        &[
            ("rcpt@ref.test", "250 ok"),
            // Another recipient is another triple, at either server.
            ("other@ref.test", reply_of(GREYLISTED)),
        ],
    )
    .await;
    b.mail(
        "sender@example.org",
        &["rcpt@ref.test"],
        "Subject: t\r\n\r\nbody\r\n",
    )
    .await
    .code(250);
    let mut a = session_from(&server_a, "192.0.2.10").await;
    rcpts(&mut a, &[("rcpt@ref.test", "250 ok")]).await;

    assert_eq!(server_b.queued().len(), 1, "server B queued the message");
    for home in [&server_a, &server_b] {
        assert!(
            !home.dir().join("var").exists(),
            "SQLite used as well as Redis"
        );
    }
    assert_eq!(redis_keys(&redis).len(), 2, "two triples in Redis");
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

#[tokio::test]
async fn rcpt_limit_in_a_session() {
    let home = home_with_plugins(&format!("[rcpt]\n{}\n", plugin_line("rcpt-limit.pl", "2")));
    let mut s = session_from(&home, "192.0.2.7").await;
    rcpts(
        &mut s,
        &[
            ("a@ref.test", "250 ok"),
            ("b@ref.test", "250 ok"),
            ("c@ref.test", reply_of(TOO_MANY_RECIPIENTS)),
        ],
    )
    .await;
}

// ---------------------------------------------------------------------------
// check-sender.sh ([mail])

const NEEDS_DOMAIN: &str = "E553 sorry, the sender address needs a domain (#5.1.7)\n";
const EMPTY_LOCAL_PART: &str = "E553 sorry, the sender address has an empty local part (#5.1.7)\n";
const MALFORMED_DOMAIN: &str = "E553 sorry, the sender domain is malformed (#5.1.7)\n";
const SENDER_LISTED: &str = "E550 sorry, mail from this sender is refused here (#5.7.1)\n";
const NO_BOUNCES: &str = "E550 sorry, bounces are not accepted here (#5.7.1)\n";

fn check_sender(args: &[&str], vars: &[(&str, &str)]) -> PluginOutput {
    let home = ScratchDir::new("sender");
    fs::write(
        home.path().join("badsenders"),
        "# refused senders\n\n  *@*.Example.COM \t\nnoreply-*@example.net\nbounce?@example.org\n",
    )
    .expect("write the list");
    run_plugin("check-sender.sh", args, vars, home.path())
}

#[test]
fn check_sender_refuses_malformed_addresses() {
    let long_domain = format!("user@{}.example", "a".repeat(250));
    let cases: &[(&str, &str)] = &[
        ("someone", NEEDS_DOMAIN),
        ("someone@", NEEDS_DOMAIN),
        ("@example.org", EMPTY_LOCAL_PART),
        ("user@localhost", MALFORMED_DOMAIN),
        ("user@example..org", MALFORMED_DOMAIN),
        ("user@.example.org", MALFORMED_DOMAIN),
        ("user@example.org.", MALFORMED_DOMAIN),
        ("user@-example.org", MALFORMED_DOMAIN),
        ("user@example-.org", MALFORMED_DOMAIN),
        ("user@example.-org", MALFORMED_DOMAIN),
        ("user@exa_mple.org", MALFORMED_DOMAIN),
        ("user@exa mple.org", MALFORMED_DOMAIN),
        ("user@example.org;", MALFORMED_DOMAIN),
        ("user@[]", MALFORMED_DOMAIN),
        ("user@[192.0.2.1;]", MALFORMED_DOMAIN),
        (long_domain.as_str(), MALFORMED_DOMAIN),
        // Acceptable.
        ("user@example.org", ""),
        ("User.Name+tag@Mail.Example.ORG", ""),
        ("user@mx-1.example.org", ""),
        ("user@[192.0.2.1]", ""),
        ("user@[IPv6:2001:db8::1]", ""),
        ("\"odd@local\"@example.org", ""),
        ("user@bücher.example", ""),
        ("user@xn--bcher-kva.example", ""),
    ];
    for (sender, expected) in cases {
        let output = check_sender(&[], &[("SMTPMAILFROM", sender)]);
        assert_prints(&output, expected, &format!("MAIL FROM:<{sender}>"));
    }
}

#[test]
fn check_sender_accepts_bounces_unless_told_not_to() {
    assert_prints(
        &check_sender(&[], &[("SMTPMAILFROM", "")]),
        "",
        "null sender",
    );
    assert_prints(
        &check_sender(&["-n"], &[("SMTPMAILFROM", "")]),
        NO_BOUNCES,
        "null sender with -n",
    );
    assert_prints(
        &check_sender(&["-n"], &[("SMTPMAILFROM", "user@example.org")]),
        "",
        "a sender with -n",
    );
}

#[test]
fn check_sender_refuses_senders_matching_the_list() {
    let cases: &[(&str, &str)] = &[
        ("user@news.example.com", SENDER_LISTED),
        ("USER@A.B.EXAMPLE.com", SENDER_LISTED),
        ("noreply-42@example.net", SENDER_LISTED),
        ("bounce7@example.org", SENDER_LISTED),
        // Not matching.
        ("user@example.com", ""),
        ("noreply@example.net", ""),
        ("bounce77@example.org", ""),
        ("user@news.example.com.example", ""),
    ];
    for (sender, expected) in cases {
        let output = check_sender(&["-f", "badsenders"], &[("SMTPMAILFROM", sender)]);
        assert_prints(&output, expected, &format!("MAIL FROM:<{sender}>"));
    }
    // The syntax is checked first.
    assert_prints(
        &check_sender(&["-f", "badsenders"], &[("SMTPMAILFROM", "x@y")]),
        MALFORMED_DOMAIN,
        "malformed and not listed",
    );
}

#[test]
fn check_sender_lets_relay_clients_use_local_forms() {
    let relay = ("RELAYCLIENT", "");
    for sender in ["root", "user@localhost"] {
        assert_prints(
            &check_sender(&[], &[("SMTPMAILFROM", sender), relay]),
            "",
            &format!("relay client, MAIL FROM:<{sender}>"),
        );
    }
    // The list and -n still apply.
    assert_prints(
        &check_sender(
            &["-f", "badsenders"],
            &[("SMTPMAILFROM", "a@news.example.com"), relay],
        ),
        SENDER_LISTED,
        "relay client, listed sender",
    );
    assert_prints(
        &check_sender(&["-n"], &[("SMTPMAILFROM", ""), relay]),
        NO_BOUNCES,
        "relay client, -n",
    );
}

#[test]
fn check_sender_survives_bad_settings() {
    let output = check_sender(
        &["-f", "no-such-file"],
        &[("SMTPMAILFROM", "user@example.org")],
    );
    assert_prints(&output, "", "missing list");
    assert_logged(&output, "no-such-file");

    let output = check_sender(&["-x"], &[("SMTPMAILFROM", "user@example.org")]);
    assert_prints(&output, "", "unknown option");
    assert_logged(&output, "usage");

    let output = check_sender(&[], &[]);
    assert_prints(&output, "", "SMTPMAILFROM not set");
    assert_logged(&output, "[mail]");
}

#[tokio::test]
async fn check_sender_in_a_session() {
    let home = home_with_plugins(&format!(
        "[mail]\n{}\n",
        plugin_line("check-sender.sh", "-f control/badsenders -n")
    ));
    home.control("badsenders", "*@*.example.com\n");
    let mut s = session_from(&home, "192.0.2.7").await;
    for (sender, reply) in [
        ("", reply_of(NO_BOUNCES)),
        ("someone", reply_of(NEEDS_DOMAIN)),
        ("someone@example..org", reply_of(MALFORMED_DOMAIN)),
        ("someone@news.example.com", reply_of(SENDER_LISTED)),
    ] {
        s.cmd(&format!("MAIL FROM:<{sender}>")).await.all(&[reply]);
    }
    s.mail(
        "someone@example.org",
        &["rcpt@ref.test"],
        "Subject: t\r\n\r\nbody\r\n",
    )
    .await
    .code(250);
    assert_eq!(home.queued().len(), 1);
}

// ---------------------------------------------------------------------------
// rbl.pl ([mail] or [rcpt])

/// The records of the test DNSBLs: zen.example lists 127.0.0.2 (and answers
/// 127.3.0.0's lookups with a "query refused" code), bl.example lists
/// 127.0.0.2, 127.0.0.4 and 2001:db8::1; other names in both zones do not
/// exist. Other zones are refused: there is no upstream server.
const DNSBL_RECORDS: &[&str] = &[
    "--local=/zen.example/",
    "--local=/bl.example/",
    "--address=/2.0.0.127.zen.example/127.0.0.2",
    "--address=/3.0.0.127.zen.example/127.255.255.254",
    "--address=/2.0.0.127.bl.example/127.0.0.3",
    "--address=/4.0.0.127.bl.example/127.0.0.10",
    "--address=/1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.example/127.0.0.4",
];

/// dnsmasq with [`DNSBL_RECORDS`], or `None` after printing why not.
fn dnsbl_server() -> Option<DnsServer> {
    if find_program(&["/usr/sbin/dnsmasq"], "dnsmasq").is_none() {
        eprintln!("SKIP: dnsmasq is not installed (Debian package dnsmasq-base)");
        return None;
    }
    Some(DnsServer::start(DNSBL_RECORDS))
}

fn rbl(args: &[&str], vars: &[(&str, &str)]) -> PluginOutput {
    let home = ScratchDir::new("rbl");
    run_plugin("rbl.pl", args, vars, home.path())
}

#[test]
fn rbl_refuses_listed_clients() {
    let Some(dns) = dnsbl_server() else {
        return;
    };
    let server = format!("127.0.0.1:{}", dns.port);
    let zen = ["-z", "zen.example", "-s", server.as_str()];
    let both = ["-z", "zen.example", "-z", "bl.example", "-s", &server];
    let bl_first = ["-s", server.as_str(), "-z", "bl.example", "-zzen.example"];
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &zen,
            "127.0.0.2",
            "SRBL_LISTED=zen.example\n\
             E554 sorry, your address 127.0.0.2 is listed in zen.example (#5.7.1)\n",
        ),
        (&zen, "127.0.0.5", "SRBL_LISTED=\n"),
        (&zen, "192.0.2.7", "SRBL_LISTED=\n"),
        // An IPv4-mapped IPv6 address is looked up as IPv4.
        (
            &zen,
            "::ffff:127.0.0.2",
            "SRBL_LISTED=zen.example\n\
             E554 sorry, your address ::ffff:127.0.0.2 is listed in zen.example (#5.7.1)\n",
        ),
        // The zones in order; the first that lists the client decides.
        (
            &both,
            "127.0.0.4",
            "SRBL_LISTED=bl.example\n\
             E554 sorry, your address 127.0.0.4 is listed in bl.example (#5.7.1)\n",
        ),
        (
            &bl_first,
            "127.0.0.2",
            "SRBL_LISTED=bl.example\n\
             E554 sorry, your address 127.0.0.2 is listed in bl.example (#5.7.1)\n",
        ),
        // IPv6: 32 reversed nibbles.
        (
            &both,
            "2001:db8::1",
            "SRBL_LISTED=bl.example\n\
             E554 sorry, your address 2001:db8::1 is listed in bl.example (#5.7.1)\n",
        ),
        (&both, "2001:db8::2", "SRBL_LISTED=\n"),
    ];
    for (args, client, expected) in cases {
        assert_prints(
            &rbl(args, &[("TCPREMOTEIP", client)]),
            expected,
            &format!("{client} with {args:?}"),
        );
    }

    // An answer outside 127.0.0.0/8 or in 127.255.255.0/24 lists nobody.
    let output = rbl(&zen, &[("TCPREMOTEIP", "127.0.0.3")]);
    assert_prints(&output, "SRBL_LISTED=\n", "a 'query refused' answer");
    assert_logged(&output, "ignored the answer 127.255.255.254");
}

#[test]
fn rbl_marks_instead_of_refusing_with_m() {
    let Some(dns) = dnsbl_server() else {
        return;
    };
    let server = format!("127.0.0.1:{}", dns.port);
    let mark = ["-m", "-z", "zen.example", "-s", server.as_str()];
    assert_prints(
        &rbl(&mark, &[("TCPREMOTEIP", "127.0.0.2")]),
        "SRBL_LISTED=zen.example\nHX-RBL: 127.0.0.2 is listed in zen.example\n",
        "listed, -m",
    );
    assert_prints(
        &rbl(&mark, &[("TCPREMOTEIP", "127.0.0.5")]),
        "SRBL_LISTED=\n",
        "not listed, -m",
    );
}

#[test]
fn rbl_looks_up_once_per_connection_and_never_for_relay_clients() {
    // No DNS server at all: a lookup would fail and list nobody.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    let server = silent.local_addr().expect("local address").to_string();
    let args = ["-z", "zen.example", "-s", server.as_str(), "-t", "1"];
    let client = ("TCPREMOTEIP", "127.0.0.2");

    assert_prints(
        &rbl(&args, &[client, ("RBL_LISTED", "zen.example")]),
        "E554 sorry, your address 127.0.0.2 is listed in zen.example (#5.7.1)\n",
        "listed by an earlier run",
    );
    assert_prints(
        &rbl(&args, &[client, ("RBL_LISTED", "")]),
        "",
        "not listed by an earlier run",
    );
    assert_prints(
        &rbl(&args, &[client, ("RELAYCLIENT", "")]),
        "",
        "relay client",
    );
}

#[test]
fn rbl_takes_a_failed_lookup_as_not_listed() {
    let client = ("TCPREMOTEIP", "127.0.0.2");

    // A server that never answers: the plugin gives up after -t.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    let server = silent.local_addr().expect("local address").to_string();
    let started = Instant::now();
    let output = rbl(&["-z", "zen.example", "-s", &server, "-t", "1"], &[client]);
    assert_prints(&output, "SRBL_LISTED=\n", "no answer");
    assert_logged(&output, "no answer");
    assert!(started.elapsed() < Duration::from_secs(10));

    // REFUSED for a zone the server does not serve; the next zone still counts.
    let Some(dns) = dnsbl_server() else {
        return;
    };
    let server = format!("127.0.0.1:{}", dns.port);
    let output = rbl(
        &["-z", "other.example", "-z", "zen.example", "-s", &server],
        &[client],
    );
    assert_prints(
        &output,
        "SRBL_LISTED=zen.example\n\
         E554 sorry, your address 127.0.0.2 is listed in zen.example (#5.7.1)\n",
        "a refusing zone, then a listing one",
    );
    assert_logged(&output, "error code 5");
}

#[test]
fn rbl_survives_bad_settings() {
    let client = ("TCPREMOTEIP", "127.0.0.2");
    for args in [
        &[][..],
        &["-s", "127.0.0.1"][..],
        &["-z", "zen.example", "-s", "resolver.example"][..],
        &["-z", "zen.example", "-s", "127.0.0.1:99999"][..],
        &["-z", "zen.example", "--bogus"][..],
        &["-z", "zen.example", "extra"][..],
    ] {
        let output = rbl(args, &[client]);
        assert_prints(&output, "", &format!("{args:?}"));
        assert!(!output.stderr.is_empty(), "{args:?} was not logged");
    }
    let output = rbl(
        &["-z", "zen.example", "-s", "127.0.0.1:9"],
        &[("TCPREMOTEIP", "unknown")],
    );
    assert_prints(&output, "", "TCPREMOTEIP=unknown");
    assert_logged(&output, "not an IP address");
}

#[tokio::test]
async fn rbl_in_a_session() {
    let Some(dns) = dnsbl_server() else {
        return;
    };
    let args = format!("-z zen.example -s 127.0.0.1:{}", dns.port);
    let home = home_with_plugins(&format!("[rcpt]\n{}\n", plugin_line("rbl.pl", &args)));
    let listed = "554 sorry, your address 127.0.0.2 is listed in zen.example (#5.7.1)";

    let mut clean = session_from(&home, "127.0.0.5").await;
    clean
        .mail(
            "a@example.org",
            &["rcpt@ref.test"],
            "Subject: t\r\n\r\nbody\r\n",
        )
        .await
        .code(250);

    let mut s = session_from(&home, "127.0.0.2").await;
    s.cmd("MAIL FROM:<a@example.org>").await.all(&["250 ok"]);
    s.cmd("RCPT TO:<rcpt@ref.test>").await.all(&[listed]);
    // The verdict is kept for the connection: with the DNS server gone, the
    // next RCPT is still refused.
    drop(dns);
    s.cmd("RCPT TO:<other@ref.test>").await.all(&[listed]);
    assert_eq!(home.queued().len(), 1, "only the clean client's message");
}

#[tokio::test]
async fn rbl_marks_the_message_in_a_session() {
    let Some(dns) = dnsbl_server() else {
        return;
    };
    let args = format!("-m -z zen.example -s 127.0.0.1:{}", dns.port);
    let home = home_with_plugins(&format!("[rcpt]\n{}\n", plugin_line("rbl.pl", &args)));
    let mut s = session_from(&home, "127.0.0.2").await;
    s.mail(
        "a@example.org",
        &["one@ref.test", "two@ref.test"],
        "Subject: t\r\n\r\nbody\r\n",
    )
    .await
    .code(250);

    let queued = home.queued();
    assert_eq!(queued.len(), 1);
    let (message, _, environment) = &queued[0];
    let message = String::from_utf8_lossy(message);
    assert_eq!(
        message
            .matches("X-RBL: 127.0.0.2 is listed in zen.example\n")
            .count(),
        1,
        "one header for two recipients:\n{message}"
    );
    assert!(
        environment
            .lines()
            .any(|line| line == "RBL_LISTED=zen.example"),
        "the queue program's environment:\n{environment}"
    );
}

// ---------------------------------------------------------------------------
// c/rcpt-check.c ([rcpt])

const TOO_LONG: &str = "E553 sorry, that address is too long (#5.1.3)\n";
const NO_MAILBOX: &str = "E550 sorry, no mailbox here by that name (#5.1.1)\n";

/// The C example compiled with `cc` into `dir`, or `None` after printing
/// why not.
fn compile_rcpt_check(dir: &Path) -> Option<PathBuf> {
    let program = dir.join("rcpt-check");
    let output = match Command::new("cc")
        .args(["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&program)
        .arg(source_path(C_PLUGIN_SOURCE))
        .output()
    {
        Ok(output) => output,
        Err(error) => {
            eprintln!("SKIP: the C example needs a C compiler, cc: {error}");
            return None;
        }
    };
    assert!(
        output.status.success(),
        "cc {C_PLUGIN_SOURCE} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(program)
}

#[test]
fn rcpt_check_refuses_long_and_listed_addresses() {
    let home = ScratchDir::new("rcpt-check");
    let Some(program) = compile_rcpt_check(home.path()) else {
        return;
    };
    fs::write(
        home.path().join("badrcptto"),
        "# given up\n\nformer@example.test\n  @Spam-Trap.Example \t\n",
    )
    .expect("write the list");

    let local_64 = format!("{}@example.test", "l".repeat(64));
    let local_65 = format!("{}@example.test", "l".repeat(65));
    let domain_255 = format!("u@{}", "d".repeat(255));
    let address_254 = format!("{}@{}.test", "l".repeat(64), "d".repeat(184));
    let address_255 = format!("{}@{}.test", "l".repeat(64), "d".repeat(185));
    let cases: &[(&str, &str)] = &[
        ("user@example.test", ""),
        ("postmaster", ""),
        (local_64.as_str(), ""),
        (local_65.as_str(), TOO_LONG),
        (domain_255.as_str(), TOO_LONG),
        (address_254.as_str(), ""),
        (address_255.as_str(), TOO_LONG),
        ("former@example.test", NO_MAILBOX),
        ("Former@EXAMPLE.test", NO_MAILBOX),
        ("anyone@spam-trap.example", NO_MAILBOX),
        ("anyone@sub.spam-trap.example", ""),
        ("former2@example.test", ""),
    ];
    for (recipient, expected) in cases {
        let output = run_program(
            &program,
            &["-f", "badrcptto"],
            &[("SMTPRCPTTO", recipient)],
            home.path(),
        );
        assert_prints(&output, expected, &format!("RCPT TO:<{recipient}>"));
    }

    // Without -f only the lengths count.
    let output = run_program(
        &program,
        &[],
        &[("SMTPRCPTTO", "former@example.test")],
        home.path(),
    );
    assert_prints(&output, "", "no list");
}

#[test]
fn rcpt_check_survives_bad_settings() {
    let home = ScratchDir::new("rcpt-check-bad");
    let Some(program) = compile_rcpt_check(home.path()) else {
        return;
    };
    let recipient = ("SMTPRCPTTO", "user@example.test");
    let output = run_program(&program, &["-f", "no-such-file"], &[recipient], home.path());
    assert_prints(&output, "", "missing list");
    assert_logged(&output, "no-such-file");

    let output = run_program(&program, &["-x"], &[recipient], home.path());
    assert_prints(&output, "", "unknown option");
    assert_logged(&output, "usage");

    let output = run_program(&program, &[], &[], home.path());
    assert_prints(&output, "", "SMTPRCPTTO not set");
    assert_logged(&output, "[rcpt]");
}

#[tokio::test]
async fn rcpt_check_in_a_session() {
    let scratch = ScratchDir::new("rcpt-check-session");
    let Some(program) = compile_rcpt_check(scratch.path()) else {
        return;
    };
    let home = home_with_plugins(&format!(
        "[rcpt]\n{}\n",
        quoted_line(&program, "-f control/badrcptto")
    ));
    home.control("badrcptto", "former@ref.test\n");
    let long = format!("{}@ref.test", "l".repeat(65));
    let mut s = session_from(&home, "192.0.2.7").await;
    rcpts(
        &mut s,
        &[
            ("user@ref.test", "250 ok"),
            ("former@ref.test", reply_of(NO_MAILBOX)),
            (long.as_str(), reply_of(TOO_LONG)),
        ],
    )
    .await;
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
    let source = fs::read_to_string(source_path(C_PLUGIN_SOURCE)).expect("read the C example");
    assert!(
        source.contains("Hook:"),
        "{C_PLUGIN_SOURCE} does not say which hook it is for"
    );
}

/// The words of `text` that name a plugin path: under `plugins-examples/`,
/// or under a `plugins/` directory of the home (which nothing ships).
fn named_plugin_paths(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || "`'\"()<>,;|".contains(c))
        .map(|word| word.trim_end_matches(['.', ':']))
        .filter(|word| word.starts_with("plugins-examples/") || word.starts_with("plugins/"))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_plugin_the_documents_name_ships() {
    let mut named = Vec::new();
    for document in [
        "README.md",
        "plugins-examples/README.md",
        "samples/smtpplugins",
        "control/smtpplugins",
    ] {
        let text = fs::read_to_string(source_path(document)).expect("read the document");
        for path in named_plugin_paths(&text) {
            // A compiled example ships as its source.
            let ships = source_path(&path).exists() || source_path(&format!("{path}.c")).exists();
            assert!(ships, "{document} names {path}, which does not ship");
            named.push(path);
        }
    }
    // Each example is named somewhere, so none is undocumented.
    for plugin in EXAMPLE_PLUGINS {
        let path = format!("plugins-examples/{plugin}");
        assert!(named.contains(&path), "no document names {path}");
    }
    let compiled = C_PLUGIN_SOURCE.trim_end_matches(".c");
    assert!(
        named.iter().any(|path| path == compiled),
        "no document names {compiled}"
    );
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
