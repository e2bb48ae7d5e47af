//! The bench's tables: each (server, workload) pair summarised over its rounds with its
//! ratios to the baseline, the markdown table printed on stdout, `results.csv` with every
//! round, and the idle test's table. Also the number formats they share. (The attack rows
//! have a table of their own, in `attack.rs`.)

use std::fmt::Write as _;

use harness::measure::{median, median_ratio, ratio};

use crate::measuring::{IdleRow, Measured, Row};
use crate::plan::{Workload, BASELINE, TLS_CPU_TARGET, TLS_HANDSHAKES, TLS_TARGET_ROW};

/// A table that prints as aligned markdown and as CSV.
pub struct Table {
    header: Vec<&'static str>,
    /// Columns holding numbers, right-aligned in markdown.
    numeric: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these (name, holds numbers) columns and no rows yet.
    pub fn new(columns: &[(&'static str, bool)]) -> Table {
        Table {
            header: columns.iter().map(|c| c.0).collect(),
            numeric: columns.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row: one cell per column.
    pub fn push(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.header.len());
        self.rows.push(row);
    }

    pub fn markdown(&self) -> String {
        let widths: Vec<usize> = (0..self.header.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([self.header[i].chars().count(), 3])
                    .max()
                    .unwrap_or(3)
            })
            .collect();
        let line = |cells: &mut dyn Iterator<Item = String>| {
            let cells: Vec<String> = cells.collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let pad = |text: &str, i: usize| {
            let fill = " ".repeat(widths[i] - text.chars().count());
            if self.numeric[i] {
                format!("{fill}{text}")
            } else {
                format!("{text}{fill}")
            }
        };
        let mut out = line(&mut self.header.iter().enumerate().map(|(i, h)| pad(h, i)));
        out += &line(&mut widths.iter().enumerate().map(|(i, &w)| {
            if self.numeric[i] {
                format!("{}:", "-".repeat(w - 1))
            } else {
                "-".repeat(w)
            }
        }));
        for row in &self.rows {
            out += &line(&mut row.iter().enumerate().map(|(i, c)| pad(c, i)));
        }
        out
    }

    pub fn csv(&self) -> String {
        let field = |text: &str| {
            if text.contains([',', '"', '\n']) {
                format!("\"{}\"", text.replace('"', "\"\""))
            } else {
                text.to_string()
            }
        };
        let mut out = String::new();
        for cells in std::iter::once(self.header.iter().map(|h| h.to_string()).collect())
            .chain(self.rows.iter().cloned())
        {
            let cells: Vec<String> = cells.iter().map(|c| field(c)).collect::<Vec<_>>();
            let _ = writeln!(out, "{}", cells.join(","));
        }
        out
    }
}

/// The baseline server's run in the same workload and round as `row`, if it succeeded.
fn baseline_of<'a>(rows: &'a [Row], row: &Row) -> Option<&'a Measured> {
    rows.iter()
        .find(|r| {
            r.server == BASELINE && r.workload.name == row.workload.name && r.round == row.round
        })
        .and_then(|r| r.outcome.as_ref().ok())
}

/// One (server, workload) pair over every round: a line of the printed table and a point
/// in the charts.
pub struct Summary<'a> {
    pub server: &'static str,
    pub workload: &'static Workload,
    /// This pair's runs, one per round, each with the baseline's run in that round if it
    /// succeeded.
    runs: Vec<(&'a Row, Option<&'a Measured>)>,
}

/// The rows grouped by (server, workload), in the order they first ran.
pub fn summaries(rows: &[Row]) -> Vec<Summary<'_>> {
    let mut out: Vec<Summary> = Vec::new();
    for row in rows {
        let same = |s: &Summary| s.server == row.server && s.workload.name == row.workload.name;
        let at = match out.iter().position(same) {
            Some(at) => at,
            None => {
                out.push(Summary {
                    server: row.server,
                    workload: row.workload,
                    runs: Vec::new(),
                });
                out.len() - 1
            }
        };
        out[at].runs.push((row, baseline_of(rows, row)));
    }
    out
}

