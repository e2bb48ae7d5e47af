//! What the bench runs: the servers, the workloads, and the settings read from the
//! environment (how long, how many rounds, which rows, where the children are pinned).
//! Nothing here starts a process or measures anything.

use std::path::{Path, PathBuf};

use harness::measure::{format_cpu_list, parse_cpu_list};

use crate::certificate::Certificate;
use crate::processes::allowed_cpus;

/// Seconds of load per row. 51 rows of 8 s, plus set-up and the idle test, take about seven
/// minutes; shorter rows make the figures jumpier on a machine that is doing anything else.
const DEFAULT_SECS: f64 = 8.0;

/// Idle connections the idle test holds open unless `EVLOOP_BENCH_IDLE` says otherwise.
const DEFAULT_IDLE: usize = 10_000;

/// How a server is started.
#[derive(Clone, Copy)]
pub enum Program {
    Reactor,
    Threaded,
    /// This bench binary again, with `--serve-tokio`.
    Tokio,
}

pub struct ServerSpec {
    /// Name in the tables, the CSV, the charts and `EVLOOP_BENCH_SERVERS`.
    pub name: &'static str,
    pub program: Program,
    /// Flags beyond the address and the connection limit.
    pub extra_args: &'static [&'static str],
    /// Runs the attack rows too. `reactor-t2` does not: on this bench's one server core it
    /// would only repeat the reactor's rows with two loops taking turns.
    pub under_attack: bool,
    /// Runs the TLS rows: the reactor and the baseline. `reactor-t2` does not, for the
    /// reason above; the tokio server has no TLS.
    pub tls: bool,
}

pub const SERVERS: [ServerSpec; 4] = [
    ServerSpec {
        name: "reactor",
        program: Program::Reactor,
        extra_args: &[],
        under_attack: true,
        tls: true,
    },
    ServerSpec {
        name: "threaded",
        program: Program::Threaded,
        extra_args: &[],
        under_attack: true,
        tls: true,
    },
    ServerSpec {
        name: "reactor-t2",
        program: Program::Reactor,
        extra_args: &["--threads", "2"],
        under_attack: false,
        tls: false,
    },
    ServerSpec {
        name: "tokio",
        program: Program::Tokio,
        extra_args: &[],
        under_attack: true,
        tls: false,
    },
];

/// The server every row is compared with.
pub const BASELINE: &str = "threaded";

pub struct Workload {
    /// Name in the tables, the CSV and `EVLOOP_BENCH_WORKLOADS`.
    pub name: &'static str,
    pub connections: usize,
    /// Requests in flight per connection; 1 is lockstep.
    pub pipeline: usize,
    pub udp: bool,
    /// For the attack rows: the hostile clients beside the honest ones.
    pub attack: Option<Attack>,
    /// Over TLS: the server started with the bench's certificate, loadgen with `--tls`.
    pub tls: bool,
    /// loadgen's `--requests-per-connection`: each client closes and connects again after
    /// this many replies (over TLS, a handshake each); `None` keeps every connection.
    pub requests_per_connection: Option<u64>,
}

/// What an attack row runs beside its honest clients.
pub struct Attack {
    /// The row's name in the attack table and chart.
    pub label: &'static str,
    /// `loadgen --hostile` values; none for the row with no attack, the one the others
    /// are compared with.
    pub hostile: &'static [&'static str],
}

impl Workload {
    /// The rows drawn in the charts: plain TCP, one request at a time.
    pub fn is_lockstep_tcp(&self) -> bool {
        self.pipeline == 1 && !self.udp && self.attack.is_none() && !self.tls
    }

    /// Whether `server` runs this workload: every server runs the plain ones, the attack
    /// rows only those marked `under_attack`, the TLS rows only those marked `tls`.
    pub fn runs_on(&self, server: &ServerSpec) -> bool {
        (self.attack.is_none() || server.under_attack) && (!self.tls || server.tls)
    }
}

