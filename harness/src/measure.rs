//! The arithmetic behind the bench's figures, with no processes, sockets or clock, so that
//! `cargo test` checks what the README's and docs/bench.md's tables are computed from: medians over rounds,
//! each round's ratio to the baseline server, CPU time per message and memory per idle
//! connection, the limits the reactor is held to under attack, and reading what the bench
//! is handed (loadgen's `--json` report, CPU lists such as `0-3,5`, the CPU counters of
//! `/proc/stat`).
//!
//! The bench (`benches/compare/`) starts the processes and takes the readings, with
//! [`procfs`](crate::procfs) for a process's own costs; everything it then computes from
//! them is here.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// The middle value, or the mean of the two middle ones; `None` for no values.
///
/// A row run over several rounds is summarised by its median: on a shared machine one
/// round can be far off for reasons that have nothing to do with the server, and that
/// moves a median much less than a mean.
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.into_iter().collect();
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// `value / baseline`; `None` when either is missing or the baseline is not positive, so a
/// baseline that failed or measured nothing gives no ratio rather than an infinite one.
pub fn ratio(value: Option<f64>, baseline: Option<f64>) -> Option<f64> {
    match (value, baseline) {
        (Some(v), Some(b)) if b > 0.0 => Some(v / b),
        _ => None,
    }
}

/// The median of each round's own [`ratio`], given one `(value, baseline)` pair per round;
/// rounds without a ratio (either side failed) are left out.
///
/// This is not the ratio of the two medians: the servers take turns within a round, so a
/// round in which the whole machine was slow slows both, and its ratio is still a fair one.
pub fn median_ratio(rounds: impl IntoIterator<Item = (Option<f64>, Option<f64>)>) -> Option<f64> {
    median(rounds.into_iter().filter_map(|(v, b)| ratio(v, b)))
}

/// A server's CPU time per reply, in microseconds; `None` when there were no replies.
pub fn cpu_us_per_message(cpu: Duration, messages: f64) -> Option<f64> {
    (messages > 0.0).then(|| cpu.as_secs_f64() * 1e6 / messages)
}

/// How much a server's resident memory grew per connection it holds, in bytes (negative if
/// it shrank). With no connection established this is the whole growth: there is nothing
/// to divide by.
pub fn bytes_per_connection(rss_before: u64, rss_after: u64, connections: usize) -> f64 {
    (rss_after as f64 - rss_before as f64) / connections.max(1) as f64
}

/// The honest p99 the reactor is held to under an attack, in µs: three times its p99
/// with no attack, or 10 ms, whichever is larger. Three times, because an attack may cost
/// the honest clients some of the server's CPU but must not take their turn away; 10 ms at
/// the least, because on a shared 2-core machine a p99 of a millisecond or two moves by
/// several milliseconds from one run to the next with no attack at all.
pub fn attack_p99_limit_us(unloaded_p99_us: f64) -> f64 {
    (3.0 * unloaded_p99_us).max(ATTACK_P99_FLOOR_US)
}

/// The least [`attack_p99_limit_us`] ever is: 10 ms.
pub const ATTACK_P99_FLOOR_US: f64 = 10_000.0;

/// What the reactor beside its slow readers may hold resident at most, in bytes: what its
/// buffers may hold (`--max-buffer-memory`) and 32 MiB for everything else (the binary, the
/// slab of connections, the loop's buffers, the allocator's slack).
pub fn slow_reader_rss_limit(max_buffer_memory: usize) -> u64 {
    max_buffer_memory as u64 + SLOW_READER_RSS_SLACK
}

/// What [`slow_reader_rss_limit`] allows beside the buffers: 32 MiB.
pub const SLOW_READER_RSS_SLACK: u64 = 32 << 20;

