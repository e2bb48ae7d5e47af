//! What a run hands back: the [`Report`] of what it measured, with its text and JSON forms,
//! and the [`Progress`] snapshots the callback gets during the load. It only turns numbers
//! into text: it measures nothing and prints nothing (the binary decides where the text
//! goes), and the JSON key names are an interface the bench parses. Every figure but the
//! hostile ones is the honest clients' alone.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::causes::{json_string, Cause};
use super::hostile::HostileTally;

/// A snapshot handed during the load to the progress callback of
/// [`run_with_progress`](super::run_with_progress).
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Time since the load began.
    pub elapsed: Duration,
    /// Correct replies so far.
    pub messages: u64,
    /// Errors so far.
    pub errors: u64,
    /// TCP connections set up so far, the clients' first ones included (see
    /// [`Report::connections_opened`]).
    pub connections_opened: u64,
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct Report {
    /// Requests answered with exactly the expected reply.
    pub messages: u64,
    /// Length of the load phase (connection setup excluded).
    pub duration: Duration,
    /// Clients asked for.
    pub connections: usize,
    /// Clients that connected and received their greeting.
    pub connected: usize,
    /// Wrong replies, wrong greetings, and bytes nobody asked for.
    pub mismatches: u64,
    /// Requests (or greetings) unanswered after `timeout`.
    pub timeouts: u64,
    /// Connections refused, reset, closed by the server, or not set up within `timeout`.
    pub connection_errors: u64,
    /// Every error above by its cause, with the first message of each, in the order the
    /// causes were first met (at most [`MAX_CAUSES`](super::MAX_CAUSES) and one for the
    /// rest); empty without errors.
    pub causes: Vec<Cause>,
    /// Requests still in flight when the load ended (`duration` was over, or the server
    /// stopped answering): abandoned, neither messages nor errors.
    pub unanswered: u64,
    /// How long the oldest of them had waited; zero without any.
    pub longest_unanswered: Duration,
    /// TCP connections set up (connected and greeted) over the whole run, the clients'
    /// first ones included: `connected` unless
    /// [`requests_per_connection`](super::Options::requests_per_connection) makes clients
    /// reconnect. 0 over UDP.
    pub connections_opened: u64,
    /// `--tls`: TLS handshakes completed during the load phase (connection setup before it
    /// not included); 0 without TLS.
    pub tls_handshakes: u64,
    /// `--tls`: whether the server's certificate was verified (`--tls-ca`) or not
    /// (`--tls-insecure`); `None` without TLS.
    pub tls_verified: Option<bool>,
    /// Latency of each correct reply, in microseconds, from queueing the request to
    /// reading the last byte of its reply.
    pub latency: Histogram<u64>,
    /// CPU time (user + system) the engines' threads used during the load phase: the
    /// evidence that the load generator was not the bottleneck.
    pub client_cpu: Duration,
    /// How the server dealt with the hostile clients (`--hostile`), one tally per kind in
    /// the order given; empty without them. Nothing in it is an error or throughput.
    pub hostile: Vec<HostileTally>,
    /// CPU time (user + system) the hostile engines' threads used, from start to end.
    pub hostile_cpu: Duration,
}

impl Report {
    /// Every error of any kind.
    pub fn errors(&self) -> u64 {
        self.mismatches + self.timeouts + self.connection_errors
    }

    /// Correct replies per second of the load phase.
    pub fn msgs_per_sec(&self) -> f64 {
        per_second(self.messages as f64, self.duration)
    }

    /// `--tls`: handshakes completed per second of the load phase.
    pub fn tls_handshakes_per_sec(&self) -> f64 {
        per_second(self.tls_handshakes as f64, self.duration)
    }

    /// The latency at `quantile` (0.5 for the median), in microseconds; 0 with no replies.
    pub fn latency_us(&self, quantile: f64) -> u64 {
        if self.latency.is_empty() {
            return 0;
        }
        self.latency.value_at_quantile(quantile)
    }

    /// The share of one core the engines used during the load (1.0 = a whole core; above 1
    /// with several threads).
    pub fn client_cpu_fraction(&self) -> f64 {
        per_second(self.client_cpu.as_secs_f64(), self.duration)
    }

    /// The report as one line of JSON: an object of numbers and, when there were errors,
    /// one last member `error_causes`, a list of `{"cause", "count", "first"}` objects.
    /// The key names are an interface (the bench parses them); add keys, never rename
    /// them.
    pub fn to_json(&self) -> String {
        let mut json = format!(
            concat!(
                "{{\"messages\":{},\"duration_s\":{:.6},\"msgs_per_sec\":{:.1},",
                "\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},",
                "\"mean_us\":{:.1},\"errors\":{},\"mismatches\":{},\"timeouts\":{},",
                "\"connection_errors\":{},\"connections\":{},\"connected\":{},",
                "\"client_cpu_s\":{:.6},\"connections_opened\":{},\"unanswered\":{},",
                "\"longest_unanswered_us\":{}}}"
            ),
            self.messages,
            self.duration.as_secs_f64(),
            self.msgs_per_sec(),
            self.latency_us(0.5),
            self.latency_us(0.9),
            self.latency_us(0.99),
            self.latency_us(0.999),
            self.latency.max(),
            finite_or_zero(self.latency.mean()),
            self.errors(),
            self.mismatches,
            self.timeouts,
            self.connection_errors,
            self.connections,
            self.connected,
            self.client_cpu.as_secs_f64(),
            self.connections_opened,
            self.unanswered,
            self.longest_unanswered.as_micros(),
        );
        if let Some(verified) = self.tls_verified {
            json.pop();
            json += &format!(
                ",\"tls_handshakes\":{},\"tls_handshakes_per_sec\":{:.1},\"tls_verified\":{}}}",
                self.tls_handshakes,
                self.tls_handshakes_per_sec(),
                u8::from(verified)
            );
        }
        if !self.hostile.is_empty() {
            json.pop();
            json += &format!(",\"hostile_cpu_s\":{:.6}", self.hostile_cpu.as_secs_f64());
            for tally in &self.hostile {
                json += ",";
                json += &tally.json_members();
            }
            json.push('}');
        }
        if !self.causes.is_empty() {
            json.pop();
            json += ",\"error_causes\":[";
            for (i, cause) in self.causes.iter().enumerate() {
                if i > 0 {
                    json.push(',');
                }
                json += &format!(
                    "{{\"cause\":{},\"count\":{},\"first\":{}}}",
                    json_string(&cause.cause),
                    cause.count,
                    json_string(&cause.first)
                );
            }
            json += "]}";
        }
        json
    }
}

