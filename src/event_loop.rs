//! One single-threaded event loop: one `mio::Poll`, a `slab::Slab` of connections, the
//! listener and the UDP socket. This is the file to read to see how the reactor works.
//!
//! This module owns everything that involves more than one connection: tokens, accepting,
//! the UDP and metrics endpoints' places in the loop, the deadlines (the nearest one is the
//! `poll` timeout), the list of sources that still have work, closing in a sweep after each
//! event batch, signals, graceful shutdown, and draining after a restart's hand-over
//! (starting the successor is [`restart`](crate::restart)'s). What one connection does with
//! its socket, and when and why it times out, is [`connection`](crate::connection)'s
//! business, and what a reply says is [`protocol`](crate::protocol)'s; this module must not
//! parse a byte. Running several loops side by side is [`reactor`](crate::reactor)'s.
//!
//! One turn of the loop (`EventLoop::turn`): wait for events (or the nearest deadline, or
//! not at all if some source still has work), dispatch each event, resume sources that
//! stopped before WouldBlock (the ready list, for a bounded time: the events come first),
//! act on the deadlines that passed, then drop connections that closed.
//!
//! Its files: this one, the turn and what it dispatches to; `event_loop/slot.rs`, what the
//! loop keeps beside each connection; `event_loop/stopping.rs`, signals, the hand-over and
//! shutdown; `event_loop/tests.rs`.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::admission::{Admission, LingeringQueue, Refusal};
use crate::budget::MemoryBudget;
use crate::config::ServerConfig;
use crate::connection::{Connection, HeaderRead, State};
use crate::metrics::{LoopMetrics, OpenConnections, MAX_METRICS_CLIENTS};
use crate::net::{self, ACCEPT_BACKOFF};
use crate::protocol::TOO_MANY_FROM_ADDRESS;
use crate::restart::{Handover, Restart};
use crate::signals::LoopSignals;
use crate::stats::Stats;
use crate::timers::{Due, Timers};
use crate::transport::Transport;
use crate::udp::UdpEndpoint;

use serve::{Readiness, Served};
use slot::{Ready, Scratch, Slot};

// Fixed tokens for the loop's own sources. Connections take theirs from the slab, which
// hands out small keys from 0 upward, so these values at the top can never collide.
const LISTENER: Token = Token(usize::MAX - 1);
const UDP: Token = Token(usize::MAX - 2);
const WAKER: Token = Token(usize::MAX - 3);
const SIGNALS: Token = Token(usize::MAX - 4);
const SUCCESSOR: Token = Token(usize::MAX - 5);
/// The metrics endpoint's listener (`--metrics`), and below it one token per place for a
/// metrics client.
const METRICS: Token = Token(usize::MAX - 6);
const METRICS_CLIENTS: usize = METRICS.0 - MAX_METRICS_CLIENTS;

/// The loop's one read buffer, lent to whichever connection is being served. 64 KiB holds
/// the largest UDP datagram and a default `--max-line` line in one read.
const READ_BUFFER: usize = 64 * 1024;
const _: () = assert!(READ_BUFFER >= net::MAX_DATAGRAM);

/// Events taken from the kernel per `poll` call. With
/// [`READY_TIME_PER_TURN`](serve::READY_TIME_PER_TURN) this bounds
/// the work of one turn: each event gets at most `READ_BUDGET` bytes read and `REPLY_BUDGET`
/// bytes of replies, so a turn under any load takes milliseconds, and the listener, the UDP
/// socket and the signals are looked at again between turns. Events the kernel did not
/// hand over wait in epoll's ready list for the next `poll`; nothing is lost. Fewer events
/// per call costs more `epoll_wait` calls only when more than this many sockets are ready
/// at once, one per 256 events.
const EVENTS_CAPACITY: usize = 256;

/// Connections accepted per listener event before other sources get a turn.
const ACCEPT_BUDGET: usize = 256;

/// What every loop of a server shares: built once, and a clone handed to each loop.
#[derive(Clone)]
pub(crate) struct Shared {
    /// The settings.
    pub(crate) config: Arc<ServerConfig>,
    /// Set, and every loop woken, to stop the server.
    pub(crate) stop_requested: Arc<AtomicBool>,
    /// `--max-connections` and `--max-connections-per-ip`, across every loop (and
    /// [`Running::open_connections`](crate::Running::open_connections)).
    pub(crate) admission: Arc<Admission>,
    /// Bytes held in connection buffers across every loop, for `--max-buffer-memory`.
    pub(crate) budget: Arc<MemoryBudget>,
}

