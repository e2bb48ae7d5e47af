//! Keeps the docs true to the code. Every link into a source file names an item, and the
//! item is defined in that file (`fn`, `struct`, `const`, ... or, for `Type::method`, a
//! method of an `impl` of that type), so renaming or moving an item to another file fails
//! here while moving its lines does not. Links never point at a line number. Every link to a
//! file or a heading lands on one. The state diagram is exactly the transitions of
//! `State::on`, and the README's reading order is the one in `lib.rs`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use evloop::connection::{State, Trigger};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn readme() -> String {
    read(&root().join("README.md"))
}

/// Every markdown page these checks cover: both READMEs and everything in docs/.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md"), root().join("README.zh-CN.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The text outside fenced code blocks, where a `[x](y)` is a link.
fn prose(text: &str) -> String {
    text.split("```").step_by(2).collect::<Vec<_>>().join("\n")
}

/// `[text](target)` links: (text, target).
fn links(text: &str) -> Vec<(String, String)> {
    let prose = prose(text);
    let mut links = Vec::new();
    let mut rest = prose.as_str();
    while let Some(at) = rest.find("](") {
        let (before, after) = rest.split_at(at);
        let after = &after[2..];
        rest = after;
        let Some(open) = before.rfind('[') else {
            continue;
        };
        let Some(close) = after.find(')') else {
            continue;
        };
        links.push((before[open + 1..].to_string(), after[..close].to_string()));
    }
    links
}

/// A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c.to_lowercase().next().unwrap()),
            _ => None,
        })
        .collect()
}

