//! The load generator's engine: many clients driven from one thread and one `mio::Poll`,
//! every reply checked byte for byte, latency recorded in an HDR histogram. With
//! [`Options::threads`] above one, that many engines run side by side, each on its own
//! thread with its own poll and an equal share of the clients, and their counts and
//! histograms are added up at the end.
//!
//! This module owns the client side of the protocol: opening TCP connections (or connected
//! UDP sockets), checking the greeting, keeping up to `pipeline` requests in flight per
//! client, matching each reply to its request, and counting what went wrong. It is built on
//! the same kind of loop as the reactor so that it is not the bottleneck it measures: a
//! thread per client would spend the machine's two cores switching between clients instead
//! of loading the server. It never prints: the binary turns the [`Report`] into text.
//!
//! A run has two phases. First every client connects and reads its greeting, each with
//! `timeout` to do so (at most 128 at a time, see [`MAX_SETUPS_IN_FLIGHT`]); only then does
//! the clock start and the load begin, so connection setup is not counted as throughput
//! and every client starts together (with several engines, each waits for the others to
//! finish setting up). The load phase ends when `duration` has passed (requests still in
//! flight are abandoned, counted neither as messages nor as errors), when `messages`
//! requests have all been settled, when no client is left, or when the server has stopped
//! answering altogether.
//!
//! Errors are counted per failure, not per request: a TCP connection that gets a wrong
//! reply, times out or is reset is closed and counted once, and the requests queued behind
//! the failure are abandoned with it. Closed connections are not reopened, which keeps the
//! numbers easy to read: `connections - connected` never got going, and a run whose
//! clients have all failed ends at once. UDP has no stream to fall out of step, so a lost
//! or wrong datagram is counted on its own and the socket carries on.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Registry, Token};

use crate::protocol::{self, Mode};

/// The largest `size` a UDP request may have: the largest UDP payload over IPv4 (65,507
/// bytes) less the 8 bytes `Hello, ` and `!` add to the reply.
pub const MAX_UDP_SIZE: usize = 65_507 - 8;

/// How often timeouts are checked and progress reported. Checking every client on every
/// wakeup would cost O(clients) per reply and make the load generator the bottleneck, so
/// a request is declared timed out up to this much after `timeout`.
const SWEEP_INTERVAL: Duration = Duration::from_millis(20);

/// Bytes read per `read` call. One buffer is shared by every client: each read's bytes are
/// checked (and the partial reply kept) before the next client reads.
const READ_BUFFER: usize = 64 * 1024;

/// The largest latency the histogram tells apart, in microseconds: an hour, far beyond any
/// sensible `--timeout`. Larger values are recorded as this.
const LATENCY_CEILING_US: u64 = 3_600_000_000;

/// Significant digits the histogram keeps: 0.1% resolution at any latency, in ~200 KB.
const LATENCY_SIGFIG: u8 = 3;

/// Clients connecting or awaiting their greeting at any one time. Connecting thousands at
/// once overflows the accept queue of a server with std's and mio's default backlog of 128:
/// the kernel then drops the handshake's last ACK, the client believes it is connected, and
/// the server only learns of it after a SYN-ACK retransmit one to three seconds later, which
/// loadgen would report as greeting timeouts. Staying at the smallest common backlog keeps
/// setup quick against any server; the load itself still runs on every connection at once.
pub const MAX_SETUPS_IN_FLIGHT: usize = 128;

/// Events taken per `poll` call.
const EVENTS_CAPACITY: usize = 1024;

/// Which transport the clients use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// One TCP connection per client, line framing.
    Tcp,
    /// One connected UDP socket per client, one datagram per request.
    Udp,
}

/// What to run: the flags of the `loadgen` binary, as data.
#[derive(Clone, Debug)]
pub struct Options {
    /// The server to drive.
    pub addr: SocketAddr,
    /// Concurrent TCP connections, or UDP sockets.
    pub connections: usize,
    /// Stop sending this long after the load begins. With `messages` too, whichever comes
    /// first ends the run.
    pub duration: Option<Duration>,
    /// Send this many requests in total and stop once each is answered or has failed.
    pub messages: Option<u64>,
    /// Bytes in each request, before the newline.
    pub size: usize,
    /// Requests in flight per client; 1 is lockstep.
    pub pipeline: usize,
    /// TCP or UDP.
    pub transport: Transport,
    /// Which reply to expect; the expected bytes come from [`Mode::reply`], the very code
    /// the servers answer with.
    pub mode: Mode,
    /// The line each TCP connection must receive first (without its `\n`); empty: none.
    pub greeting: Vec<u8>,
    /// A connect, greeting or request unanswered this long is an error.
    pub timeout: Duration,
    /// Engines, each on a thread of its own with an equal share of `connections` (and of
    /// `messages`). A lockstep client costs about as much CPU per message as a lean server
    /// (both are mostly the kernel's `read` and `write`), so one engine can keep about one
    /// server core busy; use more to load a server that has more cores.
    pub threads: usize,
}

impl Default for Options {
    /// The defaults the README gives the `loadgen` flags.
    fn default() -> Self {
        Options {
            addr: ([127, 0, 0, 1], 9999).into(),
            connections: 100,
            duration: Some(Duration::from_secs(10)),
            messages: None,
            size: 16,
            pipeline: 1,
            transport: Transport::Tcp,
            mode: Mode::Hello,
            greeting: b"Welcome!".to_vec(),
            timeout: Duration::from_secs(2),
            threads: 1,
        }
    }
}

