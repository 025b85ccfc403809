//! The `run` role: starts each system's server and client as pinned child processes, collects
//! their figures, prints the table and writes it as Markdown and JSON.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::load::Measured;
use crate::{SCENARIOS, SYSTEMS, Scenario};

#[derive(clap::Parser, Clone, Debug)]
pub struct RunArgs {
    /// Short windows (0.5 s warm-up, 2 s measured) and one round, for a quick look.
    #[arg(long)]
    quick: bool,
    /// Warm-up per run, in seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Measured window per run, in seconds.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Rounds over the whole matrix; each figure reported is the median over the rounds
    /// (rounds interleave the systems, so a burst of noise from elsewhere hits one round only).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Only these systems (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    systems: Vec<String>,
    /// Only these scenarios (comma-separated names, e.g. 16B-c64).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Do not pin server and client to CPUs 0 and 1 with taskset.
    #[arg(long)]
    no_pin: bool,
    /// Where to write results.md and results.json.
    #[arg(long, default_value = "target/bench-peers")]
    out: String,
}

/// One system in one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: &'static str,
    pub system: &'static str,
    pub calls_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    /// Server CPU time (user + system) per call over the window.
    pub server_cpu_us_per_call: f64,
    /// Allocation events in the server process per call over the window.
    pub server_allocs_per_call: f64,
    /// Bytes allocated by the server per call over the window.
    pub server_alloc_bytes_per_call: f64,
    /// Client CPU time per call over the window (the load generator is part of each system).
    pub client_cpu_us_per_call: f64,
    /// Server VmHWM at the end of the run.
    pub server_peak_rss_mib: f64,
    pub calls: u64,
    pub secs: f64,
}

/// Counters a server reports on `snap`.
#[derive(Debug, Clone, Copy)]
struct Snap {
    allocs: u64,
    bytes: u64,
    cpu_ns: u64,
    hwm_kib: u64,
}

pub fn run(mut args: RunArgs) -> Result<(), String> {
    if args.quick {
        args.warmup = 0.5;
        args.seconds = 2.0;
        args.rounds = 1;
    }
    args.rounds = args.rounds.max(1);
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let pin = !args.no_pin && Command::new("taskset").arg("-V").output().is_ok();
    if !pin {
        eprintln!("note: not pinning (taskset missing or --no-pin)");
    }
    let systems: Vec<_> = SYSTEMS
        .iter()
        .filter(|s| args.systems.is_empty() || args.systems.iter().any(|n| n == s.name))
        .collect();
    let scenarios: Vec<_> = SCENARIOS
        .iter()
        .filter(|s| args.scenarios.is_empty() || args.scenarios.iter().any(|n| n == s.name))
        .collect();
    let started = Instant::now();
    let mut runs: Vec<Row> = Vec::new();
    for round in 1..=args.rounds {
        for scenario in &scenarios {
            for system in &systems {
                if scenario.stream && system.stream.is_none() {
                    continue;
                }
                eprint!(
                    "round {round}/{}  {:<9} {:<12} ",
                    args.rounds, scenario.name, system.name
                );
                match run_one(&exe, pin, system.name, scenario, &args) {
                    Ok(row) => {
                        eprintln!(
                            "{:>9.0} calls/s  p50 {:>8.1} µs  p99 {:>8.1} µs  {:.2} allocs/call",
                            row.calls_per_sec, row.p50_us, row.p99_us, row.server_allocs_per_call
                        );
                        runs.push(row);
                    }
                    Err(e) => eprintln!("FAILED: {e}"),
                }
            }
        }
    }
    let rows: Vec<Row> = scenarios
        .iter()
        .flat_map(|sc| systems.iter().map(move |sy| (sc.name, sy.name)))
        .filter_map(|(sc, sy)| {
            let of: Vec<&Row> = runs
                .iter()
                .filter(|r| r.scenario == sc && r.system == sy)
                .collect();
            median_row(&of)
        })
        .collect();
    let table = table(&rows);
    println!("{table}");
    let md = markdown(&rows, &args, started.elapsed(), pin);
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out))?;
    let md_path = format!("{}/results.md", args.out);
    std::fs::write(&md_path, md).map_err(|e| format!("{md_path}: {e}"))?;
    let json_path = format!("{}/results.json", args.out);
    let json = serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?;
    std::fs::write(&json_path, json).map_err(|e| format!("{json_path}: {e}"))?;
    eprintln!(
        "wrote {md_path} and {json_path} in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn spawn(exe: &std::path::Path, pin: bool, cpu: &str, args: &[String]) -> std::io::Result<Child> {
    let mut cmd = if pin {
        let mut c = Command::new("taskset");
        c.arg("-c").arg(cpu).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
}

/// Forwards a child's stdout lines to a channel so reads can time out.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn expect_line(
    rx: &mpsc::Receiver<String>,
    deadline: Instant,
    what: &str,
) -> Result<String, String> {
    let wait = deadline.saturating_duration_since(Instant::now());
    rx.recv_timeout(wait)
        .map_err(|_| format!("no {what} line in time"))
}

