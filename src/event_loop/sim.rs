//! A seeded, deterministic simulation of the loop's policy: hundreds of simulated clients of
//! every kind (honest clients arriving at any time, pipelining readers, clients that never
//! read, dribblers, unfinished lines of any length, clients that half-close, reset or say
//! `exit`) against the real [`Connection`]s and `protocol::Session`s, served by the loop's
//! own policy ([`Served`]: the ready list, the read and reply budgets, the memory budget and
//! its shares, the deadlines, the lingering close, and admission at `--max-connections`
//! through the server's own [`Admission`], which closes the oldest lingering connection to
//! make room) over simulated sockets whose buffers fill, on a simulated clock.
//!
//! Only the world is simulated (`sim/world.rs`): the sockets (their buffers, FIN, reset), epoll's
//! edge-triggered readiness (an event when something arrives or room frees, and when
//! (re)registering finds the socket ready), the clients and the clock (each turn costs time
//! in proportion to the calls it made). After every turn it checks:
//! - nothing owed is lost or reordered: every reply a client gets is the one it is owed
//!   next, and a client that half-closed gets every reply before EOF;
//! - memory stays within the bound, and the budget's count is the sum of what connections
//!   hold;
//! - the loop does bounded work: no connection costs more than [`CALLS_PER_SERVICE`]
//!   calls in a turn, and a turn that made no progress is never followed by another such
//!   turn that does not wait (no spin);
//! - every honest client is greeted and answered within [`ANSWER_TURNS`] turns and
//!   [`ANSWER_TIME`] of simulated time;
//! - every connection's deadline is acted on within [`DEADLINE_SLACK`], and a closed one is
//!   gone by the end of its turn.
//!
//! A failure panics with its seed; `EVLOOP_SIM_SEED=N` replays exactly that run.
//! `cargo test --lib sim` runs seeds for about two seconds; `EVLOOP_SIM_SECONDS=600 cargo
//! test --release --lib sim -- --nocapture` runs them for ten minutes (`EVLOOP_SIM_FIRST`
//! picks the first seed, so several machines can share the work).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Token;
use slab::Slab;

use super::serve::{serve_ready, Served};
use super::slot::{Ready, Scratch, Slot};
use super::{ACCEPT_BUDGET, READ_BUFFER};
use crate::admission::{Admission, LingeringQueue};
use crate::budget::MemoryBudget;
use crate::config::ServerConfig;
use crate::connection::{
    Connection, State, READ_BUDGET, READ_COST_FLOOR, REPLY_BUDGET, REPLY_COST_FLOOR,
};
use crate::stats::Stats;
use crate::timers::Timers;

mod world;
use world::{Kind, Rng, Shared, SimPoll, SimStream, KINDS, SOCKET_BUFFER};

/// Simulated time one call on a socket costs the loop, and one turn's fixed cost.
const CALL_COST: Duration = Duration::from_micros(2);
const TURN_COST: Duration = Duration::from_micros(20);

/// The most calls the loop may make on one connection in one turn. One service of it
/// reads at most `READ_BUDGET / READ_COST_FLOOR` times (and once more to find WouldBlock),
/// answers each read in one batch and its held input in at most `REPLY_BUDGET /
/// REPLY_COST_FLOOR` more, with a write or two each; a connection may be served three
/// times a turn (an event, the ready list, a deadline). More than this is the loop spending
/// itself on a connection it cannot advance.
const CALLS_PER_SERVICE: u32 = {
    let reads = READ_BUDGET / READ_COST_FLOOR + 1;
    let batches = reads + REPLY_BUDGET / REPLY_COST_FLOOR;
    3 * (reads + 2 * batches) as u32
};

/// The most reads in a row of one byte from a socket that holds more: a connection read a
/// byte at a time makes a call per byte and keeps the loop awake for as long as its client
/// sends.
const BYTE_READS: u32 = 16;

/// An honest client is greeted, and each of its lines answered, within this many turns
/// and this much simulated time.
const ANSWER_TURNS: u64 = 32;
const ANSWER_TIME: Duration = Duration::from_millis(200);

/// How late a deadline may be acted on: a few turns.
const DEADLINE_SLACK: Duration = Duration::from_millis(100);

/// How long one run lasts in simulated time.
const RUN_TIME: Duration = Duration::from_secs(20);

