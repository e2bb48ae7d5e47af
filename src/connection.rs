//! One TCP connection: its state machine, its bounded buffers, and what it does when its
//! socket is readable or writable.
//!
//! This module owns the life of a connection, `Greeting → Reading ⇄ Replying → Closing →
//! Lingering → Closed`, with every transition in [`State::on`]. It does the non-blocking
//! reads and writes for one socket and asks [`protocol`](crate::protocol) what to answer.
//! It must not know about the poll, tokens or other connections: the reactor registers the
//! socket with the [`interest`](Connection::interest) the state asks for and calls back in.
//! It is generic over [`Stream`] so the tests below drive it with an in-memory socket.
//!
//! Error policy, the same for every call: `WouldBlock` means stop and wait for the next
//! event; `Interrupted` is retried in the loop; `Ok(0)` from a read is EOF, answered only
//! after what is already buffered; any other error closes this connection and no other.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use crate::config::Stats;
use crate::protocol::{Flow, ProtocolConfig, Session};

/// Above this many bytes of unsent output the connection stops reading, so a client that
/// sends but never reads cannot make the server buffer without bound. 256 KiB is several
/// socket send buffers' worth: enough to keep a fast reader busy between two events.
pub const OUTPUT_HIGH_WATER: usize = 256 * 1024;

/// Reading resumes once unsent output drains below this. The gap to the high-water mark
/// keeps a slow reader from flapping between paused and reading on every small write.
pub const OUTPUT_LOW_WATER: usize = 64 * 1024;

/// The most bytes read from one connection per readiness event before the loop moves on to
/// other sources; the connection is resumed on the next turn. Four reads of the loop's
/// 64 KiB buffer: large enough to amortise the event, small enough that one pipelining
/// client cannot starve a thousand others.
pub const READ_BUDGET: usize = 256 * 1024;

/// Where a connection is in its life. Every transition is in [`State::on`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// The greeting is not fully written yet. Input is read meanwhile; its replies queue
    /// behind the greeting.
    Greeting,
    /// Nothing is owed: waiting for input.
    Reading,
    /// Replies are owed that the socket did not take at once; waiting for WRITABLE (and
    /// still reading, unless the output is above the high-water mark).
    Replying,
    /// Input is over (`exit`, a line too long, the peer's EOF, an idle timeout, server
    /// shutdown): writing what is owed, then closing. `peer_eof` remembers whether the peer
    /// already half-closed, in which case there is nothing to linger for.
    Closing {
        /// The peer half-closed already.
        peer_eof: bool,
    },
    /// Everything owed is written and our write side is shut down. Input is read and
    /// discarded until the peer's EOF (or a deadline), because closing a socket with unread
    /// input makes the kernel send a reset that can destroy replies still in flight.
    Lingering,
    /// Finished. The reactor drops it in the sweep after the event batch, so a late event
    /// for this slot cannot reach a new connection that reuses it.
    Closed,
}

/// What happened to a connection; the input of [`State::on`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// After a write attempt: output is owed that the socket has not taken yet.
    Queued,
    /// After a write attempt: nothing is owed, the socket took everything.
    Flushed,
    /// No more input will be processed: `exit`, a line too long, idle timeout, shutdown.
    InputEnded,
    /// The peer half-closed (a read returned 0).
    PeerEof,
    /// Stop waiting: the lingering deadline passed, or the server cannot wait any longer
    /// (shutdown grace over, an idle connection whose peer stopped reading).
    GiveUp,
    /// An I/O error (reset, broken pipe): nothing more can be delivered.
    Failed,
}

impl State {
    /// The state machine: the state a connection moves to when `event` happens in `self`.
    pub fn on(self, event: Event) -> State {
        use Event::*;
        use State::*;
        match (self, event) {
            (Closed, _) | (_, Failed | GiveUp) => Closed,
            (Greeting, Flushed) | (Replying, Flushed) => Reading,
            (Reading, Queued) => Replying,
            (Greeting | Reading | Replying, InputEnded) => Closing { peer_eof: false },
            (Greeting | Reading | Replying, PeerEof) => Closing { peer_eof: true },
            (Closing { .. }, PeerEof) => Closing { peer_eof: true },
            (Closing { peer_eof: true }, Flushed) => Closed,
            (Closing { peer_eof: false }, Flushed) => Lingering,
            (Lingering, PeerEof) => Closed,
            (state, _) => state,
        }
    }

