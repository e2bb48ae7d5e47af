//! The loop's own unit test: what only a whole loop can show (a late ready entry after a
//! slab key is reused), with a real socket on 127.0.0.1.

use super::*;
use std::io::Write;

fn event_loop() -> (EventLoop, SocketAddr) {
    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    let bound = net::bind(any, None, 16, false).unwrap();
    let addr = bound.tcp.local_addr().unwrap();
    let shared = Shared {
        config: Arc::new(ServerConfig::ephemeral()),
        stop_requested: Arc::new(AtomicBool::new(false)),
        open_connections: Arc::new(AtomicUsize::new(0)),
        per_address: Arc::new(ConnectionsPerAddress::new(0)),
        budget: Arc::new(MemoryBudget::new(usize::MAX)),
    };
    let event_loop = EventLoop::new(bound, shared, None, ()).unwrap();
    (event_loop, addr)
}

#[test]
fn a_late_entry_for_a_closed_connection_never_reaches_the_one_that_reused_its_key() {
    let (mut lp, addr) = event_loop();
    let _first = std::net::TcpStream::connect(addr).unwrap();
    lp.accept();
    let old_serial = lp.connections[0].serial;
    lp.connections[0].conn.close_now(lp.now);
    lp.closed.push(Token(0));
    lp.sweep_closed();

    // The next client gets the same slab key, with input already waiting.
    let mut second = std::net::TcpStream::connect(addr).unwrap();
    second.write_all(b"hi\n").unwrap();
    lp.accept();
    assert_eq!(lp.connections[0].serial, old_serial + 1, "key 0 reused");

    // An entry left on the ready list by the closed connection is skipped...
    lp.ready.push(Ready::Connection(Token(0), old_serial));
    lp.resume_ready();
    assert_eq!(lp.scratch.stats.bytes_in, 0, "the stale entry read nothing");
    // ...while one for the connection that holds the key now is served.
    lp.ready.push(Ready::Connection(Token(0), old_serial + 1));
    lp.resume_ready();
    assert_eq!(lp.scratch.stats.bytes_in, 3);
}
