//! `facerec edge`: the web tier in front of SQS/S3.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use facerec_seams::aws::Aws;
use prometheus_client::registry::Registry;

use crate::cli::serve::EdgeCommandArgs;
use crate::support::engine::models_dir;
use crate::support::runtime::{runtime, shutdown_signal};
use crate::support::serve::{open_gallery, recognition_model_id, serve_edge};

/// `facerec edge`: the web tier in front of SQS/S3.
pub fn run(args: &EdgeCommandArgs) -> Result<ExitCode> {
    let (aws_args, edge_args, threshold) = (&args.aws, &args.edge, args.threshold.rule);
    let model_id = recognition_model_id(&models_dir(&args.models)?, args.recognizer.weights)?;
    runtime()?.block_on(async {
        let shutdown = shutdown_signal();
        let aws = Aws::connect(&aws_args.id, &aws_args.settings()).await;
        let seams = aws.seams().await?;
        let gallery =
            open_gallery(args.database.url.as_deref(), model_id, seams.store.as_ref()).await?;
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
