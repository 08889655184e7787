//! What the fuzz targets share: each target is one parser fed arbitrary
//! bytes, checked for the invariants its module promises (no panic, and
//! the properties below).

use spp_smtpd::protocol::{address, command, data, encode, enhanced, reply};

/// SMTP command lines, BDAT arguments and reply lines.
pub fn command_line(input: &[u8]) {
    let cmd = command::Command::parse(command::strip_line_end(input));
    assert!(!cmd.arg.contains(&0), "NUL reached an argument");
    if let Some((_, _)) = command::parse_bdat(input) {
        assert!(input.iter().any(u8::is_ascii_digit));
    }
    if let Some((code, _, text)) = reply::parse_line(input) {
        assert!((100..1000).contains(&code));
        assert!(text.len() + 3 <= input.len());
    }
    for ctx in [
        enhanced::ReplyContext::Mail,
        enhanced::ReplyContext::Rcpt,
        enhanced::ReplyContext::Data,
        enhanced::ReplyContext::Other,
        enhanced::ReplyContext::Exempt,
    ] {
        let out = enhanced::annotate(input, ctx);
        assert!(out.len() >= input.len());
    }
}

/// MAIL/RCPT arguments, the plain-form rule and IDNA forms.
pub fn envelope_address(input: &[u8]) {
    if let Some(a) = address::parse(input, |_| true, Some(b"me.example")) {
        assert!(a.len() <= address::MAX_ADDRESS_LEN);
        let _ = address::is_plain_form(&a);
    }
    for form in address::idna_forms(input) {
        assert!(!form.is_empty());
    }
}

/// The DATA decoder (split at every tenth byte), the BDAT decoder, the
/// filter of forged Authentication-Results: fields, and the encoder that
/// turns a stored message back into DATA.
pub fn message_body(input: &[u8]) {
    let mut d = data::DataDecoder::default();
    let mut out = Vec::new();
    let mut at = 0;
    while at < input.len() {
        let end = (at + 1 + input[at] as usize % 10).min(input.len());
        let (n, progress) = d.feed(&input[at..end], &mut out);
        assert!(n <= end - at);
        at += n;
        if progress != data::Progress::NeedMore {
            break;
        }
    }
    assert_eq!(d.size, out.len() as u64);
    let mut chunked = data::DataDecoder::chunked();
    let mut stored = Vec::new();
    let (n, _) = chunked.feed(input, &mut stored);
    assert_eq!(n, input.len());
    chunked.finish_chunks(&mut stored);
    if !chunked.bare_cr && !chunked.bare_lf {
        assert!(!stored.contains(&b'\r'));
        assert!(stored.is_empty() || stored.ends_with(b"\n"));
    }
    // Removing forged Authentication-Results: fields gives the same
    // result whatever the split, and never adds bytes.
    let filtered = |split: usize| {
        let mut f = spp_smtpd::protocol::header_filter::HeaderFilter::new(b"mx.example");
        let mut out = Vec::new();
        for part in input.chunks(split) {
            f.feed(part, &mut out);
        }
        f.finish(&mut out);
        out
    };
    let whole = filtered(input.len().max(1));
    assert!(whole.len() <= input.len());
    assert_eq!(
        whole,
        filtered(1 + input.first().copied().unwrap_or(0) as usize % 7)
    );
    let mut enc = encode::DataEncoder::default();
    let mut wire = Vec::new();
    enc.feed(input, &mut wire);
    enc.end(&mut wire);
    assert!(wire.ends_with(b".\r\n"));
    assert!(wire.windows(2).all(|w| (w[0] == b'\r') == (w[1] == b'\n')));
}

/// What plugins print, and smtpplugins files with their `#spp:` options.
pub fn plugin_text(input: &[u8]) {
    for line in input.split(|&b| b == b'\n') {
        let _ = spp_smtpd::plugin::directive::Directive::parse(line);
    }
    let _ = spp_smtpd::config::plugins::PluginOptions::parse(input);
    let (table, lints) = spp_smtpd::config::plugins::PluginTable::parse(
        input,
        std::path::Path::new("/nonexistent"),
        Default::default(),
    );
    let lines = input.split(|&b| b == b'\n').count();
    assert!(lints.iter().all(|l| l.lineno >= 1 && l.lineno <= lines));
    drop(table);
}

