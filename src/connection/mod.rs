//! One TCP connection: its state machine, its bounded output, and what it does when its
//! socket is readable or writable or one of its deadlines passes.
//!
//! This module owns the life of a connection, `(ProxyHeader →) (Handshaking →) Greeting →
//! Reading ⇄ Replying → Closing → Lingering → Closed`, with every transition in
//! [`State::on`]. It does the non-blocking
//! reads and writes for one socket, asks [`protocol`](crate::protocol) what to answer, and
//! decides when it next needs attention ([`Connection::deadline`]) and what happens then
//! ([`Connection::on_deadline`]). It never reads the clock: the loop passes the time in.
//! It must not know about the poll, tokens or other connections: the loop registers the
//! socket with the [`interest`](Connection::interest) the state asks for and calls back in.
//! It is generic over [`Stream`] so its tests (`connection/tests.rs`) drive it with an
//! in-memory socket and a clock they move by hand, and so that a TLS connection
//! ([`tls`](crate::tls)) is driven by the same code as a socket, while a socket, whose
//! TLS-only steps are defaults that do nothing, is compiled without them.
//!
//! Its memory is bounded by construction: answering stops as soon as unsent output reaches
//! [`OUTPUT_HIGH_WATER`], and the input read but not answered yet waits here (one read at
//! most) until the output drains. What all connections hold together is bounded by the
//! server-wide [`MemoryBudget`](crate::budget::MemoryBudget): each connection takes on no more
//! than its equal share of it.
//!
//! Its files: `state.rs`, the transition table; `stream.rs`, what it reads and writes
//! through; `output.rs`, its unsent output; `preamble.rs`, what comes before the greeting,
//! in order on the raw socket (a PROXY header and the loop's admission of its client, then
//! a TLS handshake); this one, everything else a connection does.
//!
//! Error policy, the same for every call: `WouldBlock` means stop and wait for the next
//! event; `Interrupted` is retried in the loop; `Ok(0)` from a read is EOF, answered only
//! after what is already buffered; any other error closes this connection and no other.

use std::io::{self, Write};
use std::time::Instant;

use mio::Interest;

use crate::config::ServerConfig;
use crate::net::LINGER_TIMEOUT;
use crate::protocol::{Flow, Session, LINE_TIMEOUT};
use crate::proxy;
use crate::stats::Stats;

use output::Output;
pub use preamble::HeaderRead;
pub use state::{State, Trigger};
pub use stream::Stream;

/// Once this many bytes of output are unsent the connection stops answering and reading, so
/// a client that sends but never reads cannot make the server buffer without bound (it
/// holds at most this plus one reply). With the kernel holding at most
/// [`UNSENT_LIMIT`](crate::net::UNSENT_LIMIT) unsent, this is where a client's replies wait:
/// 64 KiB refills the kernel's queue four times between two events, plenty for a client
/// that reads. More only costs memory and work for one that does not: beside 2,000 of them
/// the server's peak RSS was 279 MiB at 256 KiB and 234 MiB at 64 KiB (the bench's attack
/// row), the difference spent answering lines nobody would read while honest clients waited.
pub const OUTPUT_HIGH_WATER: usize = 64 * 1024;

/// Reading resumes once unsent output drains below this. The gap to the high-water mark
/// keeps a slow reader from flapping between paused and reading on every small write.
pub const OUTPUT_LOW_WATER: usize = 16 * 1024;

/// The most bytes read from one connection per readiness event before the loop moves on to
/// other sources; the connection is resumed on the next turn. Four reads of the loop's
/// 64 KiB buffer: large enough to amortise the event, small enough that one pipelining
/// client cannot starve a thousand others.
pub const READ_BUDGET: usize = 256 * 1024;

/// The most reply bytes one connection may produce per readiness event before the loop
/// moves on (memcached's `reqs_per_event` counts requests for the same reason); the rest of
/// its input waits in the connection for the next turn. Bytes read alone do not bound the
/// work: 256 KiB of empty lines owe 2.3 MB of `Hello, !` replies. 16 KiB is about 1,800 of
/// the shortest replies, some tens of microseconds, so a turn of a few hundred busy
/// connections stays within tens of milliseconds; an ordinary pipelined batch is far
/// smaller.
pub const REPLY_BUDGET: usize = 16 * 1024;

