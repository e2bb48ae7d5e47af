//! Restarting the reactor without dropping a client (Unix): on SIGUSR2 the running process
//! starts its successor on the very listening sockets it serves, and once the successor
//! says it is ready, stops accepting and drains.
//!
//! Why the same sockets rather than a second one on the port (SO_REUSEPORT): a listening
//! socket is one accept queue. Handed over, it keeps every connection the kernel has
//! queued and not yet accepted, and both processes accept from it until the old one lets
//! go. Two SO_REUSEPORT sockets are two queues, and the connections queued on the one that
//! closes are reset (unless a host-wide sysctl, `net.ipv4.tcp_migrate_req`, moves them).
//! The same holds for the UDP socket: its unread datagrams stay where the successor reads.
//!
//! How, step by step:
//! 1. [`Restart`], recorded at startup, names the executable and the arguments. The path is
//!    read before an upgrade can replace the file, so the successor is whatever is at that
//!    path when SIGUSR2 comes: the new version.
//! 2. `Successor::start` runs it with the listening sockets as descriptors 3 and 4, and
//!    `LISTEN_FDS` and `LISTEN_PID` set, exactly as systemd passes sockets, which
//!    [`systemd::take_inherited`](crate::systemd::take_inherited) already accepts; and with
//!    a private `NOTIFY_SOCKET`, a unix datagram socket of ours, so that the successor's
//!    ordinary `READY=1` tells us it serves.
//! 3. `Handover::check` reads that socket (it is on the loop's poll) and notices the
//!    successor's exit (SIGCHLD, on the poll too) and [`READY_TIMEOUT`]. Ready: under
//!    systemd it sends `MAINPID=` so systemd follows the successor, and the loop drains
//!    (`event_loop.rs`). Exited or late: one error line, the successor is killed, and the
//!    loop carries on as if nothing had happened, still accepting.
//!
//! This module owns the successor's life until it is ready; what draining means for the
//! connections is the loop's. Only the first loop restarts, and only with `--threads 1`:
//! several loops have several SO_REUSEPORT listeners, which would need handing over
//! together, and a successor that takes more than one stream socket.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, UdpSocket};
use mio::{Registry, Token};

/// How long a successor may take from its start to its `READY=1`. The reactor is ready
/// milliseconds after exec (it binds nothing: its sockets are inherited); ten seconds
/// allow for a cold disk and a loaded machine, and bound how long a hung successor
/// leaves the restart in doubt. The old process accepts all the while.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Default for `--drain-timeout`: how long the old process keeps serving the connections it
/// has after the hand-over, before it shuts down as at SIGTERM. Clients of this protocol
/// hold a connection for a few lines and then `exit`; half a minute lets them finish, and
/// bounds how long two versions run side by side.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What a restart runs, recorded when the process starts.
#[derive(Clone, Debug)]
// Where there is no SIGUSR2 (Windows) nothing starts a successor, so the command is kept
// but never read.
#[cfg_attr(not(unix), allow(dead_code))]
pub struct Restart {
    executable: PathBuf,
    arguments: Vec<OsString>,
    drain_timeout: Duration,
}

impl Restart {
    /// This process's executable and arguments, and how long to drain after a hand-over.
    /// Call it first thing in `main`: on Linux the executable's path is read from
    /// `/proc/self/exe`, which after an upgrade has replaced the file names the old,
    /// deleted one.
    pub fn recorded_at_startup(drain_timeout: Duration) -> io::Result<Restart> {
        Ok(Restart {
            executable: std::env::current_exe()?,
            arguments: std::env::args_os().skip(1).collect(),
            drain_timeout,
        })
    }

    /// How long the old process serves its connections after the hand-over.
    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout
    }
}

/// A loop's part in restarts: whether it may restart, and the successor being started.
#[derive(Default)]
pub(crate) struct Handover {
    restart: Option<Restart>,
    #[cfg(unix)]
    successor: Option<Successor>,
}

impl Handover {
    /// A loop that restarts as `restart` says on SIGUSR2.
    pub(crate) fn new(restart: Restart) -> Handover {
        Handover {
            restart: Some(restart),
            ..Handover::default()
        }
    }

    /// How long to drain once handed over (none without a [`Restart`]).
    pub(crate) fn drain_timeout(&self) -> Duration {
        self.restart
            .as_ref()
            .map_or(Duration::ZERO, Restart::drain_timeout)
    }

