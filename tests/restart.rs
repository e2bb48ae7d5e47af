//! Restarting the reactor without dropping a client (docs/systemd.md, "Restarting without
//! dropping a client"): SIGUSR2 hands the listening sockets to a successor, the old process
//! drains, and loadgen, opening connection after connection all the while, sees no error.
//! Then what goes wrong: a successor that fails to start, `--threads 2`, SIGTERM during a
//! drain.
//!
//! Linux only: the test process makes itself a child subreaper, so that the successor,
//! orphaned when the old process exits, becomes its child and can be waited for and
//! cleaned up. Every wait below waits for an event (a log line, an exit) with a generous
//! bound that only stops a broken test from hanging.
#![cfg(target_os = "linux")]

#[allow(dead_code)] // only the line client is used here
mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{udp_client, udp_roundtrip, Client, IO_TIMEOUT};
use loadgen::Options;

/// The lines a process writes to a pipe, read on a thread of their own so that a test
/// can wait for one with a bound.
struct Lines {
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn of(pipe: impl Read + Send + 'static) -> Lines {
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            lines,
            seen: Vec::new(),
        }
    }

    /// The next line containing `needle`; panics, with every line seen, after IO_TIMEOUT.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {needle:?}; seen:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Every line until the pipe closes (every process writing to it has exited).
    fn rest(&mut self) -> Vec<String> {
        let deadline = Instant::now() + IO_TIMEOUT;
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
        self.seen.clone()
    }
}

/// The reactor binary, with its stdout and stderr read as lines; killed on drop.
struct Reactor {
    child: Child,
    stdout: Lines,
    stderr: Lines,
    tcp: SocketAddr,
    udp: Option<SocketAddr>,
}

impl Reactor {
    fn start(exe: &str, args: &[&str]) -> Reactor {
        Reactor::start_notifying(exe, args, None)
    }

