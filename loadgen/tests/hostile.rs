//! loadgen's hostile clients (`--hostile`) against real servers on 127.0.0.1, ports chosen
//! by the kernel: for each kind, the report says how the server dealt with it, and the
//! honest clients beside them keep exact counts of their own. Each test fails if the server
//! did not do what the test names (a dribbler left open, a slow reader still being read) or
//! if loadgen mixed the hostile clients into the honest figures.
//!
//! The runs that wait for a server's timer (the line and idle timeouts) are sized in time,
//! with several times the timer's value to spare; everything else is sized in messages.

// Only `common::start` and its `Spawn` are used here.
#[allow(dead_code)]
#[path = "../../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
#[cfg(unix)]
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::thread;
use std::time::Duration;

use evloop::{reactor, threaded, Running};
use loadgen::{self, ErrLine, HostileKind, HostileTally, Options, Report};

/// Honest load on `server` beside `hostile` (as `--hostile` takes it, space-separated),
/// sized by `configure`.
fn beside(server: &Running, hostile: &str, configure: impl FnOnce(&mut Options)) -> Report {
    beside_at(server.tcp, hostile, configure)
}

fn beside_at(addr: SocketAddr, hostile: &str, configure: impl FnOnce(&mut Options)) -> Report {
    let mut options = Options {
        addr,
        connections: 4,
        messages: Some(2_000),
        duration: None,
        timeout: Duration::from_secs(5),
        hostile: hostile.split(' ').map(|h| h.parse().unwrap()).collect(),
        ..Options::default()
    };
    configure(&mut options);
    let report = loadgen::run(&options).expect("the run starts");
    assert_eq!(
        report.errors(),
        0,
        "honest clients beside hostile ones: {report}"
    );
    assert_eq!(report.connected, options.connections, "{report}");
    report
}

/// For as long as a server timer needs, several times over.
fn for_seconds(seconds: f64) -> impl FnOnce(&mut Options) {
    move |o| {
        o.messages = None;
        o.duration = Some(Duration::from_secs_f64(seconds));
    }
}

/// What the runs that wait for a server's verdict on its hostile clients may take in all.
const VERDICT_CEILING: Duration = Duration::from_secs(60);

/// Honest load beside `hostile` for `seconds`, then for twice as long, and so on, until
/// the report shows what the test waits for (`seen`) or the runs have taken
/// [`VERDICT_CEILING`]; returns the last report, for the test to assert on. A run's
/// length is what the server's timers need with time to spare on a quiet machine, but a
/// verdict is reached only when the server, the honest clients and the hostile ones all
/// got the CPU they need, which two cores busy with a build may take several times longer
/// to give; so the test waits for the state instead of betting on a fixed time.
fn until_seen(
    addr: SocketAddr,
    hostile: &str,
    seconds: f64,
    seen: impl Fn(&Report) -> bool,
) -> Report {
    let started = std::time::Instant::now();
    let mut seconds = seconds;
    loop {
        let report = beside_at(addr, hostile, for_seconds(seconds));
        if seen(&report)
            || started.elapsed() + Duration::from_secs_f64(2.0 * seconds) > VERDICT_CEILING
        {
            return report;
        }
        eprintln!("not seen after a run of {seconds} s, running again for twice as long: {report}");
        seconds *= 2.0;
    }
}

fn tally(report: &Report, kind: HostileKind) -> &HostileTally {
    report
        .hostile
        .iter()
        .find(|t| t.kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} in {report}"))
}

