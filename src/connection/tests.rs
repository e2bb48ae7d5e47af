//! The connection driven with an in-memory socket and a clock the tests move by hand: every
//! state, every transition and every deadline, with no socket and no sleep.

// The tests look at the connection after each call rather than at what the loop should
// do next, except where that is the point of the test.
#![allow(unused_must_use)]

use super::*;
use std::collections::VecDeque;
use std::io::Read;
use std::time::Duration;

/// An in-memory socket: reads come from a script, writes go into `written` up to
/// `accept` bytes before the fake reports WouldBlock.
#[derive(Default)]
struct FakeStream {
    reads: VecDeque<io::Result<Vec<u8>>>,
    written: Vec<u8>,
    accept: usize,
    shut_down: std::cell::Cell<bool>,
    /// Plays a session layer whose handshake is under way: what `begin_handshake` was given
    /// (`Some` once it was called), and the handshake never completes.
    session: Option<Option<Vec<u8>>>,
}

impl Read for FakeStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.reads.pop_front() {
            None => Err(io::ErrorKind::WouldBlock.into()),
            Some(Err(e)) => Err(e),
            Some(Ok(mut bytes)) => {
                let n = bytes.len().min(buf.len());
                buf[..n].copy_from_slice(&bytes[..n]);
                if n < bytes.len() {
                    self.reads.push_front(Ok(bytes.split_off(n)));
                }
                Ok(n)
            }
        }
    }
}

impl Write for FakeStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(self.accept);
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.accept -= n;
        self.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for FakeStream {
    fn peer(&self) -> Option<std::net::SocketAddr> {
        None
    }

    fn shutdown_write(&self) -> io::Result<()> {
        self.shut_down.set(true);
        Ok(())
    }

    fn handshaking(&self) -> bool {
        self.session.is_some()
    }

    fn handshake(&mut self) -> io::Result<bool> {
        Ok(self.session.is_none())
    }

    fn begin_handshake(&mut self, early: &[u8]) -> io::Result<()> {
        self.session = Some(Some(early.to_vec()));
        Ok(())
    }

    fn refuse(&mut self, message: &[u8]) -> io::Result<usize> {
        let refusal = match self.session {
            Some(_) => b"ALERT".as_slice(),
            None => message,
        };
        self.write(refusal)
    }
}

struct Harness {
    read_buf: Vec<u8>,
    /// The default config's greeting, for a connection greeted after its PROXY header.
    greeting: Vec<u8>,
    replies: Vec<u8>,
    config: ServerConfig,
    stats: Stats,
    /// The clock the tests move by hand.
    now: Instant,
    /// This connection's share of the memory budget; unlimited unless a test sets it.
    share: usize,
}

impl Harness {
    fn new() -> Harness {
        let mut greeting = Vec::new();
        ServerConfig::default().protocol.greeting(&mut greeting);
        Harness {
            read_buf: vec![0; 64],
            greeting,
            replies: Vec::new(),
            config: ServerConfig::default(),
            stats: Stats::default(),
            now: Instant::now(),
            share: usize::MAX,
        }
    }

    fn ctx(&mut self) -> Context<'_> {
        Context {
            read_buf: &mut self.read_buf,
            replies: &mut self.replies,
            config: &self.config,
            stats: &mut self.stats,
            now: self.now,
            share: self.share,
            greeting: &self.greeting,
        }
    }

    fn accept(&mut self, stream: FakeStream) -> Connection<FakeStream> {
        let mut greeting = Vec::new();
        self.config.protocol.greeting(&mut greeting);
        Connection::accept(stream, &greeting, &mut self.stats, self.now)
    }
}

fn stream(reads: &[&[u8]], accept: usize) -> FakeStream {
    FakeStream {
        reads: reads.iter().map(|r| Ok(r.to_vec())).collect(),
        accept,
        ..FakeStream::default()
    }
}

