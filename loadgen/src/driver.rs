//! The entry points, [`run`] and [`run_with_progress`]: check the options, run one engine
//! on the calling thread or several on threads of their own, start their load together,
//! report their summed progress while they run, and add up what they measured, with the CPU
//! time each engine's thread used. With hostile clients it also runs the attackers, each on
//! a thread of its own: they are all set up before the honest engines begin, and told to
//! stop once the honest load is over. It does no I/O of its own and knows nothing of the
//! protocol; the engines share nothing but the barrier they start at, the progress counters
//! they publish, and the attackers' signals (set up, stop).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use super::attacker::Attacker;
use super::engine::{Engine, Tally, SWEEP_INTERVAL};
use super::hostile::{Hostile, HostileTally};
use super::options::Options;
use super::report::{Progress, Report};

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
    let total = if options.threads == 1 && options.hostile.is_empty() {
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
        causes: total.tally.causes.into_vec(),
        unanswered: total.tally.unanswered,
        longest_unanswered: total.tally.longest_unanswered,
        connections_opened: total.tally.connections_opened,
        tls_handshakes: total.tally.handshakes,
        tls_verified: options.tls.as_ref().map(super::ClientTls::verified),
        latency: total.tally.latency,
        client_cpu: total.cpu,
        hostile: total.hostile,
        hostile_cpu: total.hostile_cpu,
    })
}

/// What one engine measured, or the sum of several.
struct Part {
    tally: Tally,
    connected: usize,
    /// The load phase; the longest of them for a sum, as the engines start together.
    duration: Duration,
    cpu: Duration,
    /// The attackers' counts, one per hostile kind; empty for an honest engine.
    hostile: Vec<HostileTally>,
    hostile_cpu: Duration,
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
        hostile: Vec::new(),
        hostile_cpu: Duration::ZERO,
    })
}

/// Runs one attacker, one of `engines`, on the calling thread: calls `set_up` once its
/// hostile clients are all set up (or it has failed), and presses until `stop`. Returns
/// its counts and the CPU time the thread used.
fn attack(
    options: &Options,
    share: &[Hostile],
    engines: usize,
    stop: &AtomicBool,
    set_up: mpsc::Sender<()>,
) -> io::Result<(Vec<HostileTally>, Duration)> {
    // Sent once, then dropped, so the driver never waits on an attacker that already spoke
    // or is gone.
    let mut set_up = Some(set_up);
    let mut announce = || {
        if let Some(set_up) = set_up.take() {
            let _ = set_up.send(());
        }
    };
    let cpu_before = thread_cpu_time();
    let result = Attacker::new(options, share, engines)
        .and_then(|mut attacker| attacker.run(&mut announce, stop));
    announce();
    Ok((result?, thread_cpu_time().saturating_sub(cpu_before)))
}

/// Tells the attackers to stop when dropped, so none outlives the run, however the driver
/// leaves it (an honest engine's error, a panic).
struct StopAttackers<'a>(&'a AtomicBool);

impl Drop for StopAttackers<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// One engine's latest progress, published for the thread that reports it.
#[derive(Default)]
struct EngineCounts {
    messages: AtomicU64,
    errors: AtomicU64,
    connections_opened: AtomicU64,
}

/// Runs `options.threads` engines on threads of their own, and the attackers for the
/// hostile clients on threads of theirs, and adds up what they measured. The calling thread
/// waits for the attackers to set up, then reports the honest engines' summed progress
/// while it waits for them, then stops the attackers.
fn drive_threads(options: &Options, progress: &mut impl FnMut(&Progress)) -> io::Result<Part> {
    let shares = options.shares();
    let attacks = options.hostile_shares();
    let stop = AtomicBool::new(false);
    // Each engine's latest counts, for the progress report.
    let counts: Vec<EngineCounts> = shares.iter().map(|_| EngineCounts::default()).collect();
    let ready = Barrier::new(shares.len() + 1);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    thread::scope(|scope| {
        // Dropped on every way out of this closure, before the scope waits for its threads.
        let _stop = StopAttackers(&stop);
        let (set_up_tx, set_up_rx) = mpsc::channel::<()>();
        let attackers: Vec<_> = attacks
            .iter()
            .map(|share| {
                let (engines, stop, set_up) = (attacks.len(), &stop, set_up_tx.clone());
                scope.spawn(move || attack(options, share, engines, stop, set_up))
            })
            .collect();
        drop(set_up_tx);
        // The hostile clients are all set up before the honest ones begin, so the honest
        // clients' whole run, their own set-up included, is under attack.
        for _ in &attackers {
            if set_up_rx.recv().is_err() {
                break;
            }
        }
        let handles: Vec<_> = shares
            .iter()
            .zip(&counts)
            .map(|(share, count)| {
                let (ready, done) = (&ready, done_tx.clone());
                scope.spawn(move || {
                    let part = drive(share, ready, &mut |p: &Progress| {
                        count.messages.store(p.messages, Ordering::Relaxed);
                        count.errors.store(p.errors, Ordering::Relaxed);
                        count
                            .connections_opened
                            .store(p.connections_opened, Ordering::Relaxed);
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
                        connections_opened: sum(|c| &c.connections_opened),
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
            hostile: options
                .hostile
                .iter()
                .map(|h| HostileTally::new(h.kind))
                .collect(),
            hostile_cpu: Duration::ZERO,
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
        // The honest load is over: so is the attack.
        stop.store(true, Ordering::Relaxed);
        for handle in attackers {
            let (tallies, cpu) = handle
                .join()
                .map_err(|_| io::Error::other("a loadgen attacker thread panicked"))??;
            for tally in &tallies {
                if let Some(sum) = total.hostile.iter_mut().find(|t| t.kind == tally.kind) {
                    sum.add(tally);
                }
            }
            total.hostile_cpu += cpu;
        }
        Ok(total)
    })
}

/// CPU time used by the calling thread. On Linux this is the engine alone, even when a
/// test runs a server on other threads of the same process; on other Unix systems the
/// whole process; on Windows it is not measured (zero, and the report's CPU share says 0).
#[cfg(unix)]
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

#[cfg(not(unix))]
fn thread_cpu_time() -> Duration {
    Duration::ZERO
}
