//! Each of the five Python tutorials the protocol comes from, reproduced by one command
//! line: the tutorial's clients' bytes, in the same order, against both servers started
//! with that command line's flags, and the transcript the tutorial's own server would give.
//! The table of these command lines in docs/tutorials.md (and its Chinese twin) is checked
//! against [`TUTORIALS`] too.
//!
//! All five speak raw framing (messages without a newline). Their servers sleep a second
//! per message and their clients wait for each reply before sending the next, so one read
//! is one message there; the clients here wait for each reply the same way.

// This crate uses the shared UDP helper and the Spawn type only.
#[allow(dead_code)]
mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};

use clap::Parser;
use cli::ServerArgs;
use common::{udp_roundtrip, IO_TIMEOUT};
use evloop::{Running, ServerConfig};

// The servers' flags, as their binaries parse them: each tutorial's command line must parse.
#[allow(dead_code)]
#[path = "../src/bin/common/cli.rs"]
mod cli;

/// The flags that make the servers behave as each tutorial's server: (tutorial, flags).
const TUTORIALS: [(&str, &str); 5] = [
    (
        "000",
        "--framing raw --greeting 'Hello, I am server!' --reply 'Loop_Msg: {}!' --udp-reply 'Hello, {}!'",
    ),
    ("001", "--framing raw --udp-reply 'Echo: {}!'"),
    (
        "002",
        "--framing raw --greeting 'Hello, I am server' --udp-reply 'Hello, {}'",
    ),
    ("003", "--framing raw --greeting '' --mode echo --exit-word ''"),
    (
        "004",
        "--framing raw --greeting '' --reply '服务端接收到数据：{}' --exit-word end",
    ),
];

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    server: ServerArgs,
}

/// The configuration the binaries would build from `flags` (a shell-quoted string, as in
/// docs/tutorials.md), on port 0.
fn config(tutorial: &str) -> ServerConfig {
    let flags = TUTORIALS.iter().find(|(t, _)| *t == tutorial).unwrap().1;
    let mut words = vec!["server".to_string()];
    words.extend(shell_words(flags));
    words.extend(["--listen".into(), "127.0.0.1:0".into()]);
    let mut config = Flags::try_parse_from(words)
        .unwrap()
        .server
        .to_config()
        .unwrap();
    config.handle_signals = false;
    config
}

/// Splits on spaces outside single quotes, as a shell would for these lines.
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quoted, mut started) = (Vec::new(), String::new(), false, false);
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                started = true;
            }
            ' ' if !quoted => {
                if started {
                    words.push(std::mem::take(&mut word));
                }
                started = false;
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}

/// A tutorial's TCP client: sends each message and reads the reply before the next.
struct Client(TcpStream);

impl Client {
    fn connect(server: &Running) -> Client {
        let stream = TcpStream::connect(server.tcp).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        Client(stream)
    }

    /// Reads exactly `expected.len()` bytes and returns them.
    fn expect(&mut self, expected: &str) -> String {
        let mut got = vec![0; expected.len()];
        self.0.read_exact(&mut got).unwrap();
        String::from_utf8(got).unwrap()
    }

    fn send(&mut self, message: &str) {
        self.0.write_all(message.as_bytes()).unwrap();
    }

    /// Sends `message` and returns the reply, which must be `expected`'s length.
    fn ask(&mut self, message: &str, expected: &str) -> String {
        self.send(message);
        self.expect(expected)
    }

    /// True if the server closed the connection cleanly (EOF, no reset).
    fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(self.0.read_to_end(&mut rest), Ok(0))
    }
}

fn udp(server: &Running, message: &str) -> String {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    String::from_utf8(udp_roundtrip(
        &socket,
        server.udp.unwrap(),
        message.as_bytes(),
    ))
    .unwrap()
}

