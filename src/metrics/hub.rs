//! What the loops of one server share for its metrics: the [`Hub`], with a slot per loop
//! for its latest report ([`LoopReport`]: its [`Stats`] and what only the metrics show), the
//! generation the latest scrape asked for, what
//! wakes the loops, and the gauges read when a scrape is answered.
//!
//! This module owns the hand-over between loops: a scrape bumps the generation and wakes
//! every loop; each loop publishes its counts for it and wakes the serving loop, which adds
//! them up once every loop has published (or ended). It must not read a socket, know a
//! client or write text: the endpoint asks it, and the text format is `text.rs`'s. Every
//! lock here is held only to copy a few integers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use mio::Waker;

use crate::admission::Admission;
use crate::budget::MemoryBudget;
use crate::stats::Stats;

use super::text::TurnHistogram;

/// What one loop reports to a scrape as of the end of one of its turns, or several loops'
/// reports added up.
///
/// The counts are the loop's [`Stats`], the type the summary line shows too, so a scrape
/// and the summary cannot count an event differently. The two fields beside it stay out of
/// `Stats` on purpose: `paused` is a gauge (how many connections are paused now), not an
/// event that adds up over a run, and a summary of a run has no use for it; the turn
/// histogram is the metrics' own buckets, which the summary does not show (it keeps the
/// longest turn) and which a server without turns, the threaded one, could not fill.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct LoopReport {
    /// What the loop counted, the messages on its open connections included.
    pub(super) stats: Stats,
    /// Connections paused by backpressure.
    pub(super) paused: u64,
    pub(super) turns: TurnHistogram,
}

impl LoopReport {
    fn add(&mut self, other: &LoopReport) {
        self.stats.add(&other.stats);
        self.paused += other.paused;
        self.turns.add(&other.turns);
    }
}

/// One loop's slot in the [`Hub`]: its latest counts and the scrape they answer.
#[derive(Clone, Copy, Debug, Default)]
struct Snapshot {
    /// The scrape generation these counts answer.
    generation: u64,
    /// The loop has ended: these counts are its last and answer every generation.
    finished: bool,
    counts: LoopReport,
}

/// What the loops of one server share for its metrics: a slot per loop for its latest
/// counts, the generation the latest scrape asked for, and what wakes the loops.
pub(crate) struct Hub {
    /// Bumped by each scrape; a loop publishes when this differs from what it last did.
    requested: AtomicU64,
    slots: Vec<Mutex<Snapshot>>,
    /// Every loop's waker, in loop order; the first loop serves the endpoint. Set once all
    /// the loops exist, which is after the hub.
    wakers: OnceLock<Vec<Arc<Waker>>>,
    /// What `--max-connections` counts: the open connections.
    pub(super) admission: Arc<Admission>,
    pub(super) budget: Arc<MemoryBudget>,
    /// `--max-buffer-memory`.
    pub(super) buffer_budget: usize,
    /// When the server started, since the Unix epoch.
    pub(super) started: Duration,
}

impl Hub {
    /// A hub for `loops` loops sharing these gauges.
    pub(crate) fn new(
        loops: usize,
        admission: Arc<Admission>,
        budget: Arc<MemoryBudget>,
        buffer_budget: usize,
    ) -> Arc<Hub> {
        Arc::new(Hub {
            requested: AtomicU64::new(0),
            slots: (0..loops).map(|_| Mutex::default()).collect(),
            wakers: OnceLock::new(),
            admission,
            budget,
            buffer_budget,
            started: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        })
    }

    /// Hands over every loop's waker, in loop order, once the loops exist.
    pub(crate) fn set_wakers(&self, wakers: Vec<Arc<Waker>>) {
        if self.wakers.set(wakers).is_err() {
            log::error!("metrics: the loops' wakers were set twice");
        }
    }

    fn wake(&self, loops: impl Iterator<Item = usize>) {
        let Some(wakers) = self.wakers.get() else {
            return;
        };
        for waker in loops.filter_map(|i| wakers.get(i)) {
            if let Err(e) = waker.wake() {
                log::error!("metrics: cannot wake an event loop: {e}");
            }
        }
    }

    /// A scrape: asks every loop for its counts. Returns the generation to wait for.
    pub(super) fn request(&self) -> u64 {
        let generation = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        self.wake(1..self.slots.len());
        generation
    }

    pub(super) fn requested(&self) -> u64 {
        self.requested.load(Ordering::SeqCst)
    }

    fn slot(&self, index: usize) -> MutexGuard<'_, Snapshot> {
        // A loop that panicked while publishing left whole integers behind; they are
        // still worth showing.
        self.slots[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn publish(&self, index: usize, generation: u64, counts: LoopReport) {
        let mut slot = self.slot(index);
        slot.generation = generation;
        slot.counts = counts;
        drop(slot);
        if index != 0 {
            self.wake(0..1);
        }
    }

    pub(super) fn finish(&self, index: usize) {
        self.slot(index).finished = true;
        if index != 0 {
            self.wake(0..1);
        }
    }

    /// How many loops the server runs (`--threads`).
    pub(super) fn loops(&self) -> usize {
        self.slots.len()
    }

    /// Every loop's counts added up, once each has answered `generation` (or ended).
    pub(super) fn gathered(&self, generation: u64) -> Option<LoopReport> {
        let mut total = LoopReport::default();
        for index in 0..self.slots.len() {
            let slot = self.slot(index);
            if !slot.finished && slot.generation < generation {
                return None;
            }
            total.add(&slot.counts);
        }
        Some(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(messages: u64) -> LoopReport {
        LoopReport {
            stats: Stats {
                messages,
                ..Stats::default()
            },
            ..LoopReport::default()
        }
    }

    #[test]
    fn a_scrape_is_answered_once_every_loop_has_published_or_ended() {
        let hub = Hub::new(
            3,
            Admission::new(usize::MAX, 0),
            Arc::new(MemoryBudget::new(1)),
            1,
        );
        let generation = hub.request();
        assert_eq!(generation, 1);
        assert_eq!(hub.gathered(generation), None, "nobody has published");
        hub.publish(0, generation, counts(10));
        hub.publish(1, generation, counts(20));
        assert_eq!(hub.gathered(generation), None, "loop 2 has not");
        hub.finish(2);
        assert_eq!(hub.gathered(generation).map(|c| c.stats.messages), Some(30));
        // A later scrape waits for counts at least as new as itself.
        let next = hub.request();
        assert_eq!(hub.gathered(next), None);
        hub.publish(1, next, counts(25));
        assert_eq!(hub.gathered(next), None);
        hub.publish(0, next, counts(11));
        assert_eq!(hub.gathered(next).map(|c| c.stats.messages), Some(36));
    }
}
