//! `facerec bench faces`: the face store at scale, beside the gallery file of earlier
//! versions in the same run.
//!
//! A synthetic gallery (`--faces` unit vectors, `--per-identity` faces per name) is written
//! once to each store: the gallery file, SQLite under `--dir`, and PostgreSQL when
//! `--database-url` names an empty database. Then, per store:
//! - **one enrolment** (one face), `--enrolments` times: what a serving process does — for
//!   the file, copy the gallery, add the face and write the file again (the earlier
//!   versions' `GalleryHandle::update`); for a face store, the transaction and the change
//!   feed applied to the gallery in memory (`GalleryHandle::enroll`). Bytes written are
//!   this process's `write` calls (`/proc/self/io` `wchar`; PostgreSQL's are the server's);
//! - **start-up**, twice, each in a fresh child process: the time to a loaded gallery and
//!   the child's peak RSS (`VmHWM`);
//! - **seen faces** (face stores only): `--seen` faces recorded 64 per transaction, as
//!   workers record an engine batch's faces, spread over the gallery's identities (one of
//!   them in 1% of all); then "where does this person appear?" (`appearances`, a page of
//!   100) for 20 identities, and for the frequent one its first page and a page from the
//!   middle of its list; then **re-tagging**: one new identity enrolled, whom one seen face
//!   in 1000 resembles (unknown until then), and the re-tagger's passes timed until every
//!   seen face has met it (`facerec_seams::retag`); and a **search**: the 100 seen faces
//!   nearest to the newcomer's face (`facerec_seams::faces::search`, exact).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use facerec_engine::Threshold;
use facerec_engine::gallery::{DIM, Gallery};
use facerec_seams::faces::{self, FaceStore, NewFace, SeenFace};
use facerec_seams::retag::Retagger;
use facerec_seams::{FsStore, GalleryHandle};

use crate::cli::bench::FacesArgs;
use crate::support::runtime::runtime;

/// The model id of the synthetic embeddings.
const MODEL: &str = "bench-faces";

pub fn run(args: &FacesArgs) -> Result<ExitCode> {
    if let Some(target) = &args.child_load {
        return child_load(target);
    }
    anyhow::ensure!(
        args.faces > 0 && args.per_identity > 0,
        "--faces and --per-identity must be positive"
    );
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => tempfile_dir()?,
    };
    eprintln!("building a synthetic gallery of {} faces", args.faces);
    let gallery = synthetic(args.faces, args.per_identity);
    let mut rows = vec![file_row(args, &dir, &gallery)?];
    let mut seen_rows = Vec::new();
    let sqlite = dir.join("faces.db");
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", sqlite.display()));
    }
    let sqlite = format!("sqlite:{}", sqlite.display());
    rows.push(store_row(args, &dir, &gallery, &sqlite)?);
    seen_rows.extend(seen_row(args, &sqlite)?);
    if let Some(url) = args.database.url.as_deref().filter(|u| !u.is_empty()) {
        rows.push(store_row(args, &dir, &gallery, url)?);
        seen_rows.extend(seen_row(args, url)?);
    }
    println!(
        "| store ({} faces, {} per identity) | write it all once | one enrolment: median | max | bytes written | start-up: first | again | peak RSS |",
        args.faces, args.per_identity
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in rows {
        println!(
            "| {} | {:.1} s | {:.1} ms | {:.1} ms | {} | {:.2} s | {:.2} s | {:.0} MB |",
            r.store,
            r.write_all.as_secs_f64(),
            r.enrol_median.as_secs_f64() * 1e3,
            r.enrol_max.as_secs_f64() * 1e3,
            r.bytes.map_or("(server side)".to_string(), human_bytes),
            r.starts[0].0,
            r.starts[1].0,
            r.starts[0].1.max(r.starts[1].1),
        );
    }
    if !seen_rows.is_empty() {
        println!();
        println!(
            "| store ({} seen faces) | recorded | where a person appears: median | max | the frequent one ({}): first page | a middle page | re-tag after one enrolment | faces tagged | search, k = 100 |",
            args.seen,
            args.seen / 100
        );
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for r in seen_rows {
            println!(
                "| {} | {:.0} faces/s | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.2} s | {} | {:.2} s |",
                r.store,
                r.per_s,
                ms(r.median),
                ms(r.max),
                ms(r.frequent_first),
                ms(r.frequent_middle),
                r.retag.as_secs_f64(),
                r.retagged,
                r.search.as_secs_f64()
            );
        }
    }
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(ExitCode::SUCCESS)
}

