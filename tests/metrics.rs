//! `reactor --metrics`: the scrape is valid Prometheus text (checked by `promtool`), it counts
//! exactly what loadgen did across every loop, and metrics clients are bounded without
//! the main protocol noticing. Every server is the real binary on 127.0.0.1, port 0.

#[allow(dead_code)] // only Binary and Client are needed here
mod common;

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{Binary, Client, IO_TIMEOUT};
use evloop::metrics::{MAX_METRICS_CLIENTS, MAX_REQUEST_HEAD, METRICS_DEADLINE};
use loadgen::{Options, SocketKind};

/// The reactor with `--metrics` on a free port, and where the metrics are: the line after
/// the startup line.
fn start(args: &[&str]) -> (Binary, SocketAddr) {
    let mut args = args.to_vec();
    args.extend(["--metrics", "127.0.0.1:0"]);
    let mut server = Binary::start(env!("CARGO_BIN_EXE_reactor"), &args);
    let mut line = String::new();
    server.stdout.read_line(&mut line).unwrap();
    let addr = line
        .trim_end()
        .strip_prefix("metrics on ")
        .unwrap_or_else(|| panic!("unexpected second line {line:?}"))
        .parse()
        .expect("the metrics address");
    (server, addr)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to the metrics port");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Sends `request` and reads until the server closes: (status line and headers, body).
fn exchange(addr: SocketAddr, request: &[u8]) -> (String, String) {
    let mut stream = connect(addr);
    stream.write_all(request).unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("a response, then a clean EOF");
    match response.split_once("\r\n\r\n") {
        Some((head, body)) => (head.to_string(), body.to_string()),
        None => (response, String::new()),
    }
}

/// The body of `GET /metrics`, after checking the status and the content type.
fn scrape(addr: SocketAddr) -> String {
    let (head, body) = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\nContent-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    body
}

/// The value of one series (name and labels, as written) in a scrape.
fn value(body: &str, series: &str) -> u64 {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{body}"))
        .parse()
        .unwrap_or_else(|e| panic!("{series}: {e}"))
}

/// The main protocol, to show it is unaffected.
fn hello(server: &Binary) {
    let mut client = Client::greeted(server.tcp);
    client.send(b"bob\n");
    assert_eq!(client.line(), b"Hello, bob!\n");
}

#[test]
fn a_scrape_passes_promtool_check_metrics() {
    let (server, metrics) = start(&[]);
    hello(&server);
    let body = scrape(metrics);
    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut promtool = match promtool {
        Ok(child) => child,
        Err(e) => panic!(
            "cannot run promtool ({e}): it comes with Prometheus, `apt-get install prometheus`"
        ),
    };
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}\non\n{body}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(body.contains("evloop_messages_total 1\n"), "{body}");
}

#[test]
fn scrapes_count_exactly_what_loadgen_did_across_every_loop() {
    let (server, metrics) = start(&["--threads", "2"]);
    let size = 16;
    let tcp = Options {
        addr: server.tcp,
        connections: 20,
        duration: None,
        messages: Some(20_000),
        size,
        timeout: IO_TIMEOUT,
        ..Options::default()
    };
    // A scrape in the middle of the run, as soon as loadgen has seen replies.
    let mut during = None;
    let tcp = loadgen::run_with_progress(&tcp, |progress| {
        if during.is_none() && progress.messages > 0 {
            during = Some(value(&scrape(metrics), "evloop_messages_total"));
        }
    })
    .unwrap();
    let during = during.expect("loadgen reported progress during the run");
    assert!(during > 0 && during < 20_000, "{during} messages mid-run");
    let udp = Options {
        addr: server.udp.unwrap(),
        connections: 4,
        duration: None,
        messages: Some(400),
        size,
        socket_kind: SocketKind::Udp,
        timeout: IO_TIMEOUT,
        ..Options::default()
    };
    let udp = loadgen::run(&udp).unwrap();
    assert_eq!((tcp.errors(), udp.errors()), (0, 0), "{tcp}\n{udp}");
    assert_eq!((tcp.messages, udp.messages), (20_000, 400));

    let body = scrape(metrics);
    let size = size as u64;
    let connected = tcp.connected as u64;
    let hello_reply = "Hello, ".len() as u64 + size + "!".len() as u64;
    for (series, expected) in [
        ("evloop_messages_total", tcp.messages + udp.messages),
        ("evloop_connections_accepted_total", connected),
        ("evloop_udp_datagrams_received_total", udp.messages),
        (
            "evloop_received_bytes_total",
            tcp.messages * (size + 1) + udp.messages * size,
        ),
        (
            "evloop_sent_bytes_total",
            connected * "Welcome!\n".len() as u64
                + tcp.messages * (hello_reply + 1)
                + udp.messages * hello_reply,
        ),
        ("evloop_connections_refused_total{reason=\"busy\"}", 0),
        (
            "evloop_connections_refused_total{reason=\"proxy_header\"}",
            0,
        ),
        ("evloop_udp_replies_dropped_total", 0),
        ("evloop_connections_paused", 0),
        ("evloop_loops", 2),
        ("evloop_metrics_responses_total{code=\"200\"}", 2),
    ] {
        assert_eq!(value(&body, series), expected, "{series}");
    }
    let turns = value(&body, "evloop_turn_duration_seconds_count");
    assert!(turns > 0);
    assert_eq!(
        value(&body, "evloop_turn_duration_seconds_bucket{le=\"+Inf\"}"),
        turns
    );
}

