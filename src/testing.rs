//! Helpers for unit tests: a reader that delivers input in small pieces
//! (split reads) and a deterministic pseudo-random byte generator.

use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// An `AsyncRead` that returns at most `chunk` bytes per read.
pub struct Trickle {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
}

impl Trickle {
    /// Reads `data` in pieces of `chunk` bytes.
    pub fn new(data: &[u8], chunk: usize) -> Trickle {
        Trickle {
            data: data.to_vec(),
            pos: 0,
            chunk: chunk.max(1),
        }
    }
}

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self
            .chunk
            .min(buf.remaining())
            .min(self.data.len() - self.pos);
        let start = self.pos;
        buf.put_slice(&self.data[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// xorshift64: the same sequence on every run.
pub struct Rng(u64);

impl Rng {
    /// A generator with a fixed seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Up to `max` bytes, biased towards SMTP's special bytes.
    pub fn bytes(&mut self, max: usize) -> Vec<u8> {
        const SPECIAL: &[u8] = b"\r\n.<>@\":\\ \0[]";
        let len = (self.next() as usize) % (max + 1);
        (0..len)
            .map(|_| {
                let r = self.next();
                if r.is_multiple_of(3) {
                    SPECIAL[(r >> 8) as usize % SPECIAL.len()]
                } else {
                    (r >> 16) as u8
                }
            })
            .collect()
    }
}
