//! What the loop decides about its connections, in plain types that both the mio loop and
//! the simulation (`event_loop/sim.rs`) carry out: which connection is served for an event,
//! what comes back on the ready list and in what order, what the memory budget allows each
//! one, when a deadline is acted on, which lingering connection makes room for a new
//! client at a limit, and when a closed connection leaves. [`Served`] is a
//! view of the loop's parts that this policy touches; it is given the poll's registry as a
//! [`Register`], so it never sees mio's `Poll` and can be driven with simulated sockets.
//!
//! It must not read the clock (the turn's time is given), wait, or know about the listener,
//! the UDP socket, signals or a restart: those are the loop's.

use std::collections::VecDeque;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Interest, Token};
use slab::Slab;

use super::slot::{Ready, Scratch, Slot};
use crate::admission::{Admission, LingeringQueue, Permit, Refusal};
use crate::budget::MemoryBudget;
use crate::config::ServerConfig;
use crate::connection::{Connection, State, Stream};
use crate::timers::{Due, Timer, Timers};

/// How long one turn may spend on the connections of the ready list; the rest wait, in
/// order, for the next turn, after a `poll` that does not block. The ready list holds the
/// connections with a backlog (input past one event's budgets, held input, reading resumed
/// after backpressure), and under attack thousands of them: 2,000 clients that send without
/// reading each take a service of some tens of microseconds (16 KiB of replies) for
/// several turns. Served all in one turn, they made turns of tens of milliseconds, and
/// every client with one line to answer waited that long. So the events of a turn (each
/// already bounded) are served first and in full, and the backlog gets about one busy
/// connection's service a turn: at least one entry, so the list always moves, and as many
/// cheap ones as fit.
pub(super) const READY_TIME_PER_TURN: Duration = Duration::from_micros(20);

/// Entries resumed per turn at most, however cheap each one is: as many as a turn's
/// events, so thousands of cheap resumes (reading resumed after a greeting or backpressure)
/// take a handful of turns, and a turn's fixed cost (the `poll`, the timers, the sweep) is
/// shared by many.
pub(super) const READY_PER_TURN: usize = 256;

/// Deadlines acted on per turn (15,000 dribblers cut off at once would otherwise be one
/// long turn); the rest are due at once and the next `poll` does not block.
pub(super) const DEADLINES_PER_TURN: usize = 256;

/// Where a connection's readiness is registered: the poll's registry, or the simulation's.
pub(super) trait Register<S> {
    /// Starts reporting `interest` for `stream` as `token`.
    fn register(&self, stream: &mut S, token: Token, interest: Interest) -> io::Result<()>;
    /// Changes what is reported for `stream`.
    fn reregister(&self, stream: &mut S, token: Token, interest: Interest) -> io::Result<()>;
}

impl<S: mio::event::Source> Register<S> for mio::Registry {
    #[inline]
    fn register(&self, stream: &mut S, token: Token, interest: Interest) -> io::Result<()> {
        mio::Registry::register(self, stream, token, interest)
    }

    #[inline]
    fn reregister(&self, stream: &mut S, token: Token, interest: Interest) -> io::Result<()> {
        mio::Registry::reregister(self, stream, token, interest)
    }
}

/// What one event says of a connection's socket (mio's `Event`, as plain data).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Readiness {
    pub(super) readable: bool,
    pub(super) writable: bool,
    /// The peer shut down its write side, or the connection failed: a read will say which.
    pub(super) read_closed: bool,
    pub(super) error: bool,
}

impl Readiness {
    pub(super) fn of(event: &mio::event::Event) -> Readiness {
        Readiness {
            readable: event.is_readable(),
            writable: event.is_writable(),
            read_closed: event.is_read_closed(),
            error: event.is_error(),
        }
    }
}

/// The ready list's part of a turn: hands `resume` the entries of `waiting`, oldest first,
/// until it says the turn has spent [`READY_TIME_PER_TURN`] on them (`resume` returns the
/// time spent so far; the loop's clock, or the simulation's) or [`READY_PER_TURN`] were
/// served. What is left stays in `waiting`, in order.
pub(super) fn serve_ready(
    waiting: &mut VecDeque<Ready>,
    mut resume: impl FnMut(Ready) -> Duration,
) {
    for _ in 0..READY_PER_TURN {
        let Some(ready) = waiting.pop_front() else {
            return;
        };
        if resume(ready) >= READY_TIME_PER_TURN {
            return;
        }
    }
}