fn anchors(page: &str) -> BTreeSet<String> {
    prose(page)
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect()
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `line` defines `name`: a keyword, then the name as a whole word.
fn defines(line: &str, name: &str) -> bool {
    const KEYWORDS: [&str; 9] = [
        "fn ",
        "struct ",
        "enum ",
        "const ",
        "static ",
        "trait ",
        "mod ",
        "type ",
        "macro_rules! ",
    ];
    KEYWORDS.iter().any(|keyword| {
        line.split(keyword)
            .skip(1)
            .any(|after| after.starts_with(name) && !after[name.len()..].starts_with(is_word_char))
    })
}

fn mentions_word(line: &str, word: &str) -> bool {
    line.match_indices(word).any(|(i, _)| {
        !line[..i].ends_with(is_word_char) && !line[i + word.len()..].starts_with(is_word_char)
    })
}

/// `Type::member` is a `fn` or `const` inside an `impl` block of `Type` (or `trait Type`),
/// found by rustfmt's layout: the block opens at the start of a line and ends at the next
/// line that is `}` alone.
fn defines_member(source: &str, owner: &str, member: &str) -> bool {
    let mut inside = false;
    for line in source.lines() {
        let opens = line.starts_with("impl") || line.contains("trait ");
        if !line.starts_with(' ') && opens && mentions_word(line, owner) {
            inside = !line.ends_with("{}");
        } else if line == "}" {
            inside = false;
        } else if inside && defines(line, member) {
            return true;
        }
    }
    false
}

/// Checks one link from `page` and says what is wrong with it, if anything.
fn check_link(page: &Path, text: &str, target: &str) -> Option<String> {
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (file, fragment) = match target.split_once('#') {
        Some((file, fragment)) => (file, Some(fragment)),
        None => (target, None),
    };
    if let Some(fragment) = fragment {
        let digits = fragment.trim_start_matches('L');
        if fragment.starts_with('L') && digits.starts_with(|c: char| c.is_ascii_digit()) {
            return Some(format!(
                "points at a line number ({target}): name an item instead"
            ));
        }
    }
    let path = if file.is_empty() {
        page.to_path_buf()
    } else {
        page.parent().unwrap().join(file)
    };
    if !path.exists() {
        return Some(format!("{target}: no such file"));
    }
    if let Some(fragment) = fragment {
        if path.extension().is_some_and(|e| e == "md") && !anchors(&read(&path)).contains(fragment)
        {
            return Some(format!("{target}: no heading with that anchor"));
        }
    }
    if path.extension().is_some_and(|e| e == "rs") {
        // The link's text names the item: `Type::method`, `module::item`, `item`, or the
        // file itself (`src/restart.rs`).
        let item = text.strip_prefix('`').and_then(|t| t.strip_suffix('`'))?;
        if item.contains('/') || item.contains('.') || item.starts_with('-') {
            return None;
        }
        let item = item.trim_end_matches("()");
        let source = read(&path);
        let segments: Vec<&str> = item.split("::").collect();
        let name = segments[segments.len() - 1];
        let found = match segments.len() {
            1 => source.lines().any(|l| defines(l, name)),
            _ => {
                let owner = segments[segments.len() - 2];
                let is_type = owner.starts_with(|c: char| c.is_ascii_uppercase());
                if is_type {
                    defines_member(&source, owner, name)
                } else {
                    // `module::item`: the module is the file (or its folder).
                    let named_after = path.to_string_lossy().contains(owner);
                    named_after && source.lines().any(|l| defines(l, name))
                }
            }
        };
        if !found {
            return Some(format!("`{item}` is not defined in {file}"));
        }
    }
    None
}

#[test]
fn every_link_names_an_item_that_exists_and_none_a_line_number() {
    let mut problems = Vec::new();
    let mut items = 0;
    for page in pages() {
        let text = read(&page);
        for (link_text, target) in links(&text) {
            if target.split('#').next().unwrap().ends_with(".rs") && link_text.starts_with('`') {
                items += 1;
            }
            if let Some(problem) = check_link(&page, &link_text, &target) {
                let page = page.strip_prefix(root()).unwrap().display().to_string();
                problems.push(format!("{page}: [{link_text}]: {problem}"));
            }
        }
        // A line number outside a link goes stale as surely as one inside.
        for (i, line) in text.lines().enumerate() {
            if line.contains(".rs#L") {
                let page = page.strip_prefix(root()).unwrap().display().to_string();
                problems.push(format!("{page}:{}: a line-number link", i + 1));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(items > 60, "the docs link to the code by name ({items})");
}

#[test]
fn the_link_check_tells_a_renamed_item_from_a_moved_one() {
    let page = root().join("README.md");
    let ok = |text: &str, target: &str| check_link(&page, text, target).is_none();
    assert!(ok("`EventLoop::turn`", "src/event_loop.rs"));
    assert!(ok("`Connection::on_readable`", "src/connection/mod.rs"));
    assert!(ok("`Session::on_input`", "src/protocol.rs"));
    assert!(ok("`READ_BUDGET`", "src/connection/mod.rs"));
    assert!(ok("`State`", "src/connection/state.rs"));
    assert!(ok("`proxy::parse`", "src/proxy.rs"));
    assert!(ok("the pitfalls", "docs/pitfalls.md#spurious-events"));
    // A name that is not there, a method of another type, an item in another file, a
    // line number, a missing file or heading.
    assert!(!ok("`EventLoop::turn_over`", "src/event_loop.rs"));
    assert!(!ok("`Session::on_readable`", "src/connection/mod.rs"));
    assert!(!ok("`Connection::on_input`", "src/connection/mod.rs"));
    assert!(!ok("`READ_BUDGE`", "src/connection/mod.rs"));
    assert!(!ok("`EventLoop::turn`", "src/protocol.rs"));
    assert!(!ok("`protocol::parse`", "src/proxy.rs"));
    assert!(!ok("`EventLoop::turn`", "src/event_loop.rs#L259"));
    assert!(!ok("`turn`", "src/no_such_file.rs"));
    assert!(!ok("the pitfalls", "docs/pitfalls.md#no-such-heading"));
}

#[test]
fn the_chinese_readme_links_to_the_english_one_and_back() {
    let zh = read(&root().join("README.zh-CN.md"));
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

/// The modules of a numbered list whose items begin with a link: `1. [`protocol`]...`.
fn numbered_modules(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.trim_start_matches("//!").trim_start())
        .filter_map(|l| {
            let (number, rest) = l.split_once(". [`")?;
            number.parse::<u32>().ok()?;
            Some(rest.split('`').next()?.to_string())
        })
        .collect()
}

#[test]
fn the_readme_and_lib_rs_give_one_reading_order() {
    let readme = readme();
    let section = readme
        .split("\n## Reading order\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a Reading order section in the README");
    let lib = read(&root().join("src/lib.rs"));
    let lib_order = numbered_modules(lib.split("\n\n#![").next().unwrap());
    let readme_order: Vec<String> = numbered_modules(section)
        .into_iter()
        .map(|m| {
            // The README names files (`src/protocol.rs`, `src/connection/`); lib.rs modules.
            let m = m.trim_start_matches("src/").trim_end_matches('/');
            m.trim_end_matches(".rs").to_string()
        })
        .collect();
    assert!(lib_order.len() >= 5, "{lib_order:?}");
    assert_eq!(readme_order, lib_order, "README vs lib.rs reading order");
}

#[test]
fn the_pitfalls_name_tests_that_exist() {
    let pitfalls = read(&root().join("docs/pitfalls.md"));
    // Every test it names, in a "Test:" or "Tests:" paragraph, is a test function here or
    // in a member crate.
    let mut sources = String::new();
    for dir in ["src", "tests", "loadgen", "harness"] {
        let mut stack = vec![root().join(dir)];
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            } else if path.extension().is_some_and(|e| e == "rs") {
                sources.push_str(&read(&path));
            }
        }
    }
    let mut named = 0;
    for paragraph in pitfalls.split("\n\n").filter(|p| p.starts_with("Test")) {
        for name in paragraph.split('`').skip(1).step_by(2) {
            named += 1;
            assert!(
                sources.contains(&format!("fn {name}(")),
                "docs/pitfalls.md names a test `{name}` that does not exist"
            );
        }
    }
    assert!(named >= 15, "each pitfall names its test ({named})");
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
