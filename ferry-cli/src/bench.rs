//! `ferry bench`: closed-loop and open-loop load with HdrHistogram latency percentiles.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use ferry::call::Body;
use ferry::client::Protocol;
use ferry::{Channel, Code, Metadata, Request, Response, Status};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::{CliResult, Failure};
use crate::report::{self, Report};
use crate::target::{Target, parse_duration};
use crate::{ConnArgs, ProtoArgs, codec, method_path};

/// Calls in flight at most in open-loop mode; beyond it sends wait (and count as late).
const MAX_IN_FLIGHT: usize = 10_000;

/// Samples a worker buffers before adding them to the shared timeline.
const FLUSH_EVERY: usize = 1024;

/// Arguments of `ferry bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// ferry://, grpc:// or http:// followed by HOST:PORT
    target: String,
    /// package.Service/Method or package.Service.Method
    method: String,
    /// The request as JSON (the same for every call); read from stdin when `-`
    json: Option<String>,
    /// Closed loop: callers in flight at once
    #[arg(short, long, default_value_t = 16)]
    concurrency: usize,
    /// Channels (connections) the callers share [default: 1; http://: one per caller, as an
    /// HTTP/1.1 connection carries one call at a time]
    #[arg(long)]
    connections: Option<usize>,
    /// Open loop: calls per second on a fixed schedule (instead of --concurrency)
    #[arg(short, long)]
    rate: Option<f64>,
    /// How long to measure [default: 10s unless --requests]
    #[arg(short, long, value_parser = parse_duration, conflicts_with = "requests")]
    duration: Option<Duration>,
    /// How many calls to measure
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// Load to apply before measuring, not counted
    #[arg(long, value_parser = parse_duration, default_value = "0s", value_name = "DURATION")]
    warmup: Duration,
    /// Write the report as JSON
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Write a self-contained HTML report with charts
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Do not ask the server for its processing time (`ferry-timing: 1`)
    #[arg(long)]
    no_server_timing: bool,
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    protos: ProtoArgs,
}

/// When a phase ends.
#[derive(Clone, Copy)]
enum Stop {
    After(Duration),
    Count(u64),
}

/// Everything a call needs, shared by all callers.
struct Load {
    /// One channel per `--connections`; caller `i` calls over channel `i % len`.
    channels: Vec<Channel>,
    path: &'static str,
    metadata: Metadata,
    timeout: Option<Duration>,
    body: Bytes,
}

/// One call's outcome: server processing time if reported, or the error code.
type Outcome = Result<Option<Duration>, Code>;

impl Load {
    /// One call over channel `slot` (modulo the number of channels).
    async fn call(&self, slot: u64) -> Outcome {
        let channel = &self.channels[(slot % self.channels.len() as u64) as usize];
        let mut request = Request::new(Body::Message(self.body.clone()));
        request.set_method(self.path);
        *request.metadata_mut() = self.metadata.clone();
        if let Some(timeout) = self.timeout {
            request.set_timeout(timeout);
        }
        let result = async {
            let response = channel.call(request).await?;
            let timing = server_timing(&response);
            response.into_inner().into_message().await?;
            Ok::<_, Status>(timing)
        };
        result.await.map_err(|status| status.code())
    }
}

/// The server's processing time, from `server-timing` in the reply's metadata or trailers.
fn server_timing<T>(response: &Response<T>) -> Option<Duration> {
    response
        .metadata()
        .get(ferry::server::SERVER_TIMING_KEY)
        .or_else(|| response.trailers().get(ferry::server::SERVER_TIMING_KEY))
        .and_then(parse_server_timing)
}

/// The `app` entry of a Server-Timing header (`app;dur=0.042`, milliseconds).
pub fn parse_server_timing(value: &str) -> Option<Duration> {
    value.split(',').find_map(|entry| {
        let mut parts = entry.trim().split(';');
        if parts.next()?.trim() != "app" {
            return None;
        }
        let ms: f64 = parts
            .find_map(|p| p.trim().strip_prefix("dur="))?
            .parse()
            .ok()?;
        Duration::try_from_secs_f64(ms / 1000.0).ok()
    })
}

