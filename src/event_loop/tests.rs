//! The loop's own unit tests: what only a whole loop can show (a late ready entry after a
//! slab key is reused; which lingering connection makes room at the limit), with real
//! sockets on 127.0.0.1.

use super::*;
use std::io::Write;

fn event_loop() -> (EventLoop, SocketAddr) {
    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    let bound = net::bind(any, None, 16, false).unwrap();
    let addr = bound.tcp.local_addr().unwrap();
    let shared = Shared {
        config: Arc::new(ServerConfig::ephemeral()),
        stop_requested: Arc::new(AtomicBool::new(false)),
        admission: Admission::new(usize::MAX, 0),
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
    lp.ready.push_back(Ready(Token(0), old_serial));
    lp.resume_ready();
    assert_eq!(lp.scratch.stats.bytes_in, 0, "the stale entry read nothing");
    // ...while one for the connection that holds the key now is served.
    lp.ready.push_back(Ready(Token(0), old_serial + 1));
    lp.resume_ready();
    assert_eq!(lp.scratch.stats.bytes_in, 3);
}

#[test]
fn at_the_limit_the_oldest_lingering_connection_makes_room_for_a_new_client() {
    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    let bound = net::bind(any, None, 16, false).unwrap();
    let addr = bound.tcp.local_addr().unwrap();
    let admission = Admission::new(3, 0);
    let shared = Shared {
        config: Arc::new(ServerConfig::ephemeral()),
        stop_requested: Arc::new(AtomicBool::new(false)),
        admission: Arc::clone(&admission),
        budget: Arc::new(MemoryBudget::new(usize::MAX)),
    };
    let mut lp: EventLoop = EventLoop::new(bound, shared, None, ()).unwrap();
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let client = std::net::TcpStream::connect(addr).unwrap();
            lp.accept();
            client
        })
        .collect();
    assert_eq!(admission.open(), 3);
    // The second and then the first client are given up on (as an idle timeout would):
    // each owes nothing, so each goes straight to lingering.
    for key in [1, 0] {
        let slot = &mut lp.connections[key];
        let mut ctx = lp
            .scratch
            .context(&lp.config, &lp.greeting, lp.now, lp.share);
        let _ = slot.conn.close_gracefully(&mut ctx);
        assert_eq!(slot.conn.state(), State::Lingering);
        lp.after_io(Token(key));
    }

    let _fresh = std::net::TcpStream::connect(addr).unwrap();
    lp.accept();
    assert_eq!(lp.scratch.stats.refused, 0, "admitted");
    assert_eq!(lp.scratch.stats.lingering_closed, 1);
    assert_eq!(lp.connections[1].conn.state(), State::Closed, "the oldest");
    assert_eq!(lp.connections[0].conn.state(), State::Lingering);
    assert_eq!(admission.open(), 3, "its place was given back at once");
    lp.sweep_closed();
    assert_eq!(lp.connections.len(), 3);
    drop(clients);
}

#[test]
fn the_ready_list_gets_its_time_a_turn_oldest_first_and_always_moves() {
    use serve::{serve_ready, READY_PER_TURN, READY_TIME_PER_TURN};
    let entries = |n: usize| (0..n).map(|k| Ready(Token(k), 0)).collect::<VecDeque<_>>();

    // Each service takes half of the turn's time: two are served, the rest wait in order.
    let mut waiting = entries(10);
    let mut served = Vec::new();
    let mut spent = Duration::ZERO;
    serve_ready(&mut waiting, |Ready(token, _)| {
        served.push(token.0);
        spent += READY_TIME_PER_TURN / 2;
        spent
    });
    assert_eq!(served, [0, 1]);
    assert_eq!(waiting.front().map(|r| r.0), Some(Token(2)));
    assert_eq!(waiting.len(), 8);

    // One service longer than the whole time: it is still served, so the list moves.
    let mut waiting = entries(3);
    serve_ready(&mut waiting, |_| 10 * READY_TIME_PER_TURN);
    assert_eq!(waiting.len(), 2);

    // Services that cost nothing: at most READY_PER_TURN a turn.
    let mut waiting = entries(READY_PER_TURN + 5);
    serve_ready(&mut waiting, |_| Duration::ZERO);
    assert_eq!(waiting.len(), 5);
}
