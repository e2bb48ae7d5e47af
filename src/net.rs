//! Socket setup shared by every binary: listeners with a real backlog, SO_REUSEPORT for
//! `--threads`, UDP sharing the TCP port number, the startup line, and the descriptor limit.
//! It also holds the socket rules both servers follow, so the reactor and the
//! thread-per-connection baseline cannot drift apart on them: how long a close lingers, how
//! a busy client is turned away, how accept errors back off, how large a datagram can be,
//! and when a short read means the socket is drained. Nothing here runs per message.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// How long a closing connection keeps reading (and discarding) after its last reply and
/// its FIN, waiting for the peer's EOF. If the socket were closed with unread input still
/// queued, the kernel would send RST instead of FIN, and an RST can make the client lose
/// replies it has not read yet. Two seconds let a client that sent more after `exit` (or
/// is still reading a large backlog of replies) finish and see our FIN, and bound what a
/// peer that never closes can hold.
pub const LINGER_TIMEOUT: Duration = Duration::from_secs(2);

/// How long accepting pauses after `accept` fails for want of resources (EMFILE, ENFILE,
/// ENOBUFS, ENOMEM). The pending connection stays in the kernel's queue, so retrying at
/// once would spin on the same error; a tenth of a second is short next to a client's
/// connect timeout.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A UDP datagram carries at most 65,507 bytes of payload over IPv4 (65,527 over IPv6); a
/// buffer of 65,535 bytes never truncates one.
pub const MAX_DATAGRAM: usize = 65_535;

/// On Linux (and Android, the same kernel), epoll reports a new edge for every arrival of
/// data, and a read that returns less than it asked for has emptied the receive queue. So
/// after a short read the read that would only return WouldBlock can be skipped: one
/// syscall per message saved in lockstep. This is kernel behaviour beyond mio's portable
/// contract (which promises a new event only after WouldBlock), hence these kernels only;
/// tokio's `poll_evented` relies on the same. It must not be used when the event says the
/// peer closed, because that EOF would not be announced again.
pub const SHORT_READ_DRAINS: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// `--send-buffer` and `--recv-buffer`: SO_SNDBUF and SO_RCVBUF on an accepted socket.
/// Without them Linux grows a socket's buffers to megabytes for a client that floods or
/// never reads, and thousands of such clients push the whole host to its `tcp_mem` limit,
/// where the kernel starts dropping packets for every TCP user on the machine. A failure is
/// logged and the connection served with the kernel's sizes.
pub(crate) fn set_buffer_sizes(socket: SockRef<'_>, send: Option<usize>, recv: Option<usize>) {
    if let Some(bytes) = send {
        if let Err(e) = socket.set_send_buffer_size(bytes) {
            log::debug!("SO_SNDBUF {bytes}: {e}");
        }
    }
    if let Some(bytes) = recv {
        if let Err(e) = socket.set_recv_buffer_size(bytes) {
            log::debug!("SO_RCVBUF {bytes}: {e}");
        }
    }
}

/// The most bytes of output an accepted socket's kernel queue holds that are not sent yet
/// (`TCP_NOTSENT_LOWAT`, Linux and Android): past it a write takes no more and WRITABLE
/// waits until the queue drains below it. Bytes in flight are not counted, so a client that
/// reads is sent as fast as before; one that never reads gets this much queued in the
/// kernel instead of the megabytes Linux would grow its send buffer to. Without it, 2,000
/// such clients had the kernel take 1.09 GB of replies (the server writing them all while
/// honest clients waited; 143 MB with it). 16 KiB is one batch of the loop's replies
/// (`REPLY_BUDGET`), written in one call when the queue drains below it.
pub const UNSENT_LIMIT: u32 = 16 * 1024;

/// Caps the bytes an accepted socket queues unsent at [`UNSENT_LIMIT`], where the kernel
/// can. A failure is logged and the connection served with the kernel's default.
pub(crate) fn limit_unsent(socket: &SockRef<'_>) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = socket.set_tcp_notsent_lowat(UNSENT_LIMIT) {
        log::debug!("TCP_NOTSENT_LOWAT {UNSENT_LIMIT}: {e}");
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = socket;
}

/// Turns away a freshly accepted client with `message` (`ERR server busy`) and closes its
/// write side, without blocking: the socket is made non-blocking, and a new connection's
/// empty send buffer always has room for a one-line message. What the client already sent
/// is read and discarded (bounded by what is queued right now), so that dropping the socket
/// sends FIN, not an RST that could destroy the message before the client reads it.
pub(crate) fn refuse(socket: SockRef<'_>, message: &[u8]) {
    let _ = socket.set_nonblocking(true);
    let _ = (&*socket).write(message);
    let _ = socket.shutdown(Shutdown::Write);
    let mut scratch = [0; 1024];
    for _ in 0..64 {
        match (&*socket).read(&mut scratch) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

/// Binds a TCP listener with `backlog`, SO_REUSEADDR (restart without waiting out
/// TIME_WAIT) and, when `reuse_port`, SO_REUSEPORT so several loops can share the address.
pub(crate) fn tcp_listener(
    addr: SocketAddr,
    backlog: i32,
    reuse_port: bool,
) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        set_reuse_port(&socket)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// SO_REUSEPORT lets several sockets bind one address, the kernel spreading connections
/// and datagrams over them: what `--threads` runs on. Windows has no equivalent (its
/// SO_REUSEADDR lets a second program steal the port instead), so there it is an error.
fn set_reuse_port(socket: &Socket) -> io::Result<()> {
    #[cfg(unix)]
    {
        socket.set_reuse_port(true)
    }
    #[cfg(not(unix))]
    {
        let _ = socket;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "--threads above 1 needs SO_REUSEPORT, which this platform does not have",
        ))
    }
}

