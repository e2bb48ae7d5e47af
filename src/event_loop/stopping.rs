//! How a loop stops: the signals it takes (a stop, a second stop, SIGUSR2's restart,
//! SIGHUP's reload), the hand-over to a successor and the drain after it, and the graceful
//! shutdown with its grace period. Each of them stops accepting here
//! ([`EventLoop::stop_accepting`]); what a connection does when told to finish is its own
//! business ([`Connection::shut_down`](crate::connection::Connection::shut_down)).

use mio::Token;

use super::{EventLoop, SUCCESSOR};
use crate::timers::Due;
use crate::transport::Transport;

impl<S: Transport> EventLoop<S> {
    pub(super) fn on_signals(&mut self) {
        let Some(signals) = &mut self.signals else {
            return;
        };
        let requests = signals.take();
        if requests.child {
            self.check_successor();
        }
        if requests.restart {
            self.restart();
        }
        if requests.reload {
            // Two small files read and checked on the loop's own thread: a short pause for
            // this loop's connections, once per SIGHUP, never per connection.
            S::reload(&self.acceptor);
        }
        for _ in 0..requests.stops {
            self.signals_seen += 1;
            if self.signals_seen == 1 {
                log::info!("signal received: shutting down gracefully");
                self.begin_shutdown();
            } else {
                log::warn!("second signal: closing every connection now");
                self.timers.set(Due::ShutdownGrace, Some(self.now));
                self.close_all_now();
            }
        }
    }

    /// SIGUSR2: starts a successor on the listening sockets, if this loop still has them.
    pub(super) fn restart(&mut self) {
        let udp = self.udp.as_mut().map(|udp| &*udp.socket());
        self.handover.request(
            self.config.threads,
            self.listener.as_ref(),
            udp,
            self.poll.registry(),
            SUCCESSOR,
            self.now,
        );
        self.timers.set(Due::Successor, self.handover.deadline());
    }

    /// The successor may be ready, or gone: once it is ready, drain.
    pub(super) fn check_successor(&mut self) {
        let ready = self.handover.check(self.poll.registry(), self.now);
        self.timers.set(Due::Successor, self.handover.deadline());
        let Some(successor) = ready else {
            return;
        };
        let drain = self.handover.drain_timeout();
        self.timers.set(Due::Drain, Some(self.now + drain));
        self.stop_accepting();
        log::info!(
            "handed over to pid {successor}; serving {} connections until they close, for at most {drain:?}",
            self.connections.len()
        );
    }

    /// Deregisters and closes the listener and the UDP socket (and the metrics listener,
    /// whose address a successor binds for itself). Deregistering comes first
    /// and is not optional here: epoll forgets a socket only when every descriptor of it is
    /// closed, and after a restart's hand-over the successor holds the same sockets, so
    /// closing ours alone would leave them in our epoll set, still reporting events.
    pub(super) fn stop_accepting(&mut self) {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        if let Some(mut udp) = self.udp.take() {
            udp.on_writable(&mut self.scratch.stats);
            let _ = self.poll.registry().deregister(udp.socket());
        }
        if let Some(metrics) = &mut self.metrics {
            metrics.stop_listening(self.poll.registry());
        }
    }

    /// Stops accepting, stops reading, delivers what is owed, then closes; the loop ends
    /// when every connection is gone or the grace period is over.
    pub(super) fn begin_shutdown(&mut self) {
        if self.timers.get(Due::ShutdownGrace).is_some() {
            return;
        }
        let grace = self.now + self.config.shutdown_grace;
        self.timers.set(Due::ShutdownGrace, Some(grace));
        // A process that handed over is not the service any more: its stop is not the
        // service's, so systemd is not told.
        if self.config.handle_signals && self.timers.get(Due::Drain).is_none() {
            // Running as the process's server (the binary): tell systemd, if it asked.
            crate::systemd::notify_stopping();
        }
        self.handover.abandon(self.poll.registry());
        self.timers.set(Due::Successor, None);
        self.stop_accepting();
        log::info!(
            "shutdown: no longer accepting; {} connections to finish within {:?}",
            self.connections.len(),
            self.config.shutdown_grace
        );
        let tokens: Vec<Token> = self.connections.iter().map(|(k, _)| Token(k)).collect();
        for token in tokens {
            let slot = &mut self.connections[token.0];
            let mut ctx = self
                .scratch
                .context(&self.config, &self.greeting, self.now, self.share);
            let progress = slot.conn.shut_down(&mut ctx);
            slot.follow(progress, token, &mut self.ready);
            self.after_io(token);
        }
        self.sweep_closed();
    }

    pub(super) fn close_all_now(&mut self) {
        for (key, slot) in self.connections.iter_mut() {
            slot.conn.close_now(self.now);
            self.closed.push(Token(key));
        }
        self.sweep_closed();
    }
}