impl Options {
    /// Checks the combination makes a run that can end; explains the first problem.
    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 {
            return Err("connections must be at least 1".into());
        }
        if self.pipeline == 0 {
            return Err("pipeline must be at least 1".into());
        }
        if self.threads == 0 {
            return Err("threads must be at least 1".into());
        }
        if self.threads > self.connections {
            return Err(format!(
                "{} threads need at least as many connections, not {}",
                self.threads, self.connections
            ));
        }
        if self.messages.is_some_and(|m| m < self.threads as u64) {
            return Err(format!(
                "{} threads need at least as many messages",
                self.threads
            ));
        }
        if self.duration.is_none() && self.messages.is_none() {
            return Err("give a duration, a message count, or both".into());
        }
        if self.timeout.is_zero() {
            return Err("timeout must be more than zero".into());
        }
        if self.transport == Transport::Udp && self.size > MAX_UDP_SIZE {
            return Err(format!(
                "size {} does not fit in one UDP datagram with its reply (at most {MAX_UDP_SIZE})",
                self.size
            ));
        }
        Ok(())
    }

    /// The options of each engine: `connections` and `messages` shared out as evenly as
    /// they go, the first engines taking one more when they do not divide.
    fn shares(&self) -> Vec<Options> {
        let share = |total: u64, i: u64| {
            let n = self.threads as u64;
            total / n + u64::from(i < total % n)
        };
        (0..self.threads as u64)
            .map(|i| Options {
                connections: share(self.connections as u64, i) as usize,
                messages: self.messages.map(|m| share(m, i)),
                ..self.clone()
            })
            .collect()
    }
}

/// A snapshot handed to the progress callback of [`run_with_progress`] during the load.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Time since the load began.
    pub elapsed: Duration,
    /// Correct replies so far.
    pub messages: u64,
    /// Errors so far.
    pub errors: u64,
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct Report {
    /// Requests answered with exactly the expected reply.
    pub messages: u64,
    /// Length of the load phase (connection setup excluded).
    pub duration: Duration,
    /// Clients asked for.
    pub connections: usize,
    /// Clients that connected and received their greeting.
    pub connected: usize,
    /// Wrong replies, wrong greetings, and bytes nobody asked for.
    pub mismatches: u64,
    /// Requests (or greetings) unanswered after `timeout`.
    pub timeouts: u64,
    /// Connections refused, reset, closed by the server, or not set up within `timeout`.
    pub connection_errors: u64,
    /// Latency of each correct reply, in microseconds, from queueing the request to
    /// reading the last byte of its reply.
    pub latency: Histogram<u64>,
    /// CPU time (user + system) the engines' threads used during the load phase: the
    /// evidence that the load generator was not the bottleneck.
    pub client_cpu: Duration,
}

impl Report {
    /// Every error of any kind.
    pub fn errors(&self) -> u64 {
        self.mismatches + self.timeouts + self.connection_errors
    }

    /// Correct replies per second of the load phase.
    pub fn msgs_per_sec(&self) -> f64 {
        per_second(self.messages as f64, self.duration)
    }

    /// The latency at `quantile` (0.5 for the median), in microseconds; 0 with no replies.
    pub fn latency_us(&self, quantile: f64) -> u64 {
        if self.latency.is_empty() {
            return 0;
        }
        self.latency.value_at_quantile(quantile)
    }

    /// The share of one core the engines used during the load (1.0 = a whole core; above 1
    /// with several threads).
    pub fn client_cpu_fraction(&self) -> f64 {
        per_second(self.client_cpu.as_secs_f64(), self.duration)
    }

    /// The report as one line of JSON: a flat object of numbers. The key names are an
    /// interface (the bench parses them); add keys, never rename them.
    pub fn to_json(&self) -> String {
        format!(
            concat!(
                "{{\"messages\":{},\"duration_s\":{:.6},\"msgs_per_sec\":{:.1},",
                "\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},",
                "\"mean_us\":{:.1},\"errors\":{},\"mismatches\":{},\"timeouts\":{},",
                "\"connection_errors\":{},\"connections\":{},\"connected\":{},",
                "\"client_cpu_s\":{:.6}}}"
            ),
            self.messages,
            self.duration.as_secs_f64(),
            self.msgs_per_sec(),
            self.latency_us(0.5),
            self.latency_us(0.9),
            self.latency_us(0.99),
            self.latency_us(0.999),
            self.latency.max(),
            finite_or_zero(self.latency.mean()),
            self.errors(),
            self.mismatches,
            self.timeouts,
            self.connection_errors,
            self.connections,
            self.connected,
            self.client_cpu.as_secs_f64(),
        )
    }
}

impl fmt::Display for Report {
    /// The human-readable summary, several lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "messages     {}", self.messages)?;
        writeln!(f, "duration     {:.3} s", self.duration.as_secs_f64())?;
        writeln!(f, "throughput   {:.0} msgs/s", self.msgs_per_sec())?;
        writeln!(
            f,
            "latency      p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
            self.latency_us(0.5),
            self.latency_us(0.9),
            self.latency_us(0.99),
            self.latency_us(0.999),
            self.latency.max()
        )?;
        writeln!(
            f,
            "errors       {} (mismatches {}, timeouts {}, connection errors {})",
            self.errors(),
            self.mismatches,
            self.timeouts,
            self.connection_errors
        )?;
        writeln!(
            f,
            "connections  {} of {} set up",
            self.connected, self.connections
        )?;
        write!(
            f,
            "client cpu   {:.3} s ({:.0}% of one core)",
            self.client_cpu.as_secs_f64(),
            100.0 * self.client_cpu_fraction()
        )
    }
}

fn per_second(amount: f64, duration: Duration) -> f64 {
    finite_or_zero(amount / duration.as_secs_f64())
}

