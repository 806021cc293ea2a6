//! Upkeep while running: the heartbeat that extends held messages, the gallery refresh.

use super::*;

impl Worker {
    pub(super) async fn heartbeat(self: Arc<Self>, stop: CancellationToken) {
        let period = (self.config.visibility / 3).max(Duration::from_millis(200));
        loop {
            tokio::select! {
                () = tokio::time::sleep(period / 2) => {}
                () = stop.cancelled() => return,
            }
            let now = Instant::now();
            let due: Vec<String> = {
                let mut held = lock(&self.in_hand);
                held.iter_mut()
                    .filter(|(_, t)| now.duration_since(**t) >= period)
                    .map(|(r, t)| {
                        *t = now;
                        r.clone()
                    })
                    .collect()
            };
            if due.is_empty() {
                continue;
            }
            tracing::debug!(count = due.len(), "extending visibility");
            if let Err(e) = self
                .seams
                .requests
                .set_visibility(due, self.config.visibility)
                .await
            {
                self.failure("heartbeat", &e);
            }
        }
    }

    pub(super) async fn gallery_refresher(
        self: Arc<Self>,
        every: Duration,
        stop: CancellationToken,
    ) {
        // A face store's feed is cheap to poll: it is followed at its own pace.
        let every = if self.gallery.store().is_some() {
            self.gallery.poll_interval()
        } else {
            every
        };
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = stop.cancelled() => return,
            }
            match self.gallery.sync(self.seams.store.as_ref()).await {
                Ok(true) => {
                    self.metrics
                        .gallery_faces
                        .set(self.gallery.get().len() as i64);
                    self.prepare_gallery().await;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "gallery refresh failed"),
            }
            if let Err(e) = self.galleries.sync_others().await {
                tracing::warn!(error = %e, "collections' gallery refresh failed");
            }
        }
    }

    /// Puts the current gallery on the matcher's device (when it searches there) before
    /// the next batch needs it; otherwise the first batch of a new version uploads it.
    pub(super) async fn prepare_gallery(&self) {
        let gallery = self.gallery.get();
        let _ = self
            .compute
            .run(move |engine| engine.matcher().prepare(&gallery))
            .await;
    }

    pub(super) fn hold(&self, receipt: &str) {
        let mut held = lock(&self.in_hand);
        if held.insert(receipt.to_string(), Instant::now()).is_none() {
            self.metrics.in_flight.inc();
        }
    }

    pub(super) fn unhold(&self, receipt: &str) {
        let mut held = lock(&self.in_hand);
        if held.remove(receipt).is_some() {
            self.metrics.in_flight.dec();
        }
    }
}
