//! Hostile and unlucky clients against the reactor: slow readers, floods, idle sockets,
//! resets, descriptor exhaustion, shutdown with replies owed. Each test fails without the
//! behaviour it names. Figures are printed (run with `--nocapture` to see them); the
//! assertions use generous bounds because these machines are shared and noisy. Tests that
//! read `/proc` say so in their names (`_in_proc`) and run on Linux only; those that send
//! signals run on Unix only.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{start, udp_client, udp_roundtrip, Binary, Client, IO_TIMEOUT};
#[cfg(target_os = "linux")]
use evloop::procfs;
use evloop::protocol::Mode;
use evloop::reactor;

const REACTOR: &str = env!("CARGO_BIN_EXE_reactor");

/// The worst of `rounds` lockstep round trips on a fresh connection.
fn worst_ping(addr: SocketAddr, rounds: usize) -> Duration {
    let mut c = Client::greeted(addr);
    let mut worst = Duration::ZERO;
    for i in 0..rounds {
        let sent = Instant::now();
        c.send(format!("ping {i}\n").as_bytes());
        assert_eq!(c.line(), format!("Hello, ping {i}!\n").as_bytes());
        worst = worst.max(sent.elapsed());
    }
    worst
}

/// Waits for `condition`, checking every few milliseconds; the deadline only turns a hang
/// into a failure.
fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(target_os = "linux")]
#[test]
fn a_client_that_never_reads_cannot_grow_server_memory_in_proc() {
    let server = Binary::start(REACTOR, &["--no-udp"]);
    worst_ping(server.tcp, 10);
    let before = procfs::rss(server.pid()).unwrap();

    // Send "x\n" lines (each answered with ten bytes) and never read. Once the server stops
    // reading, the kernel's buffers fill and our write blocks: that is the backpressure.
    let mut flood = TcpStream::connect(server.tcp).unwrap();
    flood
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let chunk = b"x\n".repeat(32 * 1024);
    let limit: usize = 300 << 20;
    let mut pushed = 0;
    while pushed < limit {
        match flood.write(&chunk) {
            Ok(n) => pushed += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("flood write: {e}"),
        }
    }
    let worst = worst_ping(server.tcp, 50);
    let after = procfs::rss(server.pid()).unwrap();
    let growth = after.saturating_sub(before);
    eprintln!(
        "slow reader: pushed {} KiB before blocking; server RSS {} KiB -> {} KiB (+{} KiB); \
         worst ping meanwhile {worst:?}",
        pushed >> 10,
        before >> 10,
        after >> 10,
        growth >> 10
    );
    assert!(
        pushed < limit,
        "the server kept reading from a client that never reads"
    );
    assert!(growth < 4 << 20, "server RSS grew by {} KiB", growth >> 10);
    // Starved, the ping would never be answered; the bound is loose because this debug
    // build shares two cores with the flood and, in CI, with the build.
    assert!(
        worst < Duration::from_secs(5),
        "other clients starved: {worst:?}"
    );
}

#[test]
fn a_pipelining_client_cannot_starve_a_ping_client() {
    let server = start(reactor::spawn, |c| c.udp = None);
    let stop = AtomicBool::new(false);
    let worst = std::thread::scope(|scope| {
        let stream = TcpStream::connect(server.tcp).unwrap();
        let mut reader = stream.try_clone().unwrap();
        let mut writer = stream;
        let stop = &stop;
        // Writes batch after batch for as long as the ping runs (bounded by time anyway)...
        scope.spawn(move || {
            let batch = b"pipelined request\n".repeat(4096);
            let until = Instant::now() + IO_TIMEOUT;
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                if writer.write_all(&batch).is_err() {
                    break;
                }
            }
            let _ = writer.shutdown(std::net::Shutdown::Write);
        });
        // ...and reads every reply, so the server is never held back by backpressure.
        scope.spawn(move || {
            let mut buf = vec![0; 1 << 16];
            while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
        });
        let worst = worst_ping(server.tcp, 30);
        stop.store(true, Ordering::Relaxed);
        worst
    });
    eprintln!("ping while another connection pipelines: worst round trip {worst:?}");
    // Without the read budget the ping is never answered at all: the pipelining connection
    // never runs dry, so reading it "until WouldBlock" never ends. The bound is loose
    // because this debug build shares two cores with the writer and the reader threads.
    assert!(worst < Duration::from_secs(5), "ping starved: {worst:?}");
    server.shutdown().unwrap();
}