const fn lockstep(name: &'static str, connections: usize) -> Workload {
    Workload {
        name,
        connections,
        pipeline: 1,
        udp: false,
        attack: None,
        tls: false,
        requests_per_connection: None,
    }
}

/// `connections` lockstep clients over TLS.
const fn over_tls(name: &'static str, connections: usize) -> Workload {
    Workload {
        tls: true,
        ..lockstep(name, connections)
    }
}

/// 100 honest lockstep clients (the `tcp-100` load) beside `hostile`.
const fn under_attack(
    name: &'static str,
    label: &'static str,
    hostile: &'static [&'static str],
) -> Workload {
    Workload {
        attack: Some(Attack { label, hostile }),
        ..lockstep(name, 100)
    }
}

/// The name in `EVLOOP_BENCH_WORKLOADS` that stands for every attack row.
pub const ATTACK_ROWS: &str = "attack";

/// The label of the attack row with no attack.
pub const NO_ATTACK: &str = "none";

/// The name in `EVLOOP_BENCH_WORKLOADS` that stands for every TLS row.
pub const TLS_ROWS: &str = "tls";

/// The TLS row of new connections: what a handshake costs.
pub const TLS_HANDSHAKES: &str = "tls-handshakes";

/// The TLS row the reactor's target is set at (CPU per message, against the baseline's).
pub const TLS_TARGET_ROW: &str = "tls-1000";

/// The most the reactor's CPU per message may be, as a share of the baseline's, at 1,000
/// lockstep TLS connections.
pub const TLS_CPU_TARGET: f64 = 0.7;

pub const WORKLOADS: [Workload; 17] = [
    lockstep("tcp-1", 1),
    lockstep("tcp-10", 10),
    lockstep("tcp-100", 100),
    lockstep("tcp-1000", 1_000),
    lockstep("tcp-5000", 5_000),
    Workload {
        pipeline: 16,
        ..lockstep("pipeline-100x16", 100)
    },
    Workload {
        udp: true,
        ..lockstep("udp-100", 100)
    },
    // The attack rows: the same honest load alone, then beside each attack in turn.
    under_attack("attack-none", NO_ATTACK, &[]),
    under_attack(
        "attack-slow-readers",
        "2,000 slow readers",
        &["slow-reader:2000"],
    ),
    under_attack("attack-dribblers", "5,000 dribblers", &["dribbler:5000"]),
    under_attack("attack-churn", "1,000 churners", &["churn:1000"]),
    under_attack(
        "attack-udp-flood",
        "UDP flood, 10 sockets",
        &["udp-flood:10"],
    ),
    // Three attacks at once, the partial lines each longer than the reactor's equal share
    // of its buffer memory at 12,100 connections (256 MiB / 12,100, about 22 KiB).
    under_attack(
        "attack-mixed",
        "mixed, 12,000 clients",
        &["partial-line:5000,slow-reader:2000,dribbler:5000"],
    ),
    // The TLS rows: lockstep over TLS, then new connections, each a handshake, a greeting,
    // one reply and `close_notify`, from 10 clients at a time.
    over_tls("tls-1", 1),
    over_tls("tls-100", 100),
    over_tls(TLS_TARGET_ROW, 1_000),
    Workload {
        requests_per_connection: Some(1),
        ..over_tls(TLS_HANDSHAKES, 10)
    },
];

/// What to run, from the environment.
pub struct Settings {
    pub secs: f64,
    /// Rounds of every row; the printed table gives each row's median.
    pub repeats: usize,
    pub idle: usize,
    /// Where the servers and loadgen run; `None` leaves them to the scheduler.
    pub pinning: Option<Pinning>,
    pub servers: Vec<&'static ServerSpec>,
    pub workloads: Vec<&'static Workload>,
    pub out_dir: PathBuf,
    /// The TLS rows' certificate, made at start when a TLS row is to run.
    pub certificate: Option<Certificate>,
}