fn readable(interest: Option<Interest>) -> bool {
    interest.is_some_and(|i| i.is_readable())
}

fn writable(interest: Option<Interest>) -> bool {
    interest.is_some_and(|i| i.is_writable())
}

#[test]
fn the_transition_table() {
    use State::*;
    use Trigger::*;
    assert_eq!(Greeting.on(Flushed), Reading);
    assert_eq!(Greeting.on(BelowLowWater), Greeting);
    assert_eq!(Reading.on(AboveHighWater), Replying);
    assert_eq!(Reading.on(Flushed), Reading);
    assert_eq!(Replying.on(BelowLowWater), Reading);
    assert_eq!(Replying.on(Flushed), Reading);
    assert_eq!(Replying.on(InputEnded), Closing { peer_eof: false });
    assert_eq!(Reading.on(PeerEof), Closing { peer_eof: true });
    assert_eq!(Closing { peer_eof: false }.on(Flushed), Lingering);
    assert_eq!(Closing { peer_eof: true }.on(Flushed), Closed);
    assert_eq!(
        Closing { peer_eof: false }.on(AboveHighWater),
        Closing { peer_eof: false }
    );
    assert_eq!(Lingering.on(PeerEof), Closed);
    assert_eq!(ProxyHeader.on(HeaderReceived), Greeting);
    assert_eq!(ProxyHeader.on(HandshakeBegun), Handshaking);
    assert_eq!(ProxyHeader.on(Refused), Lingering);
    assert_eq!(ProxyHeader.on(PeerEof), Closed);
    assert_eq!(ProxyHeader.on(InputEnded), Closed);
    assert_eq!(ProxyHeader.on(Flushed), ProxyHeader);
    for state in [
        ProxyHeader,
        Greeting,
        Reading,
        Replying,
        Closing { peer_eof: false },
        Lingering,
    ] {
        assert_eq!(state.on(Failed), Closed);
        assert_eq!(state.on(GiveUp), Closed);
    }
    assert_eq!(Closed.on(Flushed), Closed);
}

#[test]
fn greeting_written_at_once_then_reading() {
    let mut h = Harness::new();
    let conn = h.accept(stream(&[], 1000));
    assert_eq!(conn.state(), State::Reading);
    assert_eq!(conn.stream.written, b"Welcome!\n");
    assert_eq!(conn.interest(), Some(Interest::READABLE));
}

#[test]
fn a_partial_greeting_goes_out_before_any_input_is_read() {
    let mut h = Harness::new();
    let mut conn = h.accept(stream(&[b"bob\n"], 3));
    assert_eq!(conn.state(), State::Greeting);
    assert_eq!(conn.interest(), Some(Interest::WRITABLE));
    assert_eq!(conn.on_readable(&mut h.ctx(), false), Progress::Wait);
    assert_eq!(conn.stream.reads.len(), 1, "input waits in the socket");
    conn.stream.accept = 1000;
    assert_eq!(
        conn.on_writable(&mut h.ctx()),
        Progress::ReadAgain,
        "the input that waited has no edge of its own"
    );
    assert_eq!(conn.state(), State::Reading);
    conn.on_readable(&mut h.ctx(), false);
    assert_eq!(conn.stream.written, b"Welcome!\nHello, bob!\n");
    assert!(!writable(conn.interest()));
    assert_eq!(
        conn.output.bytes.capacity(),
        0,
        "an idle connection owns no buffer"
    );
}

#[test]
fn partial_writes_keep_the_rest_in_order() {
    let mut h = Harness::new();
    let mut conn = h.accept(stream(&[b"a\nb\n", b"c\n"], 12));
    conn.on_readable(&mut h.ctx(), false);
    assert_eq!(conn.state(), State::Reading);
    assert!(writable(conn.interest()), "leftovers ask for WRITABLE");
    for _ in 0..20 {
        conn.stream.accept = 2;
        conn.on_writable(&mut h.ctx());
    }
    assert_eq!(
        conn.stream.written,
        b"Welcome!\nHello, a!\nHello, b!\nHello, c!\n"
    );
    assert_eq!(conn.state(), State::Reading);
}

