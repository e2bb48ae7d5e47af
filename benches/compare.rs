//! `cargo bench --bench compare`: the reactor against a thread per connection (and against
//! the reactor on two threads, and a tokio server), under the same load.
//!
//! # What it measures
//!
//! Every server runs as a child process of its own on a free port. For each (server,
//! workload) row a fresh server is started, the `loadgen` binary drives it for
//! `EVLOOP_BENCH_SECS` seconds, and the bench reads from the server's `/proc` entry. By
//! default the servers run on one half of the CPUs and loadgen on the other (see
//! [`Pinning`] for why), so every server has the same CPUs to itself.
//!
//!
//! * **msgs/s, p50, p99**: correct replies per second and their latency, as loadgen reports
//!   them (loadgen checks every reply byte for byte; a wrong one is an error, not
//!   throughput).
//! * **errors**: loadgen's count of mismatches, timeouts and connection errors. Anything but
//!   0 means the row is suspect; the status column says so.
//! * **CPU µs/msg**: the server's user + system CPU time over the whole loadgen run, divided
//!   by the replies. It includes setting the connections up (accept and greeting), which
//!   matters only in the 5,000-connection row. This is the figure that says what a design
//!   costs. msgs/s is bounded by loadgen as much as by the server: loadgen spends about as
//!   much CPU per message as a lean server, almost all of it in the kernel.
//! * **peak RSS**: the server's high-water resident memory (VmHWM) at the end of the row.
//! * **threads**: the most threads the server had while loadgen ran.
//! * **server CPU, loadgen CPU**: each one's CPU time over the run as a share of one core.
//!   The one near 100% of its CPUs is the bottleneck; when neither is, something else had
//!   the CPU (or the run is latency-bound, as with one lockstep connection), and msgs/s
//!   understates what the server can do. CPU µs/msg is the steadier figure.
//! * **vs threaded**: this server's msgs/s and CPU µs/msg divided by the threaded server's in
//!   the same workload and round. Above 1 is faster for msgs/s; below 1 is cheaper for CPU.
//!
//! With `EVLOOP_BENCH_REPEATS` above 1 every row runs that many rounds, and the printed
//! table shows medians: of each figure, and of each round's own ratio to the baseline.
//!
//! The idle test then holds `EVLOOP_BENCH_IDLE` TCP connections open against each server
//! (opened by this process, each reads its greeting and then sends nothing) and reports the
//! server's resident memory growth per connection. Kernel memory (socket buffers) is not in
//! RSS, so this is what the server process itself spends to keep a client waiting.
//!
//! # Output
//!
//! A markdown table on stdout (and the idle table), `target/bench/results.csv`,
//! `target/bench/idle.csv`, and two charts of the lockstep rows, `target/bench/throughput.svg`
//! and `target/bench/latency.svg`. Each server's and loadgen's stderr and loadgen's JSON go
//! to `target/bench/logs/`, which is where to look when a row says `failed`. The CSV has
//! every round; the table and the charts show medians.
//!
//! # Knobs (environment variables)
//!
//! `EVLOOP_BENCH_SECS` (default 8) seconds of load per row; `EVLOOP_BENCH_REPEATS`
//! (default 1) rounds; `EVLOOP_BENCH_PIN` (default `auto`; `off`, or `SERVER/LOADGEN` CPU
//! lists such as `1/0`) where the children run; `EVLOOP_BENCH_IDLE` (default 10000, 0
//! skips the test) idle connections; `EVLOOP_BENCH_SERVERS` and `EVLOOP_BENCH_WORKLOADS`
//! comma-separated names to run only some rows (the names are printed in the table).
//! Command-line arguments are ignored (`cargo bench` passes `--bench`), except
//! `--serve-tokio ADDR`, which is how this binary runs the tokio server in a process of its
//! own.

mod chart;
mod tokio_server;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use evloop::procfs;

/// The first argument that makes this binary the tokio server instead of the bench.
const SERVE_TOKIO: &str = "--serve-tokio";

/// The address every server listens on: loopback only, port chosen by the kernel.
const LISTEN: &str = "127.0.0.1:0";

/// Passed to the servers as `--max-connections`: above the largest workload and the idle
/// test, so the limit (10,000 by default) is never what a row measures.
const MAX_CONNECTIONS: &str = "20000";

/// Seconds of load per row. 28 rows of 8 s, plus set-up and the idle test, take about four
/// minutes; shorter rows make the figures jumpier on a machine that is doing anything else.
const DEFAULT_SECS: f64 = 8.0;

/// How long a server may take to print its startup line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// loadgen's `--timeout`: a request unanswered this long is an error. Generous, so a slow
/// row shows up as high latency rather than as errors, yet short enough to end a row
/// against a server that has stopped answering.
const LOADGEN_TIMEOUT_SECS: u64 = 5;

/// How much longer than its `--duration` a loadgen run may take before it is killed: set-up
/// of 5,000 connections, and loadgen's own bound of about twice `--timeout` on a set-up
/// against a server that never answers.
const LOADGEN_GRACE: Duration = Duration::from_secs(3 * LOADGEN_TIMEOUT_SECS + 15);

/// How often the server's thread count is sampled during a row.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

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

/// The greeting every server sends.
const GREETING: &[u8] = b"Welcome!\n";

