//! Prometheus metrics served by the reactor's own poll loop (`--metrics ADDR`): the endpoint
//! that answers `GET /metrics`, and what a scrape shows.
//!
//! This module owns the metrics endpoint (its listener and its few clients, each a small
//! state machine), the bounds on those clients, the histogram of loop turn durations, the
//! counts each loop publishes for a scrape, and the text a scrape returns. The loop only
//! hooks it in: a token for the listener and a few for its clients, the dispatch of their
//! events, one call at the end of each turn and one deadline. Nothing here runs per
//! message, and with `--metrics` off the loop holds no `LoopMetrics` at all.
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
//! The text format (version 0.0.4) is written here by hand rather than with an encoder
//! crate: the values already live in `Stats`, the set of metrics is fixed, and the format is
//! two comment lines and a sample line per value. `prometheus-client` would need every
//! value copied into its atomic metric types before each scrape only to read them out
//! again, and it writes the OpenMetrics format, not 0.0.4.
//!
//! A metrics client is bounded like any other: at most [`MAX_METRICS_CLIENTS`] at once (more
//! get `503` and a close), a request head of at most [`MAX_REQUEST_HEAD`] bytes (beyond it,
//! or anything `httparse` rejects: `400`), [`METRICS_DEADLINE`] from accept to close whatever
//! it does or fails to do, one response per connection (`Connection: close`: the simplest
//! rule, and a scraper opens a connection per scrape anyway), and a response whose size the
//! fixed set of metrics bounds (a few KiB). Every error closes that client and no other.

use std::fmt::{Display, Write as _};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token, Waker};

use crate::budget::MemoryBudget;
use crate::net::{self, ACCEPT_BACKOFF};
use crate::stats::Stats;
use crate::timers::{Timer, Timers};

/// Metrics clients served at once. A Prometheus server scrapes a target over one
/// connection at a time, so this leaves room for a pair of them (the usual redundant setup)
/// and a person with `curl`; a fifth at once is not a scraper. Each holds a request head
/// and a response at most.
pub const MAX_METRICS_CLIENTS: usize = 4;

/// The longest request head (request line and headers) read. A scrape's is about 200
/// bytes; 8 KiB is what common HTTP servers allow by default, so a real client never meets
/// it and a junk one is cut short.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Headers parsed per request; more is a `400`. Prometheus sends five.
const MAX_HEADERS: usize = 32;

/// From accept to close, whatever a metrics client does. A scrape takes milliseconds; a
/// client that has not sent its request, or not read its response, within this long holds
/// one of only [`MAX_METRICS_CLIENTS`] places for nothing.
pub const METRICS_DEADLINE: Duration = Duration::from_secs(5);

/// Bytes read and dropped after the response, while waiting for the client's EOF. A
/// scraper sends nothing more; this only stops a client that floods after its request from
/// keeping the loop reading.
const LINGER_DISCARD_LIMIT: usize = 64 * 1024;

/// Connections accepted per event (or turn); the rest on the next turn, so a flood on the
/// metrics port cannot hold the loop.
const ACCEPT_PER_TURN: usize = 16;

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

/// The turn-duration buckets: each upper bound in nanoseconds and as its `le` label. From
/// 50 µs (a turn of a few events) to 1 s (far beyond what the loop's per-turn bounds allow:
/// a turn that long means the machine stalled the loop).
const TURN_BUCKETS: [(u64, &str); 14] = [
    (50_000, "0.00005"),
    (100_000, "0.0001"),
    (250_000, "0.00025"),
    (500_000, "0.0005"),
    (1_000_000, "0.001"),
    (2_500_000, "0.0025"),
    (5_000_000, "0.005"),
    (10_000_000, "0.01"),
    (25_000_000, "0.025"),
    (50_000_000, "0.05"),
    (100_000_000, "0.1"),
    (250_000_000, "0.25"),
    (500_000_000, "0.5"),
    (1_000_000_000, "1"),
];

/// Loop turn durations in fixed buckets. Observing one turn costs a binary search over 14
/// bounds and two additions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TurnHistogram {
    /// Turns per bucket, not cumulative: `counts[i]` took at most bucket `i`'s bound and
    /// more than the one before; the last counts the turns beyond every bound.
    counts: [u64; TURN_BUCKETS.len() + 1],
    /// The time of every turn observed, added up, in nanoseconds.
    sum_ns: u64,
}

impl TurnHistogram {
    pub(crate) fn observe(&mut self, turn: Duration) {
        let ns = u64::try_from(turn.as_nanos()).unwrap_or(u64::MAX);
        let bucket = TURN_BUCKETS.partition_point(|&(bound, _)| bound < ns);
        self.counts[bucket] += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn add(&mut self, other: &TurnHistogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine += theirs;
        }
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }
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

/// One loop's counts as of the end of one of its turns, or several loops' added up.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct LoopCounts {
    /// What the loop counted, the messages on its open connections included.
    stats: Stats,
    /// Connections paused by backpressure.
    paused: u64,
    turns: TurnHistogram,
}