/// JSON has no NaN or infinity; a run too short to measure reports 0.
fn finite_or_zero(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

/// Runs the load described by `options` and reports what it measured.
///
/// Errors from the server (wrong replies, timeouts, refused connections) are counted in the
/// [`Report`]; `Err` means the run itself could not happen: invalid options, or no poll.
pub fn run(options: &Options) -> io::Result<Report> {
    run_with_progress(options, |_| {})
}

/// [`run`], calling `progress` every few tens of milliseconds during the load phase.
pub fn run_with_progress(
    options: &Options,
    mut progress: impl FnMut(&Progress),
) -> io::Result<Report> {
    options
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let total = if options.threads == 1 {
        // One engine runs on the calling thread, so `client_cpu` is that thread's alone.
        drive(options, &Barrier::new(1), &mut progress)?
    } else {
        drive_threads(options, &mut progress)?
    };
    Ok(Report {
        messages: total.tally.messages,
        duration: total.duration,
        connections: options.connections,
        connected: total.connected,
        mismatches: total.tally.mismatches,
        timeouts: total.tally.timeouts,
        connection_errors: total.tally.connection_errors,
        latency: total.tally.latency,
        client_cpu: total.cpu,
    })
}

/// What one engine measured, or the sum of several.
struct Part {
    tally: Tally,
    connected: usize,
    /// The load phase; the longest of them for a sum, as the engines start together.
    duration: Duration,
    cpu: Duration,
}

/// Runs one engine: sets up its clients, waits at `ready` until every engine has, then
/// runs the load.
fn drive(
    options: &Options,
    ready: &Barrier,
    progress: &mut impl FnMut(&Progress),
) -> io::Result<Part> {
    let set_up = Engine::new(options).and_then(|mut engine| engine.set_up().map(|()| engine));
    // Waited on whatever happened, so that an engine that failed cannot leave the others
    // waiting for it.
    ready.wait();
    let mut engine = set_up?;
    let connected = engine.live;

    let cpu_before = thread_cpu_time();
    let started = Instant::now();
    engine.load(started, progress)?;
    let duration = started.elapsed();
    let cpu = thread_cpu_time().saturating_sub(cpu_before);
    Ok(Part {
        tally: engine.shared.tally,
        connected,
        duration,
        cpu,
    })
}

/// One engine's latest progress, published for the thread that reports it.
#[derive(Default)]
struct EngineCounts {
    messages: AtomicU64,
    errors: AtomicU64,
}

/// Runs `options.threads` engines on threads of their own and adds up what they measured.
/// The calling thread reports their summed progress while it waits for them.
fn drive_threads(options: &Options, progress: &mut impl FnMut(&Progress)) -> io::Result<Part> {
    let shares = options.shares();
    // Each engine's latest counts, for the progress report.
    let counts: Vec<EngineCounts> = shares.iter().map(|_| EngineCounts::default()).collect();
    let ready = Barrier::new(shares.len() + 1);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    thread::scope(|scope| {
        let handles: Vec<_> = shares
            .iter()
            .zip(&counts)
            .map(|(share, count)| {
                let (ready, done) = (&ready, done_tx.clone());
                scope.spawn(move || {
                    let part = drive(share, ready, &mut |p: &Progress| {
                        count.messages.store(p.messages, Ordering::Relaxed);
                        count.errors.store(p.errors, Ordering::Relaxed);
                    });
                    let _ = done.send(());
                    part
                })
            })
            .collect();
        drop(done_tx);
        ready.wait();
        let started = Instant::now();
        let mut finished = 0;
        while finished < handles.len() {
            match done_rx.recv_timeout(SWEEP_INTERVAL) {
                Ok(()) => finished += 1,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let sum = |field: fn(&EngineCounts) -> &AtomicU64| {
                        counts
                            .iter()
                            .map(|c| field(c).load(Ordering::Relaxed))
                            .sum()
                    };
                    progress(&Progress {
                        elapsed: started.elapsed(),
                        messages: sum(|c| &c.messages),
                        errors: sum(|c| &c.errors),
                    });
                }
                // Only if a thread panicked: `join` below says so.
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let mut total = Part {
            tally: Tally::new()?,
            connected: 0,
            duration: Duration::ZERO,
            cpu: Duration::ZERO,
        };
        for handle in handles {
            let part = handle
                .join()
                .map_err(|_| io::Error::other("a loadgen engine thread panicked"))??;
            total.tally.add(&part.tally)?;
            total.connected += part.connected;
            total.duration = total.duration.max(part.duration);
            total.cpu += part.cpu;
        }
        Ok(total)
    })
}

/// CPU time used by the calling thread. On Linux this is the engine alone, even when a
/// test runs a server on other threads of the same process; elsewhere the whole process.
fn thread_cpu_time() -> Duration {
    #[cfg(target_os = "linux")]
    let who = libc::RUSAGE_THREAD;
    #[cfg(not(target_os = "linux"))]
    let who = libc::RUSAGE_SELF;
    // SAFETY: rusage is plain integers, for which all zeroes is a valid value, and
    // getrusage only writes the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let seconds = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Why a client failed. The engine counts it and closes the client.
#[derive(Debug)]
enum Failure {
    /// A reply or greeting that differs from the expected bytes.
    Mismatch,
    /// Nothing (or not all of it) came back within `timeout`.
    Timeout,
    /// The socket failed: refused, reset, closed early, not connected in time.
    Connection(io::Error),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Mismatch => f.write_str("wrong reply"),
            Failure::Timeout => f.write_str("no reply in time"),
            Failure::Connection(e) => write!(f, "connection error: {e}"),
        }
    }
}

/// The numbers that end up in the [`Report`].
#[derive(Clone, Debug)]
struct Tally {
    messages: u64,
    mismatches: u64,
    timeouts: u64,
    connection_errors: u64,
    latency: Histogram<u64>,
}

impl Tally {
    fn new() -> io::Result<Tally> {
        // Fixed bounds rather than an auto-resizing histogram: hdrhistogram's
        // `saturating_record` never resizes, and clamps anything above the bounds it was
        // created with (for `Histogram::new`, about 2 ms) to a meaningless value.
        let latency = Histogram::new_with_bounds(1, LATENCY_CEILING_US, LATENCY_SIGFIG)
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Tally {
            messages: 0,
            mismatches: 0,
            timeouts: 0,
            connection_errors: 0,
            latency,
        })
    }

    fn count(&mut self, failure: &Failure) {
        match failure {
            Failure::Mismatch => self.mismatches += 1,
            Failure::Timeout => self.timeouts += 1,
            Failure::Connection(_) => self.connection_errors += 1,
        }
    }

    fn errors(&self) -> u64 {
        self.mismatches + self.timeouts + self.connection_errors
    }

    /// Adds another engine's counts and latencies to these.
    fn add(&mut self, other: &Tally) -> io::Result<()> {
        self.messages += other.messages;
        self.mismatches += other.mismatches;
        self.timeouts += other.timeouts;
        self.connection_errors += other.connection_errors;
        self.latency
            .add(&other.latency)
            .map_err(|e| io::Error::other(format!("{e:?}")))
    }

    fn record_latency(&mut self, request: InFlight, answered_at: Instant) {
        let micros = answered_at
            .saturating_duration_since(request.sent_at)
            .as_micros();
        self.latency
            .saturating_record(u64::try_from(micros).unwrap_or(u64::MAX));
    }
}