fn tutorial_000(spawn: common::Spawn) {
    let server = spawn(config("000")).unwrap();
    let mut c = Client::connect(&server);
    assert_eq!(c.expect("Hello, I am server!"), "Hello, I am server!");
    let reply = c.ask("Hello,I am a client", "Loop_Msg: Hello,I am a client!");
    assert_eq!(reply, "Loop_Msg: Hello,I am a client!");
    c.send("exit");
    assert!(c.closed());
    for name in ["liming", "jack"] {
        assert_eq!(udp(&server, name), format!("Hello, {name}!"));
    }
    server.shutdown().unwrap();
}

fn tutorial_001(spawn: common::Spawn) {
    let server = spawn(config("001")).unwrap();
    let mut c = Client::connect(&server);
    assert_eq!(c.expect("Welcome!"), "Welcome!");
    // The tutorial's client sleeps a second between sending and reading; the reply waits
    // for it in the socket either way, so that pause changes nothing here.
    for name in ["zhangsan", "lisi", "wangwu", "zhaoliu"] {
        let expected = format!("Hello, {name}!");
        assert_eq!(c.ask(name, &expected), expected);
    }
    c.send("exit");
    assert!(c.closed());
    // Its UDP client reads lines from stdin and stops after sending `exit`.
    for line in ["zhangsan", "exit"] {
        assert_eq!(udp(&server, line), format!("Echo: {line}!"));
    }
    server.shutdown().unwrap();
}

fn tutorial_002(spawn: common::Spawn) {
    let server = spawn(config("002")).unwrap();
    let mut c = Client::connect(&server);
    assert_eq!(c.expect("Hello, I am server"), "Hello, I am server");
    for name in ["client1", "client2", "client3"] {
        let expected = format!("Hello, {name}!");
        assert_eq!(c.ask(name, &expected), expected);
    }
    c.send("exit");
    assert!(c.closed());
    for name in ["client1", "client2"] {
        assert_eq!(udp(&server, name), format!("Hello, {name}"));
    }
    server.shutdown().unwrap();
}

fn tutorial_003(spawn: common::Spawn) {
    let server = spawn(config("003")).unwrap();
    let mut c = Client::connect(&server);
    // No greeting: what the client types comes straight back, `exit` included, and the
    // connection stays open.
    for line in ["some string", "exit", "still here"] {
        assert_eq!(c.ask(line, line), line);
    }
    drop(c);
    assert_eq!(udp(&server, "a datagram"), "a datagram");
    server.shutdown().unwrap();
}

fn tutorial_004(spawn: common::Spawn) {
    let server = spawn(config("004")).unwrap();
    let mut c = Client::connect(&server);
    let expected = "服务端接收到数据：Python TCP 第一个DEMO";
    assert_eq!(c.ask("Python TCP 第一个DEMO", expected), expected);
    c.send("end");
    assert!(c.closed());
    for number in ["123", "234", "53"] {
        assert_eq!(udp(&server, number), format!("服务端接收到数据：{number}"));
    }
    server.shutdown().unwrap();
}

macro_rules! against_both_servers {
    ($($tutorial:ident),*) => {
        mod reactor {
            $(#[test] fn $tutorial() { super::$tutorial(evloop::reactor::spawn) })*
        }
        mod threaded {
            $(#[test] fn $tutorial() { super::$tutorial(evloop::threaded::spawn) })*
        }
    };
}

against_both_servers!(
    tutorial_000,
    tutorial_001,
    tutorial_002,
    tutorial_003,
    tutorial_004
);

#[test]
fn both_tutorial_pages_give_these_command_lines() {
    for readme in ["docs/tutorials.md", "docs/tutorials.zh-CN.md"] {
        let path = format!("{}/{readme}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(path).unwrap();
        for (tutorial, flags) in TUTORIALS {
            let line = format!("`reactor {flags}`");
            assert!(
                text.contains(&line),
                "{readme}'s row for tutorial {tutorial} should give {line}"
            );
        }
    }
}
