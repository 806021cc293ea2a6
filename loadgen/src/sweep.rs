//! The results of `facerec bench sweep` (one harness run per engine batch size x workers x
//! concurrency) and their renderings: a markdown table and an SVG plot of throughput
//! against p95 latency, one line per (batch, workers) with its points labelled by
//! concurrency. The processes themselves are started by the binary (`src/sweep.rs`).

use std::fmt::Write as _;

use serde::Serialize;

use crate::config::Route;
use crate::report::Report;

/// One measured point: the `facerec up` it ran against and the harness's report (whose
/// `concurrency` is the third coordinate).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    /// Largest batch per forward pass (`facerec up --batch`, `FACEREC_BATCH`).
    pub batch: usize,
    /// In-process workers (`--workers` = `--max-workers`: the autoscaler keeps the count).
    pub workers: u32,
    #[serde(flatten)]
    pub report: Report,
}

/// A whole sweep, as written to `sweep.json`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Sweep {
    pub route: Route,
    /// Distinct images loaded (cycled when `requests` is larger).
    pub images: usize,
    /// Requests (images) per point.
    pub requests: usize,
    pub points: Vec<Point>,
}

impl Sweep {
    /// A markdown table, one row per point.
    pub fn markdown(&self) -> String {
        let (head, rule) = Report::MARKDOWN_HEADER
            .split_once('\n')
            .unwrap_or((Report::MARKDOWN_HEADER, ""));
        let mut out = format!("| batch | workers {head}\n|---:|---:{rule}\n");
        for p in &self.points {
            let _ = writeln!(
                out,
                "| {} | {} {}",
                p.batch,
                p.workers,
                p.report.markdown_row()
            );
        }
        out
    }

    /// The points grouped by (batch, workers) in order of first appearance, each series
    /// sorted by concurrency.
    fn series(&self) -> Vec<((usize, u32), Vec<&Point>)> {
        let mut out: Vec<((usize, u32), Vec<&Point>)> = Vec::new();
        for p in &self.points {
            let key = (p.batch, p.workers);
            match out.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(p),
                None => out.push((key, vec![p])),
            }
        }
        for (_, v) in &mut out {
            v.sort_by_key(|p| p.report.concurrency);
        }
        out
    }

    /// An SVG scatter/line plot: x = answered images per second (2xx), y = p95 latency in
    /// ms; one coloured line per (batch, workers), each point labelled `c=<concurrency>`.
    pub fn svg(&self) -> String {
        const W: f64 = 900.0;
        const H: f64 = 560.0;
        let (left, right, top, bottom) = (80.0, W - 250.0, 60.0, H - 70.0);
        let x_axis = Axis::new(self.points.iter().map(|p| p.report.ok_throughput));
        let y_axis = Axis::new(self.points.iter().map(|p| p.report.latency_ms.p95));
        let px = |v: f64| left + v / x_axis.max * (right - left);
        let py = |v: f64| bottom - v / y_axis.max * (bottom - top);
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>\n"
        );
        let title = format!(
            "facerec bench sweep: {:?} route, {} requests per point",
            self.route, self.requests
        );
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"30\" text-anchor=\"middle\" font-size=\"16\">{}</text>",
            (left + right) / 2.0,
            escape(&title)
        );
        // Grid and ticks.
        for v in x_axis.ticks() {
            let x = px(v);
            let _ = writeln!(
                s,
                "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{bottom}\" stroke=\"#e6e6e6\"/>\n<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                bottom + 18.0,
                x_axis.label(v)
            );
        }
        for v in y_axis.ticks() {
            let y = py(v);
            let _ = writeln!(
                s,
                "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{right}\" y2=\"{y:.1}\" stroke=\"#e6e6e6\"/>\n<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                left - 8.0,
                y + 4.0,
                y_axis.label(v)
            );
        }
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" y1=\"{bottom}\" x2=\"{right}\" y2=\"{bottom}\" stroke=\"black\"/>\n<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{bottom}\" stroke=\"black\"/>"
        );
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">throughput (answered images/s)</text>",
            (left + right) / 2.0,
            H - 25.0
        );
        let _ = writeln!(
            s,
            "<text transform=\"translate(22 {:.1}) rotate(-90)\" text-anchor=\"middle\">p95 latency (ms)</text>",
            (top + bottom) / 2.0
        );
        // Series and legend.
        for (i, ((batch, workers), points)) in self.series().into_iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            let coords: Vec<String> = points
                .iter()
                .map(|p| {
                    format!(
                        "{:.1},{:.1}",
                        px(p.report.ok_throughput),
                        py(p.report.latency_ms.p95)
                    )
                })
                .collect();
            let _ = writeln!(
                s,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
                coords.join(" ")
            );
            for p in &points {
                let (x, y) = (px(p.report.ok_throughput), py(p.report.latency_ms.p95));
                let _ = writeln!(
                    s,
                    "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"{colour}\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{colour}\" font-size=\"11\">c={}</text>",
                    x + 6.0,
                    y - 6.0,
                    p.report.concurrency
                );
            }
            let ly = top + 10.0 + 22.0 * i as f64;
            let lx = right + 25.0;
            let _ = writeln!(
                s,
                "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{colour}\" stroke-width=\"2\"/>\n<circle cx=\"{}\" cy=\"{ly}\" r=\"4\" fill=\"{colour}\"/>\n<text x=\"{}\" y=\"{}\">batch {batch}, {workers} worker{}</text>",
                lx + 24.0,
                lx + 12.0,
                lx + 32.0,
                ly + 4.0,
                if workers == 1 { "" } else { "s" }
            );
        }
        let n = self.series().len() as f64;
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" fill=\"#555\" font-size=\"11\">c = concurrent clients</text>",
            right + 25.0,
            top + 14.0 + 22.0 * n
        );
        s.push_str("</svg>\n");
        s
    }
}