/// What each client sends and must get back. Requests are a pure function of (client,
/// sequence number), so a request in flight is remembered by its number alone and its
/// expected reply rebuilt when the reply arrives, into buffers reused for every request.
#[derive(Debug)]
struct Script {
    size: usize,
    mode: Mode,
    greeting_line: Vec<u8>,
    request: Vec<u8>,
    reply: Vec<u8>,
}

/// Pads requests up to `size`.
const FILLER: u8 = b'.';

impl Script {
    fn new(options: &Options) -> Script {
        let mut greeting_line = options.greeting.clone();
        if !greeting_line.is_empty() {
            greeting_line.push(b'\n');
        }
        Script {
            size: options.size,
            mode: options.mode.clone(),
            greeting_line,
            request: Vec::with_capacity(options.size),
            reply: Vec::new(),
        }
    }

    /// Request `seq` of client `id`: exactly `size` bytes of printable ASCII, the client
    /// and sequence number first so that requests differ (unless `size` is too small to
    /// hold them), then filler. It starts with `c`, so it is never a newline and never
    /// `exit`.
    fn request(&mut self, id: usize, seq: u64) -> &[u8] {
        self.request.clear();
        // Writing to a Vec cannot fail.
        let _ = write!(self.request, "c{id}s{seq}");
        self.request.resize(self.size, FILLER);
        &self.request
    }

    /// The exact bytes a line-framed TCP server answers request `seq` of client `id` with.
    fn tcp_reply(&mut self, id: usize, seq: u64) -> &[u8] {
        self.request(id, seq);
        self.reply.clear();
        self.mode.reply(&self.request, &mut self.reply);
        self.reply.push(b'\n');
        &self.reply
    }

    /// The exact datagram a UDP server answers request `seq` of client `id` with.
    fn udp_reply(&mut self, id: usize, seq: u64) -> &[u8] {
        self.request(id, seq);
        self.reply.clear();
        protocol::udp_reply(&self.mode, &self.request, &mut self.reply);
        &self.reply
    }
}

/// How bytes received so far compare with the bytes expected.
#[derive(Debug, PartialEq, Eq)]
enum Match {
    /// All of `expected` is at the front of the input.
    Complete,
    /// The input is a proper prefix of `expected`: wait for more.
    Partial,
    /// The input already differs.
    Wrong,
}

fn compare(input: &[u8], expected: &[u8]) -> Match {
    if input.len() >= expected.len() {
        if &input[..expected.len()] == expected {
            Match::Complete
        } else {
            Match::Wrong
        }
    } else if expected.starts_with(input) {
        Match::Partial
    } else {
        Match::Wrong
    }
}

/// A request sent and not yet answered.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    seq: u64,
    sent_at: Instant,
}

/// State every client shares, passed to each one as it handles an event.
struct Shared<'a> {
    options: &'a Options,
    /// For clients that change their interest as they go.
    registry: Registry,
    script: Script,
    read_buffer: Vec<u8>,
    tally: Tally,
    /// False while clients are setting up, and again once the load is over.
    sending: bool,
    /// Requests sent so far, checked against `options.messages`.
    issued: u64,
    /// Requests in flight over all clients.
    outstanding: usize,
    /// Clients still connecting or waiting for their greeting.
    setting_up: usize,
    /// When the last correct reply arrived (or the load began).
    last_reply: Instant,
    /// A request has timed out since `last_reply`.
    timed_out_since_reply: bool,
}

impl Shared<'_> {
    fn may_send(&self) -> bool {
        self.sending
            && self
                .options
                .messages
                .is_none_or(|limit| self.issued < limit)
    }

    fn count(&mut self, failure: &Failure) {
        if matches!(failure, Failure::Timeout) {
            self.timed_out_since_reply = true;
        }
        self.tally.count(failure);
    }

    /// The server has stopped answering: requests have timed out and nothing at all has
    /// come back for a whole `timeout`. TCP clients would all fail and end the run anyway,
    /// but UDP sockets would keep sending into the void, one timeout per request.
    fn server_stopped_answering(&self, now: Instant) -> bool {
        self.timed_out_since_reply
            && now.saturating_duration_since(self.last_reply) >= self.options.timeout
    }

    fn issue(&mut self, in_flight: &mut VecDeque<InFlight>, seq: u64, now: Instant) {
        in_flight.push_back(InFlight { seq, sent_at: now });
        self.issued += 1;
        self.outstanding += 1;
    }

    fn answered(&mut self, request: InFlight, now: Instant) {
        self.last_reply = now;
        self.timed_out_since_reply = false;
        self.outstanding -= 1;
        self.tally.messages += 1;
        self.tally.record_latency(request, now);
    }
}

