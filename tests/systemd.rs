//! The servers under systemd: socket activation (sockets passed in `LISTEN_FDS`, by
//! `systemd-socket-activate` from Debian's `systemd` package, which needs no running
//! systemd, and by hand for a TCP and a UDP socket together) and readiness notification
//! (`READY=1`, `STOPPING=1` on `NOTIFY_SOCKET`). Linux only.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Kills the child if a test fails midway.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn startup_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim().to_string()
}

fn greeted_and_answered(addr: SocketAddr) {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "Welcome!\n");
    (&stream).write_all(b"systemd\n").unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "Hello, systemd!\n");
}

fn activated_by_systemd_socket_activate(exe: &str) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let child = Command::new("systemd-socket-activate")
        .args([
            "-l",
            &addr.to_string(),
            exe,
            "--no-udp",
            "--listen",
            "127.0.0.1:1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(child) = child else {
        panic!("systemd-socket-activate is missing: apt-get install systemd");
    };
    let mut child = Killed(child);
    // It listens first and starts the server on the first connection; wait for the first.
    let deadline = Instant::now() + IO_TIMEOUT;
    let first = loop {
        match TcpStream::connect(addr) {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("systemd-socket-activate never listened on {addr}: {e}"),
        }
    };
    drop(first);
    // The server serves on the socket it was given, not on its --listen address.
    assert_eq!(
        startup_line(&mut child.0),
        format!("listening tcp={addr} udp=off")
    );
    greeted_and_answered(addr);
}

#[test]
fn the_reactor_serves_on_the_socket_systemd_socket_activate_passes() {
    activated_by_systemd_socket_activate(env!("CARGO_BIN_EXE_reactor"));
}

#[test]
fn the_threaded_server_serves_on_the_socket_systemd_socket_activate_passes() {
    activated_by_systemd_socket_activate(env!("CARGO_BIN_EXE_threaded"));
}

#[test]
fn a_tcp_and_a_udp_socket_passed_together_are_both_served() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (tcp_addr, udp_addr) = (tcp.local_addr().unwrap(), udp.local_addr().unwrap());
    let (tcp_fd, udp_fd) = (tcp.as_raw_fd(), udp.as_raw_fd());
    let mut command = Command::new("sh");
    // As systemd does: descriptors 3 and 4, LISTEN_PID the server's own pid (the shell's,
    // which `exec` keeps), LISTEN_FDS how many.
    command
        .args([
            "-c",
            r#"LISTEN_PID=$$ LISTEN_FDS=2 exec "$0" --listen 127.0.0.1:1 --udp 127.0.0.1:1"#,
            env!("CARGO_BIN_EXE_reactor"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec only dup, dup2 and fcntl run, which are async-signal-
    // safe. Copying both out of the way first keeps one from landing on the other, and
    // clearing close-on-exec (which a dup2 onto the same number would keep) makes the
    // server inherit them.
    unsafe {
        command.pre_exec(move || {
            let check = |r: i32| {
                if r < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(r)
                }
            };
            let (tcp_copy, udp_copy) = (check(libc::dup(tcp_fd))?, check(libc::dup(udp_fd))?);
            for (from, to) in [(tcp_copy, 3), (udp_copy, 4)] {
                check(libc::dup2(from, to))?;
                check(libc::fcntl(to, libc::F_SETFD, 0))?;
            }
            Ok(())
        });
    }
    let mut child = Killed(command.spawn().unwrap());
    let line = startup_line(&mut child.0);
    if line.is_empty() {
        let mut stderr = String::new();
        let _ = child.0.stderr.take().unwrap().read_to_string(&mut stderr);
        panic!("the server did not start: {stderr}");
    }
    assert_eq!(line, format!("listening tcp={tcp_addr} udp={udp_addr}"));
    drop((tcp, udp));
    greeted_and_answered(tcp_addr);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    client.send_to(b"datagram", udp_addr).unwrap();
    let mut reply = [0; 64];
    let n = client.recv(&mut reply).unwrap();
    assert_eq!(&reply[..n], b"Hello, datagram!");
}

#[test]
fn ready_and_stopping_are_told_to_notify_socket() {
    let dir = std::env::temp_dir().join(format!("evloop-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let notify = UnixDatagram::bind(&path).unwrap();
    notify.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_reactor"))
            .args(["--listen", "127.0.0.1:0"])
            .env("NOTIFY_SOCKET", &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let line = startup_line(&mut child.0);
    let mut message = [0; 256];
    let mut told = || {
        let n = notify.recv(&mut message).unwrap();
        String::from_utf8_lossy(&message[..n]).trim().to_string()
    };
    assert_eq!(told(), "READY=1", "after {line}");
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) }, 0);
    assert_eq!(told(), "STOPPING=1");
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    let _ = child.0.stdout.as_mut().map(|s| s.read_to_string(&mut rest));
    let _ = std::fs::remove_dir_all(&dir);
}
