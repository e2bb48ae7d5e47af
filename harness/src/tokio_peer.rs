//! The tokio comparison server: the crate's protocol served the way a tokio user would
//! serve it, on a current-thread runtime, so the bench can set a general-purpose async
//! runtime beside the hand-written mio reactor. One thread runs everything, like the reactor.
//!
//! Each connection is a task that reads into a buffer of its own, hands the bytes to a
//! [`Session`] and writes the replies the session appends; each datagram is answered with
//! [`udp_reply`]. So the greeting, the replies, `exit`, the line limit and the final
//! unterminated line at EOF are the same code (`src/protocol.rs`) as in the other servers,
//! and the bench compares two runtimes rather than two protocols. It does not have the
//! flags, limits or graceful shutdown of the real servers: the bench starts it on port 0 and
//! kills it when the row is done.
//!
//! The bench runs it in a process of its own (the bench binary re-executed with
//! `--serve-tokio`), so the CPU time, memory and threads it reads from `/proc` are the
//! server's alone.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use log::{debug, warn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

// The same limits and socket rules as the other servers, from the crate itself: the listen
// backlog (tokio's own `TcpListener::bind` asks for 1,024, which a burst of thousands of
// connects overflows), the pause after an accept error, the datagram buffer, and how long
// a close waits for the peer's EOF. The line limit comes with `ProtocolConfig::default()`.
use evloop::config::DEFAULT_BACKLOG as BACKLOG;
use evloop::net::{ACCEPT_BACKOFF, LINGER_TIMEOUT, MAX_DATAGRAM};
use evloop::protocol::{udp_reply, Flow, ProtocolConfig, Session};

/// Bytes one read may bring in: 8 KiB, the size of tokio's own `BufReader`, and plenty for
/// the bench's batches of 16 pipelined 16-byte lines. A longer line simply takes more reads.
const READ_BUFFER: usize = 8 * 1024;

/// Binds TCP and UDP on `listen` (port 0: a free port, shared by both), prints the startup
/// line every server prints, and serves until killed.
pub fn serve(listen: SocketAddr) -> io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    // The idle test holds 10,000 connections open; the default soft limit is often 1,024.
    evloop::net::raise_fd_limit()?;
    // The crate's socket setup gives the same backlog and the same TCP/UDP port sharing as
    // the other servers, so the comparison is about the runtime, not the listen queue.
    let bound = evloop::net::bind(listen, Some(listen), BACKLOG, false)?;
    bound.tcp.set_nonblocking(true)?;
    let udp = bound.udp.ok_or_else(|| io::Error::other("no UDP socket"))?;
    udp.set_nonblocking(true)?;
    // What the other servers speak when started without protocol flags, as the bench starts
    // them: lines, hello replies, the `Welcome!` greeting, `--max-line`'s default.
    let protocol = Arc::new(ProtocolConfig::default());

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::from_std(bound.tcp)?;
        let udp = UdpSocket::from_std(udp)?;
        let line = evloop::net::startup_line(listener.local_addr()?, Some(udp.local_addr()?));
        let mut stdout = io::stdout();
        writeln!(stdout, "{line}")?;
        stdout.flush()?;

        tokio::spawn(serve_udp(udp, Arc::clone(&protocol)));
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let protocol = Arc::clone(&protocol);
                    tokio::spawn(async move {
                        // A peer that resets or vanishes is its own business, not the
                        // server's: note it and move on.
                        if let Err(e) = serve_connection(stream, &protocol).await {
                            debug!("{peer}: {e}");
                        }
                    });
                }
                Err(e) => {
                    warn!("accept: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    })
}

/// One TCP connection: the greeting, then every read handed to the session and its replies
/// written, until the session says to close (`exit`, a line too long, or EOF).
async fn serve_connection(mut stream: TcpStream, protocol: &ProtocolConfig) -> io::Result<()> {
    let mut session = Session::new();
    let mut input = vec![0; READ_BUFFER];
    // All of the buffer in line framing; in raw framing, where a read is a message, no more
    // than `max_line`.
    let limit = protocol.read_limit(input.len());
    let mut replies = Vec::new();
    protocol.greeting(&mut replies);
    stream.write_all(&replies).await?;
    loop {
        replies.clear();
        let flow = match stream.read(&mut input[..limit]).await? {
            0 => session.on_eof(protocol, &mut replies),
            n => session.on_input(protocol, &input[..n], &mut replies),
        };
        // One write for everything one read asked for, so lines that arrived together are
        // answered together, as in the other servers. (Nothing is written while a line is
        // still incomplete: `write_all` of no bytes makes no system call.)
        stream.write_all(&replies).await?;
        if flow == Flow::Close {
            break;
        }
    }
    close_politely(&mut stream, &mut input).await;
    Ok(())
}

/// Closes the way the other servers do: FIN after the last reply, then input read and
/// discarded until the peer's EOF, for at most [`LINGER_TIMEOUT`]. Closing with unread input
/// queued would make the kernel send RST instead, and an RST can destroy replies the client
/// has not read yet (after `exit` with more lines behind it, or a line too long).
async fn close_politely(stream: &mut TcpStream, scratch: &mut [u8]) {
    if stream.shutdown().await.is_err() {
        // Not connected any more: there is nobody left to be polite to.
        return;
    }
    let drain = async {
        while let Ok(n) = stream.read(scratch).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIMEOUT, drain).await;
}

/// The UDP endpoint: one reply datagram per datagram, on the same runtime thread as TCP.
async fn serve_udp(socket: UdpSocket, protocol: Arc<ProtocolConfig>) {
    let mut datagram = vec![0; MAX_DATAGRAM];
    let mut reply = Vec::new();
    loop {
        let (len, peer) = match socket.recv_from(&mut datagram).await {
            Ok(received) => received,
            Err(e) => {
                debug!("udp: receive failed: {e}");
                continue;
            }
        };
        reply.clear();
        udp_reply(protocol.udp_mode(), &datagram[..len], &mut reply);
        if let Err(e) = socket.send_to(&reply, peer).await {
            debug!("udp: reply to {peer} dropped: {e}");
        }
    }
}