#[test]
fn a_udp_flood_cannot_starve_a_tcp_client() {
    let server = start(reactor::spawn, |_| {});
    let udp = server.udp.unwrap();
    let stop = AtomicBool::new(false);
    let (worst, sent) = std::thread::scope(|scope| {
        let stop = &stop;
        let flooder = scope.spawn(move || {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut sent = 0u64;
            let until = Instant::now() + IO_TIMEOUT;
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                if socket.send_to(b"flood", udp).is_ok() {
                    sent += 1;
                }
            }
            sent
        });
        let worst = worst_ping(server.tcp, 200);
        stop.store(true, Ordering::Relaxed);
        (worst, flooder.join().unwrap())
    });
    eprintln!("ping during a UDP flood of {sent} datagrams: worst round trip {worst:?}");
    // Starved, the ping would never be answered (see the pipelining test for the bound).
    assert!(worst < Duration::from_secs(5), "ping starved: {worst:?}");
    // And UDP itself is still answered afterwards. The server's receive queue may still be
    // full of flood when this datagram arrives, and UDP drops what does not fit, so retry
    // as any UDP client must.
    let socket = udp_client();
    socket
        .set_read_timeout(Some(Duration::from_millis(250)))
        .unwrap();
    let mut buf = [0; 64];
    let answered = (0..80).any(|_| {
        socket.send_to(b"after", udp).unwrap();
        matches!(socket.recv_from(&mut buf), Ok((n, _)) if &buf[..n] == b"Hello, after!")
    });
    assert!(answered, "UDP no longer answered after the flood");
    server.shutdown().unwrap();
}

#[test]
fn idle_connections_are_closed_and_active_ones_are_not() {
    let idle_timeout = Duration::from_millis(400);
    let server = start(reactor::spawn, |c| c.idle_timeout = Some(idle_timeout));
    std::thread::scope(|scope| {
        let idle = scope.spawn(|| {
            // Timed from before the connect: the server's clock for it starts later, so
            // however this thread is scheduled, the close cannot seem early.
            let since = Instant::now();
            let mut c = Client::greeted(server.tcp);
            assert_eq!(c.rest(), b"", "an idle connection gets a clean EOF");
            since.elapsed()
        });
        // Active: a line every quarter of the timeout, for three timeouts.
        let mut active = Client::greeted(server.tcp);
        for i in 0..12 {
            std::thread::sleep(idle_timeout / 4);
            active.send(format!("{i}\n").as_bytes());
            assert_eq!(active.line(), format!("Hello, {i}!\n").as_bytes());
        }
        let closed_after = idle.join().unwrap();
        eprintln!("idle connection closed after {closed_after:?} (timeout {idle_timeout:?})");
        assert!(closed_after >= idle_timeout);
    });
    server.shutdown().unwrap();
}

#[test]
fn a_line_too_long_with_more_input_behind_it_still_closes_cleanly() {
    let server = start(reactor::spawn, |c| c.protocol.max_line = 16);
    let mut c = Client::greeted(server.tcp);
    let mut input = b"fine\n".to_vec();
    input.extend(vec![b'y'; 512 * 1024]);
    c.send(&input);
    // Without the lingering close the unread input makes the kernel reset the connection,
    // and the reset can destroy these replies before we read them.
    assert_eq!(c.rest(), b"Hello, fine!\nERR line too long\n");
    drop(c);
    server.shutdown().unwrap();
}

/// Opens and drops `n` connections in every unlucky way; returns once all are gone.
fn churn(addr: SocketAddr, n: usize) {
    for i in 0..n {
        let stream = TcpStream::connect(addr).unwrap();
        let socket = socket2::SockRef::from(&stream);
        match i % 4 {
            // Connect and close at once, before the greeting is read.
            0 => {}
            // Reset (SO_LINGER 0 makes close send RST) with nothing sent.
            1 => socket.set_linger(Some(Duration::ZERO)).unwrap(),
            // Reset while the server still owes replies it cannot deliver.
            2 => {
                (&stream).write_all(&b"unread\n".repeat(20_000)).unwrap();
                socket.set_linger(Some(Duration::ZERO)).unwrap();
            }
            // A polite exit.
            _ => {
                (&stream).write_all(b"exit\n").unwrap();
                let mut rest = Vec::new();
                let _ = (&stream).read_to_end(&mut rest);
            }
        }
    }
}

