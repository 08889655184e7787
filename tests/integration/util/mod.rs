//! Test helpers: a throw-away home directory, an in-memory session driver
//! over `tokio::io::duplex`, and runners for the real binary (piped stdio,
//! under tcpserver, as a daemon).

#![allow(dead_code)]

pub mod client;
pub mod driver;
pub mod mta;
pub mod process;

use spp_smtpd::config::Config;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub use driver::Driver;

/// The test qmail-queue: saves the message, the envelope and the
/// environment under `$home/qq/<n>/`, then exits with the status in the
/// file `$home/qq-exit` (default 0). Reads fd 0 to EOF before fd 1, as the
/// real one does.
pub const TEST_QMAIL_QUEUE: &str = r#"#!/bin/sh
n=$$
dir="qq/$n"
mkdir -p "$dir"
cat > "$dir/message"
cat <&1 > "$dir/envelope"
env > "$dir/environment"
code=0
[ -f qq-exit ] && code=$(cat qq-exit)
exit "$code"
"#;

/// A home directory under the system temp dir, removed when dropped.
pub struct TestHome {
    /// Absolute path of the home.
    pub path: PathBuf,
}

impl TestHome {
    /// A home with `me` = `mx.ref.test`, rcpthosts `ref.test`, and an
    /// empty `smtpplugins` (plugins on, none configured).
    pub fn new() -> TestHome {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "spp-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(path.join("control")).unwrap();
        let home = TestHome { path };
        home.control("me", "mx.ref.test\n");
        home.control("rcpthosts", "ref.test\n");
        home.control("smtpplugins", "");
        home
    }

    /// Writes a file relative to the home, creating directories.
    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        p
    }

    /// Writes `control/<name>`.
    pub fn control(&self, name: &str, content: impl AsRef<[u8]>) {
        self.write(&format!("control/{name}"), content);
    }

    /// Removes `control/<name>`.
    pub fn remove_control(&self, name: &str) {
        fs::remove_file(self.path.join("control").join(name)).unwrap();
    }

    /// Writes an executable script `plugins/<name>`; returns its relative path.
    pub fn plugin(&self, name: &str, script: &str) -> String {
        let rel = format!("plugins/{name}");
        let p = self.write(&rel, script);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        rel
    }

    /// Writes `control/smtpplugins`.
    pub fn smtpplugins(&self, content: &str) {
        self.control("smtpplugins", content);
    }

    /// A one-plugin configuration: `[section]` with a sh script printing
    /// `output` (a printf format).
    pub fn plugin_printing(&self, section: &str, output: &str) {
        let name = format!("{section}-plugin");
        let rel = self.plugin(&name, &format!("#!/bin/sh\nprintf '{output}'\n"));
        self.smtpplugins(&format!("[{section}]\n{rel}\n"));
    }

    /// Installs the test qmail-queue as `bin/qmail-queue`.
    pub fn install_qmail_queue(&self) {
        let p = self.write("bin/qmail-queue", TEST_QMAIL_QUEUE);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// The runs of the test qmail-queue: (message, envelope, environment).
    pub fn queued(&self) -> Vec<(Vec<u8>, Vec<u8>, String)> {
        let mut dirs: Vec<PathBuf> = match fs::read_dir(self.path.join("qq")) {
            Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
            Err(_) => return Vec::new(),
        };
        dirs.sort_by_key(|d| fs::metadata(d).and_then(|m| m.modified()).ok());
        dirs.iter()
            .map(|d| {
                (
                    fs::read(d.join("message")).unwrap_or_default(),
                    fs::read(d.join("envelope")).unwrap_or_default(),
                    fs::read_to_string(d.join("environment")).unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Messages in `Maildir/new`, oldest first by name.
    pub fn maildir(&self) -> Vec<Vec<u8>> {
        self.maildir_in("Maildir")
    }

    /// Messages in `<dir>/new`, by name.
    pub fn maildir_in(&self, dir: &str) -> Vec<Vec<u8>> {
        let mut names: Vec<PathBuf> = match fs::read_dir(self.path.join(dir).join("new")) {
            Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
            Err(_) => return Vec::new(),
        };
        names.sort();
        names.iter().map(|p| fs::read(p).unwrap()).collect()
    }

    /// Files left in `Maildir/tmp` (should be none).
    pub fn maildir_tmp_count(&self) -> usize {
        fs::read_dir(self.path.join("Maildir/tmp"))
            .map(|rd| rd.count())
            .unwrap_or(0)
    }

    /// Loads the configuration snapshot.
    pub fn config(&self) -> Arc<Config> {
        Arc::new(Config::load(&self.path).expect("test configuration loads"))
    }

    /// Starts an in-memory session with the given environment (on top of
    /// PATH) and reads nothing yet.
    pub async fn session(&self, env: &[(&str, &str)]) -> Driver {
        Driver::start(self.config(), env).await
    }

    /// The home path as a string.
    pub fn dir(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestHome {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Removes the variable `Received:` date part so messages can be compared.
pub fn strip_received_date(msg: &[u8]) -> String {
    let s = String::from_utf8_lossy(msg).into_owned();
    let mut out = String::new();
    for line in s.split_inclusive('\n') {
        if line.starts_with("  by ") {
            if let Some(i) = line.find("; ") {
                out.push_str(&line[..i]);
                out.push_str("; DATE\n");
                continue;
            }
        }
        out.push_str(line);
    }
    out
}

/// A test checkpassword program: `alice`/`secret` is accepted (also by
/// CRAM-MD5), `tempfail` gets 111, anything else 1. Reads fd 3 as the
/// qmail convention says.
pub const TEST_CHECKPASSWORD: &str = r#"#!/usr/bin/env python3
import hmac, os, sys
data = b""
while True:
    chunk = os.read(3, 4096)
    if not chunk:
        break
    data += chunk
user, secret, stamp = data.split(b"\0")[:3]
if user == b"tempfail":
    sys.exit(111)
if user != b"alice":
    sys.exit(1)
if secret == b"secret":
    sys.exit(0)
expected = hmac.new(b"secret", stamp, "md5").hexdigest().encode()
sys.exit(0 if hmac.compare_digest(secret, expected) else 1)
"#;

impl TestHome {
    /// A self-signed certificate for `mx.ref.test` (P-256) in
    /// `control/servercert.pem`, made with the openssl CLI.
    pub fn install_cert(&self) {
        let pem = self.make_cert("mx.ref.test");
        self.control("servercert.pem", pem);
    }

    /// A self-signed certificate and key for `name`, as one PEM.
    pub fn make_cert(&self, name: &str) -> Vec<u8> {
        let dir = self.path.join("certgen").join(name);
        fs::create_dir_all(&dir).unwrap();
        let status = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
            ])
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .args(["-days", "2", "-subj"])
            .arg(format!("/CN={name}"))
            .arg("-addext")
            .arg(format!("subjectAltName=DNS:{name}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl could not make a certificate");
        let mut pem = fs::read(dir.join("cert.pem")).unwrap();
        pem.extend(fs::read(dir.join("key.pem")).unwrap());
        pem
    }

    /// Installs the test checkpassword as `bin/checkpassword`; returns its
    /// relative path.
    pub fn install_checkpassword(&self) -> String {
        let p = self.write("bin/checkpassword", TEST_CHECKPASSWORD);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        "bin/checkpassword".into()
    }
}