fn snap(
    stdin: &mut ChildStdin,
    rx: &mpsc::Receiver<String>,
    deadline: Instant,
) -> Result<Snap, String> {
    writeln!(stdin, "snap").map_err(|e| e.to_string())?;
    stdin.flush().map_err(|e| e.to_string())?;
    let line = expect_line(rx, deadline, "SNAP")?;
    let nums: Vec<u64> = line
        .strip_prefix("SNAP ")
        .ok_or_else(|| format!("expected SNAP, got {line:?}"))?
        .split_whitespace()
        .map(|n| n.parse().map_err(|_| format!("bad SNAP line {line:?}")))
        .collect::<Result<_, _>>()?;
    match nums[..] {
        [allocs, bytes, cpu_ns, hwm_kib] => Ok(Snap {
            allocs,
            bytes,
            cpu_ns,
            hwm_kib,
        }),
        _ => Err(format!("bad SNAP line {line:?}")),
    }
}

fn run_one(
    exe: &std::path::Path,
    pin: bool,
    system: &'static str,
    scenario: &Scenario,
    args: &RunArgs,
) -> Result<Row, String> {
    let mut server = spawn(exe, pin, "0", &["server".into(), system.into()])
        .map_err(|e| format!("cannot start the server: {e}"))?;
    let result = (|| {
        let deadline = Instant::now() + Duration::from_secs_f64(args.warmup + args.seconds + 60.0);
        let server_rx = lines(&mut server);
        let listen = expect_line(&server_rx, deadline, "LISTEN")?;
        let addr = listen
            .strip_prefix("LISTEN ")
            .ok_or_else(|| format!("expected LISTEN, got {listen:?}"))?
            .to_owned();
        let mut client = spawn(
            exe,
            pin,
            "1",
            &[
                "client".into(),
                system.into(),
                "--addr".into(),
                addr,
                "--size".into(),
                scenario.size.to_string(),
                "--concurrency".into(),
                scenario.concurrency.to_string(),
                "--warmup".into(),
                args.warmup.to_string(),
                "--seconds".into(),
                args.seconds.to_string(),
            ]
            .into_iter()
            .chain(scenario.stream.then(|| "--stream".to_owned()))
            .collect::<Vec<_>>(),
        )
        .map_err(|e| format!("cannot start the client: {e}"))?;
        let outcome = (|| {
            let client_rx = lines(&mut client);
            let stdin = server.stdin.as_mut().expect("piped stdin");
            let mut before = None;
            let mut after = None;
            loop {
                let line = expect_line(&client_rx, deadline, "client")?;
                match line.as_str() {
                    "WARM" => before = Some(snap(stdin, &server_rx, deadline)?),
                    "DONE" => after = Some(snap(stdin, &server_rx, deadline)?),
                    other => {
                        if let Some(json) = other.strip_prefix("RESULT ") {
                            let m: Measured =
                                serde_json::from_str(json).map_err(|e| e.to_string())?;
                            let (Some(b), Some(a)) = (before, after) else {
                                return Err("client finished without a window".into());
                            };
                            return Ok(row(system, scenario, &m, b, a));
                        }
                    }
                }
            }
        })();
        if outcome.is_err() {
            let _ = client.kill();
        }
        let _ = client.wait();
        outcome
    })();
    // Closing stdin stops the server; kill it if it does not go.
    drop(server.stdin.take());
    let stop_by = Instant::now() + Duration::from_secs(5);
    while Instant::now() < stop_by {
        if let Ok(Some(_)) = server.try_wait() {
            return result;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = server.kill();
    let _ = server.wait();
    result
}

/// The per-column median of several runs of one system in one scenario.
fn median_row(runs: &[&Row]) -> Option<Row> {
    let first = *runs.first()?;
    let median = |f: fn(&Row) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(|r| f(r)).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    Some(Row {
        scenario: first.scenario,
        system: first.system,
        calls_per_sec: median(|r| r.calls_per_sec),
        p50_us: median(|r| r.p50_us),
        p99_us: median(|r| r.p99_us),
        p999_us: median(|r| r.p999_us),
        server_cpu_us_per_call: median(|r| r.server_cpu_us_per_call),
        server_allocs_per_call: median(|r| r.server_allocs_per_call),
        server_alloc_bytes_per_call: median(|r| r.server_alloc_bytes_per_call),
        client_cpu_us_per_call: median(|r| r.client_cpu_us_per_call),
        server_peak_rss_mib: median(|r| r.server_peak_rss_mib),
        calls: runs.iter().map(|r| r.calls).sum(),
        secs: runs.iter().map(|r| r.secs).sum(),
    })
}

fn row(system: &'static str, scenario: &Scenario, m: &Measured, b: Snap, a: Snap) -> Row {
    let calls = m.calls.max(1) as f64;
    Row {
        scenario: scenario.name,
        system,
        calls_per_sec: m.calls as f64 / m.secs,
        p50_us: m.p50_us,
        p99_us: m.p99_us,
        p999_us: m.p999_us,
        server_cpu_us_per_call: (a.cpu_ns - b.cpu_ns) as f64 / 1_000.0 / calls,
        server_allocs_per_call: (a.allocs - b.allocs) as f64 / calls,
        server_alloc_bytes_per_call: (a.bytes - b.bytes) as f64 / calls,
        client_cpu_us_per_call: m.client_cpu_us_per_call,
        server_peak_rss_mib: a.hwm_kib as f64 / 1024.0,
        calls: m.calls,
        secs: m.secs,
    }
}

fn ratio(rows: &[Row], row: &Row, to: &str) -> String {
    rows.iter()
        .find(|r| r.scenario == row.scenario && r.system == to)
        .map_or("-".into(), |r| {
            format!("{:.2}", row.calls_per_sec / r.calls_per_sec)
        })
}

const COLUMNS: usize = 13;

const HEAD: [&str; COLUMNS] = [
    "scenario",
    "system",
    "calls/s",
    "×tonic",
    "×raw",
    "p50 µs",
    "p99 µs",
    "p99.9 µs",
    "srv CPU µs/call",
    "srv allocs/call",
    "srv B/call",
    "srv peak RSS MiB",
    "cli CPU µs/call",
];

fn cells(rows: &[Row], r: &Row) -> [String; COLUMNS] {
    [
        r.scenario.into(),
        r.system.into(),
        format!("{:.0}", r.calls_per_sec),
        ratio(rows, r, "tonic"),
        ratio(rows, r, "raw-tcp"),
        format!("{:.1}", r.p50_us),
        format!("{:.1}", r.p99_us),
        format!("{:.1}", r.p999_us),
        format!("{:.2}", r.server_cpu_us_per_call),
        format!("{:.2}", r.server_allocs_per_call),
        format!("{:.0}", r.server_alloc_bytes_per_call),
        format!("{:.1}", r.server_peak_rss_mib),
        format!("{:.2}", r.client_cpu_us_per_call),
    ]
}

/// A plain-text table for the terminal.
pub fn table(rows: &[Row]) -> String {
    let all: Vec<[String; COLUMNS]> = std::iter::once(HEAD.map(String::from))
        .chain(rows.iter().map(|r| cells(rows, r)))
        .collect();
    let widths: Vec<usize> = (0..COLUMNS)
        .map(|i| all.iter().map(|c| c[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for line in &all {
        for (i, cell) in line.iter().enumerate() {
            if i < 2 {
                let _ = write!(out, "{cell:<w$}  ", w = widths[i]);
            } else {
                let _ = write!(out, "{cell:>w$}  ", w = widths[i]);
            }
        }
        out.push('\n');
    }
    out
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The Markdown report: machine, settings, systems and the table.
pub fn markdown(rows: &[Row], args: &RunArgs, took: Duration, pin: bool) -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Machine: {nproc} CPUs, {}. Server pinned to CPU 0, client to CPU 1: {}. \
         Warm-up {} s, window {} s per run, median of {} round(s); whole run {:.0} s.\n",
        cpu_model(),
        if pin { "yes" } else { "no" },
        args.warmup,
        args.seconds,
        args.rounds,
        took.as_secs_f64()
    );
    md.push_str("| ");
    md.push_str(&HEAD.join(" | "));
    md.push_str(" |\n|");
    for i in 0..HEAD.len() {
        md.push_str(if i < 2 { " --- |" } else { " ---: |" });
    }
    md.push('\n');
    for r in rows {
        let _ = writeln!(md, "| {} |", cells(rows, r).join(" | "));
    }
    md.push_str("\nSystems:\n");
    for s in SYSTEMS {
        let _ = writeln!(md, "- `{}`: {}", s.name, s.about);
    }
    md
}
