//! The protocol's unit and property tests: framing under every split of the input, the
//! replies, `exit`, `--max-line`, and the line clock told the time by hand.

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
    session.note_input(zero);
    assert_eq!(session.line_started(), Some(zero), "the line clock starts");
    for second in 1..5 {
        let _ = session.on_input(&cfg, b"o", &mut out);
        session.note_input(zero + Duration::from_secs(second));
        assert_eq!(session.line_started(), Some(zero));
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
    session.note_input(later);
    assert_eq!(session.line_started(), Some(later));
    // A read that ends on a line's end leaves nothing to time.
    let _ = session.on_input(&cfg, b"ice\n", &mut out);
    session.note_input(later + Duration::from_secs(1));
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
    session.note_input(Instant::now());
    assert_eq!(session.line_started(), None);
}
