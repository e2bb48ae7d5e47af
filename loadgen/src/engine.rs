//! One engine: a `mio::Poll` driving many clients ([`Engine`]), the state the clients share
//! as they handle their events ([`Shared`]), and what it counts ([`Failure`], [`Tally`]). It
//! decides when clients are opened, when timeouts are swept and when the load ends, and it
//! is the one place a failure is counted and a client closed. It never reads or writes a
//! socket itself: what a client does with its socket is in `client.rs`, and the bytes it
//! sends and expects are in `script.rs`. An engine runs on one thread and shares nothing
//! with the others while it runs; adding up their counts is the driver's job.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::{Events, Poll, Registry, Token};

use super::causes::Causes;
use super::client::Client;
use super::options::Options;
use super::report::Progress;
use super::script::Script;

/// How often timeouts are checked and progress reported. Checking every client on every
/// wakeup would cost O(clients) per reply and make the load generator the bottleneck, so
/// a request is declared timed out up to this much after `timeout`.
pub(super) const SWEEP_INTERVAL: Duration = Duration::from_millis(20);

/// Bytes read per `read` call. One buffer is shared by every client: each read's bytes are
/// checked (and the partial reply kept) before the next client reads.
const READ_BUFFER: usize = 64 * 1024;

/// Clients connecting or awaiting their greeting at any one time. Connecting thousands at
/// once overflows the accept queue of a server with std's and mio's default backlog of 128:
/// the kernel then drops the handshake's last ACK, the client believes it is connected, and
/// the server only learns of it after a SYN-ACK retransmit one to three seconds later, which
/// loadgen would report as greeting timeouts. Staying at the smallest common backlog keeps
/// setup quick against any server; the load itself still runs on every connection at once.
pub const MAX_SETUPS_IN_FLIGHT: usize = 128;

/// Events taken per `poll` call.
const EVENTS_CAPACITY: usize = 1024;

/// The poll loop and the clients it drives.
pub(super) struct Engine<'a> {
    poll: Poll,
    events: Events,
    /// Indexed by token: client `i` is registered as `Token(i)`.
    clients: Vec<Client>,
    pub(super) shared: Shared<'a>,
    /// Clients not closed.
    pub(super) live: usize,
    /// Open clients [`MAX_SETUPS_IN_FLIGHT`] at a time (over all engines). Turned off by the
    /// first failed setup: a server that is not keeping up gains nothing from the batching,
    /// and a silent one would otherwise make the user wait `timeout` once per batch.
    batch_setups: bool,
    /// Tokens of the events of the last poll, kept to reuse its allocation.
    ready: Vec<usize>,
}

impl<'a> Engine<'a> {
    pub(super) fn new(options: &'a Options) -> io::Result<Engine<'a>> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        Ok(Engine {
            poll,
            events: Events::with_capacity(EVENTS_CAPACITY),
            clients: Vec::with_capacity(options.connections),
            shared: Shared {
                options,
                registry,
                script: Script::new(options),
                read_buffer: vec![0; READ_BUFFER],
                tally: Tally::new()?,
                sending: false,
                issued: 0,
                outstanding: 0,
                setting_up: 0,
                last_reply: Instant::now(),
                timed_out_since_reply: false,
            },
            live: 0,
            batch_setups: true,
            ready: Vec::with_capacity(EVENTS_CAPACITY),
        })
    }

    /// Opens clients until all are open or, while batching, this engine's share of
    /// [`MAX_SETUPS_IN_FLIGHT`] are being set up.
    fn open_more(&mut self) {
        let options = self.shared.options;
        // The engines set up side by side, so they share the bound between them.
        let max_setups = (MAX_SETUPS_IN_FLIGHT / options.threads).max(1);
        while self.clients.len() < options.connections
            && (!self.batch_setups || self.shared.setting_up < max_setups)
        {
            let id = self.clients.len();
            match Client::open(options, Token(id), self.poll.registry()) {
                Ok(client) => {
                    self.live += 1;
                    if client.is_setting_up() {
                        self.shared.setting_up += 1;
                    }
                    self.clients.push(client);
                }
                Err(e) => {
                    // Out of descriptors or ports, typically: the same story for every
                    // client after this one, so say it once, loudly.
                    if self.shared.tally.connection_errors == 0 {
                        log::warn!("client {id}: cannot open a socket: {e}");
                    }
                    self.shared.count(id, &Failure::Connection(e));
                    self.clients.push(Client::Closed);
                }
            }
        }
    }

