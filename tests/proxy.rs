//! `--proxy-protocol` against real sockets: the PROXY header by hand against both servers,
//! then a real HAProxy (`send-proxy-v2`) in front of two reactor binaries, driven by
//! loadgen from several loopback addresses, and in front of each server with `--tls-cert`
//! too, with `openssl s_client` through it.

// This crate uses the line client, the server starter and the binary helper only.
#[allow(dead_code)]
mod common;

use std::net::SocketAddr;

use evloop::proxy::{self, Version};

/// A header naming `client` as the connection's source, as a balancer in front of `server`
/// would send it.
fn header(version: Version, client: &str, server: SocketAddr) -> Vec<u8> {
    proxy::encode(version, client.parse().unwrap(), server)
}

/// The suite, run against each server: `proxy_suite!(evloop::reactor::spawn)`.
macro_rules! proxy_suite {
    ($spawn:path) => {
        use super::*;
        use common::{start, Client};
        use evloop::protocol::TOO_MANY_FROM_ADDRESS;

        fn proxied(configure: impl FnOnce(&mut evloop::ServerConfig)) -> evloop::Running {
            start($spawn, |c| {
                c.proxy_protocol = true;
                configure(c);
            })
        }

        #[test]
        fn either_version_then_lines_in_the_same_write() {
            let server = proxied(|_| {});
            for version in [Version::V1, Version::V2] {
                let mut c = Client::connect(server.tcp);
                let first = [
                    header(version, "192.0.2.1:4000", server.tcp),
                    b"alice\n".to_vec(),
                ];
                c.send(&first.concat());
                assert_eq!(c.line(), b"Welcome!\n", "{version:?}");
                assert_eq!(c.line(), b"Hello, alice!\n");
                c.send(b"exit\n");
                assert_eq!(c.rest(), b"");
            }
            let stats = server.shutdown().unwrap();
            assert_eq!((stats.connections, stats.messages), (2, 2), "{stats:?}");
        }

        #[test]
        fn a_header_split_across_writes_is_waited_for() {
            let server = proxied(|_| {});
            let mut c = Client::connect(server.tcp);
            let whole = header(Version::V1, "192.0.2.1:4000", server.tcp);
            for part in whole.chunks(7) {
                c.send(part);
            }
            c.send(b"bob\n");
            assert_eq!(c.line(), b"Welcome!\n");
            assert_eq!(c.line(), b"Hello, bob!\n");
            drop(c);
            server.shutdown().unwrap();
        }

        #[test]
        fn no_header_means_no_greeting() {
            let server = proxied(|_| {});
            let mut garbage = Client::connect(server.tcp);
            garbage.send(b"hello\n");
            assert_eq!(garbage.rest(), b"", "closed, not greeted, not answered");
            // The bytes of a v2 signature and then nonsense.
            let mut broken = Client::connect(server.tcp);
            broken.send(b"\r\n\r\n\0\r\nQUIT\n\x99\x11\x00\x0c");
            assert_eq!(broken.rest(), b"");
            // Nothing at all: closed at the header's deadline.
            let mut silent = Client::connect(server.tcp);
            assert_eq!(silent.rest(), b"");
            let stats = server.shutdown().unwrap();
            assert_eq!(stats.proxy_rejected, 3, "{stats:?}");
            assert_eq!(stats.connections, 0, "none was served");
        }

        #[test]
        fn the_address_in_the_header_is_the_one_limited() {
            let server = proxied(|c| c.max_connections_per_ip = 1);
            let mut first = Client::connect(server.tcp);
            first.send(&header(Version::V2, "192.0.2.1:1", server.tcp));
            assert_eq!(first.line(), b"Welcome!\n");
            let mut again = Client::connect(server.tcp);
            again.send(&header(Version::V1, "192.0.2.1:2", server.tcp));
            assert_eq!(again.rest(), TOO_MANY_FROM_ADDRESS);
            // Another client behind the same balancer address is someone else.
            let mut other = Client::connect(server.tcp);
            other.send(&header(Version::V2, "192.0.2.2:3", server.tcp));
            assert_eq!(other.line(), b"Welcome!\n");
            other.send(b"x\n");
            assert_eq!(other.line(), b"Hello, x!\n");
            drop((first, other));
            let stats = server.shutdown().unwrap();
            assert_eq!(
                (stats.connections, stats.refused_per_ip),
                (2, 1),
                "{stats:?}"
            );
        }

        #[test]
        fn local_is_answered_like_any_client() {
            let server = proxied(|_| {});
            // A v2 header naming addresses of two families is written as LOCAL.
            let local = proxy::encode(Version::V2, "[::1]:1".parse().unwrap(), server.tcp);
            let unknown = b"PROXY UNKNOWN\r\n".to_vec();
            for header in [local, unknown] {
                let mut c = Client::connect(server.tcp);
                c.send(&header);
                assert_eq!(c.line(), b"Welcome!\n");
                c.send(b"health\n");
                assert_eq!(c.line(), b"Hello, health!\n");
            }
            server.shutdown().unwrap();
        }

        #[test]
        fn a_header_is_never_a_line() {
            // A header longer than the longest line allowed, and a greeting-less server.
            let server = proxied(|c| {
                c.protocol.max_line = 8;
                c.protocol.greeting.clear();
            });
            let mut c = Client::connect(server.tcp);
            let long = header(
                Version::V1,
                "[2001:db8::1]:65535",
                "[2001:db8::2]:65535".parse().unwrap(),
            );
            assert!(long.len() > 8);
            c.send(&[long, b"hi\n".to_vec()].concat());
            assert_eq!(c.line(), b"Hello, hi!\n");
            drop(c);
            let stats = server.shutdown().unwrap();
            assert_eq!(stats.messages, 1);
        }
    };
}

