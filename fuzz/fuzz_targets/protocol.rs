//! Fuzzes the sans-IO protocol: `Session::on_input` fed arbitrary bytes in arbitrary chunks,
//! with a small `max_line` so that the limit is hit all the time.
//!
//! Input layout: byte 0 chooses framing, mode and whether input ends with EOF; byte 1 the
//! `max_line` (1..=64); bytes 2..6 a cycle of chunk sizes (1..=32); the rest is what the
//! peer sends. Checked after every call: no panic, never more than `max_line` bytes held,
//! nothing processed after `Flow::Close`. Then the whole output is compared with a model of
//! the protocol written the obvious way, and, in line framing, with the output of the same
//! input handed over in one call: however TCP cuts the bytes, the replies are the same.
#![no_main]

use std::sync::Arc;

use evloop::protocol::{Flow, Framing, Mode, ProtocolConfig, Session, LINE_TOO_LONG};
use libfuzzer_sys::fuzz_target;

const HEADER: usize = 6;

fuzz_target!(|data: &[u8]| {
    if data.len() < HEADER {
        return;
    }
    let framing = if data[0] & 1 == 0 {
        Framing::Line
    } else {
        Framing::Raw
    };
    let mode = match (data[0] >> 1) % 3 {
        0 => Mode::Hello,
        1 => Mode::Echo,
        // A reply that depends on every byte, in an order the built-in modes do not use.
        _ => Mode::Custom(Arc::new(|message: &[u8], out: &mut Vec<u8>| {
            out.extend(message.iter().rev());
            out.push(b'#');
        })),
    };
    let eof = data[0] & 0x10 != 0;
    let config = ProtocolConfig {
        framing,
        mode,
        greeting: Vec::new(),
        max_line: 1 + usize::from(data[1]) % 64,
        // The model below knows the default exit word only.
        exit_word: b"exit".to_vec(),
        udp_mode: None,
    };
    let chunk_sizes: Vec<usize> = data[2..HEADER]
        .iter()
        .map(|&b| 1 + usize::from(b) % 32)
        .collect();
    let input = &data[HEADER..];

    let chunks = cut(&config, input, &chunk_sizes);
    let (chunked, chunked_closed) = feed(&config, &chunks, eof);
    match framing {
        Framing::Line => {
            assert_eq!(chunked, line_model(&config, input, eof));
            let (whole, whole_closed) = feed(&config, &[input], eof);
            assert_eq!(chunked, whole);
            assert_eq!(chunked_closed, whole_closed);
        }
        Framing::Raw => assert_eq!(chunked, raw_model(&config, &chunks)),
    }
});

/// Cuts `input` into chunks of the given sizes, in a cycle. In raw framing a chunk is a read,
/// and the reactor never reads more than `read_limit` at once, so neither does this.
fn cut<'a>(config: &ProtocolConfig, input: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut rest = input;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let size = config.read_limit(size).min(rest.len());
        let (chunk, tail) = rest.split_at(size);
        chunks.push(chunk);
        rest = tail;
    }
    chunks
}

/// Feeds the chunks, then EOF if asked, checking the invariants after every call. Returns
/// the output and whether the session closed.
fn feed(config: &ProtocolConfig, chunks: &[&[u8]], eof: bool) -> (Vec<u8>, bool) {
    let mut session = Session::new();
    let mut out = Vec::new();
    for chunk in chunks {
        let was_closed = session.is_closed();
        let before = out.len();
        let flow = session.on_input(config, chunk, &mut out);
        assert!(session.buffered() <= config.max_line);
        assert_eq!(flow == Flow::Close, session.is_closed());
        if was_closed {
            assert_eq!(flow, Flow::Close);
            assert_eq!(out.len(), before, "input after Close must be ignored");
        }
    }
    if eof {
        assert_eq!(session.on_eof(config, &mut out), Flow::Close);
        assert_eq!(session.buffered(), 0);
    }
    (out, session.is_closed())
}

/// Line framing the obvious way: split at every `\n`; a line (or an unfinished tail) longer
/// than `max_line` ends everything with the error; `exit` ends everything silently; a
/// non-empty tail is answered only at EOF.
fn line_model(config: &ProtocolConfig, input: &[u8], eof: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut segments: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    let tail = segments.pop().unwrap_or_default();
    for line in segments {
        if line.len() > config.max_line {
            out.extend_from_slice(LINE_TOO_LONG);
            return out;
        }
        if !reply_line(config, line, &mut out) {
            return out;
        }
    }
    if tail.len() > config.max_line {
        out.extend_from_slice(LINE_TOO_LONG);
    } else if eof && !tail.is_empty() {
        reply_line(config, tail, &mut out);
    }
    out
}

/// Appends the reply to one line; false for `exit`, which closes instead.
fn reply_line(config: &ProtocolConfig, line: &[u8], out: &mut Vec<u8>) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line == b"exit" {
        return false;
    }
    config.mode.reply(line, out);
    out.push(b'\n');
    true
}

/// Raw framing: every chunk is one message, one trailing `\r\n` or `\n` stripped, `exit`
/// closes, and echo mode sends the bytes back exactly as they came.
fn raw_model(config: &ProtocolConfig, chunks: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in chunks {
        let message = chunk
            .strip_suffix(b"\r\n")
            .or_else(|| chunk.strip_suffix(b"\n"))
            .unwrap_or(chunk);
        if message == b"exit" {
            break;
        }
        match config.mode {
            Mode::Echo => out.extend_from_slice(chunk),
            _ => config.mode.reply(message, &mut out),
        }
    }
    out
}