#[test]
fn exit_flushes_then_shuts_down_and_lingers_until_eof() {
    let mut h = Harness::new();
    let mut conn = h.accept(stream(&[b"a\nexit\nb\n"], 1000));
    conn.on_readable(&mut h.ctx(), false);
    assert_eq!(conn.stream.written, b"Welcome!\nHello, a!\n");
    assert_eq!(conn.state(), State::Lingering);
    assert!(
        conn.stream.shut_down.get(),
        "write side shut down before lingering"
    );
    assert!(readable(conn.interest()));
    conn.stream.reads.push_back(Ok(b"more\n".to_vec()));
    conn.stream.reads.push_back(Ok(Vec::new()));
    conn.on_readable(&mut h.ctx(), false);
    assert_eq!(conn.state(), State::Closed);
    assert_eq!(
        conn.stream.written, b"Welcome!\nHello, a!\n",
        "nothing after exit"
    );
}

#[test]
fn eof_answers_the_final_line_and_closes_without_lingering() {
    let mut h = Harness::new();
    let mut conn = h.accept(stream(&[b"a\nlast", b""], 1000));
    conn.on_readable(&mut h.ctx(), false);
    assert_eq!(conn.stream.written, b"Welcome!\nHello, a!\nHello, last!\n");
    assert_eq!(conn.state(), State::Closed);
}

#[test]
fn eof_with_output_owed_closes_once_it_is_written() {
    let mut h = Harness::new();
    let mut conn = h.accept(stream(&[b"a\n", b""], 9));
    conn.on_readable(&mut h.ctx(), false);
    assert_eq!(conn.state(), State::Closing { peer_eof: true });
    conn.stream.accept = 1000;
    conn.on_writable(&mut h.ctx());
    assert_eq!(conn.state(), State::Closed);
    assert_eq!(conn.stream.written, b"Welcome!\nHello, a!\n");
}

#[test]
fn a_reset_closes_the_connection() {
    let mut h = Harness::new();
    let mut s = stream(&[b"a\n"], 1000);
    s.reads
        .push_back(Err(io::ErrorKind::ConnectionReset.into()));
    let mut conn = h.accept(s);
    conn.on_readable(&mut h.ctx(), false);
    assert_eq!(conn.state(), State::Closed);
    assert_eq!(conn.interest(), None);
}

#[test]
fn interrupted_reads_are_retried() {
    let mut h = Harness::new();
    let mut s = stream(&[], 1000);
    s.reads.push_back(Err(io::ErrorKind::Interrupted.into()));
    s.reads.push_back(Ok(b"x\n".to_vec()));
    let mut conn = h.accept(s);
    conn.on_readable(&mut h.ctx(), false);
    assert_eq!(conn.stream.written, b"Welcome!\nHello, x!\n");
}

#[test]
fn a_short_read_ends_the_turn_only_when_the_caller_says_it_drains() {
    let mut h = Harness::new();
    let mut conn = h.accept(stream(&[b"a\n", b"b\n"], 1000));
    conn.on_readable(&mut h.ctx(), true);
    assert_eq!(
        conn.stream.reads.len(),
        1,
        "one read, no extra WouldBlock read"
    );
    conn.on_readable(&mut h.ctx(), false);
    assert!(conn.stream.reads.is_empty());
    assert_eq!(conn.stream.written, b"Welcome!\nHello, a!\nHello, b!\n");
}

