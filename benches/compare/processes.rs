//! The child processes: starting a server and reading its startup line, pinning a child to
//! CPUs, running loadgen for one row, and making sure every child is killed and reaped
//! however the bench ends.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::certificate::{Certificate, SERVER_NAME};
use crate::plan::{Program, ServerSpec, Settings, Workload};

/// The first argument that makes this binary the tokio server instead of the bench.
pub const SERVE_TOKIO: &str = "--serve-tokio";

/// The first argument that makes this binary loadgen (`loadgen::command`) instead of the
/// bench: loadgen is a crate of its own, so its binary is no `CARGO_BIN_EXE_` here, and the
/// bench runs its command in a child process as it runs the tokio server.
pub const RUN_LOADGEN: &str = "--run-loadgen";

/// The address every server listens on: loopback only, port chosen by the kernel.
pub const LISTEN: &str = "127.0.0.1:0";

/// Passed to the servers as `--max-connections`: above the largest workload and the idle
/// test, so the limit (10,000 by default) is never what a row measures.
const MAX_CONNECTIONS: &str = "20000";

/// How long a server may take to print its startup line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// loadgen's `--timeout`: a request unanswered this long is an error. Generous, so a slow
/// row shows up as high latency rather than as errors, yet short enough to end a row
/// against a server that has stopped answering.
pub const LOADGEN_TIMEOUT_SECS: u64 = 5;

/// How much longer than its `--duration` a loadgen run may take before it is killed: set-up
/// of 5,000 connections (or of 12,000 hostile ones before 100 honest ones, the mixed
/// attack, a thread each in the threaded server), and loadgen's own bound of about twice
/// `--timeout` on a set-up against a server that never answers.
const LOADGEN_GRACE: Duration = Duration::from_secs(3 * LOADGEN_TIMEOUT_SECS + 45);

/// How often [`run_loadgen`] calls its sampler (a row samples the server's thread count).
const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// A child process that is killed and reaped when dropped, however the bench gets there
/// (an early return, a failed row, a panic unwinding).
pub struct ChildGuard(Child);

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// The exit status if the child has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.0.try_wait().ok().flatten()
    }

    /// Stops the child as a user would, with SIGTERM (a graceful stop for both of the
    /// crate's servers, which then log their summary line), and waits up to `within` for it
    /// to exit. `None` if it did not, or where there is no SIGTERM to send.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        #[cfg(unix)]
        {
            let pid = libc::pid_t::try_from(self.pid()).ok()?;
            // SAFETY: kill takes plain integers; the pid is our own unreaped child, so it
            // cannot name another process.
            if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
                return None;
            }
            let started = Instant::now();
            while started.elapsed() < within {
                if let Some(status) = self.exited() {
                    return Some(status);
                }
                thread::sleep(Duration::from_millis(10));
            }
            None
        }
        #[cfg(not(unix))]
        {
            let _ = within;
            None
        }
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
pub struct ServerProcess {
    pub child: ChildGuard,
    pub tcp: SocketAddr,
    pub udp: Option<SocketAddr>,
}

/// Starts `spec` on a free port, pinned to `cpus` if given, serving TLS with `tls` if given,
/// its stderr going to `log`, and waits for its startup line.
pub fn start_server(
    spec: &ServerSpec,
    log: &Path,
    cpus: Option<&[usize]>,
    tls: Option<&Certificate>,
) -> Result<ServerProcess, String> {
    start_server_logging(spec, log, cpus, tls, &quiet_logging())
}

