//! The thread-per-connection baseline against the same protocol suite as the reactor.

mod common;

protocol_suite!(evloop::threaded::spawn);
