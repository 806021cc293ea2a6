//! Reading images in engine-sized batches and printing their reports: what `enroll`,
//! `identify`, `verify` and `embed` share. A progress bar on stderr follows long runs; a bad
//! image is reported on its own line and the run goes on, ending with exit status 1.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use anyhow::{Result, bail};
use facerec_engine::report::{self, ImageReport};
use facerec_engine::{Analysis, Engine, ErrorKind, Gallery, ImageError, Threshold};
use indicatif::{ProgressBar, ProgressStyle};

pub fn progress(total: usize) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    if total < 2 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} images ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Reads and analyses `paths` in engine-sized batches, calling `each` in input order.
pub fn analyze_paths(
    engine: &Engine,
    paths: &[PathBuf],
    mut each: impl FnMut(&Path, Result<&Analysis, &ImageError>) -> Result<()>,
) -> Result<()> {
    analyze_batches(engine, paths, |batch, results| {
        batch
            .iter()
            .zip(results)
            .try_for_each(|(path, r)| each(path, *r))
    })
}

/// Reads and analyses `paths` in engine-sized batches, calling `each` once per batch with
/// its paths and their results, in input order.
///
/// Batches run on the engine's lanes (`EngineConfig::lanes`, a thread each) at once, as on
/// `facerec up`'s engine threads: one batch's reading, decoding and pre-processing overlap
/// another's networks, and on the CPU backends each lane runs its batches in a rayon pool
/// of its own (`Engine::lane_pool`; 60 demo photos on 2 cores, alternated: 15.1 photos/s
/// against 13.9 with the process's shared pool). A batch done early waits for its turn as
/// analyses only (boxes, landmarks, embeddings), not decoded images.
pub fn analyze_batches(
    engine: &Engine,
    paths: &[PathBuf],
    mut each: impl FnMut(&[PathBuf], &[Result<&Analysis, &ImageError>]) -> Result<()>,
) -> Result<()> {
    let bar = progress(paths.len());
    let config = engine.config();
    let chunks = guided_chunks(paths, config.max_batch, config.lanes);
    let lanes = config.lanes.min(chunks.len()).max(1);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(usize, Vec<Result<Analysis, ImageError>>)>();
    std::thread::scope(|s| -> Result<()> {
        for _ in 0..lanes {
            let tx = tx.clone();
            let (next, stop, chunks) = (&next, &stop, &chunks);
            s.spawn(move || {
                let _pool = engine.lane_pool(lanes);
                while !stop.load(Ordering::Relaxed) {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(chunk) = chunks.get(k) else { break };
                    if tx.send((k, analyze_chunk(engine, chunk))).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut done = BTreeMap::new();
        let mut want = 0;
        let result = rx.iter().try_for_each(|(k, results)| {
            done.insert(k, results);
            while let Some(results) = done.remove(&want) {
                let refs: Vec<Result<&Analysis, &ImageError>> =
                    results.iter().map(Result::as_ref).collect();
                each(chunks[want], &refs)?;
                bar.inc(chunks[want].len() as u64);
                want += 1;
            }
            Ok(())
        });
        stop.store(true, Ordering::Relaxed);
        result
    })?;
    bar.finish_and_clear();
    Ok(())
}

/// `items` cut into batches of at most `max_batch` for `lanes` threads taking them in turn:
/// each batch a `2 * lanes`-th of what is left, so the batches shrink towards the end and the
/// lanes finish together (a last full batch alone on one lane left the other core idle: a
/// tenth of a 60-photo `identify`). One lane takes full batches.
fn guided_chunks<T>(items: &[T], max_batch: usize, lanes: usize) -> Vec<&[T]> {
    let max_batch = max_batch.max(1);
    if lanes <= 1 {
        return items.chunks(max_batch).collect();
    }
    let mut chunks = Vec::new();
    let mut rest = items;
    while !rest.is_empty() {
        let size = rest.len().div_ceil(2 * lanes).clamp(1, max_batch);
        let (chunk, tail) = rest.split_at(size);
        chunks.push(chunk);
        rest = tail;
    }
    chunks
}

/// One batch: its files read (a file that cannot be read gets its error) and analysed.
fn analyze_chunk(engine: &Engine, chunk: &[PathBuf]) -> Vec<Result<Analysis, ImageError>> {
    let read: Vec<Result<Vec<u8>, ImageError>> = chunk
        .iter()
        .map(|p| {
            std::fs::read(p).map_err(|e| {
                ImageError::new(ErrorKind::Io, format!("cannot read {}: {e}", p.display()))
            })
        })
        .collect();
    let ok: Vec<&[u8]> = read.iter().filter_map(|r| r.as_deref().ok()).collect();
    let (analysed, _) = engine.analyze(&ok);
    let mut analysed = analysed.into_iter();
    read.into_iter()
        .map(|r| {
            r.and_then(|_| {
                analysed
                    .next()
                    .expect("engine.analyze answers one result per image")
            })
        })
        .collect()
}

pub fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn load_gallery_for(engine: &Engine, path: &Path, create: bool) -> Result<Gallery> {
    let model = engine.models().recognition_id();
    if !path.exists() {
        if create {
            return Ok(Gallery::new(model));
        }
        bail!(
            "gallery {} does not exist (create it with `facerec enroll`)",
            path.display()
        );
    }
    let g = Gallery::load(path)?;
    if g.model_id() != model {
        bail!(
            "gallery {} was built with another recognition model ({}), not the loaded one ({})",
            path.display(),
            g.model_id(),
            model
        );
    }
    Ok(g)
}

pub fn print_reports(
    engine: &Engine,
    images: &[PathBuf],
    gallery: Option<&Gallery>,
    threshold: Threshold,
    json: bool,
    embeddings: bool,
) -> Result<ExitCode> {
    let mut failed = 0usize;
    let mut out = BufWriter::new(std::io::stdout().lock());
    analyze_batches(engine, images, |paths, results| {
        // Every face of the batch in one search.
        let matches = report::match_faces(engine.matcher(), gallery, results);
        for ((path, result), found) in paths.iter().zip(results).zip(matches) {
            let r = report::report(
                &path.display().to_string(),
                *result,
                found,
                threshold,
                embeddings,
            );
            if r.error.is_some() {
                failed += 1;
            }
            if json {
                writeln!(out, "{}", serde_json::to_string(&r)?)?;
            } else {
                write_plain(&mut out, path, &r, embeddings)?;
            }
        }
        Ok(())
    })?;
    out.flush()?;
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn write_plain(out: &mut impl Write, path: &Path, r: &ImageReport, embeddings: bool) -> Result<()> {
    if let Some(e) = &r.error {
        eprintln!("{}: {e}", path.display());
        return Ok(writeln!(out, "{}:error", stem(path))?);
    }
    if !embeddings {
        return Ok(writeln!(
            out,
            "{}:{}",
            stem(path),
            r.best_name().unwrap_or("error")
        )?);
    }
    for f in r.faces.iter().flatten() {
        let [x, y, w, h] = f.bbox;
        let e: Vec<String> = f
            .embedding
            .iter()
            .flatten()
            .map(|v| format!("{v:.6}"))
            .collect();
        writeln!(
            out,
            "{}\t{x},{y},{w},{h}\t{:.3}\t{}",
            stem(path),
            f.score,
            e.join(",")
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::guided_chunks;

    #[test]
    fn guided_chunks_cover_every_item_in_order_and_shrink_towards_the_end() {
        let items: Vec<usize> = (0..60).collect();
        let chunks = guided_chunks(&items, 16, 2);
        let sizes: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
        assert_eq!(chunks.concat(), items);
        assert!(sizes.iter().all(|&n| (1..=16).contains(&n)), "{sizes:?}");
        assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
        assert_eq!(sizes[0], 15, "{sizes:?}");
        assert_eq!(*sizes.last().unwrap_or(&0), 1, "{sizes:?}");

        // Large runs start at the batch bound; one lane takes full batches.
        assert_eq!(guided_chunks(&items, 4, 2)[0].len(), 4);
        let one: Vec<usize> = guided_chunks(&items, 16, 1)
            .iter()
            .map(|c| c.len())
            .collect();
        assert_eq!(one, [16, 16, 16, 12]);
        assert!(guided_chunks::<usize>(&[], 16, 2).is_empty());
        assert_eq!(guided_chunks(&items[..1], 0, 2).len(), 1);
    }
}