#[test]
fn reading_stops_above_the_high_water_mark_and_resumes_below_the_low() {
    let mut h = Harness::new();
    h.read_buf = vec![0; 64 * 1024];
    let flood = vec![b'\n'; 64 * 1024];
    let reads: Vec<&[u8]> = (0..8).map(|_| flood.as_slice()).collect();
    let mut conn = h.accept(stream(&reads, 9));
    serve_until_it_waits(&mut h, &mut conn);
    assert!(conn.output.unsent().len() > OUTPUT_HIGH_WATER);
    assert_eq!(conn.state(), State::Replying);
    assert!(conn.paused());
    assert!(!readable(conn.interest()), "backpressure: not reading");
    assert!(conn.stream.reads.len() > 1, "input left in the socket");
    // Draining to just under the high-water mark is not enough: the low one counts.
    conn.stream.accept = conn.output.unsent().len() - OUTPUT_HIGH_WATER + 1;
    assert_eq!(conn.on_writable(&mut h.ctx()), Progress::Wait);
    assert_eq!(
        conn.state(),
        State::Replying,
        "still paused between the marks"
    );
    conn.stream.accept = usize::MAX;
    assert_eq!(conn.on_writable(&mut h.ctx()), Progress::ReadAgain);
    assert_eq!(conn.state(), State::Reading);
    assert!(readable(conn.interest()));
    assert!(!conn.paused());
}

#[test]
fn a_connection_at_its_share_of_the_budget_is_paused_until_its_output_moves() {
    let mut h = Harness::new();
    h.share = 4096;
    let lines = b"x\n".repeat(2048);
    let mut conn = h.accept(stream(&[&lines], 9));
    serve_until_it_waits(&mut h, &mut conn);
    assert_eq!(conn.state(), State::Reading, "not backpressure: the budget");
    assert!(conn.paused(), "holds {} of a 4096-byte share", conn.holds());
    conn.stream.accept = usize::MAX;
    assert_eq!(conn.on_writable(&mut h.ctx()), Progress::ReadAgain);
    assert!(!conn.paused());
}

/// Calls `on_readable` as the loop would, turn after turn, until the connection waits.
fn serve_until_it_waits(h: &mut Harness, conn: &mut Connection<FakeStream>) {
    for _ in 0..1000 {
        if conn.on_readable(&mut h.ctx(), false) == Progress::Wait {
            return;
        }
    }
    panic!("still reading after 1000 turns");
}

#[test]
fn the_read_budget_yields_to_other_connections() {
    let mut h = Harness::new();
    h.read_buf = vec![0; 64 * 1024];
    // Bytes of a line that does not end yet: input that owes no reply at all.
    let chunk = vec![b'x'; 64 * 1024];
    h.config.protocol.max_line = 1024 * 1024;
    let reads: Vec<&[u8]> = (0..6).map(|_| chunk.as_slice()).collect();
    let mut conn = h.accept(stream(&reads, usize::MAX));
    assert_eq!(conn.on_readable(&mut h.ctx(), false), Progress::ReadAgain);
    assert_eq!(conn.stream.reads.len(), 2, "READ_BUDGET is four reads");
}

#[test]
fn the_reply_budget_yields_and_keeps_the_unanswered_input_in_order() {
    let mut h = Harness::new();
    h.read_buf = vec![0; 64 * 1024];
    let flood = vec![b'\n'; 64 * 1024];
    let mut conn = h.accept(stream(&[&flood], usize::MAX));
    let greeting = conn.stream.written.len();
    assert_eq!(conn.on_readable(&mut h.ctx(), false), Progress::ReadAgain);
    let replies = conn.stream.written.len() - greeting;
    assert!(
        (REPLY_BUDGET..REPLY_BUDGET + 9).contains(&replies),
        "{replies}"
    );
    assert!(!conn.held.is_empty() && conn.stream.reads.is_empty());
    serve_until_it_waits(&mut h, &mut conn);
    assert!(conn.held.is_empty());
    assert_eq!(
        conn.stream.written.len() - greeting,
        64 * 1024 * b"Hello, !\n".len(),
        "every line answered once"
    );
}

