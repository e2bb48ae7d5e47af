//! Hostile clients as data: the kinds `--hostile KIND:N` names ([`HostileKind`]), how many
//! of one kind a run asks for ([`Hostile`]), how the server dealt with each of them
//! ([`Outcome`]), and what a run counted for each kind ([`HostileTally`]), with its JSON
//! keys and its line of the text report. Data and arithmetic only: the clients themselves,
//! and the poll loop that drives them, are in `attacker.rs`.
//!
//! A hostile client is never checked the way an honest one is: it does not care what the
//! server answers, and nothing it suffers is an error of the run. What it records is what
//! the server did to it, as a client can see it: closed it with an `ERR` line, closed it
//! without one, reset it, stopped reading it, or left it alone.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use evloop::protocol;

/// How a hostile client misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostileKind {
    /// Pipelines empty lines as fast as the kernel takes them (each owes the server a
    /// `Hello, !` reply, nine bytes for one) and never reads a byte.
    SlowReader,
    /// Sends one byte every [`DRIBBLE_INTERVAL`] and never a newline: a line that never
    /// ends (slowloris). It reads what the server sends, to see an `ERR` line and the close.
    Dribbler,
    /// Reads the greeting, then sends nothing at all; it keeps reading, to see a close.
    Idle,
    /// Connects, sends a few lines, closes with the greeting and replies unread, and again,
    /// for the whole run, one connection at a time.
    Churn,
    /// Sends datagrams as fast as it can and never reads a reply.
    UdpFlood,
    /// Sends one long line without its newline ([`Hostile::line_bytes`], as fast as the
    /// server takes it), then waits; it reads what the server sends, to see an `ERR` line
    /// and the close.
    PartialLine,
}

impl HostileKind {
    /// Every kind, in the order the report lists them.
    pub const ALL: [HostileKind; 6] = [
        HostileKind::SlowReader,
        HostileKind::Dribbler,
        HostileKind::Idle,
        HostileKind::Churn,
        HostileKind::UdpFlood,
        HostileKind::PartialLine,
    ];

    /// The name `--hostile` takes and the text report prints.
    pub fn name(self) -> &'static str {
        match self {
            HostileKind::SlowReader => "slow-reader",
            HostileKind::Dribbler => "dribbler",
            HostileKind::Idle => "idle",
            HostileKind::Churn => "churn",
            HostileKind::UdpFlood => "udp-flood",
            HostileKind::PartialLine => "partial-line",
        }
    }

    /// The name in JSON keys: `hostile_<key>_<field>`.
    fn key(self) -> &'static str {
        match self {
            HostileKind::SlowReader => "slow_reader",
            HostileKind::Dribbler => "dribbler",
            HostileKind::Idle => "idle",
            HostileKind::Churn => "churn",
            HostileKind::UdpFlood => "udp_flood",
            HostileKind::PartialLine => "partial_line",
        }
    }
}

/// A dribbler sends its next byte this long after the last: the issue's "one byte every
/// 2 s", slow enough that a server timing only silence (an idle timeout) never notices.
pub const DRIBBLE_INTERVAL: Duration = Duration::from_secs(2);

/// A connection still open at the end of the run counts as [`Outcome::Paused`] if the
/// server has taken none of its bytes for this long while it had more to send: the server
/// stopped reading it. Long enough that a server reading slowly is not mistaken for one
/// that stopped; short enough to tell in a run of a few seconds.
pub const PAUSED_AFTER: Duration = Duration::from_secs(1);

/// The line a partial-line client sends unless told otherwise (`partial-line:N:BYTES`):
/// 60,000 bytes, longer than the reactor's equal share of its default buffer memory at
/// 5,000 connections (256 MiB / 5,000, 52 KiB), and within the default `--max-line`.
pub const PARTIAL_LINE_BYTES: usize = 60_000;

/// The longest line a partial-line client may be told to send: 16 MiB, far beyond any
/// line limit a server would set, so that a slip of the keyboard cannot make thousands of
/// clients push gigabytes each through loopback.
pub const MAX_PARTIAL_LINE_BYTES: usize = 16 << 20;

/// `N` hostile clients of one kind: the value of one `--hostile KIND:N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hostile {
    /// How they misbehave.
    pub kind: HostileKind,
    /// How many; at least 1.
    pub clients: usize,
    /// Partial-line clients: the bytes of the line each one sends (at least 1); 0 for
    /// every other kind.
    pub line_bytes: usize,
}

impl Hostile {
    /// `clients` of `kind`, with the default line of a partial-line client.
    pub fn new(kind: HostileKind, clients: usize) -> Hostile {
        let line_bytes = match kind {
            HostileKind::PartialLine => PARTIAL_LINE_BYTES,
            _ => 0,
        };
        Hostile {
            kind,
            clients,
            line_bytes,
        }
    }
}

