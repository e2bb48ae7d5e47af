//! The protocol, with no sockets and no clock: bytes in, reply bytes out, and whether the
//! connection should close.
//!
//! This module owns framing (how a byte stream is cut into messages), reply building, the
//! `exit` command, the `--max-line` limit and the line clock (when the unfinished line
//! began, which `--line-timeout` counts from). Both servers share it, so the reactor and the
//! thread-per-connection baseline cannot disagree about the protocol. It must never touch a
//! socket, read a clock or log: every test of it drives it with byte slices, and with
//! instants it is given.
//!
//! "Incomplete" is not an error here: a line that has not seen its `\n` yet waits in
//! [`Session`] for the next read, however TCP happened to split or batch the bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// The reply to a message that does not fit in `--max-line`.
pub const LINE_TOO_LONG: &[u8] = b"ERR line too long\n";

/// Sent to a client accepted while the server is at `--max-connections`.
pub const SERVER_BUSY: &[u8] = b"ERR server busy\n";

/// Sent to a client whose address already holds `--max-connections-per-ip` connections.
pub const TOO_MANY_FROM_ADDRESS: &[u8] = b"ERR too many connections from your address\n";

/// Sent before closing a connection whose unfinished line outlived `--line-timeout`.
pub const LINE_TIMEOUT: &[u8] = b"ERR line timeout\n";

/// Default for `--exit-word`: the message that closes a TCP connection.
pub const DEFAULT_EXIT_WORD: &[u8] = b"exit";

/// Default for `--max-line`: a 64 KiB line is far beyond any interactive use, and the limit
/// caps the input one connection can make the server hold.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

/// How TCP input is cut into messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// A message is a line ending in `\n` (one `\r` before it is dropped). Robust: a read
    /// boundary means nothing.
    Line,
    /// Each successful read is one message. Fragile by design (TCP is a byte stream, so one
    /// message may arrive in two reads, or two in one); kept for clients that send a message
    /// without a newline and wait for its answer.
    Raw,
}

/// A custom reply builder: gets the message, appends the reply body (no framing newline).
pub type ReplyFn = dyn Fn(&[u8], &mut Vec<u8>) + Send + Sync;

/// What a reply says.
#[derive(Clone)]
pub enum Mode {
    /// `Hello, <message>!`, the default (and `--reply 'Hello, {}!'`).
    Hello,
    /// The message unchanged (`--mode echo`, `--reply '{}'`).
    Echo,
    /// Any other `--reply` template: fixed bytes around the message.
    Template(Template),
    /// Anything an embedding program wants; see `examples/embed.rs`.
    Custom(Arc<ReplyFn>),
}

/// A reply template such as `Loop_Msg: {}!`, split once, when it is parsed, into the bytes
/// before and after the `{}` that stands for the message, so that building a reply is two
/// copies around the message and nothing more. The message is passed through as bytes,
/// invalid UTF-8 included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    before: Vec<u8>,
    /// False for a fixed reply: a template without `{}`.
    message: bool,
    after: Vec<u8>,
}

impl Template {
    /// Parses `{}` (at most one: the message), `{{` and `}}` (literal braces); any other
    /// brace is an error that says where it is. A template without `{}` is a fixed reply.
    pub fn parse(text: &str) -> Result<Template, String> {
        let (mut before, mut after) = (Vec::new(), Vec::new());
        let mut placeholder = false;
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            let literal = match (c, chars.peek().map(|&(_, next)| next)) {
                ('{', Some('}')) if placeholder => {
                    return Err(format!("more than one {{}} (the second at byte {at})"));
                }
                ('{', Some('}')) => {
                    chars.next();
                    placeholder = true;
                    continue;
                }
                ('{', Some('{')) | ('}', Some('}')) => {
                    chars.next();
                    c
                }
                ('{' | '}', _) => {
                    return Err(format!(
                        "a stray '{c}' at byte {at} (write '{c}{c}' for a literal one)"
                    ));
                }
                (c, _) => c,
            };
            let side = if placeholder { &mut after } else { &mut before };
            let mut utf8 = [0; 4];
            side.extend_from_slice(literal.encode_utf8(&mut utf8).as_bytes());
        }
        Ok(Template {
            before,
            message: placeholder,
            after,
        })
    }

    /// Appends the reply to `message`. Kept out of line so that [`Mode::reply`]'s arms for
    /// the two built-in modes stay as short as they were before templates existed
    /// (measured: 10 user-space instructions per message more otherwise).
    #[inline(never)]
    pub fn reply(&self, message: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&self.before);
        if self.message {
            out.extend_from_slice(message);
        }
        out.extend_from_slice(&self.after);
    }
}

