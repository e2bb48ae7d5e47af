//! The poll loop: one thread, one `mio::Poll`, a `slab::Slab` of connections.
//!
//! This module owns everything that involves more than one connection: tokens, accepting,
//! the UDP endpoint's place in the loop, timers (idle and lingering connections), the list of
//! sources that still have work, closing in a sweep after each event batch, signals and
//! graceful shutdown. What one connection does with its socket is
//! [`connection`]'s business, and what a reply says is
//! [`protocol`](crate::protocol)'s; this module must not parse a byte.
//!
//! One turn of the loop (`EventLoop::turn`): wait for events (or the nearest timer, or not
//! at all if some source still has work), dispatch each event, resume sources that stopped
//! before WouldBlock, fire expired timers, then drop connections that closed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::config::{ServerConfig, Stats};
use crate::connection::{self, Connection, Progress, Scratch, State};
use crate::net::{self, ACCEPT_BACKOFF, LINGER_TIMEOUT, SHORT_READ_DRAINS};
use crate::protocol::SERVER_BUSY;
use crate::running::Running;
use crate::udp::UdpEndpoint;

// Fixed tokens for the loop's own sources. Connections take theirs from the slab, which
// hands out small keys from 0 upward, so these values at the top can never collide.
const LISTENER: Token = Token(usize::MAX - 1);
const UDP: Token = Token(usize::MAX - 2);
const WAKER: Token = Token(usize::MAX - 3);
const SIGNALS: Token = Token(usize::MAX - 4);

/// The loop's one read buffer, lent to whichever connection is being served. 64 KiB holds
/// the largest UDP datagram and a default `--max-line` line in one read.
const READ_BUFFER: usize = 64 * 1024;
const _: () = assert!(READ_BUFFER >= net::MAX_DATAGRAM);

/// Events taken from the kernel per `poll` call.
const EVENTS_CAPACITY: usize = 1024;

/// Connections accepted per listener event before other sources get a turn.
const ACCEPT_BUDGET: usize = 256;

/// A source that stopped before WouldBlock and must be resumed without waiting for an edge.
#[derive(Clone, Copy, Debug)]
enum Ready {
    Listener,
    Udp,
    Connection(Token, u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Idle,
    Linger,
}

/// A deadline for one connection. The connection's serial number makes an entry for a
/// closed connection harmless even after its slab key has been reused.
type Timer = Reverse<(Instant, TimerKind, usize, u64)>;

/// A connection and what the loop keeps about it.
struct Slot {
    conn: Connection<TcpStream>,
    /// Serial number, unique for the life of the loop (slab keys are not).
    serial: u64,
    /// The interest the socket is registered with.
    registered: Interest,
    last_active: Instant,
    lingering: bool,
}

/// Stops a running reactor (all its loops) from any thread, as SIGTERM would.
#[derive(Clone)]
pub struct StopHandle {
    requested: Arc<AtomicBool>,
    wakers: Vec<Arc<Waker>>,
}

impl StopHandle {
    /// Requests a graceful shutdown and wakes every loop.
    pub fn stop(&self) {
        self.requested.store(true, Ordering::SeqCst);
        for waker in &self.wakers {
            if let Err(e) = waker.wake() {
                log::error!("cannot wake the event loop: {e}");
            }
        }
    }
}

/// A bound reactor, ready to run: `threads` event loops sharing the port.
pub struct Server {
    loops: Vec<EventLoop>,
    tcp: SocketAddr,
    udp: Option<SocketAddr>,
    stop: StopHandle,
    open_connections: Arc<AtomicUsize>,
}

impl Server {
    /// Binds the sockets (port 0 resolved) and sets up one loop per `config.threads`.
    pub fn bind(config: ServerConfig) -> io::Result<Server> {
        let threads = config.threads.max(1);
        let reuse_port = threads > 1;
        let first = net::bind(config.listen, config.udp, config.backlog, reuse_port)?;
        let tcp = first.tcp.local_addr()?;
        let udp = first.udp.as_ref().map(|s| s.local_addr()).transpose()?;
        let mut bound = vec![first];
        for _ in 1..threads {
            bound.push(net::bind(tcp, udp, config.backlog, true)?);
        }
        let requested = Arc::new(AtomicBool::new(false));
        let open_connections = Arc::new(AtomicUsize::new(0));
        let config = Arc::new(config);
        let loops = bound
            .into_iter()
            .map(|b| {
                let (config, requested) = (Arc::clone(&config), Arc::clone(&requested));
                EventLoop::new(b, config, requested, Arc::clone(&open_connections))
            })
            .collect::<io::Result<Vec<_>>>()?;
        let wakers = loops.iter().map(|l| Arc::clone(&l.waker)).collect();
        Ok(Server {
            loops,
            tcp,
            udp,
            stop: StopHandle { requested, wakers },
            open_connections,
        })
    }