    /// SIGUSR2: starts the successor on `listener` (and `udp`), registering its
    /// notification socket as `token`; or says in one line why not. No `listener`: the loop
    /// is shutting down, or has handed over already.
    pub(crate) fn request(
        &mut self,
        threads: usize,
        listener: Option<&TcpListener>,
        udp: Option<&UdpSocket>,
        registry: &Registry,
        token: Token,
        now: Instant,
    ) {
        let Some(restart) = &self.restart else {
            // Only the first loop restarts; the others see the same signal and leave it.
            return;
        };
        if threads > 1 {
            log::error!(
                "SIGUSR2 ignored: a restart hands over one listening socket, and --threads \
                 {threads} has {threads}; restart --threads 1, or behind systemd's socket"
            );
            return;
        }
        let Some(listener) = listener else {
            log::warn!("SIGUSR2 ignored: no longer accepting (shutting down or handed over)");
            return;
        };
        #[cfg(unix)]
        {
            if let Some(successor) = &self.successor {
                log::warn!(
                    "SIGUSR2 ignored: successor pid {} is starting already",
                    successor.pid()
                );
                return;
            }
            match Successor::start(restart, listener, udp, now, registry, token) {
                Ok(successor) => {
                    log::info!(
                        "restart: started successor pid {}, {}; accepting until it is ready",
                        successor.pid(),
                        restart.executable.display()
                    );
                    self.successor = Some(successor);
                }
                Err(e) => {
                    log::error!("restart failed: cannot start a successor: {e}; still serving")
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = (restart, listener, udp, registry, token, now);
            log::error!("SIGUSR2 ignored: restarting needs Unix");
        }
    }

    /// When [`check`](Self::check) must look even if nothing happens: the successor's
    /// [`READY_TIMEOUT`].
    pub(crate) fn deadline(&self) -> Option<Instant> {
        #[cfg(unix)]
        {
            self.successor.as_ref().map(|s| s.deadline)
        }
        #[cfg(not(unix))]
        {
            None
        }
    }

    /// Looks at the successor being started, if any. Returns its pid once it is ready,
    /// after telling systemd (when the service runs under it) to follow it. A successor
    /// that exited or is late is logged once, killed and forgotten.
    pub(crate) fn check(&mut self, registry: &Registry, now: Instant) -> Option<u32> {
        #[cfg(unix)]
        {
            let successor = self.successor.as_mut()?;
            let outcome = successor.check(now);
            let pid = successor.pid();
            match outcome {
                Startup::Starting => return None,
                Startup::Ready => {
                    // The successor is the service now. Told while this process is still
                    // the main one, which is whom systemd takes it from.
                    crate::systemd::notify_main_pid(pid);
                    self.forget(registry);
                    return Some(pid);
                }
                Startup::Failed(why) => {
                    log::error!(
                        "restart failed: successor pid {pid} {why}; killed it, still serving"
                    );
                    if let Some(successor) = self.successor.take() {
                        successor.kill(registry);
                    }
                }
            }
        }
        #[cfg(not(unix))]
        let _ = (registry, now);
        None
    }

    /// A stop while a successor starts: the operator wants the service gone, so the
    /// successor goes too.
    pub(crate) fn abandon(&mut self, registry: &Registry) {
        #[cfg(unix)]
        if let Some(successor) = self.successor.take() {
            log::warn!(
                "stopping: killed successor pid {}, which was not ready",
                successor.pid()
            );
            successor.kill(registry);
        }
        #[cfg(not(unix))]
        let _ = registry;
    }

    /// Lets go of a ready successor: it outlives this process. (Until this process exits,
    /// a successor that exits stays a zombie: nobody waits for it here, and its exit is
    /// reaped by whoever inherits it then.)
    #[cfg(unix)]
    fn forget(&mut self, registry: &Registry) {
        if let Some(mut successor) = self.successor.take() {
            let _ = registry.deregister(&mut successor.notify);
        }
    }
}

/// Where a successor's start stands.
#[cfg(unix)]
enum Startup {
    Starting,
    Ready,
    /// Exited, or not ready in time: why, to finish "successor pid N ...".
    Failed(String),
}

/// A successor process being started, and the private socket its `READY=1` comes to. The
/// socket's directory is removed when this is dropped.
#[cfg(unix)]
struct Successor {
    child: std::process::Child,
    notify: mio::net::UnixDatagram,
    directory: PathBuf,
    deadline: Instant,
}

#[cfg(unix)]
impl Successor {
    /// Runs `restart`'s executable with `listener` as descriptor 3 and `udp` as 4.
    fn start(
        restart: &Restart,
        listener: &TcpListener,
        udp: Option<&UdpSocket>,
        now: Instant,
        registry: &Registry,
        token: Token,
    ) -> io::Result<Successor> {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        use std::process::Command;

        let directory = private_directory()?;
        let path = directory.join("notify");
        let bound = std::os::unix::net::UnixDatagram::bind(&path);
        let notify = match bound.and_then(|s| s.set_nonblocking(true).map(|()| s)) {
            Ok(socket) => mio::net::UnixDatagram::from_std(socket),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&directory);
                return Err(e);
            }
        };
        let mut command = Command::new("/bin/sh");
        // LISTEN_PID must be the successor's own pid, which is unknown until after fork;
        // and setting a variable between fork and exec is not async-signal-safe in a
        // process with threads. So a shell sets it: `$$` is the shell's pid, which `exec`
        // hands to the program unchanged. `$0` is the program, `$@` its arguments.
        command
            .arg("-c")
            .arg(r#"LISTEN_PID=$$ exec "$0" "$@""#)
            .arg(&restart.executable)
            .args(&restart.arguments)
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES")
            .env("NOTIFY_SOCKET", &path)
            .env(
                crate::systemd::MANAGER_NOTIFY_SOCKET,
                crate::systemd::manager_socket().unwrap_or_default(),
            );
        let mut sockets = [listener.as_raw_fd(), -1];
        let count = match udp {
            Some(udp) => {
                sockets[1] = udp.as_raw_fd();
                2
            }
            None => 1,
        };
        command.env("LISTEN_FDS", count.to_string());
        // SAFETY: between fork and exec only fcntl and dup2 run, which are async-signal-
        // safe, on integers copied in; nothing allocates or takes a lock.
        unsafe {
            command.pre_exec(move || place_inherited(&sockets[..count]));
        }
        let mut successor = Successor {
            child: match command.spawn() {
                Ok(child) => child,
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&directory);
                    return Err(e);
                }
            },
            notify,
            directory,
            deadline: now + READY_TIMEOUT,
        };
        if let Err(e) = registry.register(&mut successor.notify, token, mio::Interest::READABLE) {
            successor.kill(registry);
            return Err(e);
        }
        Ok(successor)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Ready once `READY=1` came; failed if the successor exited first, or the deadline
    /// passed. Exit is looked at first: a successor that said it was ready and then died
    /// serves nobody.
    fn check(&mut self, now: Instant) -> Startup {
        match self.child.try_wait() {
            Ok(Some(status)) => {
                return Startup::Failed(format!("exited ({status}) before it was ready"))
            }
            Ok(None) => {}
            Err(e) => return Startup::Failed(format!("cannot be waited for: {e}")),
        }
        // Edge-triggered: read every datagram there is.
        let mut message = [0; 512];
        let mut ready = false;
        loop {
            match self.notify.recv(&mut message) {
                Ok(n) => {
                    ready |= message[..n]
                        .split(|&b| b == b'\n')
                        .any(|line| line == b"READY=1");
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Startup::Failed(format!("cannot be heard from: {e}")),
            }
        }
        if ready {
            Startup::Ready
        } else if now >= self.deadline {
            Startup::Failed(format!("was not ready within {READY_TIMEOUT:?}"))
        } else {
            Startup::Starting
        }
    }

    /// SIGKILL, and wait for it. Before `READY=1` the reactor has accepted nothing (it says
    /// so before its first accept), so no client is lost with it.
    fn kill(mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.notify);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(unix)]
impl Drop for Successor {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

/// A new directory only this user can enter, for the notification socket: nobody else
/// can tell us a successor is ready.
#[cfg(unix)]
fn private_directory() -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    use std::sync::atomic::{AtomicU32, Ordering};