/// How a server is started.
#[derive(Clone, Copy)]
enum Program {
    Reactor,
    Threaded,
    /// This bench binary again, with `--serve-tokio`.
    Tokio,
}

struct ServerSpec {
    /// Name in the tables, the CSV, the charts and `EVLOOP_BENCH_SERVERS`.
    name: &'static str,
    program: Program,
    /// Flags beyond the address and the connection limit.
    extra_args: &'static [&'static str],
}

const SERVERS: [ServerSpec; 4] = [
    ServerSpec {
        name: "reactor",
        program: Program::Reactor,
        extra_args: &[],
    },
    ServerSpec {
        name: "threaded",
        program: Program::Threaded,
        extra_args: &[],
    },
    ServerSpec {
        name: "reactor-t2",
        program: Program::Reactor,
        extra_args: &["--threads", "2"],
    },
    ServerSpec {
        name: "tokio",
        program: Program::Tokio,
        extra_args: &[],
    },
];

/// The server every row is compared with.
const BASELINE: &str = "threaded";

struct Workload {
    /// Name in the tables, the CSV and `EVLOOP_BENCH_WORKLOADS`.
    name: &'static str,
    connections: usize,
    /// Requests in flight per connection; 1 is lockstep.
    pipeline: usize,
    udp: bool,
}

impl Workload {
    /// The rows drawn in the charts: TCP, one request at a time.
    fn is_lockstep_tcp(&self) -> bool {
        self.pipeline == 1 && !self.udp
    }
}

const fn lockstep(name: &'static str, connections: usize) -> Workload {
    Workload {
        name,
        connections,
        pipeline: 1,
        udp: false,
    }
}

const WORKLOADS: [Workload; 7] = [
    lockstep("tcp-1", 1),
    lockstep("tcp-10", 10),
    lockstep("tcp-100", 100),
    lockstep("tcp-1000", 1_000),
    lockstep("tcp-5000", 5_000),
    Workload {
        name: "pipeline-100x16",
        connections: 100,
        pipeline: 16,
        udp: false,
    },
    Workload {
        name: "udp-100",
        connections: 100,
        pipeline: 1,
        udp: true,
    },
];

fn main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some(SERVE_TOKIO) {
        serve_tokio(args.next());
        return;
    }
    let settings = Settings::from_env().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2);
    });
    if let Err(e) = run(&settings) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn serve_tokio(listen: Option<String>) {
    let listen = listen.as_deref().unwrap_or(LISTEN);
    let result = listen
        .parse()
        .map_err(|e| io::Error::other(format!("bad address {listen}: {e}")))
        .and_then(tokio_server::main);
    if let Err(e) = result {
        eprintln!("error: tokio server: {e}");
        std::process::exit(2);
    }
}

/// What to run, from the environment.
struct Settings {
    secs: f64,
    /// Rounds of every row; the printed table gives each row's median.
    repeats: usize,
    idle: usize,
    /// Where the servers and loadgen run; `None` leaves them to the scheduler.
    pinning: Option<Pinning>,
    servers: Vec<&'static ServerSpec>,
    workloads: Vec<&'static Workload>,
    out_dir: PathBuf,
}

impl Settings {
    fn from_env() -> Result<Settings, String> {
        let secs = match env_var("EVLOOP_BENCH_SECS") {
            None => DEFAULT_SECS,
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0)
                .ok_or_else(|| format!("EVLOOP_BENCH_SECS={v}: expected seconds > 0"))?,
        };
        let repeats = match env_var("EVLOOP_BENCH_REPEATS") {
            None => 1,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("EVLOOP_BENCH_REPEATS={v}: expected a count > 0"))?,
        };
        let idle = match env_var("EVLOOP_BENCH_IDLE") {
            None => 10_000,
            Some(v) => v
                .parse()
                .map_err(|_| format!("EVLOOP_BENCH_IDLE={v}: expected a number of connections"))?,
        };
        let servers = select("EVLOOP_BENCH_SERVERS", &SERVERS, |s| s.name)?;
        let workloads = select("EVLOOP_BENCH_WORKLOADS", &WORKLOADS, |w| w.name)?;
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
        };
        let pinning = Pinning::from_env()?;
        Ok(Settings {
            secs,
            repeats,
            idle,
            pinning,
            servers,
            workloads,
            out_dir: target.join("bench"),
        })
    }

    fn logs(&self) -> PathBuf {
        self.out_dir.join("logs")
    }

    fn describe_pinning(&self) -> String {
        match &self.pinning {
            Some(p) => format!(
                "Pinned: servers on CPU {}, loadgen on CPU {} (EVLOOP_BENCH_PIN)",
                cpu_list(&p.server),
                cpu_list(&p.loadgen)
            ),
            None => "Not pinned: servers and loadgen share every CPU (EVLOOP_BENCH_PIN)".into(),
        }
    }

    /// Names a round in progress lines and log files, when there is more than one.
    fn round_suffix(&self, round: usize) -> String {
        if self.repeats > 1 {
            format!("-r{round}")
        } else {
            String::new()
        }
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The items named in the comma-separated list in `var`, or all of them when it is unset.
fn select<T>(
    var: &str,
    all: &'static [T],
    name: impl Fn(&T) -> &'static str,
) -> Result<Vec<&'static T>, String> {
    let Some(list) = env_var(var) else {
        return Ok(all.iter().collect());
    };
    let wanted: Vec<&str> = list.split(',').map(str::trim).collect();
    let names: Vec<&str> = all.iter().map(&name).collect();
    if let Some(unknown) = wanted.iter().find(|w| !names.contains(w)) {
        return Err(format!(
            "{var}: no such name {unknown:?}; choose from {}",
            names.join(",")
        ));
    }
    Ok(all.iter().filter(|t| wanted.contains(&name(t))).collect())
}