/// One simulated client and what it checks of what it receives.
struct Client {
    id: usize,
    kind: Kind,
    socket: Option<Shared>,
    /// Its next action.
    next_at: Duration,
    /// Bytes it means to send that its socket did not take yet.
    outbox: VecDeque<u8>,
    /// Received, not yet a whole line.
    inbox: Vec<u8>,
    /// The replies it is owed, in order.
    owed: VecDeque<Vec<u8>>,
    lines_left: u32,
    greeted: bool,
    /// The server closed on it with an `ERR` line, or refused it: nothing more is owed.
    refused: bool,
    half_closed: bool,
    eof: bool,
    done: bool,
    /// Honest: since when (turn, time) it waits for the greeting or a reply.
    waiting: Option<(u64, Duration)>,
    line: u32,
}

/// The whole world of one run.
struct Sim {
    seed: u64,
    rng: Rng,
    config: ServerConfig,
    greeting: Vec<u8>,
    start: Instant,
    /// Simulated time since `start`.
    clock: Duration,
    turn: u64,
    poll: SimPoll,
    connections: Slab<Slot<SimStream>>,
    timers: Timers,
    ready: VecDeque<Ready>,
    closed: Vec<Token>,
    scratch: Scratch,
    budget: MemoryBudget,
    admission: Arc<Admission>,
    lingering: LingeringQueue<(usize, u64)>,
    next_serial: u64,
    clients: Vec<Client>,
    /// Clients that connected and wait in the listen backlog.
    backlog: VecDeque<usize>,
    /// The last turn made no progress though nothing new woke it.
    idle_spin: bool,
    /// `SimPoll::client_changes` when the last turn began.
    changes_seen: u64,
    log: String,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng(seed);
        let mut config = ServerConfig::ephemeral();
        config.max_buffer_memory = rng.pick(&[16 << 10, 64 << 10, 256 << 10, 1 << 20, 64 << 20]);
        config.protocol.max_line = rng.pick(&[64, 1024, 8 << 10, 64 << 10]);
        config.max_connections = rng.pick(&[40, 150, 100_000]);
        config.idle_timeout = Some(rng.millis(2_000, 8_000));
        config.line_timeout = if rng.below(2) == 0 {
            Some(rng.millis(1_000, 4_000))
        } else {
            None
        };
        let mut greeting = Vec::new();
        config.protocol.greeting(&mut greeting);
        let max_connections = config.max_connections;

