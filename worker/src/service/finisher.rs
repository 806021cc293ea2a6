//! The finisher: stores each result once, sends the responses, acknowledges; dead letters,
//! retries with back-off, releases.

use super::*;

impl Worker {
    /// Stores results, sends responses and dead letters, acknowledges.
    pub(super) async fn finish(
        self: Arc<Self>,
        batch: Vec<Job>,
        results: Vec<ResultMessage>,
        seen: Vec<SeenFace>,
    ) {
        let mut answered = Vec::new();
        let mut dead = Vec::new();
        for (job, result) in batch.into_iter().zip(results) {
            match &result.error {
                Some(e) if e.kind == ErrorKind::Inference => {
                    // The engine failed, not the image: try again later.
                    Metrics::count(&self.metrics.images, "outcome", "inference_error");
                    self.retry_later(&job.msg, &e.message).await;
                    continue;
                }
                Some(e) => {
                    Metrics::count(&self.metrics.images, "outcome", e.kind.as_str());
                    dead.push((job.msg.clone(), e.kind.as_str(), e.message.clone()));
                }
                None => {
                    Metrics::count(&self.metrics.images, "outcome", "ok");
                    let faces = result.faces.as_ref().map_or(0, Vec::len);
                    self.metrics.faces.inc_by(faces as u64);
                }
            }
            tracing::info!(
                request_id = %result.request_id,
                name = result.name.as_deref().unwrap_or(""),
                error = result.error.as_ref().map(|e| e.kind.as_str()).unwrap_or(""),
                receive_count = job.msg.receive_count,
                "recognized"
            );
            answered.push((job, result));
        }
        // The faces seen go to the face store before the results: a result is stored and
        // answered only once its faces are recorded, so nothing is lost to a crash or to a
        // database that is away (the request is tried again; its faces are recorded once).
        let answered = self.record_seen(answered, seen).await;
        // Results are written concurrently, each only if absent.
        let t = std::time::Instant::now();
        let writes = answered.iter().map(|(_, r)| self.store_result(r));
        let stored = futures_util::future::join_all(writes).await;
        self.metrics.stage("io", t.elapsed());
        let mut to_send = Vec::new();
        let mut uploads = Vec::new();
        for ((job, _), body) in answered.into_iter().zip(stored) {
            match body {
                Ok(body) => {
                    uploads.push((job.msg.receipt.clone(), job.req.key.clone()));
                    to_send.push((job.msg, body));
                }
                Err(e) => {
                    self.failure("put_result", &e);
                    self.back_off(&job.msg, &e.to_string()).await;
                }
            }
        }
        if !dead.is_empty() {
            let receipts_ok: Vec<&str> = to_send.iter().map(|(m, _)| m.receipt.as_str()).collect();
            dead.retain(|(m, _, _)| receipts_ok.contains(&m.receipt.as_str()));
            uploads.retain(|(r, _)| !dead.iter().any(|(m, _, _)| &m.receipt == r));
        }
        let uploads: Vec<String> = if self.config.delete_uploads {
            uploads.into_iter().map(|(_, key)| key).collect()
        } else {
            Vec::new()
        };
        self.respond_and_ack(to_send, Some(dead), &uploads).await;
    }