proptest::proptest! {
    /// Whatever the input and however it is split, against a peer that reads nothing:
    /// unsent output stays within the high-water mark plus one reply, input held stays
    /// within `--max-line` plus one read, and every line is answered once it drains.
    #[test]
    fn output_and_held_input_are_bounded_by_construction(
        lines in proptest::collection::vec(0usize..300, 1..3000),
        chunk in 1usize..9000,
    ) {
        let mut h = Harness::new();
        h.read_buf = vec![0; 4096];
        h.config.protocol.max_line = 512;
        let mut input = Vec::new();
        for len in &lines {
            input.extend(std::iter::repeat_n(b'a', *len));
            input.push(b'\n');
        }
        let reads: Vec<&[u8]> = input.chunks(chunk).collect();
        let mut conn = h.accept(stream(&reads, usize::MAX));
        conn.stream.accept = 0;
        let one_reply = "Hello, !\n".len() + 512;
        for _ in 0..200 {
            let progress = conn.on_readable(&mut h.ctx(), false);
            proptest::prop_assert!(conn.output.unsent().len() <= OUTPUT_HIGH_WATER + one_reply);
            proptest::prop_assert!(conn.held.len() + conn.session.buffered() <= 512 + 4096);
            if progress == Progress::Wait {
                break;
            }
        }
        conn.stream.accept = usize::MAX;
        for _ in 0..10_000 {
            if conn.on_writable(&mut h.ctx()) == Progress::Wait
                && conn.on_readable(&mut h.ctx(), false) == Progress::Wait
                && conn.output.is_empty()
                && conn.stream.reads.is_empty()
                && conn.held.is_empty()
            {
                break;
            }
        }
        let expected: usize = 9 + lines.iter().map(|len| len + "Hello, !\n".len()).sum::<usize>();
        proptest::prop_assert_eq!(conn.stream.written.len(), expected);
    }
}

#[test]
fn graceful_close_delivers_what_is_owed() {
    let mut h = Harness::new();
    let mut conn = h.accept(stream(&[b"a\n"], 9));
    conn.on_readable(&mut h.ctx(), false);
    conn.stream.accept = 1000;
    conn.close_gracefully(&mut h.ctx());
    assert_eq!(conn.stream.written, b"Welcome!\nHello, a!\n");
    assert_eq!(conn.state(), State::Lingering);
}

#[test]
fn an_idle_client_is_closed_politely_and_its_replies_delivered() {
    let mut h = Harness::new();
    let idle = Duration::from_secs(10);
    h.config.idle_timeout = Some(idle);
    let start = h.now;
    let mut conn = h.accept(stream(&[b"a\n"], 9));
    conn.on_readable(&mut h.ctx(), false);
    assert_eq!(conn.deadline(&h.config), Some(start + idle));
    h.now = start + idle - Duration::from_millis(1);
    conn.on_deadline(&mut h.ctx());
    assert_eq!(conn.state(), State::Reading, "not yet due: nothing happens");
    h.now = start + idle;
    conn.stream.accept = 1000;
    conn.on_deadline(&mut h.ctx());
    assert_eq!(conn.stream.written, b"Welcome!\nHello, a!\n");
    assert_eq!(conn.state(), State::Lingering);
    assert_eq!(conn.deadline(&h.config), Some(h.now + LINGER_TIMEOUT));
    h.now += LINGER_TIMEOUT;
    conn.on_deadline(&mut h.ctx());
    assert_eq!(conn.state(), State::Closed);
    assert_eq!(conn.deadline(&h.config), None);
}

#[test]
fn activity_moves_the_idle_deadline() {
    let mut h = Harness::new();
    let idle = Duration::from_secs(10);
    h.config.idle_timeout = Some(idle);
    let mut conn = h.accept(stream(&[], 1000));
    h.now += Duration::from_secs(7);
    conn.stream.reads.push_back(Ok(b"x\n".to_vec()));
    conn.on_readable(&mut h.ctx(), false);
    assert_eq!(conn.deadline(&h.config), Some(h.now + idle));
    h.config.idle_timeout = None;
    assert_eq!(
        conn.deadline(&h.config),
        None,
        "no idle timeout, no deadline"
    );
}

