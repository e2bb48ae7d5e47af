//! The `loadgen` command: drives a server speaking the protocol with many clients, checks
//! every reply and reports throughput and latency. The engine is the rest of this crate;
//! this module parses flags, shows progress and prints the report. It is in the library, not
//! only in `main.rs`, so that the bench can run it in a child process of its own
//! (`CARGO_BIN_EXE_loadgen` exists only inside this package).

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::Parser;

// The binaries' flag helpers, the same file the server binaries include (the server
// crate's library has no flag parser); loadgen uses a part of it.
#[allow(dead_code)]
#[path = "../../src/bin/common/cli.rs"]
mod cli;
use indicatif::{ProgressBar, ProgressStyle};

use cli::{fail, init_logging, parse_addr, parse_from_or_exit, ModeArg};
use evloop::protocol::Mode;

use crate::{self as loadgen, Hostile, Options, Progress, SocketKind};

/// Default run length when neither --duration nor --messages is given.
const DEFAULT_DURATION_SECS: f64 = 10.0;

/// Descriptors the process needs besides its clients: stdio, the poll, and some slack.
const SPARE_FDS: u64 = 16;

/// Load generator: many concurrent clients on one mio poll loop (or one per --threads);
/// every reply is checked byte for byte and only correct replies count as throughput.
#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    after_help = "Exit status: 0 when every request got its correct reply, 1 when any error \
                  (mismatch, timeout, connection error) was counted, 2 on a bad flag or when \
                  the run could not start. Hostile clients never make an error."
)]
struct Args {
    /// The server to drive.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9999", value_parser = parse_addr)]
    addr: SocketAddr,

    /// Concurrent TCP connections (UDP sockets with --udp).
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    connections: usize,

    /// Seconds to run the load for (connection setup not included) [default: 10 unless
    /// --messages is given]. With --messages too, whichever comes first ends the run.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    duration: Option<Duration>,

    /// Send N requests in total and stop once each is answered or has failed.
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    messages: Option<u64>,

    /// Bytes per request, before the newline.
    #[arg(long, value_name = "BYTES", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(0..=16 * 1024 * 1024).map(|v| v as usize))]
    size: usize,

    /// Requests in flight per connection (1 = lockstep).
    #[arg(long, value_name = "K", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=65536).map(|v| v as usize))]
    pipeline: usize,

    /// Send datagrams (one connected UDP socket per client) instead of TCP lines.
    #[arg(long)]
    udp: bool,

    /// Which reply to expect (`echo` is the short form of `--reply '{}'`).
    #[arg(long, value_enum, default_value_t = ModeArg::Hello, conflicts_with = "reply")]
    mode: ModeArg,

    /// The reply to expect, as the server's `--reply`: `{}` stands for the request, `{{`
    /// and `}}` for literal braces.
    #[arg(long, value_name = "TEMPLATE", value_parser = Mode::from_template)]
    reply: Option<Mode>,

    /// Greeting each TCP connection must receive first; an empty string expects none.
    #[arg(long, value_name = "TEXT", default_value = "Welcome!")]
    greeting: String,

    /// Seconds a connect, greeting or request may go unanswered before it counts as an
    /// error.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_seconds)]
    timeout: Duration,

    /// Engines, each on a thread of its own with its own poll and an equal share of the
    /// connections (and of --messages). One engine keeps about one server core busy: a
    /// lockstep client costs about as much CPU per message as a lean server. Use more to
    /// load a server on more cores.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1024).map(|v| v as usize))]
    threads: usize,

    /// TCP: after N replies a client closes its connection cleanly (it half-closes and reads
    /// the server's EOF) and opens a new one, for the whole run, so that connection setup is
    /// part of the load. A reconnect that fails is an error. The report says how many
    /// connections were opened in all.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    requests_per_connection: Option<u64>,

    /// Print one JSON object on one line instead of the human-readable report.
    #[arg(long)]
    json: bool,

    /// N hostile clients beside the honest ones, several kinds separated by commas
    /// (slow-reader:2000,dribbler:5000) or the flag repeated, each kind at most once,
    /// loopback only: slow-reader (pipelines lines, never reads), dribbler (a byte every
    /// 2 s, never a newline), idle (reads the greeting, then silent), churn (connects, sends
    /// a few lines, closes unread, again), udp-flood (datagrams as fast as it can to
    /// --addr's port), partial-line (one line of 60,000 bytes, or partial-line:N:BYTES,
    /// without its newline, then waits). The report says what the server did to them; they
    /// never count as errors.
    #[arg(long, value_name = "KIND:N[,KIND:N...]", value_delimiter = ',')]
    hostile: Vec<Hostile>,

    /// Begin every TCP connection with a PROXY protocol header (v1: text, v2: binary)
    /// naming its own two ends, as a load balancer does; for a server run with
    /// --proxy-protocol.
    #[arg(long, value_name = "VERSION")]
    proxy_protocol: Option<evloop::proxy::Version>,

    /// Local addresses to connect from, comma-separated, taken by the clients in turn
    /// (e.g. 127.0.0.2,127.0.0.3: several loopback clients a server can tell apart)
    /// [default: the address the kernel picks].
    #[arg(long, value_name = "IP,...", value_delimiter = ',')]
    source: Vec<std::net::IpAddr>,

    /// Connect over TLS (for a server run with --tls-cert and --tls-key), trusting the
    /// certificates in --tls-ca, or, with --tls-insecure, any certificate. The report adds
    /// the handshakes per second; with --requests-per-connection 1 every request pays one.
    #[arg(long)]
    tls: bool,

