//! What the bench measures: one row (a fresh server under loadgen, its CPU time, peak
//! memory and threads read from `/proc`), the idle test (resident memory per idle
//! connection), and the machine it all ran on.

use std::fs;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use harness::measure::{bytes_per_connection, cpu_us_per_message, CpuTicks, LoadReport};
use harness::procfs;

use crate::plan::{ServerSpec, Settings, Workload};
use crate::processes::{last_line, run_loadgen, start_server};
use crate::table::thousands;

/// The greeting every server sends.
const GREETING: &[u8] = b"Welcome!\n";

/// Idle test: connections opened at a time before their greetings are read. Well under the
/// servers' 4,096 backlog, so no SYN is dropped and retransmitted a second later.
const IDLE_BATCH: usize = 500;

/// Idle test: how long one connect or one greeting may take.
const IDLE_IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle test: the most all connections together may take to set up.
const IDLE_SETUP_LIMIT: Duration = Duration::from_secs(60);

/// Idle test: pause before reading RSS, so memory the server allocates just after the
/// greeting (buffers, slab growth) is counted.
const IDLE_SETTLE: Duration = Duration::from_millis(500);

/// Descriptors this process keeps for itself beyond the idle connections.
const SPARE_FDS: u64 = 64;

/// How long the bench watches the idle machine before it starts.
const BUSY_SAMPLE: Duration = Duration::from_secs(1);

/// One run of one (server, workload) row.
pub struct Row {
    pub server: &'static str,
    pub workload: &'static Workload,
    /// Which round of `EVLOOP_BENCH_REPEATS`, from 1.
    pub round: usize,
    pub outcome: Result<Measured, String>,
}

/// What a row measured when loadgen ran to the end.
pub struct Measured {
    pub report: LoadReport,
    /// Server CPU time over the loadgen run.
    pub server_cpu: Duration,
    /// Wall time of the loadgen run, set-up included.
    pub wall: Duration,
    pub peak_rss: u64,
    pub threads: u64,
}

impl Measured {
    pub fn cpu_us_per_msg(&self) -> Option<f64> {
        cpu_us_per_message(self.server_cpu, self.report.messages)
    }

    /// The server's average CPU use over the run, in cores (1.0 = one core all the time).
    pub fn server_cores(&self) -> f64 {
        self.server_cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }

    /// loadgen's, over its load phase, if it reported it.
    pub fn loadgen_cores(&self) -> Option<f64> {
        let r = &self.report;
        r.client_cpu_s
            .filter(|_| r.duration_s > 0.0)
            .map(|cpu| cpu / r.duration_s)
    }
}

impl Row {
    pub fn status(&self) -> String {
        match &self.outcome {
            Err(why) => format!("failed: {why}"),
            Ok(m) if m.report.errors > 0.0 => format!("{} errors", m.report.errors),
            Ok(_) => "ok".into(),
        }
    }

    pub fn summary(&self) -> String {
        match &self.outcome {
            Ok(m) => format!(
                "{} msgs/s, p99 {} µs, {}",
                thousands(m.report.msgs_per_sec),
                thousands(m.report.p99_us),
                self.status()
            ),
            Err(_) => self.status(),
        }
    }
}

pub fn run_row(
    spec: &ServerSpec,
    workload: &'static Workload,
    round: usize,
    settings: &Settings,
) -> Row {
    Row {
        server: spec.name,
        workload,
        round,
        outcome: measure(spec, workload, round, settings),
    }
}

/// How far above its level at the bench's start the host's TCP memory may be when a run
/// starts: 10 MiB of 4 KiB pages.
const SETTLED_PAGES: u64 = 2_560;

/// The longest a run waits for the previous one's TCP memory to be freed.
const SETTLE_CEILING: Duration = Duration::from_secs(60);

