//! The Prometheus text format, version 0.0.4, with no I/O: the body of a scrape
//! ([`render`] of a [`Scrape`]), and the histogram of loop turn durations
//! ([`TurnHistogram`]) whose buckets, bounds and `le` labels together, it shows.
//!
//! This module owns every metric's name, type and help text, and the order they come in.
//! It must not read a socket, a clock or a shared counter: a `Scrape` is plain data that the
//! endpoint fills in, so the rendering is tested without a server. HTTP (the head, the
//! status) is `http.rs`'s.
//!
//! The text is written here by hand rather than with an encoder crate: the values already
//! live in `Stats`, the set of metrics is fixed, and the format is two comment lines and a
//! sample line per value. `prometheus-client` would need every value copied into its atomic
//! metric types before each scrape only to read them out again, and it writes the
//! OpenMetrics format, not 0.0.4.

use std::fmt::{Display, Write as _};
use std::time::Duration;

use super::http::{Responses, Status};
use super::hub::LoopReport;

/// The turn-duration buckets: each upper bound in nanoseconds and as its `le` label. From
/// 50 µs (a turn of a few events) to 1 s (far beyond what the loop's per-turn bounds allow:
/// a turn that long means the machine stalled the loop).
const TURN_BUCKETS: [(u64, &str); 14] = [
    (50_000, "0.00005"),
    (100_000, "0.0001"),
    (250_000, "0.00025"),
    (500_000, "0.0005"),
    (1_000_000, "0.001"),
    (2_500_000, "0.0025"),
    (5_000_000, "0.005"),
    (10_000_000, "0.01"),
    (25_000_000, "0.025"),
    (50_000_000, "0.05"),
    (100_000_000, "0.1"),
    (250_000_000, "0.25"),
    (500_000_000, "0.5"),
    (1_000_000_000, "1"),
];

/// Loop turn durations in fixed buckets. Observing one turn costs a binary search over 14
/// bounds and two additions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TurnHistogram {
    /// Turns per bucket, not cumulative: `counts[i]` took at most bucket `i`'s bound and
    /// more than the one before; the last counts the turns beyond every bound.
    counts: [u64; TURN_BUCKETS.len() + 1],
    /// The time of every turn observed, added up, in nanoseconds.
    sum_ns: u64,
}

impl TurnHistogram {
    pub(crate) fn observe(&mut self, turn: Duration) {
        let ns = u64::try_from(turn.as_nanos()).unwrap_or(u64::MAX);
        let bucket = TURN_BUCKETS.partition_point(|&(bound, _)| bound < ns);
        self.counts[bucket] += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub(super) fn add(&mut self, other: &TurnHistogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine += theirs;
        }
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }
}

/// Everything one scrape shows: every loop's counts added up, and the gauges read when the
/// answer is written. Plain data, so the rendering is tested without a server.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Scrape {
    pub(super) counts: LoopReport,
    pub(super) open_connections: usize,
    pub(super) buffered: usize,
    pub(super) buffer_budget: usize,
    pub(super) loops: usize,
    pub(super) started: Duration,
    pub(super) responses: Responses,
}

/// The text of the Prometheus exposition format, one family at a time.
#[derive(Default)]
struct Text(String);

impl Text {
    /// A metric's `# HELP` and `# TYPE` lines, which come before its samples. (No help text
    /// here holds a backslash or a newline, the two characters the format would need
    /// escaped.)
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl Display) {
        let _ = writeln!(self.0, "{name}{labels} {value}");
    }

    /// A family with one sample and no labels.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, "", value);
    }
}

