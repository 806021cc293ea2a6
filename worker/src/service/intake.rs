//! Intake: long-polling receivers, and per message: parse, dedupe against stored results,
//! fetch the upload, hand a job to the batcher.

use super::*;

impl Worker {
    pub(super) async fn poller(self: Arc<Self>, index: usize, shutdown: CancellationToken) {
        loop {
            if shutdown.is_cancelled() || self.fatal.is_cancelled() {
                return;
            }
            let open_until = *lock(&self.breaker.open_until);
            if let Some(until) = open_until {
                tokio::select! {
                    () = tokio::time::sleep_until(until) => {}
                    () = shutdown.cancelled() => return,
                    () = self.fatal.cancelled() => return,
                }
            }
            // Only receive what we have room for.
            let permits = tokio::select! {
                p = self.permits.clone().acquire_many_owned(MAX_BATCH as u32) => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                () = shutdown.cancelled() => return,
                () = self.fatal.cancelled() => return,
            };
            let received = tokio::select! {
                r = self.seams.requests.receive(MAX_BATCH, self.config.wait) => r,
                () = shutdown.cancelled() => return,
                () = self.fatal.cancelled() => return,
            };
            match received {
                Ok(msgs) => {
                    self.success();
                    let mut permits = permits;
                    for msg in msgs {
                        let permit = permits
                            .split(1)
                            .expect("at most MAX_BATCH messages per receive");
                        self.hold(&msg.receipt);
                        tokio::spawn(self.clone().handle(msg, permit));
                    }
                }
                Err(e) => {
                    tracing::warn!(poller = index, error = %e, "receive failed");
                    self.failure("receive", &e);
                }
            }
        }
    }

    /// Parses, deduplicates and fetches one message; hands it to the batcher or
    /// finishes it here.
    pub(super) async fn handle(self: Arc<Self>, msg: Received, permit: OwnedSemaphorePermit) {
        let req = match Request::parse(&msg.body) {
            Ok(r) => r,
            Err(reason) => {
                let result = Request::salvage_id(&msg.body).map(|(id, filename)| {
                    ResultMessage::error(
                        &id,
                        &filename,
                        ImageError::new(ErrorKind::Io, format!("malformed request: {reason}")),
                    )
                });
                self.dead_letter(&msg, dlq_reason::MALFORMED, &reason.to_string(), result)
                    .await;
                return;
            }
        };
        // Answered before (a redelivery or a duplicate send): answer the same again.
        match self
            .seams
            .store
            .get(Bucket::Out, &result_key(&req.request_id))
            .await
        {
            Ok(existing) => {
                self.success();
                match ResultMessage::parse(&existing) {
                    Ok(r) => {
                        tracing::info!(request_id = %req.request_id, "duplicate delivery answered from the stored result");
                        Metrics::count(&self.metrics.messages, "result", "duplicate");
                        // The upload is still there when the process stopped between
                        // answer and delete.
                        let uploads = if self.config.delete_uploads && r.error.is_none() {
                            vec![req.key.clone()]
                        } else {
                            Vec::new()
                        };
                        self.respond_and_ack(vec![(msg, r.to_json())], None, &uploads)
                            .await;
                    }
                    Err(e) => self.retry_later(&msg, &e.to_string()).await,
                }
                return;
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                self.failure("get_result", &e);
                self.back_off(&msg, &e.to_string()).await;
                return;
            }
        }

        let t = std::time::Instant::now();
        match self.seams.store.get(Bucket::In, &req.key).await {
            Ok(bytes) => {
                self.success();
                self.metrics.stage("io", t.elapsed());
                let job = Job {
                    msg,
                    req,
                    bytes,
                    _permit: permit,
                };
                if let Err(mpsc::error::SendError(job)) = self.jobs.send(job).await {
                    // Only while shutting down.
                    self.release(&job.msg).await;
                }
            }
            Err(e) if e.is_not_found() => {
                if msg.receive_count >= self.config.max_retries {
                    let err = ImageError::new(
                        ErrorKind::Io,
                        format!("the upload {} does not exist", req.key),
                    );
                    let result = ResultMessage::error_for(&req, err);
                    self.dead_letter(&msg, dlq_reason::MISSING_OBJECT, e.message(), Some(result))
                        .await;
                } else {
                    self.retry_later(&msg, e.message()).await;
                }
            }
            Err(e) if e.kind() == SeamErrorKind::Permanent => {
                self.failure("get_upload", &e);
                self.retry_later(&msg, &e.to_string()).await;
            }
            Err(e) => {
                self.failure("get_upload", &e);
                self.back_off(&msg, &e.to_string()).await;
            }
        }
    }
}