    /// Records the seen faces of the answered requests in one transaction. While the face
    /// store is away the requests stay held (the heartbeat keeps them invisible, their
    /// receive counts do not grow) and the write is tried again, so an outage delays
    /// answers but neither loses nor dead-letters them. Requests released meanwhile (a
    /// shutdown) are left to their next delivery; a store that refuses the faces for good
    /// (not an outage) does not hold the answers back: they go out, the error is logged.
    async fn record_seen(
        &self,
        answered: Vec<(Job, ResultMessage)>,
        seen: Vec<SeenFace>,
    ) -> Vec<(Job, ResultMessage)> {
        let Some(store) = self.gallery.store().filter(|_| !seen.is_empty()) else {
            return answered;
        };
        let ids: std::collections::HashSet<&str> = answered
            .iter()
            .map(|(j, _)| j.req.request_id.as_str())
            .collect();
        let faces: Vec<SeenFace> = seen
            .into_iter()
            .filter(|f| ids.contains(f.request_id.as_str()))
            .collect();
        // By collection: each request's faces go to its own.
        let collection: HashMap<&str, &str> = answered
            .iter()
            .filter_map(|(j, _)| Some((j.req.request_id.as_str(), j.req.collection.as_deref()?)))
            .collect();
        let mut groups: HashMap<&str, Vec<SeenFace>> = HashMap::new();
        for f in &faces {
            let c = collection
                .get(f.request_id.as_str())
                .copied()
                .unwrap_or(facerec_seams::faces::DEFAULT_COLLECTION);
            groups.entry(c).or_default().push(f.clone());
        }
        let record = || async {
            let mut added = 0;
            for (c, faces) in &groups {
                added += if *c == store.collection() {
                    store.record_seen(faces).await?
                } else {
                    store.in_collection(c).record_seen(faces).await?
                };
            }
            Ok::<_, facerec_seams::FaceStoreError>(added)
        };
        let mut pause = self.config.retry_delay.max(Duration::from_millis(50));
        let mut waiting = false;
        let e = loop {
            let t = std::time::Instant::now();
            let recorded = record().await;
            self.metrics.stage("faces", t.elapsed());
            match recorded {
                Ok(added) => {
                    self.metrics.seen_faces.inc_by(added as u64);
                    if waiting {
                        tracing::info!(
                            faces = faces.len(),
                            "seen faces recorded; the held requests go on"
                        );
                    }
                    return answered;
                }
                Err(e) => {
                    Metrics::count(&self.metrics.seam_errors, "op", "record_faces");
                    let held = {
                        let in_hand = lock(&self.in_hand);
                        answered
                            .iter()
                            .any(|(j, _)| in_hand.contains_key(&j.msg.receipt))
                    };
                    if !e.is_retryable() {
                        tracing::error!(error = %e, faces = faces.len(), "seen faces refused by the face store; answering without them");
                        return answered;
                    }
                    if !held {
                        break e;
                    }
                    if !waiting {
                        tracing::warn!(error = %e, faces = faces.len(), "recording seen faces failed; their requests are held until the face store answers");
                        waiting = true;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        };
        // Released (the worker is stopping): their next delivery records and answers them.
        tracing::warn!(error = %e, faces = faces.len(), "seen faces not recorded before the requests were released; their next delivery answers them");
        let with_faces: std::collections::HashSet<&str> =
            faces.iter().map(|f| f.request_id.as_str()).collect();
        answered
            .into_iter()
            .filter(|(job, _)| !with_faces.contains(job.req.request_id.as_str()))
            .collect()
    }

    /// Writes a result unless one exists; returns the stored body either way.
    pub(super) async fn store_result(&self, result: &ResultMessage) -> Result<String, SeamError> {
        let key = result_key(&result.request_id);
        let body = result.to_json();
        if self
            .seams
            .store
            .put_if_absent(Bucket::Out, &key, Bytes::from(body.clone()))
            .await?
        {
            Ok(body)
        } else {
            let existing = self.seams.store.get(Bucket::Out, &key).await?;
            String::from_utf8(existing.to_vec())
                .map_err(|_| SeamError::permanent(format!("{key} is not UTF-8")))
        }
    }

    /// Sends responses (and dead letters) for stored results, deletes the uploads they
    /// answer, then acknowledges. Responses that could not be sent leave their messages
    /// to be retried.
    ///
    /// The uploads go before the acknowledgement: a process stopped in between leaves
    /// the message, whose redelivery finds the stored result and deletes the upload
    /// again; the other order would leave an upload nothing refers to any more.
    pub(super) async fn respond_and_ack(
        &self,
        done: Vec<(Received, String)>,
        dead: Option<Vec<(Received, &'static str, String)>>,
        uploads: &[String],
    ) {
        if done.is_empty() {
            return;
        }
        let bodies: Vec<String> = done.iter().map(|(_, b)| b.clone()).collect();
        if let Err(e) = self.seams.responses.send(bodies).await {
            self.failure("send_response", &e);
            for (m, _) in &done {
                self.back_off(m, &e.to_string()).await;
            }
            return;
        }
        if let Some(dead) = dead.filter(|d| !d.is_empty()) {
            let letters: Vec<String> = dead
                .iter()
                .map(|(m, reason, message)| dead_letter_body(m, reason, message))
                .collect();
            if let Err(e) = self.seams.dead_letters.send(letters).await {
                // The result is stored and answered; the record of the bad input is
                // best-effort beyond this point.
                self.failure("send_dead_letter", &e);
            } else {
                for (_, reason, _) in &dead {
                    Metrics::count(&self.metrics.dlq, "reason", reason);
                }
            }
        }
        // The result is durable and answered: the upload is no longer needed. A failed
        // delete leaves it to retention.
        let deletes = uploads
            .iter()
            .map(|key| self.seams.store.delete(Bucket::In, key));
        for (r, key) in futures_util::future::join_all(deletes)
            .await
            .iter()
            .zip(uploads)
        {
            match r {
                Err(e) if !e.is_not_found() => {
                    tracing::warn!(key, error = %e, "deleting an answered upload failed");
                }
                _ => {}
            }
        }
        self.ack(done.into_iter().map(|(m, _)| m).collect()).await;
    }

    pub(super) async fn ack(&self, msgs: Vec<Received>) {
        let receipts: Vec<String> = msgs.iter().map(|m| m.receipt.clone()).collect();
        match self.seams.requests.ack(receipts).await {
            Ok(()) => {
                self.success();
                for m in &msgs {
                    Metrics::count(&self.metrics.messages, "result", "answered");
                    self.unhold(&m.receipt);
                }
            }
            Err(e) => {
                // Not acknowledged: the message comes back and is answered from the
                // stored result.
                self.failure("ack", &e);
                for m in &msgs {
                    self.unhold(&m.receipt);
                }
            }
        }
    }

    /// Gives up on a message: error result to the client (when we know who asked),
    /// dead-letter record with the reason, acknowledgement.
    pub(super) async fn dead_letter(
        &self,
        msg: &Received,
        reason: &'static str,
        message: &str,
        result: Option<ResultMessage>,
    ) {
        tracing::warn!(message_id = %msg.message_id, reason, detail = message, "dead-lettering");
        if let Some(result) = result {
            match self.store_result(&result).await {
                Ok(body) => {
                    self.respond_and_ack(
                        vec![(msg.clone(), body)],
                        Some(vec![(msg.clone(), reason, message.to_string())]),
                        &[],
                    )
                    .await;
                }
                Err(e) => {
                    self.failure("put_result", &e);
                    self.back_off(msg, &e.to_string()).await;
                }
            }
            return;
        }
        let letter = dead_letter_body(msg, reason, message);
        match self.seams.dead_letters.send(vec![letter]).await {
            Ok(()) => {
                Metrics::count(&self.metrics.dlq, "reason", reason);
                self.ack(vec![msg.clone()]).await;
            }
            Err(e) => {
                self.failure("send_dead_letter", &e);
                self.back_off(msg, &e.to_string()).await;
            }
        }
    }

    /// A failure of this message (not of the infrastructure): tried again after a
    /// backoff, dead-lettered with an error result once delivered `max_retries` times.
    pub(super) async fn retry_later(&self, msg: &Received, why: &str) {
        if msg.receive_count >= self.config.max_retries {
            let result = Request::parse(&msg.body).ok().map(|req| {
                let why = format!("gave up after {} attempts: {why}", msg.receive_count);
                ResultMessage::error_for(&req, ImageError::new(ErrorKind::Io, why))
            });
            self.dead_letter(msg, dlq_reason::RETRIES_EXHAUSTED, why, result)
                .await;
        } else {
            self.back_off(msg, why).await;
        }
    }

    /// Hands a message back to be delivered again after a backoff (doubling per
    /// delivery). Used for transient failures, which never dead-letter a message
    /// themselves: the circuit breaker keeps an outage from burning deliveries, and
    /// the queue's redrive policy is the last resort.
    pub(super) async fn back_off(&self, msg: &Received, why: &str) {
        let exp = msg.receive_count.saturating_sub(1).min(10);
        let backoff = (self.config.retry_delay * 2u32.pow(exp)).min(self.config.visibility);
        tracing::info!(message_id = %msg.message_id, receive_count = msg.receive_count, backoff_s = backoff.as_secs_f32(), reason = why, "will retry");
        Metrics::count(&self.metrics.messages, "result", "retried");
        if let Err(e) = self
            .seams
            .requests
            .set_visibility(vec![msg.receipt.clone()], backoff)
            .await
        {
            // It reappears after the visibility timeout instead.
            self.failure("visibility", &e);
        }
        self.unhold(&msg.receipt);
    }

    pub(super) async fn release(&self, msg: &Received) {
        let _ = self
            .seams
            .requests
            .set_visibility(vec![msg.receipt.clone()], Duration::ZERO)
            .await;
        self.unhold(&msg.receipt);
    }
}

pub(super) fn dead_letter_body(msg: &Received, reason: &str, message: &str) -> String {
    serde_json::to_string(&DeadLetter {
        v: VERSION,
        reason: reason.to_string(),
        message: message.to_string(),
        receive_count: msg.receive_count,
        body: msg.body.clone(),
    })
    .expect("a dead letter always serialises")
}

pub(super) fn batch_errors(batch: &[Job], err: &ImageError) -> Vec<ResultMessage> {
    batch
        .iter()
        .map(|j| ResultMessage::error(&j.req.request_id, &j.req.filename, err.clone()))
        .collect()
}
