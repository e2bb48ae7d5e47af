//! The client state machines: one TCP connection ([`TcpClient`]: connect, greeting, then
//! pipelined requests whose replies must come back in order) or one connected UDP socket
//! ([`UdpClient`]: each datagram on its own), behind the [`Client`] the engine drives by
//! token. A failure that ends a client is returned as a [`Failure`], for the engine to
//! count and close; a client never closes itself, and counts only what does not end it
//! (a UDP datagram lost or wrong). The one exception is a clean close it asked for: with
//! [`Options::requests_per_connection`] a TCP client that has had its replies half-closes,
//! waits for the server's EOF and opens its next connection in the same place. The bytes
//! it sends and expects come from the [`Script`]; a client adds nothing but the newline
//! that ends a TCP request.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::{TcpStream, UdpSocket};
use mio::{Interest, Registry, Token};

use super::engine::{Failure, InFlight, Shared};
use super::options::{Options, SocketKind};
use super::script::{compare, Match, Script};
use super::tls::TlsState;
use evloop::proxy;

/// One client, or the empty slot a failed one leaves. Slots are never reused, so a late
/// event for a closed client finds `Closed` and is ignored.
pub(super) enum Client {
    Tcp(TcpClient),
    Udp(UdpClient),
    Closed,
}

impl Client {
    pub(super) fn on_event(
        &mut self,
        id: usize,
        shared: &mut Shared,
        now: Instant,
    ) -> Result<(), Failure> {
        match self {
            Client::Tcp(tcp) => tcp.on_event(id, shared, now),
            Client::Udp(udp) => udp.on_event(id, shared, now),
            Client::Closed => Ok(()),
        }
    }

    /// Checks timeouts; a UDP socket that gave up on a lost datagram sends the next.
    pub(super) fn on_tick(
        &mut self,
        id: usize,
        shared: &mut Shared,
        now: Instant,
    ) -> Result<(), Failure> {
        match self {
            Client::Tcp(tcp) => tcp.check_timeout(shared, now),
            Client::Udp(udp) => udp.on_tick(id, shared, now),
            Client::Closed => Ok(()),
        }
    }

    /// Fills the pipeline when the load begins: nothing else would wake a quiet client.
    pub(super) fn start(
        &mut self,
        id: usize,
        shared: &mut Shared,
        now: Instant,
    ) -> Result<(), Failure> {
        match self {
            Client::Tcp(tcp) => tcp.send(id, shared, now),
            Client::Udp(udp) => udp.send(id, shared, now),
            Client::Closed => Ok(()),
        }
    }

    /// Opens client `token` (for TCP, starts a non-blocking connect) and registers it.
    pub(super) fn open(options: &Options, token: Token, registry: &Registry) -> io::Result<Client> {
        Ok(match options.socket_kind {
            SocketKind::Tcp => {
                Client::Tcp(TcpClient::open(options, token, registry, Instant::now())?)
            }
            SocketKind::Udp => Client::Udp(UdpClient::open(options, token, registry)?),
        })
    }

    pub(super) fn is_setting_up(&self) -> bool {
        matches!(
            self,
            Client::Tcp(tcp) if matches!(tcp.phase, Phase::Connecting | Phase::Handshaking | Phase::Greeting)
        )
    }

    pub(super) fn in_flight(&self) -> usize {
        match self {
            Client::Tcp(tcp) => tcp.in_flight.len(),
            Client::Udp(udp) => udp.in_flight.len(),
            Client::Closed => 0,
        }
    }

    pub(super) fn deregister(&mut self, registry: &Registry) {
        // The socket is closed when dropped right after; a failure here changes nothing.
        let _ = match self {
            Client::Tcp(tcp) => registry.deregister(&mut tcp.stream),
            Client::Udp(udp) => registry.deregister(&mut udp.socket),
            Client::Closed => Ok(()),
        };
    }
}

/// Where a TCP client is in its life; `Closed` is [`Client::Closed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The non-blocking connect has not completed.
    Connecting,
    /// `--tls`: connected; the TLS handshake has not completed.
    Handshaking,
    /// Connected; the greeting has not fully arrived.
    Greeting,
    /// Sending requests and checking replies.
    Ready,
    /// `requests_per_connection`: every reply of this connection has come and our side is
    /// shut down (the protocol's clean close: the server answers what it read, then
    /// closes); waiting for the server's EOF, then the next connection.
    Closing,
}

