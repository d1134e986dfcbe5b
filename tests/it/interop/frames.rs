//! A gRPC call over a Unix socket written frame by frame (RFC 9113), for
//! requests the `http` crate cannot express: an `:authority` that is not an
//! RFC 3986 authority, as gRPC C-core, grpc-java and grpc-swift send it.
//! One unary call per connection; the header block is HPACK literals
//! without Huffman coding or indexing, so no HPACK state is needed to send
//! it, and response headers are only counted, never decoded.

use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const STREAM: u32 = 1;

/// How the server ended the call's stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// HEADERS with END_STREAM: the gRPC trailers.
    Trailers,
    /// RST_STREAM with this error code (1 is PROTOCOL_ERROR).
    Reset(u32),
    /// GOAWAY with this error code.
    GoAway(u32),
    /// The connection closed first.
    Closed,
}

/// What came back on the stream.
#[derive(Debug)]
pub struct Answer {
    /// The DATA payload: length-prefixed gRPC messages.
    pub data: Vec<u8>,
    pub ended: Ended,
}

impl Answer {
    /// The one gRPC message of a unary answer.
    pub fn message(&self) -> &[u8] {
        assert!(self.data.len() >= 5, "no gRPC message in {self:?}");
        assert_eq!(self.data[0], 0, "compressed message");
        let len = u32::from_be_bytes(self.data[1..5].try_into().unwrap()) as usize;
        assert_eq!(self.data.len(), 5 + len, "not exactly one message");
        &self.data[5..]
    }
}

/// Calls `path` on the socket with `authority` (None: no `:authority` at
/// all), extra `metadata`, and the encoded request `message`.
pub async fn unary(
    socket: &Path,
    authority: Option<&str>,
    path: &str,
    metadata: &[(&str, &str)],
    message: &[u8],
) -> Answer {
    let mut io = UnixStream::connect(socket).await.unwrap();
    let mut out = PREFACE.to_vec();
    frame(&mut out, SETTINGS, 0, 0, &[]);
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http (static table)
    literal_indexed_name(&mut block, 4, path); // :path
    if let Some(a) = authority {
        literal_indexed_name(&mut block, 1, a); // :authority
    }
    literal(&mut block, "content-type", "application/grpc");
    literal(&mut block, "te", "trailers");
    for (k, v) in metadata {
        literal(&mut block, k, v);
    }
    frame(&mut out, HEADERS, END_HEADERS, STREAM, &block);
    let mut body = vec![0];
    body.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    body.extend_from_slice(message);
    frame(&mut out, DATA, END_STREAM, STREAM, &body);
    io.write_all(&out).await.unwrap();
    read_answer(&mut io).await
}

/// Reads frames until the call's stream ends, acknowledging SETTINGS and
/// PING on the way.
async fn read_answer(io: &mut UnixStream) -> Answer {
    let mut data = Vec::new();
    loop {
        let mut head = [0u8; 9];
        if io.read_exact(&mut head).await.is_err() {
            return Answer {
                data,
                ended: Ended::Closed,
            };
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        io.read_exact(&mut payload).await.unwrap();
        let code = || u32::from_be_bytes(payload[..4].try_into().unwrap());
        let ended = match (kind, stream) {
            (SETTINGS, 0) if flags & ACK == 0 => {
                let mut ack = Vec::new();
                frame(&mut ack, SETTINGS, ACK, 0, &[]);
                io.write_all(&ack).await.unwrap();
                None
            }
            (PING, 0) if flags & ACK == 0 => {
                let mut pong = Vec::new();
                frame(&mut pong, PING, ACK, 0, &payload);
                io.write_all(&pong).await.unwrap();
                None
            }
            (GOAWAY, 0) => Some(Ended::GoAway(u32::from_be_bytes(
                payload[4..8].try_into().unwrap(),
            ))),
            (DATA, STREAM) => {
                data.extend_from_slice(&payload);
                (flags & END_STREAM != 0).then_some(Ended::Closed)
            }
            (HEADERS, STREAM) => (flags & END_STREAM != 0).then_some(Ended::Trailers),
            (RST_STREAM, STREAM) => Some(Ended::Reset(code())),
            _ => None,
        };
        if let Some(ended) = ended {
            return Answer { data, ended };
        }
    }
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap();
    assert!(len < 1 << 14, "frame larger than the default maximum");
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// An HPACK integer with an `n`-bit prefix, `high` holding the bits above
/// it (RFC 7541 §5.1).
fn integer(out: &mut Vec<u8>, n: u32, high: u8, value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(high | value as u8);
        return;
    }
    out.push(high | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A string literal without Huffman coding (RFC 7541 §5.2).
fn string(out: &mut Vec<u8>, s: &str) {
    integer(out, 7, 0, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// Literal header field without indexing, name from the static table
/// (RFC 7541 §6.2.2).
fn literal_indexed_name(out: &mut Vec<u8>, index: usize, value: &str) {
    integer(out, 4, 0, index);
    string(out, value);
}

/// Literal header field without indexing, new name (RFC 7541 §6.2.2).
fn literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0);
    string(out, name);
    string(out, value);
}

#[test]
fn integers_use_the_prefix_then_continuation_bytes() {
    // RFC 7541 C.1.1 and C.1.2.
    let mut out = Vec::new();
    integer(&mut out, 5, 0, 10);
    assert_eq!(out, [0x0a]);
    out.clear();
    integer(&mut out, 5, 0, 1337);
    assert_eq!(out, [0x1f, 0x9a, 0x0a]);
}
