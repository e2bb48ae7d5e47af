//! A single-threaded, non-blocking TCP + UDP server on a `mio` poll loop, a
//! thread-per-connection baseline that speaks the same protocol, and the tools to compare
//! them.
//!
//! Reading order:
//! 1. [`protocol`]: the protocol with no I/O at all: framing, replies, `exit`, `--max-line`.
//! 2. [`connection`]: one TCP connection as an explicit state machine around a socket,
//!    with its own deadlines.
//! 3. [`udp`]: the datagram endpoint, served by the same loop.
//! 4. [`timers`]: the loop's deadlines, nearest first.
//! 5. [`metrics`]: the Prometheus endpoint a loop serves with `--metrics`: its clients and
//!    their bounds, the counts the loops publish for a scrape, the text it returns.
//! 6. [`event_loop`]: the poll loop: tokens, the slab of connections, accept, the ready
//!    list, the timers, the sweep, shutdown.
//! 7. [`reactor`]: one or more loops as a server (`--threads`, the stop handle).
//! 8. [`threaded`]: the baseline, blocking I/O and one thread per connection, same protocol.
//! 9. [`loadgen`]: the client side: one poll loop driving many clients, checking every
//!    reply and measuring latency.
//!
//! [`config`], [`stats`], [`admission`] (the connection limits, and the permit that
//! holds a place under them), [`budget`], [`net`], [`proxy`] (the PROXY protocol header, as
//! free of I/O as [`protocol`]), `tls` (TLS with rustls: the certificate, and a TLS session
//! a connection drives as it drives a socket), [`transport`] (a socket or a TLS session:
//! what the loop is generic over), [`signals`], [`systemd`], [`restart`] (a successor on the
//! same sockets at SIGUSR2), [`cli`] and [`running`] are the plumbing the binaries share;
//! [`procfs`] measures a server process for the tests and benches, and [`measure`] is the
//! arithmetic the bench's figures come from.
//!
//! Layering: each numbered module uses only those above it and the plumbing; the plumbing
//! uses nothing but itself and [`protocol`]; [`procfs`] and [`measure`] (which reads
//! loadgen's report) serve the tests and benches and nothing in the servers uses them.

#![warn(missing_docs)]

pub mod admission;
pub mod budget;
pub mod cli;
pub mod config;
pub mod connection;
pub mod event_loop;
pub mod loadgen;
pub mod measure;
pub mod metrics;
pub mod net;
pub mod procfs;
pub mod protocol;
pub mod proxy;
pub mod reactor;
pub mod restart;
pub mod running;
pub mod signals;
pub mod stats;
pub mod systemd;
pub mod threaded;
pub mod timers;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transport;
pub mod udp;

pub use config::ServerConfig;
pub use running::Running;
pub use stats::Stats;
