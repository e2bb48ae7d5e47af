//! The attack rows: 100 honest lockstep clients alone, then beside each attack of
//! [`plan::WORKLOADS`](crate::plan::WORKLOADS) (the last of them three kinds at once), on
//! every server marked `under_attack`. Their table (what the honest clients got, what the
//! server cost, what became of the hostile clients, and for the reactor whether the row
//! meets its targets) and the targets the reactor is held to, checked against the rows as
//! measured. The limits themselves are arithmetic, in `harness::measure`.

use evloop::budget::DEFAULT_MAX_BUFFER_MEMORY;
use harness::measure::{attack_p99_limit_us, slow_reader_rss_limit, LoadReport};

use crate::table::{msgs_per_sec, thousands, Summary, Table, MIB};

/// The server the targets are for.
const REACTOR: &str = "reactor";

/// The attack table: one line per (server, attack), medians over the rounds as in the
/// results table (errors summed, peak RSS and threads the most). The last column says what
/// became of the hostile clients in the last round.
pub fn attack_table(summaries: &[Summary]) -> Table {
    let mut table = Table::new(&[
        ("server", false),
        ("attack", false),
        ("honest msgs/s", true),
        ("honest p50 µs", true),
        ("honest p99 µs", true),
        ("honest errors", true),
        ("peak RSS MiB", true),
        ("threads", true),
        ("hostile clients at the end", false),
        ("reactor targets", false),
        ("status", false),
    ]);
    let rounded = |value: Option<f64>| value.map_or("-".into(), thousands);
    let unloaded = unloaded_reactor_p99(summaries);
    for s in summaries {
        let Some(attack) = &s.workload.attack else {
            continue;
        };
        let mut line = vec![s.server.to_string(), attack.label.to_string()];
        match s.measured().last() {
            Some(last) => line.extend([
                rounded(s.median(msgs_per_sec)),
                rounded(s.median(|m| (m.report.messages > 0.0).then_some(m.report.p50_us))),
                rounded(honest_p99(s)),
                thousands(s.errors()),
                s.max(|m| m.peak_rss)
                    .map_or("-".into(), |b| format!("{:.1}", b as f64 / MIB)),
                s.max(|m| m.threads).map_or("-".into(), |t| t.to_string()),
                hostile_outcome(&last.report),
                row_targets(s, unloaded),
            ]),
            None => line.extend(std::iter::repeat_n("-".to_string(), 8)),
        }
        line.push(s.status());
        table.push(line);
    }
    table
}

/// The reactor's honest p99 with no attack, the median over the rounds, if it was measured.
fn unloaded_reactor_p99(summaries: &[Summary]) -> Option<f64> {
    summaries
        .iter()
        .filter(|s| s.server == REACTOR)
        .find(|s| {
            s.workload
                .attack
                .as_ref()
                .is_some_and(|a| a.hostile.is_empty())
        })
        .and_then(honest_p99)
}

/// A row's honest p99, the median over the rounds that answered any honest request: a
/// round with no reply has no latency to speak of (loadgen reports 0), and must not pass
/// for a fast one.
fn honest_p99(s: &Summary) -> Option<f64> {
    s.median(|m| (m.report.messages > 0.0).then_some(m.report.p99_us))
}

/// Whether one reactor attack row meets both targets, each said: no honest error, and
/// honest p99 within [`attack_p99_limit_us`] of `unloaded`. `-` for the other servers and
/// the row with no attack.
fn row_targets(s: &Summary, unloaded: Option<f64>) -> String {
    let attacked = s
        .workload
        .attack
        .as_ref()
        .is_some_and(|a| !a.hostile.is_empty());
    if s.server != REACTOR || !attacked {
        return "-".into();
    }
    let errors = match s.errors() {
        n if n > 0.0 => format!("{} errors: missed", thousands(n)),
        _ => "0 errors: met".to_string(),
    };
    let p99 = match (honest_p99(s), unloaded) {
        (Some(p99), Some(unloaded)) => {
            let limit = attack_p99_limit_us(unloaded);
            let verdict = if p99 <= limit { "met" } else { "missed" };
            format!("p99 ≤ {} µs: {verdict}", thousands(limit))
        }
        (None, _) if s.measured().next().is_some() => "p99: no reply, missed".into(),
        _ => "p99: not measured".into(),
    };
    format!("{errors}; {p99}")
}

