//! The message body decoder: finds `CRLF.CRLF` across split reads, undoes
//! dot-stuffing, stores CRLF as LF, counts hops in the header and the
//! stored size, and detects bare LF (fatal, as in qmail) and bare CR
//! (refused: it is never forwarded, against SMTP smuggling).
//!
//! For BDAT chunks ([`DataDecoder::chunked`]) the same rules apply without
//! the dot: the chunk sizes frame the message, a `.` line is data, and a
//! bare LF is recorded instead of ending the session, since the framing
//! stays intact.

/// Where the decoder is within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line (also right after `354`).
    LineStart,
    /// Inside a line.
    InLine,
    /// After a CR inside a line.
    Cr,
    /// After a CR at the start of a line.
    CrAtStart,
    /// After a `.` at the start of a line.
    Dot,
    /// After `.` CR at the start of a line.
    DotCr,
}

/// What a call to [`DataDecoder::feed`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// All input was consumed; the terminator has not been seen yet.
    NeedMore,
    /// The terminating `.` line ended at the returned offset.
    End,
    /// A LF without CR was found; the session must end.
    BareLf,
}

/// Incremental decoder for one message body.
#[derive(Debug, Clone)]
pub struct DataDecoder {
    state: State,
    /// Still inside the header block (before the first empty line).
    in_header: bool,
    /// Raw bytes of the current line seen so far (for hop matching).
    line_pos: usize,
    /// The current raw line still matches `received` / `delivered` / CRLF.
    maybe_received: bool,
    maybe_delivered: bool,
    maybe_blank: bool,
    /// Received/Delivered header lines counted so far.
    pub hops: u32,
    /// Stored body bytes so far.
    pub size: u64,
    /// A CR not followed by LF was seen: the message must be refused.
    pub bare_cr: bool,
    /// A LF not preceded by CR was seen in a BDAT chunk: the message must
    /// be refused (in DATA a bare LF ends the body at once).
    pub bare_lf: bool,
    /// BDAT: no dot-stuffing and no terminator; the chunk sizes frame it.
    chunked: bool,
    /// Applied to what is stored: removes forged Authentication-Results:
    /// fields when we add our own.
    filter: Option<Box<super::header_filter::HeaderFilter>>,
}

impl Default for DataDecoder {
    fn default() -> Self {
        DataDecoder {
            state: State::LineStart,
            in_header: true,
            line_pos: 0,
            maybe_received: true,
            maybe_delivered: true,
            maybe_blank: true,
            hops: 0,
            size: 0,
            bare_cr: false,
            bare_lf: false,
            chunked: false,
            filter: None,
        }
    }
}

impl DataDecoder {
    /// A decoder for a message sent in BDAT chunks: feed every chunk's
    /// bytes, then call [`DataDecoder::finish_chunks`] after the last.
    pub fn chunked() -> DataDecoder {
        DataDecoder {
            chunked: true,
            ..DataDecoder::default()
        }
    }

    /// The same decoder, passing what it stores through `filter`.
    pub fn with_header_filter(mut self, filter: super::header_filter::HeaderFilter) -> Self {
        self.filter = Some(Box::new(filter));
        self
    }

    /// Forged Authentication-Results: fields removed so far.
    pub fn removed_fields(&self) -> usize {
        self.filter.as_ref().map_or(0, |f| f.removed)
    }

    /// Passes what was appended to `out` from `start` on through the
    /// filter, if there is one; `end`: the message is complete.
    fn filter_tail(&mut self, out: &mut Vec<u8>, start: usize, end: bool) {
        if let Some(f) = &mut self.filter {
            let new = out.split_off(start);
            f.feed(&new, out);
            if end {
                f.finish(out);
            }
        }
    }

    /// Ends a chunked message: a CR left pending at the very end is a bare
    /// CR, and a last line without its line end gets one, so what is stored
    /// always ends with a whole line.
    pub fn finish_chunks(&mut self, out: &mut Vec<u8>) {
        let start = out.len();
        self.finish_chunks_raw(out);
        self.filter_tail(out, start, true);
    }

    /// [`DataDecoder::finish_chunks`] before filtering.
    fn finish_chunks_raw(&mut self, out: &mut Vec<u8>) {
        match self.state {
            State::LineStart => {}
            State::Cr | State::CrAtStart => {
                self.bare_cr = true;
                self.emit(b'\r', out);
                self.emit(b'\n', out);
            }
            State::InLine | State::Dot | State::DotCr => self.emit(b'\n', out),
        }
        self.state = State::LineStart;
    }

    /// A LF without CR at input offset `i`: in DATA the body ends here; in
    /// a BDAT chunk it is recorded and decoding goes on at a line start.
    fn bare_lf_at(&mut self, i: usize) -> Option<(usize, Progress)> {
        if self.chunked {
            self.bare_lf = true;
            self.state = State::LineStart;
            None
        } else {
            Some((i + 1, Progress::BareLf))
        }
    }

