//! Where observations come from: the request queue's own depth (SQS attributes or the
//! in-process queue), a scrape of workers' `/metrics`, or a Prometheus server's HTTP API.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use facerec_seams::Queue;
use facerec_seams::metrics::names as engine;

use crate::decide::Backlog;
use crate::metrics::names;
use facerec_seams::http_client;

/// A failed observation.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct SourceError {
    pub source_name: &'static str,
    pub message: String,
}

impl SourceError {
    fn new(source_name: &'static str, message: impl Into<String>) -> Self {
        SourceError {
            source_name,
            message: message.into(),
        }
    }
}

/// What one source reports; either part may be missing.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sample {
    pub backlog: Option<Backlog>,
    /// Messages per second completed by the fleet.
    pub rate: Option<f64>,
}

#[async_trait]
pub trait Source: Send + Sync {
    /// A short name for logs and the `source` label.
    fn name(&self) -> &'static str;
    /// Whether its samples carry the backlog (a failure then means the depth is unknown).
    fn reports_backlog(&self) -> bool {
        true
    }
    async fn sample(&self) -> Result<Sample, SourceError>;
}

/// Queue depth straight from the queue (SQS `ApproximateNumberOfMessages*`, or the local
/// queue's counts).
pub struct QueueDepth {
    pub queue: Arc<dyn Queue>,
}

#[async_trait]
impl Source for QueueDepth {
    fn name(&self) -> &'static str {
        "queue"
    }

    async fn sample(&self) -> Result<Sample, SourceError> {
        let d = self
            .queue
            .depth()
            .await
            .map_err(|e| SourceError::new("queue", e.to_string()))?;
        Ok(Sample {
            backlog: Some(Backlog {
                visible: d.visible,
                in_flight: d.in_flight,
            }),
            rate: None,
        })
    }
}

/// Sums of metric values in a Prometheus text exposition: every sample of `name` (any
/// labels), or only those whose label set contains `label`.
pub fn sum_metric(text: &str, name: &str, label: Option<&str>) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = match rest.as_bytes().first() {
            Some(b'{') => match rest.find('}') {
                Some(end) => (&rest[1..end], rest[end + 1..].trim()),
                None => continue,
            },
            Some(b' ') => ("", rest.trim()),
            _ => continue, // a longer name with this prefix
        };
        if label.is_some_and(|l| !labels.split(',').any(|kv| kv == l)) {
            continue;
        }
        let value = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value.filter(|v| v.is_finite()) {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// Scrapes workers' `/metrics` for the completion rate (the growth of
/// `facerec_engine_messages_total{result="answered"}` between two scrapes). It does not
/// see messages waiting in the queue, so pair it with [`QueueDepth`] or Prometheus.
pub struct Scrape {
    pub urls: Vec<String>,
    pub timeout: Duration,
    last: Mutex<Option<(Instant, f64)>>,
}

impl Scrape {
    pub fn new(urls: Vec<String>, timeout: Duration) -> Self {
        Scrape {
            urls,
            timeout,
            last: Mutex::new(None),
        }
    }
}

#[async_trait]
impl Source for Scrape {
    fn name(&self) -> &'static str {
        "scrape"
    }

    fn reports_backlog(&self) -> bool {
        false
    }

    async fn sample(&self) -> Result<Sample, SourceError> {
        let mut answered = 0.0;
        for url in &self.urls {
            let text = get_text(url, self.timeout)
                .await
                .map_err(|e| SourceError::new("scrape", format!("{url}: {e}")))?;
            answered += sum_metric(&text, engine::MESSAGES_TOTAL, Some("result=\"answered\""))
                .unwrap_or(0.0);
        }
        let now = Instant::now();
        let rate = {
            let mut last = self
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let rate = last.and_then(|(t, prev)| {
                let dt = now.duration_since(t).as_secs_f64();
                (dt > 0.0 && answered >= prev).then(|| (answered - prev) / dt)
            });
            *last = Some((now, answered));
            rate
        };
        Ok(Sample {
            backlog: None,
            rate,
        })
    }
}

/// PromQL queries against a Prometheus server's HTTP API (`/api/v1/query`). Each query must
/// return one number (a scalar or a vector, whose samples are summed).
pub struct Prometheus {
    pub base_url: String,
    pub visible_query: String,
    pub in_flight_query: String,
    /// Optional completion-rate query (messages/s).
    pub rate_query: Option<String>,
    pub timeout: Duration,
}

impl Prometheus {
    /// The default queries, over the metrics `facerec up`, the edge and the workers export.
    pub fn with_defaults(base_url: String, timeout: Duration) -> Self {
        Prometheus {
            base_url,
            visible_query: format!("sum({}{{state=\"visible\"}})", names::QUEUE_DEPTH),
            in_flight_query: format!("sum({}{{state=\"in_flight\"}})", names::QUEUE_DEPTH),
            rate_query: Some(format!(
                "sum(rate({}{{result=\"answered\"}}[1m]))",
                engine::MESSAGES_TOTAL
            )),
            timeout,
        }
    }

    /// Runs one instant query and returns its value (sum of a vector's samples).
    pub async fn query(&self, promql: &str) -> Result<f64, SourceError> {
        let url = format!(
            "{}/api/v1/query?query={}",
            self.base_url.trim_end_matches('/'),
            percent_encode(promql)
        );
        let text = get_text(&url, self.timeout)
            .await
            .map_err(|e| SourceError::new("prometheus", e.to_string()))?;
        parse_query_result(&text)
            .map_err(|e| SourceError::new("prometheus", format!("{promql}: {e}")))
    }
}

