//! `reactor`: the single-threaded mio event-loop server. See `evloop::reactor`.

// The flags both servers take (and helpers loadgen uses too): each binary uses a part.
#[allow(dead_code)]
#[path = "common/cli.rs"]
mod cli;

use std::io::Write;
use std::time::Duration;

use clap::Parser;
use cli::ServerArgs;
use evloop::restart::{self, Restart};
use evloop::{net, reactor};

/// A single-threaded, non-blocking TCP + UDP server on one mio poll loop.
///
/// Every TCP connection is greeted, then each line it sends gets one reply
/// (`Hello, <line>!` by default); the line `exit` closes it. Each UDP datagram gets one
/// reply datagram. SIGINT/SIGTERM stop accepting, deliver the replies owed and exit 0; a
/// second signal closes everything at once. SIGUSR2 (Unix) starts this executable again on
/// the same sockets and, once it is ready, stops accepting and lets its own connections
/// finish (docs/systemd.md, "Restarting without dropping a client"). SIGHUP (Unix) reads the
/// TLS certificate and key again for new connections. Logs go to stderr (RUST_LOG=debug
/// for more).
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,

    /// Seconds the old process keeps serving its connections after SIGUSR2 handed the
    /// sockets to its successor; then it shuts down as at SIGTERM.
    #[arg(long, value_name = "SECS", default_value_t = restart::DEFAULT_DRAIN_TIMEOUT.as_secs_f64())]
    drain_timeout: f64,
}

fn main() {
    let cli: Cli = cli::parse_or_exit();
    cli::init_logging();
    let drain_timeout = Duration::try_from_secs_f64(cli.drain_timeout).unwrap_or_else(|_| {
        cli::fail(format!(
            "invalid value '{}' for '--drain-timeout': must be a number of seconds from 0 to 2^64",
            cli.drain_timeout
        ))
    });
    // At startup: the executable's path, before an upgrade can replace the file.
    let restart = Restart::recorded_at_startup(drain_timeout);
    let config = cli.server.to_config().unwrap_or_else(|e| cli::fail(e));
    let tls = config.tls_enabled();
    let mut server = reactor::Reactor::bind(config).unwrap_or_else(|e| cli::fail(e));
    match restart {
        Ok(restart) => server.restart_on_sigusr2(restart),
        Err(e) => log::warn!("SIGUSR2 will not restart: cannot tell this executable's path: {e}"),
    }
    match net::raise_fd_limit() {
        Ok((soft, hard)) => log::info!("open file limit: {soft} (hard {hard})"),
        Err(e) => log::warn!("cannot read the open file limit: {e}"),
    }
    let mut ready = net::with_tls(net::startup_line(server.tcp_addr(), server.udp_addr()), tls);
    if let Some(metrics) = server.metrics_addr() {
        log::info!("metrics on http://{metrics}/metrics");
        // A second line, in the same write as the first: a reader that takes only the
        // first line and closes the pipe then never makes a later write fail.
        ready += &format!("\nmetrics on {metrics}");
    }
    println!("{ready}");
    if let Err(e) = std::io::stdout().flush() {
        cli::fail(format!("cannot write to stdout: {e}"));
    }
    evloop::systemd::notify_ready();
    if let Err(e) = server.run() {
        cli::fail(format!("event loop failed: {e}"));
    }
}
