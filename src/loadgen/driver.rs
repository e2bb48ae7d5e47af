//! The entry points, [`run`] and [`run_with_progress`]: check the options, run one engine
//! on the calling thread or several on threads of their own, start their load together,
//! report their summed progress while they run, and add up what they measured, with the CPU
//! time each engine's thread used. It does no I/O of its own and knows nothing of the
//! protocol; the engines share nothing but the barrier they start at and the progress
//! counters they publish.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use super::engine::{Engine, Tally, SWEEP_INTERVAL};
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
