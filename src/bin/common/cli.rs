//! Command-line flags shared by the server binaries, and the rule every binary follows for
//! bad input: one line on stderr, a non-zero exit, never a panic.
//!
//! This module owns turning arguments into a [`ServerConfig`]; it must not bind sockets or
//! start anything, so a library user can build the same config without a command line.
//! It lives with the binaries, not in the library: an embedder gets no flag parser and no
//! function that exits the process. The `reactor` and `threaded` binaries, loadgen's
//! command and the tutorials' test include this one file (`#[path]`), each using the part
//! it needs.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::{Args, Parser, ValueEnum};

use evloop::config::{self, ServerConfig};
use evloop::protocol::{self, Framing, Mode, ProtocolConfig};

/// `--framing`
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FramingArg {
    /// A message is a line ending in \n (robust).
    Line,
    /// Each read is a message (fragile: TCP is a byte stream).
    Raw,
}

/// `--mode`
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Reply `Hello, <message>!`.
    Hello,
    /// Reply with the message unchanged.
    Echo,
}

impl From<ModeArg> for Mode {
    fn from(mode: ModeArg) -> Mode {
        match mode {
            ModeArg::Hello => Mode::Hello,
            ModeArg::Echo => Mode::Echo,
        }
    }
}

/// Flags every server takes.
#[derive(Args, Clone, Debug)]
pub struct ServerArgs {
    /// TCP address to listen on; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9999", value_parser = parse_addr)]
    pub listen: SocketAddr,

    /// UDP address [default: the --listen address, so TCP and UDP share the port number].
    #[arg(long, value_name = "ADDR", value_parser = parse_addr, conflicts_with = "no_udp")]
    pub udp: Option<SocketAddr>,

    /// Serve TCP only.
    #[arg(long)]
    pub no_udp: bool,

    /// How TCP input is cut into messages.
    #[arg(long, value_enum, default_value_t = FramingArg::Line)]
    pub framing: FramingArg,

    /// What a reply says (`echo` is the short form of `--reply '{}'`).
    #[arg(long, value_enum, default_value_t = ModeArg::Hello, conflicts_with = "reply")]
    pub mode: ModeArg,

    /// The reply, TCP and UDP: `{}` stands for the message, `{{` and `}}` for literal
    /// braces [default: 'Hello, {}!'].
    #[arg(long, value_name = "TEMPLATE", value_parser = Mode::from_template)]
    pub reply: Option<Mode>,

    /// The UDP reply, when it differs from `--reply` (same syntax).
    #[arg(long, value_name = "TEMPLATE", value_parser = Mode::from_template)]
    pub udp_reply: Option<Mode>,

    /// The message that closes a TCP connection; an empty word means none.
    #[arg(long, value_name = "WORD", default_value = "exit")]
    pub exit_word: String,

    /// Sent on every new TCP connection; an empty string sends none.
    #[arg(long, value_name = "TEXT", default_value = "Welcome!")]
    pub greeting: String,

    /// Longest accepted line in bytes; a longer one gets `ERR line too long` and a close.
    #[arg(long, value_name = "BYTES", default_value_t = protocol::DEFAULT_MAX_LINE,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_line: usize,

    /// Connections beyond this get `ERR server busy` and are closed.
    #[arg(long, value_name = "N", default_value_t = config::DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u32).range(1..).map(|v| v as usize))]
    pub max_connections: usize,

    /// Close a connection that sends nothing for this many seconds; 0 disables.
    #[arg(long, value_name = "SECS", default_value_t = config::DEFAULT_IDLE_TIMEOUT.as_secs())]
    pub idle_timeout: u64,

    /// Seconds a started line may take to end (its `\n`); then the client gets
    /// `ERR line timeout` and a close. Bounds clients that dribble bytes without ever ending
    /// a line. 0 disables.
    #[arg(long, value_name = "SECS", default_value_t = config::DEFAULT_LINE_TIMEOUT.as_secs())]
    pub line_timeout: u64,

