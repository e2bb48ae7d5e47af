//! `loadgen`: see `loadgen --help`, and the crate's `command` module for what it does.

fn main() {
    loadgen::command::main(std::env::args_os())
}