#[test]
fn a_client_that_takes_none_of_its_replies_is_cut_off_at_the_idle_timeout() {
    let mut h = Harness::new();
    let idle = Duration::from_secs(10);
    h.config.idle_timeout = Some(idle);
    h.read_buf = vec![0; 64 * 1024];
    let flood = vec![b'\n'; 64 * 1024];
    let reads: Vec<&[u8]> = (0..8).map(|_| flood.as_slice()).collect();
    let mut conn = h.accept(stream(&reads, 9));
    serve_until_it_waits(&mut h, &mut conn);
    assert_eq!(conn.state(), State::Replying);
    h.now += idle;
    conn.on_deadline(&mut h.ctx());
    assert_eq!(
        conn.state(),
        State::Closed,
        "no polite close for a peer that reads nothing"
    );
    assert_eq!(conn.output.bytes.capacity(), 0, "its output is dropped");
}

#[test]
fn lingering_reads_do_not_extend_the_lingering_deadline() {
    let mut h = Harness::new();
    let mut conn = h.accept(stream(&[b"exit\n"], 1000));
    conn.on_readable(&mut h.ctx(), false);
    assert_eq!(conn.state(), State::Lingering);
    let deadline = conn.deadline(&h.config);
    h.now += Duration::from_secs(1);
    conn.stream.reads.push_back(Ok(b"more".to_vec()));
    conn.on_readable(&mut h.ctx(), false);
    assert_eq!(conn.deadline(&h.config), deadline);
}

#[test]
fn a_graceful_close_answers_the_held_input_within_the_bounds() {
    let mut h = Harness::new();
    h.read_buf = vec![0; 64 * 1024];
    let flood = vec![b'\n'; 64 * 1024];
    let reads: Vec<&[u8]> = (0..3).map(|_| flood.as_slice()).collect();
    let mut conn = h.accept(stream(&reads, 9));
    serve_until_it_waits(&mut h, &mut conn);
    assert_eq!(conn.state(), State::Replying);
    assert!(!conn.held.is_empty());
    let unread = conn.stream.reads.len();
    // Shutdown: what was read is still owed, what is in the socket is not.
    let mut progress = conn.close_gracefully(&mut h.ctx());
    let one_reply = "Hello, !\n".len();
    for _ in 0..10_000 {
        assert!(conn.output.unsent().len() <= OUTPUT_HIGH_WATER + one_reply);
        if conn.state() == State::Lingering {
            break;
        }
        conn.stream.accept = 4096;
        progress = match progress {
            Progress::ReadAgain => conn.on_readable(&mut h.ctx(), false),
            Progress::Wait => conn.on_writable(&mut h.ctx()),
        };
    }
    assert_eq!(conn.state(), State::Lingering);
    let answered_lines = (3 - unread) * 64 * 1024;
    assert_eq!(conn.stream.written.len(), 9 + answered_lines * one_reply);
}

#[test]
fn spurious_events_change_nothing() {
    // Readiness is a hint: an event may come with nothing to read and nothing to write.
    let mut h = Harness::new();
    let mut conn = h.accept(stream(&[], 1000));
    let written = conn.stream.written.len();
    for _ in 0..3 {
        assert_eq!(conn.on_readable(&mut h.ctx(), true), Progress::Wait);
        assert_eq!(conn.on_writable(&mut h.ctx()), Progress::Wait);
    }
    assert_eq!(conn.state(), State::Reading);
    assert_eq!(conn.stream.written.len(), written, "nothing written");
    assert_eq!(conn.interest(), Some(Interest::READABLE));
    // The same in backpressure, where a readable event must not read.
    h.read_buf = vec![0; 64 * 1024];
    let flood = vec![b'\n'; 64 * 1024];
    let reads: Vec<&[u8]> = (0..8).map(|_| flood.as_slice()).collect();
    let mut conn = h.accept(stream(&reads, 9));
    serve_until_it_waits(&mut h, &mut conn);
    assert_eq!(conn.state(), State::Replying);
    let unread = conn.stream.reads.len();
    assert_eq!(conn.on_readable(&mut h.ctx(), false), Progress::Wait);
    assert_eq!(conn.stream.reads.len(), unread, "backpressure holds");
}

