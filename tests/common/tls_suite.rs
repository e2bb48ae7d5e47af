//! The TLS suite, run against both servers (see its macro's doc).

/// The TLS suite: `tls_suite!(evloop::reactor::spawn)` defines each test below as a
/// `#[test]` of the same name at the root of the test crate, run against the server the
/// given spawn function starts with a certificate of the test's, and a module `tls_suite`
/// with what the tests use. The clients are ones nobody here wrote (`openssl s_client`,
/// `socat`), a rustls client, and raw sockets. The crate must declare `mod common;`, on
/// Linux with the `tls` feature (rcgen makes the certificates).
#[macro_export]
macro_rules! tls_suite {
    ($spawn:path) => {
        /// What the tests of the suite use.
        #[allow(unused_imports)]
        mod tls_suite {
            pub use std::io::{BufRead, BufReader, Read, Write};
            pub use std::net::TcpStream;
            pub use std::process::Command;
            pub use std::time::{Duration, Instant};

            pub use $crate::common::tls::{
                client_connection, line, raw, read_to_eof, run, tls_client, tls_client_over, tool,
                Certificate,
            };
            pub use $crate::common::{start, IO_TIMEOUT};

            /// The server serving TLS with `cert`, started through the library.
            pub fn tls_server(
                cert: &Certificate,
                configure: impl FnOnce(&mut evloop::ServerConfig),
            ) -> evloop::Running {
                start($spawn, |c| {
                    c.udp = None;
                    c.tls = Some(cert.files());
                    configure(c);
                })
            }

            /// `openssl s_client` forced to one TLS version: greeted, answered, and on `exit` it is sent
            /// `close_notify` (which `-msg` prints) before the connection closes.
            pub fn s_client_session(version: &str, shown_as: &str, in_messages: &str) {
                let openssl = tool("openssl", "openssl");
                let cert = Certificate::new();
                let server = tls_server(&cert, |_| {});
                let (ok, out) = run(
                    Command::new(openssl).args([
                        "s_client",
                        "-connect",
                        &server.tcp.to_string(),
                        version,
                        "-msg",
                        "-ign_eof",
                        "-CAfile",
                        cert.cert.to_str().unwrap(),
                    ]),
                    b"X\nexit\n",
                );
                assert!(ok, "s_client failed:\n{out}");
                assert!(out.contains(&format!("Protocol  : {shown_as}")), "{out}");
                assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
                let greeted = out.find("Welcome!\n").expect("the greeting");
                let answered = out.find("Hello, X!\n").expect("the reply");
                let closed = out
                    .find(&format!(
                        "<<< {in_messages}, Alert [length 0002], warning close_notify"
                    ))
                    .map(|i| i + 1)
                    .unwrap_or_else(|| panic!("no close_notify from the server:\n{out}"));
                assert!(greeted < answered && answered < closed, "{out}");
                let stats = server.shutdown().unwrap();
                assert_eq!((stats.connections, stats.messages), (1, 1), "{stats:?}");
                assert_eq!(stats.tls_rejected, 0);
            }
        }

        #[test]
        fn openssl_s_client_tls1_2_is_greeted_answered_and_closed_with_close_notify() {
            use tls_suite::*;
            s_client_session("-tls1_2", "TLSv1.2", "TLS 1.2");
        }

        #[test]
        fn openssl_s_client_tls1_3_is_greeted_answered_and_closed_with_close_notify() {
            use tls_suite::*;
            s_client_session("-tls1_3", "TLSv1.3", "TLS 1.3");
        }

        #[test]
        fn socat_with_the_certificate_as_its_ca_is_served() {
            use tls_suite::*;
            let socat = tool("socat", "socat");
            let cert = Certificate::new();
            let server = tls_server(&cert, |_| {});
            let address = format!(
                "OPENSSL:localhost:{},cafile={}",
                server.tcp.port(),
                cert.cert.display()
            );
            let (ok, out) = run(Command::new(socat).args(["-", &address]), b"carol\nexit\n");
            assert!(ok, "socat failed:\n{out}");
            assert_eq!(out, "Welcome!\nHello, carol!\n");
            server.shutdown().unwrap();
        }

        /// At `--max-connections`, and at `--max-connections-per-ip`, a TLS client is turned
        /// away with a TLS alert where it expects the server's first record: `openssl
        /// s_client` reports the alert, not the "wrong version number" that plaintext
        /// `ERR server busy` would make of it.
        #[test]
        fn a_tls_client_refused_at_the_limits_is_sent_an_alert_not_plaintext() {
            use tls_suite::*;
            let openssl = tool("openssl", "openssl");
            let cert = Certificate::new();
            for per_address in [false, true] {
                let server = tls_server(&cert, |c| match per_address {
                    true => c.max_connections_per_ip = 1,
                    false => c.max_connections = 1,
                });
                let mut held = BufReader::new(tls_client(server.tcp, &cert));
                assert_eq!(line(&mut held), "Welcome!\n");
                let (ok, out) = run(
                    Command::new(openssl).args([
                        "s_client",
                        "-connect",
                        &server.tcp.to_string(),
                        "-CAfile",
                        cert.cert.to_str().unwrap(),
                    ]),
                    b"",
                );
                assert!(!ok, "s_client was served:\n{out}");
                assert!(out.contains("alert internal error"), "{out}");
                assert!(!out.contains("wrong version number"), "{out}");
                drop(held);
                let stats = server.shutdown().unwrap();
                let refused = (stats.refused, stats.refused_per_ip);
                let expected = if per_address { (0, 1) } else { (1, 0) };
                assert_eq!(refused, expected, "{stats:?}");
            }
        }

        #[test]
        fn a_client_that_never_finishes_its_handshake_is_closed_at_the_handshake_timeout() {
            use tls_suite::*;
            let cert = Certificate::new();
            let timeout = Duration::from_millis(300);
            let server = tls_server(&cert, |c| c.handshake_timeout = timeout);
            let accepted = Instant::now();
            let mut silent = raw(server.tcp);
            // Half a record header: a handshake begun and never carried on.
            silent.write_all(&[0x16, 0x03]).unwrap();
            assert_eq!(read_to_eof(&mut silent), b"", "closed without a greeting");
            assert!(accepted.elapsed() >= timeout, "{:?}", accepted.elapsed());
            // Meanwhile and after, a real client is served.
            let mut ok = BufReader::new(tls_client(server.tcp, &cert));
            assert_eq!(line(&mut ok), "Welcome!\n");
            drop(ok);
            let stats = server.shutdown().unwrap();
            assert_eq!(stats.tls_rejected, 1, "{stats:?}");
        }

        #[test]
        fn a_handshake_cut_off_in_the_middle_is_closed_and_counted() {
            use tls_suite::*;
            let cert = Certificate::new();
            let server = tls_server(&cert, |_| {});
            // A real ClientHello, of which only the first half is sent before the client leaves.
            let mut hello = Vec::new();
            client_connection(&cert).write_tls(&mut hello).unwrap();
            let mut cut = raw(server.tcp);
            cut.write_all(&hello[..hello.len() / 2]).unwrap();
            cut.shutdown(std::net::Shutdown::Write).unwrap();
            assert_eq!(read_to_eof(&mut cut), b"");
            let stats = server.shutdown().unwrap();
            assert_eq!(stats.tls_rejected, 1, "{stats:?}");
        }

        #[test]
        fn a_tls_client_that_pipelines_2_mib_before_reading_gets_every_reply_in_order() {
            use tls_suite::*;
            let cert = Certificate::new();
            let server = tls_server(&cert, |_| {});
            // The replies (about 2 MiB) must fit somewhere while the client is not reading: the
            // server holds at most its output bound, so the rest waits in this client's receive
            // buffer, made large enough before connecting. A write that cannot go on fails the test
            // at the write timeout instead of hanging it.
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.set_recv_buffer_size(8 << 20).unwrap();
            socket.connect(&server.tcp.into()).unwrap();
            let socket: TcpStream = socket.into();
            socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            socket.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
            let mut client = tls_client_over(socket, &cert);
            let lines: usize = 2 << 20 >> 7;
            let mut input = Vec::with_capacity(2 << 20);
            for i in 0..lines {
                // 128 bytes a line.
                input.extend_from_slice(format!("{i:0>127}\n").as_bytes());
            }
            client
                .write_all(&input)
                .expect("the server reads all of it");
            client.flush().unwrap();
            let mut reader = BufReader::new(client);
            assert_eq!(line(&mut reader), "Welcome!\n");
            for i in 0..lines {
                assert_eq!(
                    line(&mut reader),
                    format!("Hello, {i:0>127}!\n"),
                    "line {i}"
                );
            }
            drop(reader);
            let stats = server.shutdown().unwrap();
            assert_eq!(stats.messages, lines as u64);
        }
    };
}
