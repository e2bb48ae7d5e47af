//! A server started on its own thread: its bound addresses, a way to stop it, and its
//! result. Both servers hand one back from `spawn`, so tests and embedders treat them alike.
//! It knows nothing of either server's insides: each passes in its own stop action and its
//! own count of open connections.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::stats::Stats;

/// Stops a running server, every loop or thread of it, from any thread, as SIGTERM would.
/// It holds the server's own stop action, so one type serves both servers.
#[derive(Clone)]
pub struct StopHandle {
    stop: Arc<dyn Fn() + Send + Sync>,
}

impl StopHandle {
    /// A handle whose [`stop`](Self::stop) calls `stop` (what each server passes in).
    pub fn new(stop: impl Fn() + Send + Sync + 'static) -> StopHandle {
        StopHandle {
            stop: Arc::new(stop),
        }
    }

    /// Requests a graceful shutdown and returns without waiting for it.
    pub fn stop(&self) {
        (self.stop)()
    }
}

/// A running server. Dropping it does not stop the server; call [`Running::shutdown`].
pub struct Running {
    /// The TCP address actually bound (port 0 resolved).
    pub tcp: SocketAddr,
    /// The UDP address actually bound, if UDP is served.
    pub udp: Option<SocketAddr>,
    stop: Box<dyn Fn() + Send + Sync>,
    open_connections: Box<dyn Fn() -> usize + Send + Sync>,
    thread: JoinHandle<io::Result<Stats>>,
}

impl Running {
    /// Wraps a server thread with its addresses, its stop action and its gauge of open
    /// connections (what each server's `spawn` returns).
    pub fn new(
        tcp: SocketAddr,
        udp: Option<SocketAddr>,
        stop: Box<dyn Fn() + Send + Sync>,
        open_connections: Box<dyn Fn() -> usize + Send + Sync>,
        thread: JoinHandle<io::Result<Stats>>,
    ) -> Running {
        Running {
            tcp,
            udp,
            stop,
            open_connections,
            thread,
        }
    }

    /// TCP connections the server holds open right now (for the reactor: its slab length).
    pub fn open_connections(&self) -> usize {
        (self.open_connections)()
    }

    /// Asks the server to shut down gracefully (as SIGTERM would) without waiting.
    pub fn stop(&self) {
        (self.stop)()
    }

    /// Waits for the server to finish and returns what it did.
    pub fn join(self) -> io::Result<Stats> {
        self.thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("server thread panicked")))
    }

    /// Stops the server and waits for it.
    pub fn shutdown(self) -> io::Result<Stats> {
        self.stop();
        self.join()
    }
}