impl FromStr for Hostile {
    type Err = String;

    /// `slow-reader:2000`, `dribbler:5000`, `idle:10`, `churn:1000`, `udp-flood:10`,
    /// `partial-line:5000` (or `partial-line:5000:40000`, each line 40,000 bytes).
    fn from_str(s: &str) -> Result<Hostile, String> {
        let names = || HostileKind::ALL.map(HostileKind::name).join(", ");
        let (s, line_bytes) = match s.splitn(3, ':').nth(2) {
            Some(bytes) => (
                &s[..s.len() - bytes.len() - 1],
                Some(
                    bytes
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_PARTIAL_LINE_BYTES).contains(n))
                        .ok_or_else(|| {
                            format!(
                                "{bytes:?} is not a line length (1 to {MAX_PARTIAL_LINE_BYTES} bytes)"
                            )
                        })?,
                ),
            ),
            None => (s, None),
        };
        let (name, count) = s.split_once(':').ok_or_else(|| {
            format!(
                "expected KIND:N, as in slow-reader:100 (kinds: {})",
                names()
            )
        })?;
        let kind = HostileKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| format!("no hostile kind {name:?}; choose from {}", names()))?;
        let clients = count
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{count:?} is not a count of clients (1 or more)"))?;
        match line_bytes {
            None => Ok(Hostile::new(kind, clients)),
            Some(line_bytes) if kind == HostileKind::PartialLine => Ok(Hostile {
                kind,
                clients,
                line_bytes,
            }),
            Some(_) => Err(format!(
                "only partial-line takes a line length (KIND:N:BYTES), not {name}"
            )),
        }
    }
}

/// An `ERR` line a server sends before it closes, as far as loadgen tells them apart: the
/// ones this project's servers send (`protocol.rs`), and any other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrLine {
    /// `ERR line timeout`: a line that started did not end within `--line-timeout`.
    LineTimeout,
    /// `ERR line too long`: a line longer than `--max-line`.
    LineTooLong,
    /// `ERR server busy`: the server was at `--max-connections`.
    ServerBusy,
    /// `ERR too many connections from your address`: `--max-connections-per-ip`.
    TooManyFromAddress,
    /// Any other line that starts with `ERR `.
    Other,
}

impl ErrLine {
    const ALL: [ErrLine; 5] = [
        ErrLine::LineTimeout,
        ErrLine::LineTooLong,
        ErrLine::ServerBusy,
        ErrLine::TooManyFromAddress,
        ErrLine::Other,
    ];

    /// Which `ERR` line `line` (without its `\n`) is, or `None` if it is not one.
    pub fn of(line: &[u8]) -> Option<ErrLine> {
        if !line.starts_with(b"ERR ") {
            return None;
        }
        let known = [
            (protocol::LINE_TIMEOUT, ErrLine::LineTimeout),
            (protocol::LINE_TOO_LONG, ErrLine::LineTooLong),
            (protocol::SERVER_BUSY, ErrLine::ServerBusy),
            (protocol::TOO_MANY_FROM_ADDRESS, ErrLine::TooManyFromAddress),
        ];
        Some(
            known
                .into_iter()
                .find(|(text, _)| text.strip_suffix(b"\n") == Some(line))
                .map_or(ErrLine::Other, |(_, err)| err),
        )
    }

    /// The line as the text report quotes it.
    fn text(self) -> &'static str {
        match self {
            ErrLine::LineTimeout => "ERR line timeout",
            ErrLine::LineTooLong => "ERR line too long",
            ErrLine::ServerBusy => "ERR server busy",
            ErrLine::TooManyFromAddress => "ERR too many connections from your address",
            ErrLine::Other => "another ERR line",
        }
    }

    /// The last part of its JSON key, `hostile_<kind>_<key>`.
    fn key(self) -> &'static str {
        match self {
            ErrLine::LineTimeout => "err_line_timeout",
            ErrLine::LineTooLong => "err_line_too_long",
            ErrLine::ServerBusy => "err_server_busy",
            ErrLine::TooManyFromAddress => "err_too_many_from_address",
            ErrLine::Other => "err_other",
        }
    }
}

