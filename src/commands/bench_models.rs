//! `facerec bench models`: throughput of each network, of the whole pipeline and of gallery
//! search, per batch size, on the chosen backend, from the one `facerec` binary (so a GPU
//! machine needs nothing else). Timing is `facerec_engine::tune::measure` (one unmeasured
//! warm-up call, then calls until `--seconds` have passed, results read back inside each
//! call); `--autotune` prints what `--batch auto` would choose (`tune::autotune`).
//!
//! Inputs are real: the networks get the parity PNGs in `<models>/parity/` (aligned chips,
//! letterboxed detector inputs, landmark crops, cycled to fill a batch); the pipeline gets
//! encoded photos (`--images`); search runs against `--gallery-faces` rows made from the
//! parity descriptors with small perturbations (`facerec_loadgen::synthetic`).

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use facerec_engine::gallery::{DIM, Gallery};
use facerec_engine::gpu::{Gpu, GpuGallery};
use facerec_engine::models::{self, Models};
use facerec_engine::tune::{self, Sample, TuneOptions, TuneReport};
use facerec_engine::{Engine, EngineConfig, prep};
use facerec_loadgen::{self as loadgen, synthetic};
use serde::Serialize;

use crate::cli::bench::{ModelsArgs, Net};

/// The JSON report; the shape is shared with the PyTorch peer (rows keyed by `net`,
/// `dtype`, `batch`).
#[derive(Debug, Serialize)]
struct Report {
    tool: &'static str,
    backend: String,
    adapter: String,
    date: String,
    results: Vec<Row>,
    #[serde(skip_serializing_if = "Option::is_none")]
    autotune: Option<TuneReport>,
}

#[derive(Debug, Serialize)]
struct Row {
    net: String,
    dtype: &'static str,
    batch: usize,
    items_per_s: f64,
    median_ms: f64,
    iters: usize,
    warmup_s: f64,
    /// `pipeline` only: faces found per second (items are images).
    #[serde(skip_serializing_if = "Option::is_none")]
    faces_per_s: Option<f64>,
    /// `search_gpu` only: the adapter the kernel ran on (may differ from the networks').
    #[serde(skip_serializing_if = "Option::is_none")]
    adapter: Option<String>,
}

impl Row {
    fn new(net: &str, s: Sample) -> Self {
        Self {
            net: net.to_string(),
            dtype: "f32",
            batch: s.batch,
            items_per_s: s.items_per_s,
            median_ms: s.median_ms,
            iters: s.iters,
            warmup_s: s.warmup_s,
            faces_per_s: None,
            adapter: None,
        }
    }
}