    /// The TCP address actually bound.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp
    }

    /// The UDP address actually bound, if UDP is served.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp
    }

    /// Open TCP connections right now, across every loop.
    pub fn open_connections(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.open_connections)
    }

    /// A handle that stops this server from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Serves until stopped (by the handle, or SIGINT/SIGTERM if the config says so), then
    /// logs one summary line and returns what every loop did.
    pub fn run(self) -> io::Result<Stats> {
        let mut loops = self.loops.into_iter();
        let first = loops.next().expect("bind makes at least one loop");
        let others: Vec<_> = loops
            .enumerate()
            .map(|(i, event_loop)| {
                std::thread::Builder::new()
                    .name(format!("reactor-{}", i + 1))
                    .spawn(move || event_loop.run())
            })
            .collect::<io::Result<_>>()?;
        let mut total = first.run()?;
        for handle in others {
            let stats = handle
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("event loop thread panicked")))?;
            total.add(&stats);
        }
        log::info!("{total}");
        Ok(total)
    }
}

/// Binds and runs a reactor on a new thread; the addresses are known when this returns.
pub fn spawn(config: ServerConfig) -> io::Result<Running> {
    let server = Server::bind(config)?;
    let (tcp, udp) = (server.tcp_addr(), server.udp_addr());
    let handle = server.stop_handle();
    let open = server.open_connections();
    let thread = std::thread::Builder::new()
        .name("reactor".into())
        .spawn(move || server.run())?;
    let stop = Box::new(move || handle.stop());
    let open = Box::new(move || open.load(Ordering::Relaxed));
    Ok(Running::new(tcp, udp, stop, open, thread))
}

/// One single-threaded loop with its own poll, slab, listener and UDP socket.
struct EventLoop {
    poll: Poll,
    waker: Arc<Waker>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    config: Arc<ServerConfig>,
    stop_requested: Arc<AtomicBool>,
    /// `None` once shutdown has begun: no more accepting.
    listener: Option<TcpListener>,
    udp: Option<UdpEndpoint>,
    connections: Slab<Slot>,
    next_serial: u64,
    /// Every connection deadline, nearest first; entries of closed connections are skipped
    /// when they expire (and pruned if they pile up).
    timers: BinaryHeap<Timer>,
    ready: Vec<Ready>,
    /// Connections closed during this turn, removed from the slab after the event batch.
    closed: Vec<Token>,
    accept_paused_until: Option<Instant>,
    /// Set when accept fails for want of resources, until the backlog is drained again:
    /// one warning per episode, however many retries it takes.
    accept_starved: bool,
    /// Open connections across every loop of the server, for [`Running::open_connections`].
    open_connections: Arc<AtomicUsize>,
    shutdown_deadline: Option<Instant>,
    signals_seen: usize,
    greeting: Vec<u8>,
    read_buf: Vec<u8>,
    replies: Vec<u8>,
    stats: Stats,
    now: Instant,
}

