//! What one connection thread costs the process, and how many the kernel leaves room for.
//!
//! This module owns the connection thread's stack size and the arithmetic behind the thread
//! ceiling: the mappings each thread adds and how many threads `vm.max_map_count` fits. It
//! must not start threads or refuse connections itself: the accept loop (`threaded.rs`)
//! builds threads with [`CONNECTION_STACK_SIZE`] and lowers `--max-connections` to
//! [`thread_ceiling`].

/// Stack size of a connection thread. The default (2 MiB, or `RUST_MIN_STACK`) is address
/// space reserved per connection; with 10,000 connections that is 20 GiB of mappings for
/// threads whose deepest frames are a `read`, a `write` and a log call. Buffers live on the
/// heap, so 64 KiB leaves ample headroom.
pub(super) const CONNECTION_STACK_SIZE: usize = 64 * 1024;

/// Memory mappings each connection thread adds: its stack and the stack's guard page, and
/// the signal stack std gives every thread (to report a stack overflow) with its guard page.
/// Measured on Linux: 1,000 connection threads add 4,028 mappings.
const MAPPINGS_PER_THREAD: u64 = 4;

/// Mappings left for everything else in the process: the binary, its libraries, the
/// allocator's arenas (about 40 with no connection at all).
const OTHER_MAPPINGS: u64 = 1_024;

/// The most connection threads the kernel's limit on mappings per process leaves room for,
/// with that limit; `None` where it cannot be read (not Linux).
///
/// Why it matters: a thread that cannot map its signal stack makes std abort the whole
/// process, since there is no one to return the error to once the thread has started.
/// With Linux's default limit of 65,530 that happens at about 16,000 threads, so the
/// server refuses connections beyond this, as beyond `--max-connections`, rather than die
/// with every client it holds.
pub(super) fn thread_ceiling() -> Option<(u64, usize)> {
    let text = std::fs::read_to_string("/proc/sys/vm/max_map_count").ok()?;
    let max_map_count: u64 = text.trim().parse().ok()?;
    Some((max_map_count, threads_within(max_map_count)))
}

/// How many connection threads fit in `max_map_count` mappings.
fn threads_within(max_map_count: u64) -> usize {
    let threads = max_map_count.saturating_sub(OTHER_MAPPINGS) / MAPPINGS_PER_THREAD;
    usize::try_from(threads).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_ceiling_leaves_room_for_the_rest_of_the_process() {
        for max_map_count in [65_530, 262_144, 1_048_576] {
            let threads = threads_within(max_map_count) as u64;
            assert!(threads * MAPPINGS_PER_THREAD + OTHER_MAPPINGS <= max_map_count);
        }
        // Under Linux's default the bench's 10,000 idle connections still fit.
        assert!(threads_within(65_530) > 15_000);
        assert_eq!(threads_within(100), 0);
    }
}
