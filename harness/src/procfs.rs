//! Reads what a process costs from Linux's `/proc`: CPU time, resident memory, open
//! descriptors and threads; and the host's TCP memory. The benches and the fault tests measure servers with it; the
//! servers themselves never call it. It compiles everywhere; where there is no `/proc`
//! (macOS, the BSDs by default, Windows) every reading is an error saying which file is
//! missing, and the callers say what they could not measure.

use std::fs;
use std::io;
use std::time::Duration;

/// User plus system CPU time the process has used.
pub fn cpu_time(pid: u32) -> io::Result<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; the fields after its closing
    // parenthesis are plain numbers, utime and stime being the 12th and 13th of them.
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::other(format!("unexpected /proc/{pid}/stat")))
    };
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_nanos(
        total * 1_000_000_000 / clock_ticks_per_second(),
    ))
}

/// The unit of `/proc/PID/stat`'s CPU times.
#[cfg(unix)]
fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64
}

/// Where there is no `sysconf` there is no `/proc` either: the read before this fails.
#[cfg(not(unix))]
fn clock_ticks_per_second() -> u64 {
    100
}

/// A `kB` field of `/proc/PID/status`, such as `VmRSS` or `VmHWM`, in bytes; or a count
/// such as `Threads`.
pub fn status_field(pid: u32, name: &str) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .ok_or_else(|| io::Error::other(format!("no {name} in /proc/{pid}/status")))?;
    let mut parts = line.split_whitespace();
    let value: u64 = parts
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad {name} in /proc/{pid}/status")))?;
    Ok(if parts.next() == Some("kB") {
        value * 1024
    } else {
        value
    })
}

/// Resident memory now, in bytes.
pub fn rss(pid: u32) -> io::Result<u64> {
    status_field(pid, "VmRSS")
}

/// Peak resident memory, in bytes.
pub fn peak_rss(pid: u32) -> io::Result<u64> {
    status_field(pid, "VmHWM")
}

/// Threads in the process.
pub fn threads(pid: u32) -> io::Result<u64> {
    status_field(pid, "Threads")
}

/// Open file descriptors.
pub fn open_fds(pid: u32) -> io::Result<usize> {
    Ok(fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// The host's TCP memory in pages (what `tcp_mem` is counted against) and the orphaned
/// sockets (closed by their process, still holding data), from `/proc/net/sockstat`.
pub fn tcp_memory() -> io::Result<(u64, u64)> {
    let sockstat = fs::read_to_string("/proc/net/sockstat")?;
    let tcp = sockstat
        .lines()
        .find_map(|l| l.strip_prefix("TCP:"))
        .ok_or_else(|| io::Error::other("no TCP line in /proc/net/sockstat"))?;
    let fields: Vec<&str> = tcp.split_whitespace().collect();
    let field = |name: &str| {
        fields
            .iter()
            .position(|&f| f == name)
            .and_then(|i| fields.get(i + 1)?.parse().ok())
            .ok_or_else(|| io::Error::other(format!("no TCP {name} in /proc/net/sockstat")))
    };
    Ok((field("mem")?, field("orphan")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss(me).unwrap() > 0);
        assert!(peak_rss(me).unwrap() >= rss(me).unwrap() / 2);
        assert!(threads(me).unwrap() >= 1);
        assert!(open_fds(me).unwrap() >= 3);
        tcp_memory().unwrap();
        // Spins until the CPU time read moves (it counts in clock ticks), within a ceiling;
        // `black_box` keeps an optimised build from folding the loop away.
        let before = cpu_time(me).unwrap();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while cpu_time(me).unwrap() <= before {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "the CPU time read did not move in 30 s of spinning"
            );
            for i in 0..1_000_000u64 {
                x = std::hint::black_box(x.wrapping_add(i));
            }
        }
    }
}
