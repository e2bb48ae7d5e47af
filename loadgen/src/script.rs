//! What each client sends and must get back: request `seq` of client `id`, the exact reply
//! the protocol gives it (built by the servers' own [`protocol`] code, over TCP or UDP),
//! and how the bytes received so far compare with the bytes expected. No I/O and no clock:
//! pure functions of the options, tested here with byte slices.

use std::io::Write;

use super::options::Options;
use evloop::protocol::{self, Mode};

/// What each client sends and must get back. Requests are a pure function of (client,
/// sequence number), so a request in flight is remembered by its number alone and its
/// expected reply rebuilt when the reply arrives, into buffers reused for every request.
#[derive(Debug)]
pub(super) struct Script {
    size: usize,
    mode: Mode,
    pub(super) greeting_line: Vec<u8>,
    request: Vec<u8>,
    reply: Vec<u8>,
}

/// Pads requests up to `size`.
const FILLER: u8 = b'.';

impl Script {
    pub(super) fn new(options: &Options) -> Script {
        let mut greeting_line = options.greeting.clone();
        if !greeting_line.is_empty() {
            greeting_line.push(b'\n');
        }
        Script {
            size: options.size,
            mode: options.mode.clone(),
            greeting_line,
            request: Vec::with_capacity(options.size),
            reply: Vec::new(),
        }
    }

    /// Request `seq` of client `id`: exactly `size` bytes of printable ASCII, the client
    /// and sequence number first so that requests differ (unless `size` is too small to
    /// hold them), then filler. It starts with `c`, so it is never a newline and never
    /// `exit`.
    pub(super) fn request(&mut self, id: usize, seq: u64) -> &[u8] {
        self.request.clear();
        // Writing to a Vec cannot fail.
        let _ = write!(self.request, "c{id}s{seq}");
        self.request.resize(self.size, FILLER);
        &self.request
    }

    /// The exact bytes a line-framed TCP server answers request `seq` of client `id` with.
    pub(super) fn tcp_reply(&mut self, id: usize, seq: u64) -> &[u8] {
        self.request(id, seq);
        self.reply.clear();
        self.mode.reply(&self.request, &mut self.reply);
        self.reply.push(b'\n');
        &self.reply
    }

    /// The exact datagram a UDP server answers request `seq` of client `id` with.
    pub(super) fn udp_reply(&mut self, id: usize, seq: u64) -> &[u8] {
        self.request(id, seq);
        self.reply.clear();
        protocol::udp_reply(&self.mode, &self.request, &mut self.reply);
        &self.reply
    }
}

/// How bytes received so far compare with the bytes expected.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Match {
    /// All of `expected` is at the front of the input.
    Complete,
    /// The input is a proper prefix of `expected`: wait for more.
    Partial,
    /// The input already differs.
    Wrong,
}

pub(super) fn compare(input: &[u8], expected: &[u8]) -> Match {
    if input.len() >= expected.len() {
        if &input[..expected.len()] == expected {
            Match::Complete
        } else {
            Match::Wrong
        }
    } else if expected.starts_with(input) {
        Match::Partial
    } else {
        Match::Wrong
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(size: usize, mode: Mode) -> Script {
        Script::new(&Options {
            size,
            mode,
            ..Options::default()
        })
    }

    #[test]
    fn requests_have_the_exact_size_and_are_safe_to_send() {
        for size in [0, 1, 3, 4, 16, 100] {
            let mut script = script(size, Mode::Hello);
            for (id, seq) in [(0, 0), (7, 12345), (99_999, u64::MAX)] {
                let request = script.request(id, seq).to_vec();
                assert_eq!(request.len(), size);
                assert!(request.iter().all(|b| b.is_ascii_graphic()), "{request:?}");
                assert_ne!(request, b"exit");
            }
        }
    }

    #[test]
    fn requests_differ_when_there_is_room() {
        let mut script = script(16, Mode::Echo);
        let a = script.request(1, 2).to_vec();
        let b = script.request(1, 3).to_vec();
        let c = script.request(12, 2).to_vec();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, b"c1s2............");
    }

    #[test]
    fn expected_replies_follow_the_protocol() {
        let mut hello = script(6, Mode::Hello);
        assert_eq!(hello.tcp_reply(1, 2), b"Hello, c1s2..!\n");
        assert_eq!(hello.udp_reply(1, 2), b"Hello, c1s2..!");
        let mut echo = script(6, Mode::Echo);
        assert_eq!(echo.tcp_reply(1, 2), b"c1s2..\n");
        assert_eq!(echo.udp_reply(1, 2), b"c1s2..");
    }

    #[test]
    fn greeting_line_is_empty_when_no_greeting_is_expected() {
        let none = Script::new(&Options {
            greeting: Vec::new(),
            ..Options::default()
        });
        assert!(none.greeting_line.is_empty());
        assert_eq!(
            Script::new(&Options::default()).greeting_line,
            b"Welcome!\n"
        );
    }

    #[test]
    fn compare_spots_a_wrong_byte_before_the_reply_is_complete() {
        assert_eq!(compare(b"Hel", b"Hello\n"), Match::Partial);
        assert_eq!(compare(b"", b"Hello\n"), Match::Partial);
        assert_eq!(compare(b"Hex", b"Hello\n"), Match::Wrong);
        assert_eq!(compare(b"Hello\n", b"Hello\n"), Match::Complete);
        assert_eq!(compare(b"Hello\nHel", b"Hello\n"), Match::Complete);
        assert_eq!(compare(b"Hellx\n", b"Hello\n"), Match::Wrong);
    }
}
