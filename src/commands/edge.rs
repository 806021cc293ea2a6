//! `facerec edge`: the web tier in front of SQS/S3.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use facerec_seams::aws::Aws;
use prometheus_client::registry::Registry;

use crate::cli::serve::EdgeCommandArgs;
use crate::support::engine::models_dir;
use crate::support::runtime::{runtime, shutdown_signal};
use crate::support::serve::{open_gallery, serve_edge, sweep_seen_faces};
use facerec_engine::models::recognition_model_id;

/// `facerec edge`: the web tier in front of SQS/S3.
pub fn run(args: &EdgeCommandArgs) -> Result<ExitCode> {
    let (aws_args, edge_args, threshold) = (&args.aws, &args.edge, args.threshold.rule);
    let model_id = recognition_model_id(&models_dir(&args.models)?, args.recognizer.weights)?;
    let retention = match args.retention_hours {
        Some(h) if h.is_finite() && h > 0.0 => Some(Duration::from_secs_f64(h * 3600.0)),
        Some(_) => anyhow::bail!("FACEREC_RETENTION_HOURS must be a positive number of hours"),
        None => None,
    };
    runtime()?.block_on(async {
        let shutdown = shutdown_signal();
        let aws = Aws::connect(&aws_args.id, &aws_args.settings()).await;
        let seams = aws.seams().await?;
        let gallery =
            open_gallery(args.database.url.as_deref(), model_id, seams.store.as_ref()).await?;
        if let (Some(retention), Some(faces)) = (retention, gallery.store()) {
            tokio::spawn(sweep_seen_faces(faces.clone(), retention, shutdown.clone()));
        }
        let mut registry = Registry::default();
        let edge_metrics = facerec_edge::EdgeMetrics::register(&mut registry);
        let edge = facerec_edge::Edge::new(
            edge_args.config(threshold),
            seams,
            gallery,
            edge_metrics,
            Arc::new(registry),
        );
        serve_edge(edge, edge_args.listen, shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}
