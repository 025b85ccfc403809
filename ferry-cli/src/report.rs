//! The bench report: a terminal summary, JSON, and a self-contained HTML page with inline SVG.

use std::fmt::Write;

use hdrhistogram::Histogram;
use prost_reflect::MethodDescriptor;
use serde::Serialize;

use crate::bench::{LoadSettings, Measured};
use crate::target::Target;

/// Most points the latency-over-time chart shows; adjacent slots are merged beyond it.
const MAX_POINTS: usize = 200;
/// Bars in the latency histogram.
const HISTOGRAM_BINS: usize = 40;

/// Everything `ferry bench` measured (the `--output` JSON).
#[derive(Serialize)]
pub struct Report {
    /// The target URL.
    pub target: String,
    /// The protocol used: `native`, `grpc` or `connect`.
    pub protocol: &'static str,
    /// `package.Service/Method`.
    pub method: String,
    /// `closed` (fixed concurrency) or `open` (fixed rate).
    pub mode: &'static str,
    /// Closed-loop callers.
    pub concurrency: usize,
    /// Connections.
    pub connections: usize,
    /// Open-loop target rate, calls per second.
    pub rate: Option<f64>,
    /// Warmup before measuring, seconds.
    pub warmup_s: f64,
    /// From the first send to the last reply, seconds.
    pub duration_s: f64,
    /// Calls sent.
    pub total: u64,
    /// Successful calls.
    pub ok: u64,
    /// Failed calls.
    pub errors: u64,
    /// Failed calls by status code.
    pub errors_by_code: std::collections::BTreeMap<String, u64>,
    /// Successful calls per second.
    pub throughput: f64,
    /// Calls sent per second over the sending period.
    pub send_rate: f64,
    /// Largest delay of a send behind its schedule (open loop), milliseconds.
    pub max_send_lag_ms: f64,
    /// Latency L of successful calls.
    pub latency_ms: Option<Percentiles>,
    /// Server processing time P (from `server-timing`), when the server reported it.
    pub server_processing_ms: Option<Percentiles>,
    /// Transmission and client time T = L − P.
    pub transmission_ms: Option<Percentiles>,
    /// Calls whose reply carried server timing.
    pub server_timed: u64,
    /// Latency histogram of successful calls; the counts add up to `ok`.
    pub histogram: Vec<Bin>,
    /// Latency by send time.
    pub timeline: Vec<Point>,
}

/// Latency percentiles in milliseconds.
#[derive(Serialize, Clone, Copy)]
pub struct Percentiles {
    /// Smallest.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Option<Percentiles> {
        if h.is_empty() {
            return None;
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        Some(Percentiles {
            min: ms(h.min()),
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1e6,
        })
    }
}

/// One histogram bar: calls with latency in `[from_ms, to_ms)`.
#[derive(Serialize)]
pub struct Bin {
    /// Lower bound, milliseconds.
    pub from_ms: f64,
    /// Upper bound, milliseconds.
    pub to_ms: f64,
    /// Calls in this bar.
    pub count: u64,
}

/// The calls sent in one interval of the run.
#[derive(Serialize)]
pub struct Point {
    /// Middle of the interval, seconds from the start.
    pub t_s: f64,
    /// Successful calls.
    pub ok: u64,
    /// Failed calls.
    pub errors: u64,
    /// Median latency, milliseconds (absent when no call succeeded).
    pub p50_ms: Option<f64>,
    /// 99th-percentile latency, milliseconds.
    pub p99_ms: Option<f64>,
    /// Largest latency, milliseconds.
    pub max_ms: Option<f64>,
}

impl Report {
    /// Builds the report of a measured phase.
    pub fn build(
        target: &Target,
        method: &MethodDescriptor,
        load: &LoadSettings,
        measured: &Measured,
    ) -> Report {
        let r = &measured.recorder;
        let errors: u64 = r.errors.values().sum();
        let duration = measured.elapsed.as_secs_f64().max(1e-9);
        Report {
            target: target.url(),
            protocol: target.protocol_name(),
            method: format!("{}/{}", method.parent_service().full_name(), method.name()),
            mode: load.mode,
            concurrency: load.concurrency,
            connections: load.connections,
            rate: load.rate,
            warmup_s: load.warmup.as_secs_f64(),
            duration_s: duration,
            total: measured.sent,
            ok: r.ok,
            errors,
            errors_by_code: r
                .errors
                .iter()
                .map(|(code, n)| (code.as_str().to_owned(), *n))
                .collect(),
            throughput: r.ok as f64 / duration,
            send_rate: measured.sent as f64 / measured.sending.as_secs_f64().max(1e-9),
            max_send_lag_ms: r.max_send_lag.as_secs_f64() * 1000.0,
            latency_ms: Percentiles::of(&r.latency),
            server_processing_ms: Percentiles::of(&r.processing),
            transmission_ms: Percentiles::of(&r.transmission),
            server_timed: r.processing.len(),
            histogram: bins(&r.latency),
            timeline: points(measured),
        }
    }