impl LoopCounts {
    fn add(&mut self, other: &LoopCounts) {
        self.stats.add(&other.stats);
        self.paused += other.paused;
        self.turns.add(&other.turns);
    }
}

/// One loop's slot in the [`Hub`]: its latest counts and the scrape they answer.
#[derive(Clone, Copy, Debug, Default)]
struct Snapshot {
    /// The scrape generation these counts answer.
    generation: u64,
    /// The loop has ended: these counts are its last and answer every generation.
    finished: bool,
    counts: LoopCounts,
}

/// What the loops of one server share for its metrics: a slot per loop for its latest
/// counts, the generation the latest scrape asked for, and what wakes the loops.
pub(crate) struct Hub {
    /// Bumped by each scrape; a loop publishes when this differs from what it last did.
    requested: AtomicU64,
    slots: Vec<Mutex<Snapshot>>,
    /// Every loop's waker, in loop order; the first loop serves the endpoint. Set once all
    /// the loops exist, which is after the hub.
    wakers: OnceLock<Vec<Arc<Waker>>>,
    open_connections: Arc<AtomicUsize>,
    budget: Arc<MemoryBudget>,
    /// `--max-buffer-memory`.
    buffer_budget: usize,
    /// When the server started, since the Unix epoch.
    started: Duration,
}

impl Hub {
    /// A hub for `loops` loops sharing these gauges.
    pub(crate) fn new(
        loops: usize,
        open_connections: Arc<AtomicUsize>,
        budget: Arc<MemoryBudget>,
        buffer_budget: usize,
    ) -> Arc<Hub> {
        Arc::new(Hub {
            requested: AtomicU64::new(0),
            slots: (0..loops).map(|_| Mutex::default()).collect(),
            wakers: OnceLock::new(),
            open_connections,
            budget,
            buffer_budget,
            started: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        })
    }

    /// Hands over every loop's waker, in loop order, once the loops exist.
    pub(crate) fn set_wakers(&self, wakers: Vec<Arc<Waker>>) {
        if self.wakers.set(wakers).is_err() {
            log::error!("metrics: the loops' wakers were set twice");
        }
    }

    fn wake(&self, loops: impl Iterator<Item = usize>) {
        let Some(wakers) = self.wakers.get() else {
            return;
        };
        for waker in loops.filter_map(|i| wakers.get(i)) {
            if let Err(e) = waker.wake() {
                log::error!("metrics: cannot wake an event loop: {e}");
            }
        }
    }

    /// A scrape: asks every loop for its counts. Returns the generation to wait for.
    fn request(&self) -> u64 {
        let generation = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        self.wake(1..self.slots.len());
        generation
    }

    fn requested(&self) -> u64 {
        self.requested.load(Ordering::SeqCst)
    }

    fn slot(&self, index: usize) -> MutexGuard<'_, Snapshot> {
        // A loop that panicked while publishing left whole integers behind; they are
        // still worth showing.
        self.slots[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, index: usize, generation: u64, counts: LoopCounts) {
        let mut slot = self.slot(index);
        slot.generation = generation;
        slot.counts = counts;
        drop(slot);
        if index != 0 {
            self.wake(0..1);
        }
    }

    fn finish(&self, index: usize) {
        self.slot(index).finished = true;
        if index != 0 {
            self.wake(0..1);
        }
    }

    /// Every loop's counts added up, once each has answered `generation` (or ended).
    fn gathered(&self, generation: u64) -> Option<LoopCounts> {
        let mut total = LoopCounts::default();
        for index in 0..self.slots.len() {
            let slot = self.slot(index);
            if !slot.finished && slot.generation < generation {
                return None;
            }
            total.add(&slot.counts);
        }
        Some(total)
    }
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

    /// An event for the endpoint's listener or one of its clients.
    pub(crate) fn on_event(&mut self, token: Token, registry: &Registry, now: Instant) {
        if let Some(endpoint) = &mut self.endpoint {
            endpoint.on_event(token, registry, &self.hub, now);
        }
    }

    /// The loop's turn is over: publishes its counts if a scrape asked for them (`open`
    /// walks the slab, so it is called only then), and lets the endpoint answer, time out
    /// and drop its clients.
    pub(crate) fn end_of_turn(
        &mut self,
        now: Instant,
        registry: &Registry,
        stats: &Stats,
        open: impl FnOnce() -> OpenConnections,
    ) {
        let requested = self.hub.requested();
        if requested != self.published {
            let open = open();
            let mut stats = *stats;
            stats.messages += open.messages;
            let counts = LoopCounts {
                stats,
                paused: open.paused,
                turns: self.turns,
            };
            self.hub.publish(self.index, requested, counts);
            self.published = requested;
        }
        if let Some(endpoint) = &mut self.endpoint {
            endpoint.end_of_turn(&self.hub, registry, now);
        }
    }

