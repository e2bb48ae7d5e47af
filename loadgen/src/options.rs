//! What to run: [`Options`], the flags of the `loadgen` binary as data, the check that a
//! combination makes a run that can end ([`Options::validate`]), and how a run's clients and
//! messages are shared out among its engines. Data and arithmetic only: nothing here opens
//! a socket, reads the clock or knows how a run goes.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::hostile::Hostile;
use evloop::protocol::Mode;
use evloop::proxy;

/// The largest `size` a UDP request may have: the largest UDP payload over IPv4 (65,507
/// bytes) less the 8 bytes `Hello, ` and `!` add to the reply.
pub const MAX_UDP_SIZE: usize = 65_507 - 8;

/// What kind of socket each client opens: a TCP connection or a connected UDP socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketKind {
    /// One TCP connection per client, line framing.
    Tcp,
    /// One connected UDP socket per client, one datagram per request.
    Udp,
}

/// What to run: the flags of the `loadgen` binary, as data.
#[derive(Clone, Debug)]
pub struct Options {
    /// The server to drive.
    pub addr: SocketAddr,
    /// Concurrent TCP connections, or UDP sockets.
    pub connections: usize,
    /// Stop sending this long after the load begins. With `messages` too, whichever comes
    /// first ends the run.
    pub duration: Option<Duration>,
    /// Send this many requests in total and stop once each is answered or has failed.
    pub messages: Option<u64>,
    /// Bytes in each request, before the newline.
    pub size: usize,
    /// Requests in flight per client; 1 is lockstep.
    pub pipeline: usize,
    /// TCP or UDP.
    pub socket_kind: SocketKind,
    /// Which reply to expect; the expected bytes come from [`Mode::reply`], the very code
    /// the servers answer with.
    pub mode: Mode,
    /// The line each TCP connection must receive first (without its `\n`); empty: none.
    pub greeting: Vec<u8>,
    /// A connect, greeting or request unanswered this long is an error.
    pub timeout: Duration,
    /// Engines, each on a thread of its own with an equal share of `connections` (and of
    /// `messages`). A lockstep client costs about as much CPU per message as a lean server
    /// (both are mostly the kernel's `read` and `write`), so one engine can keep about one
    /// server core busy; use more to load a server that has more cores.
    pub threads: usize,
    /// Hostile clients to run beside the honest ones (`--hostile KIND:N`), each kind at
    /// most once. They run on engines of their own, never in an honest client's loop.
    pub hostile: Vec<Hostile>,
    /// Send a PROXY protocol header of this version first on every TCP connection, as a
    /// load balancer would (`--proxy-protocol v1|v2`), naming the connection's own ends.
    pub proxy_protocol: Option<proxy::Version>,
    /// Local addresses the clients connect from, in turn (`--source`); empty: the one the
    /// kernel picks. Several loopback addresses make several clients a server can tell
    /// apart, through a balancer too.
    pub sources: Vec<IpAddr>,
    /// TCP only: after this many replies a client closes its connection cleanly and opens
    /// a new one, for the whole run, so that the run measures connection setup too (and
    /// keeps connecting across a server restart). `None`: one connection per client.
    pub requests_per_connection: Option<u64>,
    /// TCP over TLS (`--tls`), with this verifier and server name; `None`: plain TCP.
    pub tls: Option<super::ClientTls>,
}

impl Default for Options {
    /// The defaults docs/loadgen.md gives the `loadgen` flags.
    fn default() -> Self {
        Options {
            addr: ([127, 0, 0, 1], 9999).into(),
            connections: 100,
            duration: Some(Duration::from_secs(10)),
            messages: None,
            size: 16,
            pipeline: 1,
            socket_kind: SocketKind::Tcp,
            mode: Mode::Hello,
            greeting: b"Welcome!".to_vec(),
            timeout: Duration::from_secs(2),
            threads: 1,
            hostile: Vec::new(),
            proxy_protocol: None,
            sources: Vec::new(),
            requests_per_connection: None,
            tls: None,
        }
    }
}