    /// With --tls: the PEM file of the certificates the server's must chain to (a CA's), or
    /// be (the server's own, pinned: its name and validity are still checked, by its
    /// subjectAltName or, without one, its common name, so `openssl req -x509`'s usual
    /// self-signed certificate works as it is).
    #[arg(
        long,
        value_name = "PEM",
        requires = "tls",
        conflicts_with = "tls_insecure"
    )]
    tls_ca: Option<std::path::PathBuf>,

    /// With --tls: accept any certificate, so the connection is encrypted but the server is not
    /// authenticated; the report says so. For tests and benches against a throwaway
    /// certificate.
    #[arg(long, requires = "tls")]
    tls_insecure: bool,

    /// With --tls: the name the server's certificate must carry [default: --addr's IP
    /// address].
    #[arg(long, value_name = "NAME", requires = "tls")]
    tls_server_name: Option<String>,
}

/// A positive, finite number of seconds, fractions allowed.
fn parse_seconds(s: &str) -> Result<Duration, String> {
    let seconds: f64 = s
        .parse()
        .map_err(|_| "expected a number of seconds".to_string())?;
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err("must be a number of seconds greater than 0".into());
    }
    Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
}

impl Args {
    fn to_options(&self) -> Result<Options, String> {
        let duration = match (self.duration, self.messages) {
            (None, None) => Some(Duration::from_secs_f64(DEFAULT_DURATION_SECS)),
            (duration, _) => duration,
        };
        Ok(Options {
            addr: self.addr,
            connections: self.connections,
            duration,
            messages: self.messages,
            size: self.size,
            pipeline: self.pipeline,
            socket_kind: if self.udp {
                SocketKind::Udp
            } else {
                SocketKind::Tcp
            },
            mode: self.reply.clone().unwrap_or_else(|| self.mode.into()),
            greeting: self.greeting.clone().into_bytes(),
            timeout: self.timeout,
            threads: self.threads,
            hostile: self.hostile.clone(),
            proxy_protocol: self.proxy_protocol,
            sources: self.source.clone(),
            requests_per_connection: self.requests_per_connection,
            tls: self.client_tls()?,
        })
    }

    /// `--tls` and its companions, checked: one of --tls-ca and --tls-insecure, a file
    /// that holds certificates, a valid name.
    fn client_tls(&self) -> Result<Option<loadgen::ClientTls>, String> {
        if !self.tls {
            return Ok(None);
        }
        if self.tls_ca.is_none() && !self.tls_insecure {
            return Err("--tls needs --tls-ca PEM, or --tls-insecure to skip verification".into());
        }
        #[cfg(feature = "tls")]
        {
            let name = self
                .tls_server_name
                .clone()
                .unwrap_or_else(|| self.addr.ip().to_string());
            loadgen::ClientTls::new(self.tls_ca.as_deref(), &name).map(Some)
        }
        #[cfg(not(feature = "tls"))]
        Err("--tls: this loadgen was built without the `tls` feature".into())
    }
}

/// A progress bar on stderr when a person is watching stdout; a hidden one otherwise, so
/// piped and --json output stay clean.
fn progress_bar(args: &Args, options: &Options) -> ProgressBar {
    if args.json || !std::io::stdout().is_terminal() {
        return ProgressBar::hidden();
    }
    let (length, template) = match (options.messages, options.duration) {
        (Some(messages), _) => (
            messages,
            "{bar:40} {pos}/{len} messages, {msg} [{elapsed_precise}]",
        ),
        (None, duration) => (
            duration.map_or(0, |d| d.as_millis() as u64),
            "{bar:40} {msg} [{elapsed_precise}]",
        ),
    };
    let bar = ProgressBar::new(length);
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Runs loadgen with the command line `args` (the program's name first, as
/// [`std::env::args_os`] gives it) and exits: 0 when every request got its correct reply, 1
/// when an error was counted, 2 on a bad flag or a run that could not start.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ! {
    let args: Args = parse_from_or_exit(args);
    init_logging();
    let options = args.to_options().unwrap_or_else(|e| fail(e));
    if let Err(e) = options.validate() {
        fail(e);
    }

    match evloop::net::raise_fd_limit() {
        Ok((soft, hard)) => {
            log::info!("descriptor limit {soft} (hard {hard})");
            let sockets = options.sockets() as u64;
            if sockets + SPARE_FDS > soft {
                if options.hostile.is_empty() {
                    log::warn!(
                        "{} connections need more descriptors than the limit of {soft}: expect connection errors",
                        options.connections
                    );
                } else {
                    // Hostile clients would take the descriptors the honest ones need, and
                    // loadgen's own shortage would pass for the server's errors.
                    fail(format!(
                        "{sockets} honest and hostile clients do not fit the descriptor limit of {soft}"
                    ));
                }
            }
        }
        Err(e) => log::warn!("cannot read or raise the descriptor limit: {e}"),
    }

    let bar = progress_bar(&args, &options);
    let by_messages = options.messages.is_some();
    let report = loadgen::run_with_progress(&options, |p: &Progress| {
        if by_messages {
            bar.set_position(p.messages);
        } else {
            bar.set_position(p.elapsed.as_millis() as u64);
        }
        bar.set_message(format!("{} ok, {} errors", p.messages, p.errors));
    })
    .unwrap_or_else(|e| fail(e));
    bar.finish_and_clear();

    let text = if args.json {
        report.to_json()
    } else {
        report.to_string()
    };
    // Not `println!`, which panics when stdout is a pipe already closed (`| head -1`).
    if let Err(e) = writeln!(std::io::stdout(), "{text}") {
        fail(format!("cannot write the report to stdout: {e}"));
    }
    if report.errors() > 0 {
        std::process::exit(1);
    }
    std::process::exit(0)
}
