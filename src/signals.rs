//! Stop requests from the operating system, for both servers, on every platform: a first
//! one asks for a graceful shutdown, a second one for an immediate one. And, for the
//! reactor on Unix, a restart request and a request to read the TLS certificate again.
//!
//! - Unix: SIGINT and SIGTERM. The reactor receives them as events on its own poll (with
//!   `signal-hook-mio` the handler only writes to a pipe that the poll watches, so the
//!   loop learns of a signal exactly as it learns of a readable socket); the thread-per-
//!   connection baseline waits for them on a thread of its own. The reactor also takes
//!   SIGUSR2, a restart request, and SIGCHLD, which says that the successor a restart
//!   started may have exited (see [`restart`](crate::restart)), the same way; and, in the
//!   one loop that asks for it ([`LoopSignals::add_sighup`]), SIGHUP, which reloads the
//!   certificate.
//! - Windows has no signals to put in a poll: Ctrl-C (and Ctrl-Break) run a handler on a
//!   thread of their own (the `ctrlc` crate), which counts the request and wakes the loop
//!   with its [`Waker`].
//!
//! Nothing here knows what a stop or a restart does: the loop and the baseline decide that.

use std::io;
use std::sync::Arc;

use mio::{Registry, Token, Waker};

/// What arrived for one event loop since it last looked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    /// Stop requests (SIGINT, SIGTERM, Ctrl-C).
    pub stops: usize,
    /// SIGUSR2: start a successor and hand over to it.
    pub restart: bool,
    /// SIGCHLD: a child process exited (or stopped).
    pub child: bool,
    /// SIGHUP: read the TLS certificate and key again.
    pub reload: bool,
}

/// Stop and restart requests delivered to one event loop.
pub struct LoopSignals {
    #[cfg(unix)]
    signals: signal_hook_mio::v1_0::Signals,
    #[cfg(not(unix))]
    count: Arc<std::sync::atomic::AtomicUsize>,
}

impl LoopSignals {
    /// Starts listening: on Unix the signals become READABLE events for `token`; elsewhere
    /// the handler wakes the loop through `waker` (whose own token it then shares).
    pub fn register(registry: &Registry, token: Token, waker: &Arc<Waker>) -> io::Result<Self> {
        #[cfg(unix)]
        {
            let _ = waker;
            use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM, SIGUSR2};
            let mut signals =
                signal_hook_mio::v1_0::Signals::new([SIGINT, SIGTERM, SIGUSR2, SIGCHLD])?;
            registry.register(&mut signals, token, mio::Interest::READABLE)?;
            Ok(LoopSignals { signals })
        }
        #[cfg(not(unix))]
        {
            let _ = (registry, token);
            let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let (counted, waker) = (Arc::clone(&count), Arc::clone(waker));
            ctrlc::set_handler(move || {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if let Err(e) = waker.wake() {
                    log::error!("cannot wake the event loop: {e}");
                }
            })
            .map_err(io::Error::other)?;
            Ok(LoopSignals { count })
        }
    }

    /// Takes SIGHUP as well. Every loop's signals see every signal, so the one loop that
    /// acts on SIGHUP is the one that asks for it. Windows has no SIGHUP: nothing to add.
    pub fn add_sighup(&self) -> io::Result<()> {
        #[cfg(unix)]
        {
            self.signals.add_signal(signal_hook::consts::SIGHUP)
        }
        #[cfg(not(unix))]
        {
            Ok(())
        }
    }

    /// What arrived since the last call.
    pub fn take(&mut self) -> Requests {
        #[cfg(unix)]
        {
            use signal_hook::consts::{SIGCHLD, SIGHUP, SIGUSR2};
            let mut requests = Requests::default();
            for signal in self.signals.pending() {
                match signal {
                    SIGUSR2 => requests.restart = true,
                    SIGCHLD => requests.child = true,
                    SIGHUP => requests.reload = true,
                    _ => requests.stops += 1,
                }
            }
            requests
        }
        #[cfg(not(unix))]
        {
            Requests {
                stops: self.count.swap(0, std::sync::atomic::Ordering::SeqCst),
                ..Requests::default()
            }
        }
    }
}

/// Stop requests for the thread-per-connection baseline. Created before the server runs,
/// so that on Unix a SIGTERM that arrives right after the startup line is already a
/// graceful stop rather than the default kill.
pub struct ThreadSignals {
    #[cfg(unix)]
    signals: signal_hook::iterator::Signals,
}

/// Ends the thread [`ThreadSignals::watch`] started.
pub struct Watch {
    #[cfg(unix)]
    handle: signal_hook::iterator::Handle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ThreadSignals {
    /// Installs the handlers (Unix; on Windows that happens in `watch`).
    pub fn new() -> io::Result<ThreadSignals> {
        Ok(ThreadSignals {
            #[cfg(unix)]
            signals: signal_hook::iterator::Signals::new([
                signal_hook::consts::SIGINT,
                signal_hook::consts::SIGTERM,
                signal_hook::consts::SIGHUP,
            ])?,
        })
    }

    /// Calls `on_request(n, name)` for the n-th stop request (1, 2, ...) and the name of
    /// what sent it, on a thread of its own; the exit status a shell would report for a
    /// process it ended is `128 + code`, given as the third argument. SIGHUP (Unix) calls
    /// `on_reload` instead, and is not a stop.
    pub fn watch(
        self,
        mut on_request: impl FnMut(usize, &str, i32) + Send + 'static,
        mut on_reload: impl FnMut() + Send + 'static,
    ) -> io::Result<Watch> {
        #[cfg(unix)]
        {
            let mut signals = self.signals;
            let handle = signals.handle();
            let thread = std::thread::Builder::new()
                .name("signals".into())
                .spawn(move || {
                    let mut seen = 0;
                    for signal in signals.forever() {
                        let name = match signal {
                            signal_hook::consts::SIGHUP => {
                                on_reload();
                                continue;
                            }
                            signal_hook::consts::SIGINT => "SIGINT",
                            _ => "SIGTERM",
                        };
                        seen += 1;
                        on_request(seen, name, signal);
                    }
                })?;
            Ok(Watch {
                handle,
                thread: Some(thread),
            })
        }
        #[cfg(not(unix))]
        {
            let _ = (self, &mut on_reload);
            let mut seen = 0;
            // Ctrl-C is SIGINT's number where there are signal numbers: a shell reports 130.
            ctrlc::set_handler(move || {
                seen += 1;
                on_request(seen, "Ctrl-C", 2)
            })
            .map_err(io::Error::other)?;
            Ok(Watch { thread: None })
        }
    }
}

impl Watch {
    /// Stops watching and waits for the thread.
    pub fn close(mut self) {
        #[cfg(unix)]
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