    /// Connections allowed from one IP address; beyond it a new one gets
    /// `ERR too many connections from your address` and a close. 0 means no limit.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_connections_per_ip: usize,

    /// Every TCP connection begins with a PROXY protocol header (version 1 or 2, as a
    /// load balancer such as HAProxy sends with `send-proxy` or `send-proxy-v2`); the
    /// client address in it is used for logs and --max-connections-per-ip. A connection
    /// without a valid header within 3 seconds is closed without a greeting. With
    /// --tls-cert the header comes first and the TLS handshake after it (HAProxy in TCP
    /// mode in front). UDP is unaffected.
    #[arg(long)]
    pub proxy_protocol: bool,

    /// Serve every TCP connection over TLS 1.2 or 1.3 with this PEM certificate chain (the
    /// server's certificate first); needs --tls-key. UDP stays plain.
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert's certificate (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,

    /// Seconds from the accept within which a TLS handshake must be complete; a connection
    /// still handshaking then is closed.
    #[arg(long, value_name = "SECS", default_value_t = config::DEFAULT_HANDSHAKE_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub handshake_timeout: u64,

    /// Bytes all connections' buffers may hold together, across every loop (suffixes K, M,
    /// G for KiB, MiB, GiB). A connection that holds an equal share of it stops being read
    /// until its client takes its replies; nothing is lost. Reactor only: a thread of the
    /// threaded baseline holds one read's replies at most, and blocks.
    #[arg(long, value_name = "BYTES", default_value = "256M", value_parser = parse_bytes)]
    pub max_buffer_memory: usize,

    /// SO_SNDBUF for accepted connections (suffixes K, M, G) [default: the kernel's
    /// autotuning]. Bounds the kernel memory a client that never reads can pin.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub send_buffer: Option<usize>,

    /// SO_RCVBUF for accepted connections (suffixes K, M, G) [default: the kernel's
    /// autotuning]. Bounds the kernel memory a client that floods can fill.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub recv_buffer: Option<usize>,

    /// Independent single-threaded loops sharing the port via SO_REUSEPORT (reactor only).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..1025).map(|v| v as usize))]
    pub threads: usize,

    /// Listen backlog (the kernel caps it at net.core.somaxconn).
    #[arg(long, value_name = "N", default_value_t = config::DEFAULT_BACKLOG,
          value_parser = clap::value_parser!(i32).range(1..))]
    pub backlog: i32,

    /// Seconds that replies owed at SIGINT/SIGTERM may take to drain; a second signal
    /// stops at once.
    #[arg(long, value_name = "SECS", default_value_t = config::DEFAULT_SHUTDOWN_GRACE.as_secs_f64())]
    pub shutdown_grace: f64,

    /// Serve Prometheus metrics at http://ADDR/metrics from the event loop (reactor only);
    /// port 0 picks a free port. No authentication: bind it where only your Prometheus
    /// reaches.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    pub metrics: Option<SocketAddr>,
}