#[test]
fn connection_churn_leaves_no_slab_slot_behind() {
    let server = start(reactor::spawn, |_| {});
    churn(server.tcp, 2000);
    eventually("the slab to empty", || server.open_connections() == 0);
    // The server is still fine.
    let mut c = Client::greeted(server.tcp);
    c.send(b"still here\n");
    assert_eq!(c.line(), b"Hello, still here!\n");
    drop(c);
    let stats = server.shutdown().unwrap();
    assert_eq!(stats.connections, 2001);
}

#[cfg(target_os = "linux")]
#[test]
fn connection_churn_leaks_no_descriptor_in_proc() {
    let server = Binary::start(REACTOR, &[]);
    // Every descriptor the server keeps for itself exists before it prints its startup line.
    let baseline = procfs::open_fds(server.pid()).unwrap();
    churn(server.tcp, 2000);
    eventually("descriptors back to baseline", || {
        procfs::open_fds(server.pid()).unwrap() == baseline
    });
    eprintln!("after 2000 connections of churn: {baseline} descriptors, as before");
}

#[cfg(target_os = "linux")]
#[test]
fn out_of_descriptors_pauses_accepting_without_spinning_and_recovers_in_proc() {
    const LIMIT: usize = 48;
    let server = Binary::start_with(REACTOR, &["--no-udp"], Some(LIMIT as u64));
    let pid = server.pid();
    let free = LIMIT - descriptors_below(pid, LIMIT);
    // Fill every free descriptor with a served connection...
    let mut served: Vec<Client> = (0..free).map(|_| Client::greeted(server.tcp)).collect();
    // ...then queue more in the kernel's backlog, where accept fails with EMFILE.
    let mut waiting: Vec<Client> = (0..5).map(|_| Client::connect(server.tcp)).collect();
    eventually("the server to run out of descriptors", || {
        descriptors_below(pid, LIMIT) == LIMIT
    });
    let cpu_before = procfs::cpu_time(pid).unwrap();
    let window = Duration::from_secs(1);
    std::thread::sleep(window); // measuring CPU use over a window, not synchronising
    let cpu = procfs::cpu_time(pid).unwrap() - cpu_before;
    eprintln!("out of descriptors: server used {cpu:?} CPU in {window:?}");
    assert!(
        cpu < window / 5,
        "busy loop while out of descriptors: {cpu:?}"
    );

    // Freeing descriptors lets the waiting clients in.
    served.truncate(free - waiting.len());
    for c in &mut waiting {
        assert_eq!(c.line(), b"Welcome!\n");
        c.send(b"in\n");
        assert_eq!(c.line(), b"Hello, in!\n");
    }
    drop((served, waiting));
    server.signal(libc::SIGTERM);
    let (code, stderr) = server.wait();
    assert_eq!(code, Some(0), "{stderr}");
    let warnings = stderr.matches("accept failed").count();
    assert!(
        (1..=3).contains(&warnings),
        "logged {warnings} times:\n{stderr}"
    );
}

/// Descriptors numbered below `limit`: RLIMIT_NOFILE caps the numbers of new descriptors,
/// and a child may inherit one numbered above it.
#[cfg(target_os = "linux")]
fn descriptors_below(pid: u32, limit: usize) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<usize>().ok())
        .filter(|&fd| fd < limit)
        .count()
}

/// A client that sends "x" lines without reading until the server stops reading too: then
/// the server holds replies it cannot deliver (beyond what the kernel's buffers took).
#[cfg(unix)]
fn owe_replies(addr: SocketAddr) -> Client {
    let c = Client::greeted(addr);
    let mut writer = c.stream();
    writer
        .set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let chunk = b"x\n".repeat(32 * 1024);
    let mut sent = 0;
    while sent < 256 << 20 {
        match writer.write(&chunk) {
            Ok(n) => sent += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("write: {e}"),
        }
    }
    writer.set_write_timeout(None).unwrap();
    c
}

#[cfg(unix)]
#[test]
fn sigterm_delivers_every_owed_reply() {
    let server = Binary::start(REACTOR, &["--no-udp"]);
    let mut c = owe_replies(server.tcp);
    server.signal(libc::SIGTERM);
    let rest = c.rest();
    drop(c);
    let (code, stderr) = server.wait();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(rest.len() % 10 == 0 && rest.chunks(10).all(|r| r == b"Hello, x!\n"));
    let received = rest.len() / 10;
    eprintln!("replies owed at SIGTERM and delivered: {received}");
    assert!(
        stderr.contains(&format!(" {received} messages")),
        "the server answered more than the client received:\n{stderr}"
    );
}

