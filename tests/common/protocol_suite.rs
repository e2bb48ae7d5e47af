//! The protocol suite, run against both servers (see its macro's doc).

/// The protocol suite: `protocol_suite!(evloop::reactor::spawn)` defines each test below as a
/// `#[test]` of the same name at the root of the test crate, run against the server the
/// given spawn function starts, and a module `protocol_suite` with what the tests use.
/// Each test is written only here, so each runs against every server the suite is
/// instantiated for. The crate must declare `mod common;`.
#[macro_export]
macro_rules! protocol_suite {
    ($spawn:path) => {
        /// What the tests of the suite use: the shared helpers, the settings they give the
        /// server, and the suite's own helpers.
        mod protocol_suite {
            pub use evloop::protocol::{Framing, Mode};
            pub use evloop::ServerConfig;
            pub use std::time::Duration;

            pub use $crate::common::{start, udp_client, udp_roundtrip, Client, IO_TIMEOUT};

            /// Every reply is `BIG_REPLY` bytes, so a few lines owe the client more than the
            /// kernel's socket buffers on both ends hold: the server is sure to be stuck writing.
            pub fn big_replies(config: &mut ServerConfig, shutdown_grace: Duration) {
                config.protocol.mode =
                    Mode::Custom(std::sync::Arc::new(|_: &[u8], out: &mut Vec<u8>| {
                        out.resize(out.len() + BIG_REPLY, b'x')
                    }));
                config.protocol.greeting.clear();
                config.shutdown_grace = shutdown_grace;
            }

            pub const BIG_REPLY: usize = 1 << 20;
            pub const BIG_LINES: usize = 16;
        }

        #[test]
        fn greeting_then_one_reply_per_line() {
            use protocol_suite::*;
            let server = start($spawn, |_| {});
            let mut c = Client::greeted(server.tcp);
            c.send(b"alice\n");
            assert_eq!(c.line(), b"Hello, alice!\n");
            c.send(b"bob\r\n\n");
            assert_eq!(c.line(), b"Hello, bob!\n");
            assert_eq!(c.line(), b"Hello, !\n");
            drop(c);
            server.shutdown().unwrap();
        }

        #[test]
        fn empty_greeting_sends_nothing() {
            use protocol_suite::*;
            let server = start($spawn, |c| c.protocol.greeting.clear());
            let mut c = Client::connect(server.tcp);
            c.send(b"x\n");
            assert_eq!(c.line(), b"Hello, x!\n");
            drop(c);
            server.shutdown().unwrap();
        }

        #[test]
        fn bytes_are_bytes() {
            use protocol_suite::*;
            let server = start($spawn, |_| {});
            let mut c = Client::greeted(server.tcp);
            c.send(b"\xff\xfe\x00caf\xc3\xa9\r\r\n");
            assert_eq!(c.line(), b"Hello, \xff\xfe\x00caf\xc3\xa9\r!\n");
            drop(c);
            server.shutdown().unwrap();
        }

        #[test]
        fn echo_mode() {
            use protocol_suite::*;
            let server = start($spawn, |c| c.protocol.mode = Mode::Echo);
            let mut c = Client::greeted(server.tcp);
            c.send(b"same\r\nagain\n");
            assert_eq!(c.line(), b"same\n");
            assert_eq!(c.line(), b"again\n");
            drop(c);
            server.shutdown().unwrap();
        }

        #[test]
        fn a_line_sent_one_byte_at_a_time() {
            use protocol_suite::*;
            let server = start($spawn, |_| {});
            let mut c = Client::greeted(server.tcp);
            for byte in b"one byte at a time\n" {
                c.send(&[*byte]);
            }
            assert_eq!(c.line(), b"Hello, one byte at a time!\n");
            drop(c);
            server.shutdown().unwrap();
        }

        #[test]
        fn a_thousand_lines_in_one_write() {
            use protocol_suite::*;
            let server = start($spawn, |_| {});
            let mut c = Client::greeted(server.tcp);
            let batch: Vec<u8> = (0..1000)
                .flat_map(|i| format!("line {i}\n").into_bytes())
                .collect();
            c.send(&batch);
            for i in 0..1000 {
                assert_eq!(c.line(), format!("Hello, line {i}!\n").as_bytes());
            }
            drop(c);
            server.shutdown().unwrap();
        }

        #[test]
        fn exit_sends_what_is_owed_then_closes_cleanly() {
            use protocol_suite::*;
            let server = start($spawn, |_| {});
            let mut c = Client::greeted(server.tcp);
            // Lines after `exit`, and a lot of them, must not turn the close into a reset that
            // destroys the replies the client has not read yet.
            let mut input = b"a\nb\nexit\n".to_vec();
            input.extend(std::iter::repeat_n(b"ignored\n".as_slice(), 128 * 1024).flatten());
            c.send(&input);
            assert_eq!(c.rest(), b"Hello, a!\nHello, b!\n");
            drop(c);
            server.shutdown().unwrap();
        }

        #[test]
        fn half_close_answers_the_final_line() {
            use protocol_suite::*;
            let server = start($spawn, |_| {});
            let mut c = Client::greeted(server.tcp);
            c.send(b"first\nlast without newline");
            c.half_close();
            assert_eq!(c.rest(), b"Hello, first!\nHello, last without newline!\n");
            drop(c);
            server.shutdown().unwrap();
        }

        #[test]
        fn a_line_too_long_is_refused_and_closed() {
            use protocol_suite::*;
            let server = start($spawn, |c| c.protocol.max_line = 16);
            let mut c = Client::greeted(server.tcp);
            c.send(b"exactly sixteen!\n");
            assert_eq!(c.line(), b"Hello, exactly sixteen!!\n");
            // No newline ever comes: the server must refuse once the 17th byte arrives.
            c.send(b"seventeen bytes..");
            assert_eq!(c.rest(), b"ERR line too long\n");
            drop(c);
            server.shutdown().unwrap();
        }

        #[test]
        fn raw_framing_answers_messages_without_newlines() {
            use protocol_suite::*;
            let server = start($spawn, |c| c.protocol.framing = Framing::Raw);
            let mut c = Client::connect(server.tcp);
            assert_eq!(c.exactly(8), b"Welcome!");
            c.send(b"bob");
            assert_eq!(c.exactly(11), b"Hello, bob!");
            c.send(b"alice\r\n");
            assert_eq!(c.exactly(13), b"Hello, alice!");
            c.send(b"exit\n");
            assert_eq!(c.rest(), b"");
            drop(c);
            server.shutdown().unwrap();
        }

        #[test]
        fn raw_echo_is_a_plain_echo_server() {
            use protocol_suite::*;
            let server = start($spawn, |c| {
                c.protocol.framing = Framing::Raw;
                c.protocol.mode = Mode::Echo;
                c.protocol.greeting.clear();
            });
            let mut c = Client::connect(server.tcp);
            c.send(b"as is\r\n");
            assert_eq!(c.exactly(7), b"as is\r\n");
            drop(c);
            server.shutdown().unwrap();
        }

        #[test]
        fn udp_hello_and_empty_datagram() {
            use protocol_suite::*;
            let server = start($spawn, |_| {});
            let udp = server.udp.expect("udp is on by default");
            assert_eq!(
                udp.port(),
                server.tcp.port(),
                "TCP and UDP share the port number"
            );
            let socket = udp_client();
            assert_eq!(udp_roundtrip(&socket, udp, b"bob\n"), b"Hello, bob!");
            assert_eq!(
                udp_roundtrip(&socket, udp, b"no newline"),
                b"Hello, no newline!"
            );
            assert_eq!(udp_roundtrip(&socket, udp, b""), b"Hello, !");
            server.shutdown().unwrap();
        }

        #[test]
        fn udp_echo_returns_the_payload() {
            use protocol_suite::*;
            let server = start($spawn, |c| c.protocol.mode = Mode::Echo);
            let socket = udp_client();
            let udp = server.udp.unwrap();
            assert_eq!(udp_roundtrip(&socket, udp, b"as is\n"), b"as is\n");
            let big = vec![b'x'; 60_000];
            assert_eq!(udp_roundtrip(&socket, udp, &big), big);
            server.shutdown().unwrap();
        }

        #[test]
        fn no_udp_serves_tcp_only() {
            use protocol_suite::*;
            let server = start($spawn, |c| c.udp = None);
            assert!(server.udp.is_none());
            let mut c = Client::greeted(server.tcp);
            c.send(b"x\n");
            assert_eq!(c.line(), b"Hello, x!\n");
            drop(c);
            server.shutdown().unwrap();
        }

        #[test]
        fn max_connections_refuses_then_recovers() {
            use protocol_suite::*;
            let server = start($spawn, |c| c.max_connections = 2);
            let mut first = Client::greeted(server.tcp);
            let second = Client::greeted(server.tcp);
            let mut third = Client::connect(server.tcp);
            assert_eq!(third.rest(), b"ERR server busy\n");
            first.send(b"still served\n");
            assert_eq!(first.line(), b"Hello, still served!\n");
            first.send(b"exit\n");
            assert_eq!(first.rest(), b"");
            drop(first);
            // The server frees the slot when it sees our close, just after we make it: retry
            // until admitted, with a deadline only to fail rather than hang.
            let deadline = std::time::Instant::now() + IO_TIMEOUT;
            loop {
                let mut c = Client::connect(server.tcp);
                if c.line() == b"Welcome!\n" {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "never admitted again");
            }
            drop((second, third));
            let stats = server.shutdown().unwrap();
            assert!(stats.refused >= 1);
        }

        #[test]
        fn stop_delivers_and_counts() {
            use protocol_suite::*;
            let server = start($spawn, |_| {});
            let mut c = Client::greeted(server.tcp);
            c.send(b"a\nb\n");
            assert_eq!(c.line(), b"Hello, a!\n");
            assert_eq!(c.line(), b"Hello, b!\n");
            let udp = udp_client();
            udp_roundtrip(&udp, server.udp.unwrap(), b"u");
            server.stop();
            // The server closes the connection at shutdown with a clean EOF.
            assert_eq!(c.rest(), b"");
            drop(c);
            let stats = server.join().unwrap();
            assert_eq!(stats.connections, 1);
            assert_eq!(stats.messages, 3);
        }

        #[test]
        fn idle_timeout_closes_a_silent_connection() {
            use protocol_suite::*;
            let server = start($spawn, |c| {
                c.idle_timeout = Some(Duration::from_millis(200))
            });
            let mut c = Client::greeted(server.tcp);
            let started = std::time::Instant::now();
            assert_eq!(c.rest(), b"");
            assert!(started.elapsed() >= Duration::from_millis(150));
            drop(c);
            server.shutdown().unwrap();
        }

        #[test]
        fn a_line_that_never_ends_times_out_however_it_dribbles() {
            use protocol_suite::*;
            let line_timeout = Duration::from_millis(300);
            let server = start($spawn, |c| c.line_timeout = Some(line_timeout));
            let mut c = Client::greeted(server.tcp);
            c.send(b"ok\nslow");
            assert_eq!(c.line(), b"Hello, ok!\n");
            let started = std::time::Instant::now();
            // A slowloris client: a byte every 50 ms, never a newline. Every byte is input,
            // so only the line's own deadline can end this.
            let mut dribbler = c.stream().try_clone().unwrap();
            let dribbling = std::thread::spawn(move || {
                for _ in 0..100 {
                    if std::io::Write::write_all(&mut dribbler, b"z").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
            assert_eq!(c.rest(), b"ERR line timeout\n");
            assert!(started.elapsed() >= line_timeout - Duration::from_millis(50));
            dribbling.join().unwrap();
            server.shutdown().unwrap();
        }

        #[test]
        fn whole_lines_are_never_timed_however_slowly_they_come() {
            use protocol_suite::*;
            let server = start($spawn, |c| {
                c.line_timeout = Some(Duration::from_millis(200))
            });
            let mut c = Client::greeted(server.tcp);
            for i in 0..4 {
                std::thread::sleep(Duration::from_millis(100));
                c.send(format!("{i}\n").as_bytes());
                assert_eq!(c.line(), format!("Hello, {i}!\n").as_bytes());
            }
            c.send(b"exit\n");
            assert_eq!(c.rest(), b"");
            server.shutdown().unwrap();
        }

        #[test]
        fn connections_beyond_the_per_address_limit_are_refused() {
            use protocol_suite::*;
            use std::net::Ipv4Addr;
            let server = start($spawn, |c| c.max_connections_per_ip = 2);
            let local = Ipv4Addr::LOCALHOST;
            let mut first = Client::connect_from(local, server.tcp);
            assert_eq!(first.line(), b"Welcome!\n");
            let mut second = Client::connect_from(local, server.tcp);
            assert_eq!(second.line(), b"Welcome!\n");
            assert_eq!(
                Client::connect_from(local, server.tcp).rest(),
                b"ERR too many connections from your address\n"
            );
            // Another address is another client, served at once.
            let mut other = Client::connect_from(Ipv4Addr::new(127, 0, 0, 2), server.tcp);
            assert_eq!(other.line(), b"Welcome!\n");
            // A close gives the address its slot back.
            first.send(b"exit\n");
            assert_eq!(first.rest(), b"");
            let served = (0..200).find_map(|_| {
                let mut c = Client::connect_from(local, server.tcp);
                match c.line().as_slice() {
                    b"Welcome!\n" => Some(c),
                    _ => {
                        std::thread::sleep(Duration::from_millis(10));
                        None
                    }
                }
            });
            assert!(served.is_some(), "the freed slot is usable again");
            drop((second, other, served));
            let stats = server.shutdown().unwrap();
            assert!(stats.refused_per_ip >= 1, "{stats:?}");
            assert_eq!(stats.refused, 0, "per-address refusals are counted apart");
        }

        #[test]
        fn stop_closes_an_idle_client_at_once() {
            use protocol_suite::*;
            let server = start($spawn, |_| {});
            let mut idle = Client::greeted(server.tcp);
            let stopped = std::time::Instant::now();
            server.stop();
            assert_eq!(idle.rest(), b"", "a clean EOF");
            server.join().unwrap();
            // It owed nothing and held no line, so nothing waits for its EOF (the lingering
            // close would take 2 s), though the client keeps its end open.
            let took = stopped.elapsed();
            assert!(took < Duration::from_secs(1), "stop took {took:?}");
            drop(idle);
        }

        #[test]
        fn graceful_stop_answers_what_it_read_and_counts_exactly() {
            use protocol_suite::*;
            let server = start($spawn, |c| c.shutdown_grace = IO_TIMEOUT);
            let mut busy = Client::greeted(server.tcp);
            busy.send(b"one\ntwo\n");
            assert_eq!(busy.line(), b"Hello, one!\n");
            assert_eq!(busy.line(), b"Hello, two!\n");
            // A line that never ends is owed nothing: stopping is not the client's EOF.
            let mut partial = Client::greeted(server.tcp);
            partial.send(b"unfinished");
            assert_eq!(
                udp_roundtrip(&udp_client(), server.udp.unwrap(), b"udp\n"),
                b"Hello, udp!"
            );

            server.stop();
            assert_eq!(busy.rest(), b"");
            assert_eq!(partial.rest(), b"");
            drop((busy, partial));
            let stats = server.join().unwrap();
            let greetings = 2 * b"Welcome!\n".len() as u64;
            let tcp_out = greetings + b"Hello, one!\nHello, two!\n".len() as u64;
            let udp = (b"udp\n".len() as u64, b"Hello, udp!".len() as u64);
            // Whether the server read the unfinished line before it stopped is up to scheduling.
            let tcp_in = b"one\ntwo\n".len() as u64;
            let partial_in = b"unfinished".len() as u64;
            assert_eq!(
                (stats.connections, stats.refused, stats.messages),
                (2, 0, 3)
            );
            assert!(
                [tcp_in + udp.0, tcp_in + partial_in + udp.0].contains(&stats.bytes_in),
                "{stats:?}"
            );
            assert_eq!(stats.bytes_out, tcp_out + udp.1);
            assert_eq!((stats.udp_datagrams, stats.udp_dropped), (1, 0));
        }

        #[test]
        fn stop_delivers_every_reply_already_owed() {
            use protocol_suite::*;
            let server = start($spawn, |c| big_replies(c, IO_TIMEOUT));
            let mut c = Client::connect(server.tcp);
            c.send(&b"x\n".repeat(BIG_LINES));
            // The first byte back proves the server has read the lines: every reply is owed.
            c.exactly(1);
            server.stop();
            let rest = c.rest();
            assert_eq!(1 + rest.len(), BIG_LINES * (BIG_REPLY + 1));
            drop(c);
            let stats = server.join().unwrap();
            assert_eq!(stats.messages, BIG_LINES as u64);
            assert_eq!(stats.bytes_out, (BIG_LINES * (BIG_REPLY + 1)) as u64);
        }

        #[test]
        fn stop_gives_up_on_a_client_that_never_reads_after_the_grace() {
            use protocol_suite::*;
            let grace = Duration::from_millis(200);
            let server = start($spawn, |c| big_replies(c, grace));
            let mut c = Client::connect(server.tcp);
            c.send(&b"x\n".repeat(BIG_LINES));
            c.exactly(1);
            let started = std::time::Instant::now();
            let stats = server.shutdown().unwrap();
            let took = started.elapsed();
            assert!(took >= grace, "owed replies get the grace: {took:?}");
            assert!(
                took < IO_TIMEOUT / 2,
                "then the server stops anyway: {took:?}"
            );
            assert_eq!(stats.connections, 1);
        }

        /// A thousand connections open at once, each doing five lockstep round trips.
        #[test]
        fn a_thousand_concurrent_clients() {
            use protocol_suite::*;
            let (clients, rounds) = (1000, 5);
            evloop::net::raise_fd_limit().unwrap();
            let server = start($spawn, |_| {});
            let workers = 50;
            let per_worker = clients / workers;
            let all_open = std::sync::Barrier::new(workers);
            std::thread::scope(|scope| {
                for w in 0..workers {
                    let all_open = &all_open;
                    let addr = server.tcp;
                    std::thread::Builder::new()
                        .stack_size(256 * 1024)
                        .spawn_scoped(scope, move || {
                            let mut conns: Vec<Client> =
                                (0..per_worker).map(|_| Client::greeted(addr)).collect();
                            // Every connection of every worker is open before any round trip.
                            all_open.wait();
                            for round in 0..rounds {
                                for (i, c) in conns.iter_mut().enumerate() {
                                    c.send(format!("w{w} c{i} r{round}\n").as_bytes());
                                }
                                for (i, c) in conns.iter_mut().enumerate() {
                                    let expected = format!("Hello, w{w} c{i} r{round}!\n");
                                    assert_eq!(c.line(), expected.as_bytes());
                                }
                            }
                            drop(conns);
                        })
                        .unwrap();
                }
            });
            let stats = server.shutdown().unwrap();
            assert_eq!(stats.connections, (per_worker * workers) as u64);
            assert_eq!(stats.messages, (per_worker * workers * rounds) as u64);
        }
    };
}
