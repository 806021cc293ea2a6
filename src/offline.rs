//! The offline commands: `enroll`, `identify`, `verify`, `embed`. Images are read and
//! analysed in batches (one forward pass per network per batch); a progress bar on
//! stderr follows long runs; a bad image is reported on its own line and the run goes on,
//! ending with exit status 1.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use facerec_engine::report::{self, ImageReport};
use facerec_engine::tune::{self, TuneOptions};
use facerec_engine::{
    Analysis, DecodeLimits, Engine, EngineConfig, ErrorKind, Gallery, ImageError, Threshold,
};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{BatchSize, Cli, Command, EngineArgs};

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Enroll {
            engine,
            gallery,
            dir,
            name,
            images,
            json,
        } => {
            let jobs = match dir {
                Some(dir) => enroll_jobs_from_dir(&dir)?,
                None => {
                    let name = name.context("a NAME is required without --dir")?;
                    images.into_iter().map(|p| (name.clone(), p)).collect()
                }
            };
            enroll(&engine, &gallery, jobs, json)
        }
        Command::Identify {
            engine,
            gallery,
            json,
            images,
        } => identify(&engine, &gallery, &images, json),
        Command::Verify {
            engine,
            json,
            pairs,
            image_a,
            image_b,
        } => {
            let pairs = match pairs {
                Some(csv) => read_pairs(&csv)?,
                None => vec![(
                    image_a.context("IMAGE_A is required")?,
                    image_b.context("IMAGE_B is required")?,
                )],
            };
            verify(&engine, &pairs, json)
        }
        Command::Embed {
            engine,
            json,
            images,
        } => embed(&engine, &images, json),
        Command::Worker {
            engine,
            aws,
            worker,
        } => crate::serve::worker(&engine, &aws, &worker),
        Command::Infra { aws, action } => crate::infra::run(&aws, &action),
        Command::Up {
            engine,
            edge,
            worker,
            data,
            workers,
            max_workers,
            check_interval,
            max_retries,
            keep_uploads,
            retention_hours,
        } => crate::serve::up(
            &engine,
            &edge,
            &worker,
            &crate::serve::UpArgs {
                data,
                workers,
                max_workers,
                check_interval,
                max_retries,
                keep_uploads,
                retention_hours,
            },
        ),
        Command::Scaler {
            command: Some(crate::scale::ScalerCommand::Simulate(sim)),
            ..
        } => crate::scale::simulate_cmd(&sim),
        Command::Scaler {
            command: None,
            args,
        } => crate::scale::scaler_cmd(&args),
        Command::Bench {
            command: Some(crate::bench::BenchCommand::Sweep(sweep)),
            ..
        } => crate::sweep::sweep_cmd(&sweep),
        Command::Bench {
            command: Some(crate::bench::BenchCommand::Models(models)),
            ..
        } => crate::bench_models::models_cmd(&models),
        Command::Bench {
            command: None,
            args,
        } => crate::bench::bench_cmd(&args),
        Command::Edge {
            aws,
            edge,
            models,
            recognizer,
            threshold,
        } => crate::serve::edge(&aws, &edge, &models, recognizer, threshold),
    }
}