impl Summary<'_> {
    /// The runs that measured something, one per round.
    pub fn measured(&self) -> impl Iterator<Item = &Measured> {
        self.runs
            .iter()
            .filter_map(|(r, _)| r.outcome.as_ref().ok())
    }

    /// The median of `value` over the successful runs that have one.
    pub fn median(&self, value: impl Fn(&Measured) -> Option<f64>) -> Option<f64> {
        median(self.measured().filter_map(value))
    }

    /// The median of each round's `value` divided by the baseline's in that round.
    fn median_ratio(&self, value: impl Fn(&Measured) -> Option<f64>) -> Option<f64> {
        median_ratio(self.runs.iter().map(|(run, base)| {
            let run = run.outcome.as_ref().ok();
            (run.and_then(&value), base.and_then(&value))
        }))
    }

    /// The most `value` over the successful runs.
    pub fn max(&self, value: impl Fn(&Measured) -> u64) -> Option<u64> {
        self.measured().map(value).max()
    }

    /// Honest errors over every round.
    pub fn errors(&self) -> f64 {
        self.measured().map(|m| m.report.errors).sum()
    }

    /// `ok`, `N errors` or why the runs failed.
    pub fn status(&self) -> String {
        let failed: Vec<&String> = self
            .runs
            .iter()
            .filter_map(|(r, _)| r.outcome.as_ref().err())
            .collect();
        let errors = self.errors();
        match failed.first() {
            Some(why) if failed.len() == self.runs.len() => format!("failed: {why}"),
            Some(why) => format!("{} of {} failed: {why}", failed.len(), self.runs.len()),
            None if errors > 0.0 => format!("{errors} errors"),
            None => "ok".into(),
        }
    }
}

/// The table printed on stdout: rounded figures, thousands separated. With more than one
/// round every figure is the median over the rounds (errors are summed, peak RSS and
/// threads are the most), and the ratios are medians of each round's own ratio. The attack
/// rows are left to their own table.
pub fn results_table(summaries: &[Summary]) -> Table {
    let mut table = Table::new(&[
        ("server", false),
        ("workload", false),
        ("msgs/s", true),
        ("p50 µs", true),
        ("p99 µs", true),
        ("errors", true),
        ("CPU µs/msg", true),
        ("peak RSS MiB", true),
        ("threads", true),
        ("server CPU", true),
        ("loadgen CPU", true),
        ("msgs/s vs threaded", true),
        ("CPU/msg vs threaded", true),
        ("status", false),
    ]);
    let optional = |value: Option<f64>| value.map_or("-".into(), |v| format!("{v:.2}"));
    let rounded = |value: Option<f64>| value.map_or("-".into(), thousands);
    for s in summaries.iter().filter(|s| s.workload.attack.is_none()) {
        let mut line = vec![s.server.to_string(), s.workload.name.to_string()];
        if s.measured().next().is_some() {
            let errors = s.errors();
            line.extend([
                rounded(s.median(msgs_per_sec)),
                rounded(s.median(|m| Some(m.report.p50_us))),
                rounded(s.median(|m| Some(m.report.p99_us))),
                thousands(errors),
                optional(s.median(Measured::cpu_us_per_msg)),
                s.max(|m| m.peak_rss)
                    .map_or("-".into(), |b| format!("{:.1}", b as f64 / MIB)),
                s.max(|m| m.threads).map_or("-".into(), |t| t.to_string()),
                percent(s.median(|m| Some(m.server_cores()))),
                percent(s.median(Measured::loadgen_cores)),
                optional(s.median_ratio(msgs_per_sec)),
                optional(s.median_ratio(Measured::cpu_us_per_msg)),
            ]);
        } else {
            line.extend(std::iter::repeat_n("-".to_string(), 11));
        }
        line.push(s.status());
        table.rows.push(line);
    }
    table
}

/// `results.csv`: every run (one line per round, not medians) with raw numbers, and more of
/// them than fit the printed table (all of loadgen's percentiles, the wall time, the
/// server's and loadgen's share of a core).
pub fn results_csv(rows: &[Row]) -> Table {
    const COLUMNS: [&str; 26] = [
        "server",
        "workload",
        "round",
        "connections",
        "pipeline",
        "transport",
        "status",
        "messages",
        "duration_s",
        "msgs_per_sec",
        "p50_us",
        "p90_us",
        "p99_us",
        "p999_us",
        "max_us",
        "errors",
        "wall_s",
        "server_cpu_s",
        "server_cpu_us_per_msg",
        "server_cores",
        "peak_rss_bytes",
        "threads",
        "client_cpu_s",
        "msgs_per_sec_vs_threaded",
        "cpu_per_msg_vs_threaded",
        "tls_handshakes_per_sec",
    ];
    let mut table = Table::new(&COLUMNS.map(|c| (c, false)));
    let optional = |value: Option<f64>| value.map_or(String::new(), |v| format!("{v:.4}"));
    for row in rows {
        let w = row.workload;
        let mut line = vec![
            row.server.to_string(),
            w.name.to_string(),
            row.round.to_string(),
            w.connections.to_string(),
            w.pipeline.to_string(),
            match (w.udp, w.tls) {
                (true, _) => "udp",
                (false, true) => "tls",
                (false, false) => "tcp",
            }
            .to_string(),
            row.status(),
        ];
        match &row.outcome {
            Ok(m) => {
                let r = &m.report;
                let base = baseline_of(rows, row);
                line.extend([
                    r.messages.to_string(),
                    format!("{:.3}", r.duration_s),
                    format!("{:.1}", r.msgs_per_sec),
                    r.p50_us.to_string(),
                    r.p90_us.to_string(),
                    r.p99_us.to_string(),
                    r.p999_us.to_string(),
                    r.max_us.to_string(),
                    r.errors.to_string(),
                    format!("{:.3}", m.wall.as_secs_f64()),
                    format!("{:.3}", m.server_cpu.as_secs_f64()),
                    optional(m.cpu_us_per_msg()),
                    format!("{:.3}", m.server_cores()),
                    m.peak_rss.to_string(),
                    m.threads.to_string(),
                    optional(r.client_cpu_s),
                    optional(ratio(msgs_per_sec(m), base.and_then(msgs_per_sec))),
                    optional(ratio(
                        m.cpu_us_per_msg(),
                        base.and_then(Measured::cpu_us_per_msg),
                    )),
                    optional(r.tls_handshakes_per_sec),
                ]);
            }
            Err(_) => line.extend(std::iter::repeat_n(String::new(), COLUMNS.len() - 7)),
        }
        table.rows.push(line);
    }
    table
}

