//! The reactor as a server: one or more single-threaded event loops, each with its own
//! poll, sharing the port through SO_REUSEPORT when `--threads` asks for more than one.
//!
//! This module owns what spans loops: binding the sockets before any loop starts (so port 0
//! is resolved and the addresses can be reported), the stop handle that wakes every loop,
//! the admission every loop admits under (`--max-connections`, `--max-connections-per-ip`), the metrics listener and
//! the hub every loop counts in for it, and adding up what each loop did. It must not serve a socket itself: the loop is in
//! [`event_loop`](crate::event_loop), which is the file to read first.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mio::net::TcpStream;
use mio::Waker;

use crate::admission::Admission;
use crate::budget::MemoryBudget;
use crate::config::ServerConfig;
use crate::event_loop::{EventLoop, Shared};
use crate::metrics::{Hub, LoopMetrics};
use crate::net;
use crate::running::Running;
use crate::stats::Stats;

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

/// What every loop's accept wraps a socket with: with `--tls-cert`, the certificate, read
/// once at bind and shared by the loops (a SIGHUP reload through one reaches them all);
/// `None` serves plain TCP.
#[cfg(feature = "tls")]
type Acceptor = Option<crate::tls::Identity>;
#[cfg(not(feature = "tls"))]
type Acceptor = Option<std::convert::Infallible>;

/// One loop, of the kind the config asks for: plain TCP, or TLS on every connection. The
/// choice is made once here, never per connection or per message.
enum AnyLoop {
    Plain(EventLoop<TcpStream>),
    #[cfg(feature = "tls")]
    Tls(EventLoop<crate::tls::TlsStream>),
}

impl AnyLoop {
    #[cfg_attr(not(feature = "tls"), allow(unused_variables))]
    fn new(
        bound: net::Bound,
        shared: &Shared,
        metrics: Option<LoopMetrics>,
        acceptor: &Acceptor,
    ) -> io::Result<AnyLoop> {
        #[cfg(feature = "tls")]
        if let Some(identity) = acceptor.clone() {
            return EventLoop::new(bound, shared.clone(), metrics, identity).map(AnyLoop::Tls);
        }
        EventLoop::new(bound, shared.clone(), metrics, ()).map(AnyLoop::Plain)
    }

    fn waker(&self) -> Arc<Waker> {
        match self {
            AnyLoop::Plain(event_loop) => event_loop.waker(),
            #[cfg(feature = "tls")]
            AnyLoop::Tls(event_loop) => event_loop.waker(),
        }
    }

    fn reload_on_sighup(&self) -> io::Result<()> {
        match self {
            AnyLoop::Plain(event_loop) => event_loop.reload_on_sighup(),
            #[cfg(feature = "tls")]
            AnyLoop::Tls(event_loop) => event_loop.reload_on_sighup(),
        }
    }

    fn restart_on_sigusr2(&mut self, restart: crate::restart::Restart) {
        match self {
            AnyLoop::Plain(event_loop) => event_loop.restart_on_sigusr2(restart),
            #[cfg(feature = "tls")]
            AnyLoop::Tls(event_loop) => event_loop.restart_on_sigusr2(restart),
        }
    }

    fn run(self) -> io::Result<Stats> {
        match self {
            AnyLoop::Plain(event_loop) => event_loop.run(),
            #[cfg(feature = "tls")]
            AnyLoop::Tls(event_loop) => event_loop.run(),
        }
    }
}

/// A bound reactor, ready to run: `threads` event loops sharing the port.
pub struct Server {
    loops: Vec<AnyLoop>,
    tcp: SocketAddr,
    udp: Option<SocketAddr>,
    stop: StopHandle,
    admission: Arc<Admission>,
    metrics: Option<SocketAddr>,
}

impl Server {
    /// Binds the sockets (port 0 resolved) and sets up one loop per `config.threads`.
    pub fn bind(config: ServerConfig) -> io::Result<Server> {
        // Read before anything is bound: bad files are the first thing to say.
        #[cfg(feature = "tls")]
        let acceptor = config
            .tls
            .as_ref()
            .map(crate::tls::Identity::from_files)
            .transpose()?;
        #[cfg(not(feature = "tls"))]
        let acceptor = None;
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
        let admission = Admission::new(config.max_connections, config.max_connections_per_ip);
        let budget = Arc::new(MemoryBudget::new(config.max_buffer_memory));
        // The first loop serves the metrics endpoint; every loop counts for it.
        let mut metrics_listener = config.metrics.map(crate::metrics::bind).transpose()?;
        let metrics = metrics_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?;
        let hub = metrics.map(|_| {
            let (admission, budget) = (Arc::clone(&admission), Arc::clone(&budget));
            Hub::new(threads, admission, budget, config.max_buffer_memory)
        });
        let shared = Shared {
            config: Arc::new(config),
            stop_requested: Arc::clone(&requested),
            admission: Arc::clone(&admission),
            budget,
        };
        let loops = bound
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                let metrics = hub
                    .as_ref()
                    .map(|hub| LoopMetrics::new(Arc::clone(hub), i, metrics_listener.take()))
                    .transpose()?;
                AnyLoop::new(b, &shared, metrics, &acceptor)
            })
            .collect::<io::Result<Vec<_>>>()?;
        // The first loop reloads the certificate at SIGHUP, for every loop (they share it).
        if let Some(first) = loops.first() {
            first.reload_on_sighup()?;
        }
        if let Some(hub) = &hub {
            hub.set_wakers(loops.iter().map(AnyLoop::waker).collect());
        }
        let wakers = loops.iter().map(AnyLoop::waker).collect();
        Ok(Server {
            loops,
            tcp,
            udp,
            stop: StopHandle { requested, wakers },
            admission,
            metrics,
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

    /// Where Prometheus metrics are served (`--metrics`, port 0 resolved), if they are.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// Open TCP connections right now, across every loop.
    pub fn open_connections(&self) -> usize {
        self.admission.open()
    }

    /// Lets SIGUSR2 hand the sockets to a successor and drain (see [`crate::restart`]);
    /// the binary's choice, since a successor is this executable run again. With
    /// `--threads` above 1 SIGUSR2 is refused with a log line.
    pub fn restart_on_sigusr2(&mut self, restart: crate::restart::Restart) {
        if let Some(first) = self.loops.first_mut() {
            first.restart_on_sigusr2(restart);
        }
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
    let admission = Arc::clone(&server.admission);
    let thread = std::thread::Builder::new()
        .name("reactor".into())
        .spawn(move || server.run())?;
    let stop = Box::new(move || handle.stop());
    let open = Box::new(move || admission.open());
    Ok(Running::new(tcp, udp, stop, open, thread))
}