impl ServerArgs {
    /// The server configuration these flags describe.
    pub fn to_config(&self) -> Result<ServerConfig, String> {
        // `try_from` refuses what `from_secs_f64` would panic on: NaN, negative, too large.
        let Ok(shutdown_grace) = Duration::try_from_secs_f64(self.shutdown_grace) else {
            return Err(format!(
                "invalid value '{}' for '--shutdown-grace': must be a number of seconds >= 0",
                self.shutdown_grace
            ));
        };
        let mode = self.reply.clone().unwrap_or_else(|| self.mode.into());
        #[cfg(feature = "tls")]
        let tls = self.tls()?;
        #[cfg(not(feature = "tls"))]
        if self.tls_cert.is_some() || self.tls_key.is_some() {
            return Err(
                "--tls-cert: this build has no TLS (built without the `tls` feature)".into(),
            );
        }
        let udp = match (self.no_udp, self.udp) {
            (true, _) => None,
            (false, Some(udp)) => Some(udp),
            (false, None) => Some(self.listen),
        };
        Ok(ServerConfig {
            listen: self.listen,
            udp,
            protocol: ProtocolConfig {
                framing: match self.framing {
                    FramingArg::Line => Framing::Line,
                    FramingArg::Raw => Framing::Raw,
                },
                mode,
                greeting: self.greeting.clone().into_bytes(),
                max_line: self.max_line,
                exit_word: self.exit_word.clone().into_bytes(),
                udp_mode: self.udp_reply.clone(),
            },
            max_connections: self.max_connections,
            idle_timeout: (self.idle_timeout > 0).then(|| Duration::from_secs(self.idle_timeout)),
            line_timeout: (self.line_timeout > 0).then(|| Duration::from_secs(self.line_timeout)),
            max_connections_per_ip: self.max_connections_per_ip,
            proxy_protocol: self.proxy_protocol,
            #[cfg(feature = "tls")]
            tls,
            handshake_timeout: Duration::from_secs(self.handshake_timeout),
            max_buffer_memory: self.max_buffer_memory,
            send_buffer: self.send_buffer,
            recv_buffer: self.recv_buffer,
            threads: self.threads,
            backlog: self.backlog,
            shutdown_grace,
            metrics: self.metrics,
            handle_signals: true,
        })
    }
}

impl ServerArgs {
    /// `--tls-cert` and `--tls-key`, both or neither. The server reads and checks the files
    /// when it binds, and says there, in one line, what is wrong with them.
    #[cfg(feature = "tls")]
    fn tls(&self) -> Result<Option<evloop::config::TlsFiles>, String> {
        match (&self.tls_cert, &self.tls_key) {
            (None, None) => Ok(None),
            (Some(_), None) => Err("--tls-cert needs --tls-key (both or neither)".into()),
            (None, Some(_)) => Err("--tls-key needs --tls-cert (both or neither)".into()),
            (Some(cert), Some(key)) => Ok(Some(evloop::config::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })),
        }
    }
}

/// A size in bytes: digits, optionally followed by K, M or G (powers of 1,024).
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let (digits, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c.to_ascii_uppercase()),
        _ => (s, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => return Err(format!("'{s}': the unit must be K, M or G")),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a size in bytes (for example 65536, 64K, 256M)"))?;
    if n == 0 {
        return Err(format!("'{s}': must be more than 0"));
    }
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// Accepts `IP:PORT` or `HOST:PORT` (resolved once, first address).
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    s.to_socket_addrs()
        .map_err(|e| format!("not an address (IP:PORT or HOST:PORT): {e}"))?
        .next()
        .ok_or_else(|| "the name resolved to no address".to_string())
}

/// Parses the command line; on a bad flag prints one line on stderr and exits with 2.
/// `--help` and `--version` print as usual and exit 0.
pub fn parse_or_exit<T: Parser>() -> T {
    parse_from_or_exit(std::env::args_os())
}

/// [`parse_or_exit`] for a command line given as `args`, the program's name first.
pub fn parse_from_or_exit<T: Parser>(args: impl IntoIterator<Item = std::ffi::OsString>) -> T {
    match T::try_parse_from(args) {
        Ok(args) => args,
        Err(e) => match e.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                e.exit()
            }
            _ => fail(first_line(&e.render().to_string())),
        },
    }
}

/// Prints `error: <message>` on one line to stderr and exits with status 2.
pub fn fail(message: impl std::fmt::Display) -> ! {
    let message = message.to_string();
    let message = message.trim_start_matches("error: ");
    eprintln!("error: {}", first_line(message));
    std::process::exit(2)
}

fn first_line(s: &str) -> &str {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
}

/// Sets up `env_logger` with `info` as the default level, logging to stderr.
pub fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes_and_refuse_nonsense() {
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        assert_eq!(parse_bytes("256m"), Ok(256 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        for bad in ["", "K", "0", "12X", "-1", "1.5M", "99999999999999999999G"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
    }
}
