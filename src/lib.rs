//! A single-threaded, non-blocking TCP + UDP server on a `mio` poll loop, a
//! thread-per-connection baseline that speaks the same protocol, and the tools to compare
//! them.
//!
//! Reading order:
//! 1. [`protocol`]: the protocol with no I/O at all: framing, replies, `exit`, `--max-line`.
//! 2. [`connection`]: one TCP connection as an explicit state machine around a socket,
//!    with its own deadlines.
//! 3. [`event_loop`]: the poll loop: tokens, the slab of connections, accept, the ready
//!    list, the [`timers`], the sweep, shutdown.
//! 4. [`udp`]: the datagram endpoint served by the same loop.
//! 5. [`reactor`]: one or more loops as a server (`--threads`, the stop handle).
//! 6. [`threaded`]: the baseline, blocking I/O and one thread per connection, same protocol.
//! 7. [`loadgen`]: the client side: one poll loop driving many clients, checking every
//!    reply and measuring latency.
//!
//! [`config`], [`stats`], [`net`], [`cli`] and [`running`] are the plumbing the binaries
//! share; [`procfs`] measures a server process for the tests and benches.
//!
//! Layering: each module uses only those above it in this list or the plumbing; the
//! plumbing uses nothing but itself and [`protocol`].

#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod connection;
pub mod event_loop;
pub mod loadgen;
pub mod net;
pub mod procfs;
pub mod protocol;
pub mod reactor;
pub mod running;
pub mod stats;
pub mod threaded;
pub mod timers;
pub mod udp;

pub use config::ServerConfig;
pub use running::Running;
pub use stats::Stats;