/// The models directory: the flag, else `./models`, else the source tree's `models/`.
pub fn models_dir(arg: &Option<PathBuf>) -> PathBuf {
    if let Some(dir) = arg {
        return dir.clone();
    }
    let local = PathBuf::from("models");
    if local.join("face_recognition.onnx").exists() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

pub fn build_engine(args: &EngineArgs) -> Result<Engine> {
    let mut config = EngineConfig::new(models_dir(&args.models));
    config.backend = args.backend;
    config.detector = args.detector;
    config.recognizer = args.recognizer;
    config.min_score = args.min_score;
    if args.tiny_max < 128 || !args.tiny_max.is_multiple_of(32) {
        bail!(
            "--tiny-max must be a multiple of 32, at least 128 (got {})",
            args.tiny_max
        );
    }
    config.tiny_max = args.tiny_max;
    config.max_batch = match args.batch {
        BatchSize::Fixed(n) => n.max(1),
        BatchSize::Auto => 1,
    };
    config.device_prep = args.device_prep;
    config.precision = args.precision;
    config.limits = DecodeLimits {
        max_pixels: args.max_pixels,
        ..DecodeLimits::default()
    };
    config.gallery_search = args.gallery_search;
    let mut engine = Engine::new(config).context("loading the models")?;
    if args.batch == BatchSize::Auto {
        let report = tune::autotune(engine.models(), args.detector, &TuneOptions::default())
            .context("timing the networks for --batch auto")?;
        tracing::info!(
            batch = report.chosen,
            detector = report.detector,
            stop = %report.stop,
            points = report.points.len(),
            "batch autotune chose a batch size"
        );
        engine.set_max_batch(report.chosen);
    }
    Ok(engine)
}

fn progress(total: usize) -> ProgressBar {
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
fn analyze_paths(
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
fn analyze_batches(
    engine: &Engine,
    paths: &[PathBuf],
    mut each: impl FnMut(&[PathBuf], &[Result<&Analysis, &ImageError>]) -> Result<()>,
) -> Result<()> {
    let bar = progress(paths.len());
    let batch = engine.config().max_batch;
    for chunk in paths.chunks(batch) {
        let read: Vec<Result<Vec<u8>, ImageError>> = chunk
            .iter()
            .map(|p| {
                std::fs::read(p).map_err(|e| {
                    ImageError::new(ErrorKind::Io, format!("cannot read {}: {e}", p.display()))
                })
            })
            .collect();
        let ok: Vec<&[u8]> = read.iter().filter_map(|r| r.as_deref().ok()).collect();
        let (mut analysed, _) = engine.analyze(&ok);
        analysed.reverse();
        let results = read
            .iter()
            .map(|r| match r {
                Ok(_) => analysed.pop().context("one result per image"),
                Err(e) => Ok(Err(e.clone())),
            })
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<Result<&Analysis, &ImageError>> =
            results.iter().map(Result::as_ref).collect();
        each(chunk, &refs)?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn load_gallery_for(engine: &Engine, path: &Path, create: bool) -> Result<Gallery> {
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

fn enroll_jobs_from_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut jobs = Vec::new();
    let mut people: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .collect();
    people.sort_by_key(|e| e.file_name());
    for person in people {
        let name = person.file_name().to_string_lossy().into_owned();
        let mut files: Vec<PathBuf> = std::fs::read_dir(person.path())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        jobs.extend(files.into_iter().map(|f| (name.clone(), f)));
    }
    if jobs.is_empty() {
        bail!("no images found in the sub-folders of {}", dir.display());
    }
    Ok(jobs)
}

fn enroll(
    args: &EngineArgs,
    gallery_path: &Path,
    jobs: Vec<(String, PathBuf)>,
    json: bool,
) -> Result<ExitCode> {
    let engine = build_engine(args)?;
    let mut gallery = load_gallery_for(&engine, gallery_path, true)?;
    let paths: Vec<PathBuf> = jobs.iter().map(|j| j.1.clone()).collect();
    let mut names = jobs.iter().map(|j| j.0.clone());
    let (mut added, mut failed) = (0usize, 0usize);
    let mut out = BufWriter::new(std::io::stdout().lock());
    analyze_paths(&engine, &paths, |path, result| {
        let name = names.next().unwrap_or_default();
        let outcome: Result<(), ImageError> = match result {
            Err(e) => Err(e.clone()),
            Ok(a) => match a.faces.first() {
                Some(face) => {
                    gallery.add_face(&name, &face.embedding, face.bbox.side());
                    Ok(())
                }
                None => Err(ImageError::new(
                    ErrorKind::Unusable,
                    "no face found to enroll",
                )),
            },
        };
        match &outcome {
            Ok(()) => added += 1,
            Err(e) => {
                failed += 1;
                if !json {
                    eprintln!("{}: {}", path.display(), e);
                }
            }
        }
        if json {
            let line = match outcome {
                Ok(()) => {
                    serde_json::json!({"image": path.display().to_string(), "identity": name, "enrolled": true})
                }
                Err(e) => {
                    serde_json::json!({"image": path.display().to_string(), "identity": name, "error": e})
                }
            };
            writeln!(out, "{line}")?;
        }
        Ok(())
    })?;
    gallery.save(gallery_path)?;
    if !json {
        writeln!(
            out,
            "enrolled {added} face(s), {failed} failed; gallery {} now has {} identities, {} faces",
            gallery_path.display(),
            gallery.identities().len(),
            gallery.len()
        )?;
    }
    out.flush()?;
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn identify(
    args: &EngineArgs,
    gallery_path: &Path,
    images: &[PathBuf],
    json: bool,
) -> Result<ExitCode> {
    let engine = build_engine(args)?;
    let gallery = load_gallery_for(&engine, gallery_path, false)?;
    print_reports(&engine, images, Some(&gallery), args.threshold, json, false)
}

fn embed(args: &EngineArgs, images: &[PathBuf], json: bool) -> Result<ExitCode> {
    let engine = build_engine(args)?;
    print_reports(&engine, images, None, args.threshold, json, true)
}

fn print_reports(
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

fn read_pairs(csv: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let text =
        std::fs::read_to_string(csv).with_context(|| format!("reading {}", csv.display()))?;
    let base = csv.parent().unwrap_or(Path::new("."));
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let mut parts = line.split(',').map(str::trim);
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => {
                    let resolve = |p: &str| {
                        let p = PathBuf::from(p);
                        if p.is_absolute() || p.exists() {
                            p
                        } else {
                            base.join(p)
                        }
                    };
                    Ok((resolve(a), resolve(b)))
                }
                _ => bail!(
                    "{}:{}: expected two image paths separated by a comma",
                    csv.display(),
                    i + 1
                ),
            }
        })
        .collect()
}

fn verify(args: &EngineArgs, pairs: &[(PathBuf, PathBuf)], json: bool) -> Result<ExitCode> {
    let engine = build_engine(args)?;
    // Every distinct image is analysed once, in batches.
    let mut unique: Vec<PathBuf> = pairs
        .iter()
        .flat_map(|(a, b)| [a.clone(), b.clone()])
        .collect();
    unique.sort();
    unique.dedup();
    // The largest face of each image: its descriptor and size (`FaceBox::side`).
    type Found = Result<(Vec<f32>, f32), ImageError>;
    let mut found: std::collections::HashMap<PathBuf, Found> = std::collections::HashMap::new();
    analyze_paths(&engine, &unique, |path, result| {
        let emb = result.map_err(Clone::clone).and_then(|a| {
            a.faces
                .first()
                .map(|f| (f.embedding.clone(), f.bbox.side()))
                .ok_or_else(|| ImageError::new(ErrorKind::Unusable, "no face found"))
        });
        found.insert(path.to_path_buf(), emb);
        Ok(())
    })?;
    let mut failed = 0usize;
    let mut out = BufWriter::new(std::io::stdout().lock());
    for (a, b) in pairs {
        let ea = found
            .get(a)
            .cloned()
            .unwrap_or_else(|| Err(ImageError::new(ErrorKind::Io, "missing")));
        let eb = found
            .get(b)
            .cloned()
            .unwrap_or_else(|| Err(ImageError::new(ErrorKind::Io, "missing")));
        match (ea, eb) {
            (Ok((x, sx)), Ok((y, sy))) => {
                let d = report::distance(&x, &y);
                let rule = args.threshold;
                let same = rule.is_same(d, sx, sy);
                if json {
                    let line = serde_json::json!({
                        "a": a, "b": b, "same": same, "distance": d,
                        "threshold": rule.for_sides(sx, sy),
                        "confidence": rule.confidence(d, sx, sy),
                    });
                    writeln!(out, "{line}")?;
                } else {
                    let verdict = if same { "same" } else { "different" };
                    writeln!(out, "{},{},{verdict},{d:.4}", a.display(), b.display())?;
                }
            }
            (ea, eb) => {
                failed += 1;
                let (which, e) = match (ea, eb) {
                    (Err(e), _) => (a, e),
                    (_, Err(e)) => (b, e),
                    _ => unreachable!("one side failed"),
                };
                if json {
                    let line = serde_json::json!({"a": a, "b": b, "image": which, "error": e});
                    writeln!(out, "{line}")?;
                } else {
                    eprintln!("{}: {e}", which.display());
                    writeln!(out, "{},{},error,", a.display(), b.display())?;
                }
            }
        }
    }
    out.flush()?;
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
