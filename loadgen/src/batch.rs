//! The harness's bulk route: the images go up as `POST /v1/batches` multipart bodies, and
//! each batch's results are read from `GET /v1/batches/{id}/results` as they stream in
//! (NDJSON, one line per image). An image's latency runs from the start of its batch's
//! upload to the arrival of its result line at the client.

use std::sync::Arc;
use std::time::Instant;

use facerec_seams::http_client;
use http_body_util::BodyExt;

use crate::client;
use crate::config::{Config, Route, files_per_batch};
use crate::items::Item;
use crate::outcome::{OnDone, Outcome};
use crate::pool::pool;

/// Why a batch's results stopped before every image had one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum BatchFailure {
    /// The connection failed or an answer could not be read.
    #[error("io")]
    Io,
    /// The upload or the results stream was refused with this status.
    #[error("{0}")]
    Refused(u16),
}

/// Sends `cfg.requests` images (cycling `items`) as batches, `cfg.concurrency` batches in
/// flight at once; one outcome per image.
pub(crate) async fn run(cfg: &Config, items: &[Item], on_done: OnDone) -> Vec<Outcome> {
    let all: Vec<Item> = (0..cfg.requests)
        .map(|i| items[i % items.len()].clone())
        .collect();
    let batches: Arc<Vec<Vec<Item>>> = Arc::new(
        all.chunks(files_per_batch(cfg))
            .map(<[Item]>::to_vec)
            .collect(),
    );
    let cfg = Arc::new(cfg.clone());
    let (clients, jobs) = (cfg.concurrency, batches.len());
    pool(clients, jobs, move |i| {
        let (batches, cfg, on_done) = (batches.clone(), cfg.clone(), on_done.clone());
        async move { one_batch(&cfg, &batches[i], &on_done).await }
    })
    .await
}

/// Uploads one batch and reads its results; images without a result line get the reason
/// (`timeout`, `io`, or the upload's refusal status).
async fn one_batch(cfg: &Config, batch: &[Item], on_done: &OnDone) -> Vec<Outcome> {
    let start = Instant::now();
    let mut slots: Vec<Option<Outcome>> = vec![None; batch.len()];
    let run = upload_and_stream(cfg, batch, start, &mut slots, on_done);
    let missing = match tokio::time::timeout(cfg.timeout, run).await {
        Err(_) => "timeout".to_string(),
        Ok(Err(reason)) => reason.to_string(),
        // The stream ended without some lines.
        Ok(Ok(())) => BatchFailure::Io.to_string(),
    };
    let ms = start.elapsed().as_secs_f64() * 1e3;
    slots
        .into_iter()
        .map(|slot| {
            slot.unwrap_or_else(|| {
                on_done();
                Outcome::failed(missing.clone(), ms)
            })
        })
        .collect()
}

async fn upload_and_stream(
    cfg: &Config,
    batch: &[Item],
    start: Instant,
    slots: &mut [Option<Outcome>],
    on_done: &OnDone,
) -> Result<(), BatchFailure> {
    let key = cfg.api_key.as_deref();
    let parts: Vec<(&str, &str, &[u8])> = batch
        .iter()
        .map(|it| ("images", it.filename.as_str(), &it.bytes[..]))
        .collect();
    let (status, body) = client::call(&cfg.addr, "POST", "/v1/batches", key, &parts)
        .await
        .map_err(|_| BatchFailure::Io)?;
    if !(200..300).contains(&status) {
        return Err(BatchFailure::Refused(status));
    }
    let id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_string))
        .ok_or(BatchFailure::Io)?;
    let path = format!("/v1/batches/{id}/results");
    let answer = http_client::send(&cfg.addr, client::request("GET", &path, key, &[]))
        .await
        .map_err(|_| BatchFailure::Io)?;
    if answer.status() != hyper::StatusCode::OK {
        return Err(BatchFailure::Refused(answer.status().as_u16()));
    }
    let mut body = answer.into_body();
    let mut lines = LineStream::default();
    let mut left = batch.len();
    while left > 0 {
        let Some(frame) = body.frame().await else {
            break;
        };
        let Ok(data) = frame.map_err(|_| BatchFailure::Io)?.into_data() else {
            continue;
        };
        let ms = start.elapsed().as_secs_f64() * 1e3;
        for line in lines.push(&data) {
            let Some(i) = slot_of(&line, &id, batch, slots) else {
                continue;
            };
            slots[i] = Some(outcome(&batch[i], &line, ms));
            left -= 1;
            on_done();
        }
    }
    Ok(())
}