#[test]
fn honest_counts_stay_exact_beside_every_kind_on_two_engines() {
    let server = common::start(reactor::spawn, |_| {});
    let report = beside(
        &server,
        "slow-reader:5 dribbler:5 idle:3 churn:3 udp-flood:2 partial-line:3:1000",
        |o| o.threads = 2,
    );
    // Exactly the honest messages, each once, whatever else the server was doing.
    assert_eq!(report.messages, 2_000, "{report}");
    assert_eq!(report.latency.len(), 2_000);
    let kinds: Vec<HostileKind> = report.hostile.iter().map(|t| t.kind).collect();
    assert_eq!(
        kinds,
        HostileKind::ALL,
        "one tally per kind, in the order given"
    );
    for t in &report.hostile {
        // Every client of every kind was opened, over both engines, and ended in one
        // outcome (a churner's connections are counted one by one instead).
        let outcomes = t.open
            + t.paused
            + t.closed
            + t.reset
            + t.failed
            + [
                ErrLine::LineTimeout,
                ErrLine::LineTooLong,
                ErrLine::ServerBusy,
                ErrLine::TooManyFromAddress,
                ErrLine::Other,
            ]
            .map(|e| t.closed_with(e))
            .iter()
            .sum::<u64>();
        if t.kind == HostileKind::Churn {
            assert!(t.connected >= t.clients, "{t}");
        } else {
            assert_eq!(outcomes, t.clients, "{t}");
            assert_eq!(t.connected, t.clients, "{t}");
        }
        assert_eq!(t.failed, 0, "{t}");
    }
    assert_eq!(tally(&report, HostileKind::SlowReader).clients, 5);
    assert!(tally(&report, HostileKind::UdpFlood).datagrams_sent > 0);
    let stats = server.shutdown().unwrap();
    assert!(
        stats.messages > 2_000,
        "the server answered the hostile lines too"
    );
}

fn dribblers_get_err_line_timeout(spawn: common::Spawn) {
    let server = common::start(spawn, |c| c.line_timeout = Some(Duration::from_secs(1)));
    let report = until_seen(server.tcp, "dribbler:20", 3.0, |r| {
        tally(r, HostileKind::Dribbler).closed_with(ErrLine::LineTimeout) == 20
    });
    let dribblers = tally(&report, HostileKind::Dribbler);
    assert_eq!(
        dribblers.closed_with(ErrLine::LineTimeout),
        20,
        "every dribbler told `ERR line timeout` and closed: {report}"
    );
    assert!(dribblers.bytes_sent >= 20, "{dribblers}");
    assert!(report.messages > 0);
    server.shutdown().unwrap();
}

#[test]
fn dribblers_are_closed_with_err_line_timeout_by_the_reactor() {
    dribblers_get_err_line_timeout(reactor::spawn);
}

#[test]
fn dribblers_are_closed_with_err_line_timeout_by_the_threaded_server() {
    dribblers_get_err_line_timeout(threaded::spawn);
}

/// A thread-per-connection server that greets, answers the lines that start with `c`
/// (every honest request does) and reads and drops every other line: a server that never
/// stops reading, however much a client sends without reading.
fn sink_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                writer.write_all(b"Welcome!\n").unwrap();
                let mut line = Vec::new();
                while let Ok(1..) = reader.read_until(b'\n', &mut line) {
                    if let Some(body) = line.strip_prefix(b"c") {
                        let body = body.strip_suffix(b"\n").unwrap_or(body);
                        let reply = [b"Hello, c", body, b"!\n"].concat();
                        if writer.write_all(&reply).is_err() {
                            return;
                        }
                    }
                    line.clear();
                }
            });
        }
    });
    addr
}

#[test]
fn slow_readers_are_paused_by_a_server_that_stops_reading_them() {
    // A server that keeps reading: its slow readers are never paused.
    let report = beside_at(sink_server(), "slow-reader:3", for_seconds(2.0));
    let slow = tally(&report, HostileKind::SlowReader);
    assert_eq!((slow.open, slow.paused), (3, 0), "{report}");

    // The reactor stops reading them (the output bound, within the memory budget).
    let budget = 1 << 20;
    let server = common::start(reactor::spawn, |c| c.max_buffer_memory = budget);
    let report = until_seen(server.tcp, "slow-reader:10", 2.5, |r| {
        tally(r, HostileKind::SlowReader).paused == 10
    });
    let slow = tally(&report, HostileKind::SlowReader);
    assert_eq!(
        slow.paused, 10,
        "the server stopped reading every slow reader: {report}"
    );
    assert!(slow.bytes_sent > 0, "{slow}");
    assert!(report.messages > 0, "{report}");
    let stats = server.shutdown().unwrap();
    assert!(
        stats.peak_buffered <= budget + 512 * 1024,
        "{} bytes held",
        stats.peak_buffered
    );
}