fn proxy_header(version: proxy::Version) -> Vec<u8> {
    let client: std::net::SocketAddr = ([192, 0, 2, 1], 5000).into();
    proxy::encode(version, client, ([127, 0, 0, 1], 9999).into())
}

#[test]
fn a_proxy_header_is_read_whole_before_anything_is_written() {
    for version in [proxy::Version::V1, proxy::Version::V2] {
        let mut h = Harness::new();
        let header = proxy_header(version);
        let mut conn = Connection::accept_proxied(stream(&[&header[..10]], 1000), h.now);
        assert_eq!(conn.state(), State::ProxyHeader);
        assert_eq!(conn.interest(), Some(Interest::READABLE));
        assert_eq!(conn.read_proxy_header(&mut h.ctx()), HeaderRead::Waiting);
        assert!(
            conn.stream.written.is_empty(),
            "no greeting before the header"
        );
        let rest = [&header[10..], b"alice\nbo"].concat();
        conn.stream.reads.push_back(Ok(rest));
        assert_eq!(
            conn.read_proxy_header(&mut h.ctx()),
            HeaderRead::Received(Some(([192, 0, 2, 1], 5000).into()))
        );
        assert!(
            conn.stream.written.is_empty(),
            "the loop decides whether to greet"
        );
        assert_eq!(conn.admitted(&mut h.ctx()), Progress::ReadAgain);
        assert_eq!(conn.stream.written, b"Welcome!\n");
        conn.on_readable(&mut h.ctx(), false);
        assert_eq!(
            conn.stream.written, b"Welcome!\nHello, alice!\n",
            "{version:?}"
        );
        assert_eq!(conn.state(), State::Reading);
        assert_eq!(conn.messages(), 1, "the header is not a line");
        conn.stream.reads.push_back(Ok(b"b\n".to_vec()));
        conn.on_readable(&mut h.ctx(), false);
        assert!(conn.stream.written.ends_with(b"Hello, bob!\n"));
    }
}

#[test]
fn anything_but_a_proxy_header_is_closed_without_a_greeting() {
    let mut h = Harness::new();
    let mut conn = Connection::accept_proxied(stream(&[b"hello\n"], 1000), h.now);
    assert!(matches!(
        conn.read_proxy_header(&mut h.ctx()),
        HeaderRead::Rejected(_)
    ));
    assert_eq!(conn.state(), State::Closed);
    assert!(conn.stream.written.is_empty());
    assert_eq!(h.stats.proxy_rejected, 1);
}

#[test]
fn a_proxy_header_must_be_whole_within_its_timeout_from_the_accept() {
    let mut h = Harness::new();
    let start = h.now;
    let header = proxy_header(proxy::Version::V1);
    let mut conn = Connection::accept_proxied(stream(&[], 1000), h.now);
    assert_eq!(
        conn.deadline(&h.config),
        Some(start + proxy::HEADER_TIMEOUT)
    );
    h.now += Duration::from_secs(1);
    conn.stream.reads.push_back(Ok(header[..5].to_vec()));
    assert_eq!(conn.read_proxy_header(&mut h.ctx()), HeaderRead::Waiting);
    assert_eq!(
        conn.deadline(&h.config),
        Some(start + proxy::HEADER_TIMEOUT),
        "part of a header does not buy more time"
    );
    h.now = start + proxy::HEADER_TIMEOUT;
    conn.on_deadline(&mut h.ctx());
    assert_eq!(conn.state(), State::Closed);
    assert!(conn.stream.written.is_empty());
    assert_eq!(h.stats.proxy_rejected, 1);
}

