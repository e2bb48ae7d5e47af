//! `threaded`: the thread-per-connection baseline server. See `evloop::threaded`.

// The flags both servers take (and helpers loadgen uses too): each binary uses a part.
#[allow(dead_code)]
#[path = "common/cli.rs"]
mod cli;

use std::io::Write;

use clap::Parser;
use evloop::{net, threaded};

/// The baseline for `cargo bench`: blocking std::net I/O with one OS thread per TCP
/// connection and one for UDP, speaking the same protocol as `reactor`.
///
/// SIGINT/SIGTERM stop accepting, deliver the replies owed and exit 0; a second signal
/// exits at once. SIGHUP (Unix) reads the TLS certificate and key again for new
/// connections. Logs go to stderr (RUST_LOG=debug for more).
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(flatten)]
    server: cli::ServerArgs,
}

fn main() {
    cli::init_logging();
    let args: Cli = cli::parse_or_exit();
    // Raised before binding, reported after: a server that cannot start says so in one
    // line and nothing else.
    let fd_limit = net::raise_fd_limit();
    let config = args.server.to_config().unwrap_or_else(|e| cli::fail(e));
    if config.metrics.is_some() {
        cli::fail("--metrics is served by the reactor only");
    }
    let tls = config.tls_enabled();
    let server = threaded::Server::bind(config).unwrap_or_else(|e| cli::fail(e));

    let mut stdout = std::io::stdout().lock();
    let line = net::with_tls(net::startup_line(server.tcp_addr(), server.udp_addr()), tls);
    let printed = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
    if let Err(e) = printed {
        cli::fail(format!("cannot write the startup line: {e}"));
    }
    drop(stdout);
    evloop::systemd::notify_ready();
    match fd_limit {
        Ok((soft, hard)) => log::info!("descriptor limit {soft} (hard {hard})"),
        Err(e) => log::warn!("cannot read the descriptor limit: {e}"),
    }

    if let Err(e) = server.run() {
        cli::fail(e);
    }
}