    /// How long the turn took, this module's work included: the loop measures it anyway
    /// (its longest turn), so observing it costs no clock reading of its own.
    pub(crate) fn observe_turn(&mut self, turn: Duration) {
        self.turns.observe(turn);
    }

    /// When the endpoint next needs a turn if nothing happens: a client's deadline, or
    /// accepting again.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.endpoint.as_ref().and_then(Endpoint::next_deadline)
    }
}

impl Drop for LoopMetrics {
    /// A loop that has ended (shutdown, or an error) must not hold up a scrape.
    fn drop(&mut self) {
        self.hub.finish(self.index);
    }
}

/// A response's status. Declared in the order of [`Status::ALL`], so that `status as usize`
/// is its place there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    /// Beyond [`MAX_METRICS_CLIENTS`].
    ServiceUnavailable,
}

impl Status {
    const ALL: [Status; 5] = [
        Status::Ok,
        Status::BadRequest,
        Status::NotFound,
        Status::MethodNotAllowed,
        Status::ServiceUnavailable,
    ];

    fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::ServiceUnavailable => 503,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::ServiceUnavailable => "Service Unavailable",
        }
    }
}

/// Responses the endpoint sent, by status, in the order of [`Status::ALL`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Responses([u64; Status::ALL.len()]);

impl Responses {
    fn count(&mut self, status: Status) {
        self.0[status as usize] += 1;
    }
}

/// Everything one scrape shows: every loop's counts added up, and the gauges read when the
/// answer is written. Plain data, so the rendering is tested without a server.
#[derive(Clone, Copy, Debug, Default)]
struct Scrape {
    counts: LoopCounts,
    open_connections: usize,
    buffered: usize,
    buffer_budget: usize,
    loops: usize,
    started: Duration,
    responses: Responses,
}

/// The text of the Prometheus exposition format, one family at a time.
#[derive(Default)]
struct Text(String);

impl Text {
    /// A metric's `# HELP` and `# TYPE` lines, which come before its samples. (No help text
    /// here holds a backslash or a newline, the two characters the format would need
    /// escaped.)
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl Display) {
        let _ = writeln!(self.0, "{name}{labels} {value}");
    }

    /// A family with one sample and no labels.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, "", value);
    }
}

/// The body of a scrape, in the Prometheus text format, version 0.0.4.
fn render(scrape: &Scrape) -> String {
    let stats = &scrape.counts.stats;
    let mut text = Text::default();
    text.single(
        "evloop_connections_open",
        "gauge",
        "TCP connections open now, across every loop.",
        scrape.open_connections,
    );
    text.single(
        "evloop_connections_accepted_total",
        "counter",
        "TCP connections accepted (refused ones not included).",
        stats.connections,
    );
    let refused = "evloop_connections_refused_total";
    text.family(
        refused,
        "counter",
        "TCP connections refused: busy (at --max-connections), per_address (at \
         --max-connections-per-ip), proxy_header (--proxy-protocol: no valid header in time).",
    );
    text.sample(refused, "{reason=\"busy\"}", stats.refused);
    text.sample(refused, "{reason=\"per_address\"}", stats.refused_per_ip);
    text.sample(refused, "{reason=\"proxy_header\"}", stats.proxy_rejected);
    text.single(
        "evloop_tls_handshakes_failed_total",
        "counter",
        "TLS connections closed because their handshake failed (plaintext, garbage, a \
         client that gave up) or was not complete within --handshake-timeout; they are \
         counted as accepted too.",
        stats.tls_rejected,
    );
    text.single(
        "evloop_connections_paused",
        "gauge",
        "TCP connections not being read because their client does not take its replies: \
         unsent output passed the high-water mark (state Replying), or the connection \
         holds its share of --max-buffer-memory.",
        scrape.counts.paused,
    );
    text.single(
        "evloop_messages_total",
        "counter",
        "Messages answered: TCP lines (or reads, with --framing raw) and UDP datagrams.",
        stats.messages,
    );
    text.single(
        "evloop_received_bytes_total",
        "counter",
        "Bytes read from clients, TCP and UDP.",
        stats.bytes_in,
    );
    text.single(
        "evloop_sent_bytes_total",
        "counter",
        "Bytes written to clients, TCP and UDP.",
        stats.bytes_out,
    );
    text.single(
        "evloop_udp_datagrams_received_total",
        "counter",
        "UDP datagrams received.",
        stats.udp_datagrams,
    );
    text.single(
        "evloop_udp_replies_dropped_total",
        "counter",
        "UDP replies dropped: the send queue was full, or the send failed.",
        stats.udp_dropped,
    );
    text.single(
        "evloop_buffered_bytes",
        "gauge",
        "Bytes held in connection buffers now, across every loop, against \
         evloop_buffer_budget_bytes.",
        scrape.buffered,
    );
    text.single(
        "evloop_buffer_budget_bytes",
        "gauge",
        "What all connection buffers may hold together (--max-buffer-memory).",
        scrape.buffer_budget,
    );
    let turns = &scrape.counts.turns;
    let turn = "evloop_turn_duration_seconds";
    text.family(
        turn,
        "histogram",
        "Loop turns, from poll returning to the end of the turn, every loop's.",
    );
    let mut cumulative = 0;
    for (&(_, le), count) in TURN_BUCKETS.iter().zip(turns.counts) {
        cumulative += count;
        text.sample(
            "evloop_turn_duration_seconds_bucket",
            &format!("{{le=\"{le}\"}}"),
            cumulative,
        );
    }
    text.sample(
        "evloop_turn_duration_seconds_bucket",
        "{le=\"+Inf\"}",
        turns.count(),
    );
    text.sample(
        "evloop_turn_duration_seconds_sum",
        "",
        turns.sum_ns as f64 / 1e9,
    );
    text.sample("evloop_turn_duration_seconds_count", "", turns.count());
    text.single(
        "evloop_loops",
        "gauge",
        "Event loops serving (--threads).",
        scrape.loops,
    );
    text.single(
        "evloop_start_time_seconds",
        "gauge",
        "When the server started, in seconds since the Unix epoch.",
        format_args!("{:.3}", scrape.started.as_secs_f64()),
    );
    let responses = "evloop_metrics_responses_total";
    text.family(
        responses,
        "counter",
        "Responses of this metrics endpoint by status code (503: too many metrics clients \
         at once), this one included.",
    );
    for (status, count) in Status::ALL.iter().zip(scrape.responses.0) {
        text.sample(responses, &format!("{{code=\"{}\"}}", status.code()), count);
    }
    text.0
}

