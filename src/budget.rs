//! The server-wide memory budget (`--max-buffer-memory`): the bytes held in every
//! connection's buffers, across every loop of `--threads`, against one limit.
//!
//! Per-connection bounds alone do not bound a server: 2,000 clients that pipeline and never
//! read can each hold the high-water mark's worth of replies. So each connection reports
//! what its buffers hold whenever that changes (a client that keeps up holds nothing, so
//! nothing is reported on its per-message path), and the loop asks, once a turn, what
//! share a connection may hold now: no limit while the total is under half the budget,
//! otherwise the budget divided by the open connections. A connection at its share stops
//! reading and answering until the total drains; it loses nothing, and connections that
//! hold less are served as before. (Redis's `maxmemory-clients` bounds the same thing, by
//! closing the largest clients instead.)

use std::sync::atomic::{AtomicUsize, Ordering};

/// Default for `--max-buffer-memory`: 256 MiB fits a small VM (1 GiB) beside the kernel's
/// own socket buffers, and still gives each of 10,000 connections 26 KiB, several times
/// what a client that reads its replies ever holds.
pub const DEFAULT_MAX_BUFFER_MEMORY: usize = 256 * 1024 * 1024;

/// Bytes held in connection buffers, server-wide, against the limit.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    held: AtomicUsize,
}

impl MemoryBudget {
    /// A budget of `limit` bytes, nothing held yet.
    pub fn new(limit: usize) -> MemoryBudget {
        MemoryBudget {
            limit,
            held: AtomicUsize::new(0),
        }
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held right now, across every loop.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// A connection's buffers went from holding `before` bytes to `after`.
    pub fn change(&self, before: usize, after: usize) {
        if after > before {
            self.held.fetch_add(after - before, Ordering::Relaxed);
        } else if before > after {
            self.held.fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    /// What one of `connections` may hold now: `None` (no limit) while the total is under
    /// half the budget, else an equal share of the whole budget.
    pub fn share(&self, connections: usize) -> Option<usize> {
        (self.held() >= self.limit / 2).then(|| self.limit / connections.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_apply_only_under_pressure_and_split_the_whole_budget() {
        let budget = MemoryBudget::new(1000);
        assert_eq!(budget.share(10), None, "nothing held: no limit");
        budget.change(0, 499);
        assert_eq!(budget.share(10), None);
        budget.change(499, 500);
        assert_eq!(budget.share(10), Some(100), "half the budget: equal shares");
        assert_eq!(budget.share(0), Some(1000));
        budget.change(500, 0);
        assert_eq!(budget.held(), 0);
        assert_eq!(budget.share(10), None);
    }
}
