//! The load generator against small servers written here with blocking `std::net`: a
//! correct one, and ones that are wrong in one precise way each, to show that loadgen counts
//! exactly that failure. Every socket is on 127.0.0.1 with a port the kernel picks.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use evloop::protocol::Mode;
use loadgen::{self, Options, Report, SocketKind};

/// What a test server does with line `n` (counting from 0) of a connection: the reply
/// bytes to send, `None` to send nothing, or `Err(())` to close the connection.
type Answer = dyn Fn(u64, &[u8]) -> Result<Option<Vec<u8>>, ()> + Send + Sync;

/// A thread-per-connection TCP server that sends `greeting` and answers lines with
/// `answer`. Its threads are left running: each ends when loadgen closes its connection.
fn tcp_server(greeting: &'static [u8], answer: Arc<Answer>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let answer = answer.clone();
            thread::spawn(move || {
                let Ok(read_half) = stream.try_clone() else {
                    return;
                };
                let mut reader = BufReader::new(read_half);
                let mut writer = BufWriter::new(stream);
                if writer
                    .write_all(greeting)
                    .and_then(|_| writer.flush())
                    .is_err()
                {
                    return;
                }
                let mut line = Vec::new();
                for n in 0.. {
                    line.clear();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let body = line.strip_suffix(b"\n").unwrap_or(&line);
                    match answer(n, body) {
                        Ok(Some(reply)) => {
                            if writer.write_all(&reply).is_err() {
                                return;
                            }
                        }
                        Ok(None) => {}
                        Err(()) => return,
                    }
                    // Batch the replies to pipelined requests, but never sit on one that a
                    // lockstep client is waiting for.
                    if reader.buffer().is_empty() && writer.flush().is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn hello(line: &[u8]) -> Vec<u8> {
    [b"Hello, ", line, b"!\n"].concat()
}

fn hello_server() -> SocketAddr {
    tcp_server(b"Welcome!\n", Arc::new(|_, line| Ok(Some(hello(line)))))
}

/// A UDP responder answering `Hello, <payload>!`, except that it ignores the datagrams
/// (counted from 0 over all senders) for which `drop` says so.
fn udp_server(drop: impl Fn(u64) -> bool + Send + 'static) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    thread::spawn(move || {
        let mut buffer = [0u8; 65536];
        for n in 0.. {
            let Ok((len, from)) = socket.recv_from(&mut buffer) else {
                continue;
            };
            if !drop(n) {
                let reply = [b"Hello, ", &buffer[..len], b"!"].concat();
                let _ = socket.send_to(&reply, from);
            }
        }
    });
    addr
}

/// An address where nothing listens: bound by us, then released.
fn closed_tcp_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn options(addr: SocketAddr, connections: usize, messages: u64) -> Options {
    Options {
        addr,
        connections,
        duration: None,
        messages: Some(messages),
        timeout: Duration::from_secs(5),
        ..Options::default()
    }
}

fn run(options: &Options) -> Report {
    loadgen::run(options).expect("the run starts")
}

#[test]
fn a_correct_server_gives_every_message_and_no_errors() {
    let report = run(&options(hello_server(), 8, 2000));
    assert_eq!(report.errors(), 0, "{report}");
    assert_eq!(report.messages, 2000);
    assert_eq!(report.latency.len(), 2000);
    assert_eq!(report.connected, 8);
    assert!(report.latency.max() > 0);
    assert!(report.msgs_per_sec() > 0.0);
}

#[test]
fn latency_is_measured_in_microseconds_from_request_to_reply() {
    // A server that takes 5 ms over every reply: the delay is what is measured here, not
    // a way to wait for something.
    let addr = tcp_server(
        b"Welcome!\n",
        Arc::new(|_, line| {
            thread::sleep(Duration::from_millis(5));
            Ok(Some(hello(line)))
        }),
    );
    let report = run(&options(addr, 2, 20));
    assert_eq!(report.errors(), 0, "{report}");
    assert!(report.latency_us(0.5) >= 5_000, "{report}");
    assert!(report.latency.min() >= 5_000, "{report}");
    assert!(report.latency.max() < 5_000_000, "{report}");
}

#[test]
fn pipelined_echo_without_greeting_and_long_messages() {
    let addr = tcp_server(b"", Arc::new(|_, line| Ok(Some([line, b"\n"].concat()))));
    let report = run(&Options {
        mode: Mode::Echo,
        greeting: Vec::new(),
        pipeline: 16,
        size: 3000,
        ..options(addr, 4, 4000)
    });
    assert_eq!(report.errors(), 0, "{report}");
    assert_eq!(report.messages, 4000);
}

#[test]
fn a_duration_run_stops_on_time() {
    let report = run(&Options {
        duration: Some(Duration::from_millis(200)),
        messages: None,
        pipeline: 4,
        ..options(hello_server(), 4, 0)
    });
    assert_eq!(report.errors(), 0, "{report}");
    assert!(report.messages > 0);
    assert!(report.duration >= Duration::from_millis(200));
    assert!(report.duration < Duration::from_secs(2), "{report}");
}

#[test]
fn hundreds_of_connections_to_a_default_backlog_all_get_set_up() {
    // std's listener has a backlog of 128; loadgen sets clients up in batches that fit.
    // Overflowing it would cost some clients a SYN-ACK retransmit, one second or more,
    // which this timeout turns into errors.
    let report = run(&Options {
        timeout: Duration::from_millis(700),
        ..options(hello_server(), 400, 2000)
    });
    assert_eq!(report.errors(), 0, "{report}");
    assert_eq!(report.connected, 400);
    assert_eq!(report.messages, 2000);
}

/// A hello server whose tenth reply on every connection has one byte changed.
fn tenth_reply_corrupted_server() -> SocketAddr {
    tcp_server(
        b"Welcome!\n",
        Arc::new(|n, line| {
            let mut reply = hello(line);
            if n == 9 {
                reply[0] = b'J';
            }
            Ok(Some(reply))
        }),
    )
}

#[test]
fn a_corrupted_reply_is_a_mismatch_not_a_message() {
    let report = run(&options(tenth_reply_corrupted_server(), 4, 1000));
    // Each connection fails at its tenth reply and is closed, after nine good ones.
    assert_eq!(report.mismatches, 4, "{report}");
    assert_eq!(report.errors(), 4);
    assert_eq!(report.messages, 4 * 9);
}

#[test]
fn threads_share_out_the_connections_and_the_messages() {
    let connections = Arc::new(AtomicU64::new(0));
    let lines = Arc::new(AtomicU64::new(0));
    let (c, l) = (connections.clone(), lines.clone());
    let addr = tcp_server(
        b"Welcome!\n",
        Arc::new(move |n, line| {
            if n == 0 {
                c.fetch_add(1, Ordering::SeqCst);
            }
            l.fetch_add(1, Ordering::SeqCst);
            Ok(Some(hello(line)))
        }),
    );
    // 10 connections and 1,001 messages do not divide by 3: the shares must still add up.
    let report = run(&Options {
        threads: 3,
        ..options(addr, 10, 1_001)
    });
    assert_eq!(report.errors(), 0, "{report}");
    assert_eq!((report.connected, report.messages), (10, 1_001), "{report}");
    assert_eq!(report.latency.len(), 1_001);
    assert_eq!(connections.load(Ordering::SeqCst), 10);
    assert_eq!(lines.load(Ordering::SeqCst), 1_001);
}

#[test]
fn threads_add_up_each_others_errors() {
    let report = run(&Options {
        threads: 2,
        ..options(tenth_reply_corrupted_server(), 4, 1000)
    });
    assert_eq!(report.mismatches, 4, "{report}");
    assert_eq!(report.errors(), 4);
    assert_eq!(report.messages, 4 * 9);
}

#[test]
fn more_threads_than_connections_or_messages_is_refused() {
    for (connections, messages) in [(2, 100), (8, 2)] {
        let result = loadgen::run(&Options {
            threads: 3,
            ..options(closed_tcp_port(), connections, messages)
        });
        let error = result.expect_err("3 threads cannot share the load");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{error}");
    }
}

#[test]
fn a_wrong_greeting_is_a_mismatch() {
    let addr = tcp_server(b"Go away\n", Arc::new(|_, line| Ok(Some(hello(line)))));
    let report = run(&options(addr, 3, 100));
    assert_eq!(report.mismatches, 3, "{report}");
    assert_eq!((report.connected, report.messages), (0, 0));
}

#[test]
fn an_unanswered_request_times_out() {
    // The fifth line on every connection gets no reply.
    let addr = tcp_server(
        b"Welcome!\n",
        Arc::new(|n, line| Ok((n != 4).then(|| hello(line)))),
    );
    let report = run(&Options {
        timeout: Duration::from_millis(150),
        ..options(addr, 2, 1000)
    });
    assert_eq!(report.timeouts, 2, "{report}");
    assert_eq!(report.errors(), 2);
    assert_eq!(report.messages, 2 * 4);
}

#[test]
fn requests_still_waiting_when_the_run_ends_are_reported_as_unanswered() {
    // Greets, then answers only the first line of each connection.
    let addr = tcp_server(
        b"Welcome!\n",
        Arc::new(|n, line| Ok((n == 0).then(|| hello(line)))),
    );
    let report = run(&Options {
        duration: Some(Duration::from_millis(300)),
        messages: None,
        timeout: Duration::from_secs(30),
        ..options(addr, 3, 0)
    });
    // Not errors: the run ended before their timeout. But said.
    assert_eq!(report.errors(), 0, "{report}");
    assert_eq!(report.messages, 3, "{report}");
    assert_eq!(report.unanswered, 3, "one request left on each: {report}");
    assert!(
        report.longest_unanswered >= Duration::from_millis(200),
        "{report}"
    );
    assert!(
        report.to_string().contains("unanswered   3 requests"),
        "{report}"
    );
    assert!(report.to_json().contains(",\"unanswered\":3,"));
}

#[test]
fn a_silent_server_times_out_the_greeting_and_the_run_ends() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Connections complete in the kernel's backlog; nobody ever speaks.
    let report = run(&Options {
        timeout: Duration::from_millis(100),
        ..options(addr, 3, 100)
    });
    drop(listener);
    assert_eq!(report.timeouts, 3, "{report}");
    assert_eq!(report.connected, 0);
}

#[test]
fn a_server_that_never_accepts_fails_every_client_in_about_two_timeouts() {
    // The kernel completes about 129 handshakes into the backlog of a listener nobody
    // accepts from, then drops SYNs; batching set-ups by 128 must not turn 2000 clients
    // into 16 rounds of waiting.
    evloop::net::raise_fd_limit().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let started = std::time::Instant::now();
    let report = run(&Options {
        timeout: Duration::from_millis(200),
        ..options(listener.local_addr().unwrap(), 2000, 100)
    });
    let elapsed = started.elapsed();
    drop(listener);
    assert_eq!(report.timeouts + report.connection_errors, 2000, "{report}");
    assert_eq!(report.connected, 0);
    assert!(elapsed < Duration::from_millis(1500), "took {elapsed:?}");
}

#[test]
fn a_server_closing_early_is_a_connection_error() {
    let addr = tcp_server(
        b"Welcome!\n",
        Arc::new(|n, line| {
            if n < 3 {
                Ok(Some(hello(line)))
            } else {
                Err(())
            }
        }),
    );
    let report = run(&options(addr, 2, 100));
    assert_eq!(report.connection_errors, 2, "{report}");
    assert_eq!(report.messages, 2 * 3);
}

#[test]
fn a_refused_connection_is_a_connection_error() {
    let report = run(&options(closed_tcp_port(), 5, 100));
    assert_eq!(report.connection_errors, 5, "{report}");
    assert_eq!((report.connected, report.messages), (0, 0));
}

#[test]
fn udp_hello_gives_every_message() {
    let report = run(&Options {
        socket_kind: SocketKind::Udp,
        pipeline: 2,
        ..options(udp_server(|_| false), 4, 2000)
    });
    assert_eq!(report.errors(), 0, "{report}");
    assert_eq!(report.messages, 2000);
    assert_eq!(report.connected, 4);
}

#[test]
fn a_lost_datagram_is_one_timeout_and_the_socket_carries_on() {
    let report = run(&Options {
        socket_kind: SocketKind::Udp,
        timeout: Duration::from_millis(150),
        ..options(udp_server(|n| n == 5), 2, 200)
    });
    assert_eq!(report.timeouts, 1, "{report}");
    assert_eq!(report.errors(), 1);
    assert_eq!(report.messages, 199);
}

#[test]
fn a_udp_server_that_stops_answering_ends_the_run_after_one_timeout() {
    // Bound, so no ICMP refusal comes back; never read, so nothing else does either.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let started = std::time::Instant::now();
    let report = run(&Options {
        socket_kind: SocketKind::Udp,
        timeout: Duration::from_millis(100),
        ..options(silent.local_addr().unwrap(), 4, 1_000_000)
    });
    let elapsed = started.elapsed();
    drop(silent);
    assert_eq!(report.messages, 0);
    assert_eq!(report.timeouts, 4, "{report}");
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
}

#[test]
fn udp_to_a_closed_port_is_a_connection_error() {
    let addr = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let report = run(&Options {
        socket_kind: SocketKind::Udp,
        ..options(addr, 3, 100)
    });
    assert_eq!(report.connection_errors, 3, "{report}");
    assert_eq!(report.messages, 0);
}

/// Parses the JSON object loadgen prints: string keys, number values, but for the last
/// member `error_causes` when there were errors, which is left out.
fn parse_flat_json(line: &str) -> HashMap<String, f64> {
    let body = line
        .trim()
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or_else(|| panic!("not a JSON object: {line}"));
    let body = body
        .find(",\"error_causes\":")
        .map_or(body, |at| &body[..at]);
    body.split(',')
        .map(|pair| {
            let (key, value) = pair
                .split_once(':')
                .unwrap_or_else(|| panic!("no colon in {pair}"));
            let key = key
                .strip_prefix('"')
                .and_then(|k| k.strip_suffix('"'))
                .unwrap_or_else(|| panic!("key not quoted: {key}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("{key} is not a number: {value}"));
            (key.to_string(), value)
        })
        .collect()
}

const JSON_KEYS: [&str; 16] = [
    "messages",
    "duration_s",
    "msgs_per_sec",
    "p50_us",
    "p90_us",
    "p99_us",
    "p999_us",
    "max_us",
    "errors",
    "mismatches",
    "timeouts",
    "connection_errors",
    "connections",
    "client_cpu_s",
    "unanswered",
    "longest_unanswered_us",
];

fn loadgen_binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_loadgen"));
    command.env("RUST_LOG", "warn");
    command
}

#[test]
fn the_binary_prints_one_json_line_and_exits_0() {
    let addr = hello_server().to_string();
    let output = loadgen_binary()
        .args(["--addr", &addr, "--connections", "3", "--messages", "300"])
        .args(["--pipeline", "2", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let json = parse_flat_json(&stdout);
    for key in JSON_KEYS {
        assert!(json.contains_key(key), "{key} missing from {stdout}");
    }
    assert_eq!(json["messages"], 300.0);
    assert_eq!(json["errors"], 0.0);
    assert_eq!(json["connections"], 3.0);
}

#[test]
fn the_binary_exits_1_when_errors_were_counted() {
    let addr = closed_tcp_port().to_string();
    let output = loadgen_binary()
        .args([
            "--addr",
            &addr,
            "--connections",
            "2",
            "--messages",
            "10",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let json = parse_flat_json(&stdout);
    assert_eq!(json["connection_errors"], 2.0);
    assert_eq!(json["errors"], 2.0);
    // Why, without a log: the one cause, its count, and the first client's message.
    let causes = &stdout[stdout.find(r#","error_causes":"#).expect(&stdout)..];
    assert!(
        causes.starts_with(
            r#","error_causes":[{"cause":"Connection refused (os error 111)","count":2,"first":"client "#
        ),
        "{stdout}"
    );
    assert!(
        causes.ends_with(": connection error: Connection refused (os error 111)\"}]}\n"),
        "{stdout}"
    );
}

#[test]
fn a_bad_flag_is_one_line_on_stderr_and_a_failure_exit() {
    for bad in [
        &["--connections", "0"][..],
        &["--nonsense"],
        &["--mode", "shout"],
        &["--timeout", "-1"],
        &["--duration", "soon"],
        &["--addr", "not an address"],
        &["--udp", "--size", "70000"],
        &["--threads", "0"],
        &["--threads", "4", "--connections", "3"],
    ] {
        let output = loadgen_binary().args(bad).output().unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_ne!(output.status.code(), Some(0), "{bad:?}");
        assert!(
            output.status.code().is_some(),
            "{bad:?} did not exit normally"
        );
        assert_eq!(stderr.lines().count(), 1, "{bad:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{bad:?}");
    }
}
