//! Enhanced status codes (RFC 2034, RFC 3463): the `class.subject.detail`
//! code put after the reply code of every reply line when
//! `control/enhancedstatuscodes` is on. One function decides the code of
//! one line from the line itself and the command it answers; the session
//! applies it where every reply is queued.
//!
//! Where the code comes from, first match wins:
//! 1. a code the text already starts with (a plugin's or a downstream
//!    MTA's): the line is left as it is;
//! 2. the `(#class.subject.detail)` qmail puts at the end of its texts,
//!    with the class of the reply code (`451 ... (#5.3.0)` gets `4.3.0`);
//! 3. a fixed qmail text without one ([`FIXED`]);
//! 4. the default of the command: `2.1.0` after MAIL, `2.1.5` after RCPT,
//!    `2.0.0` for other successes, `4.0.0` and `5.0.0` for failures.
//!
//! Lines left alone: those without a three-digit 2xx, 4xx or 5xx code and a
//! space, `-` or the end after it (so 3xx such as `354` and `334`), and
//! every line sent in the [`ReplyContext::Exempt`] context (the greeting and
//! what precedes it, HELO and EHLO). Each line of a multi-line reply is
//! considered by itself.

use super::command::Verb;
use std::borrow::Cow;

/// What a reply answers, which chooses the default code of a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplyContext {
    /// No code at all: the greeting and anything sent before it, and the
    /// replies to HELO and EHLO (RFC 2034 section 3).
    #[default]
    Exempt,
    /// MAIL: a success is `2.1.0` (sender ok).
    Mail,
    /// RCPT: a success is `2.1.5` (destination ok).
    Rcpt,
    /// DATA or BDAT: a success is `2.0.0`.
    Data,
    /// Any other command, and lines not answering one (a command line too
    /// long, a timeout, a shutdown): a success is `2.0.0`.
    Other,
}

impl ReplyContext {
    /// The context of the replies to `verb`.
    pub fn of(verb: Verb) -> ReplyContext {
        match verb {
            Verb::Helo | Verb::Ehlo => ReplyContext::Exempt,
            Verb::Mail => ReplyContext::Mail,
            Verb::Rcpt => ReplyContext::Rcpt,
            Verb::Data | Verb::Bdat => ReplyContext::Data,
            _ => ReplyContext::Other,
        }
    }
}

/// Fixed qmail texts (after the reply code and its space) that carry no
/// `(#...)`, with the `subject.detail` they get; the class is the reply's.
pub const FIXED: &[(&[u8], &[u8])] = &[
    // A bare LF in the message: the content's line endings (media error).
    (b"See http://pobox.com/~djb/docs/smtplf.html.", b"6.0"),
];

/// Longest subject or detail accepted (RFC 3463: one to three digits).
const MAX_PART: usize = 3;

/// `line` with its enhanced status code, borrowed when it is left as is.
pub fn annotate(line: &[u8], context: ReplyContext) -> Cow<'_, [u8]> {
    if code_for(line, context).is_none() {
        return Cow::Borrowed(line);
    }
    let mut out = Vec::with_capacity(line.len() + 10);
    annotate_into(line, context, &mut out);
    Cow::Owned(out)
}

/// Appends `line` to `out` with its enhanced status code inserted after the
/// reply code (`553 sorry, ... (#5.7.1)` → `553 5.7.1 sorry, ... (#5.7.1)`),
/// or unchanged when it gets none.
pub fn annotate_into(line: &[u8], context: ReplyContext, out: &mut Vec<u8>) {
    let Some(code) = code_for(line, context) else {
        out.extend_from_slice(line);
        return;
    };
    out.extend_from_slice(&line[..3]);
    out.push(line.get(3).copied().unwrap_or(b' '));
    out.push(code.class);
    out.push(b'.');
    out.extend_from_slice(code.rest);
    if let Some(text) = line.get(4..).filter(|t| !t.is_empty()) {
        out.push(b' ');
        out.extend_from_slice(text);
    }
}