/// One TCP connection.
///
/// It is registered for readable and writable readiness once, and never reregistered:
/// Linux reports a TCP socket writable again only after a write found its send buffer
/// full, so the writable interest costs nothing until the one moment it is needed.
pub(super) struct TcpClient {
    stream: TcpStream,
    /// The client's token, which each of its connections is registered with in turn.
    token: Token,
    phase: Phase,
    /// When `phase` began; a setup phase lasting `timeout` fails the client.
    phase_since: Instant,
    in_flight: VecDeque<InFlight>,
    next_seq: u64,
    /// Requests sent on this connection, for `requests_per_connection`.
    sent_here: u64,
    /// Bytes received and not yet matched. Between reads it holds only the start of a
    /// reply (or the greeting) that has not fully arrived: anything longer that does not
    /// match is a mismatch at once, so a misbehaving server cannot make it grow.
    input: Vec<u8>,
    /// Requests queued and not yet accepted by the kernel, from `written` on.
    output: Vec<u8>,
    written: usize,
    /// `--tls`: this connection's TLS state, which every read and write goes through.
    tls: Option<TlsState>,
}

impl TcpClient {
    fn open(
        options: &Options,
        token: Token,
        registry: &Registry,
        now: Instant,
    ) -> io::Result<TcpClient> {
        Ok(TcpClient {
            stream: Self::connect(options, token, registry)?,
            token,
            phase: Phase::Connecting,
            phase_since: now,
            in_flight: VecDeque::new(),
            next_seq: 0,
            sent_here: 0,
            input: Vec::new(),
            output: Vec::new(),
            written: 0,
            tls: None,
        })
    }

