//! Removes forged `Authentication-Results:` fields from a message's header
//! section as it streams to the queue: a field naming our authserv-id can
//! only have been written by us (RFC 8601 §5), so one arriving from outside
//! is removed before ours is added. Works on decoded (LF) lines split at any
//! point; everything after the header section passes untouched.

/// Longest field held while deciding; a longer one is passed on whole.
pub const MAX_FIELD: usize = 64 * 1024;

/// The filter's position in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// In the header section.
    Headers,
    /// In an over-long field, passed on until the next field starts.
    LongField,
    /// After the empty line: the body.
    Body,
}

/// The streaming filter for one message.
#[derive(Debug, Clone)]
pub struct HeaderFilter {
    /// Our authserv-id, lower case.
    authserv_id: Vec<u8>,
    /// Where we are.
    part: Part,
    /// The field being read (its lines so far), not yet passed on.
    field: Vec<u8>,
    /// The start of a line not yet ended.
    line: Vec<u8>,
    /// In a long field: a line was passed on without its end yet.
    mid_line: bool,
    /// Fields removed so far.
    pub removed: usize,
}

impl HeaderFilter {
    /// A filter removing fields that name `authserv_id`.
    pub fn new(authserv_id: &[u8]) -> HeaderFilter {
        HeaderFilter {
            authserv_id: authserv_id.to_ascii_lowercase(),
            part: Part::Headers,
            field: Vec::new(),
            line: Vec::new(),
            mid_line: false,
            removed: 0,
        }
    }

    /// Filters `input`, appending what passes to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            if self.part == Part::Body {
                out.extend_from_slice(input);
                return;
            }
            let (piece, rest, ended) = match input.iter().position(|&b| b == b'\n') {
                Some(i) => (&input[..=i], &input[i + 1..], true),
                None => (input, &input[..0], false),
            };
            input = rest;
            if self.part == Part::LongField && !self.mid_line && !continues(piece) {
                self.part = Part::Headers;
            }
            if self.part == Part::LongField {
                out.extend_from_slice(piece);
                self.mid_line = !ended;
                continue;
            }
            self.line.extend_from_slice(piece);
            if !ended {
                if self.line.len() + self.field.len() > MAX_FIELD {
                    self.pass_long(out);
                }
                continue;
            }
            let line = std::mem::take(&mut self.line);
            if continues(&line) && !self.field.is_empty() {
                self.field.extend_from_slice(&line);
                if self.field.len() > MAX_FIELD {
                    self.pass_long(out);
                }
                continue;
            }
            self.settle(out);
            if line == b"\n" || !is_field_start(&line) {
                out.extend_from_slice(&line);
                if line == b"\n" {
                    self.part = Part::Body;
                }
                continue;
            }
            self.field = line;
        }
    }

    /// Passes on what is held at the end of the message.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.part == Part::Headers && !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            if continues(&line) && !self.field.is_empty() {
                self.field.extend_from_slice(&line);
            } else {
                self.settle(out);
                match is_field_start(&line) {
                    true => self.field = line,
                    false => out.extend_from_slice(&line),
                }
            }
        }
        self.settle(out);
        out.append(&mut self.line);
    }

    /// Decides about the held field: removed or passed on.
    fn settle(&mut self, out: &mut Vec<u8>) {
        if self.field.is_empty() {
            return;
        }
        if names_authserv_id(&self.field, &self.authserv_id) {
            self.removed += 1;
            self.field.clear();
        } else {
            out.append(&mut self.field);
        }
    }

    /// A field too long to hold: passed on, with the rest of it.
    fn pass_long(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.field);
        self.mid_line = !self.line.is_empty();
        out.append(&mut self.line);
        self.part = Part::LongField;
    }
}

/// A line continuing the field before it (starts with a space or tab).
fn continues(line: &[u8]) -> bool {
    matches!(line.first(), Some(b' ' | b'\t'))
}