impl Settings {
    pub fn from_env() -> Result<Settings, String> {
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
            None => DEFAULT_IDLE,
            Some(v) => v
                .parse()
                .map_err(|_| format!("EVLOOP_BENCH_IDLE={v}: expected a number of connections"))?,
        };
        let servers = select("EVLOOP_BENCH_SERVERS", &SERVERS, |s| s.name)?;
        let workloads = select_workloads()?;
        let pinning = Pinning::from_env()?;
        Ok(Settings {
            secs,
            repeats,
            idle,
            pinning,
            servers,
            workloads,
            out_dir: out_dir(),
            certificate: None,
        })
    }

    pub fn logs(&self) -> PathBuf {
        self.out_dir.join("logs")
    }

    /// The CPUs the servers are pinned to, if they are.
    pub fn server_cpus(&self) -> Option<&[usize]> {
        self.pinning.as_ref().map(|p| p.server.as_slice())
    }

    pub fn describe_pinning(&self) -> String {
        match &self.pinning {
            Some(p) => format!(
                "Pinned: servers on CPU {}, loadgen on CPU {} (EVLOOP_BENCH_PIN)",
                format_cpu_list(&p.server),
                format_cpu_list(&p.loadgen)
            ),
            None => "Not pinned: servers and loadgen share every CPU (EVLOOP_BENCH_PIN)".into(),
        }
    }

    /// How many rows one round runs: every (server, workload) pair the workload runs on.
    pub fn rows_per_round(&self) -> usize {
        let servers = &self.servers;
        self.workloads
            .iter()
            .map(|w| servers.iter().filter(|s| w.runs_on(s)).count())
            .sum()
    }

    /// Names a round in progress lines and log files, when there is more than one.
    pub fn round_suffix(&self, round: usize) -> String {
        if self.repeats > 1 {
            format!("-r{round}")
        } else {
            String::new()
        }
    }
}

/// Where the results and logs go: `bench/` in cargo's target directory.
pub fn out_dir() -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
    };
    target.join("bench")
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `EVLOOP_BENCH_WORKLOADS`, where [`ATTACK_ROWS`] stands for every attack row and
/// [`TLS_ROWS`] for every TLS row.
fn select_workloads() -> Result<Vec<&'static Workload>, String> {
    const VAR: &str = "EVLOOP_BENCH_WORKLOADS";
    let Some(list) = env_var(VAR) else {
        return Ok(WORKLOADS.iter().collect());
    };
    let names_where = |keep: fn(&Workload) -> bool| {
        WORKLOADS
            .iter()
            .filter(move |w| keep(w))
            .map(|w| w.name)
            .collect::<Vec<_>>()
    };
    let names: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .flat_map(|name| match name {
            ATTACK_ROWS => names_where(|w| w.attack.is_some()),
            TLS_ROWS => names_where(|w| w.tls),
            name => vec![name],
        })
        .collect();
    select_from(VAR, &names, &WORKLOADS, |w| w.name)
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
    select_from(var, &wanted, all, name)
}

/// The items named in `wanted`, in their order in `all`.
fn select_from<T>(
    var: &str,
    wanted: &[&str],
    all: &'static [T],
    name: impl Fn(&T) -> &'static str,
) -> Result<Vec<&'static T>, String> {
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
pub struct Pinning {
    pub server: Vec<usize>,
    pub loadgen: Vec<usize>,
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
        let allowed = match allowed_cpus() {
            Ok(cpus) => cpus,
            // `auto` degrades to pinning nothing where the platform cannot pin, and says so.
            Err(e) if matches!(spec, None | Some("auto")) => {
                eprintln!("not pinning servers and loadgen apart: {e}");
                return Ok(None);
            }
            Err(e) => return Err(format!("sched_getaffinity: {e}")),
        };
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
                            format_cpu_list(&allowed)
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