impl fmt::Display for Report {
    /// The human-readable summary, several lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "messages     {}", self.messages)?;
        writeln!(f, "duration     {:.3} s", self.duration.as_secs_f64())?;
        writeln!(f, "throughput   {:.0} msgs/s", self.msgs_per_sec())?;
        writeln!(
            f,
            "latency      p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
            self.latency_us(0.5),
            self.latency_us(0.9),
            self.latency_us(0.99),
            self.latency_us(0.999),
            self.latency.max()
        )?;
        writeln!(
            f,
            "errors       {} (mismatches {}, timeouts {}, connection errors {})",
            self.errors(),
            self.mismatches,
            self.timeouts,
            self.connection_errors
        )?;
        for cause in &self.causes {
            writeln!(
                f,
                "  because    {} × {}; the first: {}",
                cause.count, cause.cause, cause.first
            )?;
        }
        if self.unanswered > 0 {
            writeln!(
                f,
                "unanswered   {} requests still in flight at the end, the oldest for {:.3} s",
                self.unanswered,
                self.longest_unanswered.as_secs_f64()
            )?;
        }
        writeln!(
            f,
            "connections  {} of {} set up, {} opened in all",
            self.connected, self.connections, self.connections_opened
        )?;
        write!(
            f,
            "client cpu   {:.3} s ({:.0}% of one core)",
            self.client_cpu.as_secs_f64(),
            100.0 * self.client_cpu_fraction()
        )?;
        if let Some(verified) = self.tls_verified {
            write!(
                f,
                "\ntls          {} handshakes in the load ({:.0}/s), {}",
                self.tls_handshakes,
                self.tls_handshakes_per_sec(),
                if verified {
                    "the server's certificate verified against --tls-ca"
                } else {
                    "the server's certificate NOT verified (--tls-insecure)"
                }
            )?;
        }
        for tally in &self.hostile {
            write!(f, "\nhostile      {tally}")?;
        }
        if !self.hostile.is_empty() {
            write!(f, "\nhostile cpu  {:.3} s", self.hostile_cpu.as_secs_f64())?;
        }
        Ok(())
    }
}

fn per_second(amount: f64, duration: Duration) -> f64 {
    finite_or_zero(amount / duration.as_secs_f64())
}

/// JSON has no NaN or infinity; a run too short to measure reports 0.
fn finite_or_zero(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Tally;
    use crate::hostile::{HostileKind, Outcome};

    #[test]
    fn an_empty_report_is_valid_json_with_zeros() {
        let report = Report {
            messages: 0,
            duration: Duration::ZERO,
            connections: 3,
            connected: 0,
            mismatches: 1,
            timeouts: 2,
            connection_errors: 3,
            causes: Vec::new(),
            unanswered: 0,
            longest_unanswered: Duration::ZERO,
            connections_opened: 0,
            tls_handshakes: 0,
            tls_verified: None,
            latency: Tally::new().unwrap().latency,
            client_cpu: Duration::ZERO,
            hostile: Vec::new(),
            hostile_cpu: Duration::ZERO,
        };
        let json = report.to_json();
        assert!(json.starts_with('{') && json.ends_with('}'), "{json}");
        assert!(!json.contains("NaN") && !json.contains("inf"), "{json}");
        assert!(json.contains("\"msgs_per_sec\":0.0,"), "{json}");
        assert!(json.contains("\"errors\":6,"), "{json}");
        assert!(json.contains("\"p99_us\":0,"), "{json}");
        assert!(
            !json.contains("hostile"),
            "no hostile keys without hostile clients"
        );

        let mut idle = HostileTally::new(HostileKind::Idle);
        idle.clients = 2;
        idle.count(Outcome::Open);
        idle.count(Outcome::Closed);
        let with_hostile = Report {
            hostile: vec![idle],
            ..report
        };
        let json = with_hostile.to_json();
        assert!(json.starts_with('{') && json.ends_with('}'), "{json}");
        assert!(json.contains(",\"hostile_cpu_s\":0.000000,"), "{json}");
        assert!(json.contains("\"hostile_idle_open\":1,"), "{json}");
        assert!(json.contains("\"hostile_idle_closed\":1,"), "{json}");
        let text = with_hostile.to_string();
        assert!(text.contains("hostile      idle ×2:"), "{text}");
    }
}
