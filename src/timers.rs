//! The loop's deadlines: one binary heap of (time, slab key, serial number), nearest first.
//!
//! mio has no timers: the loop turns the nearest deadline into the `poll` timeout, and after
//! each turn takes the entries that are due. This module only keeps the entries in order; it
//! does not know what a deadline means (the connection decides that) and it never reads the
//! clock. Entries are not removed when a connection's deadline moves or the connection
//! closes: the loop skips an entry whose serial or time no longer matches its slot (slab
//! keys are reused, serial numbers are not), and prunes them when they pile up.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// One scheduled deadline for the connection at slab key `key` with serial `serial`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    /// When it is due. First, so the heap orders by it.
    pub at: Instant,
    /// The connection's slab key.
    pub key: usize,
    /// The connection's serial number, which tells it apart from a later connection that
    /// reuses the key.
    pub serial: u64,
}

/// Deadlines, nearest first.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Timer>>,
}

impl Timers {
    /// No deadlines.
    pub fn new() -> Timers {
        Timers::default()
    }

    /// Adds a deadline. O(log n).
    pub fn schedule(&mut self, timer: Timer) {
        self.heap.push(Reverse(timer));
    }

    /// The nearest deadline, if any: what the loop's `poll` timeout is computed from.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(timer)| timer.at)
    }

    /// Removes and returns the nearest entry if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        match self.heap.peek() {
            Some(Reverse(timer)) if timer.at <= now => self.heap.pop().map(|Reverse(t)| t),
            _ => None,
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

    /// Keeps only the entries `live` accepts: the loop drops stale ones with it. O(n).
    pub fn retain(&mut self, mut live: impl FnMut(&Timer) -> bool) {
        self.heap.retain(|Reverse(timer)| live(timer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn timer(start: Instant, secs: u64, key: usize) -> Timer {
        Timer {
            at: start + Duration::from_secs(secs),
            key,
            serial: key as u64,
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
            .map(|t| t.key)
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
        assert_eq!(timers.pop_due(start).map(|t| t.key), Some(7));
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
        timers.retain(|t| t.key % 2 == 0);
        assert_eq!(timers.len(), 5);
        let far = start + Duration::from_secs(100);
        let keys: Vec<usize> = std::iter::from_fn(|| timers.pop_due(far))
            .map(|t| t.key)
            .collect();
        assert_eq!(keys, [8, 6, 4, 2, 0]);
    }
}
