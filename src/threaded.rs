//! The baseline: blocking `std::net` I/O with one OS thread per TCP connection, one thread
//! for UDP, and the same [`crate::protocol`] code as the reactor.
//!
//! This module owns the accept loop, the per-connection threads, the UDP thread, the
//! registry of live connections that graceful shutdown walks, and the signal thread. It must
//! not frame, parse or build replies itself (that is `protocol.rs`), nor parse flags or set
//! up sockets (`cli.rs`, `net.rs`): it is the honest "obvious way" a careful engineer writes
//! this server, so that `cargo bench` compares two designs rather than two protocols.
//!
//! Each thread blocks in `read`, `write` or `accept`. Blocking calls cannot be cancelled, so
//! stopping works by making the kernel wake them: `shutdown(SHUT_RD)` on a socket makes a
//! blocked read or accept return at once on Linux (see [`StopHandle`] and [`Server::run`]).
//!
//! With `--tls-cert` a connection thread reads and writes through a rustls session over its
//! socket instead of the socket itself (a `Channel`, `threaded/tls.rs`): the handshake
//! before the greeting, within `--handshake-timeout` of the accept; `close_notify` before
//! the lingering close. Everything between is the plain thread's code.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};

use crate::config::ServerConfig;
use crate::net::{self, ConnectionsPerAddress, ACCEPT_BACKOFF, LINGER_TIMEOUT, MAX_DATAGRAM};
use crate::protocol::{self, Flow, ProtocolConfig, Session};
use crate::proxy;
use crate::running::Running;
use crate::signals::ThreadSignals;
use crate::stats::Stats;

#[cfg(feature = "tls")]
mod tls;

/// Stack size of a connection thread. The default (2 MiB, or `RUST_MIN_STACK`) is address
/// space reserved per connection; with 10,000 connections that is 20 GiB of mappings for
/// threads whose deepest frames are a `read`, a `write` and a log call. Buffers live on the
/// heap, so 64 KiB leaves ample headroom.
const CONNECTION_STACK_SIZE: usize = 64 * 1024;

/// Memory mappings each connection thread adds: its stack and the stack's guard page, and
/// the signal stack std gives every thread (to report a stack overflow) with its guard page.
/// Measured on Linux: 1,000 connection threads add 4,028 mappings.
const MAPPINGS_PER_THREAD: u64 = 4;

/// Mappings left for everything else in the process: the binary, its libraries, the
/// allocator's arenas (about 40 with no connection at all).
const OTHER_MAPPINGS: u64 = 1_024;

/// Bytes one `read` may return. 16 KiB takes a burst of pipelined requests in one system
/// call while keeping a connection's memory at a fraction of its stack reservation.
const READ_BUFFER_SIZE: usize = 16 * 1024;

/// Capacity the reply buffer keeps between reads: a full read of ordinary requests fits,
/// and an outsized burst is given back to the allocator once it has been written.
const OUTPUT_KEEP_CAPACITY: usize = 2 * READ_BUFFER_SIZE;

/// The UDP thread's read timeout: a backstop that bounds how long it can miss a stop if the
/// wake-up datagram [`StopHandle::stop`] sends is lost (it never is on loopback, but UDP
/// promises nothing).
const UDP_STOP_CHECK: Duration = Duration::from_secs(1);

/// After the shutdown grace, connections still busy are cut off; this is how long to wait
/// for their threads to notice, so their counts still make it into the summary.
const CUT_OFF_WAIT: Duration = Duration::from_millis(500);

/// A server with its sockets bound, not yet serving. [`Server::run`] serves on the calling
/// thread; [`spawn`] does both on a thread of its own.
pub struct Server {
    config: ServerConfig,
    shared: Arc<Shared>,
    udp: Option<UdpSocket>,
    tcp_addr: SocketAddr,
    udp_addr: Option<SocketAddr>,
    /// Registered at bind time, not in `run`, so a SIGTERM that arrives right after the
    /// startup line is printed is already a graceful stop rather than the default kill.
    signals: Option<ThreadSignals>,
}

/// Stops a [`Server`] gracefully from any thread, any number of times, before or during
/// [`Server::run`]. Cheap to clone.
#[derive(Clone)]
pub struct StopHandle {
    shared: Arc<Shared>,
}

/// State the accept loop, the connection threads, the UDP thread and [`StopHandle`] share.
struct Shared {
    stopping: AtomicBool,
    /// Held here rather than by `run` so that [`StopHandle::stop`] can never shut down a
    /// descriptor number that has been closed and reused for something else.
    listener: TcpListener,
    /// Where to send the datagram that wakes the UDP thread.
    udp_wake: Option<SocketAddr>,
    /// Every connection whose thread is running, so shutdown can wake them. It is also the
    /// count `--max-connections` checks.
    connections: Mutex<HashMap<u64, Arc<TcpStream>>>,
    /// Signalled whenever `connections` becomes empty.
    all_closed: Condvar,
    /// Connections per client address, for `--max-connections-per-ip`.
    per_address: ConnectionsPerAddress,
    totals: Totals,
}

