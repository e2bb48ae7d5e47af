//! The server-wide memory budget (`--max-buffer-memory`): the bytes held in every
//! connection's buffers, across every loop of `--threads`, against one limit.
//!
//! Per-connection bounds alone do not bound a server: 2,000 clients that pipeline and never
//! read can each hold the high-water mark's worth of replies. So each connection reports
//! what its buffers hold whenever that changes (a client that keeps up holds nothing, so
//! nothing is reported on its per-message path), and before each read and each batch of
//! replies a connection asks how much more it may take on: as long as the server as a
//! whole is under the budget, up to an equal share of it (the budget divided by the open
//! connections). So the total stays within the budget plus one step per loop, whatever
//! the number of clients. A connection at its share that owes output stops reading and answering until its peer takes some of that output (its
//! WRITABLE event resumes it); one that owes nothing goes on in small steps, so nobody can
//! wait forever on memory held by others. Nothing is lost, and connections that hold less
//! are served as before. (Redis's `maxmemory-clients` bounds the same thing, by closing the
//! largest clients instead.)

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

    /// An equal share of the budget among `connections`. The loop computes it once a turn.
    pub fn share(&self, connections: usize) -> usize {
        self.limit / connections.max(1)
    }

    /// How many more bytes a connection that holds `holds` may take on now, given its
    /// `share`: what is left of the budget, and no more than what is left of its share.
    pub fn allowance(&self, holds: usize, share: usize) -> usize {
        let left = self.limit.saturating_sub(self.held());
        left.min(share.saturating_sub(holds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowances_are_an_equal_share_and_what_is_left_of_the_whole() {
        let budget = MemoryBudget::new(1000);
        assert_eq!(budget.allowance(0, budget.share(10)), 100, "an equal share");
        assert_eq!(
            budget.allowance(60, budget.share(10)),
            40,
            "what is left of it"
        );
        assert_eq!(budget.allowance(150, budget.share(10)), 0, "over its share");
        assert_eq!(budget.allowance(0, budget.share(1)), 1000);
        assert_eq!(budget.allowance(0, budget.share(0)), 1000);
        budget.change(0, 950);
        assert_eq!(
            budget.allowance(0, budget.share(10)),
            50,
            "no more than what is left"
        );
        budget.change(950, 1200);
        assert_eq!(
            budget.allowance(0, budget.share(10)),
            0,
            "over the budget: nobody grows"
        );
        budget.change(1200, 0);
        assert_eq!(budget.held(), 0);
    }
}
