//! Reading the last lines of the log from its end, so `audit tail` costs
//! the records it shows, not the size of the whole log.

use std::io::{Read, Seek, SeekFrom};

/// Bytes read per step backwards.
const CHUNK: u64 = 64 * 1024;

/// The last `n` complete lines of `file` (without their newlines), oldest
/// first. Reads backwards from the end in chunks until it holds `n` lines
/// or reaches the start. A final line without a newline (a write in
/// progress or torn) is left out.
pub(super) fn last_lines<R: Read + Seek>(file: &mut R, n: usize) -> std::io::Result<Vec<Vec<u8>>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let len = file.seek(SeekFrom::End(0))?;
    // `buf` holds the file's bytes from `start` to its end.
    let mut start = len;
    let mut buf: Vec<u8> = Vec::new();
    // With k newlines in `buf` there are k - 1 lines between them, all
    // complete; the bytes before the first belong to an unread line.
    while start > 0 && newlines(&buf) <= n {
        let from = start.saturating_sub(CHUNK);
        let size = usize::try_from(start - from).unwrap_or(0);
        let mut chunk = vec![0u8; size];
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        start = from;
    }
    let Some(last_newline) = buf.iter().rposition(|&b| b == b'\n') else {
        return Ok(Vec::new());
    };
    let complete = buf.get(..last_newline).unwrap_or_default();
    let mut lines: Vec<&[u8]> = complete.split(|&b| b == b'\n').collect();
    if start > 0 && !lines.is_empty() {
        // Cut mid-line: the first piece is the end of an earlier record.
        lines.remove(0);
    }
    let skip = lines.len().saturating_sub(n);
    Ok(lines.into_iter().skip(skip).map(<[u8]>::to_vec).collect())
}

fn newlines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

    use super::*;
    use std::io::Cursor;

    /// A reader that counts the bytes read through it.
    struct Counting {
        inner: Cursor<Vec<u8>>,
        read: usize,
    }

    impl Read for Counting {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n;
            Ok(n)
        }
    }

    impl Seek for Counting {
        fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
            self.inner.seek(pos)
        }
    }

    fn text(n: usize) -> Vec<u8> {
        (1..=n)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect()
    }

    #[test]
    fn returns_the_last_lines_oldest_first() {
        let mut c = Cursor::new(text(5));
        let got = last_lines(&mut c, 2).unwrap();
        assert_eq!(got, vec![b"line 4".to_vec(), b"line 5".to_vec()]);
        let all = last_lines(&mut c, 10).unwrap();
        assert_eq!(all.len(), 5);
        assert_eq!(all[0], b"line 1");
        assert!(last_lines(&mut c, 0).unwrap().is_empty());
        assert!(
            last_lines(&mut Cursor::new(Vec::new()), 3)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_torn_final_line_is_left_out() {
        let mut bytes = text(3);
        bytes.extend_from_slice(b"partial");
        let got = last_lines(&mut Cursor::new(bytes), 2).unwrap();
        assert_eq!(got, vec![b"line 2".to_vec(), b"line 3".to_vec()]);
    }

    #[test]
    fn lines_spanning_chunks_come_back_whole() {
        let long = vec![b'x'; 100_000];
        let mut bytes = long.clone();
        bytes.push(b'\n');
        bytes.extend_from_slice(&long);
        bytes.push(b'\n');
        let got = last_lines(&mut Cursor::new(bytes), 2).unwrap();
        assert_eq!(got, vec![long.clone(), long]);
    }

    /// A 20 MB log: the tail of five records reads one chunk, not the file.
    #[test]
    fn reads_from_the_end_not_the_whole_file() {
        let bytes = text(2_000_000);
        assert!(bytes.len() > 20_000_000);
        let mut c = Counting {
            inner: Cursor::new(bytes),
            read: 0,
        };
        let got = last_lines(&mut c, 5).unwrap();
        assert_eq!(got.len(), 5);
        assert_eq!(got[4], b"line 2000000");
        assert_eq!(c.read, CHUNK as usize);
    }
}
