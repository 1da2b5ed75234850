//! Server-sent events cut at their boundaries, bytes unchanged: the proxy forwards each event
//! whole as soon as its blank line arrives, and reads its `event:` name and `data:` payload.
//! Pure. (A library parser would hand back decoded fields, not the bytes to forward.)

use bytes::{Bytes, BytesMut};

/// One event: its bytes as received (terminating blank line included), its name and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub raw: Bytes,
    pub name: Option<String>,
    /// The `data:` lines joined by `\n`, per the HTML standard.
    pub data: Vec<u8>,
}

/// Bytes in, whole events out.
#[derive(Debug, Default)]
pub struct Splitter {
    pending: BytesMut,
}

/// Where the first event ends in `buf`: the index just past its blank line. Lines end in
/// `\r\n`, `\n` or `\r`; a `\r` last in the buffer may be half of a `\r\n`, so it waits.
fn boundary(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    let mut line_start = true;
    while i < buf.len() {
        let end = match buf[i] {
            b'\r' if buf.get(i + 1) == Some(&b'\n') => i + 2,
            b'\r' if i + 1 == buf.len() => return None,
            b'\r' | b'\n' => i + 1,
            _ => {
                line_start = false;
                i += 1;
                continue;
            }
        };
        if line_start {
            return Some(end);
        }
        line_start = true;
        i = end;
    }
    None
}

fn parse(raw: Bytes) -> SseEvent {
    let mut name = None;
    let mut data: Vec<u8> = Vec::new();
    let mut first = true;
    for line in raw.split(|b| *b == b'\n' || *b == b'\r') {
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(0) => continue, // a comment
            Some(at) => {
                let value = &line[at + 1..];
                (&line[..at], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => name = Some(String::from_utf8_lossy(value).into_owned()),
            b"data" => {
                if !first {
                    data.push(b'\n');
                }
                data.extend_from_slice(value);
                first = false;
            }
            _ => {}
        }
    }
    SseEvent { raw, name, data }
}

impl Splitter {
    /// Takes a chunk; returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = boundary(&self.pending) {
            let raw = self.pending.split_to(end).freeze();
            events.push(parse(raw));
        }
        events
    }

    /// What is left when the stream ends (an event without its blank line).
    pub fn finish(&mut self) -> Option<SseEvent> {
        if self.pending.is_empty() {
            return None;
        }
        Some(parse(self.pending.split().freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_come_out_whole_and_unchanged() {
        let stream = b"event: message_start\ndata: {\"a\":1}\n\n: ping\n\ndata: x\r\ndata: y\r\n\r\ndata: [DONE]\n\n";
        for cut in 0..stream.len() {
            let mut splitter = Splitter::default();
            let mut events = splitter.push(&stream[..cut]);
            events.extend(splitter.push(&stream[cut..]));
            assert!(splitter.finish().is_none(), "cut at {cut}");
            let raw: Vec<u8> = events.iter().flat_map(|e| e.raw.to_vec()).collect();
            assert_eq!(raw, stream.to_vec(), "cut at {cut}");
            assert_eq!(events.len(), 4);
            assert_eq!(events[0].name.as_deref(), Some("message_start"));
            assert_eq!(events[0].data, b"{\"a\":1}");
            assert!(events[1].data.is_empty());
            assert_eq!(events[2].data, b"x\ny");
            assert_eq!(events[3].data, b"[DONE]");
        }
    }

    #[test]
    fn a_trailing_event_without_its_blank_line_is_kept() {
        let mut splitter = Splitter::default();
        assert!(splitter.push(b"data: {}\n").is_empty());
        let last = splitter.finish().expect("the rest");
        assert_eq!(last.data, b"{}");
        assert_eq!(last.raw.as_ref(), b"data: {}\n");
    }
}
