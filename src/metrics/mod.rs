//! Prometheus metrics served by the reactor's own poll loop (`--metrics ADDR`): the endpoint
//! that answers `GET /metrics`, and what a scrape shows.
//!
//! This module is what the loop sees of the metrics: `LoopMetrics`, one loop's part (its
//! turn histogram, the last scrape it answered, and in the first loop, the endpoint), the
//! `OpenConnections` a loop reports when a scrape asks, the listener the reactor binds for
//! it (`bind`), and the bounds on metrics clients. The loop only hooks it in: a token for
//! the listener and a few for its clients, the dispatch of their events, one call at the
//! end of each turn and one deadline. Nothing here runs per message, and with `--metrics`
//! off the loop holds no `LoopMetrics` at all. This file must not hold the endpoint's or a
//! client's workings, the HTTP or the text format: they are its submodules', each about one
//! thing:
//!
//! - `hub.rs`: what the loops of one server share for a scrape (`Hub`), and each loop's
//!   report (`LoopReport`: its `Stats` and the gauges beside them) in it;
//! - `endpoint.rs`: the endpoint in the serving loop: its listener, its places for clients,
//!   their deadlines, and answering a scrape once every loop has published;
//! - `client.rs`: one metrics client's state machine over its socket;
//! - `http.rs`: HTTP with no I/O: a request head read with `httparse`, the responses, their
//!   statuses;
//! - `text.rs`: the Prometheus text format with no I/O, and the turn-duration histogram
//!   whose buckets it shows.
//!
//! Where the numbers come from. Each loop counts in its own [`Stats`], plain integers that no
//! other thread touches; a connection's messages are added to them only when it closes, and
//! whether a connection is paused is its state. So a scrape asks the loops: it bumps a
//! generation number in the shared `Hub` and wakes every loop; each loop, at the end of
//! its next turn, walks its slab (messages on open connections, connections paused),
//! publishes a `Snapshot` in its slot and wakes the serving loop (the first), which
//! answers once every loop has published that generation. The counts are exact as of one
//! turn of each loop, and a loop that nobody scrapes pays one atomic load and one histogram
//! observation per turn. The gauges the loops already share (open connections, bytes
//! buffered) are read when the answer is written.
//!
//! A metrics client is bounded like any other: at most [`MAX_METRICS_CLIENTS`] at once (more
//! get `503` and a close), a request head of at most [`MAX_REQUEST_HEAD`] bytes (beyond it,
//! or anything `httparse` rejects: `400`), [`METRICS_DEADLINE`] from accept to close whatever
//! it does or fails to do, one response per connection (`Connection: close`: the simplest
//! rule, and a scraper opens a connection per scrape anyway), and a response whose size the
//! fixed set of metrics bounds (a few KiB). Every error closes that client and no other.

mod client;
mod endpoint;
mod http;
mod hub;
mod text;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Registry, Token};

use crate::net;
use crate::stats::Stats;
use crate::timers::{Timer, Timers};

use endpoint::Endpoint;
pub(crate) use hub::Hub;
use hub::LoopReport;
use text::TurnHistogram;

/// Metrics clients served at once. A Prometheus server scrapes a target over one
/// connection at a time, so this leaves room for a pair of them (the usual redundant setup)
/// and a person with `curl`; a fifth at once is not a scraper. Each holds a request head
/// and a response at most.
pub const MAX_METRICS_CLIENTS: usize = 4;

/// The longest request head (request line and headers) read. A scrape's is about 200
/// bytes; 8 KiB is what common HTTP servers allow by default, so a real client never meets
/// it and a junk one is cut short.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// From accept to close, whatever a metrics client does. A scrape takes milliseconds; a
/// client that has not sent its request, or not read its response, within this long holds
/// one of only [`MAX_METRICS_CLIENTS`] places for nothing.
pub const METRICS_DEADLINE: Duration = Duration::from_secs(5);

/// The metrics listener's backlog: a few scrapers at most, and anything beyond
/// [`MAX_METRICS_CLIENTS`] is refused anyway.
const METRICS_BACKLOG: i32 = 32;

/// Binds the metrics listener. With SO_REUSEPORT (where there is one), so that a successor
/// started by a restart (`SIGUSR2`, [`restart`](crate::restart)), which runs with the same
/// arguments, can bind the same address while this process still listens on it; this one
/// stops listening when it stops accepting, and from then on every scrape reaches the
/// successor.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    net::tcp_listener(addr, METRICS_BACKLOG, cfg!(unix))
        .map_err(|e| io::Error::new(e.kind(), format!("--metrics {addr}: {e}")))
}

