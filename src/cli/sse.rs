//! A parser of server-sent events (the `text/event-stream` format of the
//! WHATWG HTML standard, §9.2), fed with chunks as they come off the wire.
//!
//! Chunks split lines, events and even UTF-8 characters anywhere, so bytes
//! are kept until their line is complete. Lines end in LF, CRLF or a lone
//! CR (a CR at the end of a chunk may be followed by the LF in the next). A
//! blank line ends an event; its `data:` lines, joined with '\n', are what
//! it yields. Comments (`:` lines, the keep-alives) and the other fields
//! (`id`, `event`, `retry`) yield nothing; an event without data is not
//! yielded; an unfinished event at the end of the stream is dropped.

#[derive(Debug, Default)]
pub struct SseParser {
    /// The bytes of the line not yet ended.
    line: Vec<u8>,
    /// The data lines of the event not yet ended.
    data: Vec<String>,
    /// The last byte seen ended a line with CR: a LF right after is part of
    /// the same line ending.
    after_cr: bool,
    /// Whether the first line has been seen (a byte order mark may open it).
    started: bool,
}

impl SseParser {
    /// Feeds a chunk; returns the data of each event it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut events = Vec::new();
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let Some(stripped) = rest.strip_prefix(b"\n") {
                rest = stripped;
            }
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..end]);
            let cr = rest[end] == b'\r';
            rest = &rest[end + 1..];
            if cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            self.end_line(&mut events);
        }
        self.line.extend_from_slice(rest);
        events
    }

    fn end_line(&mut self, events: &mut Vec<String>) {
        let raw = std::mem::take(&mut self.line);
        let mut line = String::from_utf8_lossy(&raw).into_owned();
        if !self.started {
            self.started = true;
            if let Some(rest) = line.strip_prefix('\u{feff}') {
                line = rest.to_string();
            }
        }
        if line.is_empty() {
            if !self.data.is_empty() {
                events.push(self.data.join("\n"));
                self.data.clear();
            }
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_str(), ""),
        };
        if field == "data" {
            self.data.push(value.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(chunks: &[&[u8]]) -> Vec<String> {
        let mut p = SseParser::default();
        chunks.iter().flat_map(|c| p.push(c)).collect()
    }

    #[test]
    fn one_event_per_blank_line() {
        assert_eq!(
            feed(&[b"id: 1\ndata: 08-Jul-2014 15:04:46 (4) : Site DEV stopped successfully!\n\n"]),
            ["08-Jul-2014 15:04:46 (4) : Site DEV stopped successfully!"]
        );
        assert_eq!(feed(&[b"data: a\n\ndata: b\n\n"]), ["a", "b"]);
    }

    #[test]
    fn events_split_across_chunks_anywhere() {
        let stream = b"id: 7\ndata: 24-Nov-2026 10:00:00 (4) : Site A started\n\n: keep-alive\n\ndata: two\n\n";
        let whole = feed(&[stream]);
        assert_eq!(whole, ["24-Nov-2026 10:00:00 (4) : Site A started", "two"]);
        for cut in 0..=stream.len() {
            assert_eq!(
                feed(&[&stream[..cut], &stream[cut..]]),
                whole,
                "cut at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(feed(&bytes), whole);
    }

    #[test]
    fn a_character_split_across_chunks_stays_whole() {
        let stream = "data: Flow kunden → CRM: 3 Sätze\n\n".as_bytes();
        let at = stream.iter().position(|&b| b == 0xc3).unwrap() + 1;
        assert_eq!(
            feed(&[&stream[..at], &stream[at..]]),
            ["Flow kunden → CRM: 3 Sätze"]
        );
    }

    #[test]
    fn comments_and_other_fields_yield_nothing() {
        assert!(
            feed(&[b": keep-alive\n\n:another\n\nid: 3\nevent: log\nretry: 10\n\n"]).is_empty()
        );
        assert_eq!(feed(&[b": hi\ndata: x\n: between\n\n"]), ["x"]);
    }

    #[test]
    fn multi_line_data_is_joined() {
        assert_eq!(feed(&[b"data: first\ndata: second\n\n"]), ["first\nsecond"]);
        assert_eq!(feed(&[b"data\ndata:x\n\n"]), ["\nx"]);
    }

    #[test]
    fn only_one_space_after_the_colon_is_dropped() {
        assert_eq!(feed(&[b"data:  two spaces\n\n"]), [" two spaces"]);
        assert_eq!(feed(&[b"data:none\n\n"]), ["none"]);
    }

    #[test]
    fn every_line_ending() {
        let expected = ["a\nb", "c"];
        assert_eq!(
            feed(&[b"data: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n"]),
            expected
        );
        assert_eq!(feed(&[b"data: a\rdata: b\r\rdata: c\r\r"]), expected);
        // A CRLF split between two chunks is one line ending, not two.
        assert_eq!(feed(&[b"data: a\r", b"\ndata: b\r\n\r", b"\n"]), ["a\nb"]);
        assert_eq!(feed(&[b"data: a\r", b"\r"]), ["a"]);
    }

    #[test]
    fn an_unfinished_event_is_not_yielded() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: half").is_empty());
        assert!(p.push(b" of it\n").is_empty());
        assert_eq!(p.push(b"\n"), ["half of it"]);
    }

    #[test]
    fn a_byte_order_mark_opens_the_stream() {
        assert_eq!(feed(&["\u{feff}data: x\n\n".as_bytes()]), ["x"]);
    }
}
