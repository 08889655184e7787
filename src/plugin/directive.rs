//! The one-letter commands a plugin prints on stdout, one per line.

/// Which future reply an `L` directive queues an error for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// `LM`: reply to MAIL.
    Mail,
    /// `LR`: reply to RCPT.
    Rcpt,
    /// `LD`: reply to DATA.
    Data,
}

/// One parsed output line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Directive {
    /// `A`: accept, and switch plugins off for the rest of the connection.
    AcceptAll,
    /// `N`: accept; the server's own checks apply.
    Next,
    /// `O`: accept and skip the server's own check for this command.
    SkipChecks,
    /// `E<text>`: refuse the command with this reply line.
    Error(Vec<u8>),
    /// `R<text>`: send the line and close the connection.
    Reject(Vec<u8>),
    /// `D`: close the connection without a reply.
    Drop,
    /// `P<text>`: send the line now, before the command's own reply.
    Print(Vec<u8>),
    /// `H<text>`: add a header line to the message.
    Header(Vec<u8>),
    /// `S<NAME=value>`: set an environment variable for later children.
    SetEnv(Vec<u8>),
    /// `U<NAME>`: remove an environment variable.
    UnsetEnv(Vec<u8>),
    /// `C<address>`: replace the MAIL/RCPT address.
    Change(Vec<u8>),
    /// `LM`/`LR`/`LD<text>`: queue an error for a later command.
    Queue(Queued, Vec<u8>),
}

impl Directive {
    /// Parses one line (its LF already removed). Returns `None` for empty
    /// lines and unknown letters, which are ignored.
    pub fn parse(line: &[u8]) -> Option<Directive> {
        let (&first, rest) = line.split_first()?;
        let text = || rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())].to_vec();
        Some(match first {
            b'A' => Directive::AcceptAll,
            b'N' => Directive::Next,
            b'O' => Directive::SkipChecks,
            b'E' => Directive::Error(text()),
            b'R' => Directive::Reject(text()),
            b'D' => Directive::Drop,
            b'P' => Directive::Print(text()),
            b'H' => Directive::Header(rest.to_vec()),
            b'S' => Directive::SetEnv(text()),
            b'U' => Directive::UnsetEnv(text()),
            b'C' => Directive::Change(text()),
            b'L' => {
                let (&which, rest) = rest.split_first()?;
                let kind = match which {
                    b'M' => Queued::Mail,
                    b'R' => Queued::Rcpt,
                    b'D' => Queued::Data,
                    _ => return None,
                };
                Directive::Queue(
                    kind,
                    rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())].to_vec(),
                )
            }
            _ => return None,
        })
    }

    /// The line as the plugin printed it, without its LF: the letter and
    /// the text (what [`Directive::parse`] ignores, such as text after
    /// `N` or after a NUL, is not kept).
    pub fn line(&self) -> Vec<u8> {
        let (letter, text): (&[u8], &[u8]) = match self {
            Directive::AcceptAll => (b"A", b""),
            Directive::Next => (b"N", b""),
            Directive::SkipChecks => (b"O", b""),
            Directive::Error(t) => (b"E", t),
            Directive::Reject(t) => (b"R", t),
            Directive::Drop => (b"D", b""),
            Directive::Print(t) => (b"P", t),
            Directive::Header(t) => (b"H", t),
            Directive::SetEnv(t) => (b"S", t),
            Directive::UnsetEnv(t) => (b"U", t),
            Directive::Change(t) => (b"C", t),
            Directive::Queue(Queued::Mail, t) => (b"LM", t),
            Directive::Queue(Queued::Rcpt, t) => (b"LR", t),
            Directive::Queue(Queued::Data, t) => (b"LD", t),
        };
        [letter, text].concat()
    }

    /// Whether this directive ends the plugin's output and the hook.
    pub fn terminates(&self) -> bool {
        matches!(
            self,
            Directive::AcceptAll
                | Directive::Next
                | Directive::SkipChecks
                | Directive::Error(_)
                | Directive::Reject(_)
                | Directive::Drop
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_table() {
        let table: &[(&[u8], Option<Directive>)] = &[
            (b"", None),
            (b"A", Some(Directive::AcceptAll)),
            (b"Ntrailing", Some(Directive::Next)),
            (b"O", Some(Directive::SkipChecks)),
            (b"E550 no", Some(Directive::Error(b"550 no".to_vec()))),
            (b"E", Some(Directive::Error(b"".to_vec()))),
            (b"E550 a\0b", Some(Directive::Error(b"550 a".to_vec()))),
            (b"R421 bye", Some(Directive::Reject(b"421 bye".to_vec()))),
            (b"D", Some(Directive::Drop)),
            (b"P250-x", Some(Directive::Print(b"250-x".to_vec()))),
            (
                b"HX-A: b\0c",
                Some(Directive::Header(b"X-A: b\0c".to_vec())),
            ),
            (b"SFOO=bar", Some(Directive::SetEnv(b"FOO=bar".to_vec()))),
            (b"UFOO", Some(Directive::UnsetEnv(b"FOO".to_vec()))),
            (b"Cnew@x", Some(Directive::Change(b"new@x".to_vec()))),
            (
                b"LM451 later",
                Some(Directive::Queue(Queued::Mail, b"451 later".to_vec())),
            ),
            (b"LR5", Some(Directive::Queue(Queued::Rcpt, b"5".to_vec()))),
            (b"LD", Some(Directive::Queue(Queued::Data, b"".to_vec()))),
            (b"LX1", None),
            (b"L", None),
            (b"e550", None),
            (b"#comment", None),
        ];
        for (line, want) in table {
            assert_eq!(&Directive::parse(line), want, "{line:?}");
            if let Some(d) = want {
                assert_eq!(
                    Directive::parse(&d.line()).as_ref(),
                    Some(d),
                    "{line:?} printed back"
                );
            }
        }
        assert_eq!(Directive::Error(b"550 no".to_vec()).line(), b"E550 no");
        assert_eq!(Directive::Next.line(), b"N");
        assert_eq!(
            Directive::Queue(Queued::Data, b"451 later".to_vec()).line(),
            b"LD451 later"
        );
    }
}
