//! Server settings shared by the reactor and the thread-per-connection baseline, with the
//! defaults docs/reference.md gives. Plain data: parsing flags is the binaries' job
//! (`src/bin/common/cli.rs`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::protocol::ProtocolConfig;

/// Default for `--max-connections`: 10,000 connections fit the default 20,000-descriptor
/// limit with room for the listener, the UDP socket and the poll itself.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Default for `--idle-timeout`: five minutes, long enough for any interactive client.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Default for `--line-timeout`: a line that has started must end within 30 seconds, as
/// nginx's `client_header_timeout` (60 s) bounds a request header. An interactive user types
/// a line in far less; a client that dribbles a byte at a time without ever ending a line
/// (slowloris) would otherwise keep its slot for as long as it keeps dribbling, since every
/// byte resets the idle timeout.
pub const DEFAULT_LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// Default for `--backlog`. std and mio use 128, which overflows (and costs the client a
/// one-second SYN retransmit) when thousands of clients connect at once; the kernel caps
/// the value at `net.core.somaxconn` anyway.
pub const DEFAULT_BACKLOG: i32 = 4096;

/// Default for `--handshake-timeout`: a TLS handshake is a few round trips, well under a
/// second for any client; ten seconds also covers a slow link, while a client that opens
/// connections and never finishes the handshake (slowloris) holds each for no longer.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default for `--shutdown-grace`: how long replies owed at SIGINT/SIGTERM may take to be
/// delivered before the server closes everything anyway.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Where the TLS certificate chain and its private key are (`--tls-cert`, `--tls-key`):
/// the files, not what they hold. The server reads them when it binds, and again at SIGHUP
/// (see [`tls::Identity`](crate::tls)), so what it serves lives beside its accept, and this
/// config stays plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The PEM certificate chain, the server's certificate first.
    pub cert: PathBuf,
    /// The PEM private key of that certificate.
    pub key: PathBuf,
}

/// Everything a server needs to start.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// TCP address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// UDP address, `None` to serve TCP only. Port 0 here with a fixed TCP port, or both at
    /// port 0, makes UDP share the port number TCP was given.
    pub udp: Option<SocketAddr>,
    /// Framing, reply mode, greeting and `--max-line`.
    pub protocol: ProtocolConfig,
    /// Connections beyond this are told `ERR server busy` and closed.
    pub max_connections: usize,
    /// Close a connection that sends nothing for this long; `None` never does.
    pub idle_timeout: Option<Duration>,
    /// A line that has started must end within this long, else the client is told
    /// `ERR line timeout` and the connection is closed; `None` never times a line.
    pub line_timeout: Option<Duration>,
    /// Bytes all connections' buffers may hold together (see [`crate::budget`]).
    pub max_buffer_memory: usize,
    /// SO_SNDBUF for accepted sockets; `None` leaves the kernel's autotuning.
    pub send_buffer: Option<usize>,
    /// SO_RCVBUF for accepted sockets; `None` leaves the kernel's autotuning.
    pub recv_buffer: Option<usize>,
    /// Connections beyond this many from one IP address are told `ERR too many connections
    /// from your address` and closed; 0 means no limit.
    pub max_connections_per_ip: usize,
    /// Every TCP connection begins with a PROXY protocol header (see [`crate::proxy`]),
    /// whose client address stands for the connection's.
    pub proxy_protocol: bool,
    /// `--tls-cert`, `--tls-key`: every TCP connection is TLS, with the certificate in
    /// these files, read when the server binds and again at SIGHUP; `None` serves plain
    /// TCP.
    #[cfg(feature = "tls")]
    pub tls: Option<TlsFiles>,
    /// A TLS handshake not complete this long after the accept closes the connection.
    pub handshake_timeout: Duration,
    /// Independent single-threaded loops sharing the port via SO_REUSEPORT.
    pub threads: usize,
    /// Listen backlog.
    pub backlog: i32,
    /// How long shutdown waits for owed replies to drain.
    pub shutdown_grace: Duration,
    /// Serve Prometheus metrics on this address (the reactor only; see
    /// [`metrics`](crate::metrics)); `None` serves none.
    pub metrics: Option<SocketAddr>,
    /// Install SIGINT/SIGTERM handlers in the loop (the binaries do; embedders and tests
    /// usually stop the server through its handle instead).
    pub handle_signals: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let listen: SocketAddr = ([127, 0, 0, 1], 9999).into();
        ServerConfig {
            listen,
            udp: Some(listen),
            protocol: ProtocolConfig::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            line_timeout: Some(DEFAULT_LINE_TIMEOUT),
            max_connections_per_ip: 0,
            proxy_protocol: false,
            #[cfg(feature = "tls")]
            tls: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_buffer_memory: crate::budget::DEFAULT_MAX_BUFFER_MEMORY,
            send_buffer: None,
            recv_buffer: None,
            threads: 1,
            backlog: DEFAULT_BACKLOG,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            metrics: None,
            handle_signals: false,
        }
    }
}

impl ServerConfig {
    /// TCP connections are TLS (the startup line says `tls=on`).
    pub fn tls_enabled(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// A config for tests and embedding: loopback, port 0 for TCP and UDP, no signals.
    pub fn ephemeral() -> ServerConfig {
        let listen: SocketAddr = ([127, 0, 0, 1], 0).into();
        ServerConfig {
            listen,
            udp: Some(listen),
            ..ServerConfig::default()
        }
    }
}