/// One single-threaded loop with its own poll, slab, listener and UDP socket, serving its
/// TCP connections over `S`: the socket itself, or TLS. A server runs one kind or the
/// other, so each is compiled on its own and plain TCP pays nothing for TLS.
pub(crate) struct EventLoop<S: Transport = TcpStream> {
    poll: Poll,
    waker: Arc<Waker>,
    signals: Option<LoopSignals>,
    config: Arc<ServerConfig>,
    stop_requested: Arc<AtomicBool>,
    /// `None` once shutdown has begun: no more accepting.
    listener: Option<TcpListener>,
    udp: Option<UdpEndpoint>,
    connections: Slab<Slot<S>>,
    /// What an accepted socket is wrapped with: nothing, or the TLS certificate.
    acceptor: S::Acceptor,
    next_serial: u64,
    /// Every deadline the loop keeps, nearest first: each connection's and the loop's own.
    timers: Timers,
    ready: VecDeque<Ready>,
    /// Connections closed during this turn, removed from the slab after the event batch.
    closed: Vec<Token>,
    /// Set when accept fails for want of resources, until the backlog is drained again:
    /// one warning per episode, however many retries it takes.
    accept_starved: bool,
    /// `--max-connections` and `--max-connections-per-ip`, across every loop of the
    /// server; each slot holds its connection's permit.
    admission: Arc<Admission>,
    /// This loop's connections that owe nothing and wait only for their peer's EOF, oldest
    /// first: closed at a limit to admit a new client. Keyed by slab key and serial.
    lingering: LingeringQueue<(usize, u64)>,
    /// Bytes held in connection buffers across every loop, for `--max-buffer-memory`.
    budget: Arc<MemoryBudget>,
    /// This turn's equal share of the memory budget among the open connections.
    share: usize,
    /// The listener, and the UDP socket, stopped at their budget before WouldBlock: each is
    /// tried again next turn, before the connections on the ready list, which may wait
    /// several turns (see [`READY_TIME_PER_TURN`](serve::READY_TIME_PER_TURN)).
    listener_queued: bool,
    udp_queued: bool,
    /// Restarting: SIGUSR2 starts a successor on this loop's sockets (first loop only).
    /// Once a successor took the sockets over ([`Due::Drain`] is set) there is no more
    /// accepting; the loop ends when its last connection closes, or shuts down gracefully
    /// at that deadline.
    handover: Handover,
    signals_seen: usize,
    greeting: Vec<u8>,
    scratch: Scratch,
    /// The time this turn's `poll` returned: one clock reading per turn.
    now: Instant,
    /// `--metrics`: this loop's part in them; `None` when they are off.
    metrics: Option<LoopMetrics>,
}

impl<S: Transport> EventLoop<S> {
    /// Registers the bound sockets (and, if the config says so, SIGINT/SIGTERM) with a new
    /// poll. `shared` is what this loop shares with the server's other loops; `metrics` is
    /// its part in them, and `acceptor` what its accepted sockets are wrapped with.
    pub(crate) fn new(
        bound: net::Bound,
        shared: Shared,
        mut metrics: Option<LoopMetrics>,
        acceptor: S::Acceptor,
    ) -> io::Result<EventLoop<S>> {
        let Shared {
            config,
            stop_requested,
            admission,
            budget,
        } = shared;
        let poll = Poll::new()?;
        let registry = poll.registry();
        let waker = Arc::new(Waker::new(registry, WAKER)?);

        bound.tcp.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(bound.tcp);
        registry.register(&mut listener, LISTENER, Interest::READABLE)?;

        let udp = match bound.udp {
            Some(socket) => {
                socket.set_nonblocking(true)?;
                let mut endpoint = UdpEndpoint::new(UdpSocket::from_std(socket));
                registry.register(endpoint.socket(), UDP, Interest::READABLE)?;
                Some(endpoint)
            }
            None => None,
        };

        if let Some(metrics) = &mut metrics {
            metrics.register(registry, METRICS, METRICS_CLIENTS)?;
        }

        let signals = if config.handle_signals {
            Some(LoopSignals::register(registry, SIGNALS, &waker)?)
        } else {
            None
        };

        let mut greeting = Vec::new();
        config.protocol.greeting(&mut greeting);
        let share = budget.share(admission.open());
        Ok(EventLoop {
            poll,
            waker,
            signals,
            config,
            stop_requested,
            listener: Some(listener),
            udp,
            connections: Slab::new(),
            acceptor,
            next_serial: 0,
            timers: Timers::new(),
            ready: VecDeque::new(),
            closed: Vec::new(),
            accept_starved: false,
            admission,
            lingering: LingeringQueue::default(),
            budget,
            share,
            listener_queued: false,
            udp_queued: false,
            handover: Handover::default(),
            signals_seen: 0,
            greeting,
            scratch: Scratch {
                read_buf: vec![0; READ_BUFFER],
                replies: Vec::new(),
                stats: Stats::default(),
            },
            now: Instant::now(),
            metrics,
        })
    }