    /// True while input is still answered.
    pub fn reads_input(self) -> bool {
        matches!(self, State::Greeting | State::Reading | State::Replying)
    }
}

/// What the reactor should register for: `None` once the connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interest {
    /// Wants READABLE events.
    pub readable: bool,
    /// Wants WRITABLE events.
    pub writable: bool,
}

/// A byte stream the connection can drive: a non-blocking socket in the reactor, an
/// in-memory fake in tests.
pub trait Stream: Read + Write {
    /// Shuts down the write side: the peer reads EOF after the bytes already sent.
    fn shutdown_write(&self) -> io::Result<()>;
}

impl Stream for mio::net::TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// Buffers the reactor lends to whichever connection it is serving; one set per loop, so
/// an idle connection owns no buffer at all.
pub struct Scratch<'a> {
    /// Where reads land.
    pub read_buf: &'a mut [u8],
    /// Where the replies to one read are built before they are written.
    pub replies: &'a mut Vec<u8>,
    /// What to answer.
    pub protocol: &'a ProtocolConfig,
    /// Where bytes in and out are counted.
    pub stats: &'a mut Stats,
}

/// What the reactor must do after a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Wait for the next readiness event.
    Wait,
    /// Input may be waiting that no new edge will announce (the read budget ran out, or
    /// reading resumed after backpressure): call [`Connection::on_readable`] again on the
    /// next loop turn.
    ReadAgain,
}

/// One TCP connection.
pub struct Connection<S> {
    stream: S,
    state: State,
    session: Session,
    /// Output the socket has not taken yet, from `unsent_from` on. Empty, with no
    /// allocation, whenever the socket keeps up: replies are written straight from the
    /// loop's scratch buffer and only the leftover of a partial write is copied here.
    pending_output: Vec<u8>,
    unsent_from: usize,
    /// Backpressure: set when unsent output passes the high-water mark, cleared when it
    /// drains below the low-water mark. Reading is paused in between.
    paused: bool,
}

impl<S: Stream> Connection<S> {
    /// Takes a freshly accepted stream and writes the greeting at once.
    pub fn accept(stream: S, greeting: &[u8], stats: &mut Stats) -> Connection<S> {
        let mut conn = Connection {
            stream,
            state: if greeting.is_empty() {
                State::Reading
            } else {
                State::Greeting
            },
            session: Session::new(),
            pending_output: Vec::new(),
            unsent_from: 0,
            paused: false,
        };
        conn.send(greeting, stats);
        conn.settle();
        conn
    }

    /// Where the connection is in its life.
    pub fn state(&self) -> State {
        self.state
    }