/// One client, or the empty slot a failed one leaves. Slots are never reused, so a late
/// event for a closed client finds `Closed` and is ignored.
enum Client {
    Tcp(TcpClient),
    Udp(UdpClient),
    Closed,
}

impl Client {
    fn on_event(&mut self, id: usize, shared: &mut Shared, now: Instant) -> Result<(), Failure> {
        match self {
            Client::Tcp(tcp) => tcp.on_event(id, shared, now),
            Client::Udp(udp) => udp.on_event(id, shared, now),
            Client::Closed => Ok(()),
        }
    }

    /// Checks timeouts; a UDP socket that gave up on a lost datagram sends the next.
    fn on_tick(&mut self, id: usize, shared: &mut Shared, now: Instant) -> Result<(), Failure> {
        match self {
            Client::Tcp(tcp) => tcp.check_timeout(shared, now),
            Client::Udp(udp) => udp.on_tick(id, shared, now),
            Client::Closed => Ok(()),
        }
    }

    /// Fills the pipeline when the load begins: nothing else would wake a quiet client.
    fn start(&mut self, id: usize, shared: &mut Shared, now: Instant) -> Result<(), Failure> {
        match self {
            Client::Tcp(tcp) => tcp.send(id, shared, now),
            Client::Udp(udp) => udp.send(id, shared, now),
            Client::Closed => Ok(()),
        }
    }

    /// Opens client `token` (for TCP, starts a non-blocking connect) and registers it.
    fn open(options: &Options, token: Token, registry: &Registry) -> io::Result<Client> {
        Ok(match options.transport {
            Transport::Tcp => Client::Tcp(TcpClient::open(options.addr, token, registry)?),
            Transport::Udp => Client::Udp(UdpClient::open(options.addr, token, registry)?),
        })
    }

    fn is_setting_up(&self) -> bool {
        matches!(self, Client::Tcp(tcp) if tcp.phase != Phase::Ready)
    }

    fn in_flight(&self) -> usize {
        match self {
            Client::Tcp(tcp) => tcp.in_flight.len(),
            Client::Udp(udp) => udp.in_flight.len(),
            Client::Closed => 0,
        }
    }

    fn deregister(&mut self, registry: &Registry) {
        // The socket is closed when dropped right after; a failure here changes nothing.
        let _ = match self {
            Client::Tcp(tcp) => registry.deregister(&mut tcp.stream),
            Client::Udp(udp) => registry.deregister(&mut udp.socket),
            Client::Closed => Ok(()),
        };
    }
}

/// Where a TCP client is in its life; `Closed` is [`Client::Closed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The non-blocking connect has not completed.
    Connecting,
    /// Connected; the greeting has not fully arrived.
    Greeting,
    /// Sending requests and checking replies.
    Ready,
}

/// One TCP connection.
///
/// It is registered for readable and writable readiness once, and never reregistered:
/// Linux reports a TCP socket writable again only after a write found its send buffer
/// full, so the writable interest costs nothing until the one moment it is needed.
struct TcpClient {
    stream: TcpStream,
    phase: Phase,
    /// When `phase` began; a setup phase lasting `timeout` fails the client.
    phase_since: Instant,
    in_flight: VecDeque<InFlight>,
    next_seq: u64,
    /// Bytes received and not yet matched. Between reads it holds only the start of a
    /// reply (or the greeting) that has not fully arrived: anything longer that does not
    /// match is a mismatch at once, so a misbehaving server cannot make it grow.
    input: Vec<u8>,
    /// Requests queued and not yet accepted by the kernel, from `written` on.
    output: Vec<u8>,
    written: usize,
}

impl TcpClient {
    fn open(addr: SocketAddr, token: Token, registry: &Registry) -> io::Result<TcpClient> {
        let mut tcp = TcpClient {
            stream: TcpStream::connect(addr)?,
            phase: Phase::Connecting,
            phase_since: Instant::now(),
            in_flight: VecDeque::new(),
            next_seq: 0,
            input: Vec::new(),
            output: Vec::new(),
            written: 0,
        };
        registry.register(
            &mut tcp.stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        Ok(tcp)
    }

    fn on_event(&mut self, id: usize, shared: &mut Shared, now: Instant) -> Result<(), Failure> {
        if self.phase == Phase::Connecting && !self.finish_connect(shared, now)? {
            return Ok(());
        }
        self.receive(id, shared, now)?;
        self.send(id, shared, now)
    }

    /// The readiness dance mio documents for a non-blocking connect: an error, or a peer
    /// address once the handshake is done. Returns whether it is done.
    fn finish_connect(&mut self, shared: &mut Shared, now: Instant) -> Result<bool, Failure> {
        match self.stream.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => return Err(Failure::Connection(e)),
        }
        match self.stream.peer_addr() {
            Ok(_) => {}
            Err(e)
                if e.kind() == io::ErrorKind::NotConnected
                    || e.raw_os_error() == Some(libc::EINPROGRESS) =>
            {
                return Ok(false)
            }
            Err(e) => return Err(Failure::Connection(e)),
        }
        // Requests are small and latency is the point: Nagle would hold back a request
        // while an earlier one is unacknowledged.
        self.stream.set_nodelay(true).map_err(Failure::Connection)?;
        if shared.script.greeting_line.is_empty() {
            self.become_ready(shared);
        } else {
            self.phase = Phase::Greeting;
            self.phase_since = now;
        }
        Ok(true)
    }

    fn become_ready(&mut self, shared: &mut Shared) {
        self.phase = Phase::Ready;
        shared.setting_up -= 1;
    }