/// The content type of the text format, as Prometheus's own clients send it.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A whole HTTP response: the head and, unless `head_only` (a `HEAD` request), `body`.
/// Every response closes the connection.
fn response(status: Status, content_type: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n",
        status.code(),
        status.reason(),
        body.len()
    );
    if status == Status::MethodNotAllowed {
        head += "Allow: GET, HEAD\r\n";
    }
    head += "\r\n";
    let mut bytes = head.into_bytes();
    if !head_only {
        bytes.extend_from_slice(body);
    }
    bytes
}

/// A response that says only its status.
fn error_response(status: Status, head_only: bool) -> Vec<u8> {
    let body = format!("{} {}\n", status.code(), status.reason());
    response(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes(),
        head_only,
    )
}

/// What a request head asks for, as far as it has arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Parsed {
    /// Not a whole head yet.
    Incomplete,
    /// `GET /metrics`, or `HEAD` (`head_only`).
    Scrape { head_only: bool },
    /// Anything else, answered with only a status.
    Reject { status: Status, head_only: bool },
}

/// Reads a request head with `httparse`. Only the path matters (a query string is
/// ignored); a body, if any, is never read, and is dropped with whatever else the client
/// sends after its head.
fn parse(head: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Partial) => Parsed::Incomplete,
        Err(_) => Parsed::Reject {
            status: Status::BadRequest,
            head_only: false,
        },
        Ok(httparse::Status::Complete(_)) => {
            let head_only = request.method == Some("HEAD");
            let path = request.path.unwrap_or_default();
            let path = path.split_once('?').map_or(path, |(path, _query)| path);
            let reject = |status| Parsed::Reject { status, head_only };
            if path != "/metrics" {
                reject(Status::NotFound)
            } else if matches!(request.method, Some("GET" | "HEAD")) {
                Parsed::Scrape { head_only }
            } else {
                reject(Status::MethodNotAllowed)
            }
        }
    }
}

/// Where a metrics client is in its life. It only ever moves down this list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientState {
    /// Reading the request head, until it is whole, too large or not HTTP.
    Reading,
    /// A scrape waiting for every loop's counts of this generation. Anything more the
    /// client sends waits in the socket.
    Gathering { generation: u64, head_only: bool },
    /// Writing the response.
    Writing,
    /// The response is written and our side shut down: input is read and dropped until the
    /// client's EOF, because closing a socket with unread input makes the kernel send a
    /// reset, which can destroy the response before the client reads it.
    Lingering,
    /// Finished; dropped (and so closed) at the end of the turn.
    Closed,
}

/// What a client's request, once read, asks the endpoint to do.
enum Outcome {
    Wait,
    Scrape { head_only: bool },
    Reject { status: Status, head_only: bool },
}

/// One metrics client.
struct Client {
    stream: TcpStream,
    /// Tells this client's deadline apart from that of an earlier one in the same place.
    serial: u64,
    state: ClientState,
    /// The request head as read so far ([`MAX_REQUEST_HEAD`] bytes); after it, the space
    /// input is read into to be dropped.
    head: Vec<u8>,
    filled: usize,
    response: Vec<u8>,
    sent: usize,
    discarded: usize,
}

impl Client {
    fn new(stream: TcpStream, serial: u64) -> Client {
        Client {
            stream,
            serial,
            state: ClientState::Reading,
            head: vec![0; MAX_REQUEST_HEAD],
            filled: 0,
            response: Vec::new(),
            sent: 0,
            discarded: 0,
        }
    }