impl std::fmt::Debug for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Hello => f.write_str("Hello"),
            Mode::Echo => f.write_str("Echo"),
            Mode::Template(t) => write!(f, "Template({t:?})"),
            Mode::Custom(_) => f.write_str("Custom"),
        }
    }
}

impl Mode {
    /// The mode a `--reply` template describes: `{}` is echo and `Hello, {}!` the default
    /// hello mode (so those two take exactly the paths they always took); anything else is
    /// a [`Template`].
    pub fn from_template(text: &str) -> Result<Mode, String> {
        let template = Template::parse(text)?;
        Ok(if template == Template::parse("{}")? {
            Mode::Echo
        } else if template == Template::parse("Hello, {}!")? {
            Mode::Hello
        } else {
            Mode::Template(template)
        })
    }

    /// Appends the reply body for `message` to `out`, without any framing newline.
    pub fn reply(&self, message: &[u8], out: &mut Vec<u8>) {
        match self {
            Mode::Hello => {
                out.extend_from_slice(b"Hello, ");
                out.extend_from_slice(message);
                out.push(b'!');
            }
            Mode::Echo => out.extend_from_slice(message),
            Mode::Template(t) => t.reply(message, out),
            Mode::Custom(f) => f(message, out),
        }
    }
}

/// Everything about the protocol that a flag can change. Shared by every connection.
#[derive(Clone, Debug)]
pub struct ProtocolConfig {
    /// How TCP input is cut into messages.
    pub framing: Framing,
    /// What a reply says.
    pub mode: Mode,
    /// Sent on every new TCP connection; empty means none.
    pub greeting: Vec<u8>,
    /// Longest accepted line, counting every byte before the `\n` (a `\r` included).
    pub max_line: usize,
    /// The message that closes a TCP connection (`--exit-word`); empty means none.
    pub exit_word: Vec<u8>,
    /// What a UDP reply says when it differs from `mode` (`--udp-reply`).
    pub udp_mode: Option<Mode>,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        ProtocolConfig {
            framing: Framing::Line,
            mode: Mode::Hello,
            greeting: b"Welcome!".to_vec(),
            max_line: DEFAULT_MAX_LINE,
            exit_word: DEFAULT_EXIT_WORD.to_vec(),
            udp_mode: None,
        }
    }
}

impl ProtocolConfig {
    /// What a UDP reply says: `--udp-reply`, else the TCP reply's mode.
    pub fn udp_mode(&self) -> &Mode {
        self.udp_mode.as_ref().unwrap_or(&self.mode)
    }

    /// True for the message that closes the connection.
    fn is_exit(&self, message: &[u8]) -> bool {
        message == self.exit_word.as_slice() && !self.exit_word.is_empty()
    }

    /// Appends what a new TCP connection is sent first (nothing if the greeting is empty).
    pub fn greeting(&self, out: &mut Vec<u8>) {
        if self.greeting.is_empty() {
            return;
        }
        out.extend_from_slice(&self.greeting);
        if self.framing == Framing::Line {
            out.push(b'\n');
        }
    }

    /// The most bytes one read should hand to [`Session::on_input`] in raw framing, where a
    /// read is a message and so must respect `--max-line` by construction.
    pub fn read_limit(&self, buffer_len: usize) -> usize {
        match self.framing {
            Framing::Line => buffer_len,
            Framing::Raw => buffer_len.min(self.max_line.max(1)),
        }
    }
}

/// Appends the reply to one UDP datagram: in echo mode the payload comes back unchanged; in
/// every other mode one trailing `\n` of the payload is dropped first. An empty datagram is
/// a message too.
pub fn udp_reply(mode: &Mode, payload: &[u8], out: &mut Vec<u8>) {
    match mode {
        Mode::Echo => out.extend_from_slice(payload),
        _ => mode.reply(payload.strip_suffix(b"\n").unwrap_or(payload), out),
    }
}

