//! What the loop keeps beside each connection ([`Slot`]: its serial, registration, timer
//! and budget bookkeeping), the buffers it lends to whichever connection it serves
//! ([`Scratch`]), and the entries of its ready list ([`Ready`]). Bookkeeping only: no
//! socket is read or written here, and nothing decides what a connection does.

use std::collections::VecDeque;
use std::time::Instant;

use mio::{Interest, Token};

use crate::admission::Permit;
use crate::budget::MemoryBudget;
use crate::config::ServerConfig;
use crate::connection::{Connection, Context, DeadlineBasis, Progress, Stream};
use crate::stats::Stats;
use crate::timers::{Due, Timer, Timers};

/// A connection that stopped before WouldBlock and must be resumed without waiting for an
/// edge: its token and its serial (an entry whose serial is not the slot's any more is
/// stale, and skipped).
#[derive(Clone, Copy, Debug)]
pub(super) struct Ready(pub(super) Token, pub(super) u64);

/// A connection and what the loop keeps about it.
pub(super) struct Slot<S> {
    pub(super) conn: Connection<S>,
    /// Serial number, unique for the life of the loop (slab keys are not).
    pub(super) serial: u64,
    /// The connection's place under `--max-connections` and, once its client's address is
    /// known, `--max-connections-per-ip`: given back when the slot is dropped, or earlier
    /// when the connection is closed to make room for a new client (then `None`).
    pub(super) permit: Option<Permit>,
    /// In the loop's queue of lingering connections already: a connection joins it once.
    pub(super) lingering: bool,
    /// The interest the socket is registered with.
    pub(super) registered: Interest,
    /// The time of this connection's live entry in the timers, if any. Entries with another
    /// time are stale: the deadline moved since they were scheduled.
    pub(super) scheduled: Option<Instant>,
    /// On the ready list already: a connection is queued there at most once, however many
    /// events said it has more to do.
    pub(super) queued: bool,
    /// What this connection's buffers held when last counted in the memory budget.
    pub(super) accounted: usize,
    /// What could move the connection's deadline earlier when `scheduled` was last
    /// checked against it (see [`Connection::deadline_basis`]).
    pub(super) scheduled_basis: DeadlineBasis,
}

impl<S: Stream> Slot<S> {
    /// Puts the connection on the ready list, unless it is there already.
    pub(super) fn mark_ready(&mut self, token: Token, ready: &mut VecDeque<Ready>) {
        if !self.queued {
            self.queued = true;
            ready.push_back(Ready(token, self.serial));
        }
    }

    /// Remembers what the connection asked for after a call: nothing, or another turn.
    pub(super) fn follow(&mut self, progress: Progress, token: Token, ready: &mut VecDeque<Ready>) {
        if progress == Progress::ReadAgain {
            self.mark_ready(token, ready);
        }
    }

    /// Brings the memory budget up to date with what this connection holds. Free for a
    /// connection that keeps up: it holds nothing before and after.
    #[inline]
    pub(super) fn account(&mut self, budget: &MemoryBudget) {
        let holds = self.conn.holds();
        if holds != self.accounted {
            budget.change(self.accounted, holds);
            self.accounted = holds;
        }
    }

    /// Makes sure `timers` holds an entry no later than this connection's deadline. Called
    /// after every event, so it must be cheap: the deadline is asked for only when nothing
    /// is scheduled or what can move it earlier changed (a change of state, a line starting
    /// where none was held; see [`Connection::deadline_basis`]). Everything else moves it
    /// later (every message moves the idle deadline): then the entry already scheduled
    /// fires early, finds nothing due, and is scheduled again for the new time. Returns
    /// whether it asked, which is whenever the state may have changed.
    #[inline]
    pub(super) fn schedule(
        &mut self,
        key: usize,
        timers: &mut Timers,
        config: &ServerConfig,
    ) -> bool {
        let basis = self.conn.deadline_basis();
        if self.scheduled.is_some() && basis == self.scheduled_basis {
            return false;
        }
        self.scheduled_basis = basis;
        let Some(deadline) = self.conn.deadline(config) else {
            return true;
        };
        if self.scheduled.is_none_or(|at| deadline < at) {
            self.scheduled = Some(deadline);
            timers.schedule(Timer {
                at: deadline,
                due: Due::Connection {
                    key,
                    serial: self.serial,
                },
            });
        }
        true
    }
}

/// What the loop lends to whichever connection it is serving, so that an idle connection
/// owns no buffer at all; and the loop's counts, which every connection adds to.
pub(super) struct Scratch {
    pub(super) read_buf: Vec<u8>,
    pub(super) replies: Vec<u8>,
    pub(super) stats: Stats,
}

impl Scratch {
    /// The context one connection is served with. A method of this part of the loop only,
    /// so that it can be borrowed beside the slot being served in `connections`.
    pub(super) fn context<'a>(
        &'a mut self,
        config: &'a ServerConfig,
        greeting: &'a [u8],
        now: Instant,
        share: usize,
    ) -> Context<'a> {
        Context {
            read_buf: &mut self.read_buf,
            replies: &mut self.replies,
            config,
            stats: &mut self.stats,
            now,
            share,
            greeting,
        }
    }
}
