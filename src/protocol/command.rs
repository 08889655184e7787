//! Splitting an SMTP command line into verb and argument, and the
//! line-level framing rules (LF ends a line, one CR before it is dropped).

/// The verbs the session engine knows. Everything else is `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// `HELO name`
    Helo,
    /// `EHLO name`
    Ehlo,
    /// `MAIL FROM:<addr> [params]`
    Mail,
    /// `RCPT TO:<addr>`
    Rcpt,
    /// `DATA`
    Data,
    /// `RSET`
    Rset,
    /// `NOOP`
    Noop,
    /// `VRFY`
    Vrfy,
    /// `HELP`
    Help,
    /// `QUIT`
    Quit,
    /// `STARTTLS`
    Starttls,
    /// `AUTH mechanism [initial-response]`
    Auth,
    /// `BDAT size [LAST]` (CHUNKING): `size` octets of message follow.
    Bdat,
    /// Anything else, including the empty line.
    Unknown,
}

/// A parsed command line: the verb and the raw argument bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Which verb this is.
    pub verb: Verb,
    /// The argument after the verb and the run of spaces following it;
    /// trailing spaces are kept.
    pub arg: Vec<u8>,
}

impl Command {
    /// Parses one command line. `line` is the line without its LF; a single
    /// CR before the LF must already be removed (see [`strip_line_end`]).
    ///
    /// The verb ends at the first space (only the space character
    /// separates). NUL bytes become LF, so no NUL can reach an envelope.
    pub fn parse(line: &[u8]) -> Command {
        let line: Vec<u8> = line
            .iter()
            .map(|&b| if b == 0 { b'\n' } else { b })
            .collect();
        let (verb, rest) = match line.iter().position(|&b| b == b' ') {
            Some(i) => (&line[..i], &line[i..]),
            None => (&line[..], &line[line.len()..]),
        };
        let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
        Command {
            verb: Verb::from_bytes(verb),
            arg: rest[start..].to_vec(),
        }
    }
}

impl Verb {
    /// Case-insensitive lookup of a verb.
    pub fn from_bytes(v: &[u8]) -> Verb {
        const TABLE: [(&[u8], Verb); 13] = [
            (b"helo", Verb::Helo),
            (b"ehlo", Verb::Ehlo),
            (b"mail", Verb::Mail),
            (b"rcpt", Verb::Rcpt),
            (b"data", Verb::Data),
            (b"rset", Verb::Rset),
            (b"noop", Verb::Noop),
            (b"vrfy", Verb::Vrfy),
            (b"help", Verb::Help),
            (b"quit", Verb::Quit),
            (b"starttls", Verb::Starttls),
            (b"auth", Verb::Auth),
            (b"bdat", Verb::Bdat),
        ];
        TABLE
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(v))
            .map(|&(_, verb)| verb)
            .unwrap_or(Verb::Unknown)
    }
}

/// The argument of `BDAT`: the chunk size and whether `LAST` follows
/// (RFC 3030: `BDAT size [LAST]`, any case, spaces between). `None` for
/// anything else, including a size that does not fit in 64 bits.
pub fn parse_bdat(arg: &[u8]) -> Option<(u64, bool)> {
    let mut words = arg.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let size = words.next()?;
    if size.is_empty() || size.len() > 20 || !size.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let size = std::str::from_utf8(size).ok()?.parse().ok()?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case(b"LAST") => true,
        Some(_) => return None,
    };
    words.next().is_none().then_some((size, last))
}

/// Removes the LF and one CR before it from a raw line, if present.
pub fn strip_line_end(mut line: &[u8]) -> &[u8] {
    if let Some(l) = line.strip_suffix(b"\n") {
        line = l;
        if let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(line: &str) -> (Verb, String) {
        let cmd = Command::parse(strip_line_end(line.as_bytes()));
        (cmd.verb, String::from_utf8(cmd.arg).unwrap())
    }

    #[test]
    fn verbs_and_arguments_table() {
        let table: &[(&str, Verb, &str)] = &[
            ("HELO x", Verb::Helo, "x"),
            ("helo   x y ", Verb::Helo, "x y "),
            ("EhLo a.b", Verb::Ehlo, "a.b"),
            ("MAIL FROM:<a@b>", Verb::Mail, "FROM:<a@b>"),
            ("MAIL", Verb::Mail, ""),
            ("RCPT TO:<x>", Verb::Rcpt, "TO:<x>"),
            ("DATA", Verb::Data, ""),
            ("data now", Verb::Data, "now"),
            ("RSET", Verb::Rset, ""),
            ("NOOP x", Verb::Noop, "x"),
            ("VRFY u", Verb::Vrfy, "u"),
            ("HELP", Verb::Help, ""),
            ("QUIT", Verb::Quit, ""),
            ("", Verb::Unknown, ""),
            (" HELO x", Verb::Unknown, "HELO x"),
            ("HELO\tx", Verb::Unknown, ""),
            ("EXPN x", Verb::Unknown, "x"),
            ("STARTTLS", Verb::Starttls, ""),
            ("auth plain x", Verb::Auth, "plain x"),
            ("BDAT 10 LAST", Verb::Bdat, "10 LAST"),
        ];
        for &(line, verb, arg) in table {
            for ending in ["", "\n", "\r\n"] {
                let got = c(&format!("{line}{ending}"));
                assert_eq!(got, (verb, arg.to_string()), "line {line:?}{ending:?}");
            }
        }
    }

    #[test]
    fn bdat_arguments() {
        let table: &[(&str, Option<(u64, bool)>)] = &[
            ("0", Some((0, false))),
            ("0 LAST", Some((0, true))),
            ("100 last", Some((100, true))),
            ("7  LAST  ", Some((7, true))),
            (
                "9999999999999999999",
                Some((9_999_999_999_999_999_999, false)),
            ),
            ("", None),
            ("LAST", None),
            ("10 LAST x", None),
            ("10 FIRST", None),
            ("-1", None),
            ("+5", None),
            ("1e3", None),
            ("10\tLAST", None),
            ("99999999999999999999", None),
            ("18446744073709551616 LAST", None),
        ];
        for &(arg, want) in table {
            assert_eq!(parse_bdat(arg.as_bytes()), want, "{arg:?}");
        }
    }

    #[test]
    fn only_one_cr_is_removed() {
        assert_eq!(strip_line_end(b"NOOP\r\r\n"), b"NOOP\r");
        assert_eq!(strip_line_end(b"NOOP\r"), b"NOOP\r");
    }

    #[test]
    fn nul_becomes_lf() {
        let cmd = Command::parse(b"RCPT TO:<a@x\0Tb@y>");
        assert_eq!(cmd.arg, b"TO:<a@x\nTb@y>");
    }
}