    /// Readiness of either kind: each state does the one thing it waits for, which copes
    /// with a spurious event as with a real one.
    fn on_event(&mut self) -> Outcome {
        match self.state {
            ClientState::Reading => return self.read_request(),
            ClientState::Writing => self.write(),
            ClientState::Lingering => self.discard_input(),
            ClientState::Gathering { .. } | ClientState::Closed => {}
        }
        Outcome::Wait
    }

    /// Reads until the head is whole, too large, not HTTP, or the socket would block.
    fn read_request(&mut self) -> Outcome {
        loop {
            if self.filled == self.head.len() {
                log::debug!("metrics client: request head over {MAX_REQUEST_HEAD} bytes");
                return Outcome::Reject {
                    status: Status::BadRequest,
                    head_only: false,
                };
            }
            match self.stream.read(&mut self.head[self.filled..]) {
                Ok(0) => {
                    // Gone before a whole request: there is no one to answer.
                    self.state = ClientState::Closed;
                    return Outcome::Wait;
                }
                Ok(n) => {
                    self.filled += n;
                    match parse(&self.head[..self.filled]) {
                        Parsed::Incomplete => continue,
                        Parsed::Scrape { head_only } => return Outcome::Scrape { head_only },
                        Parsed::Reject { status, head_only } => {
                            return Outcome::Reject { status, head_only }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Outcome::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.fail("read", e);
                    return Outcome::Wait;
                }
            }
        }
    }

    /// Starts writing `response`, the only one this connection gets.
    fn respond(&mut self, response: Vec<u8>) {
        self.response = response;
        self.sent = 0;
        self.state = ClientState::Writing;
        self.write();
    }

    /// Writes what is left of the response; once it is all written, shuts down our side
    /// and lingers.
    fn write(&mut self) {
        while self.sent < self.response.len() {
            match self.stream.write(&self.response[self.sent..]) {
                Ok(0) => return self.fail("write", io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.fail("write", e),
            }
        }
        self.response = Vec::new();
        if let Err(e) = self.stream.shutdown(Shutdown::Write) {
            return self.fail("shutdown", e);
        }
        self.state = ClientState::Lingering;
        // Input may have waited since the head was read, with no new edge to announce it.
        self.discard_input();
    }

    /// Lingering: reads and drops input until the client's EOF, which ends it cleanly.
    fn discard_input(&mut self) {
        loop {
            match self.stream.read(&mut self.head) {
                Ok(0) => break,
                Ok(n) => {
                    self.discarded += n;
                    if self.discarded > LINGER_DISCARD_LIMIT {
                        log::debug!("metrics client: still sending after its response");
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return self.fail("read", e),
            }
        }
        self.state = ClientState::Closed;
    }

    fn fail(&mut self, what: &str, e: io::Error) {
        log::debug!("metrics client: {what} failed, closing: {e}");
        self.state = ClientState::Closed;
    }
}

/// The metrics endpoint, in the loop that serves it: the listener and a fixed number of
/// places for clients, each with its own token.
struct Endpoint {
    /// `None` once it stopped listening.
    listener: Option<TcpListener>,
    listener_token: Token,
    /// The token of place 0; place `i` has `first_client + i`.
    first_client: usize,
    clients: [Option<Client>; MAX_METRICS_CLIENTS],
    next_serial: u64,
    /// One deadline per client, from its accept: (time, place, serial).
    deadlines: Timers,
    /// Accept again at the end of the first turn at or after this: the accept budget ran
    /// out (then it is now), or accept failed for want of resources.
    accept_at: Option<Instant>,
    responses: Responses,
}

impl Endpoint {
    fn new(listener: TcpListener) -> Endpoint {
        Endpoint {
            listener: Some(listener),
            listener_token: Token(0),
            first_client: 0,
            clients: std::array::from_fn(|_| None),
            next_serial: 0,
            deadlines: Timers::new(),
            accept_at: None,
            responses: Responses::default(),
        }
    }

    fn register(
        &mut self,
        registry: &Registry,
        listener: Token,
        first_client: usize,
    ) -> io::Result<()> {
        self.listener_token = listener;
        self.first_client = first_client;
        match &mut self.listener {
            Some(socket) => registry.register(socket, listener, Interest::READABLE),
            None => Ok(()),
        }
    }

    fn on_event(&mut self, token: Token, registry: &Registry, hub: &Hub, now: Instant) {
        if token == self.listener_token {
            return self.accept(registry, now);
        }
        let Some(place) = token
            .0
            .checked_sub(self.first_client)
            .filter(|&place| place < MAX_METRICS_CLIENTS)
        else {
            return;
        };
        let Some(client) = &mut self.clients[place] else {
            return;
        };
        match client.on_event() {
            Outcome::Wait => {}
            Outcome::Scrape { head_only } => {
                client.state = ClientState::Gathering {
                    generation: hub.request(),
                    head_only,
                };
            }
            Outcome::Reject { status, head_only } => {
                client.respond(error_response(status, head_only));
                self.responses.count(status);
            }
        }
    }

    /// Accepts until WouldBlock or the budget.
    fn accept(&mut self, registry: &Registry, now: Instant) {
        self.accept_at = None;
        for _ in 0..ACCEPT_PER_TURN {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, registry, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    // Out of descriptors, most likely: retrying at once would spin. The main
                    // listener's own accept logs the episode.
                    log::debug!("metrics accept failed: {e}; retrying in {ACCEPT_BACKOFF:?}");
                    self.accept_at = Some(now + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
        // Stopped for the budget: more may wait, and no new edge will say so.
        self.accept_at = Some(now);
    }

    fn admit(
        &mut self,
        mut stream: TcpStream,
        peer: SocketAddr,
        registry: &Registry,
        now: Instant,
    ) {
        let Some(place) = self.clients.iter().position(Option::is_none) else {
            let refusal = error_response(Status::ServiceUnavailable, false);
            net::refuse(socket2::SockRef::from(&stream), &refusal);
            self.responses.count(Status::ServiceUnavailable);
            log::debug!("metrics client {peer} refused: {MAX_METRICS_CLIENTS} already served");
            return;
        };
        let token = Token(self.first_client + place);
        // Both interests, once: a metrics client sees a handful of events in its life, and
        // an event its state has no use for costs one look. (The main connections see
        // millions, so they register what their state needs, and only when it changes.)
        if let Err(e) =
            registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        {
            log::debug!("cannot register metrics client {peer}: {e}");
            return;
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        self.deadlines.schedule(Timer {
            at: now + METRICS_DEADLINE,
            key: place,
            serial,
        });
        self.clients[place] = Some(Client::new(stream, serial));
        log::debug!("metrics client {peer} as {token:?}");
    }

    fn end_of_turn(&mut self, hub: &Hub, registry: &Registry, now: Instant) {
        if self.accept_at.is_some_and(|at| at <= now) {
            self.accept(registry, now);
        }
        self.answer_scrapes(hub);
        while let Some(timer) = self.deadlines.pop_due(now) {
            if let Some(client) = &mut self.clients[timer.key] {
                if client.serial == timer.serial && client.state != ClientState::Closed {
                    log::debug!("metrics client: deadline passed while {:?}", client.state);
                    client.state = ClientState::Closed;
                }
            }
        }
        for place in &mut self.clients {
            if place
                .as_ref()
                .is_some_and(|client| client.state == ClientState::Closed)
            {
                // Dropping the stream closes it, which also takes it out of the poll.
                *place = None;
            }
        }
        // Entries of clients that ended early stay until due; prune them if churn piles
        // them up.
        if self.deadlines.len() > 2 * MAX_METRICS_CLIENTS + 64 {
            let clients = &self.clients;
            self.deadlines.retain(|timer| {
                clients[timer.key]
                    .as_ref()
                    .is_some_and(|client| client.serial == timer.serial)
            });
        }
    }

    /// Answers each waiting scrape whose counts every loop has published.
    fn answer_scrapes(&mut self, hub: &Hub) {
        for place in 0..MAX_METRICS_CLIENTS {
            let Some(ClientState::Gathering {
                generation,
                head_only,
            }) = self.clients[place].as_ref().map(|client| client.state)
            else {
                continue;
            };
            let Some(counts) = hub.gathered(generation) else {
                continue;
            };
            self.responses.count(Status::Ok);
            let scrape = Scrape {
                counts,
                open_connections: hub.open_connections.load(Ordering::Relaxed),
                buffered: hub.budget.held(),
                buffer_budget: hub.buffer_budget,
                loops: hub.slots.len(),
                started: hub.started,
                responses: self.responses,
            };
            let body = render(&scrape);
            if let Some(client) = &mut self.clients[place] {
                client.respond(response(
                    Status::Ok,
                    TEXT_FORMAT,
                    body.as_bytes(),
                    head_only,
                ));
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        [self.deadlines.next(), self.accept_at]
            .into_iter()
            .flatten()
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_micros(n * 1000)
    }

    #[test]
    fn a_turn_falls_in_the_first_bucket_whose_bound_it_does_not_exceed() {
        let mut turns = TurnHistogram::default();
        turns.observe(Duration::ZERO);
        turns.observe(Duration::from_micros(50)); // on the bound: still the first bucket
        turns.observe(Duration::from_nanos(50_001));
        turns.observe(ms(7));
        turns.observe(Duration::from_secs(1));
        turns.observe(Duration::from_secs(3)); // beyond every bound
        let mut expected = [0; TURN_BUCKETS.len() + 1];
        expected[0] = 2;
        expected[1] = 1;
        expected[7] = 1; // 10 ms
        expected[13] = 1; // 1 s
        expected[14] = 1; // +Inf
        assert_eq!(turns.counts, expected);
        assert_eq!(turns.count(), 6);
        assert_eq!(turns.sum_ns, 4_007_100_001);
    }

    #[test]
    fn the_bucket_bounds_rise_and_their_labels_say_the_same_seconds() {
        for pair in TURN_BUCKETS.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{pair:?}");
        }
        for (ns, le) in TURN_BUCKETS {
            let seconds: f64 = le.parse().unwrap();
            assert_eq!((seconds * 1e9).round() as u64, ns, "{le}");
        }
    }

    fn scrape() -> Scrape {
        let mut turns = TurnHistogram::default();
        for micros in [10, 60, 60, 2_000, 2_000_000] {
            turns.observe(Duration::from_micros(micros));
        }
        let mut responses = Responses::default();
        responses.count(Status::Ok);
        responses.count(Status::NotFound);
        Scrape {
            counts: LoopCounts {
                stats: Stats {
                    connections: 12,
                    refused: 3,
                    refused_per_ip: 4,
                    proxy_rejected: 6,
                    messages: 1000,
                    bytes_in: 17_000,
                    bytes_out: 25_108,
                    udp_dropped: 5,
                    udp_datagrams: 400,
                    ..Stats::default()
                },
                paused: 2,
                turns,
            },
            open_connections: 7,
            buffered: 4096,
            buffer_budget: 256 << 20,
            loops: 2,
            started: Duration::from_millis(1_764_600_000_123),
            responses,
        }
    }

    /// The samples of `text`: (name with labels, value).
    fn samples(text: &str) -> Vec<(&str, &str)> {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| {
                line.rsplit_once(' ')
                    .expect("a sample is a name and a value")
            })
            .collect()
    }

    fn value<'a>(text: &'a str, series: &str) -> &'a str {
        samples(text)
            .into_iter()
            .find(|(name, _)| *name == series)
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .1
    }

    #[test]
    fn every_count_is_shown_under_its_name() {
        let text = render(&scrape());
        for (series, expected) in [
            ("evloop_connections_open", "7"),
            ("evloop_connections_accepted_total", "12"),
            ("evloop_connections_refused_total{reason=\"busy\"}", "3"),
            (
                "evloop_connections_refused_total{reason=\"per_address\"}",
                "4",
            ),
            (
                "evloop_connections_refused_total{reason=\"proxy_header\"}",
                "6",
            ),
            ("evloop_connections_paused", "2"),
            ("evloop_messages_total", "1000"),
            ("evloop_received_bytes_total", "17000"),
            ("evloop_sent_bytes_total", "25108"),
            ("evloop_udp_datagrams_received_total", "400"),
            ("evloop_udp_replies_dropped_total", "5"),
            ("evloop_buffered_bytes", "4096"),
            ("evloop_buffer_budget_bytes", "268435456"),
            ("evloop_loops", "2"),
            ("evloop_start_time_seconds", "1764600000.123"),
            ("evloop_metrics_responses_total{code=\"200\"}", "1"),
            ("evloop_metrics_responses_total{code=\"404\"}", "1"),
            ("evloop_metrics_responses_total{code=\"503\"}", "0"),
        ] {
            assert_eq!(value(&text, series), expected, "{series}");
        }
    }

    #[test]
    fn the_histogram_is_cumulative_and_ends_in_inf_equal_to_its_count() {
        let text = render(&scrape());
        let bucket = |le: &str| {
            value(
                &text,
                &format!("evloop_turn_duration_seconds_bucket{{le=\"{le}\"}}"),
            )
            .parse::<u64>()
            .unwrap()
        };
        assert_eq!(bucket("0.00005"), 1);
        assert_eq!(bucket("0.0001"), 3);
        assert_eq!(bucket("0.0025"), 4);
        assert_eq!(bucket("1"), 4);
        assert_eq!(bucket("+Inf"), 5);
        assert_eq!(value(&text, "evloop_turn_duration_seconds_count"), "5");
        assert_eq!(value(&text, "evloop_turn_duration_seconds_sum"), "2.00213");
        let buckets: Vec<u64> = samples(&text)
            .into_iter()
            .filter(|(name, _)| name.starts_with("evloop_turn_duration_seconds_bucket"))
            .map(|(_, v)| v.parse().unwrap())
            .collect();
        assert_eq!(buckets.len(), TURN_BUCKETS.len() + 1);
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    }

    #[test]
    fn every_sample_follows_the_help_and_type_of_its_family() {
        let text = render(&scrape());
        let mut family: Option<(&str, &str)> = None;
        let mut helped = None;
        let mut families = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                assert!(!help.is_empty() && !help.contains('\\'), "{line}");
                helped = Some(name);
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(helped, Some(name), "TYPE right after its HELP: {line}");
                assert_eq!(name.ends_with("_total"), kind == "counter", "{line}");
                assert!(name.starts_with("evloop_"), "{line}");
                family = Some((name, kind));
                families += 1;
            } else {
                let (name, kind) = family.expect("a sample after a TYPE line");
                let series = line.split([' ', '{']).next().unwrap();
                let allowed: &[&str] = if kind == "histogram" {
                    &["_bucket", "_sum", "_count"]
                } else {
                    &[""]
                };
                assert!(
                    allowed
                        .iter()
                        .any(|suffix| series == format!("{name}{suffix}")),
                    "{line} is not of {name}"
                );
            }
        }
        assert_eq!(families, 16);
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn the_response_stays_small_whatever_the_counts() {
        let mut huge = scrape();
        huge.counts.stats = Stats {
            connections: u64::MAX,
            refused: u64::MAX,
            refused_per_ip: u64::MAX,
            proxy_rejected: u64::MAX,
            messages: u64::MAX,
            bytes_in: u64::MAX,
            bytes_out: u64::MAX,
            udp_dropped: u64::MAX,
            udp_datagrams: u64::MAX,
            ..Stats::default()
        };
        huge.counts.turns.counts = [u64::MAX / 16; TURN_BUCKETS.len() + 1];
        huge.counts.turns.sum_ns = u64::MAX;
        huge.responses = Responses([u64::MAX; Status::ALL.len()]);
        let body = render(&huge);
        assert!(body.len() < 8 * 1024, "{} bytes", body.len());
    }

    #[test]
    fn requests_are_read_with_httparse_and_only_get_or_head_of_metrics_is_a_scrape() {
        let reject = |status, head_only| Parsed::Reject { status, head_only };
        for (request, expected) in [
            (
                &b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"[..],
                Parsed::Scrape { head_only: false },
            ),
            (
                b"HEAD /metrics HTTP/1.0\r\n\r\n",
                Parsed::Scrape { head_only: true },
            ),
            (
                b"GET /metrics?name[]=x HTTP/1.1\r\n\r\n",
                Parsed::Scrape { head_only: false },
            ),
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\n", Parsed::Incomplete),
            (b"GE", Parsed::Incomplete),
            (b"GET / HTTP/1.1\r\n\r\n", reject(Status::NotFound, false)),
            (
                b"HEAD /metricsx HTTP/1.1\r\n\r\n",
                reject(Status::NotFound, true),
            ),
            (
                b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
                reject(Status::MethodNotAllowed, false),
            ),
            (b"\x16\x03\x01\x02\x00", reject(Status::BadRequest, false)),
            (b"hello\r\n\r\n", reject(Status::BadRequest, false)),
        ] {
            assert_eq!(
                parse(request),
                expected,
                "{:?}",
                String::from_utf8_lossy(request)
            );
        }
        let many = format!(
            "GET /metrics HTTP/1.1\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(parse(many.as_bytes()), reject(Status::BadRequest, false));
    }

    #[test]
    fn a_response_says_its_length_and_closes_and_head_leaves_the_body_out() {
        let get = response(Status::Ok, TEXT_FORMAT, b"abc\n", false);
        let get = String::from_utf8(get).unwrap();
        assert!(get.starts_with("HTTP/1.1 200 OK\r\n"), "{get}");
        assert!(
            get.contains("\r\nContent-Type: text/plain; version=0.0.4"),
            "{get}"
        );
        assert!(get.contains("\r\nContent-Length: 4\r\n"), "{get}");
        assert!(get.contains("\r\nConnection: close\r\n"), "{get}");
        assert!(get.ends_with("\r\n\r\nabc\n"), "{get}");
        let head = response(Status::Ok, TEXT_FORMAT, b"abc\n", true);
        assert!(head.ends_with(b"Content-Length: 4\r\nConnection: close\r\n\r\n"));
        let not_allowed =
            String::from_utf8(error_response(Status::MethodNotAllowed, false)).unwrap();
        assert!(not_allowed.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(not_allowed.contains("\r\nAllow: GET, HEAD\r\n"));
    }

    fn counts(messages: u64) -> LoopCounts {
        LoopCounts {
            stats: Stats {
                messages,
                ..Stats::default()
            },
            ..LoopCounts::default()
        }
    }

    #[test]
    fn a_scrape_is_answered_once_every_loop_has_published_or_ended() {
        let hub = Hub::new(
            3,
            Arc::new(AtomicUsize::new(0)),
            Arc::new(MemoryBudget::new(1)),
            1,
        );
        let generation = hub.request();
        assert_eq!(generation, 1);
        assert_eq!(hub.gathered(generation), None, "nobody has published");
        hub.publish(0, generation, counts(10));
        hub.publish(1, generation, counts(20));
        assert_eq!(hub.gathered(generation), None, "loop 2 has not");
        hub.finish(2);
        assert_eq!(hub.gathered(generation).map(|c| c.stats.messages), Some(30));
        // A later scrape waits for counts at least as new as itself.
        let next = hub.request();
        assert_eq!(hub.gathered(next), None);
        hub.publish(1, next, counts(25));
        assert_eq!(hub.gathered(next), None);
        hub.publish(0, next, counts(11));
        assert_eq!(hub.gathered(next).map(|c| c.stats.messages), Some(36));
    }
}
