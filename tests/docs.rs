//! Keeps the README true to the code: every link to a line names the item defined on that
//! line, and the state diagram is exactly the transitions of `State::on`.

use std::collections::BTreeSet;

use evloop::connection::{State, Trigger};

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// `[`Path::name`](src/file.rs#L12)` links: (name, file, line).
fn line_links(text: &str) -> Vec<(String, String, usize)> {
    let mut links = Vec::new();
    for piece in text.split("[`").skip(1) {
        let Some((item, rest)) = piece.split_once("`](") else {
            continue;
        };
        let Some((target, _)) = rest.split_once(')') else {
            continue;
        };
        let Some((file, line)) = target.split_once("#L") else {
            continue;
        };
        let line = line
            .split('-')
            .next()
            .unwrap()
            .parse()
            .expect("line number");
        let name = item.rsplit("::").next().unwrap().to_string();
        links.push((name, file.to_string(), line));
    }
    links
}

/// Every line link in `text` (a file in `dir`, relative to the crate) names the item defined
/// on that line.
fn links_land_on_the_items_they_name(dir: &str, text: &str) -> usize {
    let links = line_links(text);
    for (name, file, line) in &links {
        let path = format!("{}/{dir}/{file}", env!("CARGO_MANIFEST_DIR"));
        let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let defines = |l: &str| {
            ["fn ", "const ", "enum ", "struct "].iter().any(|kw| {
                l.split(kw).skip(1).any(|after| {
                    after.starts_with(name.as_str())
                        && !after[name.len()..]
                            .starts_with(|c: char| c.is_alphanumeric() || c == '_')
                })
            })
        };
        let actual = source.lines().position(defines).map(|i| i + 1);
        let at_line = source.lines().nth(line - 1).unwrap_or("");
        assert!(
            defines(at_line),
            "{dir}: a link to `{name}` points at {file}#L{line}, but it is defined at line {actual:?}"
        );
    }
    links.len()
}

#[test]
fn readme_links_land_on_the_items_they_name() {
    assert!(
        links_land_on_the_items_they_name(".", &readme()) > 20,
        "the tour links to the code"
    );
}

#[test]
fn the_chinese_readme_links_land_on_the_items_they_name_and_back() {
    let zh =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.zh-CN.md")).unwrap();
    assert!(links_land_on_the_items_they_name(".", &zh) >= 5);
    assert!(zh.contains("[English](README.md)"));
    assert!(readme().contains("[中文](README.zh-CN.md)"));
    // Its commands are the English README's.
    for command in ["cargo run --release", "cargo test", "nc 127.0.0.1 9999"] {
        assert!(
            zh.contains(command) && readme().contains(command),
            "{command}"
        );
    }
}

#[test]
fn the_pitfalls_link_to_their_lines_and_name_tests_that_exist() {
    let pitfalls =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/pitfalls.md")).unwrap();
    assert!(links_land_on_the_items_they_name("docs", &pitfalls) >= 10);
    // Every test it names, in a "Test:" or "Tests:" paragraph, is a test function here.
    let mut sources = String::new();
    for dir in ["src", "tests"] {
        let mut stack = vec![std::path::PathBuf::from(format!(
            "{}/{dir}",
            env!("CARGO_MANIFEST_DIR")
        ))];
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            } else if path.extension().is_some_and(|e| e == "rs") {
                sources.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut named = 0;
    for paragraph in pitfalls.split("\n\n").filter(|p| p.starts_with("Test")) {
        for name in paragraph.split('`').skip(1).step_by(2) {
            named += 1;
            assert!(
                sources.contains(&format!("fn {name}()")),
                "docs/pitfalls.md names a test `{name}` that does not exist"
            );
        }
    }
    assert!(named >= 7, "each pitfall names its test");
}

const TRIGGERS: [Trigger; 11] = [
    Trigger::HeaderReceived,
    Trigger::HandshakeBegun,
    Trigger::Refused,
    Trigger::HandshakeDone,
    Trigger::Flushed,
    Trigger::AboveHighWater,
    Trigger::BelowLowWater,
    Trigger::InputEnded,
    Trigger::PeerEof,
    Trigger::GiveUp,
    Trigger::Failed,
];

/// Fails to compile when a trigger is added without being listed above.
#[allow(dead_code)]
fn every_trigger_is_listed(trigger: Trigger) {
    match trigger {
        Trigger::HeaderReceived
        | Trigger::HandshakeBegun
        | Trigger::Refused
        | Trigger::HandshakeDone
        | Trigger::Flushed
        | Trigger::AboveHighWater
        | Trigger::BelowLowWater
        | Trigger::InputEnded
        | Trigger::PeerEof
        | Trigger::GiveUp
        | Trigger::Failed => {}
    }
}

const STATES: [State; 9] = [
    State::ProxyHeader,
    State::Handshaking,
    State::Greeting,
    State::Reading,
    State::Replying,
    State::Closing { peer_eof: false },
    State::Closing { peer_eof: true },
    State::Lingering,
    State::Closed,
];

#[allow(dead_code)]
fn every_state_is_listed(state: State) {
    match state {
        State::ProxyHeader
        | State::Handshaking
        | State::Greeting
        | State::Reading
        | State::Replying
        | State::Closing { .. }
        | State::Lingering
        | State::Closed => {}
    }
}

fn name(state: State) -> String {
    let debug = format!("{state:?}");
    debug.split_whitespace().next().unwrap().to_string()
}

#[test]
fn the_state_diagram_is_the_transition_function() {
    // The diagram's edges, as (from, trigger, to), leaving out the [*] start and end markers.
    let readme = readme();
    let diagram = readme
        .split("```mermaid\nstateDiagram-v2\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a state diagram in the README");
    let drawn: BTreeSet<(String, String, String)> = diagram
        .lines()
        .filter(|l| !l.contains("[*]"))
        .filter_map(|l| {
            let (edge, label) = l.split_once(':')?;
            let (from, to) = edge.split_once("-->")?;
            let trigger = label.split_whitespace().next()?;
            Some((from.trim().into(), trigger.into(), to.trim().into()))
        })
        .collect();

    let mut actual = BTreeSet::new();
    for state in STATES {
        for trigger in TRIGGERS {
            let next = state.on(trigger);
            if matches!(trigger, Trigger::Failed | Trigger::GiveUp) {
                // The README states this in prose rather than drawing ten edges.
                assert_eq!(next, State::Closed, "{state:?} on {trigger:?}");
            } else if name(next) != name(state) {
                actual.insert((name(state), format!("{trigger:?}"), name(next)));
            }
        }
    }
    assert_eq!(drawn, actual, "README diagram vs State::on");
}
