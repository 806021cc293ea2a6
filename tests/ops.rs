//! The monitoring files under `ops/` against the real thing: promtool accepts the
//! Prometheus configuration, the alert rules and their unit tests; Prometheus parses every
//! dashboard query; and every metric the dashboard and the alerts use is one that a running
//! `facerec up` exports, under the names the crates' `metrics::names` modules declare.
//! Renaming a metric in the code without updating `ops/` fails here.

// Helpers of a test panic on failure like the tests themselves.
#![allow(clippy::unwrap_used)]

use facerec_testkit as kit;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use facerec_edge::metrics::names as edge;
use facerec_scaler::metrics::names as scaler;
use facerec_seams::metrics::names as engine;

const DASHBOARD: &str = "ops/grafana/facerec-dashboard.json";
const ALERTS: &str = "ops/prometheus/alerts.yml";

/// Families whose label values are only known when something fails (a queue or store
/// error, a failed observation), which a short healthy run does not do. prometheus-client
/// exports a family only once it has a series, so these are checked against the
/// constants (which the crates' unit tests check against their registries).
const ON_EVENT_ONLY: &[&str] = &[engine::SEAM_ERRORS_TOTAL, scaler::SOURCE_ERRORS_TOTAL];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo())
        .output()
        .expect("promtool runs: install Debian's `prometheus` package (.ci/run does)");
    assert!(
        out.status.success(),
        "promtool {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_the_config_the_rules_and_their_tests() {
    promtool(&["check", "config", "ops/prometheus/prometheus.yml"]);
    promtool(&["check", "rules", ALERTS]);
    promtool(&["test", "rules", "ops/prometheus/alerts_test.yml"]);
}

/// Every PromQL expression of the dashboard (panel targets), with where it is.
fn dashboard_exprs() -> Vec<(String, String)> {
    fn walk(v: &serde_json::Value, title: &str, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(m) => {
                let title = m.get("title").and_then(|t| t.as_str()).unwrap_or(title);
                if let Some(expr) = m.get("expr").and_then(|e| e.as_str()) {
                    out.push((format!("{DASHBOARD} panel {title:?}"), expr.to_string()));
                }
                for v in m.values() {
                    walk(v, title, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, title, out)),
            _ => {}
        }
    }
    let json: serde_json::Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    let mut out = Vec::new();
    walk(&json["panels"], "", &mut out);
    assert!(out.len() > 20, "the dashboard has its queries: {out:?}");
    out
}

/// The template variables' queries (`label_values(metric, label)`), not PromQL.
fn dashboard_variable_queries() -> Vec<(String, String)> {
    let json: serde_json::Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    json["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| {
            let q = v["definition"].as_str()?;
            Some((format!("{DASHBOARD} variable {}", v["name"]), q.to_string()))
        })
        .collect()
}

/// Every `expr:` of the alert rules, folded block scalars (`>-`, `|`) included.
fn alert_exprs() -> Vec<(String, String)> {
    let text = read(ALERTS);
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut out = Vec::new();
    let mut alert = String::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start().trim_start_matches("- ");
        if let Some(name) = t.strip_prefix("alert:") {
            alert = name.trim().to_string();
        }
        let Some(value) = t.strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        let expr = if value.is_empty() || value.starts_with('>') || value.starts_with('|') {
            lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || indent(l) > indent(line))
                .map(|l| l.trim())
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            value.to_string()
        };
        out.push((format!("{ALERTS} alert {alert}"), expr));
    }
    assert!(
        out.len() >= 6,
        "the alert rules have their queries: {out:?}"
    );
    out
}

/// The `facerec_*` metric names an expression uses: identifiers outside string literals
/// (label values such as `"facerec-worker"` are not names), Grafana variables skipped.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let b = expr.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if matches!(c, b'"' | b'\'' | b'`') {
            i += 1;
            while i < b.len() && b[i] != c {
                i += if b[i] == b'\\' && c != b'`' { 2 } else { 1 };
            }
            i += 1;
        } else if c == b'$' {
            i += 1;
            while i < b.len() && (ident(b[i]) || b[i] == b'{' || b[i] == b'}') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            if word.starts_with("facerec_") {
                out.insert(word.to_string());
            }
        } else if c.is_ascii_digit() {
            // Numbers and durations (`5m`, `1e3`).
            while i < b.len() && (ident(b[i]) || b[i] == b'.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn the_tokenizer_finds_names_not_strings_or_variables() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le) (rate(facerec_edge_request_duration_seconds_bucket{route=~"$route", job="facerec_x"}[$__rate_interval]))) / on() facerec_scaler_running_workers > 5m"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "facerec_edge_request_duration_seconds_bucket",
            "facerec_scaler_running_workers"
        ]
    );
}