    /// Reads until WouldBlock, as edge-triggered readiness requires, checking as it goes.
    fn receive(&mut self, id: usize, shared: &mut Shared, now: Instant) -> Result<(), Failure> {
        loop {
            match self.stream.read(&mut shared.read_buffer) {
                Ok(0) => {
                    return Err(Failure::Connection(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    )))
                }
                Ok(n) => {
                    self.input.extend_from_slice(&shared.read_buffer[..n]);
                    self.check_input(id, shared, now)?;
                    // A read that did not fill the buffer emptied the socket: where the
                    // kernel says so (see `net::SHORT_READ_DRAINS`), skip the read that
                    // would only return WouldBlock, a third of the syscalls in lockstep.
                    if crate::net::SHORT_READ_DRAINS && n < shared.read_buffer.len() {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Failure::Connection(e)),
            }
        }
    }

    /// Matches the input against the greeting, then against each request in flight in
    /// order, keeping the unfinished tail of the last one.
    fn check_input(&mut self, id: usize, shared: &mut Shared, now: Instant) -> Result<(), Failure> {
        let mut consumed = 0;
        while consumed < self.input.len() {
            let input = &self.input[consumed..];
            let expected = match self.phase {
                Phase::Greeting => shared.script.greeting_line.as_slice(),
                _ => match self.in_flight.front() {
                    Some(request) => shared.script.tcp_reply(id, request.seq),
                    // Bytes when no reply is owed: the server is not speaking the protocol.
                    None => return Err(Failure::Mismatch),
                },
            };
            match compare(input, expected) {
                Match::Wrong => return Err(Failure::Mismatch),
                Match::Partial => break,
                Match::Complete => consumed += expected.len(),
            }
            if self.phase == Phase::Greeting {
                self.become_ready(shared);
            } else if let Some(request) = self.in_flight.pop_front() {
                shared.answered(request, now);
            }
        }
        self.input.drain(..consumed);
        Ok(())
    }

    /// Tops the pipeline up and writes until done or WouldBlock.
    fn send(&mut self, id: usize, shared: &mut Shared, now: Instant) -> Result<(), Failure> {
        if self.phase != Phase::Ready {
            return Ok(());
        }
        while self.in_flight.len() < shared.options.pipeline && shared.may_send() {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.output
                .extend_from_slice(shared.script.request(id, seq));
            self.output.push(b'\n');
            shared.issue(&mut self.in_flight, seq, now);
        }
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return Err(Failure::Connection(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.written += n,
                // The rest goes when the writable event comes.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Failure::Connection(e)),
            }
        }
        self.output.clear();
        self.written = 0;
        Ok(())
    }

    /// On a byte stream a missing reply puts every later one out of step, so the first
    /// timeout fails the whole connection.
    fn check_timeout(&self, shared: &Shared, now: Instant) -> Result<(), Failure> {
        let timeout = shared.options.timeout;
        let started = match self.phase {
            Phase::Connecting | Phase::Greeting => self.phase_since,
            Phase::Ready => match self.in_flight.front() {
                Some(request) => request.sent_at,
                None => return Ok(()),
            },
        };
        if now.saturating_duration_since(started) < timeout {
            return Ok(());
        }
        Err(match self.phase {
            Phase::Connecting => {
                Failure::Connection(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
            }
            _ => Failure::Timeout,
        })
    }
}

/// One connected UDP socket. Datagrams can be lost, so each request in flight times out
/// on its own, is counted, and frees its place in the pipeline for the next request.
///
/// It is registered for readable readiness only. The kernel reports a UDP socket writable
/// again each time the buffer of a datagram it sent is freed, which in a lockstep run is
/// one extra wakeup (and one wasted `recv`) per request; so writable interest is added
/// only while a send is blocked, and dropped once sends go through again.
struct UdpClient {
    socket: UdpSocket,
    token: Token,
    in_flight: VecDeque<InFlight>,
    next_seq: u64,
    /// Registered for writable readiness too, because a send would have blocked.
    awaiting_writable: bool,
}

impl UdpClient {
    fn open(addr: SocketAddr, token: Token, registry: &Registry) -> io::Result<UdpClient> {
        let any: SocketAddr = if addr.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let socket = UdpSocket::bind(any)?;
        // Connected: the kernel drops datagrams from anyone else, and a closed port comes
        // back as ECONNREFUSED instead of silence.
        socket.connect(addr)?;
        let mut udp = UdpClient {
            socket,
            token,
            in_flight: VecDeque::new(),
            next_seq: 0,
            awaiting_writable: false,
        };
        registry.register(&mut udp.socket, token, Interest::READABLE)?;
        Ok(udp)
    }

