//! The reactor's bounds in aggregate, against real sockets on 127.0.0.1: the output one
//! client can make it owe, the memory all clients' buffers hold together, and how long one
//! turn of the loop may take while many clients flood it. Each test fails without the bound
//! it names. Time bounds are generous (these machines are shared and noisy): they tell
//! milliseconds from seconds, nothing finer.

// This crate uses only the shared clients, not the binary helpers.
#[allow(dead_code)]
mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{start, udp_client, udp_roundtrip, Client, IO_TIMEOUT};
use evloop::connection::OUTPUT_HIGH_WATER;
use evloop::reactor;

/// One read of the loop's buffer: the most input a connection holds unanswered.
const ONE_READ: usize = 64 * 1024;

/// Pipelines empty lines (each owes `Hello, !\n`, nine bytes) and never reads, until a
/// write has blocked for a while: the server has stopped reading this client.
fn flood_until_blocked(addr: SocketAddr) -> TcpStream {
    let mut flood = TcpStream::connect(addr).unwrap();
    flood
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let chunk = vec![b'\n'; 64 * 1024];
    let mut pushed = 0usize;
    loop {
        match flood.write(&chunk) {
            Ok(n) => pushed += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("flood write: {e}"),
        }
        assert!(
            pushed < 1 << 30,
            "the server kept reading a client that never reads"
        );
    }
    flood
}

/// Reads everything until the server's EOF and checks it is the greeting and then nothing
/// but `Hello, !` replies; returns how many.
fn replies_until_eof(mut client: TcpStream) -> u64 {
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut all = Vec::new();
    client.read_to_end(&mut all).expect("every reply, then EOF");
    let replies = all.strip_prefix(b"Welcome!\n").expect("the greeting first");
    assert_eq!(replies.len() % 9, 0);
    assert!(
        replies.chunks(9).all(|r| r == b"Hello, !\n"),
        "replies in order"
    );
    (replies.len() / 9) as u64
}

#[test]
fn one_client_cannot_make_the_server_owe_more_than_the_high_water_mark() {
    let server = start(reactor::spawn, |c| c.shutdown_grace = IO_TIMEOUT);
    let flood = flood_until_blocked(server.tcp);
    server.stop();
    let replies = replies_until_eof(flood);
    let stats = server.join().unwrap();
    eprintln!(
        "one slow reader: at most {} bytes held, {replies} replies delivered",
        stats.peak_buffered
    );
    // 64 KiB of `\n` owe 576 KiB of replies; answering stops at the mark instead.
    assert!(
        stats.peak_buffered <= OUTPUT_HIGH_WATER + ONE_READ + 1024,
        "{} bytes held",
        stats.peak_buffered
    );
    assert_eq!(replies, stats.messages, "every line read was answered");
}

#[test]
fn the_memory_budget_holds_for_the_whole_server_and_loses_nothing() {
    let budget = 2 << 20;
    let server = start(reactor::spawn, |c| {
        c.max_buffer_memory = budget;
        c.shutdown_grace = IO_TIMEOUT;
        c.udp = None;
    });
    let addr = server.tcp;
    // Forty slow readers would hold 40 times the high-water mark and a read each, 5 MiB,
    // without it.
    let floods: Vec<TcpStream> = (0..40)
        .map(|_| std::thread::spawn(move || flood_until_blocked(addr)))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    // Everyone else is served as before.
    let mut fresh = Client::greeted(addr);
    fresh.send(b"hi\n");
    assert_eq!(fresh.line(), b"Hello, hi!\n");
    drop(fresh);
    server.stop();
    let readers: Vec<_> = floods
        .into_iter()
        .map(|f| std::thread::spawn(move || replies_until_eof(f)))
        .collect();
    let replies: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    let stats = server.join().unwrap();
    eprintln!(
        "40 slow readers, budget {budget}: at most {} bytes held, {replies} replies",
        stats.peak_buffered
    );
    assert!(
        stats.peak_buffered <= budget + 512 * 1024,
        "{} bytes held against a budget of {budget}",
        stats.peak_buffered
    );
    assert_eq!(replies + 1, stats.messages, "every line read was answered");
}