/// What finished connections and the UDP thread did; the accept loop adds its own counts.
#[derive(Default)]
struct Totals {
    messages: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    udp_dropped: AtomicU64,
    refused_per_ip: AtomicU64,
    /// `--proxy-protocol`: connections closed for want of a valid PROXY header.
    proxy_rejected: AtomicU64,
    /// Connections that got a thread but were never greeted (no valid PROXY header, or
    /// refused for the address in it): not counted as served.
    not_greeted: AtomicU64,
    /// `--tls-cert`: connections closed before their handshake was complete. Counted as
    /// served too, as the reactor counts them.
    tls_rejected: AtomicU64,
}

impl Totals {
    fn add(&self, messages: u64, bytes_in: u64, bytes_out: u64) {
        self.messages.fetch_add(messages, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
    }
}

impl Shared {
    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// The registry lock. A thread that panicked while holding it cannot have left the map
    /// half-updated (every critical section is one insert, remove or walk), so poisoning is
    /// ignored rather than spread to every other connection.
    fn connections(&self) -> MutexGuard<'_, HashMap<u64, Arc<TcpStream>>> {
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until no connection thread is left, or `timeout` passes; returns how many are
    /// still running.
    fn wait_for_connections(&self, timeout: Duration) -> usize {
        let guard = self.connections();
        let (guard, _) = self
            .all_closed
            .wait_timeout_while(guard, timeout, |live| !live.is_empty())
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.len()
    }

    /// Shuts down `how` on every live connection.
    fn shutdown_connections(&self, how: Shutdown) {
        for stream in self.connections().values() {
            // ENOTCONN if the peer already went away: nothing left to wake.
            let _ = stream.shutdown(how);
        }
    }
}

impl StopHandle {
    /// Begins a graceful stop: no new connections, replies already owed are delivered, then
    /// [`Server::run`] returns. Does not wait for that; later calls do nothing.
    pub fn stop(&self) {
        if self.shared.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        // A thread blocked in accept() cannot be cancelled, but on Linux shutting down the
        // read side of a listening socket stops it listening and makes accept() fail with
        // EINVAL at once; the accept loop sees `stopping` and leaves. Clients still in the
        // backlog are reset, as closing the listener would do. Other kernels refuse to
        // shut down a listener, so there one connection to ourselves wakes accept().
        let listener = socket2::SockRef::from(&self.shared.listener);
        if listener.shutdown(Shutdown::Read).is_err() {
            if let Ok(addr) = self.shared.listener.local_addr() {
                let _ = TcpStream::connect_timeout(&reachable(addr), UDP_STOP_CHECK);
            }
        }
        // The UDP thread blocks in recv_from(); one datagram from ourselves wakes it and it
        // then sees `stopping`. Its read timeout covers the case where this send fails.
        if let Some(addr) = self.shared.udp_wake {
            let local: SocketAddr = match addr {
                SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            if let Err(e) = UdpSocket::bind(local).and_then(|s| s.send_to(&[], addr)) {
                debug!(
                    "could not wake the UDP thread ({e}); it will notice within {UDP_STOP_CHECK:?}"
                );
            }
        }
    }
}

impl Server {
    /// Binds the TCP listener (with `config.backlog`) and, unless disabled, the UDP socket,
    /// and registers the signal handlers if `config.handle_signals`.
    pub fn bind(config: ServerConfig) -> io::Result<Server> {
        // As `cli.rs` says for the flags: a balancer's PROXY header would come before the
        // ClientHello, which the TLS session would read as garbage.
        if config.tls_enabled() && config.proxy_protocol {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "--proxy-protocol and --tls-cert cannot be used together yet",
            ));
        }
        let bound = net::bind(config.listen, config.udp, config.backlog, false)?;
        let tcp_addr = bound.tcp.local_addr()?;
        let udp_addr = match &bound.udp {
            Some(udp) => Some(udp.local_addr()?),
            None => None,
        };
        let signals = if config.handle_signals {
            Some(ThreadSignals::new()?)
        } else {
            None
        };
        let shared = Arc::new(Shared {
            stopping: AtomicBool::new(false),
            listener: bound.tcp,
            udp_wake: udp_addr.map(reachable),
            connections: Mutex::new(HashMap::new()),
            all_closed: Condvar::new(),
            per_address: ConnectionsPerAddress::new(config.max_connections_per_ip),
            totals: Totals::default(),
        });
        Ok(Server {
            config,
            shared,
            udp: bound.udp,
            tcp_addr,
            udp_addr,
            signals,
        })
    }