/// A Prometheus text exposition: each family's type, and which series have samples.
struct Exposition {
    families: BTreeMap<String, String>,
    sampled: BTreeSet<String>,
}

impl Exposition {
    fn parse(text: &str) -> Self {
        let families = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .filter(|(name, _)| name.starts_with("facerec_"))
            .map(|(name, kind)| (name.to_string(), kind.trim().to_string()))
            .collect();
        let sampled = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| l.split(['{', ' ']).next().unwrap_or("").to_string())
            .filter(|name| name.starts_with("facerec_"))
            .collect();
        Exposition { families, sampled }
    }

    /// The series names a family's samples carry, by its type.
    fn series(family: &str, kind: &str) -> Vec<String> {
        match kind {
            "counter" => vec![format!("{family}_total")],
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{family}{s}"))
                .collect(),
            _ => vec![family.to_string()],
        }
    }

    /// Series name → (family, its type), for everything that can be queried.
    fn queryable(&self) -> BTreeMap<String, (String, String)> {
        self.families
            .iter()
            .flat_map(|(f, k)| {
                Self::series(f, k)
                    .into_iter()
                    .map(move |s| (s, (f.clone(), k.clone())))
            })
            .collect()
    }

    /// Names as the crates' constants spell them: counters with `_total`, others as the
    /// family.
    fn exported_names(&self) -> BTreeSet<String> {
        self.families
            .iter()
            .map(|(f, k)| match k.as_str() {
                "counter" => format!("{f}_total"),
                _ => f.clone(),
            })
            .collect()
    }
}

fn constants() -> Vec<(&'static str, &'static str)> {
    let tiers = [
        (edge::PREFIX, edge::ALL),
        (engine::PREFIX, engine::ALL),
        (scaler::PREFIX, scaler::ALL),
    ];
    tiers
        .iter()
        .flat_map(|(prefix, all)| all.iter().map(move |n| (*prefix, *n)))
        .collect()
}

#[test]
fn the_constants_have_the_design_form() {
    let mut seen = BTreeSet::new();
    for (prefix, name) in constants() {
        assert!(
            ["facerec_edge_", "facerec_engine_", "facerec_scaler_"].contains(&prefix),
            "{prefix}: prefix must be facerec_<tier>_"
        );
        assert!(name.starts_with(prefix), "{name} lacks its prefix {prefix}");
        let rest = &name[prefix.len()..];
        assert!(
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'),
            "{name}: lower snake case"
        );
        assert!(seen.insert(name), "{name} declared twice");
    }
}

