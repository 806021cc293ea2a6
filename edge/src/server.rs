//! The HTTP server: connections accepted up to the limit, each served by hyper with the
//! route table (`routes::router`), and the drain on shutdown.

use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::edge::Edge;
use facerec_seams::sync::lock;

impl Edge {
    /// Serves HTTP on `listener` until `shutdown`, then lets open requests finish.
    pub(crate) async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        for _ in 0..self.config.response_pollers.max(1) {
            tokio::spawn(self.clone().dispatch_responses(shutdown.clone()));
        }
        tokio::spawn(self.clone().sweep_batches(shutdown.clone()));
        // Enrolments through other edges (and the gallery object's new versions) reach
        // this one's listings and matching.
        tokio::spawn(self.gallery.clone().follow(
            self.seams.store.clone(),
            shutdown.clone(),
            |_| {},
        ));
        tokio::spawn(self.galleries.clone().follow_others(shutdown.clone()));
        // Faces already seen follow enrolments and removals, in every collection (one
        // process of the fleet at a time does each collection's work).
        tokio::spawn(facerec_seams::retag::run_all(
            self.galleries.clone(),
            self.config.threshold,
            self.metrics.retag.clone(),
            shutdown.clone(),
        ));
        let routes = crate::routes::router(self.clone());
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let drain = self.config.drain;
        // After the shutdown signal: connections are still accepted (nothing queued in the
        // kernel is reset) but every new request answers 503, while the open ones are
        // answered until the drain time is over or none is left.
        let mut drain_end: Option<Instant> = None;
        let (mut refused, mut last_refusal_log) = (0u64, None::<Instant>);
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = shutdown.cancelled(), if drain_end.is_none() => {
                    tracing::info!(
                        waiting = lock(&self.pending).len(),
                        drain_s = drain.as_secs_f64(),
                        "shutting down: new requests answer 503, open ones are answered within the drain time"
                    );
                    self.draining.store(true, std::sync::atomic::Ordering::Relaxed);
                    drain_end = Some(Instant::now() + drain);
                    continue;
                }
                () = tokio::time::sleep_until(drain_end.unwrap_or_else(Instant::now)), if drain_end.is_some() => {
                    tracing::warn!(
                        unanswered = lock(&self.pending).len(),
                        "drain time over: the requests still waiting answer 503"
                    );
                    break;
                }
                () = tokio::time::sleep(Duration::from_millis(100)),
                    if drain_end.is_some() && self.metrics.in_flight.get() == 0 => {
                    tracing::info!("drained: every open request is answered");
                    break;
                }
            };
            // Past the connection limit, a connection is answered 503 and closed at once:
            // idle or slow clients cannot pin every descriptor.
            let permit = self.connections.clone().try_acquire_owned().ok();
            if permit.is_none() {
                refused += 1;
                // One line a second at most, however many are refused.
                if last_refusal_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(%peer, max = self.config.max_connections, refused, "connection limit reached: 503");
                    last_refusal_log = Some(Instant::now());
                }
                tokio::spawn(refuse(stream));
                continue;
            }
            let service = hyper_util::service::TowerToHyperService::new(routes.clone());
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(self.config.read_timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                drop(permit);
            });
        }
        // The drain is over: whatever still waits answers 503 now.
        self.closing.cancel();
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(Duration::from_secs(5)) => {
                tracing::warn!("connections still open 5 s after the drain; closing");
            }
        }
    }
}

/// Answers a connection over the limit with a bare 503 and closes it.
pub(crate) async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body = r#"{"error":"too many open connections, retry shortly","kind":"overloaded"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
    let _ = stream.shutdown().await;
}

/// Serves `edge` on `listener` until `shutdown` is cancelled, then drains: requests that
/// arrive after the signal answer 503, open ones are answered within `EdgeConfig::drain`.
/// The library's entry point: `facerec edge` and `facerec up` run it, and tests run it on
/// a port-0 listener in-process.
pub async fn run(edge: Arc<Edge>, listener: TcpListener, shutdown: CancellationToken) {
    edge.serve(listener, shutdown).await;
}