/// How the server dealt with one hostile client, as the client saw it. Every hostile
/// client but a churner ends the run with exactly one; a churner's
/// connections are counted one by one instead (see [`HostileTally`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still connected at the end of the run, and the server was taking what it sent (or,
    /// for an idle client, simply holding it). A UDP flood socket still flooding.
    Open,
    /// Still connected at the end, but the server had taken none of its bytes for
    /// [`PAUSED_AFTER`] while it had more to send: the server stopped reading it.
    Paused,
    /// The server closed the connection (its FIN) with no `ERR` line first. A slow reader
    /// never reads, so for it every close by the server is this one.
    Closed,
    /// The server sent this `ERR` line, and closed (or reset) the connection.
    Err(ErrLine),
    /// The connection was reset, with no `ERR` line first.
    Reset,
    /// It never connected: refused, not connected within `--timeout`, or no socket to be
    /// had. A UDP flood socket whose datagrams were refused (nothing listening) or failed.
    Failed,
}

/// What a run counted for the hostile clients of one kind, added up over its engines.
///
/// For every kind but churners, `clients` is the sum of
/// the outcome counts (`open`, `paused`, `closed`, every `ERR` line, `reset`, `failed`).
/// A churner closes its connections itself, so it has no outcome of its own: `connected`
/// counts its connections, `reset` and `failed` the ones the server reset or that never
/// connected, and the other outcome counts stay 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostileTally {
    /// Which kind.
    pub kind: HostileKind,
    /// Clients asked for.
    pub clients: u64,
    /// TCP connections that completed the handshake (a churner's: every one of them); UDP
    /// sockets opened.
    pub connected: u64,
    /// See [`Outcome::Open`].
    pub open: u64,
    /// See [`Outcome::Paused`].
    pub paused: u64,
    /// See [`Outcome::Closed`].
    pub closed: u64,
    /// See [`Outcome::Err`], one count per [`ErrLine`] in the order of `ErrLine::ALL`.
    closed_with: [u64; ErrLine::ALL.len()],
    /// See [`Outcome::Reset`].
    pub reset: u64,
    /// See [`Outcome::Failed`].
    pub failed: u64,
    /// Bytes the kernel took from these clients (TCP) or sent for them (UDP payloads).
    pub bytes_sent: u64,
    /// Datagrams sent (UDP flood only).
    pub datagrams_sent: u64,
}

impl HostileTally {
    /// Nothing counted yet.
    pub fn new(kind: HostileKind) -> HostileTally {
        HostileTally {
            kind,
            clients: 0,
            connected: 0,
            open: 0,
            paused: 0,
            closed: 0,
            closed_with: [0; ErrLine::ALL.len()],
            reset: 0,
            failed: 0,
            bytes_sent: 0,
            datagrams_sent: 0,
        }
    }

    /// Clients closed after this `ERR` line.
    pub fn closed_with(&self, err: ErrLine) -> u64 {
        self.closed_with[Self::index(err)]
    }

    fn index(err: ErrLine) -> usize {
        ErrLine::ALL
            .iter()
            .position(|&e| e == err)
            .expect("every ERR line is listed")
    }