    /// The socket, for the reactor to register with its poll.
    pub fn stream(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Messages answered on this connection.
    pub fn messages(&self) -> u64 {
        self.session.messages()
    }

    fn unsent(&self) -> usize {
        self.pending_output.len() - self.unsent_from
    }

    /// The readiness this state needs. The reactor re-registers only when this changes, so
    /// a connection that keeps up costs no `epoll_ctl` per message.
    pub fn interest(&self) -> Option<Interest> {
        let owes_output = self.unsent() > 0;
        match self.state {
            State::Greeting | State::Reading | State::Replying => Some(Interest {
                readable: !self.paused,
                writable: owes_output,
            }),
            State::Closing { .. } => Some(Interest {
                readable: false,
                writable: true,
            }),
            State::Lingering => Some(Interest {
                readable: true,
                writable: false,
            }),
            State::Closed => None,
        }
    }

    fn transition(&mut self, event: Event) {
        let next = self.state.on(event);
        if next == self.state {
            return;
        }
        log::trace!("{:?} --{:?}--> {:?}", self.state, event, next);
        self.state = next;
        // Entering Lingering: our side is done, so the peer reads every reply and then a
        // clean EOF.
        if next == State::Lingering && self.stream.shutdown_write().is_err() {
            self.state = self.state.on(Event::Failed);
        }
    }

    /// Tells the state machine, after any attempt to write, whether output is still owed.
    /// Where that changes nothing (`Reading` with nothing owed, say) the table says so.
    fn settle(&mut self) {
        self.transition(if self.unsent() > 0 {
            Event::Queued
        } else {
            Event::Flushed
        });
    }

    /// Reads and answers input until the socket would block, the read budget is spent or
    /// the output is full. `short_read_drains` says the caller knows a short read empties
    /// the socket (see the reactor), which saves the read that would only say WouldBlock.
    pub fn on_readable(&mut self, scratch: &mut Scratch<'_>, short_read_drains: bool) -> Progress {
        if self.state == State::Lingering {
            return self.discard_input(scratch);
        }
        let mut budget = READ_BUDGET;
        while self.state.reads_input() && !self.paused {
            if budget == 0 {
                return Progress::ReadAgain;
            }
            let limit = scratch
                .protocol
                .read_limit(scratch.read_buf.len().min(budget));
            let buf = &mut scratch.read_buf[..limit];
            match self.stream.read(buf) {
                Ok(0) => {
                    scratch.replies.clear();
                    self.session.on_eof(scratch.protocol, scratch.replies);
                    self.transition(Event::PeerEof);
                    self.answer(scratch);
                    break;
                }
                Ok(n) => {
                    budget -= n;
                    scratch.stats.bytes_in += n as u64;
                    scratch.replies.clear();
                    let flow = self
                        .session
                        .on_input(scratch.protocol, &buf[..n], scratch.replies);
                    if flow == Flow::Close {
                        self.transition(Event::InputEnded);
                    }
                    self.answer(scratch);
                    if self.unsent() > OUTPUT_HIGH_WATER {
                        self.paused = true;
                    }
                    if n < limit && short_read_drains {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.fail("read", e);
                    break;
                }
            }
        }
        Progress::Wait
    }

    /// Writes owed output. If that took the output back below the low-water mark while
    /// reading was paused, input that arrived meanwhile has no new edge to announce it, so
    /// the caller must come back to read.
    pub fn on_writable(&mut self, stats: &mut Stats) -> Progress {
        self.flush(stats);
        self.settle();
        if self.paused && self.unsent() < OUTPUT_LOW_WATER {
            self.paused = false;
            if self.state.reads_input() {
                return Progress::ReadAgain;
            }
        }
        Progress::Wait
    }

    /// Stops answering input, delivers what is owed, then closes politely (idle timeout,
    /// server shutdown).
    pub fn close_gracefully(&mut self, stats: &mut Stats) {
        self.transition(Event::InputEnded);
        self.on_writable(stats);
    }

    /// Closes without waiting any longer: a deadline passed.
    pub fn close_now(&mut self) {
        self.transition(Event::GiveUp);
    }

    /// Sends the replies built in `scratch.replies` and moves the state machine on.
    fn answer(&mut self, scratch: &mut Scratch<'_>) {
        self.send(scratch.replies, scratch.stats);
        self.settle();
    }

    /// Writes `bytes` behind any output already owed; keeps what the socket does not take.
    fn send(&mut self, bytes: &[u8], stats: &mut Stats) {
        if self.unsent() > 0 {
            self.pending_output.extend_from_slice(bytes);
            self.flush(stats);
            return;
        }
        // Nothing owed: write straight from the caller's buffer, and copy only what the
        // socket does not take (usually nothing).
        let written = self.write_some(bytes, stats);
        if written < bytes.len() && self.state != State::Closed {
            self.pending_output.extend_from_slice(&bytes[written..]);
        }
    }

    /// Writes pending output until it is gone or the socket would block.
    fn flush(&mut self, stats: &mut Stats) {
        if self.unsent() == 0 {
            return;
        }
        let output = std::mem::take(&mut self.pending_output);
        let written = self.write_some(&output[self.unsent_from..], stats);
        self.pending_output = output;
        self.unsent_from += written;
        if self.unsent() == 0 || self.state == State::Closed {
            // Give the memory back: an idle connection should own no buffer.
            self.pending_output = Vec::new();
            self.unsent_from = 0;
        }
    }

    /// Writes as much of `bytes` as the socket takes now; returns how much it took. An
    /// error other than WouldBlock closes the connection.
    fn write_some(&mut self, bytes: &[u8], stats: &mut Stats) -> usize {
        let mut written = 0;
        while written < bytes.len() {
            match self.stream.write(&bytes[written..]) {
                Ok(0) => {
                    self.fail("write", io::ErrorKind::WriteZero.into());
                    break;
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.fail("write", e);
                    break;
                }
            }
        }
        stats.bytes_out += written as u64;
        written
    }

    /// Lingering: read and drop input until EOF or WouldBlock. Only time bounds this (the
    /// reactor's linger deadline), not bytes: giving up early would reset the connection
    /// and could destroy replies the peer has not read yet. The read budget still applies,
    /// so a peer that keeps sending cannot hold the loop.
    fn discard_input(&mut self, scratch: &mut Scratch<'_>) -> Progress {
        let mut budget = READ_BUDGET;
        while budget > 0 {
            match self.stream.read(scratch.read_buf) {
                Ok(0) => {
                    self.transition(Event::PeerEof);
                    return Progress::Wait;
                }
                Ok(n) => budget = budget.saturating_sub(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.fail("read", e);
                    return Progress::Wait;
                }
            }
        }
        Progress::ReadAgain
    }

    fn fail(&mut self, what: &str, e: io::Error) {
        log::debug!("{what} failed, closing the connection: {e}");
        self.transition(Event::Failed);
        self.pending_output = Vec::new();
        self.unsent_from = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// An in-memory socket: reads come from a script, writes go into `written` up to
    /// `accept` bytes before the fake reports WouldBlock.
    #[derive(Default)]
    struct FakeStream {
        reads: VecDeque<io::Result<Vec<u8>>>,
        written: Vec<u8>,
        accept: usize,
        shut_down: std::cell::Cell<bool>,
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
        fn shutdown_write(&self) -> io::Result<()> {
            self.shut_down.set(true);
            Ok(())
        }
    }

    struct Harness {
        read_buf: Vec<u8>,
        replies: Vec<u8>,
        protocol: ProtocolConfig,
        stats: Stats,
    }

    impl Harness {
        fn new() -> Harness {
            Harness {
                read_buf: vec![0; 64],
                replies: Vec::new(),
                protocol: ProtocolConfig::default(),
                stats: Stats::default(),
            }
        }

        fn scratch(&mut self) -> Scratch<'_> {
            Scratch {
                read_buf: &mut self.read_buf,
                replies: &mut self.replies,
                protocol: &self.protocol,
                stats: &mut self.stats,
            }
        }

        fn accept(&mut self, stream: FakeStream) -> Connection<FakeStream> {
            let mut greeting = Vec::new();
            self.protocol.greeting(&mut greeting);
            Connection::accept(stream, &greeting, &mut self.stats)
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
        interest.is_some_and(|i| i.readable)
    }

    fn writable(interest: Option<Interest>) -> bool {
        interest.is_some_and(|i| i.writable)
    }

    #[test]
    fn the_transition_table() {
        use Event::*;
        use State::*;
        assert_eq!(Greeting.on(Flushed), Reading);
        assert_eq!(Greeting.on(Queued), Greeting);
        assert_eq!(Reading.on(Queued), Replying);
        assert_eq!(Replying.on(Flushed), Reading);
        assert_eq!(Replying.on(InputEnded), Closing { peer_eof: false });
        assert_eq!(Reading.on(PeerEof), Closing { peer_eof: true });
        assert_eq!(Closing { peer_eof: false }.on(Flushed), Lingering);
        assert_eq!(Closing { peer_eof: true }.on(Flushed), Closed);
        assert_eq!(Lingering.on(PeerEof), Closed);
        assert_eq!(Lingering.on(GiveUp), Closed);
        for state in [
            Greeting,
            Reading,
            Replying,
            Closing { peer_eof: false },
            Lingering,
        ] {
            assert_eq!(state.on(Failed), Closed);
            assert_eq!(state.on(GiveUp), Closed);
        }
        assert_eq!(Closed.on(Queued), Closed);
    }

    #[test]
    fn greeting_written_at_once_then_reading() {
        let mut h = Harness::new();
        let conn = h.accept(stream(&[], 1000));
        assert_eq!(conn.state(), State::Reading);
        assert_eq!(conn.stream.written, b"Welcome!\n");
        assert_eq!(
            conn.interest(),
            Some(Interest {
                readable: true,
                writable: false
            })
        );
    }

    #[test]
    fn a_partial_greeting_waits_for_writable_and_replies_queue_behind_it() {
        let mut h = Harness::new();
        let mut conn = h.accept(stream(&[b"bob\n"], 3));
        assert_eq!(conn.state(), State::Greeting);
        assert!(writable(conn.interest()));
        conn.on_readable(&mut h.scratch(), false);
        assert_eq!(conn.state(), State::Greeting);
        conn.stream.accept = 1000;
        conn.on_writable(&mut h.stats);
        assert_eq!(conn.state(), State::Reading);
        assert_eq!(conn.stream.written, b"Welcome!\nHello, bob!\n");
        assert!(!writable(conn.interest()));
        assert_eq!(
            conn.pending_output.capacity(),
            0,
            "an idle connection owns no buffer"
        );
    }

    #[test]
    fn partial_writes_keep_the_rest_in_order() {
        let mut h = Harness::new();
        let mut conn = h.accept(stream(&[b"a\nb\n", b"c\n"], 12));
        conn.on_readable(&mut h.scratch(), false);
        assert_eq!(conn.state(), State::Replying);
        for _ in 0..20 {
            conn.stream.accept = 2;
            conn.on_writable(&mut h.stats);
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
        conn.on_readable(&mut h.scratch(), false);
        assert_eq!(conn.stream.written, b"Welcome!\nHello, a!\n");
        assert_eq!(conn.state(), State::Lingering);
        assert!(
            conn.stream.shut_down.get(),
            "write side shut down before lingering"
        );
        assert!(readable(conn.interest()));
        conn.stream.reads.push_back(Ok(b"more\n".to_vec()));
        conn.stream.reads.push_back(Ok(Vec::new()));
        conn.on_readable(&mut h.scratch(), false);
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
        conn.on_readable(&mut h.scratch(), false);
        assert_eq!(conn.stream.written, b"Welcome!\nHello, a!\nHello, last!\n");
        assert_eq!(conn.state(), State::Closed);
    }

    #[test]
    fn eof_with_output_owed_closes_once_it_is_written() {
        let mut h = Harness::new();
        let mut conn = h.accept(stream(&[b"a\n", b""], 9));
        conn.on_readable(&mut h.scratch(), false);
        assert_eq!(conn.state(), State::Closing { peer_eof: true });
        conn.stream.accept = 1000;
        conn.on_writable(&mut h.stats);
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
        conn.on_readable(&mut h.scratch(), false);
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
        conn.on_readable(&mut h.scratch(), false);
        assert_eq!(conn.stream.written, b"Welcome!\nHello, x!\n");
    }

    #[test]
    fn a_short_read_ends_the_turn_only_when_the_caller_says_it_drains() {
        let mut h = Harness::new();
        let mut conn = h.accept(stream(&[b"a\n", b"b\n"], 1000));
        conn.on_readable(&mut h.scratch(), true);
        assert_eq!(
            conn.stream.reads.len(),
            1,
            "one read, no extra WouldBlock read"
        );
        conn.on_readable(&mut h.scratch(), false);
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
        assert_eq!(conn.on_readable(&mut h.scratch(), false), Progress::Wait);
        assert!(conn.unsent() > OUTPUT_HIGH_WATER);
        assert!(!readable(conn.interest()), "backpressure: not reading");
        assert!(conn.stream.reads.len() > 1, "input left in the socket");
        // Draining to just under the high-water mark is not enough: the low one counts.
        conn.stream.accept = conn.unsent() - OUTPUT_HIGH_WATER + 1;
        assert_eq!(conn.on_writable(&mut h.stats), Progress::Wait);
        assert!(!readable(conn.interest()), "still paused between the marks");
        conn.stream.accept = usize::MAX;
        assert_eq!(conn.on_writable(&mut h.stats), Progress::ReadAgain);
        assert!(readable(conn.interest()));
    }

    #[test]
    fn the_read_budget_yields_to_other_connections() {
        let mut h = Harness::new();
        h.read_buf = vec![0; 64 * 1024];
        let line = vec![b'x'; 64 * 1024 - 1];
        let mut chunk = line.clone();
        chunk.push(b'\n');
        h.protocol.mode = crate::protocol::Mode::Echo;
        h.protocol.max_line = 64 * 1024;
        let reads: Vec<&[u8]> = (0..6).map(|_| chunk.as_slice()).collect();
        let mut conn = h.accept(stream(&reads, usize::MAX));
        assert_eq!(
            conn.on_readable(&mut h.scratch(), false),
            Progress::ReadAgain
        );
        assert_eq!(conn.stream.reads.len(), 2);
    }

    #[test]
    fn graceful_close_delivers_what_is_owed() {
        let mut h = Harness::new();
        let mut conn = h.accept(stream(&[b"a\n"], 9));
        conn.on_readable(&mut h.scratch(), false);
        conn.stream.accept = 1000;
        conn.close_gracefully(&mut h.stats);
        assert_eq!(conn.stream.written, b"Welcome!\nHello, a!\n");
        assert_eq!(conn.state(), State::Lingering);
    }
}