/// Live counters for the progress bar.
#[derive(Default)]
struct Live {
    ok: AtomicU64,
    errors: AtomicU64,
}

/// Latency by send time, in fixed slots (microseconds).
pub struct Timeline {
    /// Slot width.
    pub width: Duration,
    /// One entry per slot from the start of the measurement.
    pub slots: Vec<Slot>,
}

/// Calls sent during one slot of the timeline.
pub struct Slot {
    /// Successful calls.
    pub ok: u64,
    /// Failed calls.
    pub errors: u64,
    /// Latency of the successful calls, in microseconds.
    pub latency_us: Histogram<u64>,
}

impl Timeline {
    fn slot(&mut self, index: usize) -> &mut Slot {
        while self.slots.len() <= index {
            self.slots.push(Slot {
                ok: 0,
                errors: 0,
                latency_us: new_histogram(2),
            });
        }
        &mut self.slots[index]
    }
}

/// Records `value`, growing the histogram if needed (`saturating_record` would clamp to the
/// current, small, range of an auto-resizing histogram instead).
fn put(h: &mut Histogram<u64>, value: u64) {
    if h.record(value).is_err() {
        h.saturating_record(value);
    }
}

fn new_histogram(sigfig: u8) -> Histogram<u64> {
    // Auto-resizing, so it only grows as far as the largest value recorded.
    Histogram::new(sigfig).unwrap_or_else(|_| unreachable!("sigfig 1..=5 is valid"))
}

/// What one caller (or the whole run, after merging) measured; times in nanoseconds.
pub struct Recorder {
    /// Latency L of successful calls.
    pub latency: Histogram<u64>,
    /// Server processing time P, when the server reported it.
    pub processing: Histogram<u64>,
    /// Transmission time T = L − P.
    pub transmission: Histogram<u64>,
    /// Successful calls.
    pub ok: u64,
    /// Failed calls by status code.
    pub errors: BTreeMap<Code, u64>,
    /// Largest delay between a call's intended and actual send time (open loop).
    pub max_send_lag: Duration,
    pending: Vec<(u32, Option<u32>)>,
    width: Duration,
    timeline: Arc<Mutex<Timeline>>,
}

impl Recorder {
    fn new(timeline: Arc<Mutex<Timeline>>) -> Recorder {
        let width = timeline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .width;
        Recorder {
            width,
            latency: new_histogram(3),
            processing: new_histogram(3),
            transmission: new_histogram(3),
            ok: 0,
            errors: BTreeMap::new(),
            max_send_lag: Duration::ZERO,
            pending: Vec::new(),
            timeline,
        }
    }