#[test]
fn shutdown_while_a_proxy_header_is_awaited_closes_at_once() {
    let mut h = Harness::new();
    let mut conn = Connection::accept_proxied(stream(&[], 1000), h.now);
    conn.shut_down(&mut h.ctx());
    assert_eq!(conn.state(), State::Closed);
    assert!(conn.stream.written.is_empty());
}

#[test]
fn input_behind_a_header_waits_for_a_greeting_the_socket_did_not_take() {
    let mut h = Harness::new();
    let input = [proxy_header(proxy::Version::V2), b"x\n".to_vec()].concat();
    let mut conn = Connection::accept_proxied(stream(&[&input], 4), h.now);
    assert!(matches!(
        conn.read_proxy_header(&mut h.ctx()),
        HeaderRead::Received(_)
    ));
    conn.admitted(&mut h.ctx());
    assert_eq!(conn.state(), State::Greeting);
    assert_eq!(conn.stream.written, b"Welc");
    conn.stream.accept = 1000;
    assert_eq!(conn.on_writable(&mut h.ctx()), Progress::ReadAgain);
    conn.on_readable(&mut h.ctx(), false);
    assert_eq!(conn.stream.written, b"Welcome!\nHello, x!\n");
}

/// A session stream whose handshake is under way, with `reads` scripted.
fn handshaking_stream(reads: &[&[u8]]) -> FakeStream {
    FakeStream {
        session: Some(None),
        ..stream(reads, 1000)
    }
}

#[test]
fn over_tls_the_header_comes_first_then_the_handshake_reads_what_came_behind_it() {
    let mut h = Harness::new();
    let input = [proxy_header(proxy::Version::V2), b"CLIENT HELLO".to_vec()].concat();
    let mut conn = Connection::accept_proxied(handshaking_stream(&[&input]), h.now);
    assert_eq!(conn.state(), State::ProxyHeader);
    assert!(matches!(
        conn.read_proxy_header(&mut h.ctx()),
        HeaderRead::Received(Some(_))
    ));
    h.now += Duration::from_secs(1);
    assert_eq!(conn.admitted(&mut h.ctx()), Progress::Wait);
    assert_eq!(conn.state(), State::Handshaking);
    assert_eq!(
        conn.stream.session,
        Some(Some(b"CLIENT HELLO".to_vec())),
        "what came behind the header is the session's, not a line"
    );
    assert!(
        conn.stream.written.is_empty(),
        "no greeting before the handshake"
    );
    assert_eq!(
        conn.deadline(&h.config),
        Some(h.now + h.config.handshake_timeout),
        "the handshake's time counts from the admission"
    );
}

#[test]
fn a_client_refused_after_its_header_is_told_so_then_lingered_on() {
    for tls in [false, true] {
        let mut h = Harness::new();
        let input = [proxy_header(proxy::Version::V1), b"more".to_vec()].concat();
        let fake = match tls {
            true => handshaking_stream(&[&input]),
            false => stream(&[&input], 1000),
        };
        let mut conn = Connection::accept_proxied(fake, h.now);
        assert!(matches!(
            conn.read_proxy_header(&mut h.ctx()),
            HeaderRead::Received(_)
        ));
        conn.refuse(b"ERR busy\n", &mut h.ctx());
        let expected: &[u8] = if tls { b"ALERT" } else { b"ERR busy\n" };
        assert_eq!(conn.stream.written, expected, "tls {tls}");
        assert_eq!(conn.state(), State::Lingering);
        assert!(conn.stream.shut_down.get(), "our FIN after the refusal");
        assert_eq!(conn.messages(), 0, "nothing behind the header was answered");
        conn.stream.reads.push_back(Ok(Vec::new()));
        conn.on_readable(&mut h.ctx(), false);
        assert_eq!(conn.state(), State::Closed, "closed at the peer's EOF");
    }
}