mod reactor {
    proxy_suite!(evloop::reactor::spawn);
}

mod threaded {
    proxy_suite!(evloop::threaded::spawn);
}

/// HAProxy in TCP mode, sending `send-proxy-v2` to its backends, on a front socket of
/// its own. The front end's socket is bound here, on port 0, and handed to HAProxy as
/// descriptor 3 (`bind fd@3`): no port to guess, and connections made before HAProxy is up
/// wait in its backlog.
#[cfg(target_os = "linux")]
struct Balancer {
    child: std::process::Child,
    front: SocketAddr,
    dir: std::path::PathBuf,
}

#[cfg(target_os = "linux")]
impl Balancer {
    fn start(name: &str, backends: &[SocketAddr]) -> Balancer {
        use std::io::Write;
        use std::os::unix::process::CommandExt;
        use std::process::{Command, Stdio};

        let haproxy = "haproxy";
        if Command::new(haproxy).arg("-v").output().is_err() {
            panic!("this test needs HAProxy: `apt-get install haproxy` (Debian's package)");
        }
        let front = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let front_addr = front.local_addr().unwrap();
        let dir =
            std::env::temp_dir().join(format!("evloop-haproxy-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("haproxy.cfg");
        let mut cfg = std::fs::File::create(&config).unwrap();
        write!(
            cfg,
            "global\n    maxconn 1000\n\n\
             defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\n\
             frontend clients\n    bind fd@3\n    default_backend servers\n\n\
             backend servers\n    balance roundrobin\n"
        )
        .unwrap();
        for (i, backend) in backends.iter().enumerate() {
            writeln!(cfg, "    server s{i} {backend} send-proxy-v2").unwrap();
        }
        drop(cfg);

        let mut command = Command::new(haproxy);
        command
            .args(["-f", config.to_str().unwrap(), "-db"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let fd = std::os::fd::AsRawFd::as_raw_fd(&front);
        // SAFETY: between fork and exec only dup2 and fcntl run, which are async-signal-safe.
        // dup2 onto another number clears close-on-exec; onto the same number it would not,
        // so that case clears the flag itself.
        unsafe {
            command.pre_exec(move || {
                if fd == 3 {
                    let flags = libc::fcntl(3, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("start haproxy");
        Balancer {
            child,
            front: front_addr,
            dir,
        }
    }

    /// Stops HAProxy and returns what it logged.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut log = String::new();
        let _ = std::io::Read::read_to_string(&mut self.child.stderr.take().unwrap(), &mut log);
        let _ = std::fs::remove_dir_all(&self.dir);
        log
    }
}

/// HAProxy in front of two reactors, as docs/proxy.md's snippet configures it, driven by
/// loadgen from three loopback addresses with 10 connections each. Each reactor allows 10
/// connections per address: without the headers all 30 would come from HAProxy's one
/// address and most would be refused.
#[cfg(target_os = "linux")]
#[test]
fn haproxy_in_front_of_two_reactors() {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    let backends: Vec<common::Binary> = (0..2)
        .map(|_| {
            common::Binary::start_with_env(
                env!("CARGO_BIN_EXE_reactor"),
                &[
                    "--no-udp",
                    "--proxy-protocol",
                    "--max-connections-per-ip",
                    "10",
                ],
                &[("RUST_LOG", "evloop=debug")],
            )
        })
        .collect();
    let balancer = Balancer::start("plain", &[backends[0].tcp, backends[1].tcp]);
    let front_addr = balancer.front;

    let sources: Vec<std::net::IpAddr> =
        (2..5).map(|i| Ipv4Addr::new(127, 0, 0, i).into()).collect();
    let report = loadgen::run(&loadgen::Options {
        addr: front_addr,
        connections: 30,
        duration: None,
        messages: Some(6_000),
        timeout: Duration::from_secs(5),
        sources: sources.clone(),
        ..loadgen::Options::default()
    })
    .expect("loadgen through haproxy");
    let haproxy_log = balancer.stop();
    assert_eq!(report.errors(), 0, "{report:?}\nhaproxy: {haproxy_log}");
    assert_eq!(report.connected, 30);
    assert_eq!(report.messages, 6_000);

    let mut per_backend = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for backend in backends {
        backend.signal(libc::SIGTERM);
        let (code, log) = backend.wait();
        assert_eq!(code, Some(0), "{log}");
        let accepted: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("(PROXY header from 127.0.0.1:"))
            .collect();
        for line in &accepted {
            let client = line
                .split("accepted ")
                .nth(1)
                .unwrap()
                .split(':')
                .next()
                .unwrap();
            seen.insert(client.to_string());
        }
        per_backend.push(accepted.len());
        assert!(
            log.contains("(0 refused busy, 0 refused per address)"),
            "{log}"
        );
    }
    eprintln!("connections per backend: {per_backend:?}; client addresses seen: {seen:?}");
    assert!(per_backend.iter().all(|&n| n > 0), "{per_backend:?}");
    assert_eq!(per_backend.iter().sum::<usize>(), 30);
    let expected: std::collections::BTreeSet<String> =
        sources.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        seen, expected,
        "the reactors saw the clients' own addresses"
    );
}

/// HAProxy in TCP mode (`send-proxy-v2`) in front of a server run with `--proxy-protocol`
/// and `--tls-cert`, as a TLS backend is deployed behind a balancer: the PROXY header comes
/// first on the socket, then the TLS handshake. `openssl s_client` through HAProxy is
/// served; `--max-connections-per-ip 1` counts the address in the header, and a second
/// client from an address already served is refused in TLS terms.
#[cfg(all(target_os = "linux", feature = "tls"))]
fn haproxy_in_front_of_a_tls_server(exe: &str, name: &str) {
    use std::io::{BufReader, Write};
    use std::net::TcpStream;
    use std::process::Command;

    use common::tls::{client_connection, line, read_to_eof, run, tls_client_over, tool};

    let openssl = tool("openssl", "openssl");
    let cert = common::tls::Certificate::new();
    let mut args = cert.args();
    args.extend(
        [
            "--no-udp",
            "--proxy-protocol",
            "--max-connections-per-ip",
            "1",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = common::Binary::start_with_env(exe, &args, &[("RUST_LOG", "evloop=debug")]);
    let balancer = Balancer::start(name, &[server.tcp]);
    let front = balancer.front;
    // A connection to HAProxy from the loopback address `source`.
    let from = |source: [u8; 4]| -> TcpStream {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(&SocketAddr::from((source, 0)).into())
            .expect("bind a loopback source address");
        socket.connect(&front.into()).expect("connect to haproxy");
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
        stream
    };

    // A client from 127.0.0.2 holds its address's one connection.
    let mut held = BufReader::new(tls_client_over(from([127, 0, 0, 2]), &cert));
    assert_eq!(line(&mut held), "Welcome!\n");

    // openssl s_client, from 127.0.0.1: another address, served.
    let (ok, out) = run(
        Command::new(openssl).args([
            "s_client",
            "-connect",
            &front.to_string(),
            "-ign_eof",
            "-CAfile",
            cert.cert.to_str().unwrap(),
        ]),
        b"through\nexit\n",
    );
    assert!(ok, "s_client through haproxy failed:\n{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    let greeted = out.find("Welcome!\n").expect("the greeting");
    let answered = out.find("Hello, through!\n").expect("the reply");
    assert!(greeted < answered, "{out}");

    // A second client from 127.0.0.2 begins its handshake and is sent one alert record,
    // then a clean EOF.
    let mut refused = from([127, 0, 0, 2]);
    let mut hello = Vec::new();
    client_connection(&cert).write_tls(&mut hello).unwrap();
    refused.write_all(&hello).unwrap();
    assert_eq!(read_to_eof(&mut refused), evloop::tls::REFUSAL);

    // The held one is still served.
    held.get_mut().write_all(b"held\n").unwrap();
    assert_eq!(line(&mut held), "Hello, held!\n");
    drop((held, refused));
    let haproxy_log = balancer.stop();
    server.signal(libc::SIGTERM);
    let (code, log) = server.wait();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("(0 refused busy, 1 refused per address)"),
        "{log}\nhaproxy: {haproxy_log}"
    );
    assert!(!log.contains("TLS handshake failed"), "{log}");
}

#[cfg(all(target_os = "linux", feature = "tls"))]
#[test]
fn haproxy_in_front_of_a_tls_reactor() {
    haproxy_in_front_of_a_tls_server(env!("CARGO_BIN_EXE_reactor"), "tls-reactor");
}

#[cfg(all(target_os = "linux", feature = "tls"))]
#[test]
fn haproxy_in_front_of_a_tls_threaded_server() {
    haproxy_in_front_of_a_tls_server(env!("CARGO_BIN_EXE_threaded"), "tls-threaded");
}