/// Which CPUs the servers run on and which ones loadgen runs on.
///
/// A server and its load generator left to share all CPUs take turns on them, and the
/// figures then say as much about the scheduler as about the server: a server with a
/// thread per connection can crowd loadgen on every core, a single-threaded one takes at
/// most one. Pinned apart, every server gets the same CPUs and loadgen always has its own,
/// so neither slows the other by taking its core. On a 2-core machine that is one core
/// each, which also means `reactor-t2` has one core for its two loops. Pinned, loadgen
/// runs one engine thread per CPU it has (`--threads`), so on a larger machine it can keep
/// a server on several cores busy.
struct Pinning {
    server: Vec<usize>,
    loadgen: Vec<usize>,
}

impl Pinning {
    /// `EVLOOP_BENCH_PIN`: `auto` (the default) splits the CPUs this process may use, the
    /// lower half to loadgen and the rest to the servers, or pins nothing when there is only
    /// one; `off` pins nothing; `SERVER/LOADGEN` gives two CPU lists such as `1/0` or
    /// `2-3/0-1`.
    fn from_env() -> Result<Option<Pinning>, String> {
        let spec = env_var("EVLOOP_BENCH_PIN");
        let spec = spec.as_deref().map(str::trim);
        if spec == Some("off") {
            return Ok(None);
        }
        let allowed = allowed_cpus().map_err(|e| format!("sched_getaffinity: {e}"))?;
        match spec {
            None | Some("auto") => {
                if allowed.len() < 2 {
                    return Ok(None);
                }
                let (loadgen, server) = allowed.split_at(allowed.len() / 2);
                Ok(Some(Pinning {
                    server: server.to_vec(),
                    loadgen: loadgen.to_vec(),
                }))
            }
            Some(spec) => {
                let bad = |why: String| format!("EVLOOP_BENCH_PIN={spec}: {why}");
                let (server, loadgen) = spec
                    .split_once('/')
                    .ok_or_else(|| bad("expected auto, off or SERVER/LOADGEN CPU lists".into()))?;
                let parse = |list: &str| {
                    let cpus = parse_cpu_list(list).map_err(&bad)?;
                    match cpus.iter().find(|cpu| !allowed.contains(cpu)) {
                        Some(cpu) => Err(bad(format!(
                            "CPU {cpu} is not one this process may use ({})",
                            cpu_list(&allowed)
                        ))),
                        None => Ok(cpus),
                    }
                };
                Ok(Some(Pinning {
                    server: parse(server)?,
                    loadgen: parse(loadgen)?,
                }))
            }
        }
    }
}

/// `0,2-3` as [0, 2, 3]: the format of `taskset -c` and `/sys/devices/system/cpu/online`.
fn parse_cpu_list(list: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim) {
        let number = |n: &str| {
            n.trim()
                .parse::<usize>()
                .ok()
                .filter(|&n| n < libc::CPU_SETSIZE as usize)
                .ok_or_else(|| format!("{n:?} is not a CPU number"))
        };
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => (number(part)?, number(part)?),
        };
        if first > last {
            return Err(format!("{part:?} is an empty range"));
        }
        cpus.extend(first..=last);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// [0, 2, 3] as `0,2,3`.
fn cpu_list(cpus: &[usize]) -> String {
    let names: Vec<String> = cpus.iter().map(usize::to_string).collect();
    names.join(",")
}

