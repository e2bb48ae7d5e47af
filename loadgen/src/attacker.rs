//! The hostile clients' engine, [`Attacker`]: one `mio::Poll` driving one share of the
//! `--hostile` clients (slow readers, dribblers, idle clients, churners, UDP flood sockets,
//! partial lines)
//! on a thread of its own. It opens them, at most its share of [`MAX_SETUPS_IN_FLIGHT`]
//! setting up at once as the honest engines do, says when every one is set up, misbehaves
//! until it is told to stop, then records how each client stands and closes them all.
//!
//! It never runs inside an honest engine's loop: an honest reply is never read late because
//! its loop was busy flooding, so the honest latency shows the server (and the CPU the
//! machine had left), not loadgen queueing behind its own attack. Like the reactor it
//! bounds the work of one turn: a slow reader writes at most [`PRESS_BUDGET`] bytes and a
//! flood socket sends at most [`FLOOD_BURST`] datagrams before the others get their turn,
//! and whoever had more to do is on the ready list, so the next poll does not wait.
//!
//! What a client learns about the server is only what a client can see: its reads (EOF, a
//! reset, an `ERR` line), its writes (taken, refused, failed) and, for a slow reader that
//! never reads, the poll's word that the server closed or reset the connection. Each
//! client's fate is one [`Outcome`], counted once in its kind's [`HostileTally`]; nothing
//! here is an error of the run.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

use super::engine::{MAX_SETUPS_IN_FLIGHT, SWEEP_INTERVAL};
use super::hostile::{
    ErrLine, Hostile, HostileKind, HostileTally, Outcome, DRIBBLE_INTERVAL, PAUSED_AFTER,
};
use super::options::Options;

// How each kind presses on the server (`attacker/pressing.rs`).
mod pressing;

/// SO_SNDBUF and SO_RCVBUF of every hostile TCP socket. A hostile client on another machine
/// costs this one nothing, but on loopback its own kernel buffers count against the same
/// `tcp_mem` as the server's: 2,000 slow readers with autotuned buffers of megabytes each
/// would push the host into TCP memory pressure, where the kernel drops segments for every
/// socket, the honest clients' too, whatever the server does. Small buffers keep the attack
/// about the server.
const SOCKET_BUFFER: usize = 16 * 1024;

/// Bytes a slow reader offers per `write`: empty lines, each owing the server a nine-byte
/// `Hello, !` reply.
const FLOOD_CHUNK: usize = 64 * 1024;

/// What a slow reader writes: nothing but newlines.
static EMPTY_LINES: [u8; FLOOD_CHUNK] = [b'\n'; FLOOD_CHUNK];

/// What a partial-line client writes, as much of it as its line has left: never a newline.
static NO_NEWLINE: [u8; FLOOD_CHUNK] = [b'x'; FLOOD_CHUNK];

/// Bytes a slow reader may write in one turn before the others get theirs.
pub(super) const PRESS_BUDGET: usize = 4 * FLOOD_CHUNK;

/// Datagrams a flood socket may send in one turn before the others get theirs.
pub(super) const FLOOD_BURST: usize = 64;

/// What a flood socket sends: 16 bytes, as an honest request of the default size.
const DATAGRAM: &[u8] = b"udp flood.......";

/// What a churner sends on each connection before it closes it.
const CHURN_LINES: &[u8] = b"churn\nchurn\nchurn\n";

/// What a dribbler sends every [`DRIBBLE_INTERVAL`]: one byte that is not a newline.
const DRIBBLE: &[u8] = b"x";

/// Bytes of a line a reading client keeps: enough to tell one `ERR` line from another.
const LINE_KEPT: usize = 256;

/// Bytes per `read` of a dribbler or idle client, which only ever receive a greeting and
/// perhaps an `ERR` line.
const READ_BUFFER: usize = 4 * 1024;

/// Events taken per `poll` call.
const EVENTS_CAPACITY: usize = 1024;

/// A hostile client's socket, or none once it is closed.
enum Held {
    Tcp(TcpStream),
    Udp(UdpSocket),
    None,
}

/// Where a hostile client is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Its TCP connect has not completed.
    Connecting,
    /// Connected, waiting for the greeting (idle clients only).
    Greeting,
    /// Set up, and misbehaving.
    Pressing,
    /// A churner between connections after one failed: the next opens at the next sweep,
    /// so a server that refuses does not make it spin.
    Waiting,
    /// Its outcome is counted and its socket closed.
    Done,
}