/// The image a result line answers: its request id is `<batch id>-<index>`, in upload order;
/// else the first unanswered image of that file name.
fn slot_of(line: &str, id: &str, batch: &[Item], slots: &[Option<Outcome>]) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let by_id = v["request_id"]
        .as_str()
        .and_then(|r| r.strip_prefix(id))
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&i| i < batch.len() && slots[i].is_none());
    by_id.or_else(|| {
        let filename = v["filename"].as_str()?;
        (0..batch.len()).find(|&i| slots[i].is_none() && batch[i].filename == filename)
    })
}

/// A result line: `200` with its name checked, or its error kind.
fn outcome(item: &Item, line: &str, ms: f64) -> Outcome {
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
    if v.get("error").is_some_and(|e| !e.is_null()) {
        let kind = v["error"]["kind"].as_str().unwrap_or("error");
        return Outcome::failed(kind, ms);
    }
    Outcome::answered(Route::Batch, item, 200, line.as_bytes(), ms)
}

/// A streamed body's complete lines as soon as each is in (hyper undoes the chunking).
#[derive(Debug, Default)]
struct LineStream {
    /// Body not yet ending in a newline.
    body: Vec<u8>,
}

impl LineStream {
    /// Takes more of the body; returns the non-empty lines it completes.
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.body.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(p) = self.body.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.body.drain(..=p).collect();
            let line = String::from_utf8_lossy(&line).trim().to_string();
            if !line.is_empty() {
                lines.push(line);
            }
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_come_out_as_they_complete() {
        let mut s = LineStream::default();
        assert!(s.push(b"{\"a\":").is_empty());
        assert_eq!(s.push(b"1}\n{\"b\""), vec![r#"{"a":1}"#]);
        assert_eq!(
            s.push(b":2}\n\n{\"c\":3}\n"),
            vec![r#"{"b":2}"#, r#"{"c":3}"#]
        );
        assert!(s.push(b"  \r\n").is_empty());
    }

    #[test]
    fn result_lines_find_their_image() {
        let item = |f: &str, e: &str| Item {
            filename: f.into(),
            bytes: Default::default(),
            expected: Some(e.into()),
        };
        let batch = [
            item("a.jpg", "Paul"),
            item("a.jpg", "Paul"),
            item("b.jpg", "Bob"),
        ];
        let mut slots = vec![None, None, None];
        let line = r#"{"request_id":"job-7-1","filename":"a.jpg","stem":"a","name":"Paul"}"#;
        assert_eq!(slot_of(line, "job-7", &batch, &slots), Some(1));
        slots[1] = Some(outcome(&batch[1], line, 5.0));
        assert_eq!(slots[1].as_ref().unwrap().verdict, Some(Ok(())));
        // Without a usable request id: the first unanswered image of that name.
        let line = r#"{"filename":"a.jpg","name":"Bob"}"#;
        assert_eq!(slot_of(line, "job-7", &batch, &slots), Some(0));
        let wrong = outcome(&batch[0], line, 5.0);
        assert_eq!(wrong.status, "200");
        assert!(wrong.verdict.unwrap().is_err());
        let failed = outcome(
            &batch[2],
            r#"{"request_id":"job-7-2","filename":"b.jpg","error":{"kind":"not_an_image","message":"x"}}"#,
            5.0,
        );
        assert_eq!(
            (failed.status.as_str(), failed.verdict),
            ("not_an_image", None)
        );
    }
}