/// What each read costs of the [`READ_BUDGET`] at least, however few bytes it returned:
/// the budget bounds the calls an event may make (64), not only the bytes, so a connection
/// whose share of the memory budget allows only small reads cannot make the loop spend
/// thousands of calls on it in one turn. 4 KiB is far below an ordinary read under load,
/// so a client that sends much is read as before.
pub const READ_COST_FLOOR: usize = 4 * 1024;

/// What each batch of replies to held input costs of the [`REPLY_BUDGET`] at least: a
/// connection whose share of the memory budget allows only a few replies per batch is
/// answered in at most 64 such batches (and as many writes) per event, not thousands. An
/// ordinary batch is larger.
pub const REPLY_COST_FLOOR: usize = 256;

/// What the loop lends to whichever connection it is serving: one set of buffers per loop,
/// so an idle connection owns no buffer at all, plus the settings and the time of this turn.
pub struct Context<'a> {
    /// Where reads land.
    pub read_buf: &'a mut [u8],
    /// Where the replies to one read are built before they are written.
    pub replies: &'a mut Vec<u8>,
    /// What to answer, and the timeouts.
    pub config: &'a ServerConfig,
    /// Where bytes in and out are counted.
    pub stats: &'a mut Stats,
    /// The time of this loop turn.
    pub now: Instant,
    /// This turn's equal share of the server-wide memory budget
    /// ([`MemoryBudget::share`](crate::budget::MemoryBudget::share)).
    pub share: usize,
    /// The greeting, for a connection that is greeted only once its PROXY header is in.
    pub greeting: &'a [u8],
}

/// What the loop must do after a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a connection that says ReadAgain gets no socket event to come back for it"]
pub enum Progress {
    /// Wait for the next readiness event.
    Wait,
    /// Input may be waiting that no new edge will announce (the read budget ran out, or
    /// reading resumed after the greeting or after backpressure): call
    /// [`Connection::on_readable`] again on the next loop turn.
    ReadAgain,
}

/// One TCP connection.
pub struct Connection<S> {
    stream: S,
    state: State,
    session: Session,
    /// Input read but not answered yet, because the output reached the high-water mark or
    /// the turn's reply budget ran out: at most one read's worth. It is answered, in order,
    /// before anything more is read.
    held: Vec<u8>,
    output: Output,
    /// The last time anything moved: bytes read or written, or a change of state. The
    /// deadlines count from here (except lingering's, which reads do not extend).
    last_progress: Instant,
    /// Stopped at its share of the memory budget, waiting for its output to drain.
    budget_paused: bool,
}

/// What can move a connection's [`deadline`](Connection::deadline) earlier: which state it
/// is in (what each state's deadline counts from is its own) and whether it holds an
/// unfinished line (the line timeout). Everything else that happens to it, progress or a
/// line that starts behind one just answered, moves the deadline later or leaves it.
pub type DeadlineBasis = (std::mem::Discriminant<State>, bool);

impl<S: Stream> Connection<S> {
    /// Takes a freshly accepted stream and writes the greeting at once.
    /// Over TLS the greeting waits for the handshake (see [`State::Handshaking`]).
    pub fn accept(stream: S, greeting: &[u8], stats: &mut Stats, now: Instant) -> Connection<S> {
        if stream.handshaking() {
            return Connection::new(stream, State::Handshaking, now);
        }
        let mut conn = Connection::new(stream, State::Greeting, now);
        conn.write(greeting, stats, now);
        conn
    }

    /// Takes a freshly accepted stream that must begin with a PROXY header
    /// (`--proxy-protocol`): nothing is written until it has arrived, see
    /// [`read_proxy_header`](Self::read_proxy_header).
    pub fn accept_proxied(stream: S, now: Instant) -> Connection<S> {
        Connection::new(stream, State::ProxyHeader, now)
    }