#[test]
fn idle_clients_are_closed_cleanly_by_the_idle_timeout() {
    let server = common::start(reactor::spawn, |c| {
        c.idle_timeout = Some(Duration::from_secs(1));
    });
    let report = until_seen(server.tcp, "idle:5", 2.5, |r| {
        tally(r, HostileKind::Idle).closed == 5
    });
    let idle = tally(&report, HostileKind::Idle);
    assert_eq!(idle.closed, 5, "a clean EOF and no ERR line: {report}");
    assert_eq!(idle.connected, 5);
    server.shutdown().unwrap();
}

#[test]
fn without_a_timeout_idle_clients_are_still_connected_at_the_end() {
    let server = common::start(reactor::spawn, |_| {});
    let report = beside(&server, "idle:5", |_| {});
    assert_eq!(tally(&report, HostileKind::Idle).open, 5, "{report}");
    server.shutdown().unwrap();
}

#[test]
fn churners_reconnect_for_the_whole_run() {
    let server = common::start(reactor::spawn, |_| {});
    let report = until_seen(server.tcp, "churn:5", 1.0, |r| {
        let churn = tally(r, HostileKind::Churn);
        churn.connected > 2 * churn.clients
    });
    let churn = tally(&report, HostileKind::Churn);
    assert!(
        churn.connected > 2 * churn.clients,
        "each churner made several connections: {churn}"
    );
    assert_eq!(churn.failed, 0, "{churn}");
    assert!(churn.bytes_sent > 0, "{churn}");
    let stats = server.shutdown().unwrap();
    assert!(stats.connections > 2 * churn.clients, "{stats:?}");
}

#[test]
fn a_udp_flood_is_counted_and_a_refused_one_fails() {
    let server = common::start(reactor::spawn, |_| {});
    let report = beside(&server, "udp-flood:2", |_| {});
    let flood = tally(&report, HostileKind::UdpFlood);
    assert_eq!(flood.open, 2, "still flooding at the end: {report}");
    assert!(flood.datagrams_sent > 0, "{flood}");
    assert_eq!(flood.bytes_sent, 16 * flood.datagrams_sent);
    assert_eq!(report.messages, 2_000);
    let stats = server.shutdown().unwrap();
    assert!(stats.messages > 2_000, "the server answered datagrams too");

    // Nothing listens for UDP on that port: the kernel refuses the datagrams.
    let tcp_only = common::start(reactor::spawn, |c| c.udp = None);
    let report = beside(&tcp_only, "udp-flood:2", |_| {});
    assert_eq!(tally(&report, HostileKind::UdpFlood).failed, 2, "{report}");
    tcp_only.shutdown().unwrap();
}

fn loadgen_binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_loadgen"));
    command.env("RUST_LOG", "warn");
    command
}

/// The flat JSON object loadgen prints, as key → number.
fn parse_json(line: &str) -> HashMap<String, f64> {
    let body = line
        .trim()
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'));
    body.unwrap_or_else(|| panic!("not a JSON object: {line}"))
        .split(',')
        .map(|pair| {
            let (key, value) = pair.split_once(':').expect("key: value");
            let value = value.parse().unwrap_or_else(|_| panic!("{pair}"));
            (key.trim_matches('"').to_string(), value)
        })
        .collect()
}

