//! The tokio comparison server: the hello protocol written the way a tokio user would write
//! it, on a current-thread runtime, so the bench can set a general-purpose async runtime
//! beside the hand-written mio reactor. One thread runs everything, like the reactor.
//!
//! It speaks what the bench drives: greeting `Welcome!\n`, each line answered with
//! `Hello, <line>!\n` (one `\r` before the `\n` dropped), `exit` closes, a final unterminated
//! line at EOF is answered, a line longer than [`MAX_LINE`] gets `ERR line too long` and a
//! close, and each UDP datagram gets `Hello, <payload>!` (one trailing `\n` dropped). It does
//! not have the flags, limits or graceful shutdown of the real servers: the bench starts it
//! on port 0 and kills it when the row is done.
//!
//! The bench runs it in a process of its own (the bench binary re-executed with
//! `--serve-tokio`), so the CPU time, memory and threads it reads from `/proc` are the
//! server's alone.

use std::io::{self, Write};
use std::net::SocketAddr;

use log::{debug, warn};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

// The same limits as the other servers, from the crate itself: the line limit
// (`--max-line`'s default), the listen backlog (tokio's own `TcpListener::bind` asks for
// 1,024, which a burst of thousands of connects overflows), the datagram buffer and the
// pause after an accept error.
use evloop::config::DEFAULT_BACKLOG as BACKLOG;
use evloop::net::{ACCEPT_BACKOFF, MAX_DATAGRAM};
use evloop::protocol::DEFAULT_MAX_LINE as MAX_LINE;

/// Binds TCP and UDP on `listen` (port 0: a free port, shared by both), prints the startup
/// line every server prints, and serves until killed.
pub fn main(listen: SocketAddr) -> io::Result<()> {
    evloop::cli::init_logging();
    // The idle test holds 10,000 connections open; the default soft limit is often 1,024.
    evloop::net::raise_fd_limit()?;
    // The crate's socket setup gives the same backlog and the same TCP/UDP port sharing as
    // the other servers, so the comparison is about the runtime, not the listen queue.
    let bound = evloop::net::bind(listen, Some(listen), BACKLOG, false)?;
    bound.tcp.set_nonblocking(true)?;
    let udp = bound.udp.ok_or_else(|| io::Error::other("no UDP socket"))?;
    udp.set_nonblocking(true)?;

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

        tokio::spawn(serve_udp(udp));
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    tokio::spawn(async move {
                        // A peer that resets or vanishes is its own business, not the
                        // server's: note it and move on.
                        if let Err(e) = serve_connection(stream).await {
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

/// One TCP connection: greet, then answer line by line until `exit`, EOF or an error.
async fn serve_connection(mut stream: TcpStream) -> io::Result<()> {
    let (reader, writer) = stream.split();
    let mut reader = BufReader::new(reader);
    let mut writer = BufWriter::new(writer);
    writer.write_all(b"Welcome!\n").await?;
    writer.flush().await?;

    let mut line = Vec::new();
    loop {
        line.clear();
        // `take` bounds what one line may make us buffer: MAX_LINE bytes and the newline.
        let read = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if read == 0 {
            break;
        }
        let terminated = line.last() == Some(&b'\n');
        if terminated {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        } else if line.len() > MAX_LINE {
            writer.write_all(b"ERR line too long\n").await?;
            break;
        }
        if line == b"exit" {
            break;
        }
        writer.write_all(b"Hello, ").await?;
        writer.write_all(&line).await?;
        writer.write_all(b"!\n").await?;
        if !terminated {
            // An unterminated line is only ever returned at EOF: it was the last one.
            break;
        }
        // Replies to a batch of pipelined lines go out in one write once the batch that
        // arrived together has been answered, as the reactor does.
        if reader.buffer().is_empty() {
            writer.flush().await?;
        }
    }
    writer.flush().await?;
    Ok(())
}

/// The UDP endpoint: one reply datagram per datagram, on the same runtime thread as TCP.
async fn serve_udp(socket: UdpSocket) {
    let mut datagram = vec![0u8; MAX_DATAGRAM];
    let mut reply = Vec::with_capacity(MAX_DATAGRAM + 8);
    loop {
        let (len, peer) = match socket.recv_from(&mut datagram).await {
            Ok(received) => received,
            Err(e) => {
                debug!("udp: receive failed: {e}");
                continue;
            }
        };
        let payload = &datagram[..len];
        let payload = payload.strip_suffix(b"\n").unwrap_or(payload);
        reply.clear();
        reply.extend_from_slice(b"Hello, ");
        reply.extend_from_slice(payload);
        reply.push(b'!');
        if let Err(e) = socket.send_to(&reply, peer).await {
            debug!("udp: reply to {peer} dropped: {e}");
        }
    }
}