    /// `2 connection(s)`; over Connect, whose channels pool HTTP/1.1 connections (one per call
    /// in flight), `2 channel(s)`.
    fn connections_text(&self) -> String {
        if self.protocol == "connect" {
            format!(
                "{} channel(s) of pooled HTTP/1.1 connections",
                self.connections
            )
        } else {
            format!("{} connection(s)", self.connections)
        }
    }

    /// The terminal summary.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let load = match self.rate {
            Some(rate) => format!("open loop at {rate} calls/s"),
            None => format!("closed loop, concurrency {}", self.concurrency),
        };
        let _ = writeln!(out, "Target      {} {}", self.target, self.method);
        let _ = writeln!(
            out,
            "Load        {load}, {}, {:.2} s{}",
            self.connections_text(),
            self.duration_s,
            if self.warmup_s > 0.0 {
                format!(" after {:.1} s warmup", self.warmup_s)
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            out,
            "Calls       {} sent, {} ok, {} errors",
            self.total, self.ok, self.errors
        );
        let _ = writeln!(
            out,
            "Throughput  {:.1} ok/s (sent {:.1}/s)",
            self.throughput, self.send_rate
        );
        let _ = writeln!(
            out,
            "Latency             min       p50       p90       p99     p99.9       max"
        );
        let rows = [
            ("  L total", self.latency_ms),
            ("  P server", self.server_processing_ms),
            ("  T = L - P", self.transmission_ms),
        ];
        for (name, p) in rows {
            if let Some(p) = p {
                let cells: String = [p.min, p.p50, p.p90, p.p99, p.p999, p.max]
                    .into_iter()
                    .map(|ms| format!("{:>10}", human_ms(ms)))
                    .collect();
                let _ = writeln!(out, "{name:<12}{cells}");
            }
        }
        if self.latency_ms.is_some() && self.server_processing_ms.is_none() {
            let _ = writeln!(
                out,
                "  (the server sent no server-timing, so L is not split)"
            );
        }
        if !self.errors_by_code.is_empty() {
            let list: Vec<String> = self
                .errors_by_code
                .iter()
                .map(|(code, n)| format!("{code}: {n}"))
                .collect();
            let _ = writeln!(out, "Errors      {}", list.join(", "));
        }
        out
    }
}

/// A latency for people: `412ns`, `38.2µs`, `1.27ms`, `2.50s`.
pub fn human_ms(ms: f64) -> String {
    if ms < 0.001 {
        format!("{:.0}ns", ms * 1e6)
    } else if ms < 1.0 {
        format!("{:.1}µs", ms * 1e3)
    } else if ms < 1000.0 {
        format!("{ms:.2}ms")
    } else {
        format!("{:.2}s", ms / 1e3)
    }
}

fn bins(h: &Histogram<u64>) -> Vec<Bin> {
    if h.is_empty() {
        return Vec::new();
    }
    let (lo, hi) = (h.min().max(1) as f64, h.max().max(1) as f64);
    let n = if hi / lo < 1.01 { 1 } else { HISTOGRAM_BINS };
    let ratio = (hi * 1.000_001 / lo).powf(1.0 / n as f64);
    let edges: Vec<f64> = (0..=n).map(|i| lo * ratio.powi(i as i32)).collect();
    let mut counts = vec![0u64; n];
    for v in h.iter_recorded() {
        let value = (v.value_iterated_to() as f64).max(lo);
        let i = edges[1..].iter().position(|e| value < *e).unwrap_or(n - 1);
        counts[i] += v.count_at_value();
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, count)| Bin {
            from_ms: edges[i] / 1e6,
            to_ms: edges[i + 1] / 1e6,
            count,
        })
        .collect()
}

fn points(measured: &Measured) -> Vec<Point> {
    let timeline = measured
        .timeline
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let group = timeline.slots.len().div_ceil(MAX_POINTS).max(1);
    let width = timeline.width.as_secs_f64();
    timeline
        .slots
        .chunks(group)
        .enumerate()
        .map(|(i, slots)| {
            let mut h = slots[0].latency_us.clone();
            for s in &slots[1..] {
                let _ = h.add(&s.latency_us);
            }
            let ms = |q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0);
            Point {
                t_s: (i * group) as f64 * width + slots.len() as f64 * width / 2.0,
                ok: slots.iter().map(|s| s.ok).sum(),
                errors: slots.iter().map(|s| s.errors).sum(),
                p50_ms: ms(0.5),
                p99_ms: ms(0.99),
                max_ms: (!h.is_empty()).then(|| h.max() as f64 / 1000.0),
            }
        })
        .collect()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round axis maximum at or above `value`.
