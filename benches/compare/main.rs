//! `cargo bench --bench compare`: the reactor against a thread per connection (and against
//! the reactor on two threads, and a tokio server), under the same load.
//!
//! # What it measures
//!
//! Every server runs as a child process of its own on a free port. For each (server,
//! workload) row a fresh server is started, the `loadgen` binary drives it for
//! `EVLOOP_BENCH_SECS` seconds, and the bench reads from the server's `/proc` entry. By
//! default the servers run on one half of the CPUs and loadgen on the other (see
//! [`plan::Pinning`] for why), so every server has the same CPUs to itself.
//!
//! * **msgs/s, p50, p99**: correct replies per second and their latency, as loadgen reports
//!   them (loadgen checks every reply byte for byte; a wrong one is an error, not
//!   throughput).
//! * **errors**: loadgen's count of mismatches, timeouts and connection errors. Anything but
//!   0 means the row is suspect; the status column says so.
//! * **CPU µs/msg**: the server's user + system CPU time over the whole loadgen run, divided
//!   by the replies. It includes setting the connections up (accept and greeting), which
//!   matters only in the 5,000-connection row. This is the figure that says what a design
//!   costs. msgs/s is bounded by loadgen as much as by the server: loadgen spends about as
//!   much CPU per message as a lean server, almost all of it in the kernel.
//! * **peak RSS**: the server's high-water resident memory (VmHWM) at the end of the row.
//! * **threads**: the most threads the server had while loadgen ran.
//! * **server CPU, loadgen CPU**: each one's CPU time over the run as a share of one core.
//!   The one near 100% of its CPUs is the bottleneck; when neither is, something else had
//!   the CPU (or the run is latency-bound, as with one lockstep connection), and msgs/s
//!   understates what the server can do. CPU µs/msg is the steadier figure.
//! * **vs threaded**: this server's msgs/s and CPU µs/msg divided by the threaded server's in
//!   the same workload and round. Above 1 is faster for msgs/s; below 1 is cheaper for CPU.
//!
//! With `EVLOOP_BENCH_REPEATS` above 1 every row runs that many rounds, and the printed
//! table shows medians: of each figure, and of each round's own ratio to the baseline.
//!
//! The attack rows run 100 honest lockstep clients alone, then beside 2,000 slow readers,
//! 5,000 dribblers, 1,000 churners and a UDP flood (`loadgen --hostile`), against the
//! reactor, the threaded server and tokio. Their own table gives what the honest clients
//! got (msgs/s, p50, p99, errors), the server's peak RSS and threads, and what became of
//! the hostile clients; below it, whether the reactor met its targets under attack (see
//! [`attack`]).
//!
//! The TLS rows run the reactor and the threaded server with a certificate the bench makes
//! at start (see [`certificate`]) and loadgen with `--tls`: 1, 100 and 1,000 lockstep
//! connections, and new connections per second (`--requests-per-connection 1`, a handshake
//! per request). Below the table: each server's handshakes per second, and whether the
//! reactor's CPU per message at 1,000 TLS connections is at most 0.7 times the baseline's.
//!
//! The idle test then holds `EVLOOP_BENCH_IDLE` TCP connections open against each server
//! (opened by this process, each reads its greeting and then sends nothing) and reports the
//! server's resident memory growth per connection. Kernel memory (socket buffers) is not in
//! RSS, so this is what the server process itself spends to keep a client waiting.
//!
//! # Output
//!
//! A markdown table on stdout (then the attack table with the reactor's targets, and the
//! idle table), `target/bench/results.csv` (every row, the attack rows too),
//! `target/bench/attack.csv`, `target/bench/idle.csv`, two charts of the lockstep rows,
//! `target/bench/throughput.svg` and `target/bench/latency.svg`, and one of the attack rows,
//! `target/bench/attack.svg`. Each server's and loadgen's stderr and loadgen's JSON go to
//! `target/bench/logs/`, which is where to look when a row says `failed`. The CSV has every
//! round; the tables and the charts show medians.
//!
//! # Knobs (environment variables)
//!
//! `EVLOOP_BENCH_SECS` (default 8) seconds of load per row; `EVLOOP_BENCH_REPEATS`
//! (default 1) rounds; `EVLOOP_BENCH_PIN` (default `auto`; `off`, or `SERVER/LOADGEN` CPU
//! lists such as `1/0`) where the children run; `EVLOOP_BENCH_IDLE` (default 10000, 0
//! skips the test) idle connections; `EVLOOP_BENCH_SERVERS` and `EVLOOP_BENCH_WORKLOADS`
//! comma-separated names to run only some rows (the names are printed in the table; `attack`
//! stands for every attack row, `tls` for every TLS row).
//!
//! # Command line
//!
//! The binary benches only when given `--bench`, which `cargo bench` passes; it ignores
//! other arguments. `cargo test` runs it without `--bench` (`test = true` in Cargo.toml),
//! and then it checks instead, in a fraction of a second, that every server speaks the
//! protocol byte for byte (see [`check`]). `--serve-tokio ADDR` makes it the tokio server,
//! and `--run-loadgen FLAGS` makes it loadgen: that is how the bench runs each in a process
//! of its own.
//!
//! # Where things are
//!
//! This file runs the rows in order and writes what they found. [`plan`] says what to run
//! (servers, workloads, the knobs above), [`processes`] starts the servers and loadgen,
//! [`measuring`] turns one row or the idle test into figures, [`table`], [`attack`] and
//! [`chart`] lay them out, and [`check`] is what `cargo test` runs. The tokio server itself
//! is `harness::tokio_peer`, and the arithmetic behind the figures is `harness::measure`.