/// One hostile client.
struct Rogue {
    kind: HostileKind,
    /// Its kind's place in [`Attacker::tallies`].
    tally: usize,
    socket: Held,
    phase: Phase,
    /// When `phase` began: a connect or a greeting that takes `timeout` is given up.
    since: Instant,
    /// Counted in [`Attacker::setting_up`].
    setting_up: bool,
    /// The last time the server's kernel took any of its bytes.
    progress_at: Instant,
    /// Its last write or send would have blocked: it waits for a writable event.
    blocked: bool,
    /// On [`Attacker::ready`].
    queued: bool,
    /// The start of the line it is receiving (dribblers, idle and partial-line clients),
    /// up to [`LINE_KEPT`] bytes.
    line: Vec<u8>,
    /// A partial-line client: bytes of its line not yet taken by the kernel.
    unsent: usize,
    /// An `ERR` line it has read.
    err: Option<ErrLine>,
}

/// The readiness an event reported, copied out of the poll's event list.
#[derive(Clone, Copy)]
struct Readiness {
    token: usize,
    writable: bool,
    error: bool,
    read_closed: bool,
}

/// The poll loop and the hostile clients it drives.
pub(super) struct Attacker<'a> {
    options: &'a Options,
    poll: Poll,
    events: Events,
    /// Indexed by token: client `i` is registered as `Token(i)`.
    rogues: Vec<Rogue>,
    /// Each client's kind (as its place in `tallies`), in the order they are opened.
    plan: Vec<usize>,
    /// One per kind in this engine's share.
    tallies: Vec<HostileTally>,
    /// The line length of each kind in `tallies` (partial-line clients; 0 for the rest).
    line_bytes: Vec<usize>,
    /// Clients with work left over from their turn's budget.
    ready: Vec<usize>,
    /// The ready list being worked through; kept to reuse its allocation.
    pressing: Vec<usize>,
    /// Dribblers by when their next byte is due. Every dribbler waits the same interval,
    /// so pushing at the back keeps it in order.
    dribbles: VecDeque<(Instant, usize)>,
    /// Clients connecting, or waiting for their greeting.
    setting_up: usize,
    /// This engine's share of [`MAX_SETUPS_IN_FLIGHT`].
    max_setups: usize,
    /// Open clients in batches; turned off by the first failed set-up, as in the honest
    /// engines, so a silent server costs one `timeout`, not one per batch.
    batch_setups: bool,
    /// Where dribblers and idle clients read, one after another: each read's bytes are
    /// looked at before the next client reads.
    buffer: Vec<u8>,
    /// The last poll's events, copied out; kept to reuse its allocation.
    readiness: Vec<Readiness>,
}

