//! One validator for `check`, `serve`'s start and SIGHUP: a configuration
//! `check` calls broken is refused by the daemon too, with every problem
//! as file:line; warnings are reported and the configuration is used.

use crate::daemon::{log, wait_log};
use crate::util::client::Client;
use crate::util::process::{run_spp, Finished, Server};
use crate::util::TestHome;

const SIGHUP: i32 = 1;

/// Breaks the home three ways `check` reports: a missing plugin (line 2),
/// an unknown section (line 3), a non-numeric databytes.
fn break_three_ways(home: &TestHome) {
    home.smtpplugins("[rcpt]\nplugins/missing\n[Mail]\n:echo N\n");
    home.control("databytes", "abc\n");
}

/// The three problems of [`break_three_ways`], in file order.
fn three_problems(home: &TestHome) -> [String; 3] {
    let c = home.dir().join("control");
    let c = c.display();
    [
        format!("{c}/databytes:1: does not start with a number"),
        format!("{c}/smtpplugins:2: plugin "),
        format!("{c}/smtpplugins:3: unknown section [Mail]"),
    ]
}

/// `serve` on a free port with `args`; it must exit (not start).
fn serve_refused(home: &TestHome, args: &[&str]) -> Finished {
    let listen = format!("127.0.0.1:{}", crate::util::process::free_port());
    let mut all = vec!["serve", "--listen", &listen];
    all.extend_from_slice(args);
    run_spp(home, &all)
}

#[tokio::test]
async fn sighup_refuses_what_check_refuses_logs_every_problem_and_keeps_the_old_snapshot() {
    let home = TestHome::new();
    // A CRLF rcpthosts is only a warning: the daemon starts and says so.
    home.control("rcpthosts", "ref.test\r\nref.test\n");
    let server = Server::daemon_with(&home, &[], &[]);
    wait_log(&home, "rcpthosts:1: warning: ends with CR").await;
    wait_log(&home, "INFO ready").await;
    break_three_ways(&home);
    server.signal(SIGHUP);
    let problems = three_problems(&home);
    for p in &problems {
        wait_log(&home, p).await;
    }
    let text = log(&home);
    assert!(!text.contains("reloaded configuration"), "{text}");
    // Logged in file and line order, each as a refusal.
    let at: Vec<usize> = problems.iter().map(|p| text.find(p).unwrap()).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
    for p in &problems {
        let line = text.lines().find(|l| l.contains(p.as_str())).unwrap();
        assert!(
            line.contains("reload refused, keeping the running configuration"),
            "{line}"
        );
    }
    // The running snapshot stays: no plugin at RCPT, so no 451.
    let mut c = Client::connect(server.port).await;
    c.line().await.unwrap();
    c.cmd("HELO x").await;
    assert!(c.cmd("MAIL FROM:<a@b.test>").await.starts_with("250"));
    let rcpt = c.cmd("RCPT TO:<bob@ref.test>").await;
    assert!(rcpt.starts_with("250"), "{rcpt}");
}

#[test]
fn serve_refuses_to_start_and_lists_every_problem() {
    let home = TestHome::new();
    break_three_ways(&home);
    let out = serve_refused(&home, &[]);
    assert_eq!(out.code, 78, "{}", out.stderr);
    for p in three_problems(&home) {
        assert!(out.stderr.contains(&p), "{p}\n{}", out.stderr);
    }
    // `check` finds the same three.
    let check = run_spp(&home, &["check"]);
    assert_eq!(check.code, 1);
    for p in three_problems(&home) {
        assert!(check.stdout.contains(&p), "{p}\n{}", check.stdout);
    }
}

#[test]
fn serve_without_smtpplugins_refuses_to_start_and_says_why() {
    let home = TestHome::new();
    home.remove_control("smtpplugins");
    let out = serve_refused(&home, &[]);
    assert_eq!(out.code, 78, "{}", out.stderr);
    let want = format!(
        "{}: cannot read",
        home.dir().join("control/smtpplugins").display()
    );
    assert!(out.stderr.contains(&want), "{}", out.stderr);
    assert!(out.stderr.contains("an empty file means no plugins"));
}

#[test]
fn check_validates_a_rules_file_named_on_the_command_line() {
    let home = TestHome::new();
    home.write("rules/smtp", "127.:allow\n10.:perhaps\n");
    let out = run_spp(&home, &["check", "--rules", "rules/smtp"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let want = format!("{}:2: ", home.dir().join("rules/smtp").display());
    assert!(out.stdout.contains(&want), "{}", out.stdout);
    // The same file, fixed, passes.
    home.write("rules/smtp", "127.:allow\n");
    let out = run_spp(&home, &["check", "--rules", "rules/smtp"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
}

#[test]
fn warnings_alone_pass_check() {
    let home = TestHome::new();
    home.control("me", "mx.ref.test\r\n");
    let out = run_spp(&home, &["check"]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stdout.contains("me:1: warning: ends with CR"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("1 warning(s)"), "{}", out.stdout);
}
