//! The reactor against real sockets on 127.0.0.1: the shared protocol suite, then what only
//! the reactor (or its binary) does.

mod common;

use std::net::TcpListener;
use std::process::Command;

use common::{udp_client, udp_roundtrip, Binary, Client};
use evloop::reactor;

protocol_suite!(evloop::reactor::spawn);

const REACTOR: &str = env!("CARGO_BIN_EXE_reactor");

#[test]
fn threads_share_the_port_and_all_serve() {
    let server = common::start(reactor::spawn, |c| c.threads = 2);
    // Connections are spread over both loops by the kernel; all of them must be served.
    let mut clients: Vec<Client> = (0..20).map(|_| Client::greeted(server.tcp)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(format!("{i}\n").as_bytes());
        assert_eq!(c.line(), format!("Hello, {i}!\n").as_bytes());
    }
    let udp = udp_client();
    assert_eq!(udp_roundtrip(&udp, server.udp.unwrap(), b"u"), b"Hello, u!");
    drop(clients);
    let stats = server.shutdown().unwrap();
    assert_eq!(stats.connections, 20);
    assert_eq!(stats.messages, 21);
}

#[test]
fn binary_prints_the_startup_line_and_serves_tcp_and_udp() {
    let server = Binary::start(REACTOR, &[]);
    assert!(server.first_line.starts_with("listening tcp=127.0.0.1:"));
    assert!(server.first_line.ends_with('\n'));
    let udp = server.udp.expect("udp on by default");
    assert_eq!(udp.port(), server.tcp.port());
    let mut c = Client::greeted(server.tcp);
    c.send(b"binary\n");
    assert_eq!(c.line(), b"Hello, binary!\n");
    assert_eq!(udp_roundtrip(&udp_client(), udp, b"x\n"), b"Hello, x!");
}

#[test]
fn binary_startup_line_says_udp_off() {
    let server = Binary::start(REACTOR, &["--no-udp"]);
    assert!(
        server.first_line.trim_end().ends_with("udp=off"),
        "{}",
        server.first_line
    );
    assert!(server.udp.is_none());
}

#[test]
fn sigterm_delivers_owed_replies_and_exits_zero() {
    let server = Binary::start(REACTOR, &[]);
    let mut c = Client::greeted(server.tcp);
    c.send(b"before\n");
    assert_eq!(c.line(), b"Hello, before!\n");
    server.signal(libc::SIGTERM);
    assert_eq!(c.rest(), b"", "closed with a clean EOF");
    drop(c);
    let (code, stderr) = server.wait();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("served 1 connections"),
        "summary missing: {stderr}"
    );
    assert!(stderr.contains("1 messages"), "{stderr}");
}

#[test]
fn sigint_exits_zero_too() {
    let server = Binary::start(REACTOR, &["--no-udp"]);
    server.signal(libc::SIGINT);
    let (code, stderr) = server.wait();
    assert_eq!(code, Some(0), "{stderr}");
}

fn run_binary(args: &[&str]) -> (Option<i32>, String) {
    common::run(env!("CARGO_BIN_EXE_reactor"), args)
}

#[test]
fn bad_flags_give_one_line_and_a_nonzero_exit() {
    for args in [
        &["--listen", "not-an-address"][..],
        &["--mode", "shout"],
        &["--max-line", "0"],
        &["--no-such-flag"],
        &["--idle-timeout", "-1"],
        &["--threads", "0"],
    ] {
        let (code, stderr) = run_binary(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn an_address_in_use_is_one_line_and_a_nonzero_exit() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let (code, stderr) = run_binary(&["--listen", &addr, "--no-udp"]);
    assert_ne!(code, Some(0));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&addr) && stderr.contains("in use"),
        "{stderr}"
    );
}

#[test]
fn help_explains_and_exits_zero() {
    let out = Command::new(env!("CARGO_BIN_EXE_reactor"))
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--udp",
        "--no-udp",
        "--framing",
        "--mode",
        "--greeting",
        "--max-line",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn max_connections_holds_for_the_whole_server_with_threads() {
    let server = common::start(reactor::spawn, |c| {
        c.threads = 2;
        c.max_connections = 4;
    });
    let held: Vec<Client> = (0..4).map(|_| Client::greeted(server.tcp)).collect();
    // Whichever loop the kernel hands them to, connections beyond four are refused.
    for _ in 0..4 {
        assert_eq!(Client::connect(server.tcp).rest(), b"ERR server busy\n");
    }
    drop(held);
    let stats = server.shutdown().unwrap();
    assert_eq!((stats.connections, stats.refused), (4, 4));
}
