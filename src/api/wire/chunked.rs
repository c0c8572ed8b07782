//! Chunked request bodies (RFC 9112 section 7.1), decoded as their bytes arrive, with the
//! strict reading `super` documents: plain hex sizes, CRLF line ends, no control characters, a
//! bounded chunk line and a bounded body.

use super::{MAX_HEAD, trim_ows};

/// Longest chunk-size line (with extensions) of a chunked body.
const MAX_CHUNK_LINE: usize = 4096;

/// Why a chunked body cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChunkError {
    /// The decoded body exceeds the limit: 413.
    TooLarge,
    /// Bad framing: 400.
    Malformed(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
    /// The body is complete.
    Done,
}

/// An incremental decoder of a chunked body: fed the bytes as they arrive, it appends the data
/// to the body (up to what is kept) and says how much it consumed (the rest belongs to the next
/// request).
#[derive(Debug)]
pub(crate) struct Chunked {
    state: ChunkState,
    limit: usize,
    /// Data beyond this many bytes is decoded and dropped.
    kept: usize,
    /// Data bytes decoded so far.
    decoded: usize,
    trailer_bytes: usize,
}

impl Chunked {
    /// A decoder that refuses a body over `limit` bytes and keeps its first `kept`.
    pub(crate) fn new(limit: usize, kept: usize) -> Chunked {
        Chunked {
            state: ChunkState::Size,
            limit,
            kept,
            decoded: 0,
            trailer_bytes: 0,
        }
    }

    /// The body's length so far (kept or not).
    pub(crate) fn decoded(&self) -> usize {
        self.decoded
    }

    /// Whether the last chunk and the trailers have been read.
    pub(crate) fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes what it can of `input`, appending data to `body`; returns the bytes consumed.
    /// Whatever it leaves is an incomplete line, to be given again with more bytes.
    pub(crate) fn feed(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<usize, ChunkError> {
        let mut at = 0;
        loop {
            let rest = &input[at..];
            match self.state {
                ChunkState::Done => return Ok(at),
                ChunkState::Data(left) => {
                    if rest.is_empty() {
                        return Ok(at);
                    }
                    let n = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let keep = n.min(self.kept.saturating_sub(body.len()));
                    body.extend_from_slice(&rest[..keep]);
                    self.decoded += n;
                    at += n;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::Size | ChunkState::DataEnd | ChunkState::Trailers => {
                    let Some(line_len) = line(rest, MAX_CHUNK_LINE)? else {
                        return Ok(at);
                    };
                    // Without its CRLF.
                    let text = &rest[..line_len - 2];
                    at += line_len;
                    if text.iter().any(|b| b.is_ascii_control() && *b != b'\t') {
                        return Err(ChunkError::Malformed("a control character in a chunk line"));
                    }
                    self.on_line(text)?;
                }
            }
        }
    }

    fn on_line(&mut self, line: &[u8]) -> Result<(), ChunkError> {
        self.state = match self.state {
            ChunkState::DataEnd if line.is_empty() => ChunkState::Size,
            ChunkState::DataEnd => return Err(ChunkError::Malformed("chunk data overruns")),
            ChunkState::Size => {
                let size = chunk_size(line).ok_or(ChunkError::Malformed("bad chunk size"))?;
                if size == 0 {
                    ChunkState::Trailers
                } else if size > self.limit.saturating_sub(self.decoded) as u64 {
                    return Err(ChunkError::TooLarge);
                } else {
                    ChunkState::Data(size)
                }
            }
            ChunkState::Trailers if line.is_empty() => ChunkState::Done,
            ChunkState::Trailers => {
                self.trailer_bytes += line.len();
                if self.trailer_bytes > MAX_HEAD {
                    return Err(ChunkError::Malformed("trailers too long"));
                }
                ChunkState::Trailers
            }
            ChunkState::Data(_) | ChunkState::Done => self.state,
        };
        Ok(())
    }
}

/// The length of the first line of `bytes` with its CRLF, `None` if no LF has come yet.
fn line(bytes: &[u8], max: usize) -> Result<Option<usize>, ChunkError> {
    match bytes.iter().take(max + 2).position(|b| *b == b'\n') {
        Some(i) if i > 0 && bytes[i - 1] == b'\r' => Ok(Some(i + 1)),
        Some(_) => Err(ChunkError::Malformed("a chunk line not ended by CRLF")),
        None if bytes.len() > max => Err(ChunkError::Malformed("chunk line too long")),
        None => Ok(None),
    }
}

/// The size on a chunk-size line: hex digits, then nothing or extensions after `;` (spaces and
/// tabs may come before it). No sign, no `0x`, no white space first.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return None;
    }
    let rest = trim_ows(&line[digits..]);
    if !rest.is_empty() && rest[0] != b';' {
        return None;
    }
    let hex = std::str::from_utf8(&line[..digits]).ok()?;
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(pieces: &[&[u8]], limit: usize) -> Result<(Vec<u8>, Vec<u8>), ChunkError> {
        let mut decoder = Chunked::new(limit, limit);
        let mut body = Vec::new();
        let mut pending = Vec::new();
        for piece in pieces {
            pending.extend_from_slice(piece);
            let used = decoder.feed(&pending, &mut body)?;
            pending.drain(..used);
        }
        assert!(decoder.is_done());
        Ok((body, pending))
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\nGET /next";
        for split in 0..wire.len() {
            let (a, b) = wire.split_at(split);
            let byte_by_byte: Vec<&[u8]> = b.chunks(1).collect();
            let mut pieces = vec![a];
            pieces.extend(byte_by_byte);
            let (body, rest) = decode(&pieces, 100).unwrap_or_else(|e| panic!("{split}: {e:?}"));
            assert_eq!(body, b"hello world");
            assert_eq!(rest, b"GET /next");
        }
    }