    /// Opens every client and waits until each has connected and been greeted, or failed
    /// to within `timeout` of its own connect. Takes at most about twice `timeout`: one for
    /// the batch in which a client first fails, one for everyone opened after that.
    pub(super) fn set_up(&mut self) -> io::Result<()> {
        let connections = self.shared.options.connections;
        let mut next_sweep = Instant::now() + SWEEP_INTERVAL;
        loop {
            self.open_more();
            if self.shared.setting_up == 0 && self.clients.len() == connections {
                return Ok(());
            }
            self.poll_once(next_sweep)?;
            let now = Instant::now();
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP_INTERVAL;
            }
        }
    }

    /// Sends and checks until the duration is over, the message count is settled, or no
    /// client is left.
    pub(super) fn load(
        &mut self,
        started: Instant,
        progress: &mut impl FnMut(&Progress),
    ) -> io::Result<()> {
        let options = self.shared.options;
        let end = options.duration.map(|duration| started + duration);
        self.shared.sending = true;
        self.shared.last_reply = started;
        self.shared.timed_out_since_reply = false;
        for id in 0..self.clients.len() {
            let result = self.clients[id].start(id, &mut self.shared, Instant::now());
            self.settle(id, result);
        }
        let mut next_sweep = started + SWEEP_INTERVAL;
        loop {
            let now = Instant::now();
            let all_settled = options
                .messages
                .is_some_and(|limit| self.shared.issued >= limit && self.shared.outstanding == 0);
            if self.live == 0 || all_settled || end.is_some_and(|end| now >= end) {
                break;
            }
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP_INTERVAL;
                if self.shared.server_stopped_answering(now) {
                    log::warn!(
                        "no reply for {:?} and requests timing out: ending the run",
                        options.timeout
                    );
                    break;
                }
                progress(&Progress {
                    elapsed: now - started,
                    messages: self.shared.tally.messages,
                    errors: self.shared.tally.errors(),
                    connections_opened: self.shared.tally.connections_opened,
                });
                continue;
            }
            let wake = end.map_or(next_sweep, |end| end.min(next_sweep));
            self.poll_once(wake)?;
        }
        self.shared.sending = false;
        // What the end of the load abandons: not errors, but a run whose requests were all
        // still waiting must not read as a clean one.
        let now = Instant::now();
        for client in &self.clients {
            self.shared.tally.unanswered += client.in_flight() as u64;
            if let Some(sent_at) = client.oldest_in_flight() {
                let waited = now.saturating_duration_since(sent_at);
                let tally = &mut self.shared.tally;
                tally.longest_unanswered = tally.longest_unanswered.max(waited);
            }
        }
        Ok(())
    }

    /// Waits for events until `wake` at the latest, and lets each client handle its own.
    fn poll_once(&mut self, wake: Instant) -> io::Result<()> {
        let timeout = wake.saturating_duration_since(Instant::now());
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        // Tokens are copied out first: handling an event needs `self` mutably.
        self.ready.clear();
        self.ready
            .extend(self.events.iter().map(|event| event.token().0));
        for index in 0..self.ready.len() {
            let id = self.ready[index];
            // The clock is read per event, not per batch, so a reply's latency does not
            // depend on how many other events came back with it.
            let now = Instant::now();
            if let Some(client) = self.clients.get_mut(id) {
                let result = client.on_event(id, &mut self.shared, now);
                self.settle(id, result);
            }
        }
        Ok(())
    }

    /// Checks every client's timeouts.
    fn sweep(&mut self, now: Instant) {
        for id in 0..self.clients.len() {
            let result = self.clients[id].on_tick(id, &mut self.shared, now);
            self.settle(id, result);
        }
    }

    /// The one place a failure is counted and a client closed.
    fn settle(&mut self, id: usize, result: Result<(), Failure>) {
        let Err(failure) = result else {
            return;
        };
        log::debug!("client {id}: {failure}");
        self.shared.count(id, &failure);
        let mut client = std::mem::replace(&mut self.clients[id], Client::Closed);
        if client.is_setting_up() {
            self.shared.setting_up -= 1;
            self.batch_setups = false;
        }
        // Requests queued behind the failure are abandoned with the connection.
        self.shared.outstanding -= client.in_flight();
        client.deregister(self.poll.registry());
        self.live -= 1;
    }
}