    fn on_event(&mut self, id: usize, shared: &mut Shared, now: Instant) -> Result<(), Failure> {
        loop {
            match self.socket.recv(&mut shared.read_buffer) {
                Ok(n) => {
                    let Shared {
                        read_buffer,
                        script,
                        ..
                    } = shared;
                    match self.take_request_answered_by(&read_buffer[..n], id, script) {
                        Some(request) => shared.answered(request, now),
                        // No request in flight expects this datagram: a wrong reply, or one
                        // so late that its request already counted as a timeout.
                        None => shared.count(&Failure::Mismatch),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Failure::Connection(e)),
            }
        }
        self.send(id, shared, now)
    }

    /// Finds the request `datagram` answers. Usually the oldest; after a loss it is a later
    /// one, and the lost request stays until it times out.
    fn take_request_answered_by(
        &mut self,
        datagram: &[u8],
        id: usize,
        script: &mut Script,
    ) -> Option<InFlight> {
        let position = self
            .in_flight
            .iter()
            .position(|request| script.udp_reply(id, request.seq) == datagram)?;
        self.in_flight.remove(position)
    }

    fn send(&mut self, id: usize, shared: &mut Shared, now: Instant) -> Result<(), Failure> {
        let mut blocked = false;
        while self.in_flight.len() < shared.options.pipeline && shared.may_send() {
            let seq = self.next_seq;
            match self.socket.send(shared.script.request(id, seq)) {
                Ok(_) => {
                    self.next_seq += 1;
                    shared.issue(&mut self.in_flight, seq, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Failure::Connection(e)),
            }
        }
        if blocked != self.awaiting_writable {
            let interest = if blocked {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            shared
                .registry
                .reregister(&mut self.socket, self.token, interest)
                .map_err(Failure::Connection)?;
            self.awaiting_writable = blocked;
        }
        Ok(())
    }

    fn on_tick(&mut self, id: usize, shared: &mut Shared, now: Instant) -> Result<(), Failure> {
        // Requests are sent in order, so the oldest is at the front.
        while let Some(request) = self.in_flight.front() {
            if now.saturating_duration_since(request.sent_at) < shared.options.timeout {
                break;
            }
            self.in_flight.pop_front();
            shared.outstanding -= 1;
            shared.count(&Failure::Timeout);
        }
        self.send(id, shared, now)
    }
}

/// The poll loop and the clients it drives.
struct Engine<'a> {
    poll: Poll,
    events: Events,
    /// Indexed by token: client `i` is registered as `Token(i)`.
    clients: Vec<Client>,
    shared: Shared<'a>,
    /// Clients not closed.
    live: usize,
    /// Open clients [`MAX_SETUPS_IN_FLIGHT`] at a time (over all engines). Turned off by the
    /// first failed setup: a server that is not keeping up gains nothing from the batching,
    /// and a silent one would otherwise make the user wait `timeout` once per batch.
    batch_setups: bool,
    /// Tokens of the events of the last poll, kept to reuse its allocation.
    ready: Vec<usize>,
}

impl<'a> Engine<'a> {
    fn new(options: &'a Options) -> io::Result<Engine<'a>> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        Ok(Engine {
            poll,
            events: Events::with_capacity(EVENTS_CAPACITY),
            clients: Vec::with_capacity(options.connections),
            shared: Shared {
                options,
                registry,
                script: Script::new(options),
                read_buffer: vec![0; READ_BUFFER],
                tally: Tally::new()?,
                sending: false,
                issued: 0,
                outstanding: 0,
                setting_up: 0,
                last_reply: Instant::now(),
                timed_out_since_reply: false,
            },
            live: 0,
            batch_setups: true,
            ready: Vec::with_capacity(EVENTS_CAPACITY),
        })
    }

    /// Opens clients until all are open or, while batching, this engine's share of
    /// [`MAX_SETUPS_IN_FLIGHT`] are being set up.
    fn open_more(&mut self) {
        let options = self.shared.options;
        // The engines set up side by side, so they share the bound between them.
        let max_setups = (MAX_SETUPS_IN_FLIGHT / options.threads).max(1);
        while self.clients.len() < options.connections
            && (!self.batch_setups || self.shared.setting_up < max_setups)
        {
            let id = self.clients.len();
            match Client::open(options, Token(id), self.poll.registry()) {
                Ok(client) => {
                    self.live += 1;
                    if client.is_setting_up() {
                        self.shared.setting_up += 1;
                    }
                    self.clients.push(client);
                }
                Err(e) => {
                    // Out of descriptors or ports, typically: the same story for every
                    // client after this one, so say it once, loudly.
                    if self.shared.tally.connection_errors == 0 {
                        log::warn!("client {id}: cannot open a socket: {e}");
                    }
                    self.shared.count(&Failure::Connection(e));
                    self.clients.push(Client::Closed);
                }
            }
        }
    }

    /// Opens every client and waits until each has connected and been greeted, or failed
    /// to within `timeout` of its own connect. Takes at most about twice `timeout`: one for
    /// the batch in which a client first fails, one for everyone opened after that.
    fn set_up(&mut self) -> io::Result<()> {
        let connections = self.shared.options.connections;
        let mut next_sweep = Instant::now() + SWEEP_INTERVAL;
        loop {
            self.open_more();
            if self.shared.setting_up == 0 && self.clients.len() == connections {
                return Ok(());
            }
            self.poll_once(next_sweep)?;
            let now = Instant::now();
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP_INTERVAL;
            }
        }
    }

    /// Sends and checks until the duration is over, the message count is settled, or no
    /// client is left.
    fn load(&mut self, started: Instant, progress: &mut impl FnMut(&Progress)) -> io::Result<()> {
        let options = self.shared.options;
        let end = options.duration.map(|duration| started + duration);
        self.shared.sending = true;
        self.shared.last_reply = started;
        self.shared.timed_out_since_reply = false;
        for id in 0..self.clients.len() {
            let result = self.clients[id].start(id, &mut self.shared, Instant::now());
            self.settle(id, result);
        }
        let mut next_sweep = started + SWEEP_INTERVAL;
        loop {
            let now = Instant::now();
            let all_settled = options
                .messages
                .is_some_and(|limit| self.shared.issued >= limit && self.shared.outstanding == 0);
            if self.live == 0 || all_settled || end.is_some_and(|end| now >= end) {
                break;
            }
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP_INTERVAL;
                if self.shared.server_stopped_answering(now) {
                    log::warn!(
                        "no reply for {:?} and requests timing out: ending the run",
                        options.timeout
                    );
                    break;
                }
                progress(&Progress {
                    elapsed: now - started,
                    messages: self.shared.tally.messages,
                    errors: self.shared.tally.errors(),
                });
                continue;
            }
            let wake = end.map_or(next_sweep, |end| end.min(next_sweep));
            self.poll_once(wake)?;
        }
        self.shared.sending = false;
        Ok(())
    }

