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

/// The DATA decoder (split at every tenth byte), the BDAT decoder, and the
/// encoder that turns a stored message back into DATA.
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