/// State every client shares, passed to each one as it handles an event.
pub(super) struct Shared<'a> {
    pub(super) options: &'a Options,
    /// For clients that change their interest as they go.
    pub(super) registry: Registry,
    pub(super) script: Script,
    pub(super) read_buffer: Vec<u8>,
    pub(super) tally: Tally,
    /// False while clients are setting up, and again once the load is over.
    sending: bool,
    /// Requests sent so far, checked against `options.messages`.
    issued: u64,
    /// Requests in flight over all clients.
    pub(super) outstanding: usize,
    /// Clients still connecting or waiting for their greeting.
    pub(super) setting_up: usize,
    /// When the last correct reply arrived (or the load began).
    last_reply: Instant,
    /// A request has timed out since `last_reply`.
    timed_out_since_reply: bool,
}

impl Shared<'_> {
    pub(super) fn may_send(&self) -> bool {
        self.sending
            && self
                .options
                .messages
                .is_none_or(|limit| self.issued < limit)
    }

    /// Counts client `id`'s failure, under its cause.
    pub(super) fn count(&mut self, id: usize, failure: &Failure) {
        if matches!(failure, Failure::Timeout(_)) {
            self.timed_out_since_reply = true;
        }
        self.tally.count(id, failure);
    }

    /// The server has stopped answering: requests have timed out and nothing at all has
    /// come back for a whole `timeout`. TCP clients would all fail and end the run anyway,
    /// but UDP sockets would keep sending into the void, one timeout per request.
    fn server_stopped_answering(&self, now: Instant) -> bool {
        self.timed_out_since_reply
            && now.saturating_duration_since(self.last_reply) >= self.options.timeout
    }

    pub(super) fn issue(&mut self, in_flight: &mut VecDeque<InFlight>, seq: u64, now: Instant) {
        in_flight.push_back(InFlight { seq, sent_at: now });
        self.issued += 1;
        self.outstanding += 1;
    }

    pub(super) fn answered(&mut self, request: InFlight, now: Instant) {
        self.last_reply = now;
        self.timed_out_since_reply = false;
        self.outstanding -= 1;
        self.tally.messages += 1;
        self.tally.record_latency(request, now);
    }
}

/// A request sent and not yet answered.
#[derive(Clone, Copy, Debug)]
pub(super) struct InFlight {
    pub(super) seq: u64,
    pub(super) sent_at: Instant,
}

/// Why a client failed. The engine counts it and closes the client.
#[derive(Debug)]
pub(super) enum Failure {
    /// Bytes that differ from the expected ones: what was expected, and what came.
    Mismatch(String),
    /// Nothing (or not all of it) came back within `timeout`: the name of what was awaited
    /// (`reply`, `greeting`, ...).
    Timeout(&'static str),
    /// The socket failed: refused, reset, closed early, not connected in time, or its TLS
    /// connection failed.
    Connection(io::Error),
}

impl Failure {
    /// A mismatch: the start of what was `expected` and of what was `got`, escaped.
    pub(super) fn mismatch(expected: &[u8], got: &[u8]) -> Failure {
        // Enough to tell one line from another; a reply may be megabytes long.
        const SHOWN: usize = 60;
        let shown = |bytes: &[u8]| bytes[..bytes.len().min(SHOWN)].escape_ascii().to_string();
        Failure::Mismatch(format!(
            "expected \"{}\", got \"{}\"",
            shown(expected),
            shown(got)
        ))
    }

