//! The baseline: blocking `std::net` I/O with one OS thread per TCP connection, one thread
//! for UDP, and the same [`crate::protocol`] code as the reactor.
//!
//! This module owns the server as a whole: binding, the accept loop and the admission of
//! each connection (`--max-connections`, `--max-connections-per-ip` under
//! [`Admission`], the thread ceiling, and closing the oldest lingering connection to make
//! room at a limit),
//! the registry of live connections that graceful shutdown walks, the stop handle, the
//! signal thread and the summary. What happens on one connection once its thread starts is
//! `threaded/connection.rs` (through `threaded/channel.rs`, and with `--tls-cert`
//! `threaded/tls.rs`); the UDP thread is `threaded/udp.rs`; what a thread costs and how many
//! fit is `threaded/ceiling.rs`. It must not read or write a connection's bytes itself, nor
//! frame, parse or build replies (that is `protocol.rs`), nor parse flags or set up sockets
//! (`cli.rs`, `net.rs`): it is the honest "obvious way" a careful engineer writes this
//! server, so that `cargo bench` compares two designs rather than two protocols.
//!
//! Each thread blocks in `read`, `write` or `accept`. Blocking calls cannot be cancelled, so
//! stopping works by making the kernel wake them: `shutdown(SHUT_RD)` on a socket makes a
//! blocked read or accept return at once on Linux (see `Stop` and [`Server::run`]).
//!
//! With `--tls-cert` a connection thread reads and writes through a rustls connection over its
//! socket instead of the socket itself (a `Channel`, `threaded/channel.rs` and
//! `threaded/tls.rs`): the handshake before the greeting, within `--handshake-timeout` of
//! the accept; `close_notify` before the lingering close. Everything between is the plain
//! thread's code.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};

use crate::admission::{Admission, LingeringQueue, Permit, Refusal};
use crate::config::ServerConfig;
use crate::net::{self, ACCEPT_BACKOFF};
use crate::protocol;
use crate::running::{Running, StopHandle};
use crate::signals::ThreadSignals;
use crate::stats::Stats;

mod ceiling;
mod channel;
mod connection;
#[cfg(feature = "tls")]
mod tls;
mod udp;

use ceiling::{thread_ceiling, CONNECTION_STACK_SIZE};
use channel::{tls_config, Acceptor};
use connection::{SocketSettings, Start};
use udp::{serve_udp, UDP_STOP_CHECK};

/// After the shutdown grace, connections still busy are cut off; this is how long to wait
/// for their threads to notice, so their counts still make it into the summary.
const CUT_OFF_WAIT: Duration = Duration::from_millis(500);

/// A server with its sockets bound, not yet serving. [`Server::run`] serves on the calling
/// thread; [`spawn`] does both on a thread of its own.
pub struct Server {
    config: ServerConfig,
    /// The most connection threads that may run at once (see `threaded/ceiling.rs`):
    /// beyond `--max-connections` only by threads of connections closed to make room that
    /// have not ended yet.
    thread_limit: usize,
    /// What connections' TLS connections begin with; SIGHUP reloads it for the next accept.
    acceptor: Acceptor,
    shared: Arc<Shared>,
    udp: Option<UdpSocket>,
    tcp_addr: SocketAddr,
    udp_addr: Option<SocketAddr>,
    /// Registered at bind time, not in `run`, so a SIGTERM that arrives right after the
    /// startup line is printed is already a graceful stop rather than the default kill.
    signals: Option<ThreadSignals>,
}

/// What stops a [`Server`] gracefully from any thread, any number of times, before or
/// during [`Server::run`]: [`Server::stop_handle`] wraps it in the
/// [`StopHandle`](crate::running::StopHandle) both servers hand out.
#[derive(Clone)]
struct Stop {
    shared: Arc<Shared>,
}

/// State the accept loop, the connection threads, the UDP thread and [`Stop`] share.
struct Shared {
    stopping: AtomicBool,
    /// Held here rather than by `run` so that [`Stop::stop`] can never shut down a
    /// descriptor number that has been closed and reused for something else.
    listener: TcpListener,
    /// Where to send the datagram that wakes the UDP thread.
    udp_wake: Option<SocketAddr>,
    /// Every connection whose thread is running, so shutdown can wake them, and so can
    /// closing a lingering one to make room.
    connections: Mutex<HashMap<u64, Arc<TcpStream>>>,
    /// Signalled whenever `connections` becomes empty.
    all_closed: Condvar,
    /// `--max-connections` and `--max-connections-per-ip`; each connection's thread holds
    /// its permit.
    admission: Arc<Admission>,
    /// Connections in their lingering close, oldest first, by id, each with the permit its
    /// thread handed over when it began to linger; its thread takes it back when done.
    lingering: Mutex<LingeringQueue<(u64, Permit)>>,
    /// What ended connection threads and the UDP thread did. Each thread counts in a
    /// [`Stats`] of its own, as a reactor loop does, and adds it here once, when it ends:
    /// the lock is taken once per connection, never per message.
    counts: Mutex<Stats>,
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