pub fn run(args: &ModelsArgs) -> Result<ExitCode> {
    anyhow::ensure!(
        args.seconds.is_finite() && args.seconds >= 0.0,
        "--seconds must be a non-negative number"
    );
    let budget = Duration::from_secs_f64(args.seconds);
    let batches = &args.batches.0;
    let nets: Vec<Net> = match (&args.nets, args.autotune) {
        (Some(n), _) => n.0.clone(),
        (None, true) => Vec::new(),
        (None, false) => Net::ALL.to_vec(),
    };
    let dir = crate::support::engine::models_dir(&args.models)?;
    let mut config = EngineConfig::new(&dir);
    config.backend = args.backend;
    config.detector = args.detector;
    config.recognizer = args.recognizer.weights;
    config.device_prep = args.device_prep;
    // The pipeline hands each network up to the largest batch measured.
    config.max_batch = batches.iter().copied().max().unwrap_or(1);
    let engine = Engine::new(config).context("loading the models")?;
    let backend = engine.models().backend().clone();
    eprintln!("backend: {} ({})", backend.name, backend.adapter);
    let mut rows = Vec::new();
    for &net in &nets {
        match net {
            Net::Recognition | Net::Ssd | Net::Tiny | Net::Landmarks => {
                let input = NetInput::load(&dir, net)?;
                for &b in batches {
                    let s = input.time(engine.models(), b, budget)?;
                    rows.push(progress(Row::new(net.name(), s)));
                }
            }
            Net::Pipeline => {
                let images = pipeline_images(&dir, args.images.as_deref())?;
                for &b in batches {
                    rows.push(progress(time_pipeline(&engine, &images, b, budget)?));
                }
            }
            Net::Search => rows.extend(time_search(&dir, args.gallery_faces, batches, budget)?),
        }
    }
    let autotune = if args.autotune {
        let report = tune::autotune(engine.models(), args.detector, &TuneOptions::default())
            .context("autotune")?;
        Some(report)
    } else {
        None
    };
    if !rows.is_empty() {
        print!("{}", markdown(&rows));
    }
    if let Some(t) = &autotune {
        print!("{}", autotune_markdown(t));
    }
    if let Some(path) = &args.json {
        let report = Report {
            tool: "facerec",
            backend: backend.name.to_string(),
            adapter: backend.adapter.clone(),
            date: utc_now(),
            results: rows,
            autotune,
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn progress(row: Row) -> Row {
    let faces = row
        .faces_per_s
        .map(|f| format!(", {f:.1} faces/s"))
        .unwrap_or_default();
    eprintln!(
        "{} batch {}: {:.1} items/s{faces}, median {:.2} ms, {} iters (warm-up {:.2} s)",
        row.net, row.batch, row.items_per_s, row.median_ms, row.iters, row.warmup_s
    );
    row
}

/// A network's real parity inputs, planar, cycled to fill a batch.
struct NetInput {
    net: Net,
    planar: Vec<Vec<f32>>,
}

impl NetInput {
    fn load(models: &Path, net: Net) -> Result<Self> {
        let (files, side): (&[&str], u32) = match net {
            Net::Recognition => (
                &[
                    "recognition_input_0.png",
                    "recognition_input_1.png",
                    "recognition_input_2.png",
                ],
                models::RECOGNITION_SIZE,
            ),
            Net::Ssd => (&["ssd_input.png"], models::SSD_SIZE),
            Net::Tiny => (&["tiny_input.png"], models::TINY_SIZE),
            Net::Landmarks => (
                &["landmark_input_0.png", "landmark_input_1.png"],
                models::LANDMARK_SIZE,
            ),
            Net::Pipeline | Net::Search => bail!("{} has no network input", net.name()),
        };
        let planar = files
            .iter()
            .map(|f| -> Result<Vec<f32>> {
                let path = models.join("parity").join(f);
                let img = image::open(&path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .to_rgb8();
                anyhow::ensure!(
                    img.dimensions() == (side, side),
                    "{} is {}x{}, the network takes {side}x{side}",
                    path.display(),
                    img.width(),
                    img.height()
                );
                Ok(prep::to_planar(&img))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { net, planar })
    }

    fn time(&self, models: &Models, batch: usize, budget: Duration) -> Result<Sample> {
        let data: Vec<f32> = (0..batch)
            .flat_map(|i| self.planar[i % self.planar.len()].iter().copied())
            .collect();
        let sample = tune::measure(batch, budget, || {
            let input = data.clone();
            match self.net {
                Net::Recognition => models.embed(input, batch).map(drop),
                Net::Ssd => models.ssd(input, batch).map(drop),
                Net::Tiny => models.tiny(input, batch).map(drop),
                _ => models.landmarks(input, batch).map(drop),
            }
        })?;
        Ok(sample)
    }
}

/// The encoded photos for `pipeline`: image files only (by extension).
fn pipeline_images(models: &Path, images: Option<&Path>) -> Result<Vec<Vec<u8>>> {
    let source = images
        .map(Path::to_path_buf)
        .unwrap_or_else(|| models.join("parity"));
    let items = loadgen::load(&source, None)?;
    let photos: Vec<Vec<u8>> = items
        .into_iter()
        .filter(|i| {
            let ext = Path::new(&i.filename)
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase());
            matches!(
                ext.as_deref(),
                Some("png" | "jpg" | "jpeg" | "webp" | "bmp" | "gif")
            )
        })
        .map(|i| i.bytes.to_vec())
        .collect();
    if photos.is_empty() {
        bail!(
            "no images (png, jpg, webp, bmp, gif) in {}",
            source.display()
        );
    }
    Ok(photos)
}

/// `Engine::analyze` on `batch` photos per call (cycled); items are images.
fn time_pipeline(
    engine: &Engine,
    photos: &[Vec<u8>],
    batch: usize,
    budget: Duration,
) -> Result<Row> {
    let inputs: Vec<&[u8]> = (0..batch).map(|i| &photos[i % photos.len()][..]).collect();
    let mut faces = 0usize;
    let mut failed = None;
    let sample = tune::measure(batch, budget, || {
        let (results, _) = engine.analyze(&inputs);
        faces = 0;
        for r in &results {
            match r {
                Ok(a) => faces += a.faces.len(),
                Err(e) => failed = Some(e.to_string()),
            }
        }
        if results.iter().all(Result::is_err) {
            return Err(anyhow::anyhow!(
                "no image of the batch could be analysed: {}",
                failed.clone().unwrap_or_default()
            ));
        }
        Ok(())
    })?;
    if let Some(e) = failed {
        eprintln!("pipeline: some images failed and count as images without faces: {e}");
    }
    let host_prep = engine.models().backend().name == "wgpu" && !engine.prep_on_device();
    let name = if host_prep {
        "pipeline_host_prep"
    } else {
        "pipeline"
    };
    let mut row = Row::new(name, sample);
    row.faces_per_s = Some(sample.items_per_s * faces as f64 / batch as f64);
    Ok(row)
}

/// `batch` queries per call against `faces` rows: the WGSL kernel (`GpuGallery`, k = 1,
/// queries up and the nearest rows back inside the timer) when a wgpu adapter exists, and
/// `Gallery::nearest` on the CPU.
fn time_search(
    models: &Path,
    faces: usize,
    batches: &[usize],
    budget: Duration,
) -> Result<Vec<Row>> {
    anyhow::ensure!(faces > 0, "--gallery-faces must be at least 1");
    let base = synthetic::parity_descriptors(models).map_err(anyhow::Error::msg)?;
    eprintln!("search: building a gallery of {faces} faces");
    let mut gallery = Gallery::new("bench");
    let names: Vec<String> = (0..base.len()).map(|i| format!("parity{i}")).collect();
    for (i, row) in synthetic::perturbed_rows(&base, faces, 0).enumerate() {
        gallery.add(&names[i % names.len()], &row);
    }
    let on_gpu = match Gpu::open() {
        Ok(gpu) => {
            let adapter = gpu.adapter.clone();
            let (matrix, norms) = gallery.rows();
            let g = GpuGallery::upload(gpu, &matrix, &norms).context("uploading the gallery")?;
            Some((g, adapter))
        }
        Err(e) => {
            eprintln!("search_gpu skipped: {e}");
            None
        }
    };
    let mut rows = Vec::new();
    for &b in batches {
        let queries: Vec<f32> = synthetic::perturbed_rows(&base, b, 1).flatten().collect();
        if let Some((g, adapter)) = &on_gpu {
            let s = tune::measure(b, budget, || g.search(&queries, 1).map(drop))?;
            let mut row = Row::new("search_gpu", s);
            row.adapter = Some(adapter.clone());
            rows.push(progress(row));
        }
        let refs: Vec<&[f32]> = queries.chunks_exact(DIM).collect();
        let s = tune::measure::<anyhow::Error>(b, budget, || {
            gallery.nearest(&refs);
            Ok(())
        })?;
        rows.push(progress(Row::new("search_cpu", s)));
    }
    Ok(rows)
}

fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| net | dtype | batch | items/s | median ms per batch | iters | warm-up s | faces/s |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in rows {
        let faces = r.faces_per_s.map(|f| format!("{f:.1}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} | {:.2} | {} | {:.2} | {faces} |",
            r.net, r.dtype, r.batch, r.items_per_s, r.median_ms, r.iters, r.warmup_s
        );
    }
    out
}

fn autotune_markdown(t: &TuneReport) -> String {
    let mut out = format!(
        "\nBatch autotune (recognition + {}): chosen batch {} ({})\n\n\
         | batch | recognition items/s | {} items/s | both items/s | ms per batch |\n\
         | ---: | ---: | ---: | ---: | ---: |\n",
        t.detector, t.chosen, t.stop, t.detector
    );
    for p in &t.points {
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            p.batch, p.recognition.items_per_s, p.detector.items_per_s, p.items_per_s, p.latency_ms
        );
    }
    out
}

/// The current time as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_iso() {
        let d = utc_now();
        assert_eq!(d.len(), 20, "{d}");
        assert!(d.ends_with('Z') && d.as_bytes()[10] == b'T', "{d}");
    }
}