/// Drives a little traffic through `up` so that labelled families get samples: a face,
/// a corrupt JPEG (an engine error), a text file (415 at the edge) and a bulk batch.
fn drive_traffic(addr: &str) {
    let (dir, expected) = kit::Cse546::unzip().into_parts();
    let stem = &expected[0].0;
    let photo = std::fs::read(
        dir.path()
            .join("face_images_1000")
            .join(format!("{stem}.jpg")),
    )
    .unwrap();
    let r = kit::post_files(addr, "/", &[("inputFile", "a.jpg", &photo)], &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let mut corrupt = photo[..photo.len() / 3].to_vec();
    corrupt.extend_from_slice(&[0u8; 64]);
    let r = kit::post_files(addr, "/", &[("inputFile", "broken.jpg", &corrupt)], &[]);
    assert!((400..500).contains(&r.status), "{} {}", r.status, r.text());
    let r = kit::post_files(addr, "/", &[("inputFile", "notes.txt", b"hello")], &[]);
    assert_eq!(r.status, 415, "{}", r.text());
    let r = kit::post_files(
        addr,
        "/v1/batches",
        &[("images", "b.jpg", &photo), ("images", "c.txt", b"hi")],
        &[],
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let job: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let id = job["id"].as_str().unwrap();
    let start = Instant::now();
    loop {
        let p: serde_json::Value = serde_json::from_slice(
            &kit::http(addr, "GET", &format!("/v1/batches/{id}"), &[], b"").body,
        )
        .unwrap();
        if p["finished"].as_bool() == Some(true) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "batch never finished: {p}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(kit::http(addr, "GET", "/health", &[], b"").status, 200);
}

#[test]
fn dashboard_and_alerts_use_only_metrics_that_up_exports() {
    let up = kit::Up::start(&[
        "--workers",
        "1",
        "--max-workers",
        "1",
        "--check-interval",
        "0.5",
    ]);
    drive_traffic(&up.addr);

    // prometheus-client exports a family once it has a series: every family but the
    // ON_EVENT_ONLY ones is there once the scaler has ticked.
    let declared: BTreeSet<String> = constants().iter().map(|(_, n)| n.to_string()).collect();
    let expected: BTreeSet<String> = declared
        .iter()
        .filter(|n| !ON_EVENT_ONLY.contains(&n.as_str()))
        .cloned()
        .collect();
    let start = Instant::now();
    let exposition = loop {
        let r = kit::http(&up.addr, "GET", "/metrics", &[], b"");
        assert_eq!(r.status, 200);
        let e = Exposition::parse(&r.text());
        let exported = e.exported_names();
        let missing: Vec<&String> = expected.difference(&exported).collect();
        if missing.is_empty() {
            break e;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "declared in metrics::names but not exported by facerec up after traffic: \
             {missing:?}\n{}",
            r.text()
        );
        std::thread::sleep(Duration::from_millis(250));
    };

    // Nothing but the declared names (no stray literal names), with the reference's suffixes.
    let strays: Vec<String> = exposition
        .exported_names()
        .difference(&declared)
        .cloned()
        .collect();
    assert!(strays.is_empty(), "not in any metrics::names: {strays:?}");
    for (family, kind) in &exposition.families {
        match kind.as_str() {
            "counter" => {}
            "histogram" if family.contains("duration") => assert!(
                family.ends_with("_seconds"),
                "{family}: durations are _seconds histograms"
            ),
            _ => assert!(
                !family.ends_with("_total"),
                "{family} ({kind}): only counters end in _total"
            ),
        }
    }
    let queryable = exposition.queryable();
    for name in &exposition.sampled {
        assert!(
            queryable.contains_key(name),
            "sample {name} belongs to no declared family"
        );
    }

    // Every name the dashboard and the alert rules query, as the constants spell it.
    let resolve = |name: &str| -> Option<String> {
        match queryable.get(name) {
            Some((family, kind)) if kind == "counter" => Some(format!("{family}_total")),
            Some((family, _)) => Some(family.clone()),
            // Counters: the constant is the series name.
            None => ON_EVENT_ONLY.contains(&name).then(|| name.to_string()),
        }
    };
    let mut used = 0;
    for (place, expr) in dashboard_exprs()
        .into_iter()
        .chain(dashboard_variable_queries())
        .chain(alert_exprs())
    {
        for name in metric_names(&expr) {
            used += 1;
            let hint = if exposition.families.get(&name).map(String::as_str) == Some("histogram") {
                " (a histogram: query its _bucket, _sum or _count series)"
            } else {
                ""
            };
            assert!(
                resolve(&name).is_some(),
                "{place}: {name} is not exported by facerec up{hint}\nexpr: {expr}"
            );
        }
    }
    assert!(used > 30, "only {used} metric uses found");

    // The dashboard shows every declared metric.
    let on_dashboard: BTreeSet<String> = dashboard_exprs()
        .iter()
        .flat_map(|(_, e)| metric_names(e))
        .filter_map(|n| resolve(&n))
        .collect();
    let missing: Vec<&String> = declared.difference(&on_dashboard).collect();
    assert!(missing.is_empty(), "not on the dashboard: {missing:?}");
}

/// A Prometheus server with no targets, to parse queries; killed on drop.

#[test]
fn prometheus_parses_every_dashboard_query() {
    let prometheus = kit::Prometheus::start(&[]);
    for (place, expr) in dashboard_exprs() {
        // What Grafana substitutes before sending the query.
        let promql = expr
            .replace("$__rate_interval", "1m")
            .replace("$route", ".*");
        assert!(!promql.contains('$'), "{place}: unknown variable in {expr}");
        let answer = prometheus.query_json(&promql);
        assert_eq!(answer["status"], "success", "{place}: {expr}\n{answer}");
    }
}

#[test]
fn dashboard_datasource_is_a_variable() {
    let text = read(DASHBOARD);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let vars = json["templating"]["list"].as_array().unwrap();
    assert!(
        vars.iter()
            .any(|v| v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource"),
        "a datasource variable DS_PROMETHEUS"
    );
    fn uids(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(uid) = m.get("datasource").and_then(|d| d.get("uid")) {
                    out.push(uid.as_str().unwrap_or("").to_string());
                }
                m.values().for_each(|v| uids(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| uids(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    uids(&json["panels"], &mut found);
    assert!(!found.is_empty());
    assert!(
        found.iter().all(|u| u == "${DS_PROMETHEUS}"),
        "every panel and query uses the datasource variable: {found:?}"
    );
}