#[test]
fn turns_stay_short_while_hundreds_of_clients_flood() {
    let server = start(reactor::spawn, |c| c.shutdown_grace = Duration::ZERO);
    let addr = server.tcp;
    let flooding = Arc::new(AtomicBool::new(true));
    let flooders: Vec<_> = (0..300)
        .map(|_| {
            let flooding = Arc::clone(&flooding);
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_write_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                let chunk = vec![b'\n'; 64 * 1024];
                let until = Instant::now() + Duration::from_secs(5);
                while flooding.load(Ordering::Relaxed) && Instant::now() < until {
                    match s.write(&chunk) {
                        Ok(_) => {}
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    let udp = udp_client();
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let sent = Instant::now();
        let payload = format!("ping {i}");
        assert_eq!(
            udp_roundtrip(&udp, server.udp.unwrap(), payload.as_bytes()),
            format!("Hello, {payload}!").as_bytes()
        );
        let mut fresh = Client::greeted(addr);
        fresh.send(b"hi\n");
        assert_eq!(fresh.line(), b"Hello, hi!\n");
        worst = worst.max(sent.elapsed());
    }
    flooding.store(false, Ordering::Relaxed);
    for f in flooders {
        f.join().unwrap();
    }
    let stats = server.shutdown().unwrap();
    eprintln!(
        "300 flooders: worst UDP ping plus fresh client {worst:?}, longest turn {:?}",
        stats.longest_turn
    );
    // Wall-clock bounds, so they have room for a debug build on a shared 2-core machine
    // running the other tests beside this one: a quiet run here takes 0.12 to 0.18 s per
    // turn, the busiest seen 1.2 s (and 4.4 s for a fresh client and a ping). Without the
    // read and reply budgets one turn would answer everything 300 flooders sent, many
    // seconds' worth.
    assert!(worst < Duration::from_secs(8), "{worst:?}");
    assert!(
        stats.longest_turn < Duration::from_secs(3),
        "{:?}",
        stats.longest_turn
    );
}

/// Reads `option` of the server's end of the connection from `client`, found among this
/// process's descriptors (the server runs on a thread of this test).
#[cfg(target_os = "linux")]
fn server_side<T>(
    server: SocketAddr,
    client: &TcpStream,
    option: impl Fn(&socket2::SockRef<'_>) -> std::io::Result<T>,
) -> T {
    use std::os::fd::BorrowedFd;
    let peer = client.local_addr().unwrap();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let Ok(fd) = entry.unwrap().file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // SAFETY: the descriptor is open for as long as the server holds the connection,
        // which outlives this call; it is only borrowed to read socket options.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        let local = socket.local_addr().ok().and_then(|a| a.as_socket());
        let remote = socket.peer_addr().ok().and_then(|a| a.as_socket());
        if local == Some(server) && remote == Some(peer) {
            return option(&socket).unwrap();
        }
    }
    panic!("no server-side socket for {peer}");
}

#[cfg(target_os = "linux")]
#[test]
fn send_buffer_sets_the_accepted_sockets_so_sndbuf_in_proc() {
    let wanted = 100 * 1024;
    let server = start(reactor::spawn, |c| c.send_buffer = Some(wanted));
    let client = Client::greeted(server.tcp);
    let size = server_side(server.tcp, client.stream(), |s| s.send_buffer_size());
    eprintln!("--send-buffer {wanted}: the kernel reports {size}");
    // Linux reports twice the size asked for (room for its own bookkeeping).
    assert!(size >= wanted, "SO_SNDBUF {size}");
    drop(client);
    server.shutdown().unwrap();
}

#[cfg(target_os = "linux")]
fn the_accepted_socket_caps_its_unsent_output(spawn: common::Spawn) {
    let server = start(spawn, |_| {});
    let client = Client::greeted(server.tcp);
    let unsent = server_side(server.tcp, client.stream(), |s| s.tcp_notsent_lowat());
    assert_eq!(unsent, evloop::net::UNSENT_LIMIT);
    drop(client);
    server.shutdown().unwrap();
}

/// A client that never reads gets `UNSENT_LIMIT` of replies queued in the kernel, not the
/// megabytes Linux grows a send buffer to (see `net::UNSENT_LIMIT`).
#[cfg(target_os = "linux")]
#[test]
fn the_accepted_socket_caps_its_unsent_output_reactor() {
    the_accepted_socket_caps_its_unsent_output(reactor::spawn);
}

#[cfg(target_os = "linux")]
#[test]
fn the_accepted_socket_caps_its_unsent_output_threaded() {
    the_accepted_socket_caps_its_unsent_output(evloop::threaded::spawn);
}