/// What the caller should do after handing input to a [`Session`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    Continue,
    /// Send what is owed, then close: `exit` was seen, a line was too long, or input ended.
    /// Later input is ignored.
    Close,
}

/// The protocol state of one TCP connection: the bytes of a line that has not ended yet,
/// and when it began.
///
/// It holds at most `max_line` bytes, and no allocation at all between lines, so an idle
/// connection costs nothing here.
///
/// The session never reads the clock: a server tells it when input arrived
/// ([`note_input`](Self::note_input)) and asks it when the unfinished line's time is up
/// ([`line_deadline`](Self::line_deadline)). So both servers enforce `--line-timeout` by
/// one rule, and a test drives that rule with instants of its choosing.
#[derive(Debug, Default)]
pub struct Session {
    partial: Vec<u8>,
    closed: bool,
    messages: u64,
    /// When the unfinished line in `partial` began: the first [`note_input`] that found it
    /// held. `None` when no line is held.
    ///
    /// [`note_input`]: Self::note_input
    line_started: Option<Instant>,
    /// `messages` when `line_started` was set, in its low 32 bits: if it has changed since,
    /// the line that was timed has been answered and what is held is a newer line. Kept
    /// here rather than checked as lines are answered so that a connection whose reads end
    /// on a line's end, the usual case, pays nothing for the clock but one test per input.
    /// 32 bits fit beside `closed` in what the struct pads anyway; the low bits could only
    /// come round to the same value if 2^32 lines were answered between two inputs, and one
    /// input is one read.
    line_messages: u32,
}

impl Session {
    /// A session with nothing buffered.
    pub fn new() -> Session {
        Session::default()
    }

    /// Bytes of an unfinished line held for the next read.
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// Memory held for the unfinished line (its buffer's capacity).
    pub fn capacity(&self) -> usize {
        self.partial.capacity()
    }

    /// Messages answered so far (`exit` is not counted: it gets no reply).
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// True once [`Flow::Close`] has been returned: input is no longer processed.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Tells the session that the input it was last handed arrived at `now`; call it after
    /// each [`on_input`](Self::on_input) or [`on_input_until`](Self::on_input_until). An
    /// unfinished line that was not held before (or that follows a line answered since)
    /// began at `now`; a line still unfinished keeps the time it began, so a client that
    /// dribbles a byte at a time cannot stretch `--line-timeout`.
    pub fn note_input(&mut self, now: Instant) {
        if self.partial.is_empty() {
            self.line_started = None;
            return;
        }
        // Truncating on purpose: see `line_messages`.
        let answered = self.messages as u32;
        if self.line_started.is_some() && self.line_messages == answered {
            return;
        }
        self.line_started = Some(now);
        self.line_messages = answered;
    }

    /// When the unfinished line began, if one is held.
    pub fn line_started(&self) -> Option<Instant> {
        self.line_started
    }

    /// When the unfinished line's `timeout` (`--line-timeout`, `None` for none) runs out;
    /// `None` when no line is held or there is no timeout.
    pub fn line_deadline(&self, timeout: Option<Duration>) -> Option<Instant> {
        Some(self.line_started? + timeout?)
    }

    /// Processes bytes that arrived (in any chunking), appending every reply owed to `out`.
    pub fn on_input(&mut self, config: &ProtocolConfig, input: &[u8], out: &mut Vec<u8>) -> Flow {
        self.on_input_until(config, input, out, usize::MAX).0
    }

    /// As [`on_input`](Self::on_input), but stops answering lines once `out` holds
    /// `out_limit` bytes or more, and returns how many bytes of `input` it consumed. The
    /// caller keeps the rest and hands it in again later: this is how a server bounds the
    /// output one read can make it owe (64 KiB of `\n` owes 576 KiB of `Hello, !\n`). The
    /// limit is checked after each line, so `out` ends at most one reply past it. A raw
    /// message is always answered whole. After [`Flow::Close`] the count does not matter.
    pub fn on_input_until(
        &mut self,
        config: &ProtocolConfig,
        input: &[u8],
        out: &mut Vec<u8>,
        out_limit: usize,
    ) -> (Flow, usize) {
        if self.closed {
            return (Flow::Close, input.len());
        }
        let (flow, consumed) = match config.framing {
            Framing::Line => self.on_line_input(config, input, out, out_limit),
            Framing::Raw => (self.on_raw_message(config, input, out), input.len()),
        };
        if flow == Flow::Close {
            self.close();
        }
        (flow, consumed)
    }