    /// The counts lock. A thread that panicked while holding it was adding whole integers;
    /// the sum is still worth reporting.
    fn counts(&self) -> MutexGuard<'_, Stats> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds what one thread counted to the server's counts.
    fn add_counts(&self, counts: &Stats) {
        self.counts().add(counts);
    }

    /// What every thread that has ended counted, added up.
    fn counted(&self) -> Stats {
        *self.counts()
    }

    /// Admits a client under the limits, closing the oldest lingering connection to make
    /// room at one (see [`Admission::admit_or_reclaim`]); such a close is counted in
    /// `counts`.
    fn admit(
        &self,
        address: Option<std::net::IpAddr>,
        counts: &mut Stats,
    ) -> Result<Permit, Refusal> {
        self.admission.admit_or_reclaim(address, |refusal| {
            self.close_oldest_lingering(refusal, address, counts)
        })
    }

    /// At a limit: takes the permit of the oldest lingering connection (from `address`, at
    /// the per-address limit), which gives its place back now, and shuts its socket down,
    /// which wakes its thread from the lingering read to end; counts that in `counts`.
    /// False if none lingers.
    fn close_oldest_lingering(
        &self,
        refusal: Refusal,
        address: Option<std::net::IpAddr>,
        counts: &mut Stats,
    ) -> bool {
        let oldest = self
            .lingering
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take_oldest(refusal, address, |_| true);
        let Some((id, permit)) = oldest else {
            return false;
        };
        drop(permit);
        if let Some(stream) = self.connections().get(&id) {
            let _ = stream.shutdown(Shutdown::Both);
        }
        match refusal {
            Refusal::Busy => counts.lingering_closed += 1,
            Refusal::TooManyFromAddress => counts.lingering_closed_per_ip += 1,
        }
        debug!("closed lingering conn-{id} to admit a new client ({refusal:?})");
        true
    }

    /// A connection's thread begins its lingering close: its permit may now be taken to
    /// make room for a new client.
    fn linger(&self, id: u64, permit: Permit) {
        let address = permit.address();
        self.lingering
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(address, (id, permit));
    }

    /// The lingering close of connection `id` is over: its permit, unless taken already,
    /// is given back.
    fn done_lingering(&self, id: u64) {
        let permit = self
            .lingering
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take(|&(lingering, _)| lingering == id);
        drop(permit);
    }

    /// Shuts down `how` on every live connection.
    fn shutdown_connections(&self, how: Shutdown) {
        for stream in self.connections().values() {
            // ENOTCONN if the peer already went away: nothing left to wake.
            let _ = stream.shutdown(how);
        }
    }
}

impl Stop {
    /// Begins a graceful stop: no new connections, replies already owed are delivered, then
    /// [`Server::run`] returns. Does not wait for that; later calls do nothing.
    fn stop(&self) {
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
        // Read before anything is bound: bad files are the first thing to say.
        let acceptor = channel::acceptor(&config)?;
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
        let mut config = config;
        let mut thread_limit = usize::MAX;
        if let Some((max_map_count, ceiling)) = thread_ceiling() {
            thread_limit = ceiling;
            if config.max_connections > ceiling {
                warn!(
                    "--max-connections {} needs more threads than vm.max_map_count {max_map_count} \
                     leaves room for: connections beyond {ceiling} will be refused",
                    config.max_connections
                );
                config.max_connections = ceiling;
            }
        }
        let shared = Arc::new(Shared {
            stopping: AtomicBool::new(false),
            listener: bound.tcp,
            udp_wake: udp_addr.map(reachable),
            connections: Mutex::new(HashMap::new()),
            all_closed: Condvar::new(),
            admission: Admission::new(config.max_connections, config.max_connections_per_ip),
            lingering: Mutex::new(LingeringQueue::default()),
            counts: Mutex::default(),
        });
        Ok(Server {
            config,
            thread_limit,
            acceptor,
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
        let stop = self.stopper();
        StopHandle::new(move || stop.stop())
    }

    fn stopper(&self) -> Stop {
        Stop {
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
        // Without TLS the acceptor is an empty `Option`, which is `Copy`.
        #[cfg_attr(not(feature = "tls"), allow(clippy::clone_on_copy))]
        let acceptor = self.acceptor.clone();
        let signal_watch = match self.signals.take() {
            Some(signals) => Some(watch_signals(signals, self.stopper(), acceptor)?),
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
                        self.stopper().stop();
                        return Err(io::Error::new(
                            e.kind(),
                            format!("cannot start the UDP thread: {e}"),
                        ));
                    }
                }
            }
            None => None,
        };

        let mut stats = self.accept_loop();

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

        stats.add(&self.shared.counted());
        info!("{stats}");
        Ok(stats)
    }