/// tcprules source text.
pub fn access_rules(input: &[u8]) {
    if let Ok(rules) = spp_smtpd::net::rules::Rules::parse(input) {
        let _ = rules.find("127.0.0.1".parse().unwrap(), Some("a.example"));
        let _ = rules.find("::1".parse().unwrap(), None);
    }
}

/// PROXY protocol headers, v1 and v2.
pub fn proxy_header(input: &[u8]) {
    let _ = spp_smtpd::net::proxy::parse_v1(input);
    let _ = spp_smtpd::net::proxy::parse_v2(input);
}

/// `control/spp-smtpd.ini` text: rust-ini's parser and every setting's
/// checks.
pub fn settings_file(input: &[u8]) {
    let _ = spp_smtpd::net::settings::DaemonSettings::from_ini_text(
        std::path::Path::new("/nonexistent-home"),
        input,
    );
}

/// Replies of Dovecot's auth server, for a request id the input chooses.
pub fn auth_replies(input: &[u8]) {
    let id = input.first().map_or(1, |&b| u32::from(b % 4));
    for line in input.split(|&b| b == b'\n') {
        let _ = spp_smtpd::auth::dovecot::parse_reply(line, id);
    }
}

/// cdb files: the whole-structure check the configuration runs on
/// `morercpthosts.cdb`.
pub fn cdb_file(input: &[u8]) {
    let _ = spp_smtpd::config::cdb::validate(input);
}

/// Whole SMTP sessions: the input is what a client sends (commands,
/// pipelining, DATA and BDAT bodies, STARTTLS, AUTH exchanges with PLAIN,
/// LOGIN and CRAM-MD5) to a session with AUTH offered; the session must
/// end, without a panic, once the input ends.
pub fn smtp_session(input: &[u8]) {
    use std::sync::{Arc, OnceLock};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    struct World {
        runtime: tokio::runtime::Runtime,
        config: Arc<spp_smtpd::config::Config>,
        maildir: std::path::PathBuf,
        auth: Arc<spp_smtpd::auth::AuthConfig>,
    }
    static WORLD: OnceLock<World> = OnceLock::new();
    let world = WORLD.get_or_init(|| {
        // fuzz/run names a directory it removes afterwards.
        let base = std::env::var_os("SPP_FUZZ_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let home = base.join(format!("spp-fuzz-session-{}", std::process::id()));
        let control = home.join("control");
        std::fs::create_dir_all(&control).unwrap();
        std::fs::write(control.join("me"), "mx.fuzz.test\n").unwrap();
        std::fs::write(control.join("rcpthosts"), "fuzz.test\n").unwrap();
        std::fs::write(control.join("databytes"), "100000\n").unwrap();
        std::fs::write(control.join("timeoutsmtpd"), "2\n").unwrap();
        std::fs::write(control.join("smtpplugins"), "").unwrap();
        World {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            config: Arc::new(spp_smtpd::config::Config::load(&home).unwrap()),
            maildir: home.join("Maildir/new"),
            auth: Arc::new(spp_smtpd::auth::AuthConfig {
                backend: spp_smtpd::auth::Backend::Dovecot("/nonexistent/auth".into()),
                allow_without_tls: true,
                failure_delay: std::time::Duration::ZERO,
                max_failures: 3,
                default_on: true,
            }),
        }
    });
    world.runtime.block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let mut env = spp_smtpd::session::env::SessionEnv::default();
        env.set("TCPREMOTEIP", "127.0.0.1");
        let session = spp_smtpd::session::Session::new(
            Box::new(server),
            world.config.clone(),
            env,
            "fuzz".into(),
        )
        .with_controls(spp_smtpd::session::SessionControls {
            auth: Some(world.auth.clone()),
            ..Default::default()
        });
        let (mut reader, mut writer) = tokio::io::split(client);
        let drain = async {
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink).await;
        };
        let feed = async {
            let _ = writer.write_all(input).await;
            let _ = writer.shutdown().await;
        };
        let run = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            let (code, _, _) = tokio::join!(session.run(), drain, feed);
            code
        });
        assert!(run.await.is_ok(), "the session did not end after its input");
    });
    if let Ok(entries) = std::fs::read_dir(&world.maildir) {
        for e in entries.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