    /// Counts one client's (or one churn connection's) outcome.
    pub fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Open => self.open += 1,
            Outcome::Paused => self.paused += 1,
            Outcome::Closed => self.closed += 1,
            Outcome::Err(err) => self.closed_with[Self::index(err)] += 1,
            Outcome::Reset => self.reset += 1,
            Outcome::Failed => self.failed += 1,
        }
    }

    /// Adds another engine's counts of the same kind to these.
    pub fn add(&mut self, other: &HostileTally) {
        debug_assert_eq!(self.kind, other.kind);
        self.clients += other.clients;
        self.connected += other.connected;
        self.open += other.open;
        self.paused += other.paused;
        self.closed += other.closed;
        for (mine, theirs) in self.closed_with.iter_mut().zip(other.closed_with) {
            *mine += theirs;
        }
        self.reset += other.reset;
        self.failed += other.failed;
        self.bytes_sent += other.bytes_sent;
        self.datagrams_sent += other.datagrams_sent;
    }

    /// Every count with the last part of its JSON key, in a fixed order: the keys are an
    /// interface (`hostile_<kind>_<field>`), like the rest of the report's.
    pub fn fields(&self) -> Vec<(&'static str, u64)> {
        let mut fields = vec![
            ("clients", self.clients),
            ("connected", self.connected),
            ("open", self.open),
            ("paused", self.paused),
            ("closed", self.closed),
        ];
        fields.extend(ErrLine::ALL.map(|err| (err.key(), self.closed_with(err))));
        fields.extend([
            ("reset", self.reset),
            ("failed", self.failed),
            ("bytes_sent", self.bytes_sent),
            ("datagrams_sent", self.datagrams_sent),
        ]);
        fields
    }

    /// `"hostile_slow_reader_paused":12,...`: the fields as JSON members, no braces.
    pub fn json_members(&self) -> String {
        self.fields()
            .into_iter()
            .map(|(field, value)| format!("\"hostile_{}_{field}\":{value}", self.kind.key()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl fmt::Display for HostileTally {
    /// One line: `dribbler ×5000: 5000 connected, 9.8 KiB sent; 5000 closed with ERR line
    /// timeout`. Outcomes that did not happen are left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ×{}: ", self.kind.name(), self.clients)?;
        match self.kind {
            HostileKind::UdpFlood => write!(f, "{} datagrams", self.datagrams_sent)?,
            HostileKind::Churn => write!(f, "{} connections", self.connected)?,
            _ => write!(f, "{} connected", self.connected)?,
        }
        write!(f, ", {} sent", bytes(self.bytes_sent))?;
        let mut outcomes: Vec<String> = Vec::new();
        let mut say = |count: u64, what: &str| {
            if count > 0 {
                outcomes.push(format!("{count} {what}"));
            }
        };
        let open = match self.kind {
            HostileKind::UdpFlood => "still flooding",
            _ => "still connected",
        };
        say(self.open, open);
        say(self.paused, "paused (the server stopped reading them)");
        say(self.closed, "closed by the server");
        for err in ErrLine::ALL {
            say(
                self.closed_with(err),
                &format!("closed with {}", err.text()),
            );
        }
        say(self.reset, "reset");
        say(self.failed, "failed to connect");
        if outcomes.is_empty() {
            Ok(())
        } else {
            write!(f, "; {}", outcomes.join(", "))
        }
    }
}

/// 1536 as "1.5 KiB": the text report's byte counts.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_value_names_a_kind_and_a_count() {
        assert_eq!(
            "slow-reader:2000".parse(),
            Ok(Hostile::new(HostileKind::SlowReader, 2000))
        );
        assert_eq!(
            "partial-line:5000".parse(),
            Ok(Hostile {
                kind: HostileKind::PartialLine,
                clients: 5000,
                line_bytes: PARTIAL_LINE_BYTES,
            })
        );
        assert_eq!(
            "partial-line:3:40000"
                .parse::<Hostile>()
                .map(|h| h.line_bytes),
            Ok(40_000)
        );
        for kind in HostileKind::ALL {
            let parsed: Hostile = format!("{}:1", kind.name()).parse().unwrap();
            assert_eq!(parsed.kind, kind);
        }
        for bad in [
            "slow-reader",
            "slow-reader:0",
            "slow-reader:-1",
            "shouty:3",
            ":3",
            "idle:x",
            "idle:3:100",
            "partial-line:3:0",
            "partial-line:3:",
            "partial-line:3:99999999999",
            "partial-line::100",
        ] {
            assert!(bad.parse::<Hostile>().is_err(), "{bad}");
        }
    }

    #[test]
    fn err_lines_are_told_apart_by_the_servers_own_constants() {
        assert_eq!(ErrLine::of(b"ERR line timeout"), Some(ErrLine::LineTimeout));
        assert_eq!(ErrLine::of(b"ERR server busy"), Some(ErrLine::ServerBusy));
        assert_eq!(
            ErrLine::of(
                &protocol::TOO_MANY_FROM_ADDRESS[..protocol::TOO_MANY_FROM_ADDRESS.len() - 1]
            ),
            Some(ErrLine::TooManyFromAddress)
        );
        assert_eq!(ErrLine::of(b"ERR out of coffee"), Some(ErrLine::Other));
        assert_eq!(ErrLine::of(b"Welcome!"), None);
        assert_eq!(ErrLine::of(b"ERROR"), None);
    }

    #[test]
    fn outcomes_add_up_to_the_clients_and_every_field_has_a_key() {
        let mut a = HostileTally::new(HostileKind::Dribbler);
        a.clients = 3;
        a.count(Outcome::Err(ErrLine::LineTimeout));
        a.count(Outcome::Err(ErrLine::LineTimeout));
        a.count(Outcome::Open);
        let mut b = HostileTally::new(HostileKind::Dribbler);
        b.clients = 1;
        b.count(Outcome::Reset);
        a.add(&b);
        assert_eq!(a.clients, 4);
        assert_eq!(a.closed_with(ErrLine::LineTimeout), 2);
        assert_eq!((a.open, a.reset), (1, 1));
        let json = a.json_members();
        assert!(
            json.contains("\"hostile_dribbler_err_line_timeout\":2"),
            "{json}"
        );
        assert!(json.contains("\"hostile_dribbler_clients\":4"), "{json}");
        assert_eq!(
            json.matches("\"hostile_dribbler_").count(),
            a.fields().len()
        );
        let text = a.to_string();
        assert!(text.contains("2 closed with ERR line timeout"), "{text}");
        assert!(!text.contains("paused"), "{text}");
    }

    #[test]
    fn byte_counts_read_like_sizes() {
        assert_eq!(bytes(12), "12 bytes");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
    }
}