/// An enhanced status code to insert: the class digit and
/// `subject.detail`, borrowed from the line or from a constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Code<'a> {
    class: u8,
    rest: &'a [u8],
}

/// The code `line` gets in `context`; `None` when it is left as is.
fn code_for(line: &[u8], context: ReplyContext) -> Option<Code<'_>> {
    if context == ReplyContext::Exempt {
        return None;
    }
    let class = match line {
        [c @ (b'2' | b'4' | b'5'), d1, d2, rest @ ..]
            if d1.is_ascii_digit()
                && d2.is_ascii_digit()
                && matches!(rest.first(), None | Some(b' ' | b'-')) =>
        {
            *c
        }
        _ => return None,
    };
    let text = line.get(4..).unwrap_or_default();
    if leading_code(text) {
        return None;
    }
    if let Some(rest) = trailing_code(text) {
        return Some(Code { class, rest });
    }
    if let Some(&(_, rest)) = FIXED.iter().find(|(t, _)| *t == text) {
        return Some(Code { class, rest });
    }
    let rest: &[u8] = match (class, context) {
        (b'2', ReplyContext::Mail) => b"1.0",
        (b'2', ReplyContext::Rcpt) => b"1.5",
        _ => b"0.0",
    };
    Some(Code { class, rest })
}

/// Whether `text` starts with an enhanced status code of class 2, 4 or 5,
/// followed by a space or the end.
fn leading_code(text: &[u8]) -> bool {
    let end = text.iter().position(|&b| b == b' ').unwrap_or(text.len());
    let word = &text[..end];
    matches!(word.first(), Some(b'2' | b'4' | b'5'))
        && word.get(1) == Some(&b'.')
        && subject_detail(&word[2..])
}

/// The `subject.detail` of a `(#class.subject.detail)` ending `text`
/// (trailing blanks allowed), if there is one with a one-digit class.
fn trailing_code(text: &[u8]) -> Option<&[u8]> {
    let end = text.iter().rposition(|b| !b.is_ascii_whitespace())?;
    let inner = text[..=end].strip_suffix(b")")?;
    let open = inner.windows(2).rposition(|w| w == b"(#")?;
    match &inner[open + 2..] {
        [class, b'.', rest @ ..] if class.is_ascii_digit() && subject_detail(rest) => Some(rest),
        _ => None,
    }
}

/// Whether `s` is `subject.detail`, each one to three digits.
fn subject_detail(s: &[u8]) -> bool {
    let Some(dot) = s.iter().position(|&b| b == b'.') else {
        return false;
    };
    let digits = |p: &[u8]| (1..=MAX_PART).contains(&p.len()) && p.iter().all(u8::is_ascii_digit);
    digits(&s[..dot]) && digits(&s[dot + 1..])
}

#[cfg(test)]
mod tests {
    use super::ReplyContext::{Data, Exempt, Mail, Other, Rcpt};
    use super::*;