    /// Accepts until stopped, starting a thread per connection. Returns what it counted:
    /// the clients refused, and the lingering connections closed to make room (a
    /// connection served is counted by its own thread).
    fn accept_loop(&self) -> Stats {
        let mut counts = Stats::default();
        let mut next_id: u64 = 0;
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
            self.start_connection(next_id, stream, peer, &mut counts);
        }
        counts
    }

    /// What a client turned away at the accept is sent in place of `message`.
    fn refusal(&self, message: &'static [u8]) -> &'static [u8] {
        channel::refusal(self.acceptor.is_some(), message)
    }

    /// Registers the connection and starts its thread, or refuses it; a refusal is counted
    /// in `counts`.
    fn start_connection(&self, id: u64, stream: TcpStream, peer: SocketAddr, counts: &mut Stats) {
        let stream = Arc::new(stream);
        // Behind a balancer the address to count is in the PROXY header, read by the
        // connection's thread.
        let counted = (!self.config.proxy_protocol).then(|| peer.ip());
        let permit = match self.shared.admit(counted, counts) {
            Ok(permit) => permit,
            Err(Refusal::TooManyFromAddress) => {
                debug!("refusing {peer}: its address is at --max-connections-per-ip");
                net::refuse(
                    socket2::SockRef::from(&*stream),
                    self.refusal(protocol::TOO_MANY_FROM_ADDRESS),
                );
                counts.refused_per_ip += 1;
                return;
            }
            Err(Refusal::Busy) => {
                debug!(
                    "refusing {peer}: at --max-connections {}",
                    self.config.max_connections
                );
                net::refuse(
                    socket2::SockRef::from(&*stream),
                    self.refusal(protocol::SERVER_BUSY),
                );
                counts.refused += 1;
                return;
            }
        };
        {
            let mut live = self.shared.connections();
            let threads = live.len();
            if threads >= self.thread_limit {
                drop(live);
                // Only while threads of connections closed to make room are still ending.
                debug!("refusing {peer}: {threads} connection threads, the ceiling");
                net::refuse(
                    socket2::SockRef::from(&*stream),
                    self.refusal(protocol::SERVER_BUSY),
                );
                counts.refused += 1;
                return;
            }
            live.insert(id, Arc::clone(&stream));
        }
        let start = Start {
            id,
            peer,
            permit,
            proxied: self.config.proxy_protocol,
            protocol: self.config.protocol.clone(),
            settings: SocketSettings {
                idle: self.config.idle_timeout,
                line: self.config.line_timeout,
                send_buffer: self.config.send_buffer,
                recv_buffer: self.config.recv_buffer,
            },
            tls: tls_config(&self.acceptor),
            // `--handshake-timeout` counts from here, as in the reactor: the thread may start a
            // moment later.
            accepted: Instant::now(),
            handshake_timeout: self.config.handshake_timeout,
        };
        let shared = Arc::clone(&self.shared);
        let thread_stream = Arc::clone(&stream);
        let spawned = thread::Builder::new()
            .name(format!("conn-{id}"))
            .stack_size(CONNECTION_STACK_SIZE)
            .spawn(move || {
                let _registration = Registration {
                    shared: &shared,
                    id,
                };
                connection::serve_thread(&shared, &thread_stream, start);
            });
        match spawned {
            Ok(_detached) => debug!("{peer}: connected"),
            // Out of memory or threads (RLIMIT_NPROC, kernel.threads-max): this client is
            // turned away, the ones already served are not disturbed.
            Err(e) => {
                warn!("cannot start a thread for {peer}: {e}; refusing it");
                self.shared.connections().remove(&id);
                net::refuse(
                    socket2::SockRef::from(&*stream),
                    self.refusal(protocol::SERVER_BUSY),
                );
                counts.refused += 1;
            }
        }
    }
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

/// Turns the first stop request (SIGINT/SIGTERM, or Ctrl-C on Windows) into a graceful
/// stop and a second one into an immediate exit.
fn watch_signals(
    signals: ThreadSignals,
    stop: Stop,
    acceptor: Acceptor,
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
        move || reload_on_sighup(&acceptor),
    )
}

/// SIGHUP: the TLS certificate and key read again for new connections, as in the reactor.
fn reload_on_sighup(acceptor: &Acceptor) {
    #[cfg(feature = "tls")]
    if let Some(identity) = acceptor {
        return identity.reload_on_sighup();
    }
    let _ = acceptor;
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