/// Ten distinguishable colours (matplotlib's tab10).
const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// A linear axis from 0 to a round maximum, with ticks at a 1/2/5 x 10^k step.
struct Axis {
    max: f64,
    step: f64,
}

impl Axis {
    fn new(values: impl Iterator<Item = f64>) -> Self {
        let top = values.filter(|v| v.is_finite()).fold(0.0_f64, f64::max);
        let top = if top > 0.0 { top * 1.05 } else { 1.0 };
        let raw = top / 5.0;
        let mag = 10f64.powf(raw.log10().floor());
        let step = mag
            * match raw / mag {
                f if f <= 1.0 => 1.0,
                f if f <= 2.0 => 2.0,
                f if f <= 5.0 => 5.0,
                _ => 10.0,
            };
        Axis {
            max: (top / step).ceil() * step,
            step,
        }
    }

    fn ticks(&self) -> Vec<f64> {
        let n = (self.max / self.step).round() as usize;
        (0..=n).map(|i| i as f64 * self.step).collect()
    }

    fn label(&self, v: f64) -> String {
        let decimals = if self.step >= 1.0 {
            0
        } else {
            (-self.step.log10()).ceil() as usize
        };
        format!("{v:.decimals$}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Latency;

    fn point(batch: usize, workers: u32, concurrency: usize, tput: f64, p95: f64) -> Point {
        Point {
            batch,
            workers,
            report: Report {
                route: Route::Original,
                concurrency,
                batch_files: None,
                requests: 10,
                ok: 10,
                statuses: [("200".to_string(), 10)].into(),
                correct: 10,
                wrong: 0,
                wall_seconds: 1.0,
                throughput: tput,
                ok_throughput: tput,
                latency_ms: Latency {
                    p95,
                    ..Latency::default()
                },
                wrong_examples: Vec::new(),
            },
        }
    }

    fn sweep() -> Sweep {
        Sweep {
            route: Route::Original,
            images: 10,
            requests: 10,
            points: vec![
                point(1, 1, 8, 20.0, 300.0),
                point(1, 1, 2, 12.0, 150.0),
                point(4, 2, 2, 18.0, 120.0),
                point(4, 2, 8, 33.3, 260.0),
            ],
        }
    }

    #[test]
    fn axes_are_round() {
        let a = Axis::new([33.3, 12.0].into_iter());
        assert_eq!((a.step, a.max), (10.0, 40.0));
        assert_eq!(a.ticks(), vec![0.0, 10.0, 20.0, 30.0, 40.0]);
        let small = Axis::new([0.33].into_iter());
        assert_eq!(small.label(small.step), "0.1");
        assert_eq!(Axis::new(std::iter::empty()).max, 1.0);
    }

    #[test]
    fn plot_has_a_line_per_series_and_labelled_points() {
        let svg = sweep().svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(
            svg.matches("<circle").count(),
            4 + 2,
            "points and legend marks"
        );
        assert!(svg.contains(">c=8<") && svg.contains(">c=2<"));
        assert!(svg.contains("batch 1, 1 worker<") && svg.contains("batch 4, 2 workers<"));
        assert!(svg.contains("throughput (answered images/s)") && svg.contains("p95 latency (ms)"));
        // Series points in order of concurrency: c=2 (x 12) before c=8 (x 20).
        let line = svg.lines().find(|l| l.starts_with("<polyline")).unwrap();
        let xs: Vec<f64> = line
            .split("points=\"")
            .nth(1)
            .unwrap()
            .trim_end_matches("\"/>")
            .split(' ')
            .map(|p| p.split(',').next().unwrap().parse().unwrap())
            .collect();
        assert!(xs[0] < xs[1], "{line}");
    }

    #[test]
    fn table_and_json_have_one_row_per_point() {
        let s = sweep();
        let md = s.markdown();
        assert!(md.starts_with("| batch | workers | route |"), "{md}");
        assert_eq!(md.lines().count(), 2 + 4);
        assert!(
            md.lines()
                .nth(2)
                .unwrap()
                .starts_with("| 1 | 1 | Original | 8 |"),
            "{md}"
        );
        let cols = |l: &str| l.matches('|').count();
        assert!(
            md.lines()
                .all(|l| cols(l) == cols(md.lines().next().unwrap())),
            "{md}"
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["points"][0]["batch"], 1);
        assert_eq!(json["points"][0]["concurrency"], 8);
        assert_eq!(json["points"][3]["ok_throughput"], 33.3);
    }
}