mod attack;
mod certificate;
mod chart;
mod check;
mod measuring;
mod plan;
mod processes;
mod table;

use std::fs;
use std::io;
use std::path::Path;
use std::time::Instant;

use attack::{attack_table, reactor_targets};
use measuring::{idle_rows, machine_description, run_row};
use plan::Settings;
use processes::{LISTEN, LOADGEN_TIMEOUT_SECS, RUN_LOADGEN, SERVE_TOKIO};
use table::{idle_table, results_csv, results_table, summaries, tls_lines};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(SERVE_TOKIO) {
        serve_tokio(args.get(1).map(String::as_str));
        return;
    }
    if args.first().map(String::as_str) == Some(RUN_LOADGEN) {
        // `--run-loadgen` stands where loadgen's own name would be.
        loadgen::command::main(std::env::args_os().skip(1));
    }
    if !args.iter().any(|a| a == "--bench") {
        // Run by `cargo test` (see "Command line" above).
        let passed = check::run();
        std::process::exit(if passed { 0 } else { 1 });
    }
    let mut settings = Settings::from_env().unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(2);
    });
    if settings.workloads.iter().any(|w| w.tls) {
        match certificate::make(&settings.out_dir.join("tls")) {
            Ok(made) => settings.certificate = Some(made),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        }
    }
    if let Err(e) = run(&settings) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn serve_tokio(listen: Option<&str>) {
    let listen = listen.unwrap_or(LISTEN);
    let result = listen
        .parse()
        .map_err(|e| io::Error::other(format!("bad address {listen}: {e}")))
        .and_then(harness::tokio_peer::serve);
    if let Err(e) = result {
        eprintln!("error: tokio server: {e}");
        std::process::exit(2);
    }
}

fn run(settings: &Settings) -> Result<(), String> {
    let started = Instant::now();
    fs::create_dir_all(settings.logs())
        .map_err(|e| format!("cannot create {}: {e}", settings.logs().display()))?;
    println!("{}", machine_description());
    println!("{}", settings.describe_pinning());
    let rounds = match settings.repeats {
        1 => String::new(),
        n => format!(", {n} rounds (medians shown)"),
    };
    let per_round = settings.rows_per_round();
    println!(
        "{} s per row, {per_round} rows ({} servers × {} workloads, the attack and TLS rows on the servers that run them){rounds}, 16-byte messages, loadgen --timeout {LOADGEN_TIMEOUT_SECS}\n",
        settings.secs,
        settings.servers.len(),
        settings.workloads.len()
    );

    let mut rows = Vec::new();
    let total = settings.repeats * per_round;
    // Rounds outermost, then workloads: the servers take turns at each workload, so a change
    // in the machine's background load over the run does not land on one server's rows
    // only, and each round compares the servers under much the same conditions.
    for round in 1..=settings.repeats {
        for workload in &settings.workloads {
            for server in settings.servers.iter().filter(|s| workload.runs_on(s)) {
                eprint!(
                    "[{}/{total}] {} {}{} ... ",
                    rows.len() + 1,
                    server.name,
                    workload.name,
                    settings.round_suffix(round)
                );
                let row = run_row(server, workload, round, settings);
                eprintln!("{}", row.summary());
                rows.push(row);
            }
        }
    }

    let summaries = summaries(&rows);
    if settings.workloads.iter().any(|w| w.attack.is_none()) {
        println!("{}", results_table(&summaries).markdown());
    }
    let tls = tls_lines(&summaries);
    if !tls.is_empty() {
        println!("Over TLS:");
        for line in tls {
            println!("- {line}");
        }
        println!();
    }
    write_file(
        &settings.out_dir.join("results.csv"),
        &results_csv(&rows).csv(),
    )?;
    chart::draw_lockstep(&settings.out_dir, &summaries, &settings.servers)?;
    if settings.workloads.iter().any(|w| w.attack.is_some()) {
        let table = attack_table(&summaries);
        println!("Under attack: 100 honest lockstep clients beside hostile ones\n");
        println!("{}", table.markdown());
        println!("Targets for the reactor under attack:");
        for line in reactor_targets(&summaries) {
            println!("- {line}");
        }
        println!();
        write_file(&settings.out_dir.join("attack.csv"), &table.csv())?;
        chart::draw_attack(&settings.out_dir, &summaries, &settings.servers)?;
    }

    if settings.idle > 0 {
        let idle = idle_rows(settings);
        let table = idle_table(&idle);
        println!("{}", table.markdown());
        write_file(&settings.out_dir.join("idle.csv"), &table.csv())?;
    }
    println!(
        "Written to {}; the bench took {:.0} s.",
        settings.out_dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn write_file(path: &Path, contents: &str) -> Result<(), String> {
    fs::write(path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