/// What loadgen prints with `--json` (see docs/loadgen.md), as far as the bench reads it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// Correct replies.
    pub messages: f64,
    /// Length of the load phase, seconds.
    pub duration_s: f64,
    /// `messages / duration_s`.
    pub msgs_per_sec: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 90th percentile latency, µs; 0 if the report has none.
    pub p90_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// 99.9th percentile latency, µs; 0 if the report has none.
    pub p999_us: f64,
    /// Highest latency, µs; 0 if the report has none.
    pub max_us: f64,
    /// Mismatches, timeouts and connection errors together.
    pub errors: f64,
    /// loadgen's own CPU time over the load phase, seconds. Absent from older loadgen
    /// builds.
    pub client_cpu_s: Option<f64>,
    /// `--tls`: TLS handshakes completed per second of the load phase; `None` without TLS.
    pub tls_handshakes_per_sec: Option<f64>,
    /// Every `hostile_*` key (what the hostile clients met, `hostile_cpu_s`), by name;
    /// empty for a run without them.
    pub hostile: BTreeMap<String, f64>,
}

impl LoadReport {
    /// Reads one report: a JSON object whose values are all numbers, but for a last
    /// `error_causes` member after them (a run with errors), which it skips. Keys it does not
    /// know are ignored (loadgen may add keys, never rename them); a missing key it needs,
    /// a value that is not a number, or anything but one flat object is an error saying so.
    pub fn parse(json: &str) -> Result<LoadReport, String> {
        // loadgen promises one flat object of numbers (docs/loadgen.md), which is all this
        // has to read; a full JSON parser would be a dependency for nothing.
        let json = json.trim();
        if json.is_empty() {
            return Err("no report: the output is empty".into());
        }
        let body = json
            .strip_prefix('{')
            .and_then(|rest| rest.strip_suffix('}'))
            .ok_or_else(|| format!("not one JSON object: {}", excerpt(json)))?;
        // loadgen writes the one member that is not a number last.
        let body = body
            .find(",\"error_causes\":")
            .map_or(body, |at| &body[..at]);
        let mut fields = HashMap::new();
        if !body.trim().is_empty() {
            for pair in body.split(',') {
                let (key, value) = pair
                    .split_once(':')
                    .ok_or_else(|| format!("not a \"key\": value pair: {}", excerpt(pair)))?;
                let key = key.trim().trim_matches('"');
                let number = value
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| format!("{key:?} is not a number: {}", excerpt(value)))?;
                fields.insert(key, number);
            }
        }
        let optional = |key: &str| fields.get(key).copied();
        let required = |key: &str| optional(key).ok_or_else(|| format!("no {key:?} in the report"));
        Ok(LoadReport {
            messages: required("messages")?,
            duration_s: required("duration_s")?,
            msgs_per_sec: required("msgs_per_sec")?,
            p50_us: required("p50_us")?,
            p90_us: optional("p90_us").unwrap_or(0.0),
            p99_us: required("p99_us")?,
            p999_us: optional("p999_us").unwrap_or(0.0),
            max_us: optional("max_us").unwrap_or(0.0),
            errors: required("errors")?,
            client_cpu_s: optional("client_cpu_s"),
            tls_handshakes_per_sec: optional("tls_handshakes_per_sec"),
            hostile: fields
                .iter()
                .filter(|(key, _)| key.starts_with("hostile_"))
                .map(|(key, value)| (key.to_string(), *value))
                .collect(),
        })
    }
}

/// The start of `text`, quoted, for an error message.
fn excerpt(text: &str) -> String {
    const MAX: usize = 40;
    let text = text.trim();
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{:?}...", &text[..end]),
        None => format!("{text:?}"),
    }
}

/// The most CPUs a Linux `cpu_set_t` holds (`CPU_SETSIZE`, which only Linux's libc
/// defines): CPU numbers at or above it cannot be pinned to.
const MAX_CPUS: usize = 1024;

/// `0,2-3` as [0, 2, 3], sorted and without repeats: the format of `taskset -c` and
/// `/sys/devices/system/cpu/online`. A number must name a CPU a `cpu_set_t` can hold.
pub fn parse_cpu_list(list: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim) {
        let number = |n: &str| {
            n.trim()
                .parse::<usize>()
                .ok()
                .filter(|&n| n < MAX_CPUS)
                .ok_or_else(|| format!("{n:?} is not a CPU number"))
        };
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => (number(part)?, number(part)?),
        };
        if first > last {
            return Err(format!("{part:?} is an empty range"));
        }
        cpus.extend(first..=last);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// [0, 2, 3] as `0,2,3`: a list [`parse_cpu_list`] reads back.
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let names: Vec<String> = cpus.iter().map(usize::to_string).collect();
    names.join(",")
}

