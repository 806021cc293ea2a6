//! `facerec faces`: the face store's seen faces from the command line.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use facerec_seams::faces::search::{Query, nearest_seen};
use facerec_seams::faces::{FaceStore, SeenFilter};
use facerec_seams::retag::Retagger;
use facerec_seams::{FsStore, GalleryHandle};
use serde_json::json;

use crate::cli::faces::{FacesAction, FacesArgs};
use crate::support::engine::{build_engine, models_dir};
use crate::support::runtime::runtime;
use facerec_engine::models::recognition_model_id;

pub fn run(args: &FacesArgs) -> Result<ExitCode> {
    let model_id = recognition_model_id(
        &models_dir(&args.engine.models)?,
        args.engine.recognizer.weights,
    )?;
    let url = match args
        .database
        .url
        .as_deref()
        .filter(|u| !u.trim().is_empty())
    {
        Some(u) => u.to_string(),
        None => {
            let path = args.data.join("faces.db");
            if !path.exists() {
                bail!(
                    "no face store at {} (give --data of `facerec up`, or --database-url)",
                    path.display()
                );
            }
            format!("sqlite:{}", path.display())
        }
    };
    let rule = args.engine.threshold.rule;
    // The largest face of `--image`, found before the runtime starts (the engine has its
    // own threads).
    let probe = match &args.action {
        FacesAction::Similar {
            image: Some(path), ..
        } => Some(largest_face(args, path)?),
        _ => None,
    };
    runtime()?.block_on(async {
        let mut store = facerec_seams::faces::open(&url, &model_id)
            .await
            .context("opening the face store")?;
        if args.collection != store.collection() {
            store = store.in_collection(&args.collection);
        }
        let mut out = std::io::stdout().lock();
        match &args.action {
            FacesAction::Appearances {
                name,
                limit,
                before,
            } => {
                anyhow::ensure!((1..=1000).contains(limit), "--limit is 1 to 1000");
                for a in store.appearances(name, *before, *limit).await? {
                    writeln!(out, "{}", facerec_edge::api::appearance_json(&a))?;
                }
            }
            FacesAction::Similar {
                id,
                k,
                batch,
                since_ms,
                until_ms,
                ..
            } => {
                let query = match (probe, id) {
                    (Some((embedding, side)), _) => Query::Face { embedding, side },
                    (None, Some(id)) => Query::Seen(*id),
                    (None, None) => bail!("give --image or --id"),
                };
                let filter = SeenFilter {
                    batch: batch.clone(),
                    since_ms: *since_ms,
                    until_ms: *until_ms,
                };
                for s in nearest_seen(store.as_ref(), &query, *k, &filter, rule).await? {
                    writeln!(out, "{}", facerec_edge::api::similar_json(&s))?;
                }
            }
            FacesAction::Retag { run } => {
                if *run {
                    retag(store.clone(), model_id, rule, &args.data).await?;
                }
                let status = store.retag_status().await?;
                writeln!(out, "{}", serde_json::to_string(&status)?)?;
            }
            FacesAction::Collections => {
                for c in store.collections().await? {
                    let line = json!({
                        "name": c.name, "identities": c.identities, "faces": c.faces,
                        "created_ms": c.created_ms,
                    });
                    writeln!(out, "{line}")?;
                }
            }
            FacesAction::Groups { limit } => {
                let mut groups = facerec_seams::faces::groups::PeopleGroups::new();
                groups.sync(store.as_ref()).await?;
                for g in groups.groups().iter().take(*limit) {
                    let line = json!({
                        "id": g.id, "faces": g.faces.len(), "shown": groups.shown(g),
                        "members": g.faces,
                    });
                    writeln!(out, "{line}")?;
                }
                let c = groups.counts();
                eprintln!(
                    "{} groups: {} faces grouped, {} alone, {} waiting (under the quality floor)",
                    groups.groups().len(),
                    c.grouped,
                    c.alone,
                    c.waiting
                );
            }
            FacesAction::ForgetBatch { id } => {
                let n = store.forget_seen_of_batch(id).await?;
                writeln!(out, "{}", json!({"batch": id, "forgotten": n}))?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Runs re-tagging passes here until every seen face has met every change.
async fn retag(
    store: Arc<dyn FaceStore>,
    model_id: String,
    rule: facerec_engine::Threshold,
    data: &std::path::Path,
) -> Result<()> {
    let gallery = Arc::new(GalleryHandle::with_store(model_id, store.clone()));
    // The gallery object of an earlier version is not looked for here (the serving
    // processes import it); an empty directory stands for the blob store.
    let blobs = FsStore::new(data.join("faces-cli-empty"))?;
    eprintln!("loading the gallery");
    gallery.load(&blobs).await?;
    let _ = std::fs::remove_dir_all(data.join("faces-cli-empty"));
    let retagger = Retagger::new(gallery, rule).context("a face store")?;
    let stop = tokio_util::sync::CancellationToken::new();
    let watch = {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                if let Ok(s) = store.retag_status().await
                    && let Some(r) = s.running
                {
                    eprintln!(
                        "re-tagging up to change {}: {} of {} seen faces",
                        r.target, r.done, r.total
                    );
                }
            }
        })
    };
    loop {
        match retagger.pass(&stop).await? {
            Some(r) => eprintln!(
                "re-tagged up to change {}: {} matched again, {} compared, {} changed",
                r.target, r.rematched, r.scanned, r.changed
            ),
            None => {
                let s = store.retag_status().await?;
                if s.cursor >= s.latest && s.stale == 0 {
                    break;
                }
                // Another process holds the lease: wait for it.
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
    watch.abort();
    Ok(())
}

/// The largest face of the image at `path`: its embedding and size.
fn largest_face(args: &FacesArgs, path: &std::path::Path) -> Result<(Vec<f32>, f32)> {
    let engine = build_engine(&args.engine, 1)?;
    let mut found = None;
    crate::support::offline::analyze_paths(&engine, &[path.to_path_buf()], |p, r| {
        let a = r.map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        let face = a
            .faces
            .first()
            .with_context(|| format!("{}: no face found", p.display()))?;
        found = Some((face.embedding.clone(), face.bbox.side()));
        Ok(())
    })?;
    found.context("no result")
}