    /// What wakes this loop from another thread (to notice a stop request).
    pub(crate) fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// Lets SIGUSR2 hand this loop's sockets to a successor (see [`crate::restart`]).
    pub(crate) fn restart_on_sigusr2(&mut self, restart: Restart) {
        self.handover = Handover::new(restart);
    }

    /// Lets SIGHUP read again what connections are accepted with (the TLS certificate and
    /// key). The loops share it (clones of one `tls::Identity`), so one loop's reload
    /// reaches every loop's next accept: only one loop takes SIGHUP, and the files are read,
    /// and the outcome logged, once per signal.
    pub(crate) fn reload_on_sighup(&self) -> io::Result<()> {
        match &self.signals {
            Some(signals) => signals.add_sighup(),
            None => Ok(()),
        }
    }

    /// Turns until shut down, then returns what this loop did.
    pub(crate) fn run(mut self) -> io::Result<Stats> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        while !self.finished() {
            self.turn(&mut events)?;
        }
        if !self.connections.is_empty() {
            log::warn!(
                "shutdown grace over: closing {} connections that still owed output",
                self.connections.len()
            );
            self.close_all_now();
        }
        Ok(self.scratch.stats)
    }

    /// One turn of the loop.
    fn turn(&mut self, events: &mut Events) -> io::Result<()> {
        match self.poll.poll(events, self.poll_timeout()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        self.now = Instant::now();
        self.share = self.budget.share(self.admission.open());
        let mut handed_over = 0;
        for event in events.iter() {
            handed_over += 1;
            match event.token() {
                LISTENER => self.accept(),
                UDP => self.serve_udp(event.is_readable(), event.is_writable()),
                // Where stop requests come through a handler thread (Windows), it wakes
                // the loop with the waker too.
                WAKER => {
                    self.check_stop_request();
                    self.on_signals();
                }
                SIGNALS => self.on_signals(),
                SUCCESSOR => self.check_successor(),
                // The metrics endpoint's listener and its clients' places, below the other
                // fixed tokens and far above any slab key.
                token if token.0 >= METRICS_CLIENTS => self.serve_metrics(token),
                token => self.serve_connection(token, event),
            }
        }
        if handed_over == EVENTS_CAPACITY {
            self.serve_own_sources();
        }
        self.resume_ready();
        self.fire_timers();
        self.sweep_closed();
        if let Some(metrics) = &mut self.metrics {
            let connections = &self.connections;
            metrics.end_of_turn(&self.scratch.stats, || count_open(connections));
        }
        let turn = self.now.elapsed();
        let stats = &mut self.scratch.stats;
        stats.longest_turn = stats.longest_turn.max(turn);
        stats.peak_buffered = stats.peak_buffered.max(self.budget.held());
        if let Some(metrics) = &mut self.metrics {
            metrics.observe_turn(turn);
        }
        Ok(())
    }

    /// A full batch of events means the kernel may hold more than it handed over, and the
    /// events of the loop's own sources could wait behind thousands of busy connections
    /// for several turns. So under such load every turn also tries them directly: a stop
    /// request, the signals, the listener and the UDP socket, each at the cost of a
    /// syscall that finds nothing when nothing is there. A loop that is not overloaded
    /// never pays it.
    fn serve_own_sources(&mut self) {
        self.check_stop_request();
        self.on_signals();
        self.accept();
        self.serve_udp(true, false);
    }

    /// Has the listener tried again next turn.
    fn listener_ready(&mut self) {
        self.listener_queued = true;
    }

    /// Has the UDP socket tried again next turn.
    fn udp_ready(&mut self) {
        self.udp_queued = true;
    }

    fn check_stop_request(&mut self) {
        if self.stop_requested.load(Ordering::SeqCst) {
            self.begin_shutdown();
        }
    }

    /// Block until the nearest deadline; not at all if a source still has work.
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.ready.is_empty() || self.listener_queued || self.udp_queued {
            return Some(Duration::ZERO);
        }
        self.timers
            .next()
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    fn finished(&self) -> bool {
        match (
            self.timers.get(Due::ShutdownGrace),
            self.timers.get(Due::Drain),
        ) {
            (Some(deadline), _) => self.connections.is_empty() || self.now >= deadline,
            (None, Some(_)) => self.connections.is_empty(),
            (None, None) => false,
        }
    }

    /// Accepts until WouldBlock, the budget, or running out of descriptors.
    fn accept(&mut self) {
        if self.timers.get(Due::AcceptBackoff).is_some() {
            return;
        }
        for _ in 0..ACCEPT_BUDGET {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.accept_starved {
                        self.accept_starved = false;
                        log::info!("accepting again ({} open)", self.connections.len());
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The peer gave up before we got to it; the next one may be fine.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // EMFILE/ENFILE (or ENOBUFS, ENOMEM): the connection stays queued and
                    // retrying at once would spin, so pause. Logged once per episode, not
                    // once per retry.
                    if !self.accept_starved {
                        self.accept_starved = true;
                        log::warn!(
                            "accept failed: {e}; retrying every {ACCEPT_BACKOFF:?} and \
                             whenever a connection closes ({} open)",
                            self.connections.len()
                        );
                    }
                    let retry = self.now + ACCEPT_BACKOFF;
                    self.timers.set(Due::AcceptBackoff, Some(retry));
                    return;
                }
            }
        }
        self.listener_ready();
    }

    fn admit(&mut self, stream: TcpStream, peer: SocketAddr) {
        // Behind a balancer the address to count is in the PROXY header, not known yet.
        let counted = (!self.config.proxy_protocol).then(|| peer.ip());
        // The counts are shared by every loop, so the limits hold for the whole server with
        // `--threads` too; the lingering connections closed to make room are this loop's.
        let admission = Arc::clone(&self.admission);
        let permit = match self.served().admit(&admission, counted) {
            Ok(permit) => permit,
            Err(refusal) => {
                net::refuse(
                    socket2::SockRef::from(&stream),
                    S::refusal(refusal.message()),
                );
                let why = match refusal {
                    Refusal::Busy => {
                        self.scratch.stats.refused += 1;
                        "at --max-connections"
                    }
                    Refusal::TooManyFromAddress => {
                        self.scratch.stats.refused_per_ip += 1;
                        "its address is at --max-connections-per-ip"
                    }
                };
                log::debug!("refused {peer}: {why}");
                return;
            }
        };
        // Replies are small and written whole; waiting for Nagle's algorithm to coalesce
        // them would only add latency.
        if let Err(e) = stream.set_nodelay(true) {
            log::debug!("set_nodelay for {peer}: {e}");
        }
        let socket = socket2::SockRef::from(&stream);
        net::limit_unsent(&socket);
        net::set_buffer_sizes(socket, self.config.send_buffer, self.config.recv_buffer);
        let stream = match S::accept(stream, &self.acceptor) {
            Ok(stream) => stream,
            Err(e) => {
                log::warn!("cannot serve {peer}: {e}");
                return;
            }
        };
        let conn = if self.config.proxy_protocol {
            Connection::accept_proxied(stream, self.now)
        } else {
            self.scratch.stats.connections += 1;
            Connection::accept(stream, &self.greeting, &mut self.scratch.stats, self.now)
        };
        let Some(registered) = conn.interest() else {
            log::debug!("{peer} failed before its greeting was written");
            return;
        };
        let serial = self.next_serial;
        self.next_serial += 1;
        let token = match self.served().insert(conn, Some(permit), serial, registered) {
            Ok(token) => token,
            Err(e) => {
                log::warn!("cannot register {peer}: {e}");
                return;
            }
        };
        log::debug!("accepted {peer} as {token:?}");
    }

    fn serve_connection(&mut self, token: Token, event: &mio::event::Event) {
        let Some(slot) = self.connections.get_mut(token.0) else {
            return;
        };
        // A slot closed earlier in this batch stays until the sweep; ignore its events.
        match slot.conn.state() {
            State::Closed => {}
            State::ProxyHeader => self.serve_proxy_header(token),
            _ => self.served().serve(token, Readiness::of(event)),
        }
    }

    /// `--proxy-protocol`: the connection reads the header and, once it is whole, the
    /// client it names is admitted as [`admit`](Self::admit) admits a direct one
    /// (`--max-connections-per-ip` counts that address). The connection then goes on to its
    /// TLS handshake or its greeting, or writes its refusal: it, not the loop, touches its
    /// socket.
    // Once per connection, never per message: kept out of line so that it does not weigh
    // on the per-event path it branches off.
    #[cold]
    fn serve_proxy_header(&mut self, token: Token) {
        let slot = &mut self.connections[token.0];
        let mut ctx = self
            .scratch
            .context(&self.config, &self.greeting, self.now, self.share);
        let read = slot.conn.read_proxy_header(&mut ctx);
        let balancer = slot.conn.peer();
        let via = balancer.map_or_else(|| "a client gone already".into(), |a| a.to_string());
        match read {
            HeaderRead::Waiting => {}
            HeaderRead::Rejected(why) => log::info!("{via}: closed without a greeting: {why}"),
            HeaderRead::Received(source) => {
                // No address in the header (LOCAL, a health check): the balancer stands.
                let client = source.or(balancer);
                let ip = client.map(|a| a.ip());
                let who = client.map_or_else(|| via.clone(), |a| a.to_string());
                let admitted = match ip {
                    Some(ip) => self.count_address(token, ip),
                    None => true,
                };
                let slot = &mut self.connections[token.0];
                let mut ctx =
                    self.scratch
                        .context(&self.config, &self.greeting, self.now, self.share);
                if !admitted {
                    ctx.stats.refused_per_ip += 1;
                    log::debug!("refused {who} (via {via}): at --max-connections-per-ip");
                    let progress = slot.conn.refuse(TOO_MANY_FROM_ADDRESS, &mut ctx);
                    slot.follow(progress, token, &mut self.ready);
                } else {
                    ctx.stats.connections += 1;
                    log::debug!("accepted {who} (PROXY header from {via}) as {token:?}");
                    let progress = slot.conn.admitted(&mut ctx);
                    slot.follow(progress, token, &mut self.ready);
                }
            }
        }
        self.after_io(token);
    }

    /// `--proxy-protocol`: counts the client a PROXY header named against its address,
    /// closing this loop's oldest lingering connection from that address if it is at
    /// `--max-connections-per-ip`. False when it stays refused.
    fn count_address(&mut self, token: Token, ip: IpAddr) -> bool {
        // Out of its slot while other slots may be closed; never one that lingers itself.
        let Some(mut permit) = self.connections[token.0].permit.take() else {
            return false;
        };
        let mut served = self.served();
        let counted =
            permit.count_address_or_reclaim(ip, |refusal| served.reclaim_oldest(refusal, Some(ip)));
        self.connections[token.0].permit = Some(permit);
        counted.is_ok()
    }

    /// Brings the poll registration, the timers and the close list in line with the
    /// connection's new state (see [`Served::after_io`]); a connection that has just begun
    /// lingering joins the queue of those a new client may displace.
    fn after_io(&mut self, token: Token) {
        self.served().after_io(token);
    }

    /// The parts of the loop its policy for connections works on, for one step of a turn.
    fn served(&mut self) -> Served<'_, S, mio::Registry> {
        Served {
            connections: &mut self.connections,
            timers: &mut self.timers,
            ready: &mut self.ready,
            closed: &mut self.closed,
            lingering: &mut self.lingering,
            scratch: &mut self.scratch,
            registry: self.poll.registry(),
            budget: &self.budget,
            config: &self.config,
            greeting: &self.greeting,
            now: self.now,
            share: self.share,
        }
    }

    fn serve_metrics(&mut self, token: Token) {
        if let Some(metrics) = &mut self.metrics {
            metrics.on_event(token, self.poll.registry(), self.now, &mut self.timers);
        }
    }

    fn serve_udp(&mut self, readable: bool, writable: bool) {
        let Some(udp) = &mut self.udp else {
            return;
        };
        if writable {
            udp.on_writable(&mut self.scratch.stats);
        }
        let more = readable
            && udp.on_readable(
                &mut self.scratch.read_buf,
                &mut self.scratch.replies,
                self.config.protocol.udp_mode(),
                &mut self.scratch.stats,
            );
        // WRITABLE is needed only while replies are queued (the send buffer filled), so this
        // re-registers only on the way into and out of that condition.
        if let Some(wanted) = udp.interest_change() {
            if let Err(e) = self.poll.registry().reregister(udp.socket(), UDP, wanted) {
                log::error!("udp reregister failed: {e}");
            }
        }
        if more {
            self.udp_ready();
        }
    }

    /// Serves the sources that stopped before WouldBlock on an earlier turn: the listener
    /// and the UDP socket, then the ready list's connections, oldest first, for
    /// [`READY_TIME_PER_TURN`](serve::READY_TIME_PER_TURN). Connections that ask for another
    /// turn now go behind those still waiting.
    fn resume_ready(&mut self) {
        if std::mem::take(&mut self.listener_queued) {
            self.accept();
        }
        if std::mem::take(&mut self.udp_queued) {
            self.serve_udp(true, false);
        }
        if self.ready.is_empty() {
            return;
        }
        let mut waiting = std::mem::take(&mut self.ready);
        let started = Instant::now();
        serve::serve_ready(&mut waiting, |ready| {
            self.served().resume(ready);
            started.elapsed()
        });
        waiting.append(&mut self.ready);
        self.ready = waiting;
    }

    /// Acts on the deadlines that passed: each connection's (see
    /// [`Connection::on_deadline`], through [`Served::fire_timers`]) and the loop's own.
    fn fire_timers(&mut self) {
        let mut own = Vec::new();
        self.served().fire_timers(
            |slot, before| {
                if before == State::ProxyHeader && slot.conn.state() == State::Closed {
                    let peer = slot.conn.peer();
                    log::info!(
                        "{}: closed without a greeting: no whole PROXY header within {:?}",
                        peer.map_or_else(|| "a client gone already".into(), |a| a.to_string()),
                        crate::proxy::HEADER_TIMEOUT
                    );
                }
            },
            |timer| own.push(timer),
        );
        for timer in own {
            match timer.due {
                Due::AcceptBackoff => self.resume_accepting(),
                Due::Successor => self.check_successor(),
                Due::Drain if self.timers.get(Due::ShutdownGrace).is_none() => {
                    log::info!("drain timeout: shutting down the connections still open");
                    self.begin_shutdown();
                }
                // The turn ends the loop once the grace is over (`finished`).
                Due::Drain | Due::ShutdownGrace => {}
                Due::MetricsAccept | Due::MetricsClient { .. } => {
                    if let Some(metrics) = &mut self.metrics {
                        metrics.on_deadline(timer, self.poll.registry(), &mut self.timers);
                    }
                }
                Due::Connection { .. } => {}
            }
        }
    }

    /// Removes the connections that closed this turn (see [`Served::sweep`]); their
    /// permits give back what was counted for them across the loops.
    fn sweep_closed(&mut self) {
        if self.closed.is_empty() {
            return;
        }
        self.served().sweep();
        if self.timers.get(Due::AcceptBackoff).is_some() {
            // A descriptor was just freed: accept again now rather than at the deadline.
            self.resume_accepting();
        }
    }

    fn resume_accepting(&mut self) {
        self.timers.set(Due::AcceptBackoff, None);
        self.listener_ready();
    }
}

/// What a scrape needs of the open connections that the loop's `Stats` does not hold yet.
/// It walks the slab, so the metrics call it only when a scrape asks, never per turn.
fn count_open<S: Transport>(connections: &Slab<Slot<S>>) -> OpenConnections {
    let mut open = OpenConnections::default();
    for (_, slot) in connections {
        open.messages += slot.conn.messages();
        if slot.conn.paused() {
            open.paused += 1;
        }
    }
    open
}

mod serve;
#[cfg(test)]
mod sim;
mod slot;
mod stopping;
#[cfg(test)]
mod tests;