    /// Waits for events until `wake` at the latest, and lets each client handle its own.
    fn poll_once(&mut self, wake: Instant) -> io::Result<()> {
        let timeout = wake.saturating_duration_since(Instant::now());
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        // Tokens are copied out first: handling an event needs `self` mutably.
        self.ready.clear();
        self.ready
            .extend(self.events.iter().map(|event| event.token().0));
        for index in 0..self.ready.len() {
            let id = self.ready[index];
            // The clock is read per event, not per batch, so a reply's latency does not
            // depend on how many other events came back with it.
            let now = Instant::now();
            if let Some(client) = self.clients.get_mut(id) {
                let result = client.on_event(id, &mut self.shared, now);
                self.settle(id, result);
            }
        }
        Ok(())
    }

    /// Checks every client's timeouts.
    fn sweep(&mut self, now: Instant) {
        for id in 0..self.clients.len() {
            let result = self.clients[id].on_tick(id, &mut self.shared, now);
            self.settle(id, result);
        }
    }

    /// The one place a failure is counted and a client closed.
    fn settle(&mut self, id: usize, result: Result<(), Failure>) {
        let Err(failure) = result else {
            return;
        };
        log::debug!("client {id}: {failure}");
        self.shared.count(&failure);
        let mut client = std::mem::replace(&mut self.clients[id], Client::Closed);
        if client.is_setting_up() {
            self.shared.setting_up -= 1;
            self.batch_setups = false;
        }
        // Requests queued behind the failure are abandoned with the connection.
        self.shared.outstanding -= client.in_flight();
        client.deregister(self.poll.registry());
        self.live -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(size: usize, mode: Mode) -> Script {
        Script::new(&Options {
            size,
            mode,
            ..Options::default()
        })
    }

    #[test]
    fn requests_have_the_exact_size_and_are_safe_to_send() {
        for size in [0, 1, 3, 4, 16, 100] {
            let mut script = script(size, Mode::Hello);
            for (id, seq) in [(0, 0), (7, 12345), (99_999, u64::MAX)] {
                let request = script.request(id, seq).to_vec();
                assert_eq!(request.len(), size);
                assert!(request.iter().all(|b| b.is_ascii_graphic()), "{request:?}");
                assert_ne!(request, b"exit");
            }
        }
    }

    #[test]
    fn requests_differ_when_there_is_room() {
        let mut script = script(16, Mode::Echo);
        let a = script.request(1, 2).to_vec();
        let b = script.request(1, 3).to_vec();
        let c = script.request(12, 2).to_vec();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, b"c1s2............");
    }

    #[test]
    fn expected_replies_follow_the_protocol() {
        let mut hello = script(6, Mode::Hello);
        assert_eq!(hello.tcp_reply(1, 2), b"Hello, c1s2..!\n");
        assert_eq!(hello.udp_reply(1, 2), b"Hello, c1s2..!");
        let mut echo = script(6, Mode::Echo);
        assert_eq!(echo.tcp_reply(1, 2), b"c1s2..\n");
        assert_eq!(echo.udp_reply(1, 2), b"c1s2..");
    }

    #[test]
    fn greeting_line_is_empty_when_no_greeting_is_expected() {
        let none = Script::new(&Options {
            greeting: Vec::new(),
            ..Options::default()
        });
        assert!(none.greeting_line.is_empty());
        assert_eq!(
            Script::new(&Options::default()).greeting_line,
            b"Welcome!\n"
        );
    }

    #[test]
    fn compare_spots_a_wrong_byte_before_the_reply_is_complete() {
        assert_eq!(compare(b"Hel", b"Hello\n"), Match::Partial);
        assert_eq!(compare(b"", b"Hello\n"), Match::Partial);
        assert_eq!(compare(b"Hex", b"Hello\n"), Match::Wrong);
        assert_eq!(compare(b"Hello\n", b"Hello\n"), Match::Complete);
        assert_eq!(compare(b"Hello\nHel", b"Hello\n"), Match::Complete);
        assert_eq!(compare(b"Hellx\n", b"Hello\n"), Match::Wrong);
    }

    #[test]
    fn options_that_could_never_end_are_refused() {
        assert!(Options::default().validate().is_ok());
        let endless = Options {
            duration: None,
            messages: None,
            ..Options::default()
        };
        assert!(endless.validate().is_err());
        let huge_udp = Options {
            transport: Transport::Udp,
            size: MAX_UDP_SIZE + 1,
            ..Options::default()
        };
        assert!(huge_udp.validate().is_err());
        for bad in [
            Options {
                connections: 0,
                ..Options::default()
            },
            Options {
                pipeline: 0,
                ..Options::default()
            },
            Options {
                timeout: Duration::ZERO,
                ..Options::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn latencies_keep_their_value_from_microseconds_to_minutes() {
        let mut tally = Tally::new().unwrap();
        let sent_at = Instant::now();
        for micros in [3, 2_500, 150_000, 90_000_000] {
            let request = InFlight { seq: 0, sent_at };
            tally.record_latency(request, sent_at + Duration::from_micros(micros));
            let recorded = tally.latency.max();
            assert!(
                tally.latency.equivalent(recorded, micros),
                "{micros} µs recorded as {recorded}"
            );
        }
    }

    #[test]
    fn an_empty_report_is_valid_json_with_zeros() {
        let report = Report {
            messages: 0,
            duration: Duration::ZERO,
            connections: 3,
            connected: 0,
            mismatches: 1,
            timeouts: 2,
            connection_errors: 3,
            latency: Tally::new().unwrap().latency,
            client_cpu: Duration::ZERO,
        };
        let json = report.to_json();
        assert!(json.starts_with('{') && json.ends_with('}'), "{json}");
        assert!(!json.contains("NaN") && !json.contains("inf"), "{json}");
        assert!(json.contains("\"msgs_per_sec\":0.0,"), "{json}");
        assert!(json.contains("\"errors\":6,"), "{json}");
        assert!(json.contains("\"p99_us\":0,"), "{json}");
    }
}