/// As [`start_server`], with `RUST_LOG` set to `rust_log`.
pub fn start_server_logging(
    spec: &ServerSpec,
    log: &Path,
    cpus: Option<&[usize]>,
    tls: Option<&Certificate>,
    rust_log: &str,
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
    if let Some(tls) = tls {
        command
            .arg("--tls-cert")
            .arg(&tls.cert)
            .arg("--tls-key")
            .arg(&tls.key);
    }
    if let Some(cpus) = cpus {
        pin(&mut command, cpus);
    }
    let stderr = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .env("RUST_LOG", rust_log);
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

/// `listening tcp=IP:PORT udp=IP:PORT` (or `udp=off`), with ` tls=on` after it when TCP is
/// TLS, into its addresses.
fn parse_startup_line(line: &str) -> Option<(SocketAddr, Option<SocketAddr>)> {
    let line = line.trim_end();
    let line = line.strip_suffix(" tls=on").unwrap_or(line);
    let rest = line.strip_prefix("listening tcp=")?;
    let (tcp, udp) = rest.split_once(" udp=")?;
    let udp = match udp {
        "off" => None,
        addr => Some(addr.parse().ok()?),
    };
    Some((tcp.parse().ok()?, udp))
}

/// A loadgen run that ended by itself, and where it left its report and its log.
pub struct LoadgenRun {
    pub status: ExitStatus,
    /// Wall time of the run, set-up included.
    pub wall: Duration,
    /// loadgen's stdout: the `--json` report.
    pub json: PathBuf,
    /// loadgen's stderr.
    pub log: PathBuf,
}

/// Runs loadgen against `addr` with `workload` for one row, its output going to
/// `STEM.loadgen.json` and `STEM.loadgen.log` in the logs folder. `sample` is called every
/// [`SAMPLE_INTERVAL`] while loadgen runs. A run that overruns its duration by more than
/// [`LOADGEN_GRACE`] is killed and is an error.
pub fn run_loadgen(
    addr: SocketAddr,
    workload: &Workload,
    settings: &Settings,
    stem: &str,
    mut sample: impl FnMut(),
) -> Result<LoadgenRun, String> {
    let logs = settings.logs();
    let json = logs.join(format!("{stem}.loadgen.json"));
    let log = logs.join(format!("{stem}.loadgen.log"));
    let file = |path: &Path| File::create(path).map_err(|e| format!("{}: {e}", path.display()));
    let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut loadgen = Command::new(me);
    loadgen
        .arg(RUN_LOADGEN)
        .arg("--addr")
        .arg(addr.to_string())
        .args(["--connections", &workload.connections.to_string()])
        .args(["--pipeline", &workload.pipeline.to_string()])
        .args(["--duration", &settings.secs.to_string()])
        .args(["--timeout", &LOADGEN_TIMEOUT_SECS.to_string()])
        .arg("--json")
        .args(workload.udp.then_some("--udp"))
        .args(
            workload
                .requests_per_connection
                .iter()
                .flat_map(|n| ["--requests-per-connection".to_string(), n.to_string()]),
        )
        .args(
            workload
                .attack
                .iter()
                .flat_map(|attack| attack.hostile)
                .flat_map(|hostile| ["--hostile", hostile]),
        )
        .stdin(Stdio::null())
        .stdout(file(&json)?)
        .stderr(file(&log)?)
        .env("RUST_LOG", quiet_logging());
    if workload.tls {
        let tls = settings
            .certificate
            .as_ref()
            .ok_or("a TLS row without the bench's certificate")?;
        loadgen
            .args(["--tls", "--tls-server-name", SERVER_NAME, "--tls-ca"])
            .arg(&tls.cert);
    }
    if let Some(pinning) = &settings.pinning {
        // One engine per CPU loadgen has (one engine keeps about one server core busy), and
        // no more engines than connections. Hostile clients get as many engines of their
        // own, on the same CPUs.
        let threads = pinning.loadgen.len().min(workload.connections);
        loadgen.args(["--threads", &threads.to_string()]);
        pin(&mut loadgen, &pinning.loadgen);
    }

    let started = Instant::now();
    let deadline = Duration::from_secs_f64(settings.secs) + LOADGEN_GRACE;
    let mut child = ChildGuard(loadgen.spawn().map_err(|e| format!("loadgen: {e}"))?);
    let status = loop {
        sample();
        if let Some(status) = child.exited() {
            break status;
        }
        if started.elapsed() > deadline {
            return Err(format!("loadgen still running after {deadline:?}, killed"));
        }
        thread::sleep(SAMPLE_INTERVAL);
    };
    Ok(LoadgenRun {
        status,
        wall: started.elapsed(),
        json,
        log,
    })
}

/// `RUST_LOG` for the children: whatever the user set, else warnings only, so a logging
/// server pays nothing per connection that another does not.
fn quiet_logging() -> String {
    std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into())
}

/// The last non-empty line of a log file, to say why a child failed.
pub fn last_line(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let line = text.lines().rev().find(|l| !l.trim().is_empty());
    match line {
        Some(line) => line.trim().to_string(),
        None => format!("nothing on stderr (see {})", log.display()),
    }
}

/// The CPUs this process may run on, which its children inherit unless pinned. Linux only:
/// elsewhere the bench cannot pin and says so (see `plan.rs`).
#[cfg(target_os = "linux")]
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
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

#[cfg(not(target_os = "linux"))]
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "CPU affinity is read and set here on Linux only",
    ))
}

/// Makes the child that `command` starts run only on `cpus`; its threads inherit that.
#[cfg(target_os = "linux")]
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

/// Nowhere to pin on other systems: `allowed_cpus` already said so, so this is not reached
/// with CPUs to pin to.
#[cfg(not(target_os = "linux"))]
fn pin(_command: &mut Command, _cpus: &[usize]) {}
