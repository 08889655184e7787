//! Envelope address parsing for MAIL and RCPT, with qmail's rules: take
//! what is inside `<...>` (or the word after `:`), drop a source route,
//! remove quoting, and map `[ip]` literals naming this host to
//! `localiphost`.

use std::net::Ipv4Addr;

/// The longest address accepted, in bytes; longer ones get `555`.
pub const MAX_ADDRESS_LEN: usize = 899;

/// Parses the argument of MAIL or RCPT into an address.
///
/// `local_ip` answers whether an IPv4 address belongs to this host and
/// `localiphost` is the name that replaces such a literal (`None`: no
/// replacement). Returns `None` when the address (after that replacement)
/// is too long. The input is a command line, so it is already bounded.
pub fn parse(
    arg: &[u8],
    local_ip: impl Fn(Ipv4Addr) -> bool,
    localiphost: Option<&[u8]>,
) -> Option<Vec<u8>> {
    let (mut rest, terminator) = match arg.iter().position(|&b| b == b'<') {
        Some(i) => (&arg[i + 1..], b'>'),
        None => {
            let mut r = match arg.iter().position(|&b| b == b':') {
                Some(i) => &arg[i + 1..],
                None => arg,
            };
            while let [b' ', tail @ ..] = r {
                r = tail;
            }
            (r, b' ')
        }
    };
    if rest.first() == Some(&b'@') {
        rest = match rest.iter().position(|&b| b == b':') {
            Some(i) => &rest[i + 1..],
            None => &[],
        };
    }
    let mut addr = Vec::with_capacity(rest.len().min(MAX_ADDRESS_LEN + 1));
    let (mut escaped, mut quoted) = (false, false);
    for &ch in rest {
        if escaped {
            addr.push(ch);
            escaped = false;
        } else if !quoted && ch == terminator {
            break;
        } else {
            match ch {
                b'\\' => escaped = true,
                b'"' => quoted = !quoted,
                _ => addr.push(ch),
            }
        }
    }
    if let Some(host) = localiphost {
        if let Some(at) = addr.iter().rposition(|&b| b == b'@') {
            if let Some(ip) = bracketed_ipv4(&addr[at + 1..]) {
                if local_ip(ip) {
                    addr.truncate(at + 1);
                    addr.extend_from_slice(host);
                }
            }
        }
    }
    // Checked after the [ip] replacement, as qmail does.
    (addr.len() <= MAX_ADDRESS_LEN).then_some(addr)
}

/// Reads `[a.b.c.d]` filling the whole input; components are decimal and
/// taken modulo 256 as qmail does.
fn bracketed_ipv4(s: &[u8]) -> Option<Ipv4Addr> {
    let inner = s.strip_prefix(b"[")?.strip_suffix(b"]")?;
    let mut parts = [0u8; 4];
    let mut fields = inner.split(|&b| b == b'.');
    for part in parts.iter_mut() {
        let f = fields.next()?;
        if f.is_empty() || !f.iter().all(u8::is_ascii_digit) {
            return None;
        }
        *part = f.iter().fold(0u64, |n, &d| {
            n.wrapping_mul(10).wrapping_add(u64::from(d - b'0'))
        }) as u8;
    }
    if fields.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(parts))
}

/// The host part of an address (after the last `@`), if any.
pub fn host_of(addr: &[u8]) -> Option<&[u8]> {
    addr.iter()
        .rposition(|&b| b == b'@')
        .map(|i| &addr[i + 1..])
}

/// The other spellings of an internationalized domain name (RFC 5890),
/// for comparing it with control files in an SMTPUTF8 transaction: for a
/// name with non-ASCII labels (U-labels), its A-label form (`xn--...`) and
/// its Unicode form after UTS #46 mapping (lower case, normalized, `。` as
/// `.`); for an ASCII name with `xn--` labels, its Unicode form. A form
/// equal to the name as written (ASCII lower-cased) is left out.
///
/// Empty when there is no other form: an ASCII name without `xn--` labels,
/// an address literal, or a name IDNA refuses (not UTF-8, bad Punycode,
/// an empty label, a label over 63 or a name over 253 octets).
pub fn idna_forms(domain: &[u8]) -> Vec<Vec<u8>> {
    use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};
    let a_label = |l: &[u8]| l.len() >= 4 && l[..4].eq_ignore_ascii_case(b"xn--");
    if domain.is_ascii() && !domain.split(|&b| b == b'.').any(a_label) {
        return Vec::new();
    }
    let uts46 = Uts46::new();
    let Ok(ascii) = uts46.to_ascii(
        domain,
        AsciiDenyList::EMPTY,
        Hyphens::Allow,
        DnsLength::Verify,
    ) else {
        return Vec::new();
    };
    let (unicode, valid) = uts46.to_unicode(ascii.as_bytes(), AsciiDenyList::EMPTY, Hyphens::Allow);
    let written = domain.to_ascii_lowercase();
    let mut forms: Vec<Vec<u8>> = Vec::with_capacity(2);
    let candidates = [
        Some(ascii.as_bytes()),
        valid.is_ok().then_some(unicode.as_bytes()),
    ];
    for form in candidates.into_iter().flatten() {
        if form != written.as_slice() && !forms.iter().any(|f| f == form) {
            forms.push(form.to_vec());
        }
    }
    forms
}