    #[test]
    fn codes_by_source_and_context() {
        #[rustfmt::skip]
        let table: &[(&str, ReplyContext, &str)] = &[
            // qmail's trailing code, trailing text kept.
            ("553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)", Rcpt,
             "553 5.7.1 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"),
            ("555 syntax error (#5.5.4)", Mail, "555 5.5.4 syntax error (#5.5.4)"),
            ("502 unimplemented (#5.5.1)", Other, "502 5.5.1 unimplemented (#5.5.1)"),
            ("502 unimplemented (#5.5.1)", Data, "502 5.5.1 unimplemented (#5.5.1)"),
            ("235 ok, go ahead (#2.0.0)", Other, "235 2.0.0 ok, go ahead (#2.0.0)"),
            ("538 encryption required (#5.7.11)", Other, "538 5.7.11 encryption required (#5.7.11)"),
            ("530 Authorization required (#5.7.1) ", Mail, "530 5.7.1 Authorization required (#5.7.1) "),
            ("421 mx too many authentication failures (#4.7.0)", Other,
             "421 4.7.0 mx too many authentication failures (#4.7.0)"),
            // The reply's class wins over the text's.
            ("451 qmail-spp failure: p: timeout (#5.3.0)", Rcpt, "451 4.3.0 qmail-spp failure: p: timeout (#5.3.0)"),
            ("554 odd (#2.1.0)", Data, "554 5.1.0 odd (#2.1.0)"),
            ("250 odd (#7.1.2)", Other, "250 2.1.2 odd (#7.1.2)"),
            // The last `(#` counts.
            ("550 a (#5.1.1) b (#5.7.1)", Rcpt, "550 5.7.1 a (#5.1.1) b (#5.7.1)"),
            ("550 a (#(#5.7.1)", Rcpt, "550 5.7.1 a (#(#5.7.1)"),
            // A code already there is kept, whatever its class.
            ("550 5.1.1 no such user", Rcpt, "550 5.1.1 no such user"),
            ("550 5.1.1", Rcpt, "550 5.1.1"),
            ("451 5.7.1 later", Rcpt, "451 5.7.1 later"),
            ("250 2.0.0 Ok: queued as 1234 (#4.3.0)", Data, "250 2.0.0 Ok: queued as 1234 (#4.3.0)"),
            ("550-5.7.1 first line", Rcpt, "550-5.7.1 first line"),
            ("452 4.2.2 over quota", Rcpt, "452 4.2.2 over quota"),
            // Not a code: a class other than 2, 4, 5; an address; no space
            // after it; a part of four digits.
            ("550 1.2.3 blocked", Rcpt, "550 5.0.0 1.2.3 blocked"),
            ("550 1.2.3.4 is listed", Rcpt, "550 5.0.0 1.2.3.4 is listed"),
            ("550 5.1.1: unknown", Rcpt, "550 5.0.0 5.1.1: unknown"),
            ("550 5.1.1.1 x", Rcpt, "550 5.0.0 5.1.1.1 x"),
            ("550 5.1234.1 x", Rcpt, "550 5.0.0 5.1234.1 x"),
            // Defaults by context.
            ("250 ok", Mail, "250 2.1.0 ok"),
            ("250 ok", Rcpt, "250 2.1.5 ok"),
            ("250 ok 1700000000 qp 42", Data, "250 2.0.0 ok 1700000000 qp 42"),
            ("250 flushed", Other, "250 2.0.0 flushed"),
            ("252 send some mail, i'll try my best", Other, "252 2.0.0 send some mail, i'll try my best"),
            ("221 mx.ref.test", Other, "221 2.0.0 mx.ref.test"),
            ("220 ready to start TLS", Other, "220 2.0.0 ready to start TLS"),
            ("550 go away", Rcpt, "550 5.0.0 go away"),
            ("451 later", Mail, "451 4.0.0 later"),
            ("421 go", Data, "421 4.0.0 go"),
            ("550 go away", Mail, "550 5.0.0 go away"),
            // A fixed qmail text without a code.
            ("451 See http://pobox.com/~djb/docs/smtplf.html.", Data,
             "451 4.6.0 See http://pobox.com/~djb/docs/smtplf.html."),
            // Multi-line: every line gets one.
            ("250-first", Rcpt, "250-2.1.5 first"),
            ("550-why (#5.7.1)", Rcpt, "550-5.7.1 why (#5.7.1)"),
            // A code alone, or with an empty text.
            ("250", Other, "250 2.0.0"),
            ("250 ", Mail, "250 2.1.0"),
            ("550-", Other, "550-5.0.0"),
            // Left alone: 3xx, 1xx, other classes, the exempt context.
            ("354 go ahead", Data, "354 go ahead"),
            ("334 VXNlcm5hbWU6", Other, "334 VXNlcm5hbWU6"),
            ("199 x", Other, "199 x"),
            ("699 x", Other, "699 x"),
            ("050 x", Other, "050 x"),
            ("220 mx.ref.test ESMTP", Exempt, "220 mx.ref.test ESMTP"),
            ("250-mx.ref.test", Exempt, "250-mx.ref.test"),
            ("550 refused (#5.7.1)", Exempt, "550 refused (#5.7.1)"),
            // Hostile input: no code, short lines, bad separators, non-digits.
            ("", Other, ""),
            ("2", Other, "2"),
            ("25", Other, "25"),
            ("25 ok", Other, "25 ok"),
            ("2a0 ok", Other, "2a0 ok"),
            ("250ok", Other, "250ok"),
            ("250\tok", Other, "250\tok"),
            ("ok 250", Other, "ok 250"),
            (" 250 ok", Other, " 250 ok"),
            ("\u{fffd}50 x", Other, "\u{fffd}50 x"),
            // Broken trailing codes fall back to the default.
            ("550 x (#5.7.1", Rcpt, "550 5.0.0 x (#5.7.1"),
            ("550 x (#5.7.1) trailing", Rcpt, "550 5.0.0 x (#5.7.1) trailing"),
            ("550 x 5.7.1)", Rcpt, "550 5.0.0 x 5.7.1)"),
            ("550 x (#)", Rcpt, "550 5.0.0 x (#)"),
            ("550 x (#5.99999.1)", Rcpt, "550 5.0.0 x (#5.99999.1)"),
            ("550 x (#5.1.99999999999999999999)", Rcpt, "550 5.0.0 x (#5.1.99999999999999999999)"),
            ("550 x (#55.1.1)", Rcpt, "550 5.0.0 x (#55.1.1)"),
            ("550 x (#5.1)", Rcpt, "550 5.0.0 x (#5.1)"),
            ("550 x (#5.1.1.1)", Rcpt, "550 5.0.0 x (#5.1.1.1)"),
            ("550 x (#5..1)", Rcpt, "550 5.0.0 x (#5..1)"),
            ("550 x (#5.1.)", Rcpt, "550 5.0.0 x (#5.1.)"),
            ("550 x (#a.b.c)", Rcpt, "550 5.0.0 x (#a.b.c)"),
            ("550 x (# 5.1.1)", Rcpt, "550 5.0.0 x (# 5.1.1)"),
            ("250 x (#-2.1.1)", Rcpt, "250 2.1.5 x (#-2.1.1)"),
            ("550 (#5.1.1)", Rcpt, "550 5.1.1 (#5.1.1)"),
            ("550(#5.1.1)", Rcpt, "550(#5.1.1)"),
            ("550 )", Rcpt, "550 5.0.0 )"),
            ("550 (#", Rcpt, "550 5.0.0 (#"),
        ];
        for &(input, context, expected) in table {
            let out = annotate(input.as_bytes(), context);
            assert_eq!(
                out.escape_ascii().to_string(),
                expected.as_bytes().escape_ascii().to_string(),
                "{input:?} in {context:?}"
            );
            let mut appended = b"x".to_vec();
            annotate_into(input.as_bytes(), context, &mut appended);
            assert_eq!(&appended[1..], expected.as_bytes(), "{input:?} appended");
        }
    }

    #[test]
    fn unchanged_lines_are_borrowed() {
        assert!(matches!(annotate(b"354 go ahead", Data), Cow::Borrowed(_)));
        assert!(matches!(annotate(b"250 ok", Exempt), Cow::Borrowed(_)));
        assert!(matches!(annotate(b"250 2.0.0 ok", Other), Cow::Borrowed(_)));
        assert!(matches!(annotate(b"250 ok", Other), Cow::Owned(_)));
    }

    #[test]
    fn contexts_of_verbs() {
        let table = [
            (Verb::Helo, Exempt),
            (Verb::Ehlo, Exempt),
            (Verb::Mail, Mail),
            (Verb::Rcpt, Rcpt),
            (Verb::Data, Data),
            (Verb::Bdat, Data),
            (Verb::Rset, Other),
            (Verb::Noop, Other),
            (Verb::Vrfy, Other),
            (Verb::Help, Other),
            (Verb::Quit, Other),
            (Verb::Starttls, Other),
            (Verb::Auth, Other),
            (Verb::Unknown, Other),
        ];
        for (verb, context) in table {
            assert_eq!(ReplyContext::of(verb), context, "{verb:?}");
        }
        assert_eq!(ReplyContext::default(), Exempt);
    }
}