struct Row {
    store: String,
    write_all: Duration,
    enrol_median: Duration,
    enrol_max: Duration,
    /// Bytes written per enrolment (median), when this process writes them.
    bytes: Option<u64>,
    /// (seconds, peak RSS MB) of two starts.
    starts: [(f64, f64); 2],
}

/// The earlier versions' gallery file.
fn file_row(args: &FacesArgs, dir: &Path, gallery: &Gallery) -> Result<Row> {
    let path = dir.join("gallery.frg");
    eprintln!("gallery file: writing {}", path.display());
    let t = Instant::now();
    gallery.save(&path)?;
    let write_all = t.elapsed();
    let mut times = Vec::new();
    let mut bytes = Vec::new();
    // Each rewrite costs as much as the first: a few suffice.
    for k in 0..args.enrolments.clamp(1, 5) {
        let before = wchar();
        let t = Instant::now();
        let mut next = gallery.clone();
        next.add_face(&format!("new{k}"), &vector(u64::MAX - k as u64), 120.0);
        next.save(&path)?;
        times.push(t.elapsed());
        bytes.push(wchar().saturating_sub(before));
    }
    let starts = [
        child(&path.display().to_string())?,
        child(&path.display().to_string())?,
    ];
    Ok(summarise(
        "gallery file (earlier versions)",
        write_all,
        times,
        Some(bytes),
        starts,
    ))
}

/// A face store at `url`: bulk-written, then enrolments and starts.
fn store_row(args: &FacesArgs, dir: &Path, gallery: &Gallery, url: &str) -> Result<Row> {
    let label = faces::redact(url);
    let rt = runtime()?;
    let blobs = FsStore::new(dir.join("blobs"))?;
    let write_all = rt.block_on(async {
        let store = faces::open(url, MODEL).await?;
        let status = store.status().await?;
        if status.faces > 0 {
            bail!(
                "{label} already holds {} faces: give the bench an empty database",
                status.faces
            );
        }
        eprintln!("{label}: writing {} faces", gallery.len());
        let t = Instant::now();
        store.import_once(gallery).await?;
        Ok(t.elapsed())
    })?;
    let starts = [child(url)?, child(url)?];
    let server_side = url.starts_with("postgres");
    let (times, bytes) = rt.block_on(async {
        let handle = GalleryHandle::with_store(MODEL, faces::open(url, MODEL).await?);
        handle.load(&blobs).await?;
        let (mut times, mut bytes) = (Vec::new(), Vec::new());
        for k in 0..args.enrolments.max(1) {
            let face = NewFace {
                embedding: vector(u64::MAX - k as u64),
                side: 120.0,
                source: None,
            };
            let before = wchar();
            let t = Instant::now();
            handle.enroll(&blobs, &format!("new{k}"), &[face]).await?;
            times.push(t.elapsed());
            bytes.push(wchar().saturating_sub(before));
        }
        anyhow::ensure!(handle.get().len() == gallery.len() + args.enrolments.max(1));
        Ok::<_, anyhow::Error>((times, bytes))
    })?;
    Ok(summarise(
        &label,
        write_all,
        times,
        (!server_side).then_some(bytes),
        starts,
    ))
}