#[test]
fn bad_requests_get_their_status_and_a_close() {
    let (server, metrics) = start(&[]);
    for (request, status) in [
        (
            &b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03"[..],
            "400 Bad Request",
        ),
        (
            b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
            "400 Bad Request",
        ),
        (b"GET / HTTP/1.1\r\n\r\n", "404 Not Found"),
        (
            b"DELETE /metrics HTTP/1.1\r\n\r\n",
            "405 Method Not Allowed",
        ),
    ] {
        // `exchange` reads to EOF: the server closes after the one response.
        let (head, _) = exchange(metrics, request);
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{request:?}: {head}"
        );
    }
    // HEAD: the scrape's head with no body.
    let (head, body) = exchange(metrics, b"HEAD /metrics HTTP/1.0\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, "");
    hello(&server);
}

#[test]
fn a_connection_without_a_valid_proxy_header_counts_as_refused() {
    let (server, metrics) = start(&["--proxy-protocol"]);
    let mut stream = TcpStream::connect(server.tcp).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    // Not a PROXY header: the server closes without a greeting as soon as it can tell.
    stream.write_all(b"hello\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "no greeting: {rest:?}");
    let body = scrape(metrics);
    assert_eq!(
        value(
            &body,
            "evloop_connections_refused_total{reason=\"proxy_header\"}"
        ),
        1
    );
    assert_eq!(value(&body, "evloop_connections_accepted_total"), 0);
}

#[test]
fn an_oversized_request_head_gets_400_and_a_close() {
    let (server, metrics) = start(&[]);
    let mut request = b"GET /metrics HTTP/1.1\r\n".to_vec();
    while request.len() <= MAX_REQUEST_HEAD {
        request.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    // The head never ends: without the limit the server would wait for more.
    let (head, _) = exchange(metrics, &request);
    assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
    hello(&server);
}

#[test]
fn metrics_clients_are_bounded_in_number_and_time_while_the_main_port_serves() {
    let (server, metrics) = start(&[]);
    // Half the places go to clients that send their request and never read the response,
    // the other half to clients that send nothing at all. (The readers connect first, so
    // their deadlines come first.)
    let readers: Vec<TcpStream> = (0..MAX_METRICS_CLIENTS / 2)
        .map(|_| {
            let mut stream = connect(metrics);
            stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
            stream
        })
        .collect();
    let connected = Instant::now();
    let silent: Vec<TcpStream> = (MAX_METRICS_CLIENTS / 2..MAX_METRICS_CLIENTS)
        .map(|_| connect(metrics))
        .collect();

    // One more is refused (the kernel's backlog hands clients over in the order they
    // connected), and the main protocol does not notice any of it. This one sends nothing,
    // so the refusal never races its request (a request the server has not read when it
    // closes would make the kernel reset the connection).
    let mut refused = String::new();
    connect(metrics)
        .read_to_string(&mut refused)
        .expect("a refusal, then a clean EOF");
    assert!(
        refused.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{refused}"
    );
    hello(&server);

    // Each silent client is closed at its deadline, not before.
    for mut stream in silent {
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).expect("a clean close");
        assert!(rest.is_empty(), "nothing was asked, nothing is said");
    }
    let waited = connected.elapsed();
    assert!(
        waited >= METRICS_DEADLINE && waited < METRICS_DEADLINE + IO_TIMEOUT / 4,
        "closed after {waited:?}"
    );
    // The readers' places are free again too: a new scrape is served, and counts the
    // refusal.
    let body = scrape(metrics);
    assert_eq!(
        value(&body, "evloop_metrics_responses_total{code=\"503\"}"),
        1
    );
    assert_eq!(
        value(&body, "evloop_metrics_responses_total{code=\"200\"}"),
        3
    );
    drop(readers);
    hello(&server);
}

#[test]
fn metrics_that_cannot_be_served_are_a_one_line_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    for (exe, expected) in [
        (
            env!("CARGO_BIN_EXE_reactor"),
            format!("error: --metrics {taken}: "),
        ),
        (
            env!("CARGO_BIN_EXE_threaded"),
            "error: --metrics is served by the reactor only".to_string(),
        ),
    ] {
        let output = Command::new(exe)
            .args(["--listen", "127.0.0.1:0", "--metrics", &taken])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{exe}: {stderr}");
        assert!(output.stdout.is_empty(), "{exe} printed a startup line");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
        assert!(
            errors.len() == 1 && errors[0].starts_with(&expected),
            "{exe}: {stderr}"
        );
    }
}