    /// The TCP address actually bound (port 0 resolved).
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// The UDP address actually bound, or `None` when UDP is off.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }

    /// A handle that stops this server gracefully; take it before calling [`Server::run`].
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Serves until stopped (by a [`StopHandle`] or, with `handle_signals`, by SIGINT or
    /// SIGTERM), then delivers replies already owed for up to `shutdown_grace`, closes every
    /// connection, logs a one-line summary and returns it.
    ///
    /// With `handle_signals`, a second signal during the stop exits the process at once with
    /// status 128 + the signal number, as a shell reports a process killed by that signal.
    pub fn run(mut self) -> io::Result<Stats> {
        if self.config.threads > 1 {
            warn!(
                "--threads {} is a reactor feature; the threaded server always runs one \
                 accept loop and ignores it",
                self.config.threads
            );
        }
        if let Some((max_map_count, ceiling)) = thread_ceiling() {
            if self.config.max_connections > ceiling {
                warn!(
                    "--max-connections {} needs more threads than vm.max_map_count {max_map_count} \
                     leaves room for: connections beyond {ceiling} will be refused",
                    self.config.max_connections
                );
                self.config.max_connections = ceiling;
            }
        }
        let signal_watch = match self.signals.take() {
            Some(signals) => Some(watch_signals(
                signals,
                self.stop_handle(),
                self.config.clone(),
            )?),
            None => None,
        };
        let udp_thread = match self.udp.take() {
            Some(socket) => {
                let shared = Arc::clone(&self.shared);
                let mode = self.config.protocol.udp_mode().clone();
                let spawned = thread::Builder::new()
                    .name("udp".into())
                    .spawn(move || serve_udp(&socket, &mode, &shared));
                match spawned {
                    Ok(thread) => Some(thread),
                    Err(e) => {
                        self.stop_handle().stop();
                        return Err(io::Error::new(
                            e.kind(),
                            format!("cannot start the UDP thread: {e}"),
                        ));
                    }
                }
            }
            None => None,
        };

        let (connections, refused) = self.accept_loop();

        // Stopping. Threads blocked in read() wake with EOF once their read side is shut
        // down; data already queued is still returned first, so every complete line that
        // arrived gets its reply. Shutting down only the read side leaves the write side
        // open for those replies.
        self.shared.shutdown_connections(Shutdown::Read);
        let grace = self.config.shutdown_grace;
        let left = self.shared.wait_for_connections(grace);
        if left > 0 {
            // Still writing to clients that do not read. Shutting down both sides makes
            // their blocked write() fail, so the threads end and nothing is left behind.
            warn!("{left} connections still busy after the {grace:?} shutdown grace; cutting them off");
            self.shared.shutdown_connections(Shutdown::Both);
            self.shared.wait_for_connections(CUT_OFF_WAIT);
        }
        if let Some(thread) = udp_thread {
            if thread.join().is_err() {
                error!("the UDP thread panicked");
            }
        }
        if let Some(watch) = signal_watch {
            watch.close();
        }

        let totals = &self.shared.totals;
        let stats = Stats {
            connections: connections - totals.not_greeted.load(Ordering::Relaxed),
            proxy_rejected: totals.proxy_rejected.load(Ordering::Relaxed),
            tls_rejected: totals.tls_rejected.load(Ordering::Relaxed),
            refused,
            refused_per_ip: totals.refused_per_ip.load(Ordering::Relaxed),
            messages: totals.messages.load(Ordering::Relaxed),
            bytes_in: totals.bytes_in.load(Ordering::Relaxed),
            bytes_out: totals.bytes_out.load(Ordering::Relaxed),
            udp_dropped: totals.udp_dropped.load(Ordering::Relaxed),
            udp_datagrams: 0,
            longest_turn: Duration::ZERO,
            peak_buffered: 0,
        };
        info!("{stats}");
        Ok(stats)
    }

    /// Accepts until stopped, starting a thread per connection. Returns the connections
    /// served and refused.
    fn accept_loop(&self) -> (u64, u64) {
        let mut next_id: u64 = 0;
        let (mut served, mut refused) = (0, 0);
        while !self.shared.is_stopping() {
            let (stream, peer) = match self.shared.listener.accept() {
                Ok(accepted) => accepted,
                Err(_) if self.shared.is_stopping() => break,
                // The client gave up before we got to it, or a signal interrupted us.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                // EMFILE, ENFILE, ENOBUFS, ENOMEM: out of a resource that a closing
                // connection will give back. Serving the connections we have beats exiting.
                Err(e) => {
                    warn!("accept failed: {e}; retrying in {ACCEPT_BACKOFF:?}");
                    thread::sleep(ACCEPT_BACKOFF);
                    continue;
                }
            };
            next_id += 1;
            match self.start_connection(next_id, stream, peer) {
                Admission::Served => served += 1,
                Admission::Busy => refused += 1,
                Admission::TooManyFromAddress => {}
            }
        }
        (served, refused)
    }

    /// Registers the connection and starts its thread, or refuses it.
    fn start_connection(&self, id: u64, stream: TcpStream, peer: SocketAddr) -> Admission {
        let stream = Arc::new(stream);
        // Behind a balancer the address to count is in the PROXY header, read by the
        // connection's thread.
        let counted = (!self.config.proxy_protocol).then(|| peer.ip());
        if counted.is_some_and(|ip| !self.shared.per_address.admit(ip)) {
            debug!("refusing {peer}: its address is at --max-connections-per-ip");
            net::refuse(
                socket2::SockRef::from(&*stream),
                protocol::TOO_MANY_FROM_ADDRESS,
            );
            self.shared
                .totals
                .refused_per_ip
                .fetch_add(1, Ordering::Relaxed);
            return Admission::TooManyFromAddress;
        }
        {
            let mut live = self.shared.connections();
            if live.len() >= self.config.max_connections {
                drop(live);
                debug!(
                    "refusing {peer}: at --max-connections {}",
                    self.config.max_connections
                );
                net::refuse(socket2::SockRef::from(&*stream), protocol::SERVER_BUSY);
                counted.inspect(|&ip| self.shared.per_address.release(ip));
                return Admission::Busy;
            }
            live.insert(id, Arc::clone(&stream));
        }
        let shared = Arc::clone(&self.shared);
        let protocol = self.config.protocol.clone();
        let settings = SocketSettings {
            idle: self.config.idle_timeout,
            line: self.config.line_timeout,
            send_buffer: self.config.send_buffer,
            recv_buffer: self.config.recv_buffer,
        };
        let thread_stream = Arc::clone(&stream);
        let proxied = self.config.proxy_protocol;
        let tls = tls_config(&self.config);
        // `--handshake-timeout` counts from here, as in the reactor: the thread may start a
        // moment later.
        let (accepted, handshake_timeout) = (Instant::now(), self.config.handshake_timeout);
        let spawned = thread::Builder::new()
            .name(format!("conn-{id}"))
            .stack_size(CONNECTION_STACK_SIZE)
            .spawn(move || {
                let _registration = Registration {
                    shared: &shared,
                    id,
                };
                let channel = match Channel::open(&thread_stream, tls) {
                    Ok(channel) => channel,
                    // rustls refused a config it accepted at startup: not this client's doing.
                    Err(e) => {
                        warn!("cannot serve {peer}: {e}");
                        shared.totals.not_greeted.fetch_add(1, Ordering::Relaxed);
                        counted.inspect(|&ip| shared.per_address.release(ip));
                        return;
                    }
                };
                let mut connection = Connection::new(&thread_stream, channel, &protocol);
                let mut counted = counted;
                let mut early = Vec::new();
                if proxied {
                    match connection.admit_proxied(peer, &shared, &mut early) {
                        Some(ip) => counted = Some(ip),
                        None => {
                            shared.totals.not_greeted.fetch_add(1, Ordering::Relaxed);
                            shared
                                .totals
                                .add(0, connection.bytes_in, connection.bytes_out);
                            return;
                        }
                    }
                }
                if let Err(e) = connection.set_socket_options(settings) {
                    debug!("{peer}: {e}");
                } else if let Err(why) = connection.channel.handshake(accepted, handshake_timeout) {
                    shared.totals.tls_rejected.fetch_add(1, Ordering::Relaxed);
                    info!("{peer}: TLS handshake failed, closing: {why}");
                } else if let Err(e) = connection.serve(settings, &shared.stopping, &early) {
                    debug!("{peer}: {e}");
                }
                // An EOF we caused at stop (shutdown(SHUT_RD)) is no truncation.
                if connection.channel.truncated() && !shared.is_stopping() {
                    info!("{peer}: TCP EOF without a TLS close_notify: a truncated session");
                }
                connection.channel.end_session();
                let lingered = close_politely(&thread_stream, &mut connection.read_buffer);
                shared.totals.add(
                    connection.session.messages(),
                    connection.bytes_in + lingered,
                    connection.bytes_out,
                );
                counted.inspect(|&ip| shared.per_address.release(ip));
                debug!("{peer}: closed");
            });
        match spawned {
            Ok(_detached) => {
                debug!("{peer}: connected");
                Admission::Served
            }
            // Out of memory or threads (RLIMIT_NPROC, kernel.threads-max): this client is
            // turned away, the ones already served are not disturbed.
            Err(e) => {
                warn!("cannot start a thread for {peer}: {e}; refusing it");
                self.shared.connections().remove(&id);
                net::refuse(socket2::SockRef::from(&*stream), protocol::SERVER_BUSY);
                counted.inspect(|&ip| self.shared.per_address.release(ip));
                Admission::Busy
            }
        }
    }
}

/// What became of an accepted connection.
enum Admission {
    Served,
    /// Told `ERR server busy`: at `--max-connections` or out of threads.
    Busy,
    /// Told its address is at `--max-connections-per-ip`.
    TooManyFromAddress,
}

/// What a connection thread sets on its socket: the timeouts it enforces with the read
/// timeout, and the buffer sizes.
#[derive(Clone, Copy)]
struct SocketSettings {
    idle: Option<Duration>,
    line: Option<Duration>,
    send_buffer: Option<usize>,
    recv_buffer: Option<usize>,
}

/// The most connection threads the kernel's limit on mappings per process leaves room for,
/// with that limit; `None` where it cannot be read (not Linux).
///
/// Why it matters: a thread that cannot map its signal stack makes std abort the whole
/// process, since there is no one to return the error to once the thread has started.
/// With Linux's default limit of 65,530 that happens at about 16,000 threads, so the
/// server refuses connections beyond this, as beyond `--max-connections`, rather than die
/// with every client it holds.
fn thread_ceiling() -> Option<(u64, usize)> {
    let text = std::fs::read_to_string("/proc/sys/vm/max_map_count").ok()?;
    let max_map_count: u64 = text.trim().parse().ok()?;
    Some((max_map_count, threads_within(max_map_count)))
}

/// How many connection threads fit in `max_map_count` mappings.
fn threads_within(max_map_count: u64) -> usize {
    let threads = max_map_count.saturating_sub(OTHER_MAPPINGS) / MAPPINGS_PER_THREAD;
    usize::try_from(threads).unwrap_or(usize::MAX)
}

/// Removes a connection from the registry when its thread ends, however it ends.
struct Registration<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut live = self.shared.connections();
        live.remove(&self.id);
        if live.is_empty() {
            self.shared.all_closed.notify_all();
        }
    }
}

