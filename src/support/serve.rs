//! What `edge` and `up` share: serving the web tier, the recognition model's id.

use std::net::SocketAddr;
use std::sync::Arc;

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

/// The recognition model's id (sha256 of its ONNX file), as the engine computes it, so
/// an edge without the models loaded creates galleries workers accept.
pub fn recognition_model_id(
    dir: &std::path::Path,
    recognizer: facerec_engine::Recognizer,
) -> Result<String> {
    use sha2::{Digest, Sha256};
    let path = dir.join(format!("{}.onnx", recognizer.file_stem()));
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