/// The body of a scrape, in the Prometheus text format, version 0.0.4.
pub(super) fn render(scrape: &Scrape) -> String {
    let stats = &scrape.counts.stats;
    let mut text = Text::default();
    text.single(
        "evloop_connections_open",
        "gauge",
        "TCP connections open now, across every loop.",
        scrape.open_connections,
    );
    text.single(
        "evloop_connections_accepted_total",
        "counter",
        "TCP connections accepted (refused ones not included).",
        stats.connections,
    );
    let refused = "evloop_connections_refused_total";
    text.family(
        refused,
        "counter",
        "TCP connections refused: busy (at --max-connections), per_address (at \
         --max-connections-per-ip), proxy_header (--proxy-protocol: no valid header in time).",
    );
    text.sample(refused, "{reason=\"busy\"}", stats.refused);
    text.sample(refused, "{reason=\"per_address\"}", stats.refused_per_ip);
    text.sample(refused, "{reason=\"proxy_header\"}", stats.proxy_rejected);
    let lingering = "evloop_lingering_closed_total";
    text.family(
        lingering,
        "counter",
        "Lingering connections (owing nothing, waiting only for their client's EOF) closed \
         to admit a new client: busy (at --max-connections), per_address (at \
         --max-connections-per-ip, one from the same address).",
    );
    text.sample(lingering, "{reason=\"busy\"}", stats.lingering_closed);
    text.sample(
        lingering,
        "{reason=\"per_address\"}",
        stats.lingering_closed_per_ip,
    );
    text.single(
        "evloop_tls_handshakes_failed_total",
        "counter",
        "TLS connections closed because their handshake failed (plaintext, garbage, a \
         client that gave up) or was not complete within --handshake-timeout; they are \
         counted as accepted too.",
        stats.tls_rejected,
    );
    text.single(
        "evloop_connections_paused",
        "gauge",
        "TCP connections not being read because their client does not take its replies: \
         unsent output passed the high-water mark (state Replying), or the connection \
         holds its share of --max-buffer-memory.",
        scrape.counts.paused,
    );
    text.single(
        "evloop_messages_total",
        "counter",
        "Messages answered: TCP lines (or reads, with --framing raw) and UDP datagrams.",
        stats.messages,
    );
    text.single(
        "evloop_received_bytes_total",
        "counter",
        "Bytes read from clients, TCP and UDP.",
        stats.bytes_in,
    );
    text.single(
        "evloop_sent_bytes_total",
        "counter",
        "Bytes written to clients, TCP and UDP.",
        stats.bytes_out,
    );
    text.single(
        "evloop_udp_datagrams_received_total",
        "counter",
        "UDP datagrams received.",
        stats.udp_datagrams,
    );
    text.single(
        "evloop_udp_replies_dropped_total",
        "counter",
        "UDP replies dropped: the send queue was full, or the send failed.",
        stats.udp_dropped,
    );
    text.single(
        "evloop_buffered_bytes",
        "gauge",
        "Bytes held in connection buffers now, across every loop, against \
         evloop_buffer_budget_bytes.",
        scrape.buffered,
    );
    text.single(
        "evloop_buffer_budget_bytes",
        "gauge",
        "What all connection buffers may hold together (--max-buffer-memory).",
        scrape.buffer_budget,
    );
    let turns = &scrape.counts.turns;
    let turn = "evloop_turn_duration_seconds";
    text.family(
        turn,
        "histogram",
        "Loop turns, from poll returning to the end of the turn, every loop's.",
    );
    let mut cumulative = 0;
    for (&(_, le), count) in TURN_BUCKETS.iter().zip(turns.counts) {
        cumulative += count;
        text.sample(
            "evloop_turn_duration_seconds_bucket",
            &format!("{{le=\"{le}\"}}"),
            cumulative,
        );
    }
    text.sample(
        "evloop_turn_duration_seconds_bucket",
        "{le=\"+Inf\"}",
        turns.count(),
    );
    text.sample(
        "evloop_turn_duration_seconds_sum",
        "",
        turns.sum_ns as f64 / 1e9,
    );
    text.sample("evloop_turn_duration_seconds_count", "", turns.count());
    text.single(
        "evloop_loops",
        "gauge",
        "Event loops serving (--threads).",
        scrape.loops,
    );
    text.single(
        "evloop_start_time_seconds",
        "gauge",
        "When the server started, in seconds since the Unix epoch.",
        format_args!("{:.3}", scrape.started.as_secs_f64()),
    );
    let responses = "evloop_metrics_responses_total";
    text.family(
        responses,
        "counter",
        "Responses of this metrics endpoint by status code (503: too many metrics clients \
         at once), this one included.",
    );
    for (status, count) in Status::ALL.iter().zip(scrape.responses.0) {
        text.sample(responses, &format!("{{code=\"{}\"}}", status.code()), count);
    }
    text.0
}