    /// Records a call sent `offset` after the start whose result came `latency` later.
    fn record(&mut self, offset: Duration, latency: Duration, outcome: Outcome) {
        let slot = (offset.as_nanos() / self.width.as_nanos().max(1)).min(u32::MAX as u128) as u32;
        match outcome {
            Ok(processing) => {
                self.ok += 1;
                let l = latency.as_nanos().min(u64::MAX as u128) as u64;
                put(&mut self.latency, l.max(1));
                if let Some(p) = processing {
                    let p = p.as_nanos().min(u64::MAX as u128) as u64;
                    put(&mut self.processing, p.max(1));
                    put(&mut self.transmission, l.saturating_sub(p).max(1));
                }
                let us = latency.as_micros().min(u32::MAX as u128) as u32;
                self.pending.push((slot, Some(us.max(1))));
            }
            Err(code) => {
                *self.errors.entry(code).or_default() += 1;
                self.pending.push((slot, None));
            }
        }
        if self.pending.len() >= FLUSH_EVERY {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let mut timeline = self.timeline.lock().unwrap_or_else(PoisonError::into_inner);
        for (slot, latency) in self.pending.drain(..) {
            let slot = timeline.slot(slot as usize);
            match latency {
                Some(us) => {
                    slot.ok += 1;
                    put(&mut slot.latency_us, u64::from(us));
                }
                None => slot.errors += 1,
            }
        }
    }

    /// Adds `other`'s counts to this one.
    fn merge(&mut self, mut other: Recorder) {
        other.flush();
        let _ = self.latency.add(&other.latency);
        let _ = self.processing.add(&other.processing);
        let _ = self.transmission.add(&other.transmission);
        self.ok += other.ok;
        for (code, n) in other.errors {
            *self.errors.entry(code).or_default() += n;
        }
        self.max_send_lag = self.max_send_lag.max(other.max_send_lag);
    }
}

/// What a phase measured.
pub struct Measured {
    /// The merged recorder.
    pub recorder: Recorder,
    /// From the start until the last reply.
    pub elapsed: Duration,
    /// From the start until the last call was sent (open loop: the schedule's length).
    pub sending: Duration,
    /// Calls sent.
    pub sent: u64,
    /// The timeline.
    pub timeline: Arc<Mutex<Timeline>>,
}

/// Runs `ferry bench`.
pub async fn run(args: BenchArgs) -> CliResult {
    let target = Target::parse(&args.target)?;
    if args.concurrency == 0 || args.connections == Some(0) {
        return Err(Failure::usage(
            "--concurrency and --connections must be at least 1",
        ));
    }
    if let Some(rate) = args.rate
        && !(rate > 0.0 && rate.is_finite())
    {
        return Err(Failure::usage(
            "--rate must be a positive number of calls per second",
        ));
    }
    if args.requests == Some(0) {
        return Err(Failure::usage("--requests must be at least 1"));
    }
    let mut metadata = crate::metadata(&args.conn.headers)?;
    if !args.no_server_timing {
        metadata.insert(ferry::server::TIMING_REQUEST_KEY, "1");
    }
    let source = crate::source(&target, &args.conn, &args.protos).await?;
    let method = crate::descriptors::resolve_method(&source, &args.method).await?;
    if method.is_client_streaming() || method.is_server_streaming() {
        return Err(Failure::usage(format!(
            "{} is a streaming method; `ferry bench` drives unary calls only",
            method.full_name()
        )));
    }
    let text = crate::call::request_json(args.json.clone())?;
    let request = codec::parse_json(&method.input(), &text)?;
    let connections = args.connections.unwrap_or(match target.protocol {
        Protocol::Connect => args.concurrency,
        _ => 1,
    });
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(target.channel(args.conn.connect_timeout).await?);
    }
    let load = Arc::new(Load {
        channels,
        // One path for the whole run, so no call allocates one.
        path: Box::leak(method_path(&method).into_boxed_str()),
        metadata,
        timeout: Some(args.conn.timeout.unwrap_or(Duration::from_secs(30))),
        body: codec::encode(&request),
    });
    let stop = match (args.duration, args.requests) {
        (_, Some(n)) => Stop::Count(n),
        (Some(d), None) => Stop::After(d),
        (None, None) => Stop::After(Duration::from_secs(10)),
    };
    let show = std::io::stdout().is_terminal();
    if !args.warmup.is_zero() {
        phase(&load, &args, Stop::After(args.warmup), show, "warmup").await;
    }
    let measured = phase(&load, &args, stop, show, "measuring").await;
    let report = Report::build(
        &target,
        &method,
        &args_summary(&args, connections),
        &measured,
    );
    print!("{}", report.summary());
    if let Some(path) = &args.output {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| Failure::usage(format!("cannot render the report: {e}")))?;
        std::fs::write(path, json + "\n")
            .map_err(|e| Failure::usage(format!("cannot write {}: {e}", path.display())))?;
    }
    if let Some(path) = &args.html {
        std::fs::write(path, report::html(&report))
            .map_err(|e| Failure::usage(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}

/// The load settings as the report shows them.
pub struct LoadSettings {
    /// `closed` or `open`.
    pub mode: &'static str,
    /// Closed-loop callers.
    pub concurrency: usize,
    /// Connections.
    pub connections: usize,
    /// Open-loop rate.
    pub rate: Option<f64>,
    /// Warmup.
    pub warmup: Duration,
}

fn args_summary(args: &BenchArgs, connections: usize) -> LoadSettings {
    LoadSettings {
        mode: if args.rate.is_some() {
            "open"
        } else {
            "closed"
        },
        concurrency: args.concurrency,
        connections,
        rate: args.rate,
        warmup: args.warmup,
    }
}

fn timeline_width(stop: Stop) -> Duration {
    match stop {
        // At most ~200 slots, at least 100 ms each.
        Stop::After(d) => (d / 200).max(Duration::from_millis(100)),
        Stop::Count(_) => Duration::from_millis(50),
    }
}

async fn phase(
    load: &Arc<Load>,
    args: &BenchArgs,
    stop: Stop,
    show: bool,
    label: &str,
) -> Measured {
    let timeline = Arc::new(Mutex::new(Timeline {
        width: timeline_width(stop),
        slots: Vec::new(),
    }));
    let live = Arc::new(Live::default());
    let bar = progress_bar(stop, show, label);
    let start = Instant::now();
    let ticker = tokio::spawn(tick(bar.clone(), live.clone(), stop, start));
    let measured = match args.rate {
        None => closed_loop(load, args.concurrency, stop, start, &live, timeline.clone()).await,
        Some(rate) => open_loop(load, rate, stop, start, &live, timeline.clone()).await,
    };
    ticker.abort();
    bar.finish_and_clear();
    measured
}

fn progress_bar(stop: Stop, show: bool, label: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let (len, template) = match stop {
        Stop::After(d) => (
            d.as_millis() as u64,
            "{prefix} {elapsed:>4} [{bar:30}] {msg}",
        ),
        Stop::Count(n) => (n, "{prefix} {elapsed:>4} [{bar:30}] {pos}/{len} {msg}"),
    };
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_owned());
    bar
}

async fn tick(bar: ProgressBar, live: Arc<Live>, stop: Stop, start: Instant) {
    let mut interval = tokio::time::interval(Duration::from_millis(250));
    let mut last = (Instant::now(), 0u64);
    loop {
        interval.tick().await;
        let ok = live.ok.load(Ordering::Relaxed);
        let errors = live.errors.load(Ordering::Relaxed);
        let now = Instant::now();
        let done = ok + errors;
        let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-9);
        last = (now, done);
        match stop {
            Stop::After(d) => bar.set_position(start.elapsed().min(d).as_millis() as u64),
            Stop::Count(_) => bar.set_position(done),
        }
        bar.set_message(format!("{rate:>9.0} calls/s  {ok} ok  {errors} errors"));
    }
}

