//! Living under systemd: socket activation and readiness notification.
//!
//! - **Socket activation.** systemd (or `systemd-socket-activate`) can bind the sockets
//!   itself and pass them to the server: descriptors 3, 4, ... with `LISTEN_FDS` saying
//!   how many and `LISTEN_PID` whose they are. Then the server serves on those instead of
//!   binding, so it can be started on the first connection and restarted without closing
//!   the port. [`take_inherited`] finds them (a stream socket and at most one datagram
//!   socket); [`net::bind`](crate::net::bind) uses them when there are any.
//! - **Readiness.** A `Type=notify` service tells systemd when it is ready, and when it
//!   begins to stop, in one datagram each (`READY=1`, `STOPPING=1`) to the unix socket
//!   named in `NOTIFY_SOCKET`. Without `NOTIFY_SOCKET` nothing is sent.
//! - **A restart** ([`crate::restart`]) bends both: the successor inherits its
//!   predecessor's sockets the way systemd passes them, and its `NOTIFY_SOCKET` is its
//!   predecessor's own, so that its `READY=1` tells the predecessor. Whatever it says
//!   after that goes to the service manager, whose socket (if any) it finds in
//!   [`MANAGER_NOTIFY_SOCKET`]; and the predecessor tells systemd, with `MAINPID=`, which
//!   process is the service now.
//!
//! Unix only; elsewhere there is nothing to inherit and nobody to notify.

use std::ffi::OsString;
use std::io;
use std::net::{TcpListener, UdpSocket};
use std::sync::OnceLock;

/// During a restart, the service manager's `NOTIFY_SOCKET` for the successor, whose own
/// `NOTIFY_SOCKET` is its predecessor's; empty when there is no service manager.
pub const MANAGER_NOTIFY_SOCKET: &str = "EVLOOP_MANAGER_NOTIFY_SOCKET";

/// The sockets systemd passed, if any.
#[derive(Debug, Default)]
pub struct Inherited {
    /// A listening stream socket.
    pub tcp: Option<TcpListener>,
    /// A datagram socket.
    pub udp: Option<UdpSocket>,
}

/// Takes the sockets passed in `LISTEN_FDS` to this process, once: later calls (a second
/// loop of `--threads`) find none. The variables are removed, so that no child inherits
/// them. Anything but one stream and at most one datagram socket is a clear error.
#[cfg(unix)]
pub fn take_inherited() -> io::Result<Inherited> {
    use std::os::fd::FromRawFd;
    use std::sync::Mutex;

    /// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
    const FIRST: i32 = 3;
    static TAKEN: Mutex<bool> = Mutex::new(false);

    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok());
    if *taken || !for_us {
        return Ok(Inherited::default());
    }
    *taken = true;
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(name);
    }
    let mut inherited = Inherited::default();
    for fd in FIRST..FIRST + count.unwrap_or(0) {
        // SAFETY: systemd passed these descriptors to this process for it to own, and this
        // runs once, so nothing else owns them.
        let socket = unsafe { socket2::Socket::from_raw_fd(fd) };
        socket.set_cloexec(true)?;
        let kind = socket.r#type()?;
        let slot_taken = if kind == socket2::Type::STREAM {
            inherited.tcp.replace(socket.into()).is_some()
        } else if kind == socket2::Type::DGRAM {
            inherited.udp.replace(socket.into()).is_some()
        } else {
            return Err(io::Error::other(format!(
                "LISTEN_FDS: descriptor {fd} is neither a stream nor a datagram socket"
            )));
        };
        if slot_taken {
            return Err(io::Error::other(
                "LISTEN_FDS: more than one socket of a kind (give one stream and at most one datagram socket)",
            ));
        }
    }
    if inherited.tcp.is_none() {
        return Err(io::Error::other(
            "LISTEN_FDS: no stream socket among the sockets passed",
        ));
    }
    log::info!(
        "serving on the inherited sockets (LISTEN_FDS={})",
        count.unwrap_or(0)
    );
    Ok(inherited)
}

/// Nothing is ever passed where there is no socket activation.
#[cfg(not(unix))]
pub fn take_inherited() -> io::Result<Inherited> {
    Ok(Inherited::default())
}

/// Where notifications go, read from the environment once.
struct Targets {
    /// `NOTIFY_SOCKET`: who waits for `READY=1` (systemd, or a predecessor).
    ready: Option<OsString>,
    /// The service manager, for everything else.
    manager: Option<OsString>,
}

fn targets() -> &'static Targets {
    static TARGETS: OnceLock<Targets> = OnceLock::new();
    TARGETS.get_or_init(|| {
        let nonempty = |s: OsString| (!s.is_empty()).then_some(s);
        let ready = std::env::var_os("NOTIFY_SOCKET").and_then(nonempty);
        let manager = match std::env::var_os(MANAGER_NOTIFY_SOCKET) {
            Some(manager) => nonempty(manager),
            None => ready.clone(),
        };
        Targets { ready, manager }
    })
}

/// The service manager's notification socket, if there is one: what a successor is told
/// in [`MANAGER_NOTIFY_SOCKET`].
pub fn manager_socket() -> Option<OsString> {
    targets().manager.clone()
}

/// Tells systemd (or the predecessor that started this process) the server is ready
/// (`READY=1`), when it runs as `Type=notify`.
pub fn notify_ready() {
    notify(targets().ready.as_ref(), "READY=1");
}

/// Tells systemd the server has begun to stop (`STOPPING=1`).
pub fn notify_stopping() {
    notify(targets().manager.as_ref(), "STOPPING=1");
}

/// Tells systemd that `pid`, a successor this process started, is the service's main
/// process from now on (`MAINPID=`). Sent while this process is still the main one, which
/// is what systemd's default `NotifyAccess=main` accepts.
pub fn notify_main_pid(pid: u32) {
    notify(targets().manager.as_ref(), &format!("MAINPID={pid}"));
}

fn notify(socket: Option<&OsString>, state: &str) {
    let Some(socket) = socket else {
        return;
    };
    if let Err(e) = send(socket, state) {
        log::warn!("cannot send {state} to {}: {e}", socket.to_string_lossy());
    }
}

/// One datagram to the unix socket `socket`; on Linux a name starting with `@` is in the
/// abstract namespace, as systemd's protocol says.
#[cfg(unix)]
fn send(socket: &OsString, state: &str) -> io::Result<()> {
    use std::os::unix::net::UnixDatagram;

    let sender = UnixDatagram::unbound()?;
    let message = format!("{state}\n");
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(name) =
        std::os::unix::ffi::OsStrExt::as_bytes(socket.as_os_str()).strip_prefix(b"@")
    {
        #[cfg(target_os = "android")]
        use std::os::android::net::SocketAddrExt;
        #[cfg(target_os = "linux")]
        use std::os::linux::net::SocketAddrExt;
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sender.send_to_addr(message.as_bytes(), &address)?;
        return Ok(());
    }
    sender.send_to(message.as_bytes(), socket)?;
    Ok(())
}

#[cfg(not(unix))]
fn send(_socket: &OsString, _state: &str) -> io::Result<()> {
    Ok(())
}