impl EventLoop {
    fn new(
        bound: net::Bound,
        config: Arc<ServerConfig>,
        stop_requested: Arc<AtomicBool>,
        open_connections: Arc<AtomicUsize>,
    ) -> io::Result<EventLoop> {
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

        let signals = if config.handle_signals {
            let mut signals = signal_hook_mio::v1_0::Signals::new([
                signal_hook::consts::SIGINT,
                signal_hook::consts::SIGTERM,
            ])?;
            registry.register(&mut signals, SIGNALS, Interest::READABLE)?;
            Some(signals)
        } else {
            None
        };

        let mut greeting = Vec::new();
        config.protocol.greeting(&mut greeting);
        Ok(EventLoop {
            poll,
            waker,
            signals,
            config,
            stop_requested,
            listener: Some(listener),
            udp,
            connections: Slab::new(),
            next_serial: 0,
            timers: BinaryHeap::new(),
            ready: Vec::new(),
            closed: Vec::new(),
            accept_paused_until: None,
            accept_starved: false,
            open_connections,
            shutdown_deadline: None,
            signals_seen: 0,
            greeting,
            read_buf: vec![0; READ_BUFFER],
            replies: Vec::new(),
            stats: Stats::default(),
            now: Instant::now(),
        })
    }

    fn run(mut self) -> io::Result<Stats> {
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
        Ok(self.stats)
    }

