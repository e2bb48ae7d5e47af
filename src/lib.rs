//! A single-threaded, non-blocking TCP + UDP server on a `mio` poll loop, a
//! thread-per-connection baseline that speaks the same protocol, and the tools to compare
//! them.
//!
//! Reading order (the README's): first `examples/minimal.rs`, the whole idea in one file,
//! then:
//! 1. [`protocol`]: the protocol with no I/O at all: framing, replies, `exit`, `--max-line`,
//!    when an unfinished line began (for `--line-timeout`).
//! 2. [`connection`]: one TCP connection as an explicit state machine around a socket:
//!    what comes before the protocol, its bounded output, its deadlines.
//! 3. [`timers`]: the loop's deadlines, nearest first.
//! 4. [`udp`]: the datagram endpoint, served by the same loop.
//! 5. [`event_loop`]: the poll loop: tokens, the slab of connections, accept, the ready
//!    list, the timers, the sweep, shutdown.
//! 6. [`reactor`]: one or more loops as a server (`--threads`, the stop handle).
//! 7. [`threaded`]: the baseline, blocking I/O and one thread per connection, same protocol.
//!
//! Beside the lesson: [`metrics`] (the Prometheus endpoint a loop serves with `--metrics`).
//! The client side, one poll loop driving many clients, checking every reply and measuring
//! latency, is the `loadgen` crate beside this one (`loadgen/`); what only the tests and the
//! bench need (reading `/proc`, the bench's arithmetic, the tokio peer) is the `harness`
//! crate (`harness/`).
//!
//! [`config`], [`stats`], [`admission`] (the connection limits, and the permit that
//! holds a place under them), [`budget`], [`net`], [`proxy`] (the PROXY protocol header, as
//! free of I/O as [`protocol`]), `tls` (TLS with rustls: the certificate, and the TLS state
//! over a socket that a connection drives as it drives a socket), `transport` (a socket, or
//! a socket with TLS: what the loop is generic over), `signals`, [`systemd`], [`restart`] (a
//! successor on the same sockets at SIGUSR2) and [`running`] are the plumbing the binaries
//! share. The binaries' flags are theirs (`src/bin/common/cli.rs`), not the library's.
//!
//! Layering: each numbered module uses only those above it, [`metrics`] and the plumbing;
//! the plumbing uses nothing but itself and [`protocol`].

#![warn(missing_docs)]

pub mod admission;
pub mod budget;
pub mod config;
pub mod connection;
pub mod event_loop;
pub mod metrics;
pub mod net;
pub mod protocol;
pub mod proxy;
pub mod reactor;
pub mod restart;
pub mod running;
pub(crate) mod signals;
pub mod stats;
pub mod systemd;
pub mod threaded;
pub mod timers;
#[cfg(feature = "tls")]
pub mod tls;
pub(crate) mod transport;
pub mod udp;

pub use config::ServerConfig;
pub use running::Running;
pub use stats::Stats;
