//! One TCP connection of the threaded baseline, served start to end by its own thread with
//! blocking calls.
//!
//! This module owns a connection's life once the accept loop has admitted it: the PROXY
//! header and the admission under `--max-connections-per-ip` of the client it names, the
//! socket options, the TLS handshake, the greeting, the read-answer-write loop with the idle
//! and line timeouts (the socket's read timeout), and the lingering close
//! ([`close_politely`]); then it adds what the connection did (its own [`Stats`]) to the
//! server's counts. The line clock that `--line-timeout` reads is the session's
//! ([`Session::line_deadline`]); this thread only tells it the time and turns what is left
//! into the socket's read timeout. It must not frame, parse or build replies itself (that
//! is `protocol.rs`), nor accept, register or refuse connections at `--max-connections`
//! (that is `threaded.rs`, whose registry wakes this thread at stop by shutting its socket
//! down). It reads and writes through a [`Channel`], never knowing whether TLS is
//! underneath beyond the steps `Channel` offers.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::channel::{Channel, TlsConfig};
use super::Shared;
use crate::admission::Permit;
use crate::net::{self, LINGER_TIMEOUT};
use crate::protocol::{self, Flow, ProtocolConfig, Session};
use crate::proxy;
use crate::stats::Stats;

/// Bytes one `read` may return. 16 KiB takes a burst of pipelined requests in one system
/// call while keeping a connection's memory at a fraction of its stack reservation.
const READ_BUFFER_SIZE: usize = 16 * 1024;

/// Capacity the reply buffer keeps between reads: a full read of ordinary requests fits,
/// and an outsized burst is given back to the allocator once it has been written.
const OUTPUT_KEEP_CAPACITY: usize = 2 * READ_BUFFER_SIZE;

/// What the accept loop hands a connection's thread: who the client is and how to serve it.
pub(super) struct Start {
    /// The connection's id in the server's registry.
    pub(super) id: u64,
    pub(super) peer: SocketAddr,
    /// The connection's place under the limits, counted against its address already
    /// unless that is in a PROXY header still to come. Given back when this thread drops it,
    /// or by the accept loop if it takes it from a lingering connection to make room.
    pub(super) permit: Permit,
    /// `--proxy-protocol`: a PROXY header comes before anything else.
    pub(super) proxied: bool,
    pub(super) protocol: ProtocolConfig,
    pub(super) settings: SocketSettings,
    pub(super) tls: TlsConfig,
    /// When the connection was accepted, which `--handshake-timeout` counts from (behind a
    /// PROXY header, from the admission of the client it names).
    pub(super) accepted: Instant,
    pub(super) handshake_timeout: Duration,
}

/// What a connection thread sets on its socket: the timeouts it enforces with the read
/// timeout, and the buffer sizes.
#[derive(Clone, Copy)]
pub(super) struct SocketSettings {
    pub(super) idle: Option<Duration>,
    pub(super) line: Option<Duration>,
    pub(super) send_buffer: Option<usize>,
    pub(super) recv_buffer: Option<usize>,
}