#[async_trait]
impl Source for Prometheus {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    async fn sample(&self) -> Result<Sample, SourceError> {
        let visible = self.query(&self.visible_query).await?;
        let in_flight = self.query(&self.in_flight_query).await?;
        let rate = match &self.rate_query {
            Some(q) => self.query(q).await.ok().filter(|r| r.is_finite()),
            None => None,
        };
        Ok(Sample {
            backlog: Some(Backlog {
                visible: visible.max(0.0).round() as u64,
                in_flight: in_flight.max(0.0).round() as u64,
            }),
            rate,
        })
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Why a Prometheus answer gave no number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("query failed: {0}")]
    Failed(String),
    /// A query that matches nothing says nothing about the backlog.
    #[error("no samples")]
    NoSamples,
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("unsupported result type {0:?}")]
    ResultType(Option<String>),
}

/// Reads `{"status":"success","data":{"resultType":...,"result":...}}`: a scalar, or the
/// sum of a vector's samples. An empty vector is an error (`QueryError::NoSamples`).
pub fn parse_query_result(text: &str) -> Result<f64, QueryError> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| QueryError::NotJson(e.to_string()))?;
    if v["status"] != "success" {
        let why = v["error"].as_str().unwrap_or("unknown error");
        return Err(QueryError::Failed(why.into()));
    }
    let number =
        |pair: &serde_json::Value| -> Option<f64> { pair.get(1)?.as_str()?.parse::<f64>().ok() };
    let data = &v["data"];
    match data["resultType"].as_str() {
        Some("scalar") => number(&data["result"]).ok_or(QueryError::Malformed("scalar")),
        Some("vector") => {
            let samples = data["result"]
                .as_array()
                .ok_or(QueryError::Malformed("vector"))?;
            if samples.is_empty() {
                return Err(QueryError::NoSamples);
            }
            samples
                .iter()
                .map(|s| number(&s["value"]).ok_or(QueryError::Malformed("sample")))
                .sum()
        }
        other => Err(QueryError::ResultType(other.map(str::to_owned))),
    }
}

/// Several sources in order: the backlog from the first that has it, the rate likewise.
/// If a source fails, its part is missing (the decision then holds rather than guess).
pub struct Combined {
    pub sources: Vec<Arc<dyn Source>>,
}

impl Combined {
    /// Samples every source; returns the merged sample and the errors seen.
    pub async fn sample(&self) -> (Sample, Vec<SourceError>) {
        let mut merged = Sample::default();
        let mut errors = Vec::new();
        let mut depth_failed = false;
        for s in &self.sources {
            match s.sample().await {
                Ok(sample) => {
                    if merged.backlog.is_none() && !depth_failed {
                        merged.backlog = sample.backlog;
                    }
                    merged.rate = merged.rate.or(sample.rate);
                }
                Err(e) => {
                    // A failed depth source must not be replaced by a later one silently
                    // reporting a smaller backlog: hold instead.
                    depth_failed |= merged.backlog.is_none() && s.reports_backlog();
                    errors.push(e);
                }
            }
        }
        if depth_failed {
            merged.backlog = None;
        }
        (merged, errors)
    }
}

/// Largest body accepted (a metrics page of a busy worker is a few tens of KiB).
const MAX_BODY: usize = 16 << 20;

/// The text of a 2xx answer to a GET of `url`.
async fn get_text(url: &str, timeout: Duration) -> Result<String, http_client::ClientError> {
    let body = http_client::get(url, timeout, MAX_BODY).await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_exposition_samples() {
        let text = "# HELP facerec_engine_in_flight x\n\
            facerec_engine_in_flight 3\n\
            facerec_engine_in_flight_other 100\n\
            facerec_engine_messages_total{result=\"answered\"} 10\n\
            facerec_engine_messages_total{result=\"duplicate\"} 4\n";
        assert_eq!(
            sum_metric(text, "facerec_engine_in_flight", None),
            Some(3.0)
        );
        assert_eq!(
            sum_metric(text, "facerec_engine_messages_total", None),
            Some(14.0)
        );
        assert_eq!(
            sum_metric(
                text,
                "facerec_engine_messages_total",
                Some("result=\"answered\"")
            ),
            Some(10.0)
        );
        assert_eq!(sum_metric(text, "facerec_missing", None), None);
    }

    #[test]
    fn reads_prometheus_answers() {
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{},"value":[1700000000.1,"7"]},{"metric":{"a":"b"},"value":[1700000000.1,"5"]}]}}"#;
        assert_eq!(parse_query_result(vector), Ok(12.0));
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"2.5"]}}"#;
        assert_eq!(parse_query_result(scalar), Ok(2.5));
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse_query_result(empty), Err(QueryError::NoSamples));
        let error = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert_eq!(
            parse_query_result(error),
            Err(QueryError::Failed("parse error".into()))
        );
        assert!(matches!(
            parse_query_result("<html>"),
            Err(QueryError::NotJson(_))
        ));
        assert_eq!(
            percent_encode("sum(x{a=\"b\"})"),
            "sum%28x%7Ba%3D%22b%22%7D%29"
        );
    }
}