/// Printed below the table when TLS rows ran: each server's new TLS connections per second
/// (the `tls-handshakes` row: every request pays a handshake), and whether the reactor met
/// its target at 1,000 lockstep TLS connections.
pub fn tls_lines(summaries: &[Summary]) -> Vec<String> {
    let mut lines = Vec::new();
    for s in summaries
        .iter()
        .filter(|s| s.workload.name == TLS_HANDSHAKES)
    {
        if let Some(rate) = s.median(|m| m.report.tls_handshakes_per_sec) {
            lines.push(format!(
                "{}: {} new TLS connections per second from {} clients, {} µs of server CPU each \
                 (handshake, greeting, one reply, close_notify)",
                s.server,
                thousands(rate),
                s.workload.connections,
                s.median(Measured::cpu_us_per_msg)
                    .map_or("-".into(), |us| format!("{us:.0}"))
            ));
        }
    }
    let target = summaries
        .iter()
        .find(|s| s.server == "reactor" && s.workload.name == TLS_TARGET_ROW);
    if let Some(reactor) = target {
        lines.push(match reactor.median_ratio(Measured::cpu_us_per_msg) {
            Some(r) => format!(
                "reactor CPU per message at 1,000 lockstep TLS connections: {r:.2} times threaded's \
                 (target: at most {TLS_CPU_TARGET}): {}",
                if r <= TLS_CPU_TARGET { "met" } else { "not met" }
            ),
            None => "reactor CPU per message at 1,000 lockstep TLS connections: not measured \
                     (its row or threaded's failed)"
                .into(),
        });
    }
    lines
}

pub fn idle_table(rows: &[IdleRow]) -> Table {
    let mut table = Table::new(&[
        ("server", false),
        ("idle connections", true),
        ("RSS before MiB", true),
        ("RSS after MiB", true),
        ("KiB per connection", true),
        ("threads", true),
        ("set-up s", true),
        ("status", false),
    ]);
    for row in rows {
        let mut line = vec![row.server.to_string()];
        match &row.outcome {
            Ok(m) => {
                line.extend([
                    thousands(m.established as f64),
                    format!("{:.1}", m.rss_before as f64 / MIB),
                    format!("{:.1}", m.rss_after as f64 / MIB),
                    format!("{:.2}", m.per_connection() / 1024.0),
                    m.threads.to_string(),
                    format!("{:.2}", m.setup.as_secs_f64()),
                ]);
                line.push(match &m.shortfall {
                    None => "ok".into(),
                    Some(why) => format!("{} of {}: {why}", m.established, m.asked),
                });
            }
            Err(why) => {
                line.extend(std::iter::repeat_n("-".to_string(), 6));
                line.push(format!("failed: {why}"));
            }
        }
        table.rows.push(line);
    }
    table
}

/// A run's msgs/s, shaped like the other figures a [`Summary`] takes medians and ratios of.
pub fn msgs_per_sec(m: &Measured) -> Option<f64> {
    Some(m.report.msgs_per_sec)
}

pub const MIB: f64 = 1024.0 * 1024.0;

/// 0.957 cores as "96%" (of one core).
fn percent(cores: Option<f64>) -> String {
    cores.map_or("-".into(), |c| format!("{:.0}%", c * 100.0))
}

/// 1234567.8 as "1,234,568".
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if value < 0.0 {
        out.insert(0, '-');
    }
    out
}
