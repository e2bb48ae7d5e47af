//! The loop's deadlines: one binary heap of (time, what it is for), nearest first, and the
//! one place where a deadline of the loop's own is set.
//!
//! mio has no timers: the loop turns the nearest deadline into the `poll` timeout, and after
//! each turn takes the entries that are due. Every deadline the loop keeps is an entry here
//! ([`Due`]): each connection's, accepting again after running out of descriptors, the
//! shutdown's grace period, the drain after a hand-over, the successor's readiness, the
//! metrics endpoint's clients and its accepting again. This module does not know what a
//! deadline means (the connection, or the loop, decides that) and it never reads the clock.
//!
//! Entries are not removed when a deadline moves or its owner goes away. For the loop's own
//! deadlines this module keeps the live time ([`set`](Timers::set), [`get`](Timers::get))
//! and skips an entry that no longer matches it; an entry for a connection or a metrics
//! client is skipped by its owner when its serial or time no longer matches (keys and
//! places are reused, serial numbers are not). Stale entries are pruned when they pile up.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// What a deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Due {
    /// The connection at slab key `key` with serial `serial` next needs attention (see
    /// [`Connection::deadline`](crate::connection::Connection::deadline)).
    Connection {
        /// The connection's slab key.
        key: usize,
        /// Its serial number, which tells it apart from a later connection on the key.
        serial: u64,
    },
    /// Accept again after running out of descriptors.
    AcceptBackoff,
    /// The graceful shutdown's grace period is over.
    ShutdownGrace,
    /// The drain after a hand-over to a successor is over.
    Drain,
    /// The successor must have said it is ready by now.
    Successor,
    /// The metrics endpoint accepts again (its accept budget ran out, or accept failed).
    MetricsAccept,
    /// The metrics client in place `place` with serial `serial` has had its time.
    MetricsClient {
        /// Its place among the endpoint's clients.
        place: usize,
        /// Its serial number.
        serial: u64,
    },
}

/// The loop's own deadlines, of which there is one at a time each.
const OWN: [Due; 5] = [
    Due::AcceptBackoff,
    Due::ShutdownGrace,
    Due::Drain,
    Due::Successor,
    Due::MetricsAccept,
];

impl Due {
    /// Where the live time of one of the loop's own deadlines is kept.
    fn own(self) -> Option<usize> {
        OWN.iter().position(|&own| own == self)
    }
}

/// One scheduled deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    /// When it is due. First, so the heap orders by it.
    pub at: Instant,
    /// What it is for.
    pub due: Due,
}

/// Deadlines, nearest first.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Timer>>,
    /// The live time of each of the loop's own deadlines ([`OWN`]), if set.
    own: [Option<Instant>; OWN.len()],
}

impl Timers {
    /// No deadlines.
    pub fn new() -> Timers {
        Timers::default()
    }

    /// Adds a deadline for a connection or a metrics client. O(log n).
    pub fn schedule(&mut self, timer: Timer) {
        self.heap.push(Reverse(timer));
    }

    /// Sets (or, with `None`, clears) one of the loop's own deadlines; an earlier time it
    /// had is forgotten.
    pub fn set(&mut self, due: Due, at: Option<Instant>) {
        let Some(own) = due.own() else {
            debug_assert!(false, "{due:?} is scheduled by its owner");
            return;
        };
        if self.own[own] == at {
            return;
        }
        self.own[own] = at;
        if let Some(at) = at {
            self.heap.push(Reverse(Timer { at, due }));
        }
    }

    /// The live time of one of the loop's own deadlines.
    pub fn get(&self, due: Due) -> Option<Instant> {
        due.own().and_then(|own| self.own[own])
    }

