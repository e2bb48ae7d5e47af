//! `reactor`: the single-threaded mio event-loop server. See `evloop::reactor`.

use std::io::Write;

use clap::Parser;
use evloop::cli::{self, ServerArgs};
use evloop::{net, reactor};

/// A single-threaded, non-blocking TCP + UDP server on one mio poll loop.
///
/// Every TCP connection is greeted, then each line it sends gets one reply
/// (`Hello, <line>!` by default); the line `exit` closes it. Each UDP datagram gets one
/// reply datagram. SIGINT/SIGTERM stop accepting, deliver the replies owed and exit 0; a
/// second signal closes everything at once. Logs go to stderr (RUST_LOG=debug for more).
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
}

fn main() {
    let cli: Cli = cli::parse_or_exit();
    cli::init_logging();
    let config = cli.server.to_config().unwrap_or_else(|e| cli::fail(e));
    let server = reactor::Server::bind(config).unwrap_or_else(|e| cli::fail(e));
    match net::raise_fd_limit() {
        Ok((soft, hard)) => log::info!("open file limit: {soft} (hard {hard})"),
        Err(e) => log::warn!("cannot read the open file limit: {e}"),
    }
    println!(
        "{}",
        net::startup_line(server.tcp_addr(), server.udp_addr())
    );
    if let Err(e) = std::io::stdout().flush() {
        cli::fail(format!("cannot write to stdout: {e}"));
    }
    evloop::systemd::notify_ready();
    if let Err(e) = server.run() {
        cli::fail(format!("event loop failed: {e}"));
    }
}
