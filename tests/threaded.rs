//! The thread-per-connection baseline against real sockets on 127.0.0.1: the same protocol
//! and binary suites as the reactor (one copy of each, in `tests/common`).

mod common;

protocol_suite!(evloop::threaded::spawn);
binary_suite!(env!("CARGO_BIN_EXE_threaded"));

/// The threaded server stops accepting before its threads would use up the kernel's
/// memory mappings per process (`vm.max_map_count`), because std aborts the whole process
/// when a new thread cannot map its signal stack. The ceiling is computed from a cost of 4
/// mappings per connection thread; this checks that the cost still holds.
#[cfg(target_os = "linux")]
#[test]
fn a_connection_thread_costs_at_most_four_memory_mappings_in_proc() {
    use common::{Binary, Client};
    const THREADS: usize = 200;
    let server = Binary::start(env!("CARGO_BIN_EXE_threaded"), &["--no-udp"]);
    let maps = || {
        std::fs::read_to_string(format!("/proc/{}/maps", server.pid()))
            .unwrap()
            .lines()
            .count()
    };
    let before = maps();
    // Each connection's thread writes its greeting, so once every client has read one, all
    // the threads are running.
    let clients: Vec<Client> = (0..THREADS).map(|_| Client::greeted(server.tcp)).collect();
    let added = maps() - before;
    // The allocator may add a few arenas of its own as threads first allocate.
    assert!(
        added <= THREADS * 4 + 64,
        "{added} mappings for {THREADS} threads"
    );
    assert!(
        added >= THREADS * 2,
        "{added} mappings for {THREADS} threads"
    );
    drop(clients);
}