/// The content type of the text format, as Prometheus's own clients send it.
pub(super) const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Stats;

    fn ms(n: u64) -> Duration {
        Duration::from_micros(n * 1000)
    }

    #[test]
    fn a_turn_falls_in_the_first_bucket_whose_bound_it_does_not_exceed() {
        let mut turns = TurnHistogram::default();
        turns.observe(Duration::ZERO);
        turns.observe(Duration::from_micros(50)); // on the bound: still the first bucket
        turns.observe(Duration::from_nanos(50_001));
        turns.observe(ms(7));
        turns.observe(Duration::from_secs(1));
        turns.observe(Duration::from_secs(3)); // beyond every bound
        let mut expected = [0; TURN_BUCKETS.len() + 1];
        expected[0] = 2;
        expected[1] = 1;
        expected[7] = 1; // 10 ms
        expected[13] = 1; // 1 s
        expected[14] = 1; // +Inf
        assert_eq!(turns.counts, expected);
        assert_eq!(turns.count(), 6);
        assert_eq!(turns.sum_ns, 4_007_100_001);
    }

    #[test]
    fn the_bucket_bounds_rise_and_their_labels_say_the_same_seconds() {
        for pair in TURN_BUCKETS.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{pair:?}");
        }
        for (ns, le) in TURN_BUCKETS {
            let seconds: f64 = le.parse().unwrap();
            assert_eq!((seconds * 1e9).round() as u64, ns, "{le}");
        }
    }

    fn scrape() -> Scrape {
        let mut turns = TurnHistogram::default();
        for micros in [10, 60, 60, 2_000, 2_000_000] {
            turns.observe(Duration::from_micros(micros));
        }
        let mut responses = Responses::default();
        responses.count(Status::Ok);
        responses.count(Status::NotFound);
        Scrape {
            counts: LoopReport {
                stats: Stats {
                    connections: 12,
                    refused: 3,
                    refused_per_ip: 4,
                    lingering_closed: 8,
                    lingering_closed_per_ip: 9,
                    proxy_rejected: 6,
                    messages: 1000,
                    bytes_in: 17_000,
                    bytes_out: 25_108,
                    udp_dropped: 5,
                    udp_datagrams: 400,
                    ..Stats::default()
                },
                paused: 2,
                turns,
            },
            open_connections: 7,
            buffered: 4096,
            buffer_budget: 256 << 20,
            loops: 2,
            started: Duration::from_millis(1_764_600_000_123),
            responses,
        }
    }

    /// The samples of `text`: (name with labels, value).
    fn samples(text: &str) -> Vec<(&str, &str)> {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| {
                line.rsplit_once(' ')
                    .expect("a sample is a name and a value")
            })
            .collect()
    }

    fn value<'a>(text: &'a str, series: &str) -> &'a str {
        samples(text)
            .into_iter()
            .find(|(name, _)| *name == series)
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .1
    }

    #[test]
    fn every_count_is_shown_under_its_name() {
        let text = render(&scrape());
        for (series, expected) in [
            ("evloop_connections_open", "7"),
            ("evloop_connections_accepted_total", "12"),
            ("evloop_connections_refused_total{reason=\"busy\"}", "3"),
            (
                "evloop_connections_refused_total{reason=\"per_address\"}",
                "4",
            ),
            (
                "evloop_connections_refused_total{reason=\"proxy_header\"}",
                "6",
            ),
            ("evloop_lingering_closed_total{reason=\"busy\"}", "8"),
            ("evloop_lingering_closed_total{reason=\"per_address\"}", "9"),
            ("evloop_connections_paused", "2"),
            ("evloop_messages_total", "1000"),
            ("evloop_received_bytes_total", "17000"),
            ("evloop_sent_bytes_total", "25108"),
            ("evloop_udp_datagrams_received_total", "400"),
            ("evloop_udp_replies_dropped_total", "5"),
            ("evloop_buffered_bytes", "4096"),
            ("evloop_buffer_budget_bytes", "268435456"),
            ("evloop_loops", "2"),
            ("evloop_start_time_seconds", "1764600000.123"),
            ("evloop_metrics_responses_total{code=\"200\"}", "1"),
            ("evloop_metrics_responses_total{code=\"404\"}", "1"),
            ("evloop_metrics_responses_total{code=\"503\"}", "0"),
        ] {
            assert_eq!(value(&text, series), expected, "{series}");
        }
    }

    #[test]
    fn the_histogram_is_cumulative_and_ends_in_inf_equal_to_its_count() {
        let text = render(&scrape());
        let bucket = |le: &str| {
            value(
                &text,
                &format!("evloop_turn_duration_seconds_bucket{{le=\"{le}\"}}"),
            )
            .parse::<u64>()
            .unwrap()
        };
        assert_eq!(bucket("0.00005"), 1);
        assert_eq!(bucket("0.0001"), 3);
        assert_eq!(bucket("0.0025"), 4);
        assert_eq!(bucket("1"), 4);
        assert_eq!(bucket("+Inf"), 5);
        assert_eq!(value(&text, "evloop_turn_duration_seconds_count"), "5");
        assert_eq!(value(&text, "evloop_turn_duration_seconds_sum"), "2.00213");
        let buckets: Vec<u64> = samples(&text)
            .into_iter()
            .filter(|(name, _)| name.starts_with("evloop_turn_duration_seconds_bucket"))
            .map(|(_, v)| v.parse().unwrap())
            .collect();
        assert_eq!(buckets.len(), TURN_BUCKETS.len() + 1);
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    }

    #[test]
    fn every_sample_follows_the_help_and_type_of_its_family() {
        let text = render(&scrape());
        let mut family: Option<(&str, &str)> = None;
        let mut helped = None;
        let mut families = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                assert!(!help.is_empty() && !help.contains('\\'), "{line}");
                helped = Some(name);
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(helped, Some(name), "TYPE right after its HELP: {line}");
                assert_eq!(name.ends_with("_total"), kind == "counter", "{line}");
                assert!(name.starts_with("evloop_"), "{line}");
                family = Some((name, kind));
                families += 1;
            } else {
                let (name, kind) = family.expect("a sample after a TYPE line");
                let series = line.split([' ', '{']).next().unwrap();
                let allowed: &[&str] = if kind == "histogram" {
                    &["_bucket", "_sum", "_count"]
                } else {
                    &[""]
                };
                assert!(
                    allowed
                        .iter()
                        .any(|suffix| series == format!("{name}{suffix}")),
                    "{line} is not of {name}"
                );
            }
        }
        assert_eq!(families, 17);
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn the_response_stays_small_whatever_the_counts() {
        let mut huge = scrape();
        huge.counts.stats = Stats {
            connections: u64::MAX,
            refused: u64::MAX,
            refused_per_ip: u64::MAX,
            lingering_closed: u64::MAX,
            lingering_closed_per_ip: u64::MAX,
            proxy_rejected: u64::MAX,
            messages: u64::MAX,
            bytes_in: u64::MAX,
            bytes_out: u64::MAX,
            udp_dropped: u64::MAX,
            udp_datagrams: u64::MAX,
            ..Stats::default()
        };
        huge.counts.turns.counts = [u64::MAX / 16; TURN_BUCKETS.len() + 1];
        huge.counts.turns.sum_ns = u64::MAX;
        huge.responses = Responses([u64::MAX; Status::ALL.len()]);
        let body = render(&huge);
        assert!(body.len() < 8 * 1024, "{} bytes", body.len());
    }
}