fn nice_max(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if value <= step * magnitude {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

const W: f64 = 900.0;
const H: f64 = 320.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 50.0;

fn axes(out: &mut String, y_max: f64, y_label: &str, x_label: &str) {
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, H - BOTTOM, TOP);
    let _ = write!(
        out,
        r##"<line class="axis" x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}"/><line class="axis" x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}"/>"##
    );
    for i in 0..=4 {
        let v = y_max * i as f64 / 4.0;
        let y = y0 - (y0 - y1) * i as f64 / 4.0;
        let _ = write!(
            out,
            r##"<line class="grid" x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 - 6.0,
            y + 4.0,
            fmt_num(v)
        );
    }
    let _ = write!(
        out,
        r##"<text class="label" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text class="label" transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"##,
        (x0 + x1) / 2.0,
        H - 8.0,
        escape(x_label),
        (y0 + y1) / 2.0,
        escape(y_label)
    );
}

fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The latency histogram as SVG: one `rect.bar` per bin.
fn histogram_svg(report: &Report) -> String {
    let mut out = format!(
        r##"<svg id="histogram" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="latency histogram">"##
    );
    let y_max = nice_max(report.histogram.iter().map(|b| b.count).max().unwrap_or(0) as f64);
    axes(&mut out, y_max, "calls", "latency (ms, log scale)");
    let n = report.histogram.len().max(1) as f64;
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let bar_w = plot_w / n;
    for (i, bin) in report.histogram.iter().enumerate() {
        let h = plot_h * bin.count as f64 / y_max;
        let x = LEFT + bar_w * i as f64;
        let _ = write!(
            out,
            r##"<rect class="bar" x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" data-count="{}"><title>{:.3}–{:.3} ms: {} calls</title></rect>"##,
            H - BOTTOM - h,
            (bar_w - 1.0).max(0.5),
            bin.count,
            bin.from_ms,
            bin.to_ms,
            bin.count
        );
        if i % 5 == 0 {
            let _ = write!(
                out,
                r##"<text class="tick" x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                H - BOTTOM + 16.0,
                fmt_num(bin.from_ms)
            );
        }
    }
    out.push_str("</svg>");
    out
}

/// Latency over time as SVG: p50 and p99 lines with one `circle.p50` / `circle.p99` per point.
fn timeline_svg(report: &Report) -> String {
    let mut out = format!(
        r##"<svg id="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="latency over time">"##
    );
    let y_max = nice_max(
        report
            .timeline
            .iter()
            .filter_map(|p| p.p99_ms)
            .fold(0.0, f64::max),
    );
    // Points sit mid-interval, so the first one's time is half an interval.
    let t_max = match (report.timeline.first(), report.timeline.last()) {
        (Some(first), Some(last)) => (last.t_s + first.t_s).max(1e-3),
        _ => 1.0,
    };
    axes(&mut out, y_max, "latency (ms)", "time since start (s)");
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let x = |t: f64| LEFT + plot_w * (t / t_max).min(1.0);
    let y = |v: f64| H - BOTTOM - plot_h * (v / y_max).min(1.0);
    for i in 0..=4 {
        let t = t_max * i as f64 / 4.0;
        let _ = write!(
            out,
            r##"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            x(t),
            H - BOTTOM + 16.0,
            fmt_num(t)
        );
    }
    for (class, pick) in [
        ("p99", (|p: &Point| p.p99_ms) as fn(&Point) -> Option<f64>),
        ("p50", |p: &Point| p.p50_ms),
    ] {
        let coords: Vec<String> = report
            .timeline
            .iter()
            .filter_map(|p| pick(p).map(|v| format!("{:.1},{:.1}", x(p.t_s), y(v))))
            .collect();
        let _ = write!(
            out,
            r##"<polyline class="line {class}" points="{}"/>"##,
            coords.join(" ")
        );
        for p in &report.timeline {
            if let Some(v) = pick(p) {
                let _ = write!(
                    out,
                    r##"<circle class="{class}" cx="{:.1}" cy="{:.1}" r="2.5"><title>t={:.2} s {class}={v:.3} ms ({} ok, {} errors)</title></circle>"##,
                    x(p.t_s),
                    y(v),
                    p.t_s,
                    p.ok,
                    p.errors
                );
            }
        }
    }
    for p in report.timeline.iter().filter(|p| p.errors > 0) {
        let _ = write!(
            out,
            r##"<rect class="err" x="{:.1}" y="{:.1}" width="3" height="8"><title>t={:.2} s: {} errors</title></rect>"##,
            x(p.t_s) - 1.5,
            H - BOTTOM - 8.0,
            p.t_s,
            p.errors
        );
    }
    let _ = write!(
        out,
        r##"<rect class="p99" x="{:.1}" y="{TOP}" width="10" height="3"/><text class="tick" x="{:.1}" y="{:.1}">p99</text><rect class="p50" x="{:.1}" y="{TOP}" width="10" height="3"/><text class="tick" x="{:.1}" y="{:.1}">p50</text>"##,
        W - RIGHT - 110.0,
        W - RIGHT - 95.0,
        TOP + 5.0,
        W - RIGHT - 55.0,
        W - RIGHT - 40.0,
        TOP + 5.0
    );
    out.push_str("</svg>");
    out
}

/// A self-contained HTML page: summary table, latency histogram and latency over time.
pub fn html(report: &Report) -> String {
    let mut rows = String::new();
    for (name, p) in [
        ("L: latency", report.latency_ms),
        ("P: server processing", report.server_processing_ms),
        ("T = L − P: transmission", report.transmission_ms),
    ] {
        if let Some(p) = p {
            let cells: String = [p.min, p.p50, p.p90, p.p99, p.p999, p.max]
                .into_iter()
                .map(|ms| format!("<td>{}</td>", human_ms(ms)))
                .collect();
            let _ = write!(rows, "<tr><th>{name}</th>{cells}</tr>");
        }
    }
    let errors = if report.errors_by_code.is_empty() {
        "none".to_owned()
    } else {
        report
            .errors_by_code
            .iter()
            .map(|(c, n)| format!("{} {n}", escape(c)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let load = match report.rate {
        Some(rate) => format!("open loop at {rate} calls/s"),
        None => format!("closed loop, concurrency {}", report.concurrency),
    };
    format!(
        r##"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ferry bench: {method}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 20px; }} h2 {{ font-size: 16px; margin-top: 28px; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 3px 10px; text-align: right; }}
th {{ text-align: left; }} thead th {{ text-align: right; border-bottom: 1px solid #999; }}
dl {{ display: grid; grid-template-columns: max-content auto; gap: 2px 14px; }} dt {{ color: #666; }}
.axis {{ stroke: #333; }} .grid {{ stroke: #ddd; }} .tick {{ font-size: 11px; fill: #555; }}
.label {{ font-size: 12px; fill: #333; }} .bar {{ fill: #4a7bd0; }}
.line {{ fill: none; stroke-width: 1.5; }} polyline.p50 {{ stroke: #2a9d4a; }} polyline.p99 {{ stroke: #d07a1a; }}
circle.p50, rect.p50 {{ fill: #2a9d4a; }} circle.p99, rect.p99 {{ fill: #d07a1a; }} .err {{ fill: #c62828; }}
</style></head><body>
<h1>ferry bench: {method}</h1>
<dl>
<dt>Target</dt><dd>{target}</dd>
<dt>Load</dt><dd>{load}, {connections}, {duration:.2} s</dd>
<dt>Calls</dt><dd>{total} sent, {ok} ok, {errors_n} errors ({errors})</dd>
<dt>Throughput</dt><dd>{throughput:.1} ok/s (sent {send_rate:.1}/s)</dd>
</dl>
<h2>Latency</h2>
<table><thead><tr><th></th><th>min</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr></thead>
<tbody>{rows}</tbody></table>
<h2>Latency histogram</h2>
{histogram}
<h2>Latency over time (by send time)</h2>
{timeline}
</body></html>
"##,
        method = escape(&report.method),
        target = escape(&report.target),
        connections = report.connections_text(),
        duration = report.duration_s,
        total = report.total,
        ok = report.ok,
        errors_n = report.errors,
        throughput = report.throughput,
        send_rate = report.send_rate,
        histogram = histogram_svg(report),
        timeline = timeline_svg(report),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_count_every_call() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for v in [1_000u64, 2_000, 2_000, 50_000, 1_000_000] {
            h.record(v).unwrap();
        }
        let bins = bins(&h);
        assert_eq!(bins.len(), HISTOGRAM_BINS);
        assert_eq!(bins.iter().map(|b| b.count).sum::<u64>(), 5);
    }

    #[test]
    fn latencies_read_well() {
        assert_eq!(human_ms(0.000412), "412ns");
        assert_eq!(human_ms(0.0382), "38.2µs");
        assert_eq!(human_ms(1.271), "1.27ms");
        assert_eq!(human_ms(2500.0), "2.50s");
    }

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice_max(0.37), 0.5);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(0.0), 1.0);
    }
}