struct SeenRow {
    store: String,
    per_s: f64,
    median: Duration,
    max: Duration,
    frequent_first: Duration,
    frequent_middle: Duration,
    retag: Duration,
    retagged: usize,
    search: Duration,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Seen faces recorded into the store at `url` (holding the bench's gallery), then the
/// "where does this person appear?" queries timed; `None` with `--seen 0`.
fn seen_row(args: &FacesArgs, url: &str) -> Result<Option<SeenRow>> {
    if args.seen == 0 {
        return Ok(None);
    }
    let label = faces::redact(url);
    let identities = (args.faces / args.per_identity.max(1)).max(1);
    runtime()?.block_on(async {
        let store = faces::open(url, MODEL).await?;
        // Matched against the gallery as it is.
        let at = store.status().await?.seq;
        eprintln!("{label}: recording {} seen faces", args.seen);
        let t = Instant::now();
        let mut next = 0;
        while next < args.seen {
            let end = (next + 64).min(args.seen);
            let batch: Vec<SeenFace> = (next..end).map(|i| seen_face(i, identities, at)).collect();
            store.record_seen(&batch).await?;
            next = end;
            if next.is_multiple_of(100_000) {
                eprintln!("{label}: {next} seen faces recorded");
            }
        }
        let per_s = args.seen as f64 / t.elapsed().as_secs_f64();
        let mut times = Vec::new();
        for k in 0..20 {
            let name = format!("person{}", 1 + (k * 7919) % (identities - 1).max(1));
            let t = Instant::now();
            let page = store.appearances(&name, None, 100).await?;
            times.push(t.elapsed());
            anyhow::ensure!(!page.is_empty(), "{name} appears nowhere");
        }
        times.sort();
        let (frequent_first, frequent_middle) = frequent_pages(store.as_ref(), args.seen).await?;
        let (retag, retagged) = retag_after_enrolment(url, args.seen).await?;
        let search = search_newcomer(store.as_ref(), args.seen).await?;
        Ok(Some(SeenRow {
            store: label,
            per_s,
            median: times[times.len() / 2],
            max: times[times.len() - 1],
            frequent_first,
            frequent_middle,
            retag,
            retagged,
            search,
        }))
    })
}

/// The seed of the identity enrolled before re-tagging, and how often a seen face
/// resembles it.
const NEWCOMER: u64 = 1 << 50;
const NEWCOMER_EVERY: usize = 1000;

/// Enrols the newcomer and times the re-tagger's passes until every seen face has met it;
/// the time and the newcomer's seen faces found then.
async fn retag_after_enrolment(url: &str, seen: usize) -> Result<(Duration, usize)> {
    let dir = tempfile_dir()?;
    let blobs = FsStore::new(dir.join("blobs"))?;
    let handle = std::sync::Arc::new(GalleryHandle::with_store(
        MODEL,
        faces::open(url, MODEL).await?,
    ));
    handle.load(&blobs).await?;
    let store = handle.store().context("a face store")?.clone();
    let retagger = Retagger::new(handle.clone(), Threshold::DEFAULT).context("a face store")?;
    let face = NewFace {
        embedding: vector(NEWCOMER),
        side: 120.0,
        source: None,
    };
    handle.enroll(&blobs, "newcomer", &[face]).await?;
    eprintln!("{}: re-tagging {seen} seen faces", faces::redact(url));
    let stop = tokio_util::sync::CancellationToken::new();
    let t = Instant::now();
    while retagger.pass(&stop).await?.is_some() {}
    let took = t.elapsed();
    let status = store.retag_status().await?;
    anyhow::ensure!(
        status.cursor == status.latest && status.stale == 0,
        "re-tagging unfinished: {status:?}"
    );
    let mut found = 0;
    let mut before = None;
    loop {
        let page = store.appearances("newcomer", before, 1000).await?;
        found += page.len();
        match page.last() {
            Some(last) if page.len() == 1000 => before = Some(last.id),
            _ => break,
        }
    }
    let expected = (0..seen).filter(|i| is_newcomer(*i)).count();
    anyhow::ensure!(
        found == expected,
        "the newcomer was found in {found} seen faces, not {expected}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok((took, found))
}

/// Times a search for the 100 seen faces nearest to the newcomer's face: they must be
/// the faces that resemble it (as many as there are, up to 100).
async fn search_newcomer(store: &dyn FaceStore, seen: usize) -> Result<Duration> {
    use facerec_seams::faces::search::{Query, nearest_seen};
    let query = Query::Face {
        embedding: vector(NEWCOMER),
        side: 120.0,
    };
    let filter = faces::SeenFilter::default();
    let t = Instant::now();
    let found = nearest_seen(store, &query, 100, &filter, Threshold::DEFAULT).await?;
    let took = t.elapsed();
    let theirs = (0..seen).filter(|i| is_newcomer(*i)).count().min(100);
    let matched = found.iter().take(theirs).filter(|s| s.same).count();
    anyhow::ensure!(
        matched == theirs,
        "the search found {matched} of the newcomer's {theirs} nearest faces"
    );
    Ok(took)
}

fn is_newcomer(i: usize) -> bool {
    i % NEWCOMER_EVERY == NEWCOMER_EVERY / 2 + 1
}

/// The frequent identity's first page of 100, and a page from the middle of its list.
async fn frequent_pages(store: &dyn FaceStore, seen: usize) -> Result<(Duration, Duration)> {
    let t = Instant::now();
    let first = store.appearances("person0", None, 100).await?;
    let first_t = t.elapsed();
    anyhow::ensure!(first.len() == 100.min(seen / 100), "person0's first page");
    // The middle of person0's list: its faces are every 100th, so the id halfway.
    let middle = first.last().map_or(0, |a| a.id) / 2;
    let t = Instant::now();
    let page = store.appearances("person0", Some(middle), 100).await?;
    let middle_t = t.elapsed();
    anyhow::ensure!(!page.is_empty() || seen < 20_000, "person0's middle page");
    Ok((first_t, middle_t))
}

/// Seen face `i`: every 100th is `person0`, one in 1000 an unknown face that resembles the
/// newcomer (about 0.28 from its face), the rest spread over the identities.
fn seen_face(i: usize, identities: usize, gallery_seq: i64) -> SeenFace {
    let who = if i.is_multiple_of(100) {
        0
    } else {
        1 + (i * 7919) % (identities - 1).max(1)
    };
    let face = SeenFace {
        request_id: format!("req-{}", i / 3),
        face_index: (i % 3) as u32,
        batch: None,
        filename: format!("photo-{}.jpg", i / 3),
        bbox: [100.0, 80.0, 120.0, 130.0],
        score: 0.97,
        side: 120.0,
        embedding: vector(1 << 40 | i as u64),
        identity: Some(format!("person{who}")),
        distance: Some(0.4),
        nearest: Some(format!("person{who}")),
        gallery_seq,
        seen_ms: i as i64,
        quality: Some(facerec_seams::faces::FaceQuality {
            yaw: 0.05,
            roll: -2.0,
            sharpness: 180.0,
        }),
    };
    if !is_newcomer(i) {
        return face;
    }
    let (a, b) = (vector(NEWCOMER), face.embedding.clone());
    let mixed: Vec<f32> = a.iter().zip(&b).map(|(a, b)| 0.96 * a + 0.28 * b).collect();
    let norm = mixed.iter().map(|v| v * v).sum::<f32>().sqrt();
    SeenFace {
        embedding: mixed.iter().map(|v| v / norm).collect(),
        identity: None,
        distance: Some(0.9),
        ..face
    }
}

fn summarise(
    store: &str,
    write_all: Duration,
    mut times: Vec<Duration>,
    bytes: Option<Vec<u64>>,
    starts: [(f64, f64); 2],
) -> Row {
    times.sort();
    Row {
        store: store.to_string(),
        write_all,
        enrol_median: times[times.len() / 2],
        enrol_max: times[times.len() - 1],
        bytes: bytes.map(|mut b| {
            b.sort_unstable();
            b[b.len() / 2]
        }),
        starts,
    }
}

/// Starts a child that loads `target` as a serving process does; (seconds, peak RSS MB).
fn child(target: &str) -> Result<(f64, f64)> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .args(["bench", "faces", "--child-load", target])
        .output()
        .context("starting the child")?;
    if !out.status.success() {
        bail!("loading {target}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let (s, rss) = (v["seconds"].as_f64(), v["rss_peak_mb"].as_f64());
    eprintln!("start-up from {}: {v}", faces::redact(target));
    Ok((s.unwrap_or(f64::NAN), rss.unwrap_or(f64::NAN)))
}

/// The child: load, then print the time and the peak RSS as JSON.
fn child_load(target: &str) -> Result<ExitCode> {
    let t = Instant::now();
    let faces = if target.starts_with("sqlite:") || target.starts_with("postgres") {
        let dir = tempfile_dir()?;
        let blobs = FsStore::new(&dir)?;
        let len = runtime()?.block_on(async {
            let handle = GalleryHandle::with_store(MODEL, faces::open(target, MODEL).await?);
            handle.load(&blobs).await?;
            Ok::<_, anyhow::Error>(handle.get().len())
        })?;
        let _ = std::fs::remove_dir_all(dir);
        len
    } else {
        Gallery::load(Path::new(target))?.len()
    };
    let seconds = t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"seconds": seconds, "faces": faces, "rss_peak_mb": peak_rss_mb()})
    );
    Ok(ExitCode::SUCCESS)
}

/// A synthetic gallery: unit vectors, `per` faces per identity.
fn synthetic(n: usize, per: usize) -> Gallery {
    let mut g = Gallery::new(MODEL);
    for i in 0..n {
        g.add_face(&format!("person{}", i / per), &vector(i as u64), 120.0);
    }
    g
}

/// A deterministic unit vector.
fn vector(seed: u64) -> Vec<f32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut v: Vec<f32> = (0..DIM)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect();
    let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-6);
    v.iter_mut().for_each(|a| *a /= norm);
    v
}

/// Bytes this process has passed to `write` calls so far.
fn wchar() -> u64 {
    proc_field("/proc/self/io", "wchar:").unwrap_or(0.0) as u64
}

fn peak_rss_mb() -> f64 {
    proc_field("/proc/self/status", "VmHWM:").unwrap_or(f64::NAN) / 1024.0
}

/// The number after `key` in a /proc file.
fn proc_field(path: &str, key: &str) -> Option<f64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn human_bytes(b: u64) -> String {
    match b {
        0..10_000 => format!("{b} B"),
        10_000..10_000_000 => format!("{:.1} KB", b as f64 / 1e3),
        _ => format!("{:.0} MB", b as f64 / 1e6),
    }
}

/// A fresh directory under the system's temporary directory (kept: the caller removes it).
fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "facerec-bench-faces-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
