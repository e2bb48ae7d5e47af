//! A single-threaded, non-blocking TCP + UDP server on a `mio` poll loop, a
//! thread-per-connection baseline that speaks the same protocol, and the tools to compare
//! them.
//!
//! Reading order:
//! 1. [`protocol`]: the protocol with no I/O at all: framing, replies, `exit`, `--max-line`.
//! 2. [`connection`]: one TCP connection as an explicit state machine around a socket.
//! 3. [`reactor`]: the poll loop: tokens, the slab of connections, accept, timers, shutdown.
//! 4. [`udp`]: the datagram endpoint served by the same loop.
//! 5. [`threaded`]: the baseline, blocking I/O and one thread per connection, same protocol.
//! 6. [`loadgen`]: the client side: one poll loop driving many clients, checking every
//!    reply and measuring latency.
//!
//! [`config`], [`net`], [`cli`] and [`running`] are the plumbing the binaries share;
//! [`procfs`] measures a server process for the tests and benches, and [`measure`] is the
//! arithmetic the bench's figures come from.

#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod connection;
pub mod loadgen;
pub mod measure;
pub mod net;
pub mod procfs;
pub mod protocol;
pub mod reactor;
pub mod running;
pub mod threaded;
pub mod udp;

pub use config::{ServerConfig, Stats};
pub use running::Running;