    /// Feeds raw client bytes; appends the stored form to `out`. Returns the
    /// number of input bytes consumed and what was found. On `End` and
    /// `BareLf` the bytes after the returned offset are not part of the body.
    /// A chunked decoder always consumes all and answers `NeedMore`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Progress) {
        let start = out.len();
        let result = self.feed_raw(input, out);
        if self.filter.is_some() {
            self.filter_tail(out, start, result.1 == Progress::End);
        }
        result
    }

    /// [`DataDecoder::feed`] before filtering.
    fn feed_raw(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Progress) {
        for (i, &ch) in input.iter().enumerate() {
            if self.in_header {
                self.count_hops(ch);
            }
            match self.state {
                State::LineStart => match ch {
                    b'\n' => {
                        if let Some(end) = self.bare_lf_at(i) {
                            return end;
                        }
                        continue;
                    }
                    b'\r' => self.state = State::CrAtStart,
                    b'.' if !self.chunked => self.state = State::Dot,
                    _ => self.in_line(ch, out),
                },
                State::InLine => self.in_line(ch, out),
                State::Cr | State::CrAtStart => {
                    if ch == b'\n' {
                        self.emit(b'\n', out);
                        self.state = State::LineStart;
                    } else {
                        self.bare_cr = true;
                        self.emit(b'\r', out);
                        self.in_line(ch, out);
                    }
                }
                State::Dot => match ch {
                    b'\r' => self.state = State::DotCr,
                    b'\n' => return (i + 1, Progress::BareLf),
                    _ => self.in_line(ch, out),
                },
                State::DotCr => {
                    if ch == b'\n' {
                        return (i + 1, Progress::End);
                    }
                    self.bare_cr = true;
                    self.emit(b'.', out);
                    self.emit(b'\r', out);
                    self.in_line(ch, out);
                }
            }
            if self.state == State::InLine && ch == b'\n' {
                if let Some(end) = self.bare_lf_at(i) {
                    return end;
                }
            }
        }
        (input.len(), Progress::NeedMore)
    }

    /// Handles a byte inside a line (a LF here is caught by the caller).
    fn in_line(&mut self, ch: u8, out: &mut Vec<u8>) {
        match ch {
            b'\r' => self.state = State::Cr,
            b'\n' => self.state = State::InLine,
            _ => {
                self.emit(ch, out);
                self.state = State::InLine;
            }
        }
    }

    /// Stores one byte.
    fn emit(&mut self, ch: u8, out: &mut Vec<u8>) {
        out.push(ch);
        self.size += 1;
    }

    /// Hop counting on the raw client bytes, as qmail does: header lines
    /// starting with `received` or `delivered` (any case), up to the first
    /// raw CRLF line. A dot-stuffed `.Received` line is not counted.
    fn count_hops(&mut self, ch: u8) {
        let lower = ch.to_ascii_lowercase();
        let pos = self.line_pos;
        if pos < 9 {
            self.maybe_delivered &= b"delivered"[pos] == lower;
            if self.maybe_delivered && pos == 8 {
                self.hops = self.hops.saturating_add(1);
            }
            self.maybe_received &= b"received".get(pos) == Some(&lower);
            if self.maybe_received && pos == 7 {
                self.hops = self.hops.saturating_add(1);
            }
            self.maybe_blank &= b"\r\n".get(pos) == Some(&ch);
            if self.maybe_blank && pos == 1 {
                self.in_header = false;
            }
            self.line_pos += 1;
        }
        if ch == b'\n' {
            self.line_pos = 0;
            self.maybe_received = true;
            self.maybe_delivered = true;
            self.maybe_blank = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `chunk` bytes; returns stored bytes,
    /// the final progress and the offset after the terminator.
    fn run(input: &[u8], chunk: usize) -> (Vec<u8>, Progress, usize, DataDecoder) {
        let mut d = DataDecoder::default();
        let mut out = Vec::new();
        let mut off = 0;
        while off < input.len() {
            let end = (off + chunk).min(input.len());
            let (n, p) = d.feed(&input[off..end], &mut out);
            off += n;
            if p != Progress::NeedMore {
                return (out, p, off, d);
            }
        }
        (out, Progress::NeedMore, off, d)
    }

    #[test]
    fn body_table_with_split_reads() {
        let table: &[(&[u8], &[u8], Progress, bool)] = &[
            (b".\r\n", b"", Progress::End, false),
            (b"a\r\n.\r\n", b"a\n", Progress::End, false),
            (
                b"..x\r\n.x\r\n. x\r\n.\r\n",
                b".x\nx\n x\n",
                Progress::End,
                false,
            ),
            (b"a\r\n\r\nb\r\n.\r\n", b"a\n\nb\n", Progress::End, false),
            (b"a\nb", b"", Progress::BareLf, false),
            (b".\n", b"", Progress::BareLf, false),
            (b"\n", b"", Progress::BareLf, false),
            (b"a\rb\r\n.\r\n", b"a\rb\n", Progress::End, true),
            (b"a\r\r\n.\r\n", b"a\r\n", Progress::End, true),
            (b".\rx\r\n.\r\n", b".\rx\n", Progress::End, true),
            (b"nul\0ok\r\n.\r\n", b"nul\0ok\n", Progress::End, false),
            (b"a\r\n.", b"a\n", Progress::NeedMore, false),
            (b"x\r\n.\r\nMAIL", b"x\n", Progress::End, false),
        ];
        for &(input, want, progress, bare_cr) in table {
            for chunk in [1, 2, 3, 7, 4096] {
                let (out, p, _, d) = run(input, chunk);
                assert_eq!(p, progress, "{input:?} chunk {chunk}");
                if p != Progress::BareLf {
                    assert_eq!(out, want, "{input:?} chunk {chunk}");
                }
                assert_eq!(d.bare_cr, bare_cr, "{input:?}");
                assert_eq!(d.size, out.len() as u64);
            }
        }
    }

    #[test]
    fn terminator_offset_leaves_pipelined_bytes() {
        for chunk in [1, 5, 100] {
            let (_, p, off, _) = run(b"x\r\n.\r\nQUIT\r\n", chunk);
            assert_eq!((p, off), (Progress::End, 6));
        }
    }

    #[test]
    fn hops_are_counted_only_in_the_header() {
        let mut msg = Vec::new();
        msg.extend_from_slice(
            b"Received: a\r\nDELIVERED-to: b\r\nReceivedx\r\nReceive\r\nX: y\r\n",
        );
        msg.extend_from_slice(b"\r\nReceived: body\r\n.\r\n");
        for chunk in [1, 3, 1000] {
            let (_, p, _, d) = run(&msg, chunk);
            assert_eq!(p, Progress::End);
            assert_eq!(d.hops, 3);
        }
    }

    #[test]
    fn dot_stuffed_header_line_is_not_counted() {
        let (_, _, _, d) = run(b".Received: a\r\nReceived: b\r\n.\r\n", 1);
        assert_eq!(d.hops, 1);
    }

    /// Feeds `chunks` to a chunked decoder, each split into pieces of
    /// `piece` bytes, then ends it.
    fn run_chunked(chunks: &[&[u8]], piece: usize) -> (Vec<u8>, DataDecoder) {
        let mut d = DataDecoder::chunked();
        let mut out = Vec::new();
        for chunk in chunks {
            for part in chunk.chunks(piece.max(1)) {
                assert_eq!(d.feed(part, &mut out), (part.len(), Progress::NeedMore));
            }
        }
        d.finish_chunks(&mut out);
        assert_eq!(d.size, out.len() as u64);
        (out, d)
    }

    #[test]
    fn chunked_table() {
        // (whole message, stored, bare CR, bare LF)
        let table: &[(&[u8], &[u8], bool, bool)] = &[
            (b"", b"", false, false),
            (b"a\r\nb\r\n", b"a\nb\n", false, false),
            (b".\r\n..x\r\n", b".\n..x\n", false, false),
            (
                b"x\r\n.\r\nMAIL FROM:<a>\r\n",
                b"x\n.\nMAIL FROM:<a>\n",
                false,
                false,
            ),
            (b"no end", b"no end\n", false, false),
            (b"a\rb\r\n", b"a\rb\n", true, false),
            (b"a\r\n.\r.\r\n", b"a\n.\r.\n", true, false),
            (b"a\r", b"a\r\n", true, false),
            (b"a\nb\r\n", b"a", false, true),
            (b"a\r\n.\n.\r\n", b"a\n.", false, true),
            (b"\n", b"", false, true),
        ];
        for &(msg, want, bare_cr, bare_lf) in table {
            // Every split of the message into two chunks, each fed in
            // pieces of every small size.
            for cut in 0..=msg.len() {
                for piece in [1, 2, 3, 1000] {
                    let (out, d) = run_chunked(&[&msg[..cut], &msg[cut..]], piece);
                    let what = format!("{} cut {cut} piece {piece}", msg.escape_ascii());
                    assert_eq!((d.bare_cr, d.bare_lf), (bare_cr, bare_lf), "{what}");
                    if !bare_lf {
                        assert_eq!(out, want, "{what}");
                    }
                }
            }
        }
    }

    #[test]
    fn chunked_hops_are_counted_as_in_data() {
        let (_, d) = run_chunked(
            &[
                b"Received: a\r\nDelivered-To: b\r",
                b"\n\r\nReceived: c\r\n",
            ],
            1,
        );
        assert_eq!(d.hops, 2);
    }
}
