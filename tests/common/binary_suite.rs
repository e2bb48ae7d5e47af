//! The binary suite, run against both server binaries (see its macro's doc).

/// The binary suite: `binary_suite!(env!("CARGO_BIN_EXE_reactor"))` defines each test below
/// as a `#[test]` of the same name in a module `binary` of the test crate, run against the
/// given executable: what every server binary must do, whichever server it runs. The crate
/// must declare `mod common;`.
#[macro_export]
macro_rules! binary_suite {
    ($exe:expr) => {
        mod binary {
            use std::net::TcpListener;
            use std::process::Command;

            use $crate::common::{udp_client, udp_roundtrip, Binary, Client};

            /// Runs a binary to completion; returns its exit code and stderr.
            fn run(exe: &str, args: &[&str]) -> (Option<i32>, String) {
                let out = Command::new(exe).args(args).output().unwrap();
                (
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            }

            #[test]
            fn binary_prints_the_startup_line_and_serves_tcp_and_udp() {
                let server = Binary::start($exe, &[]);
                assert!(server.first_line.starts_with("listening tcp=127.0.0.1:"));
                assert!(server.first_line.ends_with('\n'));
                let udp = server.udp.expect("udp on by default");
                assert_eq!(udp.port(), server.tcp.port());
                let mut c = Client::greeted(server.tcp);
                c.send(b"binary\n");
                assert_eq!(c.line(), b"Hello, binary!\n");
                assert_eq!(udp_roundtrip(&udp_client(), udp, b"x\n"), b"Hello, x!");
            }

            #[test]
            fn binary_startup_line_says_udp_off() {
                let server = Binary::start($exe, &["--no-udp"]);
                assert!(
                    server.first_line.trim_end().ends_with("udp=off"),
                    "{}",
                    server.first_line
                );
                assert!(server.udp.is_none());
            }

            #[cfg(unix)]
            #[test]
            fn sigterm_delivers_owed_replies_and_exits_zero() {
                let server = Binary::start($exe, &[]);
                let mut c = Client::greeted(server.tcp);
                c.send(b"before\n");
                assert_eq!(c.line(), b"Hello, before!\n");
                server.signal(libc::SIGTERM);
                assert_eq!(c.rest(), b"", "closed with a clean EOF");
                drop(c);
                let (code, stderr) = server.wait();
                assert_eq!(code, Some(0), "{stderr}");
                assert!(
                    stderr.contains("served 1 connections"),
                    "summary missing: {stderr}"
                );
                assert!(stderr.contains("1 messages"), "{stderr}");
            }

            #[cfg(unix)]
            #[test]
            fn sigint_exits_zero_too() {
                let server = Binary::start($exe, &["--no-udp"]);
                server.signal(libc::SIGINT);
                let (code, stderr) = server.wait();
                assert_eq!(code, Some(0), "{stderr}");
            }

            #[test]
            fn bad_flags_give_one_line_and_a_nonzero_exit() {
                for args in [
                    &["--listen", "not-an-address"][..],
                    &["--mode", "shout"],
                    &["--max-line", "0"],
                    &["--no-such-flag"],
                    &["--idle-timeout", "-1"],
                    &["--threads", "0"],
                    &["--shutdown-grace", "1e30"],
                    &["--shutdown-grace", "nan"],
                ] {
                    let (code, stderr) = run($exe, args);
                    assert_eq!(code, Some(2), "{args:?}: {stderr}");
                    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
                    assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
                    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
                }
            }

            #[test]
            fn an_address_in_use_is_one_line_and_a_nonzero_exit() {
                let held = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = held.local_addr().unwrap().to_string();
                let (code, stderr) = run($exe, &["--listen", &addr, "--no-udp"]);
                assert_ne!(code, Some(0));
                assert_eq!(stderr.lines().count(), 1, "{stderr}");
                assert!(
                    stderr.contains(&addr) && stderr.contains("in use"),
                    "{stderr}"
                );
            }

            #[test]
            fn help_explains_and_exits_zero() {
                let out = Command::new($exe).arg("--help").output().unwrap();
                assert_eq!(out.status.code(), Some(0));
                let help = String::from_utf8_lossy(&out.stdout);
                for flag in [
                    "--listen",
                    "--udp",
                    "--no-udp",
                    "--framing",
                    "--mode",
                    "--greeting",
                    "--max-line",
                ] {
                    assert!(help.contains(flag), "--help lacks {flag}");
                }
            }
        }
    };
}