    /// With `NOTIFY_SOCKET` set to `notify`, as systemd would.
    fn start_notifying(exe: &str, args: &[&str], notify: Option<&Path>) -> Reactor {
        become_subreaper();
        let mut command = Command::new(exe);
        command.env_remove("NOTIFY_SOCKET");
        if let Some(path) = notify {
            command.env("NOTIFY_SOCKET", path);
        }
        let mut child = command
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("LISTEN_FDS")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the reactor");
        let mut stdout = Lines::of(child.stdout.take().unwrap());
        let stderr = Lines::of(child.stderr.take().unwrap());
        let line = stdout.wait_for("listening");
        let (tcp, udp) = addresses(&line);
        Reactor {
            child,
            stdout,
            stderr,
            tcp,
            udp,
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill only sends a signal to our own child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// SIGUSR2, then the successor's pid from the old process's log.
    fn hand_over(&mut self) -> Successor {
        self.signal(libc::SIGUSR2);
        let line = self.stderr.wait_for("handed over to pid ");
        let pid = line
            .split("handed over to pid ")
            .nth(1)
            .and_then(|rest| rest.split(';').next())
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("no pid in {line:?}"));
        assert_ne!(
            pid,
            self.child.id() as i32,
            "the successor is another process"
        );
        Successor(Some(pid))
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The successor: not our child but our grandchild, ours once the old process exits
/// (we are a subreaper). Killed on drop unless it was waited for.
struct Successor(Option<i32>);

impl Successor {
    /// SIGTERM, then waits for it; returns its exit code.
    fn stop(&mut self) -> Option<i32> {
        let pid = self.0.take()?;
        // SAFETY: kill and waitpid act on the successor's pid, which is ours to reap (we
        // are its subreaper and the old process has exited), so it cannot have been reused.
        unsafe {
            assert_eq!(libc::kill(pid, libc::SIGTERM), 0);
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
        }
    }
}

impl Drop for Successor {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            // SAFETY: as in `stop`; if the old process is still alive the successor is its
            // child, waitpid fails, and the old process's own guard ends it.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// Orphans (the successor, once the old process exits) become this process's children.
fn become_subreaper() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER only sets a flag on this process.
    assert_eq!(
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
        0
    );
}

fn addresses(startup_line: &str) -> (SocketAddr, Option<SocketAddr>) {
    let mut tcp = None;
    let mut udp = None;
    for field in startup_line.split_whitespace().skip(1) {
        match field.split_once('=') {
            Some(("tcp", a)) => tcp = a.parse().ok(),
            Some(("udp", a)) => udp = a.parse().ok(),
            _ => panic!("unexpected startup line {startup_line:?}"),
        }
    }
    (tcp.expect("tcp= in the startup line"), udp)
}

fn served(addr: SocketAddr, line: &str) {
    let mut client = Client::greeted(addr);
    client.send(format!("{line}\n").as_bytes());
    assert_eq!(client.line(), format!("Hello, {line}!\n").as_bytes());
}

/// Reconnecting every 10 requests, loadgen opens connections all through the hand-over;
/// connections opened after the old process exited prove that the successor took over, and
/// no error proves that no client was dropped on the way.
#[test]
fn a_hand_over_on_sigusr2_drops_no_client_of_a_run_that_keeps_connecting() {
    let mut old = Reactor::start(env!("CARGO_BIN_EXE_reactor"), &["--drain-timeout", "10"]);
    let old_pid = old.child.id();
    // A client of the old process from before the hand-over, served by it after.
    let mut held = Client::greeted(old.tcp);

    let options = Options {
        addr: old.tcp,
        connections: 10,
        duration: Some(Duration::from_secs(4)),
        messages: None,
        timeout: Duration::from_secs(5),
        requests_per_connection: Some(10),
        ..Options::default()
    };
    // (when, connections opened so far), from loadgen's progress every 20 ms.
    let opened: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
    let (flowing_tx, flowing) = mpsc::channel();
    let load = {
        let opened = Arc::clone(&opened);
        std::thread::spawn(move || {
            loadgen::run_with_progress(&options, |p| {
                opened
                    .lock()
                    .unwrap()
                    .push((Instant::now(), p.connections_opened));
                if p.connections_opened >= 300 {
                    let _ = flowing_tx.send(());
                }
            })
        })
    };
    flowing
        .recv_timeout(IO_TIMEOUT)
        .expect("loadgen opens connections");

    let mut successor = old.hand_over();
    // The successor's startup line, on the stdout it inherited: the same sockets.
    let line = old.stdout.wait_for("listening");
    assert_eq!(addresses(&line), (old.tcp, old.udp));

    // The old process still serves the connection it had, and ends once it closes.
    held.send(b"after the hand-over\nexit\n");
    assert_eq!(held.line(), b"Hello, after the hand-over!\n");
    assert_eq!(held.rest(), b"");
    drop(held);
    let status = old.child.wait().unwrap();
    let exited = Instant::now();
    assert!(status.success(), "the old process exits 0: {status}");
    let summary = old.stderr.wait_for("served ");
    assert!(summary.contains("connections"), "{summary}");

    let report = load.join().unwrap().expect("loadgen runs");
    assert_eq!(report.errors(), 0, "{report}");
    // Counted conservatively: the first progress after the exit counts as before it.
    let before = opened
        .lock()
        .unwrap()
        .iter()
        .find(|(at, _)| *at >= exited)
        .map_or(report.connections_opened, |&(_, n)| n);
    let after = report.connections_opened - before;
    eprintln!(
        "connections opened: {before} before the old process (pid {old_pid}) exited, \
         {after} after; {} messages, {} errors",
        report.messages,
        report.errors()
    );
    assert!(
        before > 0 && after > 0,
        "before {before}, after {after}: {report}"
    );

    // The successor serves, TCP and UDP, and stops as any server does.
    served(old.tcp, "successor");
    let udp = udp_client();
    assert_eq!(
        udp_roundtrip(&udp, old.udp.unwrap(), b"datagram"),
        b"Hello, datagram!"
    );
    assert_eq!(successor.stop(), Some(0));
    old.stderr.wait_for("served ");
}

/// An upgrade that put a broken executable in place: the successor exits at once, and the
/// old process logs one error and serves on as before, its clients and new ones alike.
#[test]
fn a_successor_that_fails_to_start_leaves_the_old_process_serving() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("restart-broken-upgrade-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("reactor");
    std::fs::hard_link(env!("CARGO_BIN_EXE_reactor"), &exe)
        .or_else(|_| std::fs::copy(env!("CARGO_BIN_EXE_reactor"), &exe).map(|_| ()))
        .unwrap();
    let mut old = Reactor::start(exe.to_str().unwrap(), &["--no-udp"]);
    let mut held = Client::greeted(old.tcp);

    // The upgrade: a new file at the path (the running one is untouched), which fails.
    std::fs::remove_file(&exe).unwrap();
    std::fs::write(&exe, "#!/bin/sh\necho 'broken upgrade' >&2\nexit 3\n").unwrap();
    let executable = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&exe, executable).unwrap();
    old.signal(libc::SIGUSR2);
    let error = old.stderr.wait_for("restart failed");
    assert!(error.contains("exit status: 3"), "{error}");
    assert!(error.contains("still serving"), "{error}");

    held.send(b"still here\n");
    assert_eq!(held.line(), b"Hello, still here!\n");
    served(old.tcp, "new client");
    drop(held);
    old.signal(libc::SIGTERM);
    assert!(old.child.wait().unwrap().success());
    let logged = old.stderr.rest();
    let errors: Vec<_> = logged.iter().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "one error line: {logged:#?}");
    assert!(logged.iter().any(|l| l.contains("broken upgrade")));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Several loops have several SO_REUSEPORT listeners, and only one is handed over: so
/// `--threads 2` refuses SIGUSR2 in one line and serves on.
#[test]
fn sigusr2_with_threads_is_refused_in_one_line() {
    let mut server = Reactor::start(env!("CARGO_BIN_EXE_reactor"), &["--threads", "2"]);
    server.signal(libc::SIGUSR2);
    let refused = server.stderr.wait_for("SIGUSR2 ignored");
    assert!(refused.contains("--threads 2"), "{refused}");
    served(server.tcp, "two loops");
    server.signal(libc::SIGTERM);
    assert!(server.child.wait().unwrap().success());
}

/// SIGTERM while the old process drains is the usual quick shutdown: its clients get a
/// clean EOF at once rather than the drain timeout, and the successor serves on.
#[test]
fn sigterm_during_a_drain_shuts_the_old_process_down_at_once() {
    let mut old = Reactor::start(env!("CARGO_BIN_EXE_reactor"), &["--no-udp"]);
    let mut held = Client::greeted(old.tcp);
    let mut successor = old.hand_over();
    held.send(b"draining\n");
    assert_eq!(held.line(), b"Hello, draining!\n");
    let signalled = Instant::now();
    old.signal(libc::SIGTERM);
    assert_eq!(held.rest(), b"", "a clean EOF");
    assert!(old.child.wait().unwrap().success());
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "not the 30 s drain timeout"
    );
    served(old.tcp, "successor");
    assert_eq!(successor.stop(), Some(0));
}

/// Under systemd (played here by a socket in `NOTIFY_SOCKET`): the old process names the
/// successor the main process, the successor's `READY=1` goes to the old process and not to
/// systemd, and the successor, now the service, says `STOPPING=1` when it stops. The old
/// process's own exit is not the service's stop, and says nothing.
#[test]
fn under_systemd_the_old_process_hands_the_main_pid_to_its_successor() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("restart-notify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let systemd = UnixDatagram::bind(&path).unwrap();
    systemd.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let told = || {
        let mut message = [0; 256];
        let n = systemd.recv(&mut message).expect("a notification");
        String::from_utf8_lossy(&message[..n]).trim().to_string()
    };

    let mut old =
        Reactor::start_notifying(env!("CARGO_BIN_EXE_reactor"), &["--no-udp"], Some(&path));
    assert_eq!(told(), "READY=1");
    let mut successor = old.hand_over();
    assert_eq!(told(), format!("MAINPID={}", successor.0.unwrap()));
    assert!(old.child.wait().unwrap().success());
    served(old.tcp, "successor");
    assert_eq!(successor.stop(), Some(0));
    assert_eq!(told(), "STOPPING=1");
    systemd.set_nonblocking(true).unwrap();
    let mut more = [0; 256];
    let extra = systemd
        .recv(&mut more)
        .map(|n| String::from_utf8_lossy(&more[..n]).to_string());
    assert!(extra.is_err(), "nothing else: {extra:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--metrics` on a fixed port: the successor, started with the same arguments, binds the
/// same address while the old process still listens on it, and from the hand-over on every
/// scrape of that address reaches the successor.
#[test]
fn after_a_hand_over_the_metrics_port_is_the_successors() {
    // A fixed port is the point here: take a free one from the kernel and give it back.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let metrics: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut old = Reactor::start(
        env!("CARGO_BIN_EXE_reactor"),
        &["--no-udp", "--metrics", &metrics.to_string()],
    );
    old.stdout.wait_for(&format!("metrics on {metrics}"));
    served(old.tcp, "before");
    let accepted = |addr| {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        std::io::Write::write_all(&mut stream, b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        let line = response
            .lines()
            .find(|l| l.starts_with("evloop_connections_accepted_total "))
            .unwrap_or_else(|| panic!("no accepted count in {response}"));
        line.rsplit(' ').next().unwrap().parse::<u64>().unwrap()
    };
    assert_eq!(accepted(metrics), 1, "the old process's count");

    let mut successor = old.hand_over();
    // The old process has let go of the port: the successor, which has accepted no
    // connection yet, answers.
    assert_eq!(accepted(metrics), 0, "the successor's count");
    served(old.tcp, "after");
    assert_eq!(accepted(metrics), 1);
    // With no connection left to drain, the old process exits, and the successor becomes
    // ours to stop and wait for.
    assert!(old.child.wait().unwrap().success());
    assert_eq!(successor.stop(), Some(0));
}