/// The body of a connection's thread: serves the connection from its first byte to its
/// lingering close, and adds what it did to the server's counts. Every way it ends is
/// logged here; none of them ends any other connection.
pub(super) fn serve_thread(shared: &Shared, socket: &TcpStream, start: Start) {
    let Start {
        id,
        peer,
        mut permit,
        proxied,
        protocol,
        settings,
        tls,
        accepted,
        handshake_timeout,
    } = start;
    let channel = match Channel::open(socket, tls) {
        Ok(channel) => channel,
        // rustls refused a config it accepted at startup: not this client's doing.
        // Nothing was read or written, and it is not counted as served.
        Err(e) => {
            warn!("cannot serve {peer}: {e}");
            return;
        }
    };
    let mut connection = Connection::new(socket, channel, &protocol);
    // The preamble, in order on the raw socket: the PROXY header and the admission of the
    // client it names, then the TLS handshake (below), then the greeting.
    let mut early = Vec::new();
    let mut handshake_from = accepted;
    if proxied {
        if !connection.admit_proxied(peer, shared, &mut permit, &mut early) {
            // Closed ungreeted: its bytes count, the connection does not count as served.
            shared.add_counts(&connection.counts);
            return;
        }
        // As in the reactor: the handshake's time counts from the admission.
        handshake_from = Instant::now();
    }
    // Served from here, as the reactor counts a connection: a failed TLS handshake too.
    connection.counts.connections = 1;
    // Over TLS, what came behind the header is the start of the ClientHello.
    let early = connection.channel.begin(early);
    if let Err(e) = connection.set_socket_options(settings) {
        debug!("{peer}: {e}");
    } else if let Err(why) = connection
        .channel
        .handshake(handshake_from, handshake_timeout)
    {
        connection.counts.tls_rejected += 1;
        info!("{peer}: TLS handshake failed, closing: {why}");
    } else if let Err(e) = connection.serve(peer, settings, &shared.stopping, &early) {
        debug!("{peer}: {e}");
    }
    connection.channel.send_close_notify();
    // Everything owed is out: from here a new client may take this one's place.
    shared.linger(id, permit);
    let lingered = close_politely(socket, &mut connection.read_buffer);
    shared.done_lingering(id);
    connection.counts.bytes_in += lingered;
    connection.counts.messages = connection.session.messages();
    shared.add_counts(&connection.counts);
    debug!("{peer}: closed");
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
    /// What this connection did; its messages are the session's, taken at the end.
    counts: Stats,
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
            counts: Stats::default(),
        }
    }

    /// `--proxy-protocol`: reads the PROXY header (within [`proxy::HEADER_TIMEOUT`] of
    /// now), then counts the client it names against its address in `permit`
    /// (`--max-connections-per-ip`). False when the connection is to close ungreeted
    /// (logged). Bytes that came behind the header go to `early`, to be answered after the
    /// greeting.
    fn admit_proxied(
        &mut self,
        balancer: SocketAddr,
        shared: &Shared,
        permit: &mut Permit,
        early: &mut Vec<u8>,
    ) -> bool {
        let source = match self.read_proxy_header(early) {
            Ok(source) => source,
            Err(why) => {
                self.counts.proxy_rejected += 1;
                info!("{balancer}: closed without a greeting: {why}");
                return false;
            }
        };
        // No address in the header (LOCAL, a health check): the balancer stands.
        let client = source.unwrap_or(balancer);
        let ip = client.ip();
        let counts = &mut self.counts;
        let counted = permit.count_address_or_reclaim(ip, |refusal| {
            shared.close_oldest_lingering(refusal, Some(ip), counts)
        });
        if counted.is_err() {
            debug!("refused {client} (via {balancer}): at --max-connections-per-ip");
            net::refuse(
                socket2::SockRef::from(self.socket),
                self.channel.refusal(protocol::TOO_MANY_FROM_ADDRESS),
            );
            self.counts.refused_per_ip += 1;
            return false;
        }
        debug!("{client}: connected (PROXY header from {balancer})");
        true
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
                    self.counts.bytes_in += n as u64;
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
        net::limit_unsent(&socket2::SockRef::from(self.socket));
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
        peer: SocketAddr,
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
        self.session.note_input(Instant::now());
        // When the client last sent something, for the idle timeout.
        let mut last_input = Instant::now();
        // While the session holds an unfinished line, the read timeout is what is left of
        // its `--line-timeout` (or the idle timeout, if sooner), so a client dribbling bytes
        // cannot stretch it; a whole line costs no extra syscall.
        let mut read_timeout = idle_timeout;
        loop {
            let wanted = match self.session.line_deadline(settings.line) {
                Some(deadline) => {
                    let left = deadline
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1));
                    Some(idle_timeout.map_or(left, |idle| idle.min(left)))
                }
                None => idle_timeout,
            };
            if wanted != read_timeout {
                self.socket.set_read_timeout(wanted)?;
                read_timeout = wanted;
            }
            let limit = self.protocol.read_limit(self.read_buffer.len());
            let flow = match self.channel.read(&mut self.read_buffer[..limit]) {
                Ok(0) => {
                    // Our own shutdown(SHUT_RD) at server stop also reads as EOF. Then the
                    // client has not finished its last line, so it is owed no reply for it.
                    if stopping.load(Ordering::Acquire) {
                        return Ok(());
                    }
                    // Said before the last replies go out, so the line is in the log by
                    // the time the client has them.
                    if self.channel.truncated() {
                        info!("{peer}: TCP EOF without a TLS close_notify: a truncated session");
                    }
                    self.session.on_eof(self.protocol, &mut self.pending_output)
                }
                Ok(n) => {
                    self.counts.bytes_in += n as u64;
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
                    match self.session.line_deadline(settings.line) {
                        Some(deadline) if deadline <= Instant::now() => {}
                        // The read waited for the line's deadline, not the idle one, and
                        // ended before it: the kernel counts a read timeout in its clock
                        // ticks and may end it up to a tick early. Read again, for what is
                        // left of the line's time.
                        Some(deadline)
                            if idle_timeout.is_none_or(|idle| last_input + idle > deadline) =>
                        {
                            continue
                        }
                        _ => return Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout")),
                    }
                    debug!("a line unfinished for {:?}: closing", settings.line);
                    self.pending_output
                        .extend_from_slice(protocol::LINE_TIMEOUT);
                    return self.flush();
                }
                Err(e) => return Err(e),
            };
            last_input = Instant::now();
            self.session.note_input(last_input);
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
        // Over TLS, every record out to the socket, or the error that stopped it.
        self.channel.flush()?;
        self.counts.bytes_out += self.pending_output.len() as u64;
        self.pending_output.clear();
        // One read of empty lines owes up to nine times its size in replies; do not keep
        // that peak allocated for the rest of a long-lived connection.
        self.pending_output.shrink_to(OUTPUT_KEEP_CAPACITY);
        Ok(())
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
