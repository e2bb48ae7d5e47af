//! Living under systemd: socket activation and readiness notification.
//!
//! - **Socket activation.** systemd (or `systemd-socket-activate`) can bind the sockets
//!   itself and pass them to the server: descriptors 3, 4, ... with `LISTEN_FDS` saying
//!   how many and `LISTEN_PID` whose they are. Then the server serves on those instead of
//!   binding, so it can be started on the first connection and restarted without closing
//!   the port. [`take_inherited`] finds them (a stream socket and at most one datagram
//!   socket); [`net::bind`](crate::net::bind) uses them when there are any.
//! - **Readiness.** A `Type=notify` service tells systemd when it is ready, and when it
//!   begins to stop, over the datagram socket named in `NOTIFY_SOCKET` (the `sd-notify`
//!   crate does that). Without `NOTIFY_SOCKET` nothing is sent.
//!
//! Unix only; elsewhere there is nothing to inherit and nobody to notify.

use std::io;
use std::net::{TcpListener, UdpSocket};

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
        "serving on the sockets systemd passed (LISTEN_FDS={})",
        count.unwrap_or(0)
    );
    Ok(inherited)
}

#[cfg(not(unix))]
pub fn take_inherited() -> io::Result<Inherited> {
    Ok(Inherited::default())
}

/// Tells systemd the server is ready (`READY=1`), when it runs as `Type=notify`.
pub fn notify_ready() {
    notify("READY=1");
}

/// Tells systemd the server has begun to stop (`STOPPING=1`).
pub fn notify_stopping() {
    notify("STOPPING=1");
}

fn notify(state: &str) {
    #[cfg(unix)]
    {
        let state = match state {
            "READY=1" => sd_notify::NotifyState::Ready,
            _ => sd_notify::NotifyState::Stopping,
        };
        if let Err(e) = sd_notify::notify(false, &[state]) {
            log::warn!("cannot notify systemd: {e}");
        }
    }
    #[cfg(not(unix))]
    let _ = state;
}