/// A line that starts a header field: a name of printable characters,
/// then `:`.
fn is_field_start(line: &[u8]) -> bool {
    match line.iter().position(|&b| b == b':') {
        Some(0) | None => false,
        Some(i) => line[..i].iter().all(|&b| (b'!'..=b'~').contains(&b)),
    }
}

/// Whether `field` is an `Authentication-Results:` field whose
/// authserv-id is `id` (lower case). Comments before the id are skipped.
pub fn names_authserv_id(field: &[u8], id: &[u8]) -> bool {
    const NAME: &[u8] = b"authentication-results:";
    if field.len() < NAME.len() || !field[..NAME.len()].eq_ignore_ascii_case(NAME) {
        return false;
    }
    let mut value = &field[NAME.len()..];
    loop {
        value = value.trim_ascii_start();
        // A comment (RFC 5322 CFWS), possibly nested.
        if value.first() == Some(&b'(') {
            let mut depth = 0usize;
            let mut end = value.len();
            for (i, &b) in value.iter().enumerate() {
                match b {
                    b'(' => depth += 1,
                    b')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            value = &value[end..];
            continue;
        }
        break;
    }
    let token_end = value
        .iter()
        .position(|&b| b == b';' || b == b'(' || b.is_ascii_whitespace())
        .unwrap_or(value.len());
    let token = &value[..token_end];
    let token = token.strip_prefix(b"\"").unwrap_or(token);
    let token = token.strip_suffix(b"\"").unwrap_or(token);
    !token.is_empty() && token.eq_ignore_ascii_case(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(msg: &[u8], splits: usize) -> (Vec<u8>, usize) {
        let mut f = HeaderFilter::new(b"MX.Example.org");
        let mut out = Vec::new();
        for part in msg.chunks(splits.max(1)) {
            f.feed(part, &mut out);
        }
        f.finish(&mut out);
        (out, f.removed)
    }

    #[test]
    fn removes_only_ours_at_any_split() {
        let msg = b"Received: x\nAuthentication-Results: mx.example.org;\n\tspf=pass\nAuthentication-Results: other.example; dkim=pass\nauthentication-results: (c) MX.EXAMPLE.ORG 1; none\nSubject: hi\n\nAuthentication-Results: mx.example.org; body\n";
        let want = b"Received: x\nAuthentication-Results: other.example; dkim=pass\nSubject: hi\n\nAuthentication-Results: mx.example.org; body\n";
        for split in [1, 2, 3, 7, 1000] {
            let (out, removed) = run(msg, split);
            assert_eq!(out, want.to_vec(), "split {split}");
            assert_eq!(removed, 2);
        }
    }

    #[test]
    fn keeps_everything_else() {
        for msg in [
            &b"no header section at all\nline\n"[..],
            b"Subject: x\n\tcontinued\nTo: y",
            b"\nbody only\n",
            b"Authentication-Results: mx.example.org.evil; x\n\n",
            b"Authentication-Results:\n\n",
        ] {
            for split in [1, 5, 100] {
                assert_eq!(run(msg, split).0, msg.to_vec());
            }
        }
        let (out, removed) = run(b"Authentication-Results: mx.example.org; x", 4);
        assert_eq!((out.len(), removed), (0, 1));
    }

    #[test]
    fn long_fields_pass_whole() {
        let mut msg = b"Authentication-Results: mx.example.org; ".to_vec();
        msg.extend(std::iter::repeat_n(b'a', MAX_FIELD + 10));
        msg.extend_from_slice(b"\n\tmore\nAuthentication-Results: mx.example.org; x\nTo: y\n\nb\n");
        for split in [1, 999, 100_000] {
            let (out, removed) = run(&msg, split);
            assert_eq!(removed, 1, "split {split}");
            assert_eq!(
                out.len(),
                msg.len() - b"Authentication-Results: mx.example.org; x\n".len()
            );
        }
    }
}