        let count = rng.range(50, 400) as usize;
        // Each run weighs the kinds differently, so some runs are mostly one kind.
        let weights: Vec<u64> = KINDS.iter().map(|_| rng.range(0, 10)).collect();
        let total: u64 = weights.iter().sum::<u64>() + 1;
        let burst = rng.millis(0, 10_000);
        let mut clients = Vec::new();
        for id in 0..count {
            let mut roll = rng.below(total);
            let mut kind = Kind::Honest;
            for (k, w) in KINDS.iter().zip(&weights) {
                if roll < *w {
                    kind = *k;
                    break;
                }
                roll -= w;
            }
            // Some arrive together, the rest at any time.
            let arrive = if rng.below(3) == 0 {
                burst
            } else {
                rng.millis(0, 12_000)
            };
            clients.push(Client {
                id,
                kind,
                socket: None,
                next_at: arrive,
                outbox: VecDeque::new(),
                inbox: Vec::new(),
                owed: VecDeque::new(),
                lines_left: rng.range(1, 8) as u32,
                greeted: false,
                refused: false,
                half_closed: false,
                eof: false,
                done: false,
                waiting: None,
                line: 0,
            });
        }
        let budget = MemoryBudget::new(config.max_buffer_memory);
        Sim {
            seed,
            rng,
            config,
            greeting,
            start: Instant::now(),
            clock: Duration::ZERO,
            turn: 0,
            poll: SimPoll::default(),
            connections: Slab::new(),
            timers: Timers::new(),
            ready: VecDeque::new(),
            closed: Vec::new(),
            scratch: Scratch {
                read_buf: vec![0; READ_BUFFER],
                replies: Vec::new(),
                stats: Stats::default(),
            },
            budget,
            admission: Admission::new(max_connections, 0),
            lingering: LingeringQueue::default(),
            next_serial: 0,
            clients,
            backlog: VecDeque::new(),
            idle_spin: false,
            changes_seen: 0,
            log: String::new(),
        }
    }

    fn fail(&self, what: impl std::fmt::Display) -> ! {
        panic!(
            "simulation seed {} failed at turn {} ({:?} simulated): {what}\n\
             config: max_buffer_memory={} max_line={} max_connections={} idle={:?} line={:?}, \
             {} clients, {} open\n{}\
             replay: EVLOOP_SIM_SEED={} cargo test --lib event_loop::sim",
            self.seed,
            self.turn,
            self.clock,
            self.config.max_buffer_memory,
            self.config.protocol.max_line,
            self.config.max_connections,
            self.config.idle_timeout,
            self.config.line_timeout,
            self.clients.len(),
            self.admission.open(),
            self.log,
            self.seed,
        )
    }

    fn now(&self) -> Instant {
        self.start + self.clock
    }

    /// Runs until every client is done or the run's time is up; panics on a broken
    /// invariant.
    fn run(&mut self) {
        while self.clock < RUN_TIME {
            let busy =
                !self.ready.is_empty() || self.poll.has_pending() || !self.backlog.is_empty();
            if !busy {
                // Nothing to do: sleep until the next client acts or a deadline is due.
                let client = self
                    .clients
                    .iter()
                    .filter(|c| !c.done)
                    .map(|c| c.next_at)
                    .min();
                let timer = self
                    .timers
                    .next()
                    .map(|at| at.saturating_duration_since(self.start));
                let Some(next) = [client, timer].into_iter().flatten().min() else {
                    break;
                };
                self.clock = self.clock.max(next);
            }
            self.clients_act();
            // The loop sleeps in `poll` unless an event, a ready source, a client in the
            // backlog or a deadline is there for it.
            let due = self.timers.next() <= Some(self.now());
            if due || !self.ready.is_empty() || self.poll.has_pending() || !self.backlog.is_empty()
            {
                self.server_turn();
            }
            self.check();
        }
    }

    fn clients_act(&mut self) {
        let now = self.clock;
        for i in 0..self.clients.len() {
            if self.clients[i].done || self.clients[i].next_at > now {
                continue;
            }
            self.act(i);
        }
    }

    /// Pushes what the client's socket takes of its outbox, and says so to the poll.
    fn flush(client: &mut Client, poll: &SimPoll) {
        let Some(socket) = &client.socket else {
            return;
        };
        let moved = {
            let mut s = socket.borrow_mut();
            if s.dropped || s.reset || client.half_closed {
                return;
            }
            let room = SOCKET_BUFFER - s.to_server.len();
            let n = room.min(client.outbox.len());
            s.to_server.extend(client.outbox.drain(..n));
            n > 0
        };
        if moved {
            poll.client_changed(socket);
        }
    }

    fn send_line(client: &mut Client, body: &[u8], owed: bool) {
        client.outbox.extend(body);
        client.outbox.push_back(b'\n');
        if owed {
            let mut reply = b"Hello, ".to_vec();
            reply.extend_from_slice(body);
            reply.extend_from_slice(b"!\n");
            client.owed.push_back(reply);
        }
    }

    fn half_close(client: &mut Client, poll: &SimPoll) {
        if let Some(socket) = &client.socket {
            socket.borrow_mut().client_fin = true;
            poll.client_changed(socket);
        }
        client.half_closed = true;
    }

    fn act(&mut self, i: usize) {
        let now = self.clock;
        let turn = self.turn;
        let max_line = self.config.protocol.max_line as u64;
        let client = &mut self.clients[i];
        if client.socket.is_none() {
            client.socket = Some(Rc::default());
            self.backlog.push_back(i);
            let changes = &self.poll.client_changes;
            changes.set(changes.get() + 1);
            if client.kind == Kind::Honest {
                client.waiting = Some((turn, now));
            }
            client.next_at = now + self.rng.millis(1, 20);
            return;
        }
        if client.kind != Kind::NonReader {
            Self::receive(client, &self.poll, &mut self.log).unwrap_or_else(|e| self.fail(e));
        }
        let client = &mut self.clients[i];
        if client.eof {
            client.done = true;
            return;
        }
        let rng = &mut self.rng;
        let next = match client.kind {
            _ if !client.greeted || client.refused || client.half_closed => rng.millis(1, 50),
            Kind::Honest => {
                if client.waiting.is_none() {
                    if client.lines_left == 0 {
                        Self::half_close(client, &self.poll);
                    } else {
                        client.lines_left -= 1;
                        client.line += 1;
                        let body = format!("h{}-{}", client.id, client.line);
                        Self::send_line(client, body.as_bytes(), true);
                        client.waiting = Some((turn, now));
                    }
                }
                rng.millis(1, 30)
            }
            Kind::Pipeliner => {
                if client.lines_left > 0 && client.outbox.is_empty() {
                    client.lines_left -= 1;
                    for _ in 0..rng.range(1, 3_000) {
                        client.line += 1;
                        let body = format!("p{}", client.line);
                        Self::send_line(client, body.as_bytes(), true);
                    }
                } else if client.lines_left == 0 && client.outbox.is_empty() {
                    if rng.below(2) == 0 {
                        client.outbox.extend(b"exit\n");
                        client.lines_left = u32::MAX;
                    } else {
                        Self::half_close(client, &self.poll);
                    }
                }
                rng.millis(1, 40)
            }
            Kind::NonReader => {
                if client.socket.as_ref().is_some_and(|s| s.borrow().dropped) {
                    client.done = true;
                }
                if client.outbox.len() < 4096 {
                    for _ in 0..200 {
                        client.outbox.extend(b"x\n");
                    }
                }
                rng.millis(1, 100)
            }
            Kind::Dribbler => {
                client.outbox.push_back(b'd');
                rng.millis(200, 1_500)
            }
            Kind::Partial => {
                if client.lines_left > 0 {
                    client.lines_left = 0;
                    let len = rng.range(1, 2 * max_line.max(64)) as usize;
                    client.outbox.extend(std::iter::repeat_n(b'y', len));
                }
                rng.millis(5, 200)
            }
            Kind::Resetter => {
                if client.lines_left > 0 {
                    client.lines_left = 0;
                    Self::send_line(client, b"r1", true);
                    Self::send_line(client, b"r2", true);
                    client.outbox.extend(b"unfinished");
                } else if let Some(socket) = &client.socket {
                    socket.borrow_mut().reset = true;
                    self.poll.client_changed(socket);
                    client.done = true;
                }
                rng.millis(1, 500)
            }
        };
        Self::flush(client, &self.poll);
        client.next_at = now + next;
    }

    /// Takes what the server sent and checks it against what the client is owed.
    fn receive(client: &mut Client, poll: &SimPoll, log: &mut String) -> Result<(), String> {
        let Some(socket) = client.socket.clone() else {
            return Ok(());
        };
        let (bytes, fin, server_reset) = {
            let mut s = socket.borrow_mut();
            let bytes: Vec<u8> = s.to_client.drain(..).collect();
            (bytes, s.server_fin, s.server_reset)
        };
        if !bytes.is_empty() {
            // Room freed: the server's WRITABLE edge.
            poll.client_changed(&socket);
        }
        client.inbox.extend_from_slice(&bytes);
        while let Some(end) = client.inbox.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = client.inbox.drain(..=end).collect();
            if !client.greeted && !client.refused {
                if line == b"ERR server busy\n" {
                    client.refused = true;
                    client.waiting = None;
                    continue;
                }
                if line != b"Welcome!\n" {
                    return Err(format!(
                        "client {} ({:?}) greeted with {:?}",
                        client.id,
                        client.kind,
                        String::from_utf8_lossy(&line)
                    ));
                }
                client.greeted = true;
                client.waiting = None;
                continue;
            }
            if line.starts_with(b"ERR ") {
                let _ = writeln!(
                    log,
                    "client {} ({:?}) told {:?}",
                    client.id,
                    client.kind,
                    String::from_utf8_lossy(&line)
                );
                if client.kind == Kind::Honest {
                    return Err(format!(
                        "honest client {} told {:?}",
                        client.id,
                        String::from_utf8_lossy(&line)
                    ));
                }
                client.refused = true;
                client.owed.clear();
                continue;
            }
            if client.refused {
                return Err(format!(
                    "client {} ({:?}) sent {:?} after an ERR",
                    client.id,
                    client.kind,
                    String::from_utf8_lossy(&line)
                ));
            }
            match client.owed.pop_front() {
                Some(owed) if owed == line => {
                    if client.kind == Kind::Honest {
                        client.waiting = None;
                    }
                }
                owed => {
                    return Err(format!(
                        "client {} ({:?}) got {:?}, owed {:?}",
                        client.id,
                        client.kind,
                        String::from_utf8_lossy(&line),
                        owed.map(|o| String::from_utf8_lossy(&o).into_owned())
                    ))
                }
            }
        }
        if fin && socket.borrow().to_client.is_empty() {
            client.eof = true;
            let said_exit = client.lines_left == u32::MAX;
            let finished = client.half_closed || said_exit;
            if finished && !client.refused && !client.owed.is_empty() {
                return Err(format!(
                    "client {} ({:?}) got EOF with {} replies still owed",
                    client.id,
                    client.kind,
                    client.owed.len()
                ));
            }
            // It has our EOF: it closes too, which ends our lingering.
            socket.borrow_mut().client_fin = true;
            poll.client_changed(&socket);
        } else if server_reset && !client.eof {
            if client.kind == Kind::Honest && !client.refused {
                return Err(format!("honest client {} reset by the server", client.id));
            }
            client.eof = true;
        }
        Ok(())
    }

    fn served(&mut self) -> Served<'_, SimStream, SimPoll> {
        let now = self.start + self.clock;
        let share = self.budget.share(self.admission.open());
        Served {
            connections: &mut self.connections,
            timers: &mut self.timers,
            ready: &mut self.ready,
            closed: &mut self.closed,
            lingering: &mut self.lingering,
            scratch: &mut self.scratch,
            registry: &self.poll,
            budget: &self.budget,
            config: &self.config,
            greeting: &self.greeting,
            now,
            share,
        }
    }

    /// One turn of the loop, in the loop's order, with the loop's policy.
    fn server_turn(&mut self) {
        self.turn += 1;
        for (_, slot) in self.connections.iter_mut() {
            slot.conn.stream().0.borrow_mut().calls = 0;
        }
        let before = self.progress();
        // Woken by something new: a client's doing, or a deadline.
        let changes = self.poll.client_changes.get();
        let woken = changes != self.changes_seen || self.timers.next() <= Some(self.now());
        self.changes_seen = changes;
        let events = self.poll.poll();
        let mut served = self.served();
        for (token, readiness) in events {
            served.serve(token, readiness);
        }
        let accepted = self.accept();
        // The ready list's part of the turn, timed as the turn is: by the calls it makes.
        let mut waiting = std::mem::take(&mut self.ready);
        let mut served = self.served();
        let mut spent = Duration::ZERO;
        serve_ready(&mut waiting, |ready| {
            let calls = |served: &mut Served<'_, SimStream, SimPoll>| {
                served
                    .connections
                    .get_mut(ready.0 .0)
                    .map_or(0, |slot| slot.conn.stream().0.borrow().calls)
            };
            let before = calls(&mut served);
            served.resume(ready);
            spent += CALL_COST * calls(&mut served).saturating_sub(before);
            spent
        });
        waiting.append(served.ready);
        *served.ready = waiting;
        served.fire_timers(
            |_, _| {},
            |timer| unreachable!("{timer:?}: the simulation sets none"),
        );
        let removed = served.sweep();

        // The turn's cost in simulated time: the calls it made.
        let mut calls = 0;
        let mut busiest = None;
        for (token, slot) in self.connections.iter_mut() {
            let (on_it, byte_reads) = {
                let s = slot.conn.stream().0.borrow();
                (s.calls, s.byte_reads)
            };
            calls += on_it;
            if on_it > CALLS_PER_SERVICE || byte_reads > BYTE_READS {
                let socket = &slot.conn.stream().0;
                let kind = self
                    .clients
                    .iter()
                    .find(|c| c.socket.as_ref().is_some_and(|s| Rc::ptr_eq(s, socket)))
                    .map(|c| c.kind);
                let state = slot.conn.state();
                busiest = Some((token, on_it, byte_reads, state, slot.conn.holds(), kind));
            }
        }
        self.clock += TURN_COST + CALL_COST * calls;
        if let Some((token, on_it, byte_reads, state, holds, kind)) = busiest {
            self.fail(format_args!(
                "the loop made {on_it} calls on connection {token} (a {kind:?} client, \
                 {state:?}, holds {holds} bytes, share {}) in one turn, the last {byte_reads} \
                 of its reads one byte each",
                self.budget.share(self.admission.open()),
            ));
        }
        // A turn that nothing new woke and that moved nothing must not be followed by
        // another: the loop would be turning for nothing.
        let moved = before != self.progress() || accepted > 0 || removed > 0;
        let spins = !woken && !moved;
        if spins && self.idle_spin {
            let mut queued = String::new();
            for Ready(token, _) in &self.ready {
                if let Some(slot) = self.connections.get(token.0) {
                    let _ = write!(
                        queued,
                        "{token:?} {:?} holds {}; ",
                        slot.conn.state(),
                        slot.conn.holds()
                    );
                }
            }
            self.fail(format!(
                "two turns in a row that nothing new woke made no progress: the loop spins (ready: {queued}{} events pending)",
                self.poll.pending.borrow().len()
            ));
        }
        self.idle_spin = spins;
    }

    /// What moved: bytes read (discarded ones too) and written, messages answered, and
    /// every connection's state.
    fn progress(&mut self) -> (u64, u64) {
        use std::hash::{Hash, Hasher};
        let mut moved = 0;
        let mut states = std::collections::hash_map::DefaultHasher::new();
        for (key, slot) in self.connections.iter_mut() {
            key.hash(&mut states);
            std::mem::discriminant(&slot.conn.state()).hash(&mut states);
            let answered = slot.conn.messages();
            moved += slot.conn.stream().0.borrow().moved + answered;
        }
        (moved, states.finish())
    }

    /// The listener: admits the clients waiting in the backlog, as the loop does.
    fn accept(&mut self) -> usize {
        let mut accepted = 0;
        while accepted < ACCEPT_BUDGET {
            let Some(i) = self.backlog.pop_front() else {
                break;
            };
            accepted += 1;
            let Some(socket) = self.clients[i].socket.clone() else {
                continue;
            };
            let admission = Arc::clone(&self.admission);
            let permit = match self.served().admit(&admission, None) {
                Ok(permit) => permit,
                Err(refusal) => {
                    let mut s = socket.borrow_mut();
                    s.to_client.extend(refusal.message());
                    s.server_fin = true;
                    s.dropped = true;
                    continue;
                }
            };
            let now = self.now();
            self.scratch.stats.connections += 1;
            let conn = Connection::accept(
                SimStream(socket),
                &self.greeting,
                &mut self.scratch.stats,
                now,
            );
            let Some(registered) = conn.interest() else {
                continue;
            };
            let serial = self.next_serial;
            self.next_serial += 1;
            // Registering a simulated socket cannot fail.
            let _ = self.served().insert(conn, Some(permit), serial, registered);
        }
        accepted
    }

    fn check(&mut self) {
        let now = self.now();
        let mut held = 0;
        for (token, slot) in self.connections.iter() {
            if slot.conn.state() == State::Closed {
                self.fail(format_args!("connection {token} closed and not swept"));
            }
            held += slot.accounted;
            if let Some(deadline) = slot.conn.deadline(&self.config) {
                if deadline + DEADLINE_SLACK < now {
                    self.fail(format_args!(
                        "connection {token} ({:?}) passed its deadline {:?} ago",
                        slot.conn.state(),
                        now - deadline
                    ));
                }
            }
        }
        if held != self.budget.held() {
            self.fail(format_args!(
                "the budget counts {} bytes, the connections hold {held}",
                self.budget.held()
            ));
        }
        // Each connection may pass its share by one read and one reply, and a buffer's
        // capacity may be twice what it holds.
        let slack = self.admission.open() * (2 * READ_BUFFER + 2 * self.config.protocol.max_line);
        if held > 2 * self.config.max_buffer_memory + slack {
            self.fail(format_args!("{held} bytes held, over the budget"));
        }
        for client in &self.clients {
            if let Some((turn, since)) = client.waiting {
                let turns = self.turn - turn;
                let waited = self.clock.saturating_sub(since);
                if !client.done && (turns > ANSWER_TURNS || waited > ANSWER_TIME) {
                    self.fail(format_args!(
                        "honest client {} waited {turns} turns ({waited:?}) for {}",
                        client.id,
                        if client.greeted {
                            "a reply"
                        } else {
                            "its greeting"
                        },
                    ));
                }
            }
        }
        // Honest clients read as soon as anything arrives.
        for i in 0..self.clients.len() {
            let client = &mut self.clients[i];
            if client.kind == Kind::Honest && !client.done {
                if let Err(e) = Self::receive(client, &self.poll, &mut self.log) {
                    self.fail(e);
                }
            }
        }
    }
}

fn env(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value}: not a number")),
    )
}

#[test]
fn the_loop_keeps_its_invariants_under_every_mix_of_clients() {
    if let Some(seed) = env("EVLOOP_SIM_SEED") {
        Sim::new(seed).run();
        return;
    }
    let seconds = env("EVLOOP_SIM_SECONDS").unwrap_or(2);
    let first = env("EVLOOP_SIM_FIRST").unwrap_or(0);
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut seed = first;
    while seed == first || Instant::now() < until {
        Sim::new(seed).run();
        seed += 1;
    }
    println!("simulated seeds {first}..{seed}");
}