/// One TCP connection, served by its own thread with blocking calls.
struct Connection<'a> {
    /// The socket, for its options and timeouts, and for the PROXY header (which comes
    /// before anything else).
    socket: &'a TcpStream,
    /// What requests are read from and replies written to.
    channel: Channel<'a>,
    protocol: &'a ProtocolConfig,
    session: Session,
    read_buffer: Vec<u8>,
    /// Replies produced by the last read, written before the next one.
    pending_output: Vec<u8>,
    bytes_in: u64,
    bytes_out: u64,
}

impl<'a> Connection<'a> {
    fn new(
        socket: &'a TcpStream,
        channel: Channel<'a>,
        protocol: &'a ProtocolConfig,
    ) -> Connection<'a> {
        Connection {
            socket,
            channel,
            protocol,
            session: Session::new(),
            read_buffer: vec![0; READ_BUFFER_SIZE],
            pending_output: Vec::new(),
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    /// `--proxy-protocol`: reads the PROXY header (within [`proxy::HEADER_TIMEOUT`] of
    /// now), then admits the client it names under `--max-connections-per-ip`. Returns the
    /// address counted, or `None` when the connection is to close ungreeted (logged).
    /// Bytes that came behind the header go to `early`, to be answered after the greeting.
    fn admit_proxied(
        &mut self,
        balancer: SocketAddr,
        shared: &Shared,
        early: &mut Vec<u8>,
    ) -> Option<std::net::IpAddr> {
        let source = match self.read_proxy_header(early) {
            Ok(source) => source,
            Err(why) => {
                shared.totals.proxy_rejected.fetch_add(1, Ordering::Relaxed);
                info!("{balancer}: closed without a greeting: {why}");
                return None;
            }
        };
        // No address in the header (LOCAL, a health check): the balancer stands.
        let client = source.unwrap_or(balancer);
        if !shared.per_address.admit(client.ip()) {
            debug!("refused {client} (via {balancer}): at --max-connections-per-ip");
            net::refuse(
                socket2::SockRef::from(self.socket),
                protocol::TOO_MANY_FROM_ADDRESS,
            );
            shared.totals.refused_per_ip.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        debug!("{client}: connected (PROXY header from {balancer})");
        Some(client.ip())
    }

    /// Reads until `input` begins with a whole PROXY header; leaves in it what followed.
    fn read_proxy_header(&mut self, input: &mut Vec<u8>) -> Result<Option<SocketAddr>, String> {
        let deadline = Instant::now() + proxy::HEADER_TIMEOUT;
        loop {
            match proxy::parse(input) {
                proxy::Parsed::Header { len, source } => {
                    input.drain(..len);
                    return Ok(source);
                }
                proxy::Parsed::Invalid(why) => return Err(why),
                proxy::Parsed::Incomplete => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "no whole PROXY header within {:?}",
                    proxy::HEADER_TIMEOUT
                ));
            }
            let limit = (proxy::MAX_HEADER - input.len()).min(self.read_buffer.len());
            let read = self
                .socket
                .set_read_timeout(Some(left))
                .and_then(|()| self.socket.read(&mut self.read_buffer[..limit]));
            match read {
                Ok(0) => return Err("closed before its PROXY header was whole".into()),
                Ok(n) => {
                    self.bytes_in += n as u64;
                    input.extend_from_slice(&self.read_buffer[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The read timeout; the deadline check above says so.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
    }

    /// TCP_NODELAY and the buffer sizes, before the first byte either way (a TLS
    /// handshake's flights are writes too).
    fn set_socket_options(&self, settings: SocketSettings) -> io::Result<()> {
        // Each write is a whole batch of replies; Nagle's algorithm would only hold the next
        // batch back until the previous one is acknowledged, which with delayed ACKs on the
        // client costs up to 40 ms per pipelined round trip.
        self.socket.set_nodelay(true)?;
        net::set_buffer_sizes(
            socket2::SockRef::from(self.socket),
            settings.send_buffer,
            settings.recv_buffer,
        );
        Ok(())
    }

    /// Greets, answers `early` (what came behind a PROXY header), then answers until the
    /// protocol says close, the peer goes away or idles out, or the server stops. An error
    /// ends this connection only.
    fn serve(
        &mut self,
        settings: SocketSettings,
        stopping: &AtomicBool,
        early: &[u8],
    ) -> io::Result<()> {
        let idle_timeout = settings.idle;
        // The same timeout on writes: a client that stops reading makes no more progress
        // than one that stops sending, and must not hold a thread forever.
        self.socket.set_read_timeout(idle_timeout)?;
        self.socket.set_write_timeout(idle_timeout)?;

        self.protocol.greeting(&mut self.pending_output);
        // (With `--framing raw` every read is a message, so an empty one must not be.)
        let flow = match early.is_empty() {
            true => Flow::Continue,
            false => self
                .session
                .on_input(self.protocol, early, &mut self.pending_output),
        };
        self.flush()?;
        if flow == Flow::Close {
            return Ok(());
        }
        // When the unfinished line held in the session began. While one is held, the read
        // timeout is what is left of `--line-timeout` (or the idle timeout, if sooner), so a
        // client dribbling bytes cannot stretch it; a whole line costs no extra syscall.
        let mut line_started = (self.session.buffered() > 0).then(Instant::now);
        let mut read_timeout = idle_timeout;
        loop {
            let wanted = match (line_started, settings.line) {
                (Some(started), Some(line)) => {
                    let left = line
                        .saturating_sub(started.elapsed())
                        .max(Duration::from_millis(1));
                    Some(idle_timeout.map_or(left, |idle| idle.min(left)))
                }
                _ => idle_timeout,
            };
            if wanted != read_timeout {
                self.socket.set_read_timeout(wanted)?;
                read_timeout = wanted;
            }
            let answered = self.session.messages();
            let limit = self.protocol.read_limit(self.read_buffer.len());
            let flow = match self.channel.read(&mut self.read_buffer[..limit]) {
                Ok(0) => {
                    // Our own shutdown(SHUT_RD) at server stop also reads as EOF. Then the
                    // client has not finished its last line, so it is owed no reply for it.
                    if stopping.load(Ordering::Acquire) {
                        return Ok(());
                    }
                    self.session.on_eof(self.protocol, &mut self.pending_output)
                }
                Ok(n) => {
                    self.bytes_in += n as u64;
                    self.session.on_input(
                        self.protocol,
                        &self.read_buffer[..n],
                        &mut self.pending_output,
                    )
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A read timeout reports EAGAIN, which std calls WouldBlock.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    let line_over = line_started
                        .zip(settings.line)
                        .is_some_and(|(started, line)| started.elapsed() >= line);
                    if !line_over {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout"));
                    }
                    debug!("a line unfinished for {:?}: closing", settings.line);
                    self.pending_output
                        .extend_from_slice(protocol::LINE_TIMEOUT);
                    return self.flush();
                }
                Err(e) => return Err(e),
            };
            if self.session.buffered() == 0 {
                line_started = None;
            } else if line_started.is_none() || self.session.messages() != answered {
                line_started = Some(Instant::now());
            }
            self.flush()?;
            if flow == Flow::Close {
                return Ok(());
            }
        }
    }

    /// Writes every pending reply; `write_all` already retries `Interrupted`.
    fn flush(&mut self) -> io::Result<()> {
        if self.pending_output.is_empty() {
            return Ok(());
        }
        self.channel.write_all(&self.pending_output)?;
        self.bytes_out += self.pending_output.len() as u64;
        self.pending_output.clear();
        // One read of empty lines owes up to nine times its size in replies; do not keep
        // that peak allocated for the rest of a long-lived connection.
        self.pending_output.shrink_to(OUTPUT_KEEP_CAPACITY);
        Ok(())
    }
}

/// What a connection thread reads requests from and writes replies to: the socket itself,
/// or a TLS session over it. The steps only TLS has do nothing on a plain socket.
// One per connection thread, on its stack: the bytes a plain connection leaves unused are
// its own, and boxing the session would cost every TLS connection an allocation.
#[allow(clippy::large_enum_variant)]
enum Channel<'a> {
    Plain(&'a TcpStream),
    /// `--tls-cert`.
    #[cfg(feature = "tls")]
    Tls(tls::TlsChannel<'a>),
}

/// What a connection thread needs to begin a TLS session: rustls's config, shared by every
/// connection; `None` serves plain TCP.
#[cfg(feature = "tls")]
type TlsConfig = Option<Arc<rustls::ServerConfig>>;

/// Built without the `tls` feature, every connection is plain TCP: always `None`.
#[cfg(not(feature = "tls"))]
type TlsConfig = Option<std::convert::Infallible>;

#[cfg(feature = "tls")]
fn tls_config(config: &ServerConfig) -> TlsConfig {
    config.tls.as_ref().map(crate::tls::Identity::config)
}

#[cfg(not(feature = "tls"))]
fn tls_config(_config: &ServerConfig) -> TlsConfig {
    None
}

impl<'a> Channel<'a> {
    /// A TLS session over `socket`, its handshake not begun, if the server has a
    /// certificate; else the socket itself.
    #[cfg_attr(not(feature = "tls"), allow(unused_variables))]
    fn open(socket: &'a TcpStream, tls: TlsConfig) -> io::Result<Channel<'a>> {
        #[cfg(feature = "tls")]
        if let Some(config) = tls {
            return tls::TlsChannel::new(socket, config).map(Channel::Tls);
        }
        Ok(Channel::Plain(socket))
    }

    /// TLS: completes the handshake within `timeout` of `accepted`, or says why not (a
    /// client that sent something else than a ClientHello has been sent an alert).
    #[cfg_attr(not(feature = "tls"), allow(unused_variables))]
    fn handshake(&mut self, accepted: Instant, timeout: Duration) -> io::Result<()> {
        match self {
            Channel::Plain(_) => Ok(()),
            #[cfg(feature = "tls")]
            Channel::Tls(session) => session.handshake(accepted, timeout),
        }
    }

    /// TLS: the session ended with a TCP EOF and no `close_notify` before it.
    fn truncated(&self) -> bool {
        match self {
            Channel::Plain(_) => false,
            #[cfg(feature = "tls")]
            Channel::Tls(session) => session.truncated(),
        }
    }

    /// TLS: sends `close_notify`, after the last reply and before the lingering close.
    fn end_session(&mut self) {
        match self {
            Channel::Plain(_) => {}
            #[cfg(feature = "tls")]
            Channel::Tls(session) => session.end_session(),
        }
    }
}

impl Read for Channel<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Channel::Plain(socket) => socket.read(buf),
            #[cfg(feature = "tls")]
            Channel::Tls(session) => session.read(buf),
        }
    }
}

impl Write for Channel<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Channel::Plain(socket) => socket.write(buf),
            #[cfg(feature = "tls")]
            Channel::Tls(session) => session.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Channel::Plain(socket) => socket.flush(),
            #[cfg(feature = "tls")]
            Channel::Tls(session) => session.flush(),
        }
    }
}

/// Sends FIN, then reads and discards for up to [`LINGER_TIMEOUT`] so the close does not
/// turn into an RST (see [`LINGER_TIMEOUT`]). Returns the bytes discarded. Only time bounds it: a
/// byte limit would close, and reset, exactly when the client is still sending, which is
/// when its unread replies are most at risk.
fn close_politely(stream: &TcpStream, buffer: &mut [u8]) -> u64 {
    if stream.shutdown(Shutdown::Write).is_err() {
        // Not connected any more: there is nobody left to be polite to.
        return 0;
    }
    let deadline = Instant::now() + LINGER_TIMEOUT;
    let mut discarded = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match (&*stream).read(buffer) {
            Ok(0) => break,
            Ok(n) => discarded += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    discarded as u64
}

/// Answers datagrams until the server stops. A reply that cannot be sent is counted and
/// logged; nothing a peer sends ends this thread.
fn serve_udp(socket: &UdpSocket, mode: &protocol::Mode, shared: &Shared) {
    if let Err(e) = socket.set_read_timeout(Some(UDP_STOP_CHECK)) {
        warn!("udp: cannot set a read timeout ({e}); stopping relies on the wake-up datagram");
    }
    let mut datagram = vec![0; MAX_DATAGRAM];
    let mut reply = Vec::new();
    let (mut messages, mut bytes_in, mut bytes_out, mut dropped) = (0u64, 0u64, 0u64, 0u64);
    while !shared.is_stopping() {
        let (n, peer) = match socket.recv_from(&mut datagram) {
            Ok(received) => received,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => {
                // Linux can report an ICMP error from an earlier send here; the socket is
                // still fine.
                debug!("udp: receive failed: {e}");
                continue;
            }
        };
        // The datagram that wakes us at stop must not be answered.
        if shared.is_stopping() {
            break;
        }
        bytes_in += n as u64;
        reply.clear();
        protocol::udp_reply(mode, &datagram[..n], &mut reply);
        messages += 1;
        match socket.send_to(&reply, peer) {
            Ok(sent) => bytes_out += sent as u64,
            Err(e) => {
                dropped += 1;
                debug!("udp: reply to {peer} dropped: {e}");
            }
        }
    }
    shared.totals.add(messages, bytes_in, bytes_out);
    shared
        .totals
        .udp_dropped
        .fetch_add(dropped, Ordering::Relaxed);
}

/// Turns the first stop request (SIGINT/SIGTERM, or Ctrl-C on Windows) into a graceful
/// stop and a second one into an immediate exit.
fn watch_signals(
    signals: ThreadSignals,
    stop: StopHandle,
    config: ServerConfig,
) -> io::Result<crate::signals::Watch> {
    signals.watch(
        move |seen, name, code| {
            if seen == 1 {
                info!("{name}: stopping; a second one exits at once");
                crate::systemd::notify_stopping();
                stop.stop();
            } else {
                warn!("{name} again: exiting without waiting for connections");
                std::process::exit(128 + code);
            }
        },
        // The certificate is shared with every accept (see `crate::tls::Identity`), so a
        // reload here reaches the next connection's thread.
        move || reload_on_sighup(&config),
    )
}

/// SIGHUP: the TLS certificate and key read again for new connections, as in the reactor.
fn reload_on_sighup(config: &ServerConfig) {
    #[cfg(feature = "tls")]
    if let Some(identity) = &config.tls {
        return identity.reload_on_sighup();
    }
    let _ = config;
    info!("SIGHUP ignored: plain TCP has no certificate to reload");
}

/// An address the wake-up datagram can be sent to: a socket bound to the unspecified
/// address is reachable on loopback.
fn reachable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        match addr {
            SocketAddr::V4(_) => addr.set_ip(Ipv4Addr::LOCALHOST.into()),
            SocketAddr::V6(_) => addr.set_ip(Ipv6Addr::LOCALHOST.into()),
        }
    }
    addr
}

/// Binds now (so the addresses are known when this returns), then serves on a new thread.
pub fn spawn(config: ServerConfig) -> io::Result<Running> {
    let server = Server::bind(config)?;
    let (tcp, udp) = (server.tcp_addr(), server.udp_addr());
    let stop = server.stop_handle();
    let shared = Arc::clone(&server.shared);
    let thread = thread::Builder::new()
        .name("threaded".into())
        .spawn(move || server.run())?;
    Ok(Running::new(
        tcp,
        udp,
        Box::new(move || stop.stop()),
        Box::new(move || shared.connections().len()),
        thread,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_ceiling_leaves_room_for_the_rest_of_the_process() {
        for max_map_count in [65_530, 262_144, 1_048_576] {
            let threads = threads_within(max_map_count) as u64;
            assert!(threads * MAPPINGS_PER_THREAD + OTHER_MAPPINGS <= max_map_count);
        }
        // Under Linux's default the bench's 10,000 idle connections still fit.
        assert!(threads_within(65_530) > 15_000);
        assert_eq!(threads_within(100), 0);
    }
}