/// Binds a UDP socket, with SO_REUSEPORT when `reuse_port`.
pub(crate) fn udp_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if reuse_port {
        set_reuse_port(&socket)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The sockets a server serves on, bound before any loop starts so the addresses can be
/// reported (and port 0 resolved) first.
pub struct Bound {
    /// The listener, already listening.
    pub tcp: TcpListener,
    /// The UDP socket, unless UDP is off.
    pub udp: Option<UdpSocket>,
}

/// How many times to retry when TCP got a free port from the kernel but that port number is
/// already taken for UDP by someone else.
const SHARED_PORT_ATTEMPTS: usize = 16;

/// Binds the TCP listener and, if asked, the UDP socket. A UDP address with port 0 takes the
/// port number TCP was given, so the two share it as docs/reference.md promises. Under systemd
/// socket activation the sockets it passed are used instead (see [`crate::systemd`]); a
/// UDP socket it did not pass is bound as asked.
pub fn bind(
    listen: SocketAddr,
    udp: Option<SocketAddr>,
    backlog: i32,
    reuse_port: bool,
) -> io::Result<Bound> {
    let inherited = crate::systemd::take_inherited()?;
    if let Some(tcp) = inherited.tcp {
        let udp = match (inherited.udp, udp) {
            (Some(socket), Some(_)) => Some(socket),
            (Some(_), None) => {
                log::warn!("not serving the datagram socket systemd passed: UDP is off");
                None
            }
            (None, None) => None,
            (None, Some(mut udp_addr)) => {
                if udp_addr.port() == 0 {
                    udp_addr.set_port(tcp.local_addr()?.port());
                }
                let socket = udp_socket(udp_addr, reuse_port)
                    .map_err(|e| with_context(e, "udp", udp_addr))?;
                Some(socket)
            }
        };
        return Ok(Bound { tcp, udp });
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let tcp = tcp_listener(listen, backlog, reuse_port)
            .map_err(|e| with_context(e, "tcp", listen))?;
        let Some(mut udp_addr) = udp else {
            return Ok(Bound { tcp, udp: None });
        };
        let share_port = udp_addr.port() == 0;
        if share_port {
            udp_addr.set_port(tcp.local_addr()?.port());
        }
        match udp_socket(udp_addr, reuse_port) {
            Ok(socket) => {
                return Ok(Bound {
                    tcp,
                    udp: Some(socket),
                })
            }
            // The kernel chose the TCP port; another program may hold that number for UDP.
            // Try another port rather than fail a request that only said "any port".
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse
                    && share_port
                    && listen.port() == 0
                    && attempt < SHARED_PORT_ATTEMPTS => {}
            Err(e) => return Err(with_context(e, "udp", udp_addr)),
        }
    }
}

fn with_context(e: io::Error, what: &str, addr: SocketAddr) -> io::Error {
    io::Error::new(e.kind(), format!("cannot bind {what} {addr}: {e}"))
}

/// The one line a server prints on stdout once its sockets are bound.
/// With TLS on, the line ends in ` tls=on` (see [`with_tls`]).
pub fn startup_line(tcp: SocketAddr, udp: Option<SocketAddr>) -> String {
    match udp {
        Some(udp) => format!("listening tcp={tcp} udp={udp}"),
        None => format!("listening tcp={tcp} udp=off"),
    }
}

/// The startup line of a server whose TCP connections are TLS (`--tls-cert`) says so at its
/// end; a plain server's line is unchanged.
pub fn with_tls(line: String, tls: bool) -> String {
    match tls {
        true => line + " tls=on",
        false => line,
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit, so a server (or the load generator) can
/// hold as many sockets as the machine allows. Returns the (soft, hard) limits now in force.
/// Unix only: Windows has no such per-process limit on sockets, and says so as an error.
#[cfg(unix)]
pub fn raise_fd_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read or write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    // `rlim_t` is u64 on Linux and macOS but i64 on FreeBSD, where "infinity" is i64::MAX.
    #[allow(clippy::unnecessary_fallible_conversions, clippy::useless_conversion)]
    let as_u64 = |value: libc::rlim_t| u64::try_from(value).unwrap_or(u64::MAX);
    Ok((as_u64(limit.rlim_cur), as_u64(limit.rlim_max)))
}

/// Windows: no descriptor limit to raise.
#[cfg(not(unix))]
pub fn raise_fd_limit() -> io::Result<(u64, u64)> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "this platform has no per-process descriptor limit",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_and_udp_share_a_port_chosen_by_the_kernel() {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        let bound = bind(any, Some(any), 128, false).unwrap();
        let tcp = bound.tcp.local_addr().unwrap();
        let udp = bound.udp.unwrap().local_addr().unwrap();
        assert_ne!(tcp.port(), 0);
        assert_eq!(tcp, udp);
    }

    #[test]
    fn a_taken_address_is_an_error_naming_it() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let err = bind(addr, None, 128, false).err().expect("bind must fail");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }

    #[test]
    fn startup_line_format() {
        let a: SocketAddr = ([127, 0, 0, 1], 9).into();
        assert_eq!(
            startup_line(a, Some(a)),
            "listening tcp=127.0.0.1:9 udp=127.0.0.1:9"
        );
        assert_eq!(startup_line(a, None), "listening tcp=127.0.0.1:9 udp=off");
    }
}