async fn closed_loop(
    load: &Arc<Load>,
    concurrency: usize,
    stop: Stop,
    start: Instant,
    live: &Arc<Live>,
    timeline: Arc<Mutex<Timeline>>,
) -> Measured {
    let claimed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::with_capacity(concurrency);
    for worker in 0..concurrency as u64 {
        let (load, live, claimed) = (load.clone(), live.clone(), claimed.clone());
        let mut recorder = Recorder::new(timeline.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let index = claimed.fetch_add(1, Ordering::Relaxed);
                let sent = Instant::now();
                let go_on = match stop {
                    Stop::Count(n) => index < n,
                    Stop::After(d) => sent.duration_since(start) < d,
                };
                if !go_on {
                    break;
                }
                // Each caller keeps to one connection, as a real client's would.
                let outcome = load.call(worker).await;
                let latency = sent.elapsed();
                count(&live, &outcome);
                recorder.record(sent.duration_since(start), latency, outcome);
            }
            recorder.flush();
            recorder
        }));
    }
    let mut total = Recorder::new(timeline.clone());
    for worker in workers {
        if let Ok(recorder) = worker.await {
            total.merge(recorder);
        }
    }
    let elapsed = start.elapsed();
    let sent = total.ok + total.errors.values().sum::<u64>();
    Measured {
        recorder: total,
        elapsed,
        sending: elapsed,
        sent,
        timeline,
    }
}