/// Waits until the host's TCP memory is back near its level when the bench started (Linux;
/// elsewhere there is nothing to read and nothing to wait for). An attack row leaves the
/// kernel freeing a gigabyte of socket buffers for a while after its server exits; the next
/// server to start meanwhile met the host's `tcp_mem` pressure, where the kernel drops
/// segments for every socket, and its honest clients timed out for what the previous row
/// did.
fn settle_tcp_memory() {
    static AT_START: OnceLock<Option<u64>> = OnceLock::new();
    let Some(at_start) = *AT_START.get_or_init(|| procfs::tcp_memory().ok().map(|(mem, _)| mem))
    else {
        return;
    };
    let started = Instant::now();
    while let Ok((mem, orphans)) = procfs::tcp_memory() {
        if mem <= at_start + SETTLED_PAGES && orphans == 0 {
            return;
        }
        if started.elapsed() > SETTLE_CEILING {
            eprintln!("the host's TCP memory is still at {mem} pages ({orphans} orphaned sockets) after {SETTLE_CEILING:?}; running anyway");
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Starts a fresh server, once the previous run's TCP memory is freed, runs loadgen against
/// it and reads the server's costs.
fn measure(
    spec: &ServerSpec,
    workload: &Workload,
    round: usize,
    settings: &Settings,
) -> Result<Measured, String> {
    let stem = format!(
        "{}-{}{}",
        spec.name,
        workload.name,
        settings.round_suffix(round)
    );
    let server_log = settings.logs().join(format!("{stem}.server.log"));
    let tls = settings.certificate.as_ref().filter(|_| workload.tls);
    settle_tcp_memory();
    let mut server = start_server(spec, &server_log, settings.server_cpus(), tls)
        .map_err(|e| format!("server: {e}"))?;
    let pid = server.child.pid();
    let addr = if workload.udp {
        server.udp.ok_or("server has no UDP")?
    } else {
        server.tcp
    };
    let cpu_before = from_proc(procfs::cpu_time(pid), pid)?;
    let mut threads = 0;
    // The thread count is sampled throughout because the threaded server's peak is while
    // connections are open; it drops as loadgen closes them.
    let run = run_loadgen(addr, workload, settings, &stem, || {
        threads = threads.max(procfs::threads(pid).unwrap_or(0));
    })?;
    if let Some(status) = server.child.exited() {
        return Err(format!(
            "server exited ({status}): {}",
            last_line(&server_log)
        ));
    }
    let server_cpu = from_proc(procfs::cpu_time(pid), pid)? - cpu_before;
    let peak_rss = from_proc(procfs::peak_rss(pid), pid)?;

    let json = fs::read_to_string(&run.json).unwrap_or_default();
    // A missing or unreadable report means loadgen failed; the last line of its log says why.
    let report = LoadReport::parse(&json).map_err(|_| {
        format!(
            "loadgen ({}) printed no report: {}",
            run.status,
            last_line(&run.log)
        )
    })?;
    Ok(Measured {
        report,
        server_cpu,
        wall: run.wall,
        peak_rss,
        threads,
    })
}

/// The idle test for one server.
pub struct IdleRow {
    pub server: &'static str,
    pub outcome: Result<IdleMeasured, String>,
}

pub struct IdleMeasured {
    pub asked: usize,
    pub established: usize,
    pub rss_before: u64,
    pub rss_after: u64,
    pub threads: u64,
    pub setup: Duration,
    /// Why fewer than `asked` connections were established.
    pub shortfall: Option<String>,
}

impl IdleMeasured {
    pub fn per_connection(&self) -> f64 {
        bytes_per_connection(self.rss_before, self.rss_after, self.established)
    }
}

pub fn idle_rows(settings: &Settings) -> Vec<IdleRow> {
    let mut asked = settings.idle;
    match evloop::net::raise_fd_limit() {
        Ok((soft, _)) if (asked as u64) + SPARE_FDS > soft => {
            let fitted = soft.saturating_sub(SPARE_FDS) as usize;
            eprintln!("idle: {asked} connections do not fit the descriptor limit {soft}; holding {fitted}");
            asked = fitted;
        }
        Ok(_) => {}
        Err(e) => eprintln!("idle: cannot read the descriptor limit: {e}"),
    }
    settings
        .servers
        .iter()
        .map(|spec| {
            eprint!("idle: {} with {asked} connections ... ", spec.name);
            let row = IdleRow {
                server: spec.name,
                outcome: measure_idle(spec, asked, settings),
            };
            match &row.outcome {
                Ok(m) => eprintln!("{:.2} KiB per connection", m.per_connection() / 1024.0),
                Err(e) => eprintln!("failed: {e}"),
            }
            row
        })
        .collect()
}

/// A reading of the server process from `/proc`. On Linux a failure is the row's failure;
/// where there is no `/proc` (macOS, the BSDs, Windows) the reading is 0 and the bench says
/// once, on stderr, what it could not measure.
fn from_proc<T: Default>(reading: io::Result<T>, pid: u32) -> Result<T, String> {
    static SAID: std::sync::Once = std::sync::Once::new();
    match reading {
        Ok(value) => Ok(value),
        Err(e) if cfg!(target_os = "linux") => Err(format!("reading /proc/{pid}: {e}")),
        Err(e) => {
            SAID.call_once(|| {
                eprintln!(
                    "not measured on this platform, shown as 0: server CPU, memory and threads ({e})"
                )
            });
            Ok(T::default())
        }
    }
}

fn measure_idle(
    spec: &ServerSpec,
    asked: usize,
    settings: &Settings,
) -> Result<IdleMeasured, String> {
    let log = settings
        .logs()
        .join(format!("{}-idle.server.log", spec.name));
    let mut server = start_server(spec, &log, settings.server_cpus(), None)
        .map_err(|e| format!("server: {e}"))?;
    let pid = server.child.pid();
    thread::sleep(IDLE_SETTLE);
    let rss_before = from_proc(procfs::rss(pid), pid)?;
    let started = Instant::now();
    let (connections, shortfall) = open_idle(server.tcp, asked);
    let setup = started.elapsed();
    thread::sleep(IDLE_SETTLE);
    if let Some(status) = server.child.exited() {
        return Err(format!("server exited ({status}): {}", last_line(&log)));
    }
    let measured = IdleMeasured {
        asked,
        established: connections.len(),
        rss_before,
        rss_after: from_proc(procfs::rss(pid), pid)?,
        threads: from_proc(procfs::threads(pid), pid)?,
        setup,
        shortfall,
    };
    // The server goes first, so it is the one left holding TIME_WAIT, not our port range.
    drop(server);
    drop(connections);
    Ok(measured)
}

/// Opens up to `count` connections to `addr`, in batches, reading each one's greeting so
/// that every connection returned is established and accepted by the server. Stops at the
/// first failure and says why.
fn open_idle(addr: SocketAddr, count: usize) -> (Vec<TcpStream>, Option<String>) {
    let deadline = Instant::now() + IDLE_SETUP_LIMIT;
    let mut streams: Vec<TcpStream> = Vec::with_capacity(count);
    while streams.len() < count {
        if Instant::now() > deadline {
            return (
                streams,
                Some(format!("set-up exceeded {IDLE_SETUP_LIMIT:?}")),
            );
        }
        let batch_start = streams.len();
        let batch_end = count.min(batch_start + IDLE_BATCH);
        for n in batch_start..batch_end {
            match TcpStream::connect_timeout(&addr, IDLE_IO_TIMEOUT) {
                Ok(stream) => streams.push(stream),
                Err(e) => {
                    streams.truncate(batch_start);
                    return (streams, Some(format!("connect #{}: {e}", n + 1)));
                }
            }
        }
        for (n, stream) in streams.iter_mut().enumerate().skip(batch_start) {
            if let Err(e) = read_greeting(stream) {
                streams.truncate(batch_start);
                return (streams, Some(format!("greeting #{}: {e}", n + 1)));
            }
        }
    }
    (streams, None)
}

fn read_greeting(stream: &mut TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_IO_TIMEOUT))?;
    let mut greeting = [0u8; GREETING.len()];
    stream.read_exact(&mut greeting)?;
    if greeting != GREETING {
        return Err(io::Error::other(format!(
            "got {:?}",
            String::from_utf8_lossy(&greeting)
        )));
    }
    Ok(())
}

/// CPU count, model and kernel, and how busy the machine already is: on a shared 2-core
/// machine that explains more variance than anything else.
pub fn machine_description() -> String {
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let read = |path: &str| {
        fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into())
    };
    let kernel = read("/proc/sys/kernel/osrelease");
    let load: String = read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let busy = match cpu_busy_share(BUSY_SAMPLE) {
        Some(share) => format!("{:.0}%", share * 100.0),
        None => "?".into(),
    };
    format!(
        "Machine: {cpus} CPUs, {model}, Linux {kernel}; at start load average {load}, \
         CPUs {busy} busy over {BUSY_SAMPLE:?}"
    )
}

/// The share of all CPU time that was not idle over `window`, from `/proc/stat`. The load
/// average alone misleads here: it decays over minutes, so right after a run of the
/// threaded server it still counts that server's thousands of threads.
fn cpu_busy_share(window: Duration) -> Option<f64> {
    let sample = || CpuTicks::parse(&fs::read_to_string("/proc/stat").ok()?);
    let before = sample()?;
    thread::sleep(window);
    sample()?.busy_since(&before)
}
