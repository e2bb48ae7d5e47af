//! loadgen against both real servers: every reply verified, zero errors, for lockstep,
//! pipelined and UDP load, in hello and echo mode and with a reply template, on one engine
//! thread and on several, and with clients that reconnect every few requests.

// Only `common::start` and its `Spawn` are used here; the rest is for the server suites
// and tests/limits.rs.
#[allow(dead_code)]
mod common;

use evloop::protocol::Mode;
use evloop::{reactor, threaded, Running};
use loadgen::{Options, SocketKind};

fn drive(server: &Running, configure: impl FnOnce(&mut Options)) -> loadgen::Report {
    let mut options = Options {
        addr: server.tcp,
        connections: 50,
        messages: Some(5_000),
        duration: None,
        ..Options::default()
    };
    configure(&mut options);
    let report = loadgen::run(&options).expect("loadgen runs");
    assert_eq!(report.errors(), 0, "{report}");
    assert_eq!(Some(report.messages), options.messages, "{report}");
    report
}

fn zero_errors_against(spawn: common::Spawn) {
    let server = common::start(spawn, |_| {});
    drive(&server, |_| {});
    drive(&server, |o| o.pipeline = 16);
    drive(&server, |o| o.threads = 3);
    drive(&server, |o| {
        o.socket_kind = SocketKind::Udp;
        o.addr = server.udp.unwrap();
        o.connections = 10;
        o.messages = Some(2_000);
    });
    drive(&server, |o| {
        o.socket_kind = SocketKind::Udp;
        o.addr = server.udp.unwrap();
        o.connections = 10;
        o.messages = Some(2_000);
        o.threads = 2;
    });
    // Reconnecting every 7 requests (5,000 is no multiple of it, nor of the pipeline):
    // every connection closes cleanly and its successor is set up without an error.
    for pipeline in [1, 4] {
        let report = drive(&server, |o| {
            o.requests_per_connection = Some(7);
            o.pipeline = pipeline;
        });
        assert!(
            report.connections_opened >= 5_000 / 7,
            "a connection per 7 requests: {report}"
        );
    }
    let stats = server.shutdown().unwrap();
    assert!(stats.messages >= 29_000);

    let echo = common::start(spawn, |c| c.protocol.mode = Mode::Echo);
    drive(&echo, |o| {
        o.mode = Mode::Echo;
        o.size = 1000;
    });
    echo.shutdown().unwrap();

    // A reply template, over TCP and over UDP, verified byte for byte.
    let template = || Mode::from_template("服务端接收到数据：{}").unwrap();
    let templated = common::start(spawn, |c| c.protocol.mode = template());
    drive(&templated, |o| o.mode = template());
    drive(&templated, |o| {
        o.mode = template();
        o.socket_kind = SocketKind::Udp;
        o.addr = templated.udp.unwrap();
        o.connections = 10;
        o.messages = Some(2_000);
    });
    templated.shutdown().unwrap();
}

#[test]
fn loadgen_reports_zero_errors_against_the_reactor() {
    zero_errors_against(reactor::spawn);
}

#[test]
fn loadgen_reports_zero_errors_against_the_threaded_server() {
    zero_errors_against(threaded::spawn);
}

#[test]
fn loadgen_counts_errors_when_the_server_speaks_another_mode() {
    // An echo server, or one with another reply template, is a wrong server for a client
    // expecting hello replies.
    for mode in [Mode::Echo, Mode::from_template("Loop_Msg: {}!").unwrap()] {
        let server = common::start(reactor::spawn, |c| c.protocol.mode = mode);
        let report = loadgen::run(&Options {
            addr: server.tcp,
            connections: 5,
            messages: Some(100),
            duration: None,
            ..Options::default()
        })
        .unwrap();
        assert_eq!(
            report.messages, 0,
            "a wrong reply never counts as throughput"
        );
        assert_eq!(report.mismatches, 5, "{report}");
        server.shutdown().unwrap();
    }
}
