//! The load generator's engine: many clients driven from one thread and one `mio::Poll`,
//! every reply checked byte for byte, latency recorded in an HDR histogram. With
//! [`Options::threads`] above one, that many engines run side by side, each on its own
//! thread with its own poll and an equal share of the clients, and their counts and
//! histograms are added up at the end.
//!
//! This module owns the client side of the protocol: opening TCP connections (or connected
//! UDP sockets), checking the greeting, keeping up to `pipeline` requests in flight per
//! client, matching each reply to its request, and counting what went wrong. It is built on
//! the same kind of loop as the reactor so that it is not the bottleneck it measures: a
//! thread per client would spend the machine's two cores switching between clients instead
//! of loading the server. The engine never prints: [`command`] turns the [`Report`] into text.
//!
//! A run has two phases. First every client connects and reads its greeting, each with
//! `timeout` to do so (at most 128 at a time, see [`MAX_SETUPS_IN_FLIGHT`]); only then does
//! the clock start and the load begin, so connection setup is not counted as throughput
//! and every client starts together (with several engines, each waits for the others to
//! finish setting up). The load phase ends when `duration` has passed (requests still in
//! flight are abandoned, counted neither as messages nor as errors but as
//! [`Report::unanswered`]), when `messages` requests have all been settled, when no client
//! is left, or when the server has stopped answering altogether.
//!
//! Errors are counted per failure, not per request: a TCP connection that gets a wrong
//! reply, times out or is reset is closed and counted once, and the requests queued behind
//! the failure are abandoned with it. Failed connections are not reopened, which keeps the
//! numbers easy to read: `connections - connected` never got going, and a run whose
//! clients have all failed ends at once. Only a clean close is followed by a new connection:
//! with [`Options::requests_per_connection`] a client closes after that many replies and
//! connects again, and a reconnect that fails is an error like any other. UDP has no stream
//! to fall out of step, so a lost or wrong datagram is counted on its own and the socket
//! carries on. Every error is also counted under its cause, with the first message of each
//! ([`Report::causes`]), so a failed run says why without a log.
//!
//! Hostile clients ([`Options::hostile`], `--hostile KIND:N`) run beside the honest ones,
//! on engines of their own (attackers), never in an honest engine's loop. They are all set
//! up before the honest clients start, misbehave for the whole run, and stop with it. What
//! the server did to them is in [`Report::hostile`], apart from everything else: nothing a
//! hostile client suffers is an error, and the honest counts are exactly what they would
//! be without them.
//!
//! Reading order:
//! 1. `options.rs`: what to run, [`Options`], and the check that it can end.
//! 2. `report.rs`: what comes back, the [`Report`], and the [`Progress`] during the load.
//! 3. `driver.rs`: [`run`]: one engine per thread, started together, their counts added up.
//! 4. `engine.rs`: one engine: the poll loop over many clients, what they share, what it
//!    counts.
//! 5. `client.rs`: one client's state machine, a TCP connection or a UDP socket.
//! 6. `script.rs`: the bytes each client sends and expects, with no I/O.
//! 7. `tls.rs`: `--tls`: the client configuration, and the TLS state a TCP client reads and
//!    writes through.
//! 8. `hostile.rs`: the hostile kinds, their outcomes and what is counted of them, as data.
//! 9. `attacker.rs`: the engine that drives the hostile clients.
//! 10. `causes.rs`: every error counted under its cause, with its first message.
//! 11. `certificate.rs`: what `--tls-ca` still checks of a certificate it pins.
//! 12. [`command`]: the `loadgen` binary: flags, progress, the printed report.

#![warn(missing_docs)]

mod attacker;
mod causes;
#[cfg(feature = "tls")]
mod certificate;
mod client;
pub mod command;
mod driver;
mod engine;
mod hostile;
mod options;
mod report;
mod script;
mod tls;

pub use causes::{Cause, MAX_CAUSES, OTHER_CAUSES};
pub use driver::{run, run_with_progress};
pub use engine::MAX_SETUPS_IN_FLIGHT;
pub use hostile::{
    ErrLine, Hostile, HostileKind, HostileTally, Outcome, DRIBBLE_INTERVAL, MAX_PARTIAL_LINE_BYTES,
    PARTIAL_LINE_BYTES, PAUSED_AFTER,
};
pub use options::{Options, SocketKind, MAX_UDP_SIZE};
pub use report::{Progress, Report};
pub use tls::ClientTls;