/// The machine's CPU time so far, from the first line of `/proc/stat`, in clock ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTicks {
    /// Every tick spent: user, nice, system, idle, iowait, irq, softirq and steal (guest
    /// time is already counted in user time).
    pub total: u64,
    /// Ticks spent idle or waiting for I/O.
    pub idle: u64,
}

impl CpuTicks {
    /// Reads the `cpu  user nice system idle iowait irq softirq steal ...` line that opens
    /// `/proc/stat`; `None` if the text does not start with one.
    pub fn parse(proc_stat: &str) -> Option<CpuTicks> {
        let mut fields = proc_stat.lines().next()?.split_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        let ticks: Vec<u64> = fields.map(|t| t.parse().ok()).collect::<Option<_>>()?;
        Some(CpuTicks {
            total: ticks.iter().take(8).sum(),
            idle: ticks.get(3)? + ticks.get(4)?,
        })
    }

    /// The share of CPU time that was not idle between `earlier` and `self`; `None` if no
    /// tick passed or the counters went backwards.
    pub fn busy_since(&self, earlier: &CpuTicks) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let idle = self.idle.checked_sub(earlier.idle)?;
        (total > 0).then(|| 1.0 - idle as f64 / total as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts_in_any_order() {
        assert_eq!(median([3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median([4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median([7.0]), Some(7.0));
        assert_eq!(median([1.0, 100.0]), Some(50.5));
    }

    #[test]
    fn median_of_nothing_is_none() {
        assert_eq!(median([]), None);
    }

    #[test]
    fn one_wild_round_barely_moves_the_median() {
        assert_eq!(median([10.0, 11.0, 1_000.0]), Some(11.0));
    }

    #[test]
    fn ratio_needs_both_sides_and_a_positive_baseline() {
        assert_eq!(ratio(Some(3.0), Some(2.0)), Some(1.5));
        assert_eq!(ratio(Some(0.0), Some(2.0)), Some(0.0));
        assert_eq!(ratio(Some(3.0), None), None, "no baseline");
        assert_eq!(ratio(None, Some(2.0)), None, "no value");
        assert_eq!(ratio(Some(3.0), Some(0.0)), None, "a baseline of zero");
        assert_eq!(ratio(Some(3.0), Some(-1.0)), None);
    }

    #[test]
    fn median_ratio_takes_each_round_on_its_own() {
        // Ratios 0.5, 2 and 0.5: their median is 0.5, while the ratio of the medians
        // (20 / 20) would be 1.
        let rounds = [
            (Some(10.0), Some(20.0)),
            (Some(20.0), Some(10.0)),
            (Some(30.0), Some(60.0)),
        ];
        assert_eq!(median_ratio(rounds), Some(0.5));
    }

    #[test]
    fn median_ratio_leaves_out_rounds_without_a_baseline() {
        let rounds = [
            (Some(2.0), Some(1.0)),
            (Some(9.0), None),
            (Some(3.0), Some(1.0)),
            (None, Some(1.0)),
        ];
        assert_eq!(median_ratio(rounds), Some(2.5));
        assert_eq!(
            median_ratio([(Some(2.0), None)]),
            None,
            "no baseline at all"
        );
        assert_eq!(median_ratio([]), None);
    }

    #[test]
    fn cpu_per_message() {
        let cpu = Duration::from_millis(250);
        assert_eq!(cpu_us_per_message(cpu, 50_000.0), Some(5.0));
        assert_eq!(cpu_us_per_message(cpu, 0.0), None);
    }

    #[test]
    fn memory_per_connection() {
        assert_eq!(bytes_per_connection(1_000, 11_000, 100), 100.0);
        assert_eq!(bytes_per_connection(11_000, 1_000, 100), -100.0);
        assert_eq!(bytes_per_connection(1_000, 5_000, 0), 4_000.0);
    }

    /// What loadgen prints (docs/loadgen.md), keys it adds included.
    const REPORT: &str = r#"{"messages":1200,"duration_s":2.0,"msgs_per_sec":600.0,"p50_us":40,"p90_us":55,"p99_us":90,"p999_us":130,"max_us":400,"mean_us":42.5,"errors":0,"mismatches":0,"connections":10,"client_cpu_s":0.75}"#;

    #[test]
    fn reads_a_loadgen_report() {
        let report = LoadReport::parse(&format!("{REPORT}\n")).unwrap();
        assert_eq!(
            report,
            LoadReport {
                messages: 1200.0,
                duration_s: 2.0,
                msgs_per_sec: 600.0,
                p50_us: 40.0,
                p90_us: 55.0,
                p99_us: 90.0,
                p999_us: 130.0,
                max_us: 400.0,
                errors: 0.0,
                client_cpu_s: Some(0.75),
                tls_handshakes_per_sec: None,
                hostile: BTreeMap::new(),
            }
        );
    }

    #[test]
    fn reads_the_hostile_keys_by_name() {
        let json = REPORT.replace(
            "}",
            r#","hostile_cpu_s":0.5,"hostile_idle_open":3,"hostile_idle_closed":0}"#,
        );
        let report = LoadReport::parse(&json).unwrap();
        assert_eq!(report.messages, 1200.0);
        let keys: Vec<(&str, f64)> = report
            .hostile
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(
            keys,
            [
                ("hostile_cpu_s", 0.5),
                ("hostile_idle_closed", 0.0),
                ("hostile_idle_open", 3.0)
            ]
        );
    }

    #[test]
    fn the_limits_under_attack() {
        assert_eq!(attack_p99_limit_us(1_500.0), 10_000.0, "10 ms at the least");
        assert_eq!(attack_p99_limit_us(5_000.0), 15_000.0, "else three times");
        assert_eq!(attack_p99_limit_us(0.0), ATTACK_P99_FLOOR_US);
        assert_eq!(slow_reader_rss_limit(256 << 20), 288 << 20);
    }

    #[test]
    fn reads_what_loadgen_writes() {
        let mut latency = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        for us in [40, 50, 60, 900] {
            latency.record(us).unwrap();
        }
        let written = loadgen::Report {
            messages: 4,
            duration: Duration::from_secs(2),
            connections: 2,
            connected: 2,
            mismatches: 1,
            timeouts: 0,
            connection_errors: 0,
            causes: vec![loadgen::Cause {
                cause: "wrong reply".into(),
                count: 1,
                first: "client 1: wrong reply: expected \"Hello, a\", got \"b, c: {d}\"".into(),
            }],
            unanswered: 0,
            longest_unanswered: Duration::ZERO,
            connections_opened: 2,
            tls_handshakes: 0,
            tls_verified: None,
            latency,
            client_cpu: Duration::from_millis(500),
            hostile: Vec::new(),
            hostile_cpu: Duration::ZERO,
        };
        let read = LoadReport::parse(&written.to_json()).unwrap();
        assert_eq!((read.messages, read.duration_s), (4.0, 2.0));
        assert_eq!(read.msgs_per_sec, written.msgs_per_sec());
        assert_eq!(read.p50_us, written.latency_us(0.5) as f64);
        assert_eq!(read.p99_us, written.latency_us(0.99) as f64);
        assert_eq!(read.max_us, written.latency.max() as f64);
        assert_eq!(read.errors, 1.0);
        assert_eq!(read.client_cpu_s, Some(0.5));
    }

    #[test]
    fn the_optional_keys_may_be_missing() {
        let old = r#"{ "messages": 5, "duration_s": 1, "msgs_per_sec": 5, "p50_us": 1, "p99_us": 2, "errors": 1 }"#;
        let report = LoadReport::parse(old).unwrap();
        assert_eq!((report.p90_us, report.max_us), (0.0, 0.0));
        assert_eq!(report.client_cpu_s, None);
        assert_eq!(report.errors, 1.0);
    }

    #[test]
    fn a_bad_report_says_what_is_wrong() {
        let error = |json: &str| LoadReport::parse(json).unwrap_err();
        assert_eq!(error(""), "no report: the output is empty");
        assert_eq!(error("  \n"), "no report: the output is empty");
        assert!(error("error: connection refused").starts_with("not one JSON object"));
        assert!(error(r#"{"messages":1"#).starts_with("not one JSON object"));
        assert_eq!(error("{}"), r#"no "messages" in the report"#);
        assert_eq!(
            error(&REPORT.replace(r#""p99_us":90,"#, "")),
            r#"no "p99_us" in the report"#
        );
        assert_eq!(
            error(&REPORT.replace("1200", r#""many""#)),
            r#""messages" is not a number: "\"many\"""#
        );
        assert!(error(r#"{"messages" 1}"#).starts_with("not a \"key\": value pair"));
        assert!(error(r#"{"a":1,}"#).starts_with("not a \"key\": value pair"));
        assert!(
            error(r#"{"latency":{"p50":1}}"#).contains("is not a number"),
            "nested objects are not read"
        );
    }

    #[test]
    fn long_input_is_cut_short_in_an_error() {
        let error = LoadReport::parse(&"x".repeat(500)).unwrap_err();
        assert!(error.len() < 100, "{error}");
        assert!(error.ends_with("..."), "{error}");
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,5"), Ok(vec![0, 1, 2, 3, 5]));
        assert_eq!(parse_cpu_list("1"), Ok(vec![1]));
        assert_eq!(parse_cpu_list(" 2 , 0 - 1 "), Ok(vec![0, 1, 2]));
        assert_eq!(
            parse_cpu_list("3,1-3,3"),
            Ok(vec![1, 2, 3]),
            "sorted, no repeats"
        );
        assert_eq!(parse_cpu_list("4-4"), Ok(vec![4]));
    }

    #[test]
    fn a_bad_cpu_list_names_the_bad_part() {
        assert_eq!(parse_cpu_list(""), Err(r#""" is not a CPU number"#.into()));
        assert_eq!(
            parse_cpu_list("0,"),
            Err(r#""" is not a CPU number"#.into())
        );
        assert_eq!(
            parse_cpu_list("0,,1"),
            Err(r#""" is not a CPU number"#.into())
        );
        assert_eq!(
            parse_cpu_list("a"),
            Err(r#""a" is not a CPU number"#.into())
        );
        assert_eq!(
            parse_cpu_list("1-"),
            Err(r#""" is not a CPU number"#.into())
        );
        assert_eq!(
            parse_cpu_list("-1"),
            Err(r#""" is not a CPU number"#.into())
        );
        assert_eq!(
            parse_cpu_list("3-1"),
            Err(r#""3-1" is an empty range"#.into())
        );
        #[cfg(target_os = "linux")]
        assert_eq!(MAX_CPUS, libc::CPU_SETSIZE as usize);
        let too_big = MAX_CPUS.to_string();
        assert_eq!(
            parse_cpu_list(&too_big),
            Err(format!("{too_big:?} is not a CPU number"))
        );
    }

    #[test]
    fn a_formatted_cpu_list_reads_back() {
        assert_eq!(format_cpu_list(&[0, 2, 3]), "0,2,3");
        assert_eq!(format_cpu_list(&[]), "");
        assert_eq!(
            parse_cpu_list(&format_cpu_list(&[1, 4, 7])),
            Ok(vec![1, 4, 7])
        );
    }

    #[test]
    fn cpu_ticks_from_proc_stat() {
        let stat = "cpu  100 5 50 800 20 3 2 10 7 0\ncpu0 50 2 25 400 10 1 1 5 3 0\nintr 1\n";
        let ticks = CpuTicks::parse(stat).unwrap();
        assert_eq!(
            ticks,
            CpuTicks {
                total: 100 + 5 + 50 + 800 + 20 + 3 + 2 + 10,
                idle: 800 + 20,
            }
        );
        assert_eq!(CpuTicks::parse(""), None);
        assert_eq!(
            CpuTicks::parse("cpu0 1 2 3 4 5 6 7 8\n"),
            None,
            "not the total line"
        );
        assert_eq!(CpuTicks::parse("cpu  1 2 3\n"), None, "too few fields");
        assert_eq!(CpuTicks::parse("cpu  1 2 x 4 5\n"), None);
    }

    #[test]
    fn busy_share_between_two_readings() {
        let before = CpuTicks {
            total: 1_000,
            idle: 800,
        };
        let after = CpuTicks {
            total: 1_200,
            idle: 850,
        };
        assert_eq!(after.busy_since(&before), Some(0.75));
        assert_eq!(before.busy_since(&before), None, "no tick passed");
        assert_eq!(before.busy_since(&after), None, "counters went backwards");
    }
}