#[cfg(unix)]
#[test]
fn the_grace_period_bounds_shutdown_and_a_second_signal_cuts_it_short() {
    // A client that never reads holds replies the server cannot deliver.
    let server = Binary::start(REACTOR, &["--no-udp", "--shutdown-grace", "0.5"]);
    let c = owe_replies(server.tcp);
    let since = Instant::now();
    server.signal(libc::SIGTERM);
    let (code, stderr) = server.wait();
    let took = since.elapsed();
    eprintln!("shutdown with a stuck client and a 0.5 s grace took {took:?}");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(10),
        "{stderr}"
    );
    drop(c);

    let server = Binary::start(REACTOR, &["--no-udp", "--shutdown-grace", "600"]);
    let c = owe_replies(server.tcp);
    let since = Instant::now();
    server.signal(libc::SIGTERM);
    let (tx, rx) = mpsc::channel();
    let pid = server.pid();
    let waiter = std::thread::spawn(move || tx.send(server.wait()));
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "exited before the grace"
    );
    // SAFETY: kill sends a signal to our own child, which the waiter has not reaped yet.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let (code, stderr) = rx.recv_timeout(IO_TIMEOUT).expect("second signal ends it");
    eprintln!(
        "second signal: exited {:?} after the first",
        since.elapsed()
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("second signal"), "{stderr}");
    waiter.join().unwrap().unwrap();
    drop(c);
}

#[test]
fn udp_survives_oversized_replies_and_serves_the_largest_datagram() {
    let server = start(reactor::spawn, |_| {});
    let udp = server.udp.unwrap();
    let socket = udp_client();
    // The largest IPv4 datagram: its hello reply is 8 bytes too big to send.
    let biggest = vec![b'z'; 65_507];
    socket.send_to(&biggest, udp).unwrap();
    assert_eq!(udp_roundtrip(&socket, udp, b"next"), b"Hello, next!");
    let stats = server.shutdown().unwrap();
    assert_eq!(stats.udp_dropped, 1);

    let server = start(reactor::spawn, |c| c.protocol.mode = Mode::Echo);
    let udp = server.udp.unwrap();
    assert_eq!(udp_roundtrip(&socket, udp, &biggest), biggest);
    server.shutdown().unwrap();
}

/// Clients whose unfinished line is longer than their share of `--max-buffer-memory` (the
/// budget divided among the open connections) are told so and closed, like a line longer
/// than `--max-line`; the loop does not spend itself on them, and a fresh client beside them
/// is answered at once.
#[test]
fn partial_lines_above_their_share_do_not_stall_the_loop() {
    // 64 KiB among 33 connections: a share of about 2 KiB, far below each client's line.
    const BUDGET: usize = 64 * 1024;
    const LONG_LINES: usize = 32;
    const CEILING: Duration = Duration::from_secs(5);
    let server = start(reactor::spawn, |c| {
        c.max_buffer_memory = BUDGET;
        c.protocol.max_line = 16 << 20;
        c.udp = None;
    });
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let (greeted, all_greeted) = mpsc::channel();
    let senders: Vec<_> = (0..LONG_LINES)
        .map(|_| {
            let (stop, greeted, addr) = (stop.clone(), greeted.clone(), server.tcp);
            std::thread::spawn(move || {
                let client = Client::greeted(addr);
                greeted.send(()).unwrap();
                let stream = client.stream().try_clone().unwrap();
                stream
                    .set_write_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                // One line that never ends, sent for as long as the server takes it.
                let chunk = vec![b'x'; 64 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    match (&stream).write(&chunk) {
                        Ok(_) => {}
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => break,
                    }
                }
                client
            })
        })
        .collect();
    for _ in 0..LONG_LINES {
        all_greeted
            .recv_timeout(IO_TIMEOUT)
            .expect("every client greeted");
    }

    // A fresh client is greeted and answered; the ceiling turns a stalled loop into a
    // failure instead of a hang.
    let (answered, pings) = mpsc::channel();
    let addr = server.tcp;
    std::thread::spawn(move || answered.send(worst_ping(addr, 3)));
    let worst = pings.recv_timeout(CEILING);
    stop.store(true, Ordering::Relaxed);
    let worst = worst.unwrap_or_else(|_| {
        panic!("a fresh client beside {LONG_LINES} long lines was not answered within {CEILING:?}")
    });
    println!("worst ping beside {LONG_LINES} lines longer than their share: {worst:?}");
    for sender in senders {
        let mut client = sender.join().unwrap();
        assert_eq!(
            client.line(),
            b"ERR line too long\n",
            "a line longer than its share is refused"
        );
    }
    server.shutdown().unwrap();
}
