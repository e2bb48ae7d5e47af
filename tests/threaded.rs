//! The thread-per-connection baseline against real sockets on 127.0.0.1: the same protocol
//! and binary suites as the reactor (one copy of each, in `tests/common`).

mod common;

protocol_suite!(evloop::threaded::spawn);
binary_suite!(env!("CARGO_BIN_EXE_threaded"));