impl Options {
    /// Checks the combination makes a run that can end; explains the first problem.
    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 {
            return Err("connections must be at least 1".into());
        }
        if self.pipeline == 0 {
            return Err("pipeline must be at least 1".into());
        }
        if self.threads == 0 {
            return Err("threads must be at least 1".into());
        }
        if self.threads > self.connections {
            return Err(format!(
                "{} threads need at least as many connections, not {}",
                self.threads, self.connections
            ));
        }
        if self.messages.is_some_and(|m| m < self.threads as u64) {
            return Err(format!(
                "{} threads need at least as many messages",
                self.threads
            ));
        }
        if self.duration.is_none() && self.messages.is_none() {
            return Err("give a duration, a message count, or both".into());
        }
        if self.timeout.is_zero() {
            return Err("timeout must be more than zero".into());
        }
        if self.socket_kind == SocketKind::Udp && self.size > MAX_UDP_SIZE {
            return Err(format!(
                "size {} does not fit in one UDP datagram with its reply (at most {MAX_UDP_SIZE})",
                self.size
            ));
        }
        match self.requests_per_connection {
            Some(0) => return Err("requests per connection must be at least 1".into()),
            Some(_) if self.socket_kind == SocketKind::Udp => {
                return Err(
                    "requests per connection needs TCP: a UDP socket has no connection to reopen"
                        .into(),
                )
            }
            _ => {}
        }
        if self.tls.is_some() && self.socket_kind == SocketKind::Udp {
            return Err("TLS is for TCP: UDP stays plain".into());
        }
        for (i, hostile) in self.hostile.iter().enumerate() {
            if self.hostile[..i].iter().any(|h| h.kind == hostile.kind) {
                return Err(format!("hostile {} given twice", hostile.kind.name()));
            }
        }
        if let Some(source) = self
            .sources
            .iter()
            .find(|s| s.is_ipv4() != self.addr.is_ipv4())
        {
            return Err(format!(
                "source {source} and server {} are not of one address family",
                self.addr
            ));
        }
        if self.proxy_protocol.is_some() && self.socket_kind == SocketKind::Udp {
            return Err("a PROXY header is sent on TCP connections only".into());
        }
        if !self.hostile.is_empty() && !self.addr.ip().is_loopback() {
            return Err(format!(
                "hostile clients send only to loopback, and {} is not",
                self.addr
            ));
        }
        Ok(())
    }

    /// The local address client `id` connects from, if `sources` names any.
    pub(super) fn source(&self, id: usize) -> Option<IpAddr> {
        (!self.sources.is_empty()).then(|| self.sources[id % self.sources.len()])
    }

    /// Sockets the run holds open at most: one per honest client and one per hostile
    /// client (a churner closes each connection before it opens the next).
    pub fn sockets(&self) -> usize {
        self.connections + self.hostile.iter().map(|h| h.clients).sum::<usize>()
    }

    /// The hostile clients of each engine that has any: every kind shared out among
    /// `threads` engines as `connections` are (see [`Options::shares`]), and the engines
    /// left with none dropped.
    pub(super) fn hostile_shares(&self) -> Vec<Vec<Hostile>> {
        let n = self.threads;
        (0..n)
            .map(|i| {
                self.hostile
                    .iter()
                    .map(|h| Hostile {
                        clients: h.clients / n + usize::from(i < h.clients % n),
                        ..*h
                    })
                    .filter(|h| h.clients > 0)
                    .collect::<Vec<_>>()
            })
            .filter(|share| !share.is_empty())
            .collect()
    }

    /// The options of each engine: `connections` and `messages` shared out as evenly as
    /// they go, the first engines taking one more when they do not divide.
    pub(super) fn shares(&self) -> Vec<Options> {
        let share = |total: u64, i: u64| {
            let n = self.threads as u64;
            total / n + u64::from(i < total % n)
        };
        (0..self.threads as u64)
            .map(|i| Options {
                connections: share(self.connections as u64, i) as usize,
                messages: self.messages.map(|m| share(m, i)),
                ..self.clone()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_that_could_never_end_are_refused() {
        assert!(Options::default().validate().is_ok());
        let endless = Options {
            duration: None,
            messages: None,
            ..Options::default()
        };
        assert!(endless.validate().is_err());
        let huge_udp = Options {
            socket_kind: SocketKind::Udp,
            size: MAX_UDP_SIZE + 1,
            ..Options::default()
        };
        assert!(huge_udp.validate().is_err());
        for bad in [
            Options {
                connections: 0,
                ..Options::default()
            },
            Options {
                pipeline: 0,
                ..Options::default()
            },
            Options {
                timeout: Duration::ZERO,
                ..Options::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reconnecting_needs_tcp_and_at_least_one_request_per_connection() {
        let reconnecting = |n, socket_kind| Options {
            requests_per_connection: Some(n),
            socket_kind,
            ..Options::default()
        };
        assert!(reconnecting(1, SocketKind::Tcp).validate().is_ok());
        assert!(reconnecting(1000, SocketKind::Tcp).validate().is_ok());
        let none = reconnecting(0, SocketKind::Tcp).validate().unwrap_err();
        assert!(none.contains("at least 1"), "{none}");
        let udp = reconnecting(10, SocketKind::Udp).validate().unwrap_err();
        assert!(udp.contains("TCP"), "{udp}");
        // A pipeline deeper than a connection's requests is fine: a connection sends only
        // what it has left.
        let deep = Options {
            pipeline: 64,
            ..reconnecting(4, SocketKind::Tcp)
        };
        assert!(deep.validate().is_ok());
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_is_for_tcp() {
        let tls = Some(crate::ClientTls::new(None, "127.0.0.1").unwrap());
        let tcp = Options {
            tls: tls.clone(),
            ..Options::default()
        };
        assert!(tcp.validate().is_ok());
        let udp = Options {
            socket_kind: SocketKind::Udp,
            ..tcp
        };
        assert!(udp.validate().unwrap_err().contains("TLS"));
    }

    fn hostile(list: &str) -> Vec<Hostile> {
        list.split(' ').map(|h| h.parse().unwrap()).collect()
    }

    #[test]
    fn hostile_clients_are_shared_out_like_connections() {
        let options = Options {
            threads: 3,
            hostile: hostile("slow-reader:10 udp-flood:2"),
            ..Options::default()
        };
        let shares = options.hostile_shares();
        let counts: Vec<Vec<usize>> = shares
            .iter()
            .map(|share| share.iter().map(|h| h.clients).collect())
            .collect();
        assert_eq!(counts, [vec![4, 1], vec![3, 1], vec![3]]);
        assert_eq!(options.sockets(), 100 + 12);
        let few = Options {
            threads: 3,
            hostile: hostile("idle:1"),
            ..Options::default()
        };
        assert_eq!(
            few.hostile_shares().len(),
            1,
            "no engine with nothing to do"
        );
    }

    #[test]
    fn hostile_clients_go_to_loopback_only_and_each_kind_once() {
        let ok = Options {
            hostile: hostile("idle:1 churn:2"),
            ..Options::default()
        };
        assert!(ok.validate().is_ok());
        let twice = Options {
            hostile: hostile("idle:1 idle:2"),
            ..Options::default()
        };
        assert!(twice.validate().is_err());
        let elsewhere = Options {
            addr: ([192, 0, 2, 1], 9999).into(),
            ..ok
        };
        assert!(elsewhere.validate().unwrap_err().contains("loopback"));
    }
}
