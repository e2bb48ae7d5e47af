//! Embedding the reactor in your own program, with your own reply.
//!
//! ```sh
//! cargo run --example embed                  # on 127.0.0.1, ports picked by the kernel
//! cargo run --example embed -- 127.0.0.1:7000
//! ```
//!
//! The server is the library's: `ServerConfig` says what to serve, `Mode::Custom` supplies
//! the reply (here the message in upper case with its length), and `reactor::spawn` runs
//! the event loop on its own thread and hands back the addresses it bound. Framing, `exit`,
//! `--max-line`, UDP and shutdown all come with it; the program only decides what a reply
//! says.
//!
//! The program then acts as its own client, one round trip over TCP and one over UDP, stops
//! the server and prints what it did, so it ends by itself (CI runs it). To serve until
//! Ctrl-C instead, set `config.handle_signals = true` and replace the client part and
//! `running.shutdown()` with `running.join()`: the loop then runs until SIGINT or SIGTERM
//! and stops gracefully, delivering the replies it owes. Or, with no extra thread at all,
//! `evloop::reactor::Reactor::bind(config)?.run()` on the main thread.

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use evloop::net::startup_line;
use evloop::protocol::Mode;
use evloop::{reactor, ServerConfig, Stats};

/// Only guards the demo against hanging if something is broken: the server answers at once.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let listen = match std::env::args().nth(1) {
        None => "127.0.0.1:0".to_string(),
        Some(arg) => arg,
    };
    let listen: SocketAddr = match listen.parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("embed: {listen:?} is not an address (IP:PORT): {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(listen, &mut io::stdout().lock()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The custom reply: the message in ASCII upper case, then its length in bytes. It gets the
/// message without its newline and appends only the body; the server adds the framing (a
/// `\n` on TCP, nothing on UDP). It runs on the event loop's thread, so it must be quick:
/// anything slow here stalls every client.
pub fn shout(message: &[u8], out: &mut Vec<u8>) {
    out.extend(message.iter().map(u8::to_ascii_uppercase));
    out.extend_from_slice(format!(" ({} bytes)", message.len()).as_bytes());
}

/// Starts a server on `listen` (TCP and UDP on the same port), does one TCP and one UDP round
/// trip with it, stops it and returns its statistics, reporting each step to `output`.
pub fn run(listen: SocketAddr, output: &mut impl Write) -> io::Result<Stats> {
    let mut config = ServerConfig::ephemeral();
    config.listen = listen;
    config.udp = Some(listen);
    config.protocol.mode = Mode::Custom(Arc::new(shout));
    config.protocol.greeting = b"Welcome to the embedded server!".to_vec();

    let running = reactor::spawn(config)?;
    writeln!(output, "{}", startup_line(running.tcp, running.udp))?;

    // Whatever the demo's outcome, the server must be stopped: a spawned server does not
    // stop when its handle is dropped.
    let demo = tcp_round_trip(reachable(running.tcp), output).and_then(|()| match running.udp {
        Some(udp) => udp_round_trip(reachable(udp), output),
        None => Ok(()),
    });
    let stats = running.shutdown();
    demo?;
    let stats = stats?;
    writeln!(output, "{stats}")?;
    Ok(stats)
}

/// Where to reach a server bound to `addr`: a server on the unspecified address (`0.0.0.0`,
/// `::`) listens on every interface, loopback included.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// Greeting, one message, `exit`, and the server's close, reading whole lines as
/// `examples/tcp_client.rs` explains.
fn tcp_round_trip(server: SocketAddr, output: &mut impl Write) -> io::Result<()> {
    let stream = TcpStream::connect(server)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let greeting = read_line(&mut reader)?;
    writeln!(output, "tcp greeting: {}", greeting.trim_end())?;
    writer.write_all(b"hello from tcp\n")?;
    let reply = read_line(&mut reader)?;
    writeln!(output, "tcp reply:    {}", reply.trim_end())?;
    writer.write_all(b"exit\n")?;
    // Reading to EOF waits for the server's close, so the connection is over on both sides
    // before the server is asked to shut down.
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest)?;
    Ok(())
}

fn read_line(reader: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if !line.ends_with('\n') {
        return Err(io::Error::new(
            ErrorKind::UnexpectedEof,
            format!("the server closed the connection mid-line (got {line:?})"),
        ));
    }
    Ok(line)
}

/// One datagram out, one back. Loopback does not drop datagrams unless its buffers overflow,
/// so unlike `examples/udp_client.rs` this does not retry.
fn udp_round_trip(server: SocketAddr, output: &mut impl Write) -> io::Result<()> {
    let local: SocketAddr = match server.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(server)?;
    socket.set_read_timeout(Some(IO_TIMEOUT))?;
    socket.send(b"hello from udp")?;
    let mut reply = vec![0; 65_507];
    let n = socket.recv(&mut reply)?;
    writeln!(
        output,
        "udp reply:    {}",
        String::from_utf8_lossy(&reply[..n])
    )?;
    Ok(())
}
