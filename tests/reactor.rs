//! The reactor against real sockets on 127.0.0.1: the shared protocol suite, then what only
//! the reactor (or its binary) does.

mod common;

use common::{udp_client, udp_roundtrip, Client};
use evloop::reactor;

protocol_suite!(evloop::reactor::spawn);
binary_suite!(env!("CARGO_BIN_EXE_reactor"));

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