    /// One turn of the loop.
    fn turn(&mut self, events: &mut Events) -> io::Result<()> {
        match self.poll.poll(events, self.poll_timeout()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        self.now = Instant::now();
        for event in events.iter() {
            match event.token() {
                LISTENER => self.accept(),
                UDP => self.serve_udp(event.is_readable(), event.is_writable()),
                WAKER => {
                    if self.stop_requested.load(Ordering::SeqCst) {
                        self.begin_shutdown();
                    }
                }
                SIGNALS => self.on_signals(),
                token => self.serve_connection(token, event),
            }
        }
        self.resume_ready();
        self.fire_timers();
        self.sweep_closed();
        Ok(())
    }

    /// Block until the nearest deadline; not at all if a source still has work.
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        let timer = self.timers.peek().map(|Reverse((deadline, ..))| *deadline);
        [timer, self.accept_paused_until, self.shutdown_deadline]
            .into_iter()
            .flatten()
            .min()
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    fn finished(&self) -> bool {
        match self.shutdown_deadline {
            Some(deadline) => self.connections.is_empty() || self.now >= deadline,
            None => false,
        }
    }

    /// Accepts until WouldBlock, the budget, or running out of descriptors.
    fn accept(&mut self) {
        if self.accept_paused_until.is_some() {
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
                    self.accept_paused_until = Some(self.now + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
        self.ready.push(Ready::Listener);
    }

    fn admit(&mut self, stream: TcpStream, peer: SocketAddr) {
        // The count is shared by every loop, so `--max-connections` holds for the whole
        // server with `--threads` too (two loops admitting at the same instant may overshoot
        // by one each; the limit is a safety valve, not an exact quota).
        if self.open_connections.load(Ordering::Relaxed) >= self.config.max_connections {
            net::refuse(socket2::SockRef::from(&stream), SERVER_BUSY);
            self.stats.refused += 1;
            log::debug!("refused {peer}: at --max-connections");
            return;
        }
        // Replies are small and written whole; waiting for Nagle's algorithm to coalesce
        // them would only add latency.
        if let Err(e) = stream.set_nodelay(true) {
            log::debug!("set_nodelay for {peer}: {e}");
        }
        self.stats.connections += 1;
        let conn = Connection::accept(stream, &self.greeting, &mut self.stats);
        let Some(wanted) = conn.interest() else {
            log::debug!("{peer} failed before its greeting was written");
            return;
        };
        let entry = self.connections.vacant_entry();
        let token = Token(entry.key());
        let serial = self.next_serial;
        self.next_serial += 1;
        let registered = mio_interest(wanted);
        let mut slot = Slot {
            conn,
            serial,
            registered,
            last_active: self.now,
            lingering: false,
        };
        if let Err(e) = self
            .poll
            .registry()
            .register(slot.conn.stream(), token, registered)
        {
            log::warn!("cannot register {peer}: {e}");
            return;
        }
        entry.insert(slot);
        self.open_connections.fetch_add(1, Ordering::Relaxed);
        if let Some(idle) = self.config.idle_timeout {
            self.timers
                .push(Reverse((self.now + idle, TimerKind::Idle, token.0, serial)));
        }
        log::debug!("accepted {peer} as {token:?}");
    }

    fn serve_connection(&mut self, token: Token, event: &mio::event::Event) {
        let Some(slot) = self.connections.get_mut(token.0) else {
            return;
        };
        // A slot closed earlier in this batch stays until the sweep; ignore its events.
        if slot.conn.state() == State::Closed {
            return;
        }
        slot.last_active = self.now;
        let serial = slot.serial;
        if event.is_writable() && slot.conn.on_writable(&mut self.stats) == Progress::ReadAgain {
            self.ready.push(Ready::Connection(token, serial));
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            let drains = SHORT_READ_DRAINS && !event.is_read_closed() && !event.is_error();
            self.read_connection(token, drains);
        }
        self.after_io(token);
    }

    /// Lets a connection read and answer with the loop's buffers, and remembers it if it
    /// stopped before WouldBlock.
    fn read_connection(&mut self, token: Token, short_read_drains: bool) {
        let slot = &mut self.connections[token.0];
        let mut scratch = Scratch {
            read_buf: &mut self.read_buf,
            replies: &mut self.replies,
            protocol: &self.config.protocol,
            stats: &mut self.stats,
        };
        if slot.conn.on_readable(&mut scratch, short_read_drains) == Progress::ReadAgain {
            self.ready.push(Ready::Connection(token, slot.serial));
        }
    }

    /// Brings the poll registration, the timers and the close list in line with the
    /// connection's new state. Re-registers only when the interest changed.
    fn after_io(&mut self, token: Token) {
        let slot = &mut self.connections[token.0];
        let Some(wanted) = slot.conn.interest() else {
            self.closed.push(token);
            return;
        };
        let wanted = mio_interest(wanted);
        if wanted != slot.registered {
            if let Err(e) = self
                .poll
                .registry()
                .reregister(slot.conn.stream(), token, wanted)
            {
                log::debug!("reregister {token:?}: {e}");
                slot.conn.close_now();
                self.closed.push(token);
                return;
            }
            slot.registered = wanted;
        }
        if slot.conn.state() == State::Lingering && !slot.lingering {
            slot.lingering = true;
            let deadline = self.now + LINGER_TIMEOUT;
            self.timers
                .push(Reverse((deadline, TimerKind::Linger, token.0, slot.serial)));
        }
    }

    fn serve_udp(&mut self, readable: bool, writable: bool) {
        let Some(udp) = &mut self.udp else {
            return;
        };
        if writable {
            udp.on_writable(&mut self.stats);
        }
        if readable
            && udp.on_readable(
                &mut self.read_buf,
                &mut self.replies,
                &self.config.protocol.mode,
                &mut self.stats,
            )
        {
            self.ready.push(Ready::Udp);
        }
        // WRITABLE is needed only while replies are queued (the send buffer filled), so this
        // re-registers only on the way into and out of that condition.
        if let Some(wanted) = udp.interest_change() {
            let wanted = mio_interest(wanted);
            if let Err(e) = self.poll.registry().reregister(udp.socket(), UDP, wanted) {
                log::error!("udp reregister failed: {e}");
            }
        }
    }

    /// Serves the sources that stopped before WouldBlock on an earlier turn.
    fn resume_ready(&mut self) {
        for ready in std::mem::take(&mut self.ready) {
            match ready {
                Ready::Listener => self.accept(),
                Ready::Udp => self.serve_udp(true, false),
                Ready::Connection(token, serial) => {
                    if self
                        .connections
                        .get(token.0)
                        .is_some_and(|s| s.serial == serial)
                    {
                        // No event told us the socket is drained: read until WouldBlock.
                        self.read_connection(token, false);
                        self.after_io(token);
                    }
                }
            }
        }
    }

    fn fire_timers(&mut self) {
        if self.accept_paused_until.is_some_and(|t| t <= self.now) {
            self.resume_accepting();
        }
        while let Some(&Reverse((deadline, kind, key, serial))) = self.timers.peek() {
            if deadline > self.now {
                break;
            }
            self.timers.pop();
            let Some(slot) = self.connections.get_mut(key) else {
                continue;
            };
            if slot.serial != serial || slot.conn.state() == State::Closed {
                continue;
            }
            match kind {
                TimerKind::Linger => slot.conn.close_now(),
                TimerKind::Idle => {
                    let idle = self.config.idle_timeout.unwrap_or(Duration::MAX);
                    let expires = slot.last_active + idle;
                    if expires > self.now {
                        // Active since the timer was set: check again when it could expire.
                        self.timers
                            .push(Reverse((expires, TimerKind::Idle, key, serial)));
                        continue;
                    } else if slot.conn.state().reads_input() {
                        log::debug!("closing Token({key}): idle for {idle:?}");
                        slot.conn.close_gracefully(&mut self.stats);
                        // Give the polite close one more period, then give up.
                        self.timers
                            .push(Reverse((self.now + idle, TimerKind::Idle, key, serial)));
                    } else {
                        // Idle with output owed and nothing moving: the peer stopped reading.
                        slot.conn.close_now();
                    }
                }
            }
            self.after_io(Token(key));
        }
        // Entries of closed connections are skipped lazily; prune them if they outnumber
        // live connections, so churn cannot grow the heap without bound.
        if self.timers.len() > 2 * self.connections.len() + 64 {
            let connections = &self.connections;
            self.timers.retain(|Reverse((_, _, key, serial))| {
                connections.get(*key).is_some_and(|s| s.serial == *serial)
            });
        }
    }

    /// Removes the connections that closed this turn. Done after the event batch so that no
    /// event of this batch can land on a slot reused by a connection accepted meanwhile.
    fn sweep_closed(&mut self) {
        if self.closed.is_empty() {
            return;
        }
        for token in std::mem::take(&mut self.closed) {
            if self
                .connections
                .get(token.0)
                .is_some_and(|slot| slot.conn.state() == State::Closed)
            {
                // Dropping the stream closes the descriptor, which also removes it from the
                // epoll set: no deregister call needed.
                let slot = self.connections.remove(token.0);
                self.stats.messages += slot.conn.messages();
                self.open_connections.fetch_sub(1, Ordering::Relaxed);
                log::debug!("closed {token:?}");
            }
        }
        if self.accept_paused_until.is_some() {
            // A descriptor was just freed: accept again now rather than at the deadline.
            self.resume_accepting();
        }
    }

    fn resume_accepting(&mut self) {
        self.accept_paused_until = None;
        self.ready.push(Ready::Listener);
    }

    fn on_signals(&mut self) {
        let Some(signals) = &mut self.signals else {
            return;
        };
        let count = signals.pending().count();
        for _ in 0..count {
            self.signals_seen += 1;
            if self.signals_seen == 1 {
                log::info!("signal received: shutting down gracefully");
                self.begin_shutdown();
            } else {
                log::warn!("second signal: closing every connection now");
                self.shutdown_deadline = Some(self.now);
                self.close_all_now();
            }
        }
    }

    /// Stops accepting, stops reading, delivers what is owed, then closes; the loop ends
    /// when every connection is gone or the grace period is over.
    fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        self.shutdown_deadline = Some(self.now + self.config.shutdown_grace);
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        if let Some(mut udp) = self.udp.take() {
            udp.on_writable(&mut self.stats);
            let _ = self.poll.registry().deregister(udp.socket());
        }
        log::info!(
            "shutdown: no longer accepting; {} connections to finish within {:?}",
            self.connections.len(),
            self.config.shutdown_grace
        );
        let tokens: Vec<Token> = self.connections.iter().map(|(k, _)| Token(k)).collect();
        for token in tokens {
            self.connections[token.0]
                .conn
                .close_gracefully(&mut self.stats);
            self.after_io(token);
        }
        self.sweep_closed();
    }

    fn close_all_now(&mut self) {
        for (key, slot) in self.connections.iter_mut() {
            slot.conn.close_now();
            self.closed.push(Token(key));
        }
        self.sweep_closed();
    }
}

fn mio_interest(interest: connection::Interest) -> Interest {
    match (interest.readable, interest.writable) {
        (true, true) => Interest::READABLE | Interest::WRITABLE,
        (false, true) => Interest::WRITABLE,
        _ => Interest::READABLE,
    }
}