/// The CPUs this process may run on, which its children inherit unless pinned.
fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is a plain bit array, valid when zeroed, and the call writes at
    // most size_of::<cpu_set_t>() bytes into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: every index is below CPU_SETSIZE, the set's size in bits.
    Ok((0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Makes the child that `command` starts run only on `cpus`; its threads inherit that.
fn pin(command: &mut Command, cpus: &[usize]) {
    use std::os::unix::process::CommandExt;
    // SAFETY: as in `allowed_cpus`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: `cpu` is below CPU_SETSIZE: it came from `allowed_cpus` or was checked
        // by `parse_cpu_list`.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe work is allowed. It makes one system call on a set built before the
    // fork (moved in by copy), allocates nothing, and reports failure through errno, which
    // makes `spawn` return the error.
    unsafe {
        command.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
}

fn run(settings: &Settings) -> Result<(), String> {
    let started = Instant::now();
    fs::create_dir_all(settings.logs())
        .map_err(|e| format!("cannot create {}: {e}", settings.logs().display()))?;
    println!("{}", machine_description());
    println!("{}", settings.describe_pinning());
    let rounds = match settings.repeats {
        1 => String::new(),
        n => format!(", {n} rounds (medians shown)"),
    };
    println!(
        "{} s per row, {} servers × {} workloads{rounds}, 16-byte messages, loadgen --timeout {LOADGEN_TIMEOUT_SECS}\n",
        settings.secs,
        settings.servers.len(),
        settings.workloads.len()
    );

    let mut rows = Vec::new();
    let total = settings.repeats * settings.servers.len() * settings.workloads.len();
    // Rounds outermost, then workloads: the servers take turns at each workload, so a change
    // in the machine's background load over the run does not land on one server's rows
    // only, and each round compares the servers under much the same conditions.
    for round in 1..=settings.repeats {
        for workload in &settings.workloads {
            for server in &settings.servers {
                eprint!(
                    "[{}/{total}] {} {}{} ... ",
                    rows.len() + 1,
                    server.name,
                    workload.name,
                    settings.round_suffix(round)
                );
                let row = run_row(server, workload, round, settings);
                eprintln!("{}", row.summary());
                rows.push(row);
            }
        }
    }

    let table = results_table(&summaries(&rows));
    println!("{}", table.markdown());
    write_file(
        &settings.out_dir.join("results.csv"),
        &results_csv(&rows).csv(),
    )?;
    for (file, title, y_label, scale, value) in [
        (
            "throughput.svg",
            "Throughput, lockstep TCP",
            "replies per second",
            chart::Scale::Linear,
            (|m: &Measured| m.report.msgs_per_sec) as fn(&Measured) -> f64,
        ),
        (
            "latency.svg",
            "p99 latency, lockstep TCP",
            "p99 latency (µs, log scale)",
            chart::Scale::Log,
            |m: &Measured| m.report.p99_us,
        ),
    ] {
        let path = settings.out_dir.join(file);
        let series = lockstep_series(&summaries(&rows), &settings.servers, value);
        if series.iter().all(|s| s.points.is_empty()) {
            continue;
        }
        chart::draw(&path, title, y_label, scale, &series)
            .map_err(|e| format!("cannot draw {}: {e}", path.display()))?;
    }

    if settings.idle > 0 {
        let idle = idle_rows(settings);
        let table = idle_table(&idle);
        println!("{}", table.markdown());
        write_file(&settings.out_dir.join("idle.csv"), &table.csv())?;
    }
    println!(
        "Written to {}; the bench took {:.0} s.",
        settings.out_dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn write_file(path: &Path, contents: &str) -> Result<(), String> {
    fs::write(path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// CPU count, model and kernel, and how busy the machine already is: on a shared 2-core
/// machine that explains more variance than anything else.
fn machine_description() -> String {
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

/// How long the bench watches the idle machine before it starts.
const BUSY_SAMPLE: Duration = Duration::from_secs(1);

/// The share of all CPU time that was not idle over `window`, from `/proc/stat`. The load
/// average alone misleads here: it decays over minutes, so right after a run of the
/// threaded server it still counts that server's thousands of threads.
fn cpu_busy_share(window: Duration) -> Option<f64> {
    // The first line is `cpu  user nice system idle iowait irq softirq steal ...`, in ticks.
    let sample = || -> Option<(u64, u64)> {
        let stat = fs::read_to_string("/proc/stat").ok()?;
        let ticks: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .map(|t| t.parse().ok())
            .collect::<Option<_>>()?;
        let idle = ticks.get(3)? + ticks.get(4)?;
        Some((ticks.iter().take(8).sum(), idle))
    };
    let (total_before, idle_before) = sample()?;
    thread::sleep(window);
    let (total_after, idle_after) = sample()?;
    let total = total_after.checked_sub(total_before)?;
    let idle = idle_after.checked_sub(idle_before)?;
    (total > 0).then(|| 1.0 - idle as f64 / total as f64)
}

/// A child process that is killed and reaped when dropped, however the bench gets there
/// (an early return, a failed row, a panic unwinding).
struct ChildGuard(Child);

impl ChildGuard {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// The exit status if the child has exited.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.0.try_wait().ok().flatten()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // Errors mean the child is already gone, which is what we want.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A server child with the addresses from its startup line.
struct ServerProcess {
    child: ChildGuard,
    tcp: SocketAddr,
    udp: Option<SocketAddr>,
}

/// Starts `spec` on a free port, its stderr going to `log`, and waits for its startup line.
fn start_server(
    spec: &ServerSpec,
    log: &Path,
    settings: &Settings,
) -> Result<ServerProcess, String> {
    let mut command = match spec.program {
        Program::Reactor => Command::new(env!("CARGO_BIN_EXE_reactor")),
        Program::Threaded => Command::new(env!("CARGO_BIN_EXE_threaded")),
        Program::Tokio => {
            let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
            let mut command = Command::new(me);
            command.arg(SERVE_TOKIO);
            command
        }
    };
    match spec.program {
        Program::Tokio => command.arg(LISTEN),
        Program::Reactor | Program::Threaded => {
            command.args(["--listen", LISTEN, "--max-connections", MAX_CONNECTIONS])
        }
    };
    command.args(spec.extra_args);
    if let Some(pinning) = &settings.pinning {
        pin(&mut command, &pinning.server);
    }
    let stderr = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .env("RUST_LOG", quiet_logging());
    let mut child = ChildGuard(command.spawn().map_err(|e| format!("spawn: {e}"))?);

    // Reading a pipe cannot time out, so a thread reads the startup line and hands it over;
    // it then drains stdout until the server exits, so a server that prints more never
    // blocks on a full pipe.
    let stdout = child.0.stdout.take().ok_or("no stdout pipe")?;
    let (line_tx, line_rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = line_tx.send(reader.read_line(&mut line).map(|_| line));
        let _ = io::copy(&mut reader, &mut io::sink());
    });
    let line = match line_rx.recv_timeout(STARTUP_TIMEOUT) {
        Ok(Ok(line)) if !line.is_empty() => line,
        Ok(Ok(_)) | Ok(Err(_)) | Err(mpsc::RecvTimeoutError::Disconnected) => {
            // Give a dying server a moment to finish its one-line error.
            thread::sleep(Duration::from_millis(100));
            return Err(format!("exited before listening: {}", last_line(log)));
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            return Err(format!("no startup line within {STARTUP_TIMEOUT:?}"))
        }
    };
    let (tcp, udp) = parse_startup_line(&line)
        .ok_or_else(|| format!("unexpected startup line {:?}", line.trim_end()))?;
    Ok(ServerProcess { child, tcp, udp })
}

/// `listening tcp=IP:PORT udp=IP:PORT` (or `udp=off`) into its addresses.
fn parse_startup_line(line: &str) -> Option<(SocketAddr, Option<SocketAddr>)> {
    let rest = line.trim_end().strip_prefix("listening tcp=")?;
    let (tcp, udp) = rest.split_once(" udp=")?;
    let udp = match udp {
        "off" => None,
        addr => Some(addr.parse().ok()?),
    };
    Some((tcp.parse().ok()?, udp))
}

/// `RUST_LOG` for the children: whatever the user set, else warnings only, so a logging
/// server pays nothing per connection that another does not.
fn quiet_logging() -> String {
    std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into())
}

/// The last non-empty line of a log file, to say why a child failed.
fn last_line(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let line = text.lines().rev().find(|l| !l.trim().is_empty());
    match line {
        Some(line) => line.trim().to_string(),
        None => format!("nothing on stderr (see {})", log.display()),
    }
}

/// What loadgen printed with `--json`: a flat object whose values are all numbers.
#[derive(Clone, Default)]
struct LoadReport {
    messages: f64,
    duration_s: f64,
    msgs_per_sec: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    errors: f64,
    /// Absent from older loadgen builds.
    client_cpu_s: Option<f64>,
}

impl LoadReport {
    fn parse(json: &str) -> Option<LoadReport> {
        // loadgen promises one flat object of numbers (docs/loadgen.md), which is all this
        // has to read; a full JSON parser would be a dependency for nothing.
        let body = json.trim().strip_prefix('{')?.strip_suffix('}')?;
        let mut fields = HashMap::new();
        for pair in body.split(',') {
            let (key, value) = pair.split_once(':')?;
            fields.insert(
                key.trim().trim_matches('"'),
                value.trim().parse::<f64>().ok()?,
            );
        }
        let get = |key: &str| fields.get(key).copied();
        Some(LoadReport {
            messages: get("messages")?,
            duration_s: get("duration_s")?,
            msgs_per_sec: get("msgs_per_sec")?,
            p50_us: get("p50_us")?,
            p90_us: get("p90_us").unwrap_or(0.0),
            p99_us: get("p99_us")?,
            p999_us: get("p999_us").unwrap_or(0.0),
            max_us: get("max_us").unwrap_or(0.0),
            errors: get("errors")?,
            client_cpu_s: get("client_cpu_s"),
        })
    }
}

/// One run of one (server, workload) row.
struct Row {
    server: &'static str,
    workload: &'static Workload,
    /// Which round of `EVLOOP_BENCH_REPEATS`, from 1.
    round: usize,
    outcome: Result<Measured, String>,
}

/// What a row measured when loadgen ran to the end.
struct Measured {
    report: LoadReport,
    /// Server CPU time over the loadgen run.
    server_cpu: Duration,
    /// Wall time of the loadgen run, set-up included.
    wall: Duration,
    peak_rss: u64,
    threads: u64,
}

impl Measured {
    fn cpu_us_per_msg(&self) -> Option<f64> {
        (self.report.messages > 0.0)
            .then(|| self.server_cpu.as_secs_f64() * 1e6 / self.report.messages)
    }

    /// The server's average CPU use over the run, in cores (1.0 = one core all the time).
    fn server_cores(&self) -> f64 {
        self.server_cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }

    /// loadgen's, over its load phase, if it reported it.
    fn loadgen_cores(&self) -> Option<f64> {
        let r = &self.report;
        r.client_cpu_s
            .filter(|_| r.duration_s > 0.0)
            .map(|cpu| cpu / r.duration_s)
    }
}

impl Row {
    fn status(&self) -> String {
        match &self.outcome {
            Err(why) => format!("failed: {why}"),
            Ok(m) if m.report.errors > 0.0 => format!("{} errors", m.report.errors),
            Ok(_) => "ok".into(),
        }
    }

    fn summary(&self) -> String {
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

fn run_row(
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

/// Starts a fresh server, runs loadgen against it and reads the server's costs.
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
    let logs = settings.logs();
    let mut server = start_server(spec, &logs.join(format!("{stem}.server.log")), settings)
        .map_err(|e| format!("server: {e}"))?;
    let pid = server.child.pid();
    let addr = if workload.udp {
        server.udp.ok_or("server has no UDP")?
    } else {
        server.tcp
    };
    let proc_error = |e: io::Error| format!("reading /proc/{pid}: {e}");

    let json_path = logs.join(format!("{stem}.loadgen.json"));
    let log_path = logs.join(format!("{stem}.loadgen.log"));
    let file = |path: &Path| File::create(path).map_err(|e| format!("{}: {e}", path.display()));
    let mut loadgen = Command::new(env!("CARGO_BIN_EXE_loadgen"));
    loadgen
        .arg("--addr")
        .arg(addr.to_string())
        .args(["--connections", &workload.connections.to_string()])
        .args(["--pipeline", &workload.pipeline.to_string()])
        .args(["--duration", &settings.secs.to_string()])
        .args(["--timeout", &LOADGEN_TIMEOUT_SECS.to_string()])
        .arg("--json")
        .args(workload.udp.then_some("--udp"))
        .stdin(Stdio::null())
        .stdout(file(&json_path)?)
        .stderr(file(&log_path)?)
        .env("RUST_LOG", quiet_logging());
    if let Some(pinning) = &settings.pinning {
        // One engine per CPU loadgen has (one engine keeps about one server core busy), and
        // no more engines than connections.
        let threads = pinning.loadgen.len().min(workload.connections);
        loadgen.args(["--threads", &threads.to_string()]);
        pin(&mut loadgen, &pinning.loadgen);
    }

    let cpu_before = procfs::cpu_time(pid).map_err(proc_error)?;
    let started = Instant::now();
    let deadline = Duration::from_secs_f64(settings.secs) + LOADGEN_GRACE;
    let mut child = ChildGuard(loadgen.spawn().map_err(|e| format!("loadgen: {e}"))?);
    let mut threads = 0;
    let status = loop {
        // The thread count is sampled throughout because the threaded server's peak is
        // while connections are open; it drops as loadgen closes them.
        threads = threads.max(procfs::threads(pid).unwrap_or(0));
        if let Some(status) = child.exited() {
            break status;
        }
        if started.elapsed() > deadline {
            return Err(format!("loadgen still running after {deadline:?}, killed"));
        }
        thread::sleep(SAMPLE_INTERVAL);
    };
    let wall = started.elapsed();
    if let Some(status) = server.child.exited() {
        return Err(format!(
            "server exited ({status}): {}",
            last_line(&logs.join(format!("{stem}.server.log")))
        ));
    }
    let server_cpu = procfs::cpu_time(pid).map_err(proc_error)? - cpu_before;
    let peak_rss = procfs::peak_rss(pid).map_err(proc_error)?;

    let json = fs::read_to_string(&json_path).unwrap_or_default();
    let report = LoadReport::parse(&json).ok_or_else(|| {
        format!(
            "loadgen ({status}) printed no report: {}",
            last_line(&log_path)
        )
    })?;
    Ok(Measured {
        report,
        server_cpu,
        wall,
        peak_rss,
        threads,
    })
}

/// A table that prints as aligned markdown and as CSV.
struct Table {
    header: Vec<&'static str>,
    /// Columns holding numbers, right-aligned in markdown.
    numeric: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(columns: &[(&'static str, bool)]) -> Table {
        Table {
            header: columns.iter().map(|c| c.0).collect(),
            numeric: columns.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    fn markdown(&self) -> String {
        let widths: Vec<usize> = (0..self.header.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([self.header[i].chars().count(), 3])
                    .max()
                    .unwrap_or(3)
            })
            .collect();
        let line = |cells: &mut dyn Iterator<Item = String>| {
            let cells: Vec<String> = cells.collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let pad = |text: &str, i: usize| {
            let fill = " ".repeat(widths[i] - text.chars().count());
            if self.numeric[i] {
                format!("{fill}{text}")
            } else {
                format!("{text}{fill}")
            }
        };
        let mut out = line(&mut self.header.iter().enumerate().map(|(i, h)| pad(h, i)));
        out += &line(&mut widths.iter().enumerate().map(|(i, &w)| {
            if self.numeric[i] {
                format!("{}:", "-".repeat(w - 1))
            } else {
                "-".repeat(w)
            }
        }));
        for row in &self.rows {
            out += &line(&mut row.iter().enumerate().map(|(i, c)| pad(c, i)));
        }
        out
    }

    fn csv(&self) -> String {
        let field = |text: &str| {
            if text.contains([',', '"', '\n']) {
                format!("\"{}\"", text.replace('"', "\"\""))
            } else {
                text.to_string()
            }
        };
        let mut out = String::new();
        for cells in std::iter::once(self.header.iter().map(|h| h.to_string()).collect())
            .chain(self.rows.iter().cloned())
        {
            let cells: Vec<String> = cells.iter().map(|c| field(c)).collect::<Vec<_>>();
            let _ = writeln!(out, "{}", cells.join(","));
        }
        out
    }
}

/// This row's msgs/s and CPU µs/msg divided by the baseline server's in the same workload
/// and round.
fn vs_baseline(rows: &[Row], row: &Row) -> (Option<f64>, Option<f64>) {
    let Ok(m) = &row.outcome else {
        return (None, None);
    };
    let Some(base) = rows
        .iter()
        .find(|r| {
            r.server == BASELINE && r.workload.name == row.workload.name && r.round == row.round
        })
        .and_then(|r| r.outcome.as_ref().ok())
    else {
        return (None, None);
    };
    let ratio = |value: Option<f64>, base: Option<f64>| match (value, base) {
        (Some(v), Some(b)) if b > 0.0 => Some(v / b),
        _ => None,
    };
    (
        ratio(Some(m.report.msgs_per_sec), Some(base.report.msgs_per_sec)),
        ratio(m.cpu_us_per_msg(), base.cpu_us_per_msg()),
    )
}

/// One (server, workload) pair over every round: a line of the printed table and a point
/// in the charts.
struct Summary<'a> {
    server: &'static str,
    workload: &'static Workload,
    /// This pair's runs, one per round.
    runs: Vec<&'a Row>,
    /// Each run's msgs/s and CPU µs/msg against the baseline's in its round, where both ran.
    ratios: Vec<(Option<f64>, Option<f64>)>,
}

/// The rows grouped by (server, workload), in the order they first ran.
fn summaries(rows: &[Row]) -> Vec<Summary<'_>> {
    let mut out: Vec<Summary> = Vec::new();
    for row in rows {
        let same = |s: &Summary| s.server == row.server && s.workload.name == row.workload.name;
        let at = match out.iter().position(same) {
            Some(at) => at,
            None => {
                out.push(Summary {
                    server: row.server,
                    workload: row.workload,
                    runs: Vec::new(),
                    ratios: Vec::new(),
                });
                out.len() - 1
            }
        };
        out[at].runs.push(row);
        out[at].ratios.push(vs_baseline(rows, row));
    }
    out
}

impl Summary<'_> {
    fn measured(&self) -> impl Iterator<Item = &Measured> {
        self.runs.iter().filter_map(|r| r.outcome.as_ref().ok())
    }

    /// The median of `value` over the successful runs that have one.
    fn median(&self, value: impl Fn(&Measured) -> Option<f64>) -> Option<f64> {
        median(self.measured().filter_map(value).collect())
    }

    fn max(&self, value: impl Fn(&Measured) -> u64) -> Option<u64> {
        self.measured().map(value).max()
    }

    fn status(&self) -> String {
        let failed: Vec<&String> = self
            .runs
            .iter()
            .filter_map(|r| r.outcome.as_ref().err())
            .collect();
        let errors: f64 = self.measured().map(|m| m.report.errors).sum();
        match failed.first() {
            Some(why) if failed.len() == self.runs.len() => format!("failed: {why}"),
            Some(why) => format!("{} of {} failed: {why}", failed.len(), self.runs.len()),
            None if errors > 0.0 => format!("{errors} errors"),
            None => "ok".into(),
        }
    }
}

/// The middle value, or the mean of the two middle ones; `None` for no values.
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// The table printed on stdout: rounded figures, thousands separated. With more than one
/// round every figure is the median over the rounds (errors are summed, peak RSS and
/// threads are the most), and the ratios are medians of each round's own ratio.
fn results_table(summaries: &[Summary]) -> Table {
    let mut table = Table::new(&[
        ("server", false),
        ("workload", false),
        ("msgs/s", true),
        ("p50 µs", true),
        ("p99 µs", true),
        ("errors", true),
        ("CPU µs/msg", true),
        ("peak RSS MiB", true),
        ("threads", true),
        ("server CPU", true),
        ("loadgen CPU", true),
        ("msgs/s vs threaded", true),
        ("CPU/msg vs threaded", true),
        ("status", false),
    ]);
    let optional = |value: Option<f64>| value.map_or("-".into(), |v| format!("{v:.2}"));
    let rounded = |value: Option<f64>| value.map_or("-".into(), thousands);
    for s in summaries {
        let mut line = vec![s.server.to_string(), s.workload.name.to_string()];
        if s.measured().next().is_some() {
            let errors: f64 = s.measured().map(|m| m.report.errors).sum();
            line.extend([
                rounded(s.median(|m| Some(m.report.msgs_per_sec))),
                rounded(s.median(|m| Some(m.report.p50_us))),
                rounded(s.median(|m| Some(m.report.p99_us))),
                thousands(errors),
                optional(s.median(Measured::cpu_us_per_msg)),
                s.max(|m| m.peak_rss)
                    .map_or("-".into(), |b| format!("{:.1}", b as f64 / MIB)),
                s.max(|m| m.threads).map_or("-".into(), |t| t.to_string()),
                percent(s.median(|m| Some(m.server_cores()))),
                percent(s.median(Measured::loadgen_cores)),
                optional(median(s.ratios.iter().filter_map(|r| r.0).collect())),
                optional(median(s.ratios.iter().filter_map(|r| r.1).collect())),
            ]);
        } else {
            line.extend(std::iter::repeat_n("-".to_string(), 11));
        }
        line.push(s.status());
        table.rows.push(line);
    }
    table
}

/// `results.csv`: every run (one line per round, not medians) with raw numbers, and more of
/// them than fit the printed table (all of loadgen's percentiles, the wall time, the
/// server's and loadgen's share of a core).
fn results_csv(rows: &[Row]) -> Table {
    const COLUMNS: [&str; 25] = [
        "server",
        "workload",
        "round",
        "connections",
        "pipeline",
        "transport",
        "status",
        "messages",
        "duration_s",
        "msgs_per_sec",
        "p50_us",
        "p90_us",
        "p99_us",
        "p999_us",
        "max_us",
        "errors",
        "wall_s",
        "server_cpu_s",
        "server_cpu_us_per_msg",
        "server_cores",
        "peak_rss_bytes",
        "threads",
        "client_cpu_s",
        "msgs_per_sec_vs_threaded",
        "cpu_per_msg_vs_threaded",
    ];
    let mut table = Table::new(&COLUMNS.map(|c| (c, false)));
    let optional = |value: Option<f64>| value.map_or(String::new(), |v| format!("{v:.4}"));
    for row in rows {
        let w = row.workload;
        let mut line = vec![
            row.server.to_string(),
            w.name.to_string(),
            row.round.to_string(),
            w.connections.to_string(),
            w.pipeline.to_string(),
            if w.udp { "udp" } else { "tcp" }.to_string(),
            row.status(),
        ];
        match &row.outcome {
            Ok(m) => {
                let r = &m.report;
                let (msgs_ratio, cpu_ratio) = vs_baseline(rows, row);
                line.extend([
                    r.messages.to_string(),
                    format!("{:.3}", r.duration_s),
                    format!("{:.1}", r.msgs_per_sec),
                    r.p50_us.to_string(),
                    r.p90_us.to_string(),
                    r.p99_us.to_string(),
                    r.p999_us.to_string(),
                    r.max_us.to_string(),
                    r.errors.to_string(),
                    format!("{:.3}", m.wall.as_secs_f64()),
                    format!("{:.3}", m.server_cpu.as_secs_f64()),
                    optional(m.cpu_us_per_msg()),
                    format!("{:.3}", m.server_cores()),
                    m.peak_rss.to_string(),
                    m.threads.to_string(),
                    optional(r.client_cpu_s),
                    optional(msgs_ratio),
                    optional(cpu_ratio),
                ]);
            }
            Err(_) => line.extend(std::iter::repeat_n(String::new(), COLUMNS.len() - 7)),
        }
        table.rows.push(line);
    }
    table
}

const MIB: f64 = 1024.0 * 1024.0;

/// 0.957 cores as "96%" (of one core).
fn percent(cores: Option<f64>) -> String {
    cores.map_or("-".into(), |c| format!("{:.0}%", c * 100.0))
}

/// 1234567.8 as "1,234,568".
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if value < 0.0 {
        out.insert(0, '-');
    }
    out
}

/// One chart line per server: the median `value` of its lockstep TCP rows.
fn lockstep_series(
    summaries: &[Summary],
    servers: &[&ServerSpec],
    value: fn(&Measured) -> f64,
) -> Vec<chart::Series> {
    servers
        .iter()
        .map(|spec| chart::Series {
            name: spec.name.to_string(),
            points: summaries
                .iter()
                .filter(|s| s.server == spec.name && s.workload.is_lockstep_tcp())
                .filter_map(|s| {
                    let y = s.median(|m| (m.report.messages > 0.0).then(|| value(m)))?;
                    Some((s.workload.connections as f64, y))
                })
                .collect(),
        })
        .collect()
}

/// The idle test for one server.
struct IdleRow {
    server: &'static str,
    outcome: Result<IdleMeasured, String>,
}

struct IdleMeasured {
    asked: usize,
    established: usize,
    rss_before: u64,
    rss_after: u64,
    threads: u64,
    setup: Duration,
    /// Why fewer than `asked` connections were established.
    shortfall: Option<String>,
}

fn idle_rows(settings: &Settings) -> Vec<IdleRow> {
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

impl IdleMeasured {
    fn per_connection(&self) -> f64 {
        (self.rss_after as f64 - self.rss_before as f64) / self.established.max(1) as f64
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
    let mut server = start_server(spec, &log, settings).map_err(|e| format!("server: {e}"))?;
    let pid = server.child.pid();
    let proc_error = |e: io::Error| format!("reading /proc/{pid}: {e}");
    thread::sleep(IDLE_SETTLE);
    let rss_before = procfs::rss(pid).map_err(proc_error)?;
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
        rss_after: procfs::rss(pid).map_err(proc_error)?,
        threads: procfs::threads(pid).map_err(proc_error)?,
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

fn idle_table(rows: &[IdleRow]) -> Table {
    let mut table = Table::new(&[
        ("server", false),
        ("idle connections", true),
        ("RSS before MiB", true),
        ("RSS after MiB", true),
        ("KiB per connection", true),
        ("threads", true),
        ("set-up s", true),
        ("status", false),
    ]);
    for row in rows {
        let mut line = vec![row.server.to_string()];
        match &row.outcome {
            Ok(m) => {
                line.extend([
                    thousands(m.established as f64),
                    format!("{:.1}", m.rss_before as f64 / MIB),
                    format!("{:.1}", m.rss_after as f64 / MIB),
                    format!("{:.2}", m.per_connection() / 1024.0),
                    m.threads.to_string(),
                    format!("{:.2}", m.setup.as_secs_f64()),
                ]);
                line.push(match &m.shortfall {
                    None => "ok".into(),
                    Some(why) => format!("{} of {}: {why}", m.established, m.asked),
                });
            }
            Err(why) => {
                line.extend(std::iter::repeat_n("-".to_string(), 6));
                line.push(format!("failed: {why}"));
            }
        }
        table.rows.push(line);
    }
    table
}
