//! The server-wide memory budget (`--max-buffer-memory`): the bytes held in every
//! connection's buffers, across every loop of `--threads`, against one limit.
//!
//! Per-connection bounds alone do not bound a server: 2,000 clients that pipeline and never
//! read can each hold the high-water mark's worth of replies. So no connection takes on
//! more than an equal share of the budget (the budget divided by the open connections),
//! asked before each read and each batch of replies; the shares add up to the budget,
//! whatever the number of clients. A connection at its share that owes output stops
//! reading and answering until its peer takes some of that output (its WRITABLE event
//! resumes it); one that owes nothing is never refused its share, however much the others
//! hold, so an honest client is served at full speed beside thousands of slow readers.
//! Nothing is lost. One that owes nothing but whose unfinished line alone fills its share
//! could neither finish the line nor be answered: it is told `ERR line too long` and closed
//! politely, as a line past `--max-line` is. (Redis's `maxmemory-clients` bounds the same thing, by closing the
//! largest clients instead.)
//!
//! What every connection holds is also added up here (each reports a change of what its
//! buffers hold, which a client that keeps up never has), for the statistics: the most the
//! server held, against the limit.

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

    /// An equal share of the budget among `connections`. The loop computes it once a turn.
    pub fn share(&self, connections: usize) -> usize {
        self.limit / connections.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_split_the_budget_and_the_total_is_counted() {
        let budget = MemoryBudget::new(1000);
        assert_eq!(budget.share(10), 100);
        assert_eq!(budget.share(1), 1000);
        assert_eq!(budget.share(0), 1000, "no connection yet: the whole budget");
        budget.change(0, 950);
        budget.change(950, 1200);
        assert_eq!(budget.held(), 1200);
        budget.change(1200, 0);
        assert_eq!(budget.held(), 0);
    }
}