    fn new(stream: S, state: State, now: Instant) -> Connection<S> {
        Connection {
            stream,
            state,
            session: Session::new(),
            held: Vec::new(),
            output: Output::default(),
            last_progress: now,
            budget_paused: false,
        }
    }

    /// Where the connection is in its life.
    pub fn state(&self) -> State {
        self.state
    }

    /// The socket, for the loop to register with its poll.
    pub fn stream(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Who is at the other end of the socket (a balancer, behind one), for a log line.
    pub fn peer(&self) -> Option<std::net::SocketAddr> {
        self.stream.peer()
    }

    /// Not being read until its client takes some of its replies: backpressure (state
    /// `Replying`) or its share of the memory budget used up.
    pub fn paused(&self) -> bool {
        self.state == State::Replying || self.budget_paused
    }

    /// Messages answered on this connection.
    pub fn messages(&self) -> u64 {
        self.session.messages()
    }

    /// Bytes of memory this connection's buffers hold (their capacity): unsent output,
    /// input held unanswered, and an unfinished line; over TLS also the records and the
    /// plaintext rustls holds. Zero for a client that keeps up.
    pub fn holds(&self) -> usize {
        self.output.bytes.capacity()
            + self.held.capacity()
            + self.session.capacity()
            + self.stream.unsent()
            + self.stream.unread()
    }

    /// Output owed and not in the socket yet: the connection's own and what its stream holds.
    fn owed(&self) -> usize {
        self.output.len() + self.stream.unsent()
    }

    /// Whether any output is owed; for a socket, exactly `!self.output.is_empty()`.
    fn owes(&self) -> bool {
        !self.output.is_empty() || self.stream.unsent() > 0
    }

    /// The readiness this state needs; `None` once closed. The loop re-registers only when
    /// this changes, so a connection that keeps up costs no `epoll_ctl` per message.
    pub fn interest(&self) -> Option<Interest> {
        match self.state {
            State::Reading if !self.owes() => Some(Interest::READABLE),
            State::Reading => Some(Interest::READABLE | Interest::WRITABLE),
            // A flight the socket did not take at once waits for WRITABLE; reading goes on.
            State::Handshaking if self.stream.unsent() > 0 => {
                Some(Interest::READABLE | Interest::WRITABLE)
            }
            State::Handshaking => Some(Interest::READABLE),
            State::Greeting | State::Replying | State::Closing { .. } => Some(Interest::WRITABLE),
            State::ProxyHeader | State::Lingering => Some(Interest::READABLE),
            State::Closed => None,
        }
    }

    /// When this connection next needs attention if nothing happens before: `None` when it
    /// never does (no timeouts, or closed). The loop calls
    /// [`on_deadline`](Self::on_deadline) at or after this time.
    pub fn deadline(&self, config: &ServerConfig) -> Option<Instant> {
        match self.state {
            State::Reading => earliest(self.idle_deadline(config), self.line_deadline(config)),
            // From the accept: reading part of a header does not extend it.
            State::ProxyHeader => Some(self.last_progress + proxy::HEADER_TIMEOUT),
            // From the accept too: the handshake's reads do not extend it.
            State::Handshaking => Some(self.last_progress + config.handshake_timeout),
            State::Lingering => Some(self.last_progress + LINGER_TIMEOUT),
            State::Closed => None,
            _ => self.idle_deadline(config),
        }
    }

    /// What can move the deadline earlier ([`DeadlineBasis`]): the loop asks for the
    /// deadline again only when this changed, which keeps that off the per-message path.
    /// (A change between `Closing` states moves it later: a transition restarts the count.)
    #[inline]
    pub fn deadline_basis(&self) -> DeadlineBasis {
        (
            std::mem::discriminant(&self.state),
            self.session.line_started().is_some(),
        )
    }

    fn idle_deadline(&self, config: &ServerConfig) -> Option<Instant> {
        config.idle_timeout.map(|idle| self.last_progress + idle)
    }

    fn line_deadline(&self, config: &ServerConfig) -> Option<Instant> {
        self.session.line_deadline(config.line_timeout)
    }

    /// Acts on a deadline that has passed; does nothing if it has not (the loop may call
    /// early, for a deadline that moved later since it was scheduled).
    ///
    /// What a deadline means depends on the state: a client that sent nothing for the
    /// idle timeout is closed politely (its replies are still delivered); one that took
    /// none of its replies for that long, or a peer that did not close within the
    /// lingering time, is cut off.
    pub fn on_deadline(&mut self, ctx: &mut Context<'_>) -> Progress {
        if self
            .deadline(ctx.config)
            .is_none_or(|deadline| deadline > ctx.now)
        {
            return Progress::Wait;
        }
        match self.state {
            State::Reading
                if self
                    .line_deadline(ctx.config)
                    .is_some_and(|at| at <= ctx.now) =>
            {
                log::debug!(
                    "a line unfinished for {:?}: closing",
                    ctx.config.line_timeout
                );
                self.write(LINE_TIMEOUT, ctx.stats, ctx.now);
                return self.close_gracefully(ctx);
            }
            State::Greeting | State::Reading => {
                log::debug!("idle for {:?}: closing", ctx.config.idle_timeout);
                return self.close_gracefully(ctx);
            }
            State::Replying | State::Closing { .. } => {
                log::debug!(
                    "the peer took no output for {:?}: closing",
                    ctx.config.idle_timeout
                );
                self.close_now(ctx.now);
            }
            State::ProxyHeader => {
                ctx.stats.proxy_rejected += 1;
                self.close_now(ctx.now);
            }
            State::Handshaking => {
                ctx.stats.tls_rejected += 1;
                let timeout = ctx.config.handshake_timeout;
                self.stream
                    .log_handshake_failure(&format_args!("not complete within {timeout:?}"));
                self.close_now(ctx.now);
            }
            State::Lingering => self.close_now(ctx.now),
            State::Closed => {}
        }
        Progress::Wait
    }

    /// Reads and answers input until the socket would block, the read budget is spent or
    /// the output is full; while lingering, reads and discards. `short_read_drains` says
    /// the caller knows a short read empties the socket (see
    /// [`net::SHORT_READ_DRAINS`](crate::net::SHORT_READ_DRAINS)), which saves the read that
    /// would only say WouldBlock.
    pub fn on_readable(&mut self, ctx: &mut Context<'_>, short_read_drains: bool) -> Progress {
        match self.state {
            State::Reading => self.read_and_answer(ctx, short_read_drains && S::SHORT_READ_DRAINS),
            State::Handshaking => self.handshake(ctx),
            // Closing reads nothing more, but answers what it read before input ended.
            State::Closing { .. } => self.answer_held(ctx),
            State::Lingering => self.discard_input(ctx),
            // The greeting goes first, and backpressure holds input in the socket. An event
            // here is spurious, or an error the next write will report. A PROXY header is
            // read by `read_proxy_header`, since the loop has a decision to make after it.
            State::ProxyHeader | State::Greeting | State::Replying | State::Closed => {
                Progress::Wait
            }
        }
    }

    /// Writes owed output. If that ended the greeting or the backpressure, input that
    /// arrived meanwhile has no new edge to announce it, so the caller must come back to
    /// read.
    pub fn on_writable(&mut self, ctx: &mut Context<'_>) -> Progress {
        if self.state == State::Handshaking {
            return self.handshake(ctx);
        }
        let before = self.state;
        // Records the stream holds go first (TLS; nothing for a socket).
        match self.stream.send_unsent() {
            Ok(0) => {}
            Ok(_) => self.last_progress = ctx.now,
            Err(e) => self.fail("write", e),
        }
        self.write(&[], ctx.stats, ctx.now);
        if std::mem::take(&mut self.budget_paused) {
            // Paused by the memory budget: its output moved, so it may go on.
            return Progress::ReadAgain;
        }
        match self.state {
            State::Reading if before != State::Reading => Progress::ReadAgain,
            State::Closing { .. } if self.owed() < OUTPUT_LOW_WATER => self.answer_held(ctx),
            _ => Progress::Wait,
        }
    }

    /// Stops reading, delivers what is owed, then closes politely (idle timeout, server
    /// shutdown). Input already read but held back by the output bound is owed too: it is
    /// answered in `Closing`, under the same bounds as before, turn by turn.
    pub fn close_gracefully(&mut self, ctx: &mut Context<'_>) -> Progress {
        self.transition(Trigger::InputEnded, ctx.now);
        self.write(&[], ctx.stats, ctx.now);
        self.answer_held(ctx)
    }

    /// Closing: answers held input as far as the output bound and one reply budget allow.
    /// `ReadAgain` when the budget ran out with input still held and room to write, since
    /// no socket event will come back for it.
    fn answer_held(&mut self, ctx: &mut Context<'_>) -> Progress {
        let mut reply_budget = REPLY_BUDGET;
        while matches!(self.state, State::Closing { .. })
            && !self.held.is_empty()
            && self.owed() < OUTPUT_HIGH_WATER
        {
            if reply_budget == 0 {
                return Progress::ReadAgain;
            }
            if self.pause_for_budget(ctx) {
                return Progress::Wait;
            }
            self.answer_held_batch(ctx, &mut reply_budget);
        }
        Progress::Wait
    }

    /// Answers one batch of the input held back, which costs at least [`REPLY_COST_FLOOR`]
    /// of the reply budget. (A batch answering a read needs no floor: the read's own
    /// [`READ_COST_FLOOR`] bounds how many there are.)
    fn answer_held_batch(&mut self, ctx: &mut Context<'_>, reply_budget: &mut usize) {
        let before = *reply_budget;
        let held = std::mem::take(&mut self.held);
        self.answer(ctx, &held, reply_budget);
        let spent = before - *reply_budget;
        *reply_budget = reply_budget.saturating_sub(REPLY_COST_FLOOR.saturating_sub(spent));
    }

    /// Server shutdown: like [`close_gracefully`](Self::close_gracefully), except that a
    /// connection that owed nothing, held no unfinished line and had no unread input closes
    /// at once instead of lingering. Its client has every reply and our FIN; waiting for its
    /// EOF would only hold the exit up, since no input of its is at risk of a reset.
    pub fn shut_down(&mut self, ctx: &mut Context<'_>) -> Progress {
        let idle = matches!(self.state, State::Reading | State::Handshaking)
            && !self.owes()
            && self.held.is_empty()
            && self.session.buffered() == 0;
        let progress = self.close_gracefully(ctx);
        if idle
            && matches!(self.state, State::Lingering)
            && self.discard_input(ctx) == Progress::Wait
        {
            self.close_now(ctx.now);
        }
        progress
    }

    /// Closes without waiting any longer: the shutdown grace is over.
    pub fn close_now(&mut self, now: Instant) {
        self.transition(Trigger::GiveUp, now);
    }

    fn transition(&mut self, trigger: Trigger, now: Instant) {
        let next = self.state.on(trigger);
        if next == self.state {
            return;
        }
        log::trace!("{:?} --{:?}--> {:?}", self.state, trigger, next);
        self.state = next;
        self.last_progress = now;
        match next {
            // Our side is done, so the peer reads every reply and then a clean EOF.
            State::Lingering => {
                if let Err(e) = self.stream.shutdown_write() {
                    self.fail("shutdown", e);
                }
            }
            State::Closed => {
                self.output.clear();
                self.held = Vec::new();
            }
            // After `exit` (or a line too long) nothing more is answered, so what was held
            // is dropped; after an idle timeout or at shutdown it is still answered.
            State::Closing { .. } if self.session.is_closed() => self.held = Vec::new(),
            _ => {}
        }
    }

    fn read_and_answer(&mut self, ctx: &mut Context<'_>, short_read_drains: bool) -> Progress {
        let mut read_budget = READ_BUDGET;
        let mut reply_budget = REPLY_BUDGET;
        let mut drained = false;
        while matches!(self.state, State::Reading) {
            if reply_budget == 0 {
                return Progress::ReadAgain;
            }
            if self.pause_for_budget(ctx) {
                return Progress::Wait;
            }
            let allowance = self.allowance(ctx);
            if !self.held.is_empty() {
                self.answer_held_batch(ctx, &mut reply_budget);
                continue;
            }
            if drained {
                break;
            }
            if read_budget == 0 {
                return Progress::ReadAgain;
            }
            if allowance < 2 && self.session.buffered() > 0 {
                // Owing nothing, its unfinished line holds its whole share: it can neither
                // finish the line nor be answered, so it is refused, as a line past
                // `--max-line` is, rather than read a byte at a time or left unread.
                self.refuse_line(ctx);
                break;
            }
            let protocol = &ctx.config.protocol;
            // Under the memory budget, read no more than half of what this connection may
            // still take on, leaving the other half for the replies (see `answer`).
            let limit = protocol.read_limit(
                ctx.read_buf
                    .len()
                    .min(read_budget)
                    .min(allowance / 2)
                    .max(1),
            );
            match self.stream.read(&mut ctx.read_buf[..limit]) {
                Ok(0) => {
                    ctx.replies.clear();
                    self.session.on_eof(protocol, ctx.replies);
                    self.transition(Trigger::PeerEof, ctx.now);
                    self.write(ctx.replies, ctx.stats, ctx.now);
                    break;
                }
                Ok(n) => {
                    read_budget = read_budget.saturating_sub(n.max(READ_COST_FLOOR));
                    ctx.stats.bytes_in += n as u64;
                    self.last_progress = ctx.now;
                    drained = n < limit && short_read_drains;
                    // The read buffer is the loop's, lent for this call: take it out of the
                    // context while the rest of the context is used beside it.
                    let buf = std::mem::take(&mut ctx.read_buf);
                    self.answer(ctx, &buf[..n], &mut reply_budget);
                    ctx.read_buf = buf;
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

    /// How many more bytes this connection may take on now under the memory budget: what
    /// is left of its equal share. Asked before every read and every batch of replies, so a
    /// connection overshoots its share by at most one reply.
    fn allowance(&self, ctx: &Context<'_>) -> usize {
        ctx.share.saturating_sub(self.holds())
    }

    /// The memory budget: true (and the connection pauses) when it holds its share and
    /// owes output. Its WRITABLE event, once the peer reads, resumes it (see
    /// [`on_writable`](Self::on_writable)). A connection that owes nothing is never
    /// paused, so it can always make progress, by small steps (see `allowance`).
    fn pause_for_budget(&mut self, ctx: &Context<'_>) -> bool {
        let pause = self.owes() && self.allowance(ctx) == 0;
        self.budget_paused |= pause;
        pause
    }

    /// Answers `input` as far as the output bound and this call's reply budget allow, and
    /// writes the replies. What is not answered yet goes to `held`, in order. So unsent
    /// output never passes [`OUTPUT_HIGH_WATER`] by more than one reply, whatever the input.
    fn answer(&mut self, ctx: &mut Context<'_>, input: &[u8], reply_budget: &mut usize) {
        let room = OUTPUT_HIGH_WATER
            .saturating_sub(self.owed())
            .min(*reply_budget)
            .min(self.allowance(ctx) / 2)
            .max(1);
        ctx.replies.clear();
        let (flow, used) =
            self.session
                .on_input_until(&ctx.config.protocol, input, ctx.replies, room);
        *reply_budget = reply_budget.saturating_sub(ctx.replies.len());
        if flow == Flow::Close {
            self.transition(Trigger::InputEnded, ctx.now);
        } else if used < input.len() {
            self.held.extend_from_slice(&input[used..]);
        }
        self.session.note_input(ctx.now);
        self.write(ctx.replies, ctx.stats, ctx.now);
    }

    /// Tells the client its unfinished line is too long for its share of the memory
    /// budget, and closes politely (its replies so far are delivered, as after any `ERR`).
    #[cold]
    fn refuse_line(&mut self, ctx: &mut Context<'_>) {
        log::debug!(
            "an unfinished line of {} bytes holds the connection's share ({} bytes): refused",
            self.session.buffered(),
            ctx.share
        );
        ctx.replies.clear();
        let _ = self.session.refuse_line(ctx.replies);
        self.transition(Trigger::InputEnded, ctx.now);
        self.write(ctx.replies, ctx.stats, ctx.now);
    }

    /// The one write path: `fresh` goes behind anything already owed, then as much as the
    /// socket takes is written, the rest kept in order. When nothing is owed the bytes are
    /// written straight from the caller's buffer and only what the socket does not take is
    /// copied (usually nothing). The state machine then learns the output's new level.
    fn write(&mut self, fresh: &[u8], stats: &mut Stats, now: Instant) {
        let result = if self.output.is_empty() {
            write_some(&mut self.stream, fresh).inspect(|&n| {
                if n < fresh.len() {
                    self.output.push(&fresh[n..]);
                }
            })
        } else {
            self.output.push(fresh);
            write_some(&mut self.stream, self.output.unsent()).inspect(|&n| self.output.consume(n))
        };
        match result {
            Ok(0) => {}
            Ok(n) => {
                stats.bytes_out += n as u64;
                self.last_progress = now;
            }
            Err(e) => return self.fail("write", e),
        }
        let unsent = self.owed();
        let level = if unsent == 0 && self.held.is_empty() {
            // The steady state of a client that keeps up: (Reading, Flushed) changes
            // nothing, and this is the one check per message that says so without a call.
            if self.state == State::Reading {
                return;
            }
            // Everything owed is out: a TLS connection ends with close_notify, which must be
            // out too before the close. (Nothing for a socket: this folds away.)
            if matches!(self.state, State::Closing { .. }) && !self.send_close_notify() {
                return;
            }
            Trigger::Flushed
        } else if unsent == 0 && self.state == State::Greeting {
            // Input held while greeting came behind a PROXY header: it is not owed
            // output yet, just input that arrived early, read once serving begins.
            Trigger::Flushed
        } else if unsent > OUTPUT_HIGH_WATER {
            Trigger::AboveHighWater
        } else if unsent < OUTPUT_LOW_WATER {
            Trigger::BelowLowWater
        } else {
            return;
        };
        self.transition(level, now);
    }

    /// Queues the TLS connection's end behind everything written and sends it: `true` once it is
    /// in the socket.
    fn send_close_notify(&mut self) -> bool {
        self.stream.queue_close_notify();
        if let Err(e) = self.stream.send_unsent() {
            self.fail("write", e);
            return false;
        }
        self.stream.unsent() == 0
    }

    /// Lingering: read and drop input until EOF or WouldBlock. Only time bounds this (the
    /// lingering deadline), not bytes: giving up early would reset the connection and could
    /// destroy replies the peer has not read yet. The read budget still applies, so a peer
    /// that keeps sending cannot hold the loop.
    fn discard_input(&mut self, ctx: &mut Context<'_>) -> Progress {
        let mut budget = READ_BUDGET;
        while budget > 0 {
            match self.stream.read_beneath(ctx.read_buf) {
                Ok(0) => {
                    self.transition(Trigger::PeerEof, ctx.now);
                    return Progress::Wait;
                }
                // Counted as read, as the threaded baseline counts it: both servers' `bytes
                // in` is what their clients sent.
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    ctx.stats.bytes_in += n as u64;
                }
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

    /// Any I/O error ends the connection: nothing more can be delivered. (The time passed
    /// on does not matter: a closed connection has no deadline.)
    fn fail(&mut self, what: &str, e: io::Error) {
        log::debug!("{what} failed, closing the connection: {e}");
        self.transition(Trigger::Failed, self.last_progress);
    }
}

/// The earlier of two optional deadlines.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Writes as much of `bytes` as `stream` takes now; returns how much it took. WouldBlock
/// ends the attempt; any other error (a write of zero bytes included) is returned.
fn write_some(stream: &mut impl Write, bytes: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match stream.write(&bytes[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

mod output;
mod preamble;
mod state;
mod stream;
#[cfg(test)]
mod tests;