    /// Starts a non-blocking connect, from the client's `--source` address if it has one,
    /// and registers the socket as `token`.
    fn connect(options: &Options, token: Token, registry: &Registry) -> io::Result<TcpStream> {
        let mut stream = match options.source(token.0) {
            None => TcpStream::connect(options.addr)?,
            Some(source) => {
                // mio connects from an address the kernel picks; binding first needs the
                // socket before its connect.
                let domain = socket2::Domain::for_address(options.addr);
                let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
                socket.set_nonblocking(true)?;
                socket.bind(&SocketAddr::new(source, 0).into())?;
                match socket.connect(&options.addr.into()) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                    Err(e) => return Err(e),
                }
                TcpStream::from_std(socket.into())
            }
        };
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(stream)
    }

    /// The server closed after our half-close, as the protocol says it does: open the next
    /// connection in this one's place. It takes the same token, so an event of the old
    /// socket still in this batch reaches the new one, which treats it as the spurious
    /// wakeup every handler copes with. The old socket has nothing unread, so dropping it
    /// sends no reset. A connect that fails here fails the client, as any failure does.
    fn reopen(&mut self, shared: &mut Shared, now: Instant) -> Result<(), Failure> {
        let _ = shared.registry.deregister(&mut self.stream);
        self.stream = Self::connect(shared.options, self.token, &shared.registry)
            .map_err(Failure::Connection)?;
        self.phase = Phase::Connecting;
        self.phase_since = now;
        self.sent_here = 0;
        self.input.clear();
        self.tls = None;
        shared.setting_up += 1;
        Ok(())
    }

    fn on_event(&mut self, id: usize, shared: &mut Shared, now: Instant) -> Result<(), Failure> {
        if self.phase == Phase::Connecting && !self.finish_connect(shared, now)? {
            return Ok(());
        }
        if let Some(tls) = &mut self.tls {
            // Records a blocked write left queued go first, handshake ones included.
            tls.flush(&mut self.stream).map_err(Failure::Connection)?;
        }
        self.receive(id, shared, now)?;
        self.send(id, shared, now)
    }

    /// The readiness dance mio documents for a non-blocking connect: an error, or a peer
    /// address once the handshake is done. Returns whether it is done.
    fn finish_connect(&mut self, shared: &mut Shared, now: Instant) -> Result<bool, Failure> {
        match self.stream.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => return Err(Failure::Connection(e)),
        }
        match self.stream.peer_addr() {
            Ok(_) => {}
            Err(e)
                if e.kind() == io::ErrorKind::NotConnected
                    || e.raw_os_error() == Some(libc::EINPROGRESS) =>
            {
                return Ok(false)
            }
            Err(e) => return Err(Failure::Connection(e)),
        }
        // Requests are small and latency is the point: Nagle would hold back a request
        // while an earlier one is unacknowledged.
        self.stream.set_nodelay(true).map_err(Failure::Connection)?;
        if let Some(version) = shared.options.proxy_protocol {
            // Before TLS: a balancer's header is for the server's TCP side.
            self.send_proxy_header(version)?;
        }
        match &shared.options.tls {
            Some(tls) => {
                // The ClientHello goes with the next flush; reading drives the rest.
                self.tls = Some(tls.start().map_err(Failure::Connection)?);
                self.phase = Phase::Handshaking;
                self.phase_since = now;
            }
            None => self.connected(shared, now),
        }
        Ok(true)
    }

    /// Connected (and through the TLS handshake): the greeting comes next, if any.
    fn connected(&mut self, shared: &mut Shared, now: Instant) {
        if shared.script.greeting_line.is_empty() {
            self.become_ready(shared);
        } else {
            self.phase = Phase::Greeting;
            self.phase_since = now;
        }
    }

    /// Reads plaintext: from the socket, or through the TLS state. `short_read_drains`
    /// says a read that did not fill `buf` emptied the source (true of the socket where the
    /// kernel says so; never of a TLS state, which may hold more records than one read
    /// hands out).
    fn read(&mut self, buf: &mut [u8]) -> (io::Result<usize>, bool) {
        match &mut self.tls {
            None => (self.stream.read(buf), evloop::net::SHORT_READ_DRAINS),
            Some(tls) => (tls.read(&mut self.stream, buf), false),
        }
    }

    /// Writes plaintext: to the socket, or through the TLS state.
    fn write(&mut self, from: usize) -> io::Result<usize> {
        let bytes = &self.output[from..];
        match &mut self.tls {
            None => self.stream.write(bytes),
            Some(tls) => tls.write(&mut self.stream, bytes),
        }
    }

    /// What a balancer sends first: the connection's own two ends, so the server sees this
    /// client's real address. A new socket's send buffer is empty, so the few bytes go in
    /// one write; anything less is an error rather than a state to track.
    fn send_proxy_header(&mut self, version: proxy::Version) -> Result<(), Failure> {
        let ends = self
            .stream
            .local_addr()
            .and_then(|local| Ok((local, self.stream.peer_addr()?)));
        let (local, peer) = ends.map_err(Failure::Connection)?;
        let header = proxy::encode(version, local, peer);
        match self.stream.write(&header) {
            Ok(n) if n == header.len() => Ok(()),
            Ok(_) => Err(Failure::Connection(io::Error::other(
                "the PROXY header did not fit in a new socket's send buffer",
            ))),
            Err(e) => Err(Failure::Connection(e)),
        }
    }

    fn become_ready(&mut self, shared: &mut Shared) {
        self.phase = Phase::Ready;
        shared.setting_up -= 1;
        shared.tally.connections_opened += 1;
    }

    /// Reads until WouldBlock, as edge-triggered readiness requires, checking as it goes.
    /// Over TLS reading also drives the handshake: its end moves the client on.
    fn receive(&mut self, id: usize, shared: &mut Shared, now: Instant) -> Result<(), Failure> {
        loop {
            let (read, short_read_drains) = self.read(&mut shared.read_buffer);
            if self.phase == Phase::Handshaking
                && !self.tls.as_ref().is_some_and(TlsState::is_handshaking)
            {
                if shared.may_send() {
                    shared.tally.handshakes += 1;
                }
                self.connected(shared, now);
            }
            match read {
                Ok(0) if self.phase == Phase::Closing => return self.reopen(shared, now),
                // The server's TCP EOF after our close_notify, without one of its own: the
                // end of this connection all the same.
                Err(e)
                    if e.kind() == io::ErrorKind::UnexpectedEof && self.phase == Phase::Closing =>
                {
                    return self.reopen(shared, now)
                }
                Ok(0) => {
                    return Err(Failure::Connection(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    )))
                }
                Ok(n) => {
                    self.input.extend_from_slice(&shared.read_buffer[..n]);
                    self.check_input(id, shared, now)?;
                    // A read that did not fill the buffer emptied the socket: where the
                    // kernel says so (see `net::SHORT_READ_DRAINS`), skip the read that
                    // would only return WouldBlock, a third of the syscalls in lockstep.
                    if short_read_drains && n < shared.read_buffer.len() {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Failure::Connection(e)),
            }
        }
    }

    /// Matches the input against the greeting, then against each request in flight in
    /// order, keeping the unfinished tail of the last one.
    fn check_input(&mut self, id: usize, shared: &mut Shared, now: Instant) -> Result<(), Failure> {
        let mut consumed = 0;
        while consumed < self.input.len() {
            let input = &self.input[consumed..];
            let expected = match self.phase {
                Phase::Greeting => shared.script.greeting_line.as_slice(),
                _ => match self.in_flight.front() {
                    Some(request) => shared.script.tcp_reply(id, request.seq),
                    // Bytes when no reply is owed: the server is not speaking the protocol.
                    None => return Err(Failure::mismatch(b"", input)),
                },
            };
            match compare(input, expected) {
                Match::Wrong => return Err(Failure::mismatch(expected, input)),
                Match::Partial => break,
                Match::Complete => consumed += expected.len(),
            }
            if self.phase == Phase::Greeting {
                self.become_ready(shared);
            } else if let Some(request) = self.in_flight.pop_front() {
                shared.answered(request, now);
            }
        }
        self.input.drain(..consumed);
        Ok(())
    }

    /// Tops the pipeline up and writes until done or WouldBlock.
    fn send(&mut self, id: usize, shared: &mut Shared, now: Instant) -> Result<(), Failure> {
        if self.phase != Phase::Ready {
            return Ok(());
        }
        let per_connection = shared.options.requests_per_connection;
        while self.in_flight.len() < shared.options.pipeline
            && per_connection.is_none_or(|n| self.sent_here < n)
            && shared.may_send()
        {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.sent_here += 1;
            self.output
                .extend_from_slice(shared.script.request(id, seq));
            self.output.push(b'\n');
            shared.issue(&mut self.in_flight, seq, now);
        }
        while self.written < self.output.len() {
            match self.write(self.written) {
                Ok(0) => return Err(Failure::Connection(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.written += n,
                // The rest goes when the writable event comes.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Failure::Connection(e)),
            }
        }
        self.output.clear();
        self.written = 0;
        if per_connection == Some(self.sent_here) && self.in_flight.is_empty() {
            // Every reply of this connection has come: half-close (after close_notify, over
            // TLS), and the server, having answered everything, closes too (the next read
            // sees its EOF).
            if let Some(tls) = &mut self.tls {
                tls.close(&mut self.stream).map_err(Failure::Connection)?;
            }
            self.stream
                .shutdown(std::net::Shutdown::Write)
                .map_err(Failure::Connection)?;
            self.phase = Phase::Closing;
            self.phase_since = now;
        }
        Ok(())
    }

    /// On a byte stream a missing reply puts every later one out of step, so the first
    /// timeout fails the whole connection.
    fn check_timeout(&self, shared: &Shared, now: Instant) -> Result<(), Failure> {
        let timeout = shared.options.timeout;
        let started = match self.phase {
            Phase::Connecting | Phase::Handshaking | Phase::Greeting | Phase::Closing => {
                self.phase_since
            }
            Phase::Ready => match self.in_flight.front() {
                Some(request) => request.sent_at,
                None => return Ok(()),
            },
        };
        if now.saturating_duration_since(started) < timeout {
            return Ok(());
        }
        Err(match self.phase {
            Phase::Connecting => {
                Failure::Connection(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
            }
            Phase::Handshaking => Failure::Timeout("TLS handshake"),
            Phase::Greeting => Failure::Timeout("greeting"),
            Phase::Ready => Failure::Timeout("reply"),
            Phase::Closing => Failure::Timeout("EOF after closing"),
        })
    }
}

/// One connected UDP socket. Datagrams can be lost, so each request in flight times out
/// on its own, is counted, and frees its place in the pipeline for the next request.
///
/// It is registered for readable readiness only. The kernel reports a UDP socket writable
/// again each time the buffer of a datagram it sent is freed, which in a lockstep run is
/// one extra wakeup (and one wasted `recv`) per request; so writable interest is added
/// only while a send is blocked, and dropped once sends go through again.
pub(super) struct UdpClient {
    socket: UdpSocket,
    token: Token,
    in_flight: VecDeque<InFlight>,
    next_seq: u64,
    /// Registered for writable readiness too, because a send would have blocked.
    awaiting_writable: bool,
}

impl UdpClient {
    fn open(options: &Options, token: Token, registry: &Registry) -> io::Result<UdpClient> {
        let addr = options.addr;
        let any: SocketAddr = if addr.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let from = options
            .source(token.0)
            .map_or(any, |ip| SocketAddr::new(ip, 0));
        let socket = UdpSocket::bind(from)?;
        // Connected: the kernel drops datagrams from anyone else, and a closed port comes
        // back as ECONNREFUSED instead of silence.
        socket.connect(addr)?;
        let mut udp = UdpClient {
            socket,
            token,
            in_flight: VecDeque::new(),
            next_seq: 0,
            awaiting_writable: false,
        };
        registry.register(&mut udp.socket, token, Interest::READABLE)?;
        Ok(udp)
    }

    fn on_event(&mut self, id: usize, shared: &mut Shared, now: Instant) -> Result<(), Failure> {
        loop {
            match self.socket.recv(&mut shared.read_buffer) {
                Ok(n) => {
                    let Shared {
                        read_buffer,
                        script,
                        ..
                    } = shared;
                    match self.take_request_answered_by(&read_buffer[..n], id, script) {
                        Some(request) => shared.answered(request, now),
                        // No request in flight expects this datagram: a wrong reply, or one
                        // so late that its request already counted as a timeout.
                        None => {
                            let failure = Failure::mismatch(b"", &read_buffer[..n]);
                            shared.count(id, &failure);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Failure::Connection(e)),
            }
        }
        self.send(id, shared, now)
    }

    /// Finds the request `datagram` answers. Usually the oldest; after a loss it is a later
    /// one, and the lost request stays until it times out.
    fn take_request_answered_by(
        &mut self,
        datagram: &[u8],
        id: usize,
        script: &mut Script,
    ) -> Option<InFlight> {
        let position = self
            .in_flight
            .iter()
            .position(|request| script.udp_reply(id, request.seq) == datagram)?;
        self.in_flight.remove(position)
    }

    fn send(&mut self, id: usize, shared: &mut Shared, now: Instant) -> Result<(), Failure> {
        let mut blocked = false;
        while self.in_flight.len() < shared.options.pipeline && shared.may_send() {
            let seq = self.next_seq;
            match self.socket.send(shared.script.request(id, seq)) {
                Ok(_) => {
                    self.next_seq += 1;
                    shared.issue(&mut self.in_flight, seq, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Failure::Connection(e)),
            }
        }
        if blocked != self.awaiting_writable {
            let interest = if blocked {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            shared
                .registry
                .reregister(&mut self.socket, self.token, interest)
                .map_err(Failure::Connection)?;
            self.awaiting_writable = blocked;
        }
        Ok(())
    }

    fn on_tick(&mut self, id: usize, shared: &mut Shared, now: Instant) -> Result<(), Failure> {
        // Requests are sent in order, so the oldest is at the front.
        while let Some(request) = self.in_flight.front() {
            if now.saturating_duration_since(request.sent_at) < shared.options.timeout {
                break;
            }
            self.in_flight.pop_front();
            shared.outstanding -= 1;
            shared.count(id, &Failure::Timeout("reply"));
        }
        self.send(id, shared, now)
    }
}

impl Client {
    /// When its oldest request still in flight was sent, if it has one.
    pub(super) fn oldest_in_flight(&self) -> Option<Instant> {
        let oldest = match self {
            Client::Tcp(tcp) => tcp.in_flight.front(),
            Client::Udp(udp) => udp.in_flight.front(),
            Client::Closed => None,
        };
        oldest.map(|request| request.sent_at)
    }
}
