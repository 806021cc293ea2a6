//! What `edge` and `up` share: serving the web tier, the recognition model's id.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

/// Binds and serves the edge until shutdown; prints the address it listens on.
pub async fn serve_edge(
    edge: Arc<facerec_edge::Edge>,
    listen: SocketAddr,
    shutdown: CancellationToken,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    eprintln!("facerec listening on http://{addr}");
    facerec_edge::run(edge, listener, shutdown).await;
    Ok(())
}

/// The gallery of a serving process, loaded: from the face store `database_url` names
/// (the gallery object of an earlier version imported into it once), or, without one,
/// from the gallery object, read-only.
pub async fn open_gallery(
    database_url: Option<&str>,
    model_id: String,
    blobs: &dyn facerec_seams::BlobStore,
) -> Result<Arc<facerec_seams::GalleryHandle>> {
    use facerec_seams::GalleryHandle;
    let Some(url) = database_url.filter(|u| !u.trim().is_empty()) else {
        let gallery = Arc::new(GalleryHandle::new(model_id));
        if let Err(e) = gallery.load(blobs).await {
            tracing::warn!(error = %e, "gallery not loaded");
        }
        tracing::info!(
            faces = gallery.get().len(),
            "no face store (DATABASE_URL): the gallery object is matched, read-only"
        );
        return Ok(gallery);
    };
    let store = facerec_seams::faces::open(url, &model_id)
        .await
        .context("opening the face store (DATABASE_URL)")?;
    let gallery = Arc::new(GalleryHandle::with_store(model_id, store));
    gallery
        .load(blobs)
        .await
        .context("loading the gallery from the face store")?;
    Ok(gallery)
}

/// Forgets the faces seen longer ago than `retention` (a retention sweep); logs what went.
pub async fn forget_seen_faces(faces: &dyn facerec_seams::FaceStore, retention: Duration) {
    let cutoff = facerec_seams::faces::now_ms() - retention.as_millis() as i64;
    match faces.forget_seen_before(cutoff).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(forgotten = n, "retention sweep: seen faces"),
        Err(e) => tracing::warn!(error = %e, "retention sweep of seen faces failed"),
    }
}

/// How often a retention sweep runs: every minute, more often for a retention under two.
pub fn sweep_interval(retention: Duration) -> Duration {
    (retention / 2).min(Duration::from_secs(60))
}

/// An edge's retention of seen faces in a fleet's face store, until `shutdown` (every edge
/// sweeps; a delete that finds nothing costs one indexed query).
pub async fn sweep_seen_faces(
    faces: Arc<dyn facerec_seams::FaceStore>,
    retention: Duration,
    shutdown: CancellationToken,
) {
    tracing::info!(
        retention_hours = retention.as_secs_f64() / 3600.0,
        "seen faces retention"
    );
    loop {
        forget_seen_faces(faces.as_ref(), retention).await;
        tokio::select! {
            () = tokio::time::sleep(sweep_interval(retention)) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