/// The loop's connections and what it keeps beside them, borrowed for one step of a turn.
pub(super) struct Served<'a, S, R: ?Sized> {
    pub(super) connections: &'a mut Slab<Slot<S>>,
    pub(super) timers: &'a mut Timers,
    pub(super) ready: &'a mut VecDeque<Ready>,
    pub(super) closed: &'a mut Vec<Token>,
    /// The connections that owe nothing and wait only for their peer's EOF, oldest first:
    /// closed at a limit to admit a new client. Keyed by slab key and serial.
    pub(super) lingering: &'a mut LingeringQueue<(usize, u64)>,
    pub(super) scratch: &'a mut Scratch,
    pub(super) registry: &'a R,
    pub(super) budget: &'a MemoryBudget,
    pub(super) config: &'a ServerConfig,
    pub(super) greeting: &'a [u8],
    pub(super) now: Instant,
    /// This turn's equal share of the memory budget.
    pub(super) share: usize,
}

impl<S: Stream, R: Register<S> + ?Sized> Served<'_, S, R> {
    /// Takes a new connection in, with its place under the limits: registers it and
    /// schedules its first deadline. `Err` (the socket could not be registered) leaves
    /// nothing behind, and gives the place back.
    pub(super) fn insert(
        &mut self,
        conn: Connection<S>,
        permit: Option<Permit>,
        serial: u64,
        registered: Interest,
    ) -> io::Result<Token> {
        let entry = self.connections.vacant_entry();
        let token = Token(entry.key());
        let slot = entry.insert(Slot {
            conn,
            serial,
            permit,
            lingering: false,
            registered,
            scheduled: None,
            queued: false,
            accounted: 0,
            scheduled_basis: (std::mem::discriminant(&State::Closed), false),
        });
        if let Err(e) = self
            .registry
            .register(slot.conn.stream(), token, registered)
        {
            self.connections.remove(token.0);
            return Err(e);
        }
        slot.schedule(token.0, self.timers, self.config);
        Ok(token)
    }

    /// Admits a new client (counted under `address`, if known) or, at a limit, closes the
    /// oldest lingering connection to make room for it (see [`reclaim_oldest`]).
    ///
    /// [`reclaim_oldest`]: Self::reclaim_oldest
    pub(super) fn admit(
        &mut self,
        admission: &Arc<Admission>,
        address: Option<IpAddr>,
    ) -> Result<Permit, Refusal> {
        admission.admit_or_reclaim(address, |refusal| self.reclaim_oldest(refusal, address))
    }

    /// At a limit: closes the oldest lingering connection (from `address`, at the
    /// per-address limit) and gives its permit back at once, rather than at the sweep, so
    /// a new client can have its place. False if there is none. A connection that owes
    /// nothing and only waits for its peer's EOF is worth less than a new client.
    pub(super) fn reclaim_oldest(&mut self, refusal: Refusal, address: Option<IpAddr>) -> bool {
        let connections = &mut *self.connections;
        let Some((key, _)) = self
            .lingering
            .take_oldest(refusal, address, |&(key, serial)| {
                connections
                    .get(key)
                    .is_some_and(|s| s.serial == serial && s.conn.state() == State::Lingering)
            })
        else {
            return false;
        };
        let slot = &mut connections[key];
        slot.conn.close_now(self.now);
        slot.permit = None;
        self.closed.push(Token(key));
        let stats = &mut self.scratch.stats;
        match refusal {
            Refusal::Busy => stats.lingering_closed += 1,
            Refusal::TooManyFromAddress => stats.lingering_closed_per_ip += 1,
        }
        log::debug!("closed lingering Token({key}) to admit a new client ({refusal:?})");
        true
    }

    /// Serves one event of a connection that is past its PROXY header.
    #[inline(always)]
    pub(super) fn serve(&mut self, token: Token, readiness: Readiness) {
        let Some(slot) = self.connections.get_mut(token.0) else {
            return;
        };
        // A slot closed earlier in this batch stays until the sweep; ignore its events.
        if slot.conn.state() == State::Closed {
            return;
        }
        // A connection on the ready list is read from there, within the list's part of the
        // turn: the event tells it nothing new (it knows input is waiting), and reading on
        // it here would let a backlog take the time that this turn's events are for.
        let queued = slot.queued;
        let mut ctx = self
            .scratch
            .context(self.config, self.greeting, self.now, self.share);
        if readiness.writable {
            let progress = slot.conn.on_writable(&mut ctx);
            slot.follow(progress, token, self.ready);
        }
        if (readiness.readable || readiness.read_closed || readiness.error) && !queued {
            let drains =
                crate::net::SHORT_READ_DRAINS && !readiness.read_closed && !readiness.error;
            let progress = slot.conn.on_readable(&mut ctx, drains);
            slot.follow(progress, token, self.ready);
        }
        self.after_io(token);
    }

    /// Serves a connection taken from the ready list, unless the entry is stale (the
    /// connection closed and its key may serve another one now).
    pub(super) fn resume(&mut self, Ready(token, serial): Ready) {
        let Some(slot) = self.connections.get_mut(token.0) else {
            return;
        };
        if slot.serial != serial {
            return;
        }
        slot.queued = false;
        // No event told us the socket is drained: read until WouldBlock.
        let mut ctx = self
            .scratch
            .context(self.config, self.greeting, self.now, self.share);
        let progress = slot.conn.on_readable(&mut ctx, false);
        slot.follow(progress, token, self.ready);
        self.after_io(token);
    }

    /// Brings the registration, the timers, the memory budget and the close list in line
    /// with the connection's new state. Re-registers only when the interest changed.
    #[inline(always)]
    pub(super) fn after_io(&mut self, token: Token) {
        let slot = &mut self.connections[token.0];
        let Some(wanted) = slot.conn.interest() else {
            self.closed.push(token);
            return;
        };
        if wanted != slot.registered {
            if let Err(e) = self.registry.reregister(slot.conn.stream(), token, wanted) {
                log::debug!("reregister {token:?}: {e}");
                slot.conn.close_now(self.now);
                self.closed.push(token);
                return;
            }
            slot.registered = wanted;
        }
        slot.account(self.budget);
        // Only a change of state (or a line starting) has the deadline asked for again, so
        // looking for the start of lingering there keeps it off the per-message path.
        if slot.schedule(token.0, self.timers, self.config)
            && slot.conn.state() == State::Lingering
            && !slot.lingering
        {
            slot.lingering = true;
            let address = slot.permit.as_ref().and_then(Permit::address);
            self.lingering.push(address, (token.0, slot.serial));
        }
    }

    /// Takes up to [`DEADLINES_PER_TURN`] deadlines that are due. Each connection whose
    /// deadline passed acts on it (see [`Connection::on_deadline`]); `acted` is then called
    /// with it and the state it was in, so the loop can say what it alone knows (a PROXY
    /// header given up on). Every other deadline due is handed to `other`, the loop's.
    pub(super) fn fire_timers(
        &mut self,
        mut acted: impl FnMut(&mut Slot<S>, State),
        mut other: impl FnMut(Timer),
    ) {
        let mut fired = 0;
        while fired < DEADLINES_PER_TURN {
            let Some(timer) = self.timers.pop_due(self.now) else {
                break;
            };
            fired += 1;
            let Due::Connection { key, serial } = timer.due else {
                other(timer);
                continue;
            };
            let Some(slot) = self.connections.get_mut(key) else {
                continue;
            };
            if slot.serial != serial || slot.scheduled != Some(timer.at) {
                continue;
            }
            slot.scheduled = None;
            let token = Token(key);
            let mut ctx = self
                .scratch
                .context(self.config, self.greeting, self.now, self.share);
            let before = slot.conn.state();
            let progress = slot.conn.on_deadline(&mut ctx);
            acted(slot, before);
            slot.follow(progress, token, self.ready);
            self.after_io(token);
        }
        // Stale entries are skipped when they come due; prune them if they outnumber live
        // connections, so churn cannot grow the heap without bound. (A metrics client's
        // entry is its owner's, and gone within `METRICS_DEADLINE`.)
        if self.timers.len() > 2 * self.connections.len() + 64 {
            let connections = &*self.connections;
            self.timers.retain(|timer| match timer.due {
                Due::Connection { key, serial } => connections
                    .get(key)
                    .is_some_and(|s| s.serial == serial && s.scheduled == Some(timer.at)),
                _ => true,
            });
        }
    }

    /// Removes the connections that closed this turn; dropping a slot gives its permit's
    /// places back. Done after the event batch so that no event of this batch can land on
    /// a slot reused by a connection accepted meanwhile. Returns how many it removed.
    pub(super) fn sweep(&mut self) -> usize {
        let mut removed = 0;
        for token in std::mem::take(self.closed) {
            if self
                .connections
                .get(token.0)
                .is_some_and(|slot| slot.conn.state() == State::Closed)
            {
                // Dropping the stream closes the descriptor, which also removes it from the
                // epoll set: no deregister call needed.
                let slot = self.connections.remove(token.0);
                self.budget.change(slot.accounted, 0);
                self.scratch.stats.messages += slot.conn.messages();
                removed += 1;
                log::debug!("closed {token:?}");
            }
        }
        // Entries of connections that stopped lingering by themselves are dropped when met;
        // prune them if they outnumber the connections, so churn cannot grow the queue.
        if self.lingering.len() > 2 * self.connections.len() + 64 {
            let connections = &*self.connections;
            self.lingering.retain(|&(key, serial)| {
                connections
                    .get(key)
                    .is_some_and(|s| s.serial == serial && s.conn.state() == State::Lingering)
            });
        }
        removed
    }
}
