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
    /// dribbles a byte at a time cannot stretch `--line-timeout`. True when the line clock
    /// started: the line deadline may have moved earlier.
    pub fn note_input(&mut self, now: Instant) -> bool {
        if self.partial.is_empty() {
            self.line_started = None;
            return false;
        }
        // Truncating on purpose: see `line_messages`.
        let answered = self.messages as u32;
        if self.line_started.is_some() && self.line_messages == answered {
            return false;
        }
        self.line_started = Some(now);
        self.line_messages = answered;
        true
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
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(framing: Framing, mode: Mode, max_line: usize) -> ProtocolConfig {
        ProtocolConfig {
            framing,
            mode,
            greeting: b"Welcome!".to_vec(),
            max_line,
            ..ProtocolConfig::default()
        }
    }

    /// Feeds `chunks` one by one, then EOF if asked; returns the output and the first Close.
    fn run(config: &ProtocolConfig, chunks: &[&[u8]], eof: bool) -> (Vec<u8>, bool) {
        let mut session = Session::new();
        let mut out = Vec::new();
        let mut closed = false;
        for chunk in chunks {
            if session.on_input(config, chunk, &mut out) == Flow::Close {
                closed = true;
            }
            assert!(session.buffered() <= config.max_line);
        }
        if eof {
            closed |= session.on_eof(config, &mut out) == Flow::Close;
        }
        (out, closed)
    }

    proptest! {
        /// Feeding input with an output limit, and handing back what was not consumed,
        /// gives exactly the replies of feeding it whole; no call overshoots the limit by
        /// more than one reply.
        #[test]
        fn an_output_limit_changes_when_lines_are_answered_not_what_is_answered(
            lines in proptest::collection::vec("[a-z]{0,6}", 0..60),
            limit in 1usize..64,
        ) {
            let mut input = Vec::new();
            for line in &lines {
                input.extend_from_slice(line.as_bytes());
                input.push(b'\n');
            }
            input.extend_from_slice(b"tail");
            let config = line_hello();
            let (whole, _) = run(&config, &[&input], false);
            let mut session = Session::new();
            let (mut out, mut rest) = (Vec::new(), &input[..]);
            loop {
                let mut batch = Vec::new();
                let (flow, used) = session.on_input_until(&config, rest, &mut batch, limit);
                prop_assert_eq!(flow, Flow::Continue);
                prop_assert!(batch.len() < limit + "Hello, abcdef!\n".len());
                out.extend_from_slice(&batch);
                rest = &rest[used..];
                if rest.is_empty() {
                    break;
                }
            }
            prop_assert_eq!(out, whole);
            prop_assert_eq!(session.buffered(), 4);
        }
    }

    #[test]
    fn templates_split_once_around_the_message_and_unescape_braces() {
        let mut out = Vec::new();
        Template::parse("Loop_Msg: {}!")
            .unwrap()
            .reply(b"hi", &mut out);
        assert_eq!(out, b"Loop_Msg: hi!");
        out.clear();
        Template::parse("{{{}}}").unwrap().reply(b"x", &mut out);
        assert_eq!(out, b"{x}");
        out.clear();
        Template::parse("服务端接收到数据：{}")
            .unwrap()
            .reply(b"\xff", &mut out);
        assert_eq!(
            out,
            "服务端接收到数据："
                .bytes()
                .chain([0xff])
                .collect::<Vec<u8>>()
        );
        out.clear();
        Template::parse("OK").unwrap().reply(b"ignored", &mut out);
        assert_eq!(out, b"OK", "no {{}} is a fixed reply");
        for bad in ["{}{}", "a{b", "a}b", "{", "}", "{{}", "{}}"] {
            assert!(Template::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_two_familiar_templates_are_the_two_familiar_modes() {
        assert!(matches!(Mode::from_template("{}"), Ok(Mode::Echo)));
        assert!(matches!(Mode::from_template("Hello, {}!"), Ok(Mode::Hello)));
        assert!(matches!(
            Mode::from_template("Hello, {}"),
            Ok(Mode::Template(_))
        ));
    }

    #[test]
    fn the_exit_word_is_configurable_and_can_be_none() {
        let mut config = config(Framing::Raw, Mode::Echo, 100);
        config.exit_word = b"end".to_vec();
        assert_eq!(run(&config, &[b"exit"], false), (b"exit".to_vec(), false));
        assert_eq!(run(&config, &[b"end"], false), (Vec::new(), true));
        config.exit_word = Vec::new();
        assert_eq!(
            run(&config, &[b"exit", b""], false),
            (b"exit".to_vec(), false)
        );
    }

    #[test]
    fn udp_replies_use_their_own_template_when_given() {
        let mut config = line_hello();
        config.udp_mode = Some(Mode::from_template("Echo: {}!").unwrap());
        let mut out = Vec::new();
        udp_reply(config.udp_mode(), b"zhangsan", &mut out);
        assert_eq!(out, b"Echo: zhangsan!");
        out.clear();
        udp_reply(&config.mode, b"zhangsan", &mut out);
        assert_eq!(out, b"Hello, zhangsan!");
    }

    fn line_hello() -> ProtocolConfig {
        config(Framing::Line, Mode::Hello, DEFAULT_MAX_LINE)
    }

    #[test]
    fn greeting_in_line_framing_ends_with_newline() {
        let mut out = Vec::new();
        line_hello().greeting(&mut out);
        assert_eq!(out, b"Welcome!\n");
    }

    #[test]
    fn greeting_in_raw_framing_has_no_newline_and_empty_greeting_sends_nothing() {
        let mut raw = config(Framing::Raw, Mode::Hello, 10);
        let mut out = Vec::new();
        raw.greeting(&mut out);
        assert_eq!(out, b"Welcome!");
        raw.greeting.clear();
        out.clear();
        raw.greeting(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn each_line_gets_one_reply_and_cr_is_dropped() {
        let (out, closed) = run(&line_hello(), &[b"alice\nbob\r\n\n"], false);
        assert_eq!(out, b"Hello, alice!\nHello, bob!\nHello, !\n");
        assert!(!closed);
    }

    #[test]
    fn only_one_cr_is_dropped() {
        let (out, _) = run(&line_hello(), &[b"a\r\r\n"], false);
        assert_eq!(out, b"Hello, a\r!\n");
    }

    #[test]
    fn a_line_split_byte_by_byte_gets_one_reply() {
        let input = b"split across reads\n";
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        let (out, _) = run(&line_hello(), &chunks, false);
        assert_eq!(out, b"Hello, split across reads!\n");
    }

    #[test]
    fn invalid_utf8_is_returned_unchanged() {
        let (out, _) = run(&line_hello(), &[b"\xff\xfe\x00\n"], false);
        assert_eq!(out, b"Hello, \xff\xfe\x00!\n");
    }

    #[test]
    fn echo_mode_returns_the_line() {
        let echo = config(Framing::Line, Mode::Echo, 100);
        let (out, _) = run(&echo, &[b"abc\r\ndef\n"], false);
        assert_eq!(out, b"abc\ndef\n");
    }

    #[test]
    fn exit_answers_what_came_before_and_ignores_the_rest() {
        let (out, closed) = run(&line_hello(), &[b"a\nexit\r\nb\n", b"c\n"], false);
        assert_eq!(out, b"Hello, a!\n");
        assert!(closed);
    }

    #[test]
    fn eof_answers_a_final_unterminated_line() {
        let (out, closed) = run(&line_hello(), &[b"a\nlast"], true);
        assert_eq!(out, b"Hello, a!\nHello, last!\n");
        assert!(closed);
        let (out, _) = run(&line_hello(), &[b"a\n"], true);
        assert_eq!(out, b"Hello, a!\n", "no reply for an empty final line");
        let (out, _) = run(&line_hello(), &[b"exit"], true);
        assert_eq!(
            out, b"",
            "an unterminated exit still closes without a reply"
        );
    }

    #[test]
    fn a_line_of_max_line_bytes_is_accepted_and_one_more_is_refused() {
        let cfg = config(Framing::Line, Mode::Echo, 4);
        let (out, closed) = run(&cfg, &[b"abcd\n"], false);
        assert_eq!((out.as_slice(), closed), (&b"abcd\n"[..], false));
        let (out, closed) = run(&cfg, &[b"ok\nabcde\nnever\n"], false);
        assert_eq!(out, b"ok\nERR line too long\n");
        assert!(closed);
    }

    #[test]
    fn a_long_line_is_refused_before_its_newline_arrives() {
        let cfg = config(Framing::Line, Mode::Echo, 4);
        let (out, closed) = run(&cfg, &[b"ab", b"cde"], false);
        assert_eq!(out, LINE_TOO_LONG);
        assert!(closed);
        let (out, closed) = run(&cfg, &[b"ab", b"cd", b"e\n"], false);
        assert_eq!(out, LINE_TOO_LONG);
        assert!(closed);
    }

    #[test]
    fn raw_framing_treats_each_read_as_a_message() {
        let raw = config(Framing::Raw, Mode::Hello, 100);
        let (out, closed) = run(&raw, &[b"bob", b"alice\r\n", b"exit\n", b"late"], false);
        assert_eq!(out, b"Hello, bob!Hello, alice!");
        assert!(closed);
    }

    #[test]
    fn raw_echo_is_byte_for_byte() {
        let raw = config(Framing::Raw, Mode::Echo, 100);
        let (out, _) = run(&raw, &[b"a\r\n", b"b"], false);
        assert_eq!(out, b"a\r\nb");
    }

    #[test]
    fn raw_read_limit_respects_max_line() {
        let raw = config(Framing::Raw, Mode::Echo, 100);
        assert_eq!(raw.read_limit(65536), 100);
        assert_eq!(line_hello().read_limit(65536), 65536);
    }

    #[test]
    fn udp_replies() {
        let mut out = Vec::new();
        udp_reply(&Mode::Hello, b"bob\n", &mut out);
        assert_eq!(out, b"Hello, bob!");
        out.clear();
        udp_reply(&Mode::Hello, b"", &mut out);
        assert_eq!(out, b"Hello, !");
        out.clear();
        udp_reply(&Mode::Echo, b"bob\n", &mut out);
        assert_eq!(out, b"bob\n");
    }

    #[test]
    fn custom_mode_builds_its_own_reply() {
        let upper = Mode::Custom(Arc::new(|m: &[u8], out: &mut Vec<u8>| {
            out.extend(m.iter().map(u8::to_ascii_uppercase))
        }));
        let (out, _) = run(&config(Framing::Line, upper, 100), &[b"abc\n"], false);
        assert_eq!(out, b"ABC\n");
    }

    /// Splits `input` at the given cut points (taken modulo its length).
    fn chunked(input: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for cut in cuts.into_iter().chain([input.len()]) {
            chunks.push(input[start..cut].to_vec());
            start = cut;
        }
        chunks
    }

    proptest! {
        /// However the bytes are split, the replies are those of the whole input at once, and
        /// the session never holds more than `max_line` bytes.
        #[test]
        fn chunking_never_changes_the_replies(
            input in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), any::<u8>(), Just(b'e')], 0..400),
            cuts in proptest::collection::vec(any::<usize>(), 0..20),
            max_line in 1usize..40,
            eof in any::<bool>(),
            echo in any::<bool>(),
        ) {
            let mode = if echo { Mode::Echo } else { Mode::Hello };
            let cfg = config(Framing::Line, mode, max_line);
            let (whole, whole_closed) = run(&cfg, &[&input], eof);
            let chunks = chunked(&input, &cuts);
            let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            let (split, split_closed) = run(&cfg, &refs, eof);
            prop_assert_eq!(whole, split);
            prop_assert_eq!(whole_closed, split_closed);
        }

        /// Hello replies can be parsed back into exactly the lines that were sent.
        #[test]
        fn every_line_gets_exactly_one_reply_in_order(
            lines in proptest::collection::vec("[a-z ]{0,12}", 0..30),
            cuts in proptest::collection::vec(any::<usize>(), 0..10),
        ) {
            let lines: Vec<String> = lines.into_iter().filter(|l| l != "exit").collect();
            let input: Vec<u8> = lines.iter().flat_map(|l| format!("{l}\n").into_bytes()).collect();
            let chunks = chunked(&input, &cuts);
            let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            let (out, _) = run(&line_hello(), &refs, false);
            let expected: String = lines.iter().map(|l| format!("Hello, {l}!\n")).collect();
            prop_assert_eq!(String::from_utf8(out).unwrap(), expected);
        }

        /// The line clock, against a model: after each chunk (chunk `i` arriving `i` seconds
        /// in), the unfinished line began when the chunk holding its first byte arrived,
        /// and no line is held exactly when the input so far ends with `\n`.
        #[test]
        fn an_unfinished_line_began_when_its_first_byte_arrived(
            input in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'a')], 0..200),
            cuts in proptest::collection::vec(any::<usize>(), 0..20),
        ) {
            let cfg = config(Framing::Line, Mode::Hello, usize::MAX);
            let zero = Instant::now();
            let at = |chunk: usize| zero + Duration::from_secs(chunk as u64);
            let chunks = chunked(&input, &cuts);
            let mut session = Session::new();
            let mut out = Vec::new();
            // Where each chunk begins in `input`.
            let mut offset = 0;
            let mut starts = Vec::new();
            for (i, chunk) in chunks.iter().enumerate() {
                starts.push(offset);
                offset += chunk.len();
                let _ = session.on_input(&cfg, chunk, &mut out);
                session.note_input(at(i));
                let seen = &input[..offset];
                let line_begins = seen.iter().rposition(|&b| b == b'\n').map_or(0, |nl| nl + 1);
                let expected = (line_begins < offset)
                    .then(|| at(starts.iter().rposition(|&s| s <= line_begins).unwrap_or(0)));
                prop_assert_eq!(session.line_started(), expected);
            }
        }
    }

    #[test]
    fn a_dribbled_line_keeps_the_time_it_began() {
        let cfg = line_hello();
        let timeout = Some(Duration::from_secs(30));
        let zero = Instant::now();
        let mut session = Session::new();
        let mut out = Vec::new();
        assert_eq!(session.line_deadline(timeout), None, "nothing held");
        let _ = session.on_input(&cfg, b"b", &mut out);
        assert!(session.note_input(zero), "the line clock starts");
        for second in 1..5 {
            let _ = session.on_input(&cfg, b"o", &mut out);
            assert!(!session.note_input(zero + Duration::from_secs(second)));
        }
        assert_eq!(session.line_started(), Some(zero));
        assert_eq!(
            session.line_deadline(timeout),
            Some(zero + Duration::from_secs(30))
        );
        assert_eq!(session.line_deadline(None), None, "no --line-timeout");
    }

    #[test]
    fn the_line_clock_restarts_with_the_next_line_and_stops_between_lines() {
        let cfg = line_hello();
        let zero = Instant::now();
        let later = zero + Duration::from_secs(7);
        let mut session = Session::new();
        let mut out = Vec::new();
        let _ = session.on_input(&cfg, b"bo", &mut out);
        session.note_input(zero);
        // The held line ends and the next begins in the same read: it began then.
        let _ = session.on_input(&cfg, b"b\nal", &mut out);
        assert!(session.note_input(later));
        assert_eq!(session.line_started(), Some(later));
        // A read that ends on a line's end leaves nothing to time.
        let _ = session.on_input(&cfg, b"ice\n", &mut out);
        assert!(!session.note_input(later + Duration::from_secs(1)));
        assert_eq!(session.line_started(), None);
        assert_eq!(out, b"Hello, bob!\nHello, alice!\n");
    }

    #[test]
    fn a_closed_session_times_no_line() {
        let cfg = line_hello();
        let zero = Instant::now();
        let mut session = Session::new();
        let mut out = Vec::new();
        let _ = session.on_input(&cfg, b"half a li", &mut out);
        session.note_input(zero);
        assert_eq!(session.on_eof(&cfg, &mut out), Flow::Close);
        assert_eq!(session.line_started(), None);
        assert_eq!(session.line_deadline(Some(Duration::from_secs(1))), None);
    }

    #[test]
    fn raw_framing_never_holds_a_line_to_time() {
        let cfg = config(Framing::Raw, Mode::Hello, 100);
        let mut session = Session::new();
        let mut out = Vec::new();
        let _ = session.on_input(&cfg, b"no newline", &mut out);
        assert!(!session.note_input(Instant::now()));
        assert_eq!(session.line_started(), None);
    }
}