    /// The nearest deadline, if any: what the loop's `poll` timeout is computed from. It
    /// may be a stale entry, which only wakes the loop early.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(timer)| timer.at)
    }

    /// Removes and returns the nearest entry if it is due at `now`, skipping the loop's
    /// own deadlines that were moved or cleared since. A live deadline of the loop's own
    /// stays set ([`get`](Self::get)) until the loop clears it.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        loop {
            match self.heap.peek() {
                Some(Reverse(timer)) if timer.at <= now => {
                    let timer = *timer;
                    self.heap.pop();
                    match timer.due.own() {
                        Some(own) if self.own[own] != Some(timer.at) => continue,
                        _ => return Some(timer),
                    }
                }
                _ => return None,
            }
        }
    }

    /// Entries held, stale ones included.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Keeps only the entries `live` accepts, and the loop's own live ones: the loop drops
    /// stale entries with it. O(n).
    pub fn retain(&mut self, mut live: impl FnMut(&Timer) -> bool) {
        let own = self.own;
        self.heap.retain(|Reverse(timer)| match timer.due.own() {
            Some(i) => own[i] == Some(timer.at),
            None => live(timer),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn timer(start: Instant, secs: u64, key: usize) -> Timer {
        Timer {
            at: start + Duration::from_secs(secs),
            due: Due::Connection {
                key,
                serial: key as u64,
            },
        }
    }

    fn key(timer: Timer) -> usize {
        match timer.due {
            Due::Connection { key, .. } => key,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn due_entries_come_out_nearest_first_and_only_when_due() {
        let start = Instant::now();
        let mut timers = Timers::new();
        for (secs, key) in [(3, 0), (1, 1), (2, 2)] {
            timers.schedule(timer(start, secs, key));
        }
        assert_eq!(timers.next(), Some(start + Duration::from_secs(1)));
        assert_eq!(timers.pop_due(start), None, "nothing due yet");
        let now = start + Duration::from_secs(2);
        let keys: Vec<usize> = std::iter::from_fn(|| timers.pop_due(now))
            .map(key)
            .collect();
        assert_eq!(keys, [1, 2]);
        assert_eq!(timers.len(), 1);
        assert_eq!(timers.next(), Some(start + Duration::from_secs(3)));
    }

    #[test]
    fn an_entry_due_exactly_now_is_due() {
        let start = Instant::now();
        let mut timers = Timers::new();
        timers.schedule(timer(start, 0, 7));
        assert_eq!(timers.pop_due(start).map(key), Some(7));
        assert!(timers.is_empty());
        assert_eq!(timers.next(), None);
    }

    #[test]
    fn retain_drops_stale_entries_and_keeps_the_order() {
        let start = Instant::now();
        let mut timers = Timers::new();
        for key in 0..10 {
            timers.schedule(timer(start, 10 - key as u64, key));
        }
        timers.retain(|t| key(*t) % 2 == 0);
        assert_eq!(timers.len(), 5);
        let far = start + Duration::from_secs(100);
        let keys: Vec<usize> = std::iter::from_fn(|| timers.pop_due(far))
            .map(key)
            .collect();
        assert_eq!(keys, [8, 6, 4, 2, 0]);
    }

    #[test]
    fn the_loops_own_deadlines_fire_at_their_latest_time_only() {
        let start = Instant::now();
        let at = |secs| Some(start + Duration::from_secs(secs));
        let mut timers = Timers::new();
        timers.set(Due::AcceptBackoff, at(1));
        timers.set(Due::AcceptBackoff, at(2));
        timers.set(Due::Drain, at(3));
        timers.set(Due::Drain, None);
        timers.set(Due::ShutdownGrace, at(4));
        assert_eq!(
            timers.next(),
            at(1),
            "a stale entry only wakes the loop early"
        );
        let far = start + Duration::from_secs(100);
        let fired: Vec<(Due, Instant)> = std::iter::from_fn(|| timers.pop_due(far))
            .map(|t| (t.due, t.at))
            .collect();
        assert_eq!(
            fired,
            [
                (Due::AcceptBackoff, start + Duration::from_secs(2)),
                (Due::ShutdownGrace, start + Duration::from_secs(4))
            ]
        );
        assert_eq!(timers.get(Due::ShutdownGrace), at(4), "set until cleared");
        assert_eq!(timers.get(Due::Drain), None);
        timers.set(Due::ShutdownGrace, at(5));
        timers.retain(|_| false);
        assert_eq!(timers.len(), 1, "the live own deadline is kept");
    }
}