#[test]
fn the_json_report_has_the_hostile_keys_of_the_kinds_in_the_run() {
    let server = common::start(reactor::spawn, |_| {});
    let output = loadgen_binary()
        .args(["--addr", &server.tcp.to_string(), "--connections", "2"])
        .args(["--messages", "200", "--json"])
        .args(["--hostile", "idle:3", "--hostile", "churn:2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    let json = parse_json(&stdout);
    assert_eq!((json["messages"], json["errors"]), (200.0, 0.0), "{stdout}");
    assert_eq!(json["hostile_idle_clients"], 3.0);
    assert_eq!(json["hostile_idle_connected"], 3.0);
    assert_eq!(json["hostile_idle_open"], 3.0);
    assert_eq!(json["hostile_churn_clients"], 2.0);
    assert!(json["hostile_churn_connected"] >= 2.0, "{stdout}");
    assert!(json.contains_key("hostile_cpu_s"));
    for field in [
        "clients",
        "connected",
        "open",
        "paused",
        "closed",
        "err_line_timeout",
        "err_line_too_long",
        "err_server_busy",
        "err_too_many_from_address",
        "err_other",
        "reset",
        "failed",
        "bytes_sent",
        "datagrams_sent",
    ] {
        for kind in ["idle", "churn"] {
            let key = format!("hostile_{kind}_{field}");
            assert!(json.contains_key(&key), "{key} missing from {stdout}");
        }
    }
    assert!(
        !json.keys().any(|k| k.starts_with("hostile_slow_reader")),
        "keys only for the kinds in the run: {stdout}"
    );
    server.shutdown().unwrap();
}

#[test]
fn several_kinds_go_in_one_flag_value_and_beside_a_repeated_flag() {
    let server = common::start(reactor::spawn, |_| {});
    let output = loadgen_binary()
        .args(["--addr", &server.tcp.to_string(), "--connections", "2"])
        .args(["--messages", "200", "--json"])
        .args([
            "--hostile",
            "idle:3,churn:2",
            "--hostile",
            "partial-line:2:1000",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    let json = parse_json(&stdout);
    assert_eq!((json["messages"], json["errors"]), (200.0, 0.0), "{stdout}");
    assert_eq!(json["hostile_idle_clients"], 3.0, "{stdout}");
    assert_eq!(json["hostile_churn_clients"], 2.0, "{stdout}");
    assert_eq!(json["hostile_partial_line_clients"], 2.0, "{stdout}");
    assert_eq!(json["hostile_partial_line_connected"], 2.0, "{stdout}");
    server.shutdown().unwrap();
}

/// Partial lines shorter than `--max-line` (and than any share of the buffer memory): the
/// server takes each whole, answers nothing, and holds the connection.
fn partial_lines_are_held(spawn: common::Spawn) {
    let server = common::start(spawn, |_| {});
    let report = beside(&server, "partial-line:5:20000", |_| {});
    let lines = tally(&report, HostileKind::PartialLine);
    assert_eq!(lines.connected, 5, "{report}");
    assert_eq!(lines.bytes_sent, 5 * 20_000, "every byte taken: {report}");
    assert_eq!(lines.open, 5, "still waiting, unanswered: {report}");
    server.shutdown().unwrap();
}

#[test]
fn partial_lines_are_held_by_the_reactor() {
    partial_lines_are_held(reactor::spawn);
}

#[test]
fn partial_lines_are_held_by_the_threaded_server() {
    partial_lines_are_held(threaded::spawn);
}

#[test]
fn partial_lines_longer_than_max_line_get_err_line_too_long() {
    let server = common::start(threaded::spawn, |c| c.protocol.max_line = 1_000);
    // The kernel takes the whole line before the server has read it: its answer comes
    // after the client's set-up, at the server's pace.
    let report = until_seen(server.tcp, "partial-line:5:4000", 0.5, |r| {
        tally(r, HostileKind::PartialLine).closed_with(ErrLine::LineTooLong) == 5
    });
    let lines = tally(&report, HostileKind::PartialLine);
    assert_eq!(
        lines.closed_with(ErrLine::LineTooLong),
        5,
        "each told and closed: {report}"
    );
    server.shutdown().unwrap();
}

#[test]
fn bad_hostile_flags_are_one_line_on_stderr_and_exit_2() {
    for bad in [
        &["--hostile", "idle"][..],
        &["--hostile", "idle:0"],
        &["--hostile", "shouty:3"],
        &["--hostile", "idle:1", "--hostile", "idle:2"],
        &["--hostile", "idle:1,idle:2"],
        &["--hostile", "idle:1,"],
        &["--hostile", "idle:1,shouty:2"],
        &["--hostile", "idle:2:100"],
        &["--hostile", "partial-line:2:0"],
        &["--hostile", "idle:1", "--addr", "192.0.2.1:9999"],
    ] {
        let output = loadgen_binary().args(bad).output().unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(2), "{bad:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{bad:?}: {stderr}");
    }
}

// A descriptor limit to exceed exists on Unix only.
#[cfg(unix)]
#[test]
fn hostile_clients_that_do_not_fit_the_descriptor_limit_are_refused() {
    let mut command = loadgen_binary();
    command.args(["--connections", "200", "--messages", "200"]);
    command.args(["--hostile", "idle:100"]);
    // SAFETY: between fork and exec only setrlimit runs, which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 256,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
    let output = command.output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("descriptor limit"), "{stderr}");
}