    /// The cause it is counted under: the same text for every failure of its kind, without
    /// the details (which client, which names) its message gives.
    fn cause(&self) -> String {
        match self {
            Failure::Mismatch(_) => "wrong reply".into(),
            Failure::Timeout(what) => format!("no {what} within --timeout"),
            Failure::Connection(e) => match super::tls::error_name(e) {
                Some(name) => format!("TLS {name}"),
                None => e.to_string(),
            },
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Mismatch(detail) => write!(f, "wrong reply: {detail}"),
            Failure::Timeout(what) => write!(f, "no {what} within --timeout"),
            Failure::Connection(e) => write!(f, "connection error: {e}"),
        }
    }
}

/// The largest latency the histogram tells apart, in microseconds: an hour, far beyond any
/// sensible `--timeout`. Larger values are recorded as this.
const LATENCY_CEILING_US: u64 = 3_600_000_000;

/// Significant digits the histogram keeps: 0.1% resolution at any latency, in ~200 KB.
const LATENCY_SIGFIG: u8 = 3;

/// The numbers that end up in the [`Report`](super::Report).
#[derive(Clone, Debug)]
pub(super) struct Tally {
    pub(super) messages: u64,
    pub(super) mismatches: u64,
    pub(super) timeouts: u64,
    pub(super) connection_errors: u64,
    /// TCP connections set up (connected and greeted), the first of each client included.
    pub(super) connections_opened: u64,
    /// `--tls`: handshakes completed during the load phase (the first connections' are
    /// part of the setup, before the clock starts).
    pub(super) handshakes: u64,
    pub(super) latency: Histogram<u64>,
    /// Every error above, by cause.
    pub(super) causes: Causes,
    /// Requests still in flight when the load ended, and how long the oldest had waited.
    pub(super) unanswered: u64,
    pub(super) longest_unanswered: Duration,
}

impl Tally {
    pub(super) fn new() -> io::Result<Tally> {
        // Fixed bounds rather than an auto-resizing histogram: hdrhistogram's
        // `saturating_record` never resizes, and clamps anything above the bounds it was
        // created with (for `Histogram::new`, about 2 ms) to a meaningless value.
        let latency = Histogram::new_with_bounds(1, LATENCY_CEILING_US, LATENCY_SIGFIG)
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Tally {
            messages: 0,
            mismatches: 0,
            timeouts: 0,
            connection_errors: 0,
            connections_opened: 0,
            handshakes: 0,
            latency,
            causes: Causes::default(),
            unanswered: 0,
            longest_unanswered: Duration::ZERO,
        })
    }

    fn count(&mut self, id: usize, failure: &Failure) {
        match failure {
            Failure::Mismatch(_) => self.mismatches += 1,
            Failure::Timeout(_) => self.timeouts += 1,
            Failure::Connection(_) => self.connection_errors += 1,
        }
        self.causes
            .count(&failure.cause(), || format!("client {id}: {failure}"));
    }

    fn errors(&self) -> u64 {
        self.mismatches + self.timeouts + self.connection_errors
    }

    /// Adds another engine's counts and latencies to these.
    pub(super) fn add(&mut self, other: &Tally) -> io::Result<()> {
        self.messages += other.messages;
        self.mismatches += other.mismatches;
        self.timeouts += other.timeouts;
        self.connection_errors += other.connection_errors;
        self.connections_opened += other.connections_opened;
        self.handshakes += other.handshakes;
        self.causes.add(&other.causes);
        self.unanswered += other.unanswered;
        self.longest_unanswered = self.longest_unanswered.max(other.longest_unanswered);
        self.latency
            .add(&other.latency)
            .map_err(|e| io::Error::other(format!("{e:?}")))
    }

    fn record_latency(&mut self, request: InFlight, answered_at: Instant) {
        let micros = answered_at
            .saturating_duration_since(request.sent_at)
            .as_micros();
        self.latency
            .saturating_record(u64::try_from(micros).unwrap_or(u64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_keep_their_value_from_microseconds_to_minutes() {
        let mut tally = Tally::new().unwrap();
        let sent_at = Instant::now();
        for micros in [3, 2_500, 150_000, 90_000_000] {
            let request = InFlight { seq: 0, sent_at };
            tally.record_latency(request, sent_at + Duration::from_micros(micros));
            let recorded = tally.latency.max();
            assert!(
                tally.latency.equivalent(recorded, micros),
                "{micros} µs recorded as {recorded}"
            );
        }
    }
}
