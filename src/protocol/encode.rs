//! The inverse of the DATA decoder: a stored message (LF line ends) into
//! what goes on the wire to a downstream SMTP/LMTP server — CRLF line
//! ends, dot-stuffed, and never a bare CR or LF — followed by the
//! terminating `.` line.

/// Incremental encoder; feed the message in pieces, then [`DataEncoder::end`].
#[derive(Debug, Clone)]
pub struct DataEncoder {
    /// The next byte starts a line.
    line_start: bool,
}

impl Default for DataEncoder {
    fn default() -> Self {
        DataEncoder { line_start: true }
    }
}

impl DataEncoder {
    /// Appends the wire form of `input` to `out`. A CR in the input is
    /// dropped (a stored message has none; one in a plugin's header line
    /// must not reach the wire bare); LF becomes CRLF; a `.` starting a
    /// line is doubled.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 32 + 2);
        for &b in input {
            match b {
                b'\r' => {}
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.line_start = true;
                }
                _ => {
                    if self.line_start && b == b'.' {
                        out.push(b'.');
                    }
                    out.push(b);
                    self.line_start = false;
                }
            }
        }
    }

    /// Appends the end of the message: a CRLF if the last line was not
    /// terminated, then `.` CRLF.
    pub fn end(&mut self, out: &mut Vec<u8>) {
        if !self.line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        self.line_start = true;
    }
}

/// The size the message will have on the wire without dot-stuffing (for
/// the `SIZE=` parameter): each LF becomes two bytes.
pub fn wire_size(stored: &[u8]) -> u64 {
    stored.len() as u64 + stored.iter().filter(|&&b| b == b'\n').count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::data::{DataDecoder, Progress};

    fn encode_in_pieces(input: &[u8], piece: usize) -> Vec<u8> {
        let mut e = DataEncoder::default();
        let mut out = Vec::new();
        for c in input.chunks(piece.max(1)) {
            e.feed(c, &mut out);
        }
        e.end(&mut out);
        out
    }

    #[test]
    fn table() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b".\r\n"),
            (b"a\n", b"a\r\n.\r\n"),
            (b"a", b"a\r\n.\r\n"),
            (b".\n", b"..\r\n.\r\n"),
            (b"x\n.y\n..\n", b"x\r\n..y\r\n...\r\n.\r\n"),
            (b"a\r\nb\rc\n", b"a\r\nbc\r\n.\r\n"),
            (b"\n\n", b"\r\n\r\n.\r\n"),
        ];
        for (input, want) in cases {
            for piece in [1, 2, 3, 100] {
                assert_eq!(
                    encode_in_pieces(input, piece),
                    *want,
                    "{:?} in pieces of {piece}",
                    input.escape_ascii().to_string()
                );
            }
        }
    }

    #[test]
    fn decoder_undoes_encoder() {
        let mut rng = crate::testing::Rng::new(7);
        for _ in 0..2000 {
            // Stored messages have no CR.
            let stored: Vec<u8> = rng
                .bytes(80)
                .into_iter()
                .map(|b| match b % 5 {
                    0 => b'\n',
                    1 => b'.',
                    _ if b == b'\r' => b'x',
                    _ => b,
                })
                .collect();
            let wire = encode_in_pieces(&stored, 7);
            assert!(
                !wire.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n'),
                "bare CR"
            );
            let mut d = DataDecoder::default();
            let mut out = Vec::new();
            let (n, p) = d.feed(&wire, &mut out);
            assert_eq!((n, p), (wire.len(), Progress::End));
            let mut expect = stored.clone();
            if !expect.is_empty() && !expect.ends_with(b"\n") {
                expect.push(b'\n');
            }
            assert_eq!(out, expect);
        }
    }

    #[test]
    fn size() {
        assert_eq!(wire_size(b"ab\ncd\n"), 8);
    }
}