/// What became of the hostile clients of `report`, in a few words: `2,000 paused`,
/// `5,000 still connected`, `29,132 connections`. From loadgen's `hostile_<kind>_<field>`
/// keys (docs/loadgen.md).
fn hostile_outcome(report: &LoadReport) -> String {
    const KINDS: [&str; 6] = [
        "partial_line",
        "slow_reader",
        "dribbler",
        "idle",
        "churn",
        "udp_flood",
    ];
    const OUTCOMES: [(&str, &str); 10] = [
        ("open", "still connected"),
        ("paused", "paused"),
        ("closed", "closed"),
        ("err_line_timeout", "ERR line timeout"),
        ("err_line_too_long", "ERR line too long"),
        ("err_server_busy", "ERR server busy"),
        ("err_too_many_from_address", "ERR too many from the address"),
        ("err_other", "another ERR"),
        ("reset", "reset"),
        ("failed", "failed"),
    ];
    let value = |kind: &str, field: &str| {
        let key = format!("hostile_{kind}_{field}");
        report.hostile.get(&key).copied()
    };
    let present: Vec<&str> = KINDS
        .into_iter()
        .filter(|k| value(k, "clients").is_some())
        .collect();
    let mut kinds = Vec::new();
    for &kind in &present {
        let count = |field| value(kind, field).unwrap_or(0.0);
        let mut parts = Vec::new();
        match kind {
            "churn" => parts.push(format!("{} connections", thousands(count("connected")))),
            "udp_flood" => parts.push(format!("{} datagrams", thousands(count("datagrams_sent")))),
            _ => {}
        }
        for (field, words) in OUTCOMES {
            let words = match (kind, field) {
                ("udp_flood", "open") => "still flooding",
                _ => words,
            };
            if count(field) > 0.0 {
                parts.push(format!("{} {words}", thousands(count(field))));
            }
        }
        // Several kinds in one row: each says which it is.
        match (present.len(), parts.is_empty()) {
            (_, true) => {}
            (1, false) => kinds.push(parts.join(", ")),
            _ => kinds.push(format!("{}: {}", kind.replace('_', "-"), parts.join(", "))),
        }
    }
    if kinds.is_empty() {
        "-".into()
    } else {
        kinds.join("; ")
    }
}

/// The reactor's targets under attack, one line each, saying whether the rows as measured
/// meet them: no honest error in any attack row; honest p99 under every attack within
/// [`attack_p99_limit_us`] of its p99 with no attack; peak RSS beside the slow readers
/// within [`slow_reader_rss_limit`] of the default `--max-buffer-memory` the bench starts
/// it with. A target whose rows did not run says so.
pub fn reactor_targets(summaries: &[Summary]) -> Vec<String> {
    let rows: Vec<&Summary> = summaries
        .iter()
        .filter(|s| s.server == REACTOR && s.workload.attack.is_some())
        .collect();
    let label = |s: &Summary| s.workload.attack.as_ref().map_or("", |a| a.label);
    let is_unloaded = |s: &&&Summary| {
        s.workload
            .attack
            .as_ref()
            .is_some_and(|a| a.hostile.is_empty())
    };
    let mut lines = Vec::new();

    let measured: Vec<&&Summary> = rows
        .iter()
        .filter(|s| s.measured().next().is_some())
        .collect();
    lines.push(if measured.is_empty() {
        "no honest error in any attack row: not measured".to_string()
    } else {
        let with_errors: Vec<String> = measured
            .iter()
            .filter(|s| s.errors() > 0.0)
            .map(|s| format!("{} under {}", thousands(s.errors()), label(s)))
            .collect();
        if with_errors.is_empty() {
            format!(
                "no honest error in any attack row: met ({} rows)",
                measured.len()
            )
        } else {
            format!(
                "no honest error in any attack row: missed ({})",
                with_errors.join(", ")
            )
        }
    });

    let unloaded = rows.iter().find(is_unloaded).and_then(|s| honest_p99(s));
    // Every measured attack row; `None` where no honest request was answered at all.
    let attacked: Vec<(&str, Option<f64>)> = rows
        .iter()
        .filter(|s| !is_unloaded(s) && s.measured().next().is_some())
        .map(|s| (label(s), honest_p99(s)))
        .collect();
    lines.push(match unloaded {
        Some(unloaded) if !attacked.is_empty() => {
            let limit = attack_p99_limit_us(unloaded);
            let head = format!(
                "honest p99 under every attack within max(3 × {} µs, 10 ms) = {} µs",
                thousands(unloaded),
                thousands(limit)
            );
            let over: Vec<String> = attacked
                .iter()
                .filter_map(|&(label, p99)| match p99 {
                    None => Some(format!("no reply under {label}")),
                    Some(p99) if p99 > limit => {
                        Some(format!("{} µs under {label}", thousands(p99)))
                    }
                    Some(_) => None,
                })
                .collect();
            let (worst_label, worst) = attacked
                .iter()
                .filter_map(|&(label, p99)| Some((label, p99?)))
                .fold(("", 0.0), |w, a| if a.1 > w.1 { a } else { w });
            if over.is_empty() {
                format!(
                    "{head}: met (worst {} µs, under {worst_label})",
                    thousands(worst)
                )
            } else {
                format!("{head}: missed ({})", over.join(", "))
            }
        }
        _ => "honest p99 under every attack within max(3 × unloaded, 10 ms): not measured"
            .to_string(),
    });

    let limit = slow_reader_rss_limit(DEFAULT_MAX_BUFFER_MEMORY);
    let head = format!(
        "peak RSS beside the slow readers within {:.0} MiB + {:.0} MiB = {:.0} MiB",
        DEFAULT_MAX_BUFFER_MEMORY as f64 / MIB,
        (limit - DEFAULT_MAX_BUFFER_MEMORY as u64) as f64 / MIB,
        limit as f64 / MIB
    );
    let slow_readers = rows.iter().find(|s| {
        s.workload
            .attack
            .as_ref()
            .is_some_and(|a| a.hostile.iter().any(|h| h.starts_with("slow-reader:")))
    });
    lines.push(match slow_readers.and_then(|s| s.max(|m| m.peak_rss)) {
        Some(rss) if rss <= limit => format!("{head}: met ({:.1} MiB)", rss as f64 / MIB),
        Some(rss) => format!("{head}: missed ({:.1} MiB)", rss as f64 / MIB),
        None => format!("{head}: not measured"),
    });
    lines
}