impl<'a> Attacker<'a> {
    /// An attacker for `share`, one of `engines` that set up side by side.
    pub(super) fn new(
        options: &'a Options,
        share: &[Hostile],
        engines: usize,
    ) -> io::Result<Attacker<'a>> {
        let tallies = share
            .iter()
            .map(|h| {
                let mut tally = HostileTally::new(h.kind);
                tally.clients = h.clients as u64;
                tally
            })
            .collect();
        let line_bytes = share.iter().map(|h| h.line_bytes).collect();
        let plan = share
            .iter()
            .enumerate()
            .flat_map(|(tally, h)| std::iter::repeat_n(tally, h.clients))
            .collect();
        Ok(Attacker {
            options,
            poll: Poll::new()?,
            events: Events::with_capacity(EVENTS_CAPACITY),
            rogues: Vec::new(),
            plan,
            tallies,
            line_bytes,
            ready: Vec::new(),
            pressing: Vec::new(),
            dribbles: VecDeque::new(),
            setting_up: 0,
            max_setups: (MAX_SETUPS_IN_FLIGHT / engines.max(1)).max(1),
            batch_setups: true,
            buffer: vec![0; READ_BUFFER],
            readiness: Vec::with_capacity(EVENTS_CAPACITY),
        })
    }

    /// Sets every client up and lets it misbehave, calls `set_up` once all of them are set
    /// up (or have failed to be), and goes on until `stop` is set. Then counts how each
    /// client stands, closes them all, and returns the counts.
    pub(super) fn run(
        &mut self,
        set_up: &mut dyn FnMut(),
        stop: &AtomicBool,
    ) -> io::Result<Vec<HostileTally>> {
        let mut announced = false;
        let mut next_sweep = Instant::now();
        loop {
            let now = Instant::now();
            self.open_more(now);
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP_INTERVAL;
            }
            if !announced && self.rogues.len() == self.plan.len() && self.setting_up == 0 {
                set_up();
                announced = true;
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let timeout = if self.ready.is_empty() {
                let wake = match self.dribbles.front() {
                    Some(&(due, _)) => due.min(next_sweep),
                    None => next_sweep,
                };
                wake.saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            self.poll_once(timeout)?;
            self.press_ready();
            self.dribble(Instant::now());
        }
        Ok(self.finish(Instant::now()))
    }

    /// Opens clients until all are open or, while batching, this engine's share of
    /// [`MAX_SETUPS_IN_FLIGHT`] are setting up.
    fn open_more(&mut self, now: Instant) {
        while self.rogues.len() < self.plan.len()
            && (!self.batch_setups || self.setting_up < self.max_setups)
        {
            let tally = self.plan[self.rogues.len()];
            self.open(tally, now);
        }
    }

    /// Gives up on connects and greetings older than `timeout`, and reopens the churners
    /// that are waiting. Runs every [`SWEEP_INTERVAL`].
    fn sweep(&mut self, now: Instant) {
        let timeout = self.options.timeout;
        for id in 0..self.rogues.len() {
            let rogue = &mut self.rogues[id];
            let overdue = now.saturating_duration_since(rogue.since) >= timeout;
            match rogue.phase {
                Phase::Connecting if overdue => self.failed_to_connect(id, now),
                // Connected but not greeted: no longer holding up the set-up, it stays
                // connected as an idle client does anyway.
                Phase::Greeting if overdue => {
                    rogue.phase = Phase::Pressing;
                    self.set_up_done(id);
                }
                // A partial line the server stopped taking: it stays as it is, and the
                // rest open at once, as after a failed set-up, so a server that takes no
                // more lines costs one `timeout`, not one per batch.
                Phase::Pressing if overdue && rogue.setting_up => {
                    self.batch_setups = false;
                    self.set_up_done(id);
                }
                Phase::Waiting => self.reconnect(id, now),
                _ => {}
            }
        }
    }

    /// Opens the next client, of the kind at `tally`.
    fn open(&mut self, tally: usize, now: Instant) {
        let kind = self.tallies[tally].kind;
        let id = self.rogues.len();
        self.rogues.push(Rogue {
            kind,
            tally,
            socket: Held::None,
            phase: Phase::Connecting,
            since: now,
            setting_up: kind != HostileKind::UdpFlood,
            progress_at: now,
            blocked: false,
            queued: false,
            line: Vec::new(),
            unsent: 0,
            err: None,
        });
        if kind == HostileKind::UdpFlood {
            match self.open_udp(id) {
                Ok(()) => {
                    self.tallies[tally].connected += 1;
                    self.rogues[id].phase = Phase::Pressing;
                    self.queue(id);
                }
                Err(e) => {
                    log::debug!("hostile {id}: cannot open a UDP socket: {e}");
                    self.end(id, Outcome::Failed);
                }
            }
            return;
        }
        self.setting_up += 1;
        self.reconnect(id, now);
    }

    /// Starts a TCP connect for client `id` and registers it; a churner does this once per
    /// connection.
    fn reconnect(&mut self, id: usize, now: Instant) {
        let rogue = &mut self.rogues[id];
        rogue.phase = Phase::Connecting;
        rogue.since = now;
        match connect_tcp(self.options.addr) {
            Ok(mut stream) => {
                match self.poll.registry().register(
                    &mut stream,
                    Token(id),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    Ok(()) => rogue.socket = Held::Tcp(stream),
                    Err(e) => {
                        log::debug!("hostile {id}: cannot register: {e}");
                        self.failed_to_connect(id, now);
                    }
                }
            }
            Err(e) => {
                log::debug!("hostile {id}: cannot connect: {e}");
                self.failed_to_connect(id, now);
            }
        }
    }

    fn open_udp(&mut self, id: usize) -> io::Result<()> {
        let addr = self.options.addr;
        let any: SocketAddr = if addr.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let mut socket = UdpSocket::bind(any)?;
        // Connected, so a port with nothing behind it comes back as ECONNREFUSED. It never
        // reads: replies pile up in its receive buffer, and the kernel drops the rest.
        socket.connect(addr)?;
        self.poll
            .registry()
            .register(&mut socket, Token(id), Interest::WRITABLE)?;
        self.rogues[id].socket = Held::Udp(socket);
        Ok(())
    }

    /// Waits for events until `timeout` at the latest, and lets each client handle its own.
    fn poll_once(&mut self, timeout: Duration) -> io::Result<()> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        // Copied out first: handling an event needs `self` mutably.
        self.readiness.clear();
        self.readiness
            .extend(self.events.iter().map(|event| Readiness {
                token: event.token().0,
                writable: event.is_writable(),
                error: event.is_error(),
                read_closed: event.is_read_closed(),
            }));
        for index in 0..self.readiness.len() {
            let readiness = self.readiness[index];
            if readiness.token < self.rogues.len() {
                self.on_event(readiness, Instant::now());
            }
        }
        Ok(())
    }

    fn on_event(&mut self, readiness: Readiness, now: Instant) {
        let id = readiness.token;
        let rogue = &mut self.rogues[id];
        match rogue.phase {
            // A late event for a socket already closed.
            Phase::Done | Phase::Waiting => return,
            Phase::Connecting => {
                let Held::Tcp(stream) = &rogue.socket else {
                    return;
                };
                match connect_finished(stream) {
                    Ok(false) => return,
                    Ok(true) => return self.connected(id, now),
                    Err(e) => {
                        log::debug!("hostile {id}: connect failed: {e}");
                        return self.failed_to_connect(id, now);
                    }
                }
            }
            Phase::Greeting | Phase::Pressing => {}
        }
        match rogue.kind {
            HostileKind::SlowReader => {
                // It never reads, so the poll is the only way it learns the server is gone.
                if readiness.error {
                    self.end(id, Outcome::Reset);
                } else if readiness.read_closed {
                    self.end(id, Outcome::Closed);
                } else if readiness.writable {
                    rogue.blocked = false;
                    self.queue(id);
                }
            }
            HostileKind::Dribbler | HostileKind::Idle => self.receive(id, now),
            HostileKind::PartialLine => {
                self.receive(id, now);
                let rogue = &mut self.rogues[id];
                if readiness.writable && rogue.phase == Phase::Pressing && rogue.unsent > 0 {
                    rogue.blocked = false;
                    self.queue(id);
                }
            }
            // A churner is never connected when an event comes: it closes at once.
            HostileKind::Churn => {}
            HostileKind::UdpFlood => {
                if readiness.error {
                    self.end(id, Outcome::Failed);
                } else if readiness.writable {
                    rogue.blocked = false;
                    self.queue(id);
                }
            }
        }
    }

    /// Client `id`'s TCP connect completed.
    fn connected(&mut self, id: usize, now: Instant) {
        let rogue = &mut self.rogues[id];
        self.tallies[rogue.tally].connected += 1;
        rogue.phase = Phase::Pressing;
        rogue.since = now;
        rogue.progress_at = now;
        match rogue.kind {
            HostileKind::SlowReader => {
                self.set_up_done(id);
                self.queue(id);
            }
            HostileKind::Dribbler => {
                self.set_up_done(id);
                // The first byte at once: the line has started, and the server's clock on it
                // with it.
                self.dribbles.push_back((now, id));
                self.receive(id, now);
            }
            HostileKind::Idle => {
                if self.options.greeting.is_empty() {
                    self.set_up_done(id);
                } else {
                    rogue.phase = Phase::Greeting;
                }
                // The event that said connected may also have said readable: this edge
                // will not come again.
                self.receive(id, now);
            }
            HostileKind::Churn => self.churn(id, now),
            // Set up once its whole line is in the server's hands (or `timeout` has passed),
            // so the honest clients start beside lines already sent.
            HostileKind::PartialLine => {
                rogue.unsent = self.line_bytes[rogue.tally];
                self.queue(id);
                self.receive(id, now);
            }
            HostileKind::UdpFlood => unreachable!("UDP sockets do not connect"),
        }
    }

    /// One churn connection: a few lines, then close with whatever came back unread, and at
    /// once the next connection.
    fn churn(&mut self, id: usize, now: Instant) {
        self.set_up_done(id);
        let rogue = &mut self.rogues[id];
        let tally = &mut self.tallies[rogue.tally];
        if let Held::Tcp(stream) = &mut rogue.socket {
            match stream.write(CHURN_LINES) {
                Ok(n) => tally.bytes_sent += n as u64,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => tally.count(Outcome::Reset),
            }
        }
        self.close(id);
        self.reconnect(id, now);
    }

    /// Reads what the server sent a dribbler or an idle client, until WouldBlock, keeping
    /// the start of each line to spot `ERR` lines, and counts the close if it came.
    fn receive(&mut self, id: usize, now: Instant) {
        let rogue = &mut self.rogues[id];
        let Held::Tcp(stream) = &mut rogue.socket else {
            return;
        };
        loop {
            match stream.read(&mut self.buffer) {
                Ok(0) => {
                    let outcome = rogue.err.map_or(Outcome::Closed, Outcome::Err);
                    return self.end(id, outcome);
                }
                Ok(n) => {
                    for &byte in &self.buffer[..n] {
                        if byte != b'\n' {
                            if rogue.line.len() < LINE_KEPT {
                                rogue.line.push(byte);
                            }
                            continue;
                        }
                        if let Some(err) = ErrLine::of(&rogue.line) {
                            rogue.err = Some(err);
                        }
                        rogue.line.clear();
                        if rogue.phase == Phase::Greeting {
                            rogue.phase = Phase::Pressing;
                            rogue.since = now;
                            if rogue.setting_up {
                                rogue.setting_up = false;
                                self.setting_up -= 1;
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    let outcome = rogue.err.map_or(Outcome::Reset, Outcome::Err);
                    return self.end(id, outcome);
                }
            }
        }
    }

    fn queue(&mut self, id: usize) {
        let rogue = &mut self.rogues[id];
        if !rogue.queued {
            rogue.queued = true;
            self.ready.push(id);
        }
    }

    /// Client `id` no longer holds up the set-up.
    fn set_up_done(&mut self, id: usize) {
        let rogue = &mut self.rogues[id];
        if rogue.setting_up {
            rogue.setting_up = false;
            self.setting_up -= 1;
        }
    }

    /// A connect that failed, timed out or could not be made. A churner counts it and tries
    /// again at the next sweep; any other client has failed for good.
    fn failed_to_connect(&mut self, id: usize, now: Instant) {
        self.batch_setups = false;
        if self.rogues[id].kind == HostileKind::Churn {
            self.set_up_done(id);
            self.close(id);
            let rogue = &mut self.rogues[id];
            self.tallies[rogue.tally].count(Outcome::Failed);
            rogue.phase = Phase::Waiting;
            rogue.since = now;
        } else {
            self.end(id, Outcome::Failed);
        }
    }

    /// Counts client `id`'s outcome and closes it for good.
    fn end(&mut self, id: usize, outcome: Outcome) {
        self.set_up_done(id);
        self.close(id);
        let rogue = &mut self.rogues[id];
        self.tallies[rogue.tally].count(outcome);
        rogue.phase = Phase::Done;
    }

    /// Deregisters and closes client `id`'s socket, if it has one.
    fn close(&mut self, id: usize) {
        let registry = self.poll.registry();
        // The socket is closed when dropped right after; a failure here changes nothing.
        let _ = match &mut self.rogues[id].socket {
            Held::Tcp(stream) => registry.deregister(stream),
            Held::Udp(socket) => registry.deregister(socket),
            Held::None => Ok(()),
        };
        self.rogues[id].socket = Held::None;
    }

    /// The end of the run: counts how each client still open stands, closes every one,
    /// and hands back the counts. Clients never opened (the run was stopped during set-up)
    /// count as failed.
    fn finish(&mut self, now: Instant) -> Vec<HostileTally> {
        for id in 0..self.rogues.len() {
            let rogue = &self.rogues[id];
            let stalled =
                rogue.blocked && now.saturating_duration_since(rogue.progress_at) >= PAUSED_AFTER;
            let outcome = match (rogue.kind, rogue.phase) {
                (_, Phase::Done) => continue,
                // A churner's connections were counted as they went.
                (HostileKind::Churn, _) => {
                    self.close(id);
                    continue;
                }
                (_, Phase::Connecting) => Outcome::Failed,
                _ if stalled => Outcome::Paused,
                _ => Outcome::Open,
            };
            self.end(id, outcome);
        }
        for &tally in &self.plan[self.rogues.len()..] {
            self.tallies[tally].count(Outcome::Failed);
        }
        std::mem::take(&mut self.tallies)
    }
}

/// A non-blocking TCP connect to `addr` with [`SOCKET_BUFFER`]-sized buffers, set before
/// the connect so the window it advertises matches.
fn connect_tcp(addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_send_buffer_size(SOCKET_BUFFER)?;
    socket.set_recv_buffer_size(SOCKET_BUFFER)?;
    socket.set_nonblocking(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// Whether a non-blocking connect has completed, by the readiness dance mio documents: an
/// error, or a peer address once the handshake is done. `Err` if it failed.
fn connect_finished(stream: &TcpStream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e)
            if e.kind() == io::ErrorKind::NotConnected
                || e.raw_os_error() == Some(libc::EINPROGRESS) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}