    #[test]
    fn chunked_bodies_keep_their_start_and_count_the_whole() {
        let mut decoder = Chunked::new(100, 3);
        let mut body = Vec::new();
        let wire = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        assert_eq!(decoder.feed(wire, &mut body), Ok(wire.len()));
        assert!(decoder.is_done());
        assert_eq!((body.as_slice(), decoder.decoded()), (&b"hel"[..], 11));
        // The limit counts what was dropped too.
        let mut decoder = Chunked::new(8, 3);
        assert_eq!(
            decoder.feed(b"5\r\nhello\r\n6\r\n", &mut Vec::new()),
            Err(ChunkError::TooLarge)
        );
    }

    #[test]
    fn chunked_bodies_over_the_limit_or_malformed_are_refused() {
        assert_eq!(
            decode(&[b"5\r\nhello\r\n7\r\n"], 10),
            Err(ChunkError::TooLarge)
        );
        assert_eq!(
            decode(&[b"fffffffffffffffffff\r\n"], 10),
            Err(ChunkError::Malformed("bad chunk size"))
        );
        assert_eq!(
            decode(&[b"2\r\nabc\r\n"], 10),
            Err(ChunkError::Malformed("chunk data overruns"))
        );
        for bad_size in [&b"+2\r\n"[..], b" 2\r\n", b"0x2\r\n", b"2x\r\n", b"\r\n"] {
            assert_eq!(
                decode(&[bad_size], 10),
                Err(ChunkError::Malformed("bad chunk size")),
                "{}",
                String::from_utf8_lossy(bad_size)
            );
        }
        for bare_lf in [&b"2\n{}\r\n0\r\n\r\n"[..], b"2\r\n{}\n", b"0\r\n\n"] {
            assert_eq!(
                decode(&[bare_lf], 10),
                Err(ChunkError::Malformed("a chunk line not ended by CRLF"))
            );
        }
        assert_eq!(
            decode(&[b"2;a\rb\r\n"], 10),
            Err(ChunkError::Malformed("a control character in a chunk line"))
        );
        assert_eq!(
            decode(&[b"2 \t;x=\"y z\"\r\n{}\r\n0\r\n\r\n"], 10).map(|(body, _)| body),
            Ok(b"{}".to_vec())
        );
        let long = vec![b'1'; MAX_CHUNK_LINE + 10];
        assert_eq!(
            decode(&[&long], 10),
            Err(ChunkError::Malformed("chunk line too long"))
        );
    }
}