    /// Refuses the unfinished line as too long, as one past `max_line` is: the server
    /// cannot hold more of it (its share of the memory budget is used up). Appends
    /// `ERR line too long` to `out` and closes, dropping the line.
    pub fn refuse_line(&mut self, out: &mut Vec<u8>) -> Flow {
        out.extend_from_slice(LINE_TOO_LONG);
        self.close();
        Flow::Close
    }

    /// The peer half-closed: answer a final unterminated line, if any, then close.
    pub fn on_eof(&mut self, config: &ProtocolConfig, out: &mut Vec<u8>) -> Flow {
        if !self.closed && !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.on_line(config, &line, out);
        }
        self.close();
        Flow::Close
    }

    fn close(&mut self) {
        self.closed = true;
        // Release the allocation: nothing will be appended to it again.
        self.partial = Vec::new();
        self.line_started = None;
    }

    fn on_line_input(
        &mut self,
        config: &ProtocolConfig,
        input: &[u8],
        out: &mut Vec<u8>,
        out_limit: usize,
    ) -> (Flow, usize) {
        let mut rest = input;
        // Finish a line begun in an earlier read. Only its tail is copied; lines that arrive
        // whole are answered straight from `input` with no copy at all.
        if !self.partial.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                None => return (self.hold(config, rest, out), input.len()),
                Some(end) => {
                    if self.partial.len() + end > config.max_line {
                        out.extend_from_slice(LINE_TOO_LONG);
                        return (Flow::Close, input.len());
                    }
                    let mut line = std::mem::take(&mut self.partial);
                    line.extend_from_slice(&rest[..end]);
                    rest = &rest[end + 1..];
                    if self.on_line(config, &line, out) == Flow::Close {
                        return (Flow::Close, input.len());
                    }
                }
            }
        }
        while out.len() < out_limit {
            let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                return (self.hold(config, rest, out), input.len());
            };
            if end > config.max_line {
                out.extend_from_slice(LINE_TOO_LONG);
                return (Flow::Close, input.len());
            }
            if self.on_line(config, &rest[..end], out) == Flow::Close {
                return (Flow::Close, input.len());
            }
            rest = &rest[end + 1..];
        }
        (Flow::Continue, input.len() - rest.len())
    }

    /// Keeps the start of an unfinished line, or refuses it once it cannot fit.
    fn hold(&mut self, config: &ProtocolConfig, tail: &[u8], out: &mut Vec<u8>) -> Flow {
        if self.partial.len() + tail.len() > config.max_line {
            out.extend_from_slice(LINE_TOO_LONG);
            return Flow::Close;
        }
        self.partial.extend_from_slice(tail);
        Flow::Continue
    }

    /// One complete line (without its `\n`): `exit` closes, anything else gets its reply.
    fn on_line(&mut self, config: &ProtocolConfig, line: &[u8], out: &mut Vec<u8>) -> Flow {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if config.is_exit(line) {
            return Flow::Close;
        }
        config.mode.reply(line, out);
        out.push(b'\n');
        self.messages += 1;
        Flow::Continue
    }

    /// Raw framing: the whole read is the message. In echo mode the bytes come back exactly
    /// as read, which makes raw + echo a plain echo server.
    fn on_raw_message(&mut self, config: &ProtocolConfig, input: &[u8], out: &mut Vec<u8>) -> Flow {
        let message = input
            .strip_suffix(b"\r\n")
            .or_else(|| input.strip_suffix(b"\n"))
            .unwrap_or(input);
        if config.is_exit(message) {
            return Flow::Close;
        }
        match config.mode {
            Mode::Echo => out.extend_from_slice(input),
            _ => config.mode.reply(message, out),
        }
        self.messages += 1;
        Flow::Continue
    }
}

#[cfg(test)]
mod tests;