/// What the loop's open connections hold that its `Stats` does not yet: the messages
/// answered on them (`Stats` takes a connection's when it closes) and how many are paused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct OpenConnections {
    /// Messages answered on connections still open.
    pub(crate) messages: u64,
    /// Connections not being read because their unsent output passed the high-water mark
    /// (state `Replying`).
    pub(crate) paused: u64,
}

/// One loop's part in the metrics: its turn histogram, the last scrape it answered, and in
/// the first loop, the endpoint.
pub(crate) struct LoopMetrics {
    hub: Arc<Hub>,
    index: usize,
    published: u64,
    turns: TurnHistogram,
    endpoint: Option<Endpoint>,
}

impl LoopMetrics {
    /// Loop `index`'s part; `listener`, bound already, for the loop that serves the
    /// endpoint.
    pub(crate) fn new(
        hub: Arc<Hub>,
        index: usize,
        listener: Option<std::net::TcpListener>,
    ) -> io::Result<LoopMetrics> {
        let endpoint = match listener {
            Some(listener) => {
                listener.set_nonblocking(true)?;
                Some(Endpoint::new(TcpListener::from_std(listener)))
            }
            None => None,
        };
        Ok(LoopMetrics {
            hub,
            index,
            published: 0,
            turns: TurnHistogram::default(),
            endpoint,
        })
    }

    /// Registers the endpoint's listener as `listener`; its clients take the tokens from
    /// `first_client` up, one per place ([`MAX_METRICS_CLIENTS`] of them).
    pub(crate) fn register(
        &mut self,
        registry: &Registry,
        listener: Token,
        first_client: usize,
    ) -> io::Result<()> {
        match &mut self.endpoint {
            Some(endpoint) => endpoint.register(registry, listener, first_client),
            None => Ok(()),
        }
    }

    /// Closes the listener (a restart's hand-over, or shutdown): new scrapes go to the
    /// successor, or nowhere. Clients already connected are still answered.
    pub(crate) fn stop_listening(&mut self, registry: &Registry) {
        if let Some(endpoint) = &mut self.endpoint {
            if let Some(mut listener) = endpoint.listener.take() {
                let _ = registry.deregister(&mut listener);
            }
        }
    }

    /// An event for the endpoint's listener or one of its clients. Its deadlines go into
    /// the loop's `timers`.
    pub(crate) fn on_event(
        &mut self,
        token: Token,
        registry: &Registry,
        now: Instant,
        timers: &mut Timers,
    ) {
        if let Some(endpoint) = &mut self.endpoint {
            endpoint.on_event(token, registry, &self.hub, now, timers);
        }
    }

    /// One of the endpoint's deadlines ([`Due::MetricsAccept`](crate::timers::Due),
    /// `Due::MetricsClient`) came due in the loop's `timers`.
    pub(crate) fn on_deadline(&mut self, timer: Timer, registry: &Registry, timers: &mut Timers) {
        if let Some(endpoint) = &mut self.endpoint {
            endpoint.on_deadline(timer, registry, timer.at, timers);
        }
    }

    /// The loop's turn is over: publishes its counts if a scrape asked for them (`open`
    /// walks the slab, so it is called only then), and lets the endpoint answer and drop
    /// its clients.
    pub(crate) fn end_of_turn(&mut self, stats: &Stats, open: impl FnOnce() -> OpenConnections) {
        let requested = self.hub.requested();
        if requested != self.published {
            let open = open();
            let mut stats = *stats;
            stats.messages += open.messages;
            let counts = LoopReport {
                stats,
                paused: open.paused,
                turns: self.turns,
            };
            self.hub.publish(self.index, requested, counts);
            self.published = requested;
        }
        if let Some(endpoint) = &mut self.endpoint {
            endpoint.end_of_turn(&self.hub);
        }
    }

    /// How long the turn took, this module's work included: the loop measures it anyway
    /// (its longest turn), so observing it costs no clock reading of its own.
    pub(crate) fn observe_turn(&mut self, turn: Duration) {
        self.turns.observe(turn);
    }
}

impl Drop for LoopMetrics {
    /// A loop that has ended (shutdown, or an error) must not hold up a scrape.
    fn drop(&mut self) {
        self.hub.finish(self.index);
    }
}
