//! Admission at the limits when every place is held by a connection the server has given up
//! on: clients that start a line and never finish it are told `ERR line timeout`, and their
//! connections then linger, waiting for an EOF that never comes. At `--max-connections` (or
//! the address's `--max-connections-per-ip`) a new client is admitted all the same, in place
//! of the oldest lingering connection, and both servers count it. Real sockets on
//! 127.0.0.1, port 0.

#[allow(dead_code)] // only the line client and `start` are needed here
mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::{start, Client, Spawn};
use evloop::net::LINGER_TIMEOUT;
use evloop::{reactor, threaded};

/// Short, so the dribblers are given up on at once; a dribbler's line is never finished.
const LINE_TIMEOUT: Duration = Duration::from_millis(200);

const HERE: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// `n` clients from `from`, each greeted, then sending the start of a line that never ends
/// and never closing. Returns once every one has been told `ERR line timeout` (each read
/// waits for it, with the clients' generous timeout as the ceiling), with the time the
/// first was told: from then on each lingers for at most `LINGER_TIMEOUT`.
fn given_up_on(addr: std::net::SocketAddr, from: Ipv4Addr, n: usize) -> (Vec<Client>, Instant) {
    let mut clients: Vec<Client> = (0..n)
        .map(|_| {
            let mut c = Client::connect_from(from, addr);
            assert_eq!(c.line(), b"Welcome!\n");
            c.send(b"a line that never ends");
            c
        })
        .collect();
    let mut first = None;
    for c in &mut clients {
        assert_eq!(c.line(), b"ERR line timeout\n");
        first.get_or_insert_with(Instant::now);
    }
    (clients, first.expect("at least one client"))
}

/// A fresh client from `from` is greeted, where it used to be refused.
fn greeted_from(addr: std::net::SocketAddr, from: Ipv4Addr, since: Instant) -> Client {
    let mut fresh = Client::connect_from(from, addr);
    let line = fresh.line();
    eprintln!(
        "a fresh client {:?} after the first was given up on (lingering lasts {LINGER_TIMEOUT:?}): {:?}",
        since.elapsed(),
        String::from_utf8_lossy(&line)
    );
    assert_eq!(
        String::from_utf8_lossy(&line),
        "Welcome!\n",
        "refused at the limit"
    );
    fresh.send(b"fresh\n");
    assert_eq!(fresh.line(), b"Hello, fresh!\n");
    fresh
}

fn at_max_connections_a_new_client_displaces_a_lingering_one(spawn: Spawn) {
    const LIMIT: usize = 20;
    let server = start(spawn, |c| {
        c.max_connections = LIMIT;
        c.line_timeout = Some(LINE_TIMEOUT);
    });
    let (dribblers, since) = given_up_on(server.tcp, HERE, LIMIT);
    let fresh = greeted_from(server.tcp, HERE, since);
    drop((dribblers, fresh));
    let stats = server.shutdown().unwrap();
    assert!(stats.lingering_closed >= 1, "{stats:?}");
    assert_eq!(stats.refused, 0, "{stats:?}");
}

fn at_the_per_address_limit_a_new_client_displaces_a_lingering_one_of_its_address(spawn: Spawn) {
    const LIMIT: usize = 3;
    let server = start(spawn, |c| {
        c.max_connections_per_ip = LIMIT;
        c.line_timeout = Some(LINE_TIMEOUT);
    });
    // Another address lingers first: the oldest, but not this address's to give up.
    let other = Ipv4Addr::new(127, 0, 0, 2);
    let (others, _) = given_up_on(server.tcp, other, LIMIT);
    let (dribblers, since) = given_up_on(server.tcp, HERE, LIMIT);
    let fresh = greeted_from(server.tcp, HERE, since);
    drop((dribblers, fresh, others));
    let stats = server.shutdown().unwrap();
    assert!(stats.lingering_closed_per_ip >= 1, "{stats:?}");
    assert_eq!(stats.lingering_closed, 0, "{stats:?}");
    assert_eq!(stats.refused_per_ip, 0, "{stats:?}");
}

#[test]
fn reactor_at_max_connections_a_new_client_displaces_a_lingering_one() {
    at_max_connections_a_new_client_displaces_a_lingering_one(reactor::spawn);
}

#[test]
fn threaded_at_max_connections_a_new_client_displaces_a_lingering_one() {
    at_max_connections_a_new_client_displaces_a_lingering_one(threaded::spawn);
}

#[test]
fn reactor_at_the_per_address_limit_a_new_client_displaces_a_lingering_one_of_its_address() {
    at_the_per_address_limit_a_new_client_displaces_a_lingering_one_of_its_address(reactor::spawn);
}

#[test]
fn threaded_at_the_per_address_limit_a_new_client_displaces_a_lingering_one_of_its_address() {
    at_the_per_address_limit_a_new_client_displaces_a_lingering_one_of_its_address(threaded::spawn);
}
