//! SMTP replies as data.

/// One reply line as sent to the client (without the CRLF).
///
/// qmail's replies are full lines (`553 sorry, ... (#5.7.1)`); plugin texts
/// are sent verbatim, so a reply is simply the bytes of the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply(pub Vec<u8>);

impl Reply {
    /// A reply from a static or formatted text line.
    pub fn text(s: impl Into<String>) -> Reply {
        Reply(s.into().into_bytes())
    }

    /// The three-digit code, if the line starts with one.
    pub fn code(&self) -> Option<u16> {
        let d = self.0.get(..3)?;
        if d.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(d).ok()?.parse().ok()
        } else {
            None
        }
    }
}

/// Parses one reply line of a server (a downstream MTA): the code, whether
/// more lines follow (`NNN-`), and the text. `None` when the line is not a
/// reply (no three-digit code, a code starting with 0, a bad separator).
pub fn parse_line(line: &[u8]) -> Option<(u16, bool, &[u8])> {
    let code = line.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) || code[0] == b'0' {
        return None;
    }
    let code =
        (code[0] - b'0') as u16 * 100 + (code[1] - b'0') as u16 * 10 + (code[2] - b'0') as u16;
    match line.get(3) {
        None => Some((code, false, b"")),
        Some(b' ') => Some((code, false, &line[4..])),
        Some(b'-') => Some((code, true, &line[4..])),
        Some(_) => None,
    }
}

/// Fixed reply texts shared by several places (qmail-compatible wording).
pub mod text {
    /// Control files could not be read; sent before closing.
    pub const UNREADABLE_CONTROLS: &str = "421 unable to read controls (#4.3.0)";
    /// Local addresses could not be enumerated.
    pub const NO_LOCAL_IPS: &str = "421 unable to figure out my IP addresses (#4.3.0)";
    /// Read timeout on the client connection.
    pub const TIMEOUT: &str = "451 timeout (#4.4.2)";
    /// A LF without CR in the message body.
    pub const BARE_LF: &str = "451 See http://pobox.com/~djb/docs/smtplf.html.";
    /// A CR without LF in the message body (SMTP smuggling defence).
    pub const BARE_CR: &str = "554 bare CR in message body; lines must end in CRLF (#5.6.2)";
    /// A command line longer than the limit.
    pub const LINE_TOO_LONG: &str = "500 line too long (#5.5.2)";
    /// Address parse failure or over-long address.
    pub const SYNTAX: &str = "555 syntax error (#5.5.4)";
    /// RCPT or DATA without an open transaction.
    pub const MAIL_FIRST: &str = "503 MAIL first (#5.5.1)";
    /// DATA without recipients.
    pub const RCPT_FIRST: &str = "503 RCPT first (#5.5.1)";
    /// Sender listed in badmailfrom, reported at RCPT.
    pub const BADMAILFROM: &str =
        "553 sorry, your envelope sender is in my badmailfrom list (#5.7.1)";
    /// MAIL with `SMTPUTF8` whose sender is not UTF-8 (RFC 6531 §3.3).
    pub const SENDER_NOT_UTF8: &str = "553 sorry, that address is not valid UTF-8 (#5.1.7)";
    /// RCPT in an SMTPUTF8 transaction whose recipient is not UTF-8.
    pub const RCPT_NOT_UTF8: &str = "553 sorry, that address is not valid UTF-8 (#5.1.3)";
    /// Recipient domain not in rcpthosts.
    pub const NOT_RCPTHOST: &str =
        "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)";
    /// Message (or declared SIZE) larger than databytes.
    pub const TOO_BIG: &str = "552 sorry, that message size exceeds my databytes limit (#5.3.4)";
    /// More recipients than one message may have.
    pub const TOO_MANY_RCPTS: &str = "452 too many recipients (#4.5.3)";
    /// Too many Received:/Delivered-To: headers.
    pub const LOOPING: &str = "554 too many hops, this message is looping (#5.4.6)";
    /// The queue could not be started.
    pub const QQT_FAILURE: &str = "451 qqt failure (#4.3.0)";
    /// An address another MTA could read differently (comma lists, `%`,
    /// `!`, quoted or several `@`), refused when the queue hands addresses
    /// to one (sendmail, smtp, lmtp).
    pub const ADDRESS_FORM: &str = "553 sorry, that address form is not accepted here (#5.1.3)";
    /// RCPT-time verification: a recipient accepted earlier in the
    /// transaction was refused when passed again on a new connection.
    pub const DOWNSTREAM_CHANGED: &str =
        "451 mail server changed its answer for an earlier recipient, try again later (#4.4.2)";
    /// A BDAT line without a valid size: the connection is closed, since
    /// the chunk's bytes cannot be told apart from commands.
    pub const BDAT_SYNTAX: &str = "501 syntax error in BDAT, closing connection (#5.5.4)";
    /// DATA while a message is being received in BDAT chunks.
    pub const DATA_AFTER_BDAT: &str = "503 DATA after BDAT is not allowed, send RSET (#5.5.1)";
    /// Unknown or unsupported verbs.
    pub const UNIMPLEMENTED: &str = "502 unimplemented (#5.5.1)";
    /// DATA accepted, send the message.
    pub const GO_AHEAD: &str = "354 go ahead";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lines() {
        assert_eq!(parse_line(b"250 ok"), Some((250, false, &b"ok"[..])));
        assert_eq!(
            parse_line(b"250-PIPELINING"),
            Some((250, true, &b"PIPELINING"[..]))
        );
        assert_eq!(parse_line(b"354"), Some((354, false, &b""[..])));
        assert_eq!(parse_line(b"25"), None);
        assert_eq!(parse_line(b"abc ok"), None);
        assert_eq!(parse_line(b"250xok"), None);
        assert_eq!(parse_line(b"050 x"), None);
    }

    #[test]
    fn code_is_read_from_the_first_three_digits() {
        assert_eq!(Reply::text("250 ok").code(), Some(250));
        assert_eq!(Reply::text("451-x").code(), Some(451));
        assert_eq!(Reply::text("ok").code(), None);
        assert_eq!(Reply::text("25").code(), None);
    }
}