fn count(live: &Live, outcome: &Outcome) {
    match outcome {
        Ok(_) => live.ok.fetch_add(1, Ordering::Relaxed),
        Err(_) => live.errors.fetch_add(1, Ordering::Relaxed),
    };
}

async fn open_loop(
    load: &Arc<Load>,
    rate: f64,
    stop: Stop,
    start: Instant,
    live: &Arc<Live>,
    timeline: Arc<Mutex<Timeline>>,
) -> Measured {
    let shared = Arc::new(Mutex::new(Recorder::new(timeline.clone())));
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let runtime = tokio::runtime::Handle::current();
    // The schedule runs on a blocking thread: `std::thread::sleep` wakes within tens of
    // microseconds, where tokio's millisecond timer would make every call look up to 1 ms late.
    let dispatcher = {
        let (load, live, shared, permits) =
            (load.clone(), live.clone(), shared.clone(), permits.clone());
        tokio::task::spawn_blocking(move || {
            let mut sent = 0u64;
            let mut max_lag = Duration::ZERO;
            loop {
                // Each call's intended send time is fixed by the schedule, not by earlier replies.
                let offset = Duration::from_secs_f64(sent as f64 / rate);
                let go_on = match stop {
                    Stop::Count(n) => sent < n,
                    Stop::After(d) => offset < d,
                };
                if !go_on {
                    break;
                }
                let intended = start + offset;
                let wait = intended.saturating_duration_since(Instant::now());
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                }
                let permit = match permits.clone().try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(_) => match runtime.block_on(permits.clone().acquire_owned()) {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                };
                max_lag = max_lag.max(intended.elapsed());
                let (load, live, shared) = (load.clone(), live.clone(), shared.clone());
                let index = sent;
                runtime.spawn(async move {
                    let outcome = load.call(index).await;
                    // Latency from the intended send time: a late send counts against the server.
                    let latency = intended.elapsed();
                    count(&live, &outcome);
                    shared
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .record(offset, latency, outcome);
                    drop(permit);
                });
                sent += 1;
            }
            (sent, max_lag)
        })
    };
    let (sent, max_lag) = dispatcher.await.unwrap_or_default();
    let sending = match stop {
        // The schedule's length: sending ends when the duration is over.
        Stop::After(d) => {
            tokio::time::sleep_until((start + d).into()).await;
            d
        }
        Stop::Count(_) => start.elapsed() + Duration::from_secs_f64(1.0 / rate),
    };
    // Every call holds a permit until it is recorded: all permits back means all calls done.
    let _all = permits.acquire_many(MAX_IN_FLIGHT as u32).await;
    let elapsed = start.elapsed();
    let mut recorder = Recorder::new(timeline.clone());
    let inner = std::mem::replace(
        &mut *shared.lock().unwrap_or_else(PoisonError::into_inner),
        Recorder::new(timeline.clone()),
    );
    recorder.merge(inner);
    recorder.max_send_lag = max_lag;
    Measured {
        recorder,
        elapsed,
        sending,
        sent,
        timeline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_timing_parses() {
        assert_eq!(
            parse_server_timing("app;dur=1.5"),
            Some(Duration::from_micros(1500))
        );
        assert_eq!(
            parse_server_timing("db;dur=3, app;desc=\"x\";dur=0.25"),
            Some(Duration::from_micros(250))
        );
        assert_eq!(parse_server_timing("db;dur=3"), None);
        assert_eq!(parse_server_timing("app;dur=x"), None);
    }
}
