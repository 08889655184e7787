//! Pure, synchronous SMTP protocol pieces: command lines, replies, envelope
//! addresses, the DATA and BDAT decoder, the Received: line and enhanced
//! status codes. Nothing here does I/O, so everything is table-tested and
//! fuzzable.

pub mod address;
pub mod command;
pub mod data;
pub mod encode;
pub mod enhanced;
pub mod header_filter;
pub mod received;
pub mod reply;

#[cfg(test)]
mod robustness {
    //! Arbitrary bytes through every parser: no panic, and the invariants
    //! each parser promises.
    use super::*;
    use crate::testing::Rng;

    #[test]
    fn arbitrary_input_never_panics() {
        let mut rng = Rng::new(0x5eed);
        for _ in 0..20_000 {
            let input = rng.bytes(64);
            let cmd = command::Command::parse(&input);
            assert!(!cmd.arg.contains(&0));
            if let Some(a) = address::parse(&input, |_| true, Some(b"me")) {
                assert!(a.len() <= address::MAX_ADDRESS_LEN + 2);
            }
            for form in address::idna_forms(&input) {
                assert!(std::str::from_utf8(&form).is_ok() && form.len() <= 4 * 253);
            }
            let mut d = data::DataDecoder::default();
            let mut out = Vec::new();
            let (n, _) = d.feed(&input, &mut out);
            assert!(n <= input.len());
            assert_eq!(d.size, out.len() as u64);
            let mut chunked = data::DataDecoder::chunked();
            let mut stored = Vec::new();
            let (n, _) = chunked.feed(&input, &mut stored);
            assert_eq!(n, input.len(), "a chunk is always consumed whole");
            chunked.finish_chunks(&mut stored);
            assert_eq!(chunked.size, stored.len() as u64);
            if !chunked.bare_cr && !chunked.bare_lf {
                // What may be stored is whole lines and never a CR.
                assert!(stored.is_empty() || stored.ends_with(b"\n"));
                assert!(!stored.contains(&b'\r'));
            }
            if command::parse_bdat(&input).is_some() {
                assert!(input
                    .first()
                    .is_some_and(|b| b.is_ascii_digit() || *b == b' '));
            }
            let _ = crate::plugin::directive::Directive::parse(&input);
            if let Some((code, _, text)) = reply::parse_line(&input) {
                assert!((100..1000).contains(&code));
                assert!(text.len() + 3 <= input.len());
            }
            let reply = [&b"550 "[..], &input].concat();
            for line in [&input, &reply] {
                for context in [
                    enhanced::ReplyContext::Exempt,
                    enhanced::ReplyContext::Rcpt,
                    enhanced::ReplyContext::Other,
                ] {
                    // At most a code and a space are added, after the reply code.
                    let out = enhanced::annotate(line, context);
                    let added = out.len() - line.len();
                    assert!(added == 0 || (5..=10).contains(&added));
                    assert!(out.starts_with(&line[..line.len().min(3)]));
                    assert!(out.ends_with(&line[line.len().min(4)..]));
                }
            }
            let mut enc = encode::DataEncoder::default();
            let mut wire = Vec::new();
            enc.feed(&input, &mut wire);
            enc.end(&mut wire);
            assert!(wire == b".\r\n" || wire.ends_with(b"\r\n.\r\n"));
            assert!(wire.windows(2).all(|w| (w[0] == b'\r') == (w[1] == b'\n')));
            let _ = crate::config::plugins::PluginTable::parse(
                &input,
                std::path::Path::new("/nonexistent"),
                Default::default(),
            );
        }
    }
}