/// Whether `addr` has the plain `local@domain` form (or a bare local
/// part) that another MTA reads exactly as we do. qmail's parser accepts
/// more (`a,b@x`, `a%b@x`, `"a@b"@x`, several `@`), and our rcpthosts check
/// looks only after the last `@`, but Postfix's and Exim's sendmail split
/// an argument at commas and their SMTP servers route `%`, `!` and inner
/// `@` forms elsewhere: such an address handed downstream could be relayed
/// to a domain rcpthosts never allowed. Bytes of 128 and above (UTF-8) are
/// allowed.
pub fn is_plain_form(addr: &[u8]) -> bool {
    let (local, domain) = match addr.iter().position(|&b| b == b'@') {
        Some(i) => (&addr[..i], Some(&addr[i + 1..])),
        None => (addr, None),
    };
    let local_ok = !local.is_empty()
        && local
            .iter()
            .all(|&b| b >= 0x80 || (b.is_ascii_graphic() && !b"@,\"\\()<>;:%![]".contains(&b)));
    let domain_ok = match domain {
        None => true,
        Some(d) if d.starts_with(b"[") && d.ends_with(b"]") => d[1..d.len() - 1]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b".:".contains(&b)),
        Some(d) => {
            !d.is_empty()
                && d.iter()
                    .all(|&b| b >= 0x80 || b.is_ascii_alphanumeric() || b"-._".contains(&b))
        }
    };
    local_ok && domain_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(arg: &str) -> Option<String> {
        parse(
            arg.as_bytes(),
            |ip| ip == Ipv4Addr::new(127, 0, 0, 1) || ip.is_unspecified(),
            Some(b"me.test"),
        )
        .map(|a| String::from_utf8(a).unwrap())
    }

    #[test]
    fn address_table() {
        let table: &[(&str, &str)] = &[
            ("FROM:<a@b.test>", "a@b.test"),
            ("FROM:<a@b.test> SIZE=10 BODY=8BITMIME", "a@b.test"),
            ("FROM:<>", ""),
            ("", ""),
            ("FROM: a@b.test x", "a@b.test"),
            ("FROM:a@b.test", "a@b.test"),
            ("a@b.test", "a@b.test"),
            ("TO:<@r1,@r2:x@y.test>", "x@y.test"),
            ("TO:<@r1>", ""),
            ("TO:<\"a b\"@y.test>", "a b@y.test"),
            ("TO:<\"a>b\"@y.test>", "a>b@y.test"),
            ("TO:<a\\>b@y.test>", "a>b@y.test"),
            ("TO:<a@b", "a@b"),
            ("anything<x@y>", "x@y"),
            ("TO:<x@[127.0.0.1]>", "x@me.test"),
            ("TO:<x@[0.0.0.0]>", "x@me.test"),
            ("TO:<x@[10.0.0.1]>", "x@[10.0.0.1]"),
            ("TO:<x@[127.0.0.1]z>", "x@[127.0.0.1]z"),
            ("TO:<x@[127.0.0.257]>", "x@me.test"),
            ("TO:<x@[127.0.1]>", "x@[127.0.1]"),
        ];
        for &(arg, want) in table {
            assert_eq!(p(arg).as_deref(), Some(want), "arg {arg:?}");
        }
    }

    #[test]
    fn length_limit_applies_after_localiphost_replacement() {
        // 890 + "@[127.0.0.1]" = 902 bytes written, 898 after replacement.
        let short_after = format!("<{}@[127.0.0.1]>", "a".repeat(890));
        assert_eq!(p(&short_after).map(|a| a.len()), Some(898));
        // 880 + "@" + 20-byte localiphost = 901 bytes after replacement.
        let long_after = format!("<{}@[0.0.0.0]>", "a".repeat(880));
        let got = parse(long_after.as_bytes(), |_| true, Some(&[b'h'; 20]));
        assert_eq!(got, None);
    }

    #[test]
    fn length_limit_is_899() {
        let ok = format!("<{}>", "a".repeat(899));
        let bad = format!("<{}>", "a".repeat(900));
        assert_eq!(p(&ok).map(|a| a.len()), Some(899));
        assert_eq!(p(&bad), None);
    }

    #[test]
    fn host_is_after_last_at() {
        assert_eq!(host_of(b"a@b@c"), Some(&b"c"[..]));
        assert_eq!(host_of(b"ab"), None);
    }

    #[test]
    fn idna_form_table() {
        let long_u = format!("{}.example", "\u{fc}".repeat(60));
        let long_a = format!("xn--{}.example", "a".repeat(60));
        let long_name = format!("\u{fc}.{}", "abcdefghi.".repeat(26));
        let table: &[(&[u8], &[&str])] = &[
            // U-labels: the A-label, and the mapped form when it differs.
            ("例子.广告".as_bytes(), &["xn--fsqu00a.xn--4rr70v"]),
            ("bücher.example".as_bytes(), &["xn--bcher-kva.example"]),
            (
                "BÜCHER.Example".as_bytes(),
                &["xn--bcher-kva.example", "bücher.example"],
            ),
            (
                "例子。广告".as_bytes(),
                &["xn--fsqu00a.xn--4rr70v", "例子.广告"],
            ),
            (
                "xn--fsqu00a.广告".as_bytes(),
                &["xn--fsqu00a.xn--4rr70v", "例子.广告"],
            ),
            // A-labels: the Unicode form.
            (b"xn--fsqu00a.xn--4rr70v", &["例子.广告"]),
            (b"XN--FSQU00A.Xn--4Rr70V", &["例子.广告"]),
            (b"xn--bcher-kva.example", &["bücher.example"]),
            (b"sub.xn--bcher-kva.example", &["sub.bücher.example"]),
            // No other form.
            (b"ref.test", &[]),
            (b"REF.test", &[]),
            (b"xn-ref.test", &[]),
            (b"[127.0.0.1]", &[]),
            (b"", &[]),
            // Hostile input: not UTF-8, bad Punycode, empty labels,
            // over-long labels and names, characters IDNA forbids.
            (b"\xff\xfe.example", &[]),
            (b"b\xc3.example", &[]),
            (b"\xc3\xbc\xff.example", &[]),
            (b"xn--.example", &[]),
            (b"xn--a.example", &[]),
            (b"xn--ab-.example", &[]),
            (b"xn--999999999999999.example", &[]),
            (b"xn--zz\xc3\xbc.example", &[]),
            ("例子..广告".as_bytes(), &[]),
            (".bücher.example".as_bytes(), &[]),
            ("bücher.example.".as_bytes(), &[]),
            (long_u.as_bytes(), &[]),
            (long_a.as_bytes(), &[]),
            (long_name.as_bytes(), &[]),
            ("a\u{2028}ü.example".as_bytes(), &[]),
            ("\u{fffd}.example".as_bytes(), &[]),
        ];
        for &(domain, want) in table {
            let got = idna_forms(domain);
            let got: Vec<String> = got
                .iter()
                .map(|f| String::from_utf8(f.clone()).expect("forms are UTF-8"))
                .collect();
            assert_eq!(got, want, "domain {}", domain.escape_ascii());
        }
    }

    #[test]
    fn idna_forms_round_trip() {
        for domain in [
            "例子.广告",
            "bücher.example",
            "пример.испытание",
            "ü.ß.example",
        ] {
            let forms = idna_forms(domain.as_bytes());
            let ascii = &forms[0];
            assert!(ascii.is_ascii(), "{domain}");
            assert_eq!(idna_forms(ascii), vec![domain.as_bytes().to_vec()]);
        }
    }

    #[test]
    fn plain_forms() {
        for ok in [
            &b"bob@example.test"[..],
            b"b.o-b+tag@sub.example.test",
            b"postmaster",
            b"x@[127.0.0.1]",
            b"x@[IPv6:::1]",
            "jos\u{e9}@example.test".as_bytes(),
        ] {
            assert!(is_plain_form(ok), "{}", ok.escape_ascii());
        }
        for bad in [
            &b""[..],
            b"@example.test",
            b"evil@remote.test,x@local.test",
            b"evil%remote.test@local.test",
            b"remote.test!evil@local.test",
            b"evil@remote.test@local.test",
            b"\"evil@remote.test\"@local.test",
            b"a b@local.test",
            b"a\tb@local.test",
            b"a@local test",
            b"a@",
            b"a@local.test,b",
            b"(c)a@local.test",
            b"a;b@local.test",
        ] {
            assert!(!is_plain_form(bad), "{}", bad.escape_ascii());
        }
    }
}