    static RESTARTS: AtomicU32 = AtomicU32::new(0);
    let n = RESTARTS.fetch_add(1, Ordering::Relaxed);
    let directory = std::env::temp_dir().join(format!("evloop-restart-{}-{n}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&directory)?;
    Ok(directory)
}

/// In the child between fork and exec: puts `sockets` at descriptors 3, 4, ... as socket
/// activation has them, without close-on-exec. Each is first copied above that range
/// (close-on-exec, so the copies vanish at exec), so that placing one cannot overwrite
/// another that happens to sit at 3 or 4.
#[cfg(unix)]
fn place_inherited(sockets: &[std::os::fd::RawFd]) -> io::Result<()> {
    /// The first descriptor socket activation passes (`SD_LISTEN_FDS_START`).
    const FIRST: i32 = 3;
    let check = |r: i32| {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    };
    let mut copies = [0; 2];
    let above = FIRST + sockets.len() as i32;
    for (copy, &fd) in copies.iter_mut().zip(sockets) {
        // SAFETY: fcntl only duplicates a descriptor this process holds.
        *copy = check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, above) })?;
    }
    for (target, &copy) in (FIRST..).zip(&copies[..sockets.len()]) {
        // SAFETY: dup2 only duplicates a descriptor; the copy is never the target, so the
        // duplicate is real and has close-on-exec cleared.
        check(unsafe { libc::dup2(copy, target) })?;
    }
    Ok(())
}
