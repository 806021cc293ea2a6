//! The offline CLI end to end: the real `facerec` binary, real models, real faces (the
//! CSE546 crops; expected names from the data set's CSV).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn facerec(args: &[&str], cwd: &Path) -> Output {
    facerec_env(args, cwd, &[])
}

/// `facerec` with extra environment variables.
fn facerec_env(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_facerec"))
        .args(["--log-json"])
        .args(args)
        .current_dir(cwd)
        .env("FACEREC_BACKEND", "cpu")
        .env("FACEREC_MODELS", facerec_testkit::models_dir())
        .envs(env.iter().copied())
        .output()
        .expect("facerec runs")
}

/// Fails the test with the command's stderr unless it exited 0.
fn assert_succeeded(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The JSON log lines of `stderr` whose message is `message`.
fn logged(stderr: &str, message: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["fields"]["message"] == message)
        .collect()
}

/// The ten distinct CSE546 photos and their expected names, plus a people/ folder with
/// one sub-folder per person.
struct Workload {
    dir: tempfile::TempDir,
    expected: Vec<(String, String)>,
}

impl Workload {
    fn new() -> Self {
        let (dir, expected) = facerec_testkit::Cse546::unzip().into_parts();
        for (stem, name) in expected.iter().take(10) {
            let person = dir.path().join("people").join(name);
            std::fs::create_dir_all(&person).expect("mkdir");
            std::fs::copy(
                Self::image_in(dir.path(), stem),
                person.join(format!("{stem}.jpg")),
            )
            .expect("copy");
        }
        Self { dir, expected }
    }

    fn image_in(dir: &Path, stem: &str) -> PathBuf {
        dir.join("face_images_1000").join(format!("{stem}.jpg"))
    }

    fn image(&self, stem: &str) -> String {
        Self::image_in(self.dir.path(), stem).display().to_string()
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

#[test]
fn enroll_identify_verify_embed() {
    let w = Workload::new();
    let gallery = w.path().join("gallery.bin");
    let g = gallery.to_str().expect("utf-8");

    let out = facerec(&["enroll", "--gallery", g, "--dir", "people"], w.path());
    assert_succeeded(&out);
    assert!(
        stdout(&out).contains("enrolled 10 face(s), 0 failed"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("8 identities, 10 faces"),
        "{}",
        stdout(&out)
    );

    // Plain output: `<stem>:<name>`, one line per image, in order.
    let batch: Vec<&(String, String)> = w.expected[10..40].iter().collect();
    let images: Vec<String> = batch.iter().map(|(s, _)| w.image(s)).collect();
    let mut args = vec!["identify", "--gallery", g];
    args.extend(images.iter().map(String::as_str));
    let out = facerec(&args, w.path());
    assert_succeeded(&out);
    let want: Vec<String> = batch.iter().map(|(s, n)| format!("{s}:{n}")).collect();
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), want);

    // JSON lines: faces with boxes, identity, similarity, confidence.
    let out = facerec(
        &["identify", "--gallery", g, "--json", &w.image("test_002")],
        w.path(),
    );
    let line: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("one JSON line");
    let face = &line["faces"][0];
    assert_eq!(face["identity"], "Bob");
    assert_eq!(face["box"].as_array().expect("box").len(), 4);
    assert!(face["similarity"].as_f64().expect("similarity") > 0.5);
    // The enrolled copy itself: distance ~0, as sure as a match gets.
    assert!(face["confidence"].as_f64().expect("confidence") > 0.99);

    // A threshold that is no distance between descriptors is refused, saying why.
    let out = facerec(
        &[
            "identify",
            "--gallery",
            g,
            "--threshold",
            "7",
            &w.image("test_002"),
        ],
        w.path(),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("(0, 2]"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Verify: identical copies are the same; two people are different.
    let out = facerec(
        &[
            "verify",
            "--json",
            &w.image("test_000"),
            &w.image("test_100"),
        ],
        w.path(),
    );
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("json");
    assert_eq!(v["same"], true);
    assert!(v["distance"].as_f64().expect("distance") < 1e-3);
    // 64x64 crops: faces under 64 px get the small-face threshold.
    assert_eq!(
        v["threshold"].as_f64().map(|t| (t * 100.0).round()),
        Some(50.0)
    );
    assert!(v["confidence"].as_f64().expect("confidence") > 0.99);
    let pairs = w.path().join("pairs.csv");
    std::fs::write(
        &pairs,
        format!(
            "{},{}\n{},{}\n",
            w.image("test_000"),
            w.image("test_100"),
            w.image("test_000"),
            w.image("test_003")
        ),
    )
    .expect("write pairs");
    let out = facerec(
        &["verify", "--pairs", pairs.to_str().expect("utf-8")],
        w.path(),
    );
    assert_succeeded(&out);
    let verdicts: Vec<String> = stdout(&out)
        .lines()
        .map(|l| l.split(',').nth(2).expect("verdict").to_string())
        .collect();
    assert_eq!(verdicts, vec!["same", "different"]);

    // Embed: a 128-d descriptor per face.
    let out = facerec(&["embed", "--json", &w.image("test_005")], w.path());
    let e: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("json");
    assert_eq!(
        e["faces"][0]["embedding"]
            .as_array()
            .expect("embedding")
            .len(),
        128
    );
}

#[test]
fn bad_images_are_reported_and_the_rest_still_processed() {
    let w = Workload::new();
    let gallery = w.path().join("gallery.bin");
    let g = gallery.to_str().expect("utf-8");
    assert!(
        facerec(&["enroll", "--gallery", g, "--dir", "people"], w.path())
            .status
            .success()
    );
    let empty = w.path().join("empty.jpg");
    std::fs::write(&empty, b"").expect("write");
    let text = w.path().join("notes.jpg");
    std::fs::write(&text, b"this is not a photo").expect("write");
    let missing = w.path().join("missing.jpg");
    let good = w.image("test_003");
    let out = facerec(
        &[
            "identify",
            "--gallery",
            g,
            "--json",
            empty.to_str().expect("p"),
            text.to_str().expect("p"),
            missing.to_str().expect("p"),
            &good,
        ],
        w.path(),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed image makes the exit status non-zero"
    );
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let kinds: Vec<&str> = lines
        .iter()
        .map(|l| l["error"]["kind"].as_str().unwrap_or("ok"))
        .collect();
    assert_eq!(kinds, vec!["empty", "not_an_image", "io", "ok"]);
    assert_eq!(lines[3]["faces"][0]["identity"], "German");

    // A batch per image: the batches run on two engine threads at once, and the lines
    // still come in the order of the arguments.
    let mut args = vec!["identify", "--gallery", g, "--json", "--batch", "1"];
    let good2 = w.image("test_000");
    let files = [
        good2.as_str(),
        empty.to_str().expect("p"),
        &good,
        text.to_str().expect("p"),
        missing.to_str().expect("p"),
        &good2,
        &good,
    ];
    args.extend(files);
    let out = facerec(&args, w.path());
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let got: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["image"].as_str().expect("image"),
                l["error"]["kind"].as_str().unwrap_or("ok"),
            )
        })
        .collect();
    let kinds = ["ok", "empty", "ok", "not_an_image", "io", "ok", "ok"];
    assert_eq!(got, files.into_iter().zip(kinds).collect::<Vec<_>>());
    assert_eq!(lines[2]["faces"][0]["identity"], "German");
    assert_eq!(lines[6]["faces"][0]["identity"], "German");

    // Plain output keeps one line per image.
    let out = facerec(
        &["identify", "--gallery", g, text.to_str().expect("p"), &good],
        w.path(),
    );
    assert_eq!(stdout(&out), "notes:error\ntest_003:German\n");
}

#[test]
fn strangers_are_unknown_and_a_missing_gallery_is_a_clear_error() {
    let w = Workload::new();
    let gallery = w.path().join("gallery.bin");
    let g = gallery.to_str().expect("utf-8");
    let out = facerec(
        &["identify", "--gallery", g, &w.image("test_000")],
        w.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));

    // Only Paul enrolled: Bob is unknown.
    let out = facerec(
        &["enroll", "--gallery", g, "Paul", &w.image("test_000")],
        w.path(),
    );
    assert_succeeded(&out);
    let out = facerec(
        &[
            "identify",
            "--gallery",
            g,
            &w.image("test_002"),
            &w.image("test_100"),
        ],
        w.path(),
    );
    assert_eq!(stdout(&out), "test_002:unknown\ntest_100:Paul\n");
}

/// dlib's float weights (`--recognizer dlib`) work end to end, and a gallery enrolled with
/// one set of weights is refused by the other rather than matched wrongly.
#[test]
fn the_dlib_recognizer_identifies_and_galleries_stay_apart() {
    let w = Workload::new();
    let gallery = w.path().join("dlib.bin");
    let g = gallery.to_str().expect("utf-8");
    let out = facerec(
        &[
            "enroll",
            "--recognizer",
            "dlib",
            "--gallery",
            g,
            "--dir",
            "people",
        ],
        w.path(),
    );
    assert_succeeded(&out);

    let batch: Vec<&(String, String)> = w.expected[10..30].iter().collect();
    let images: Vec<String> = batch.iter().map(|(s, _)| w.image(s)).collect();
    let mut args = vec!["identify", "--recognizer", "dlib", "--gallery", g];
    args.extend(images.iter().map(String::as_str));
    let out = facerec(&args, w.path());
    assert_succeeded(&out);
    let want: Vec<String> = batch.iter().map(|(s, n)| format!("{s}:{n}")).collect();
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), want);

    // The default (face-api) weights refuse the dlib gallery.
    let out = facerec(&["identify", "--gallery", g, &images[0]], w.path());
    assert!(!out.status.success(), "{}", stdout(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("model"), "{err}");
}

/// `--gallery-search gpu` (here Mesa's software Vulkan, with Burn on the CPU) answers
/// exactly as the CPU search: the same JSON lines for known faces and strangers, every
/// face of a batch in one search, the gallery uploaded once.
#[test]
#[cfg_attr(not(feature = "gpu"), ignore = "needs a build with the gpu feature")]
fn gallery_search_on_the_gpu_answers_as_on_the_cpu() {
    let w = Workload::new();
    let gallery = w.path().join("gallery.bin");
    let g = gallery.to_str().expect("utf-8");
    // Everyone but Bob: his photos must come back unknown.
    std::fs::remove_dir_all(w.path().join("people/Bob")).expect("Bob's folder");
    let out = facerec(&["enroll", "--gallery", g, "--dir", "people"], w.path());
    assert_succeeded(&out);

    let batch = &w.expected[10..40];
    let images: Vec<String> = batch.iter().map(|(s, _)| w.image(s)).collect();
    let mut args = vec!["identify", "--gallery", g, "--json", "--batch", "8"];
    args.extend(images.iter().map(String::as_str));
    let run = |search: &str| {
        let out = facerec_env(
            &args,
            w.path(),
            &[("FACEREC_GALLERY_SEARCH", search), ("FACEREC_LOG", "info")],
        );
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{search}: {log}");
        (stdout(&out), log)
    };
    let (on_gpu, gpu_log) = run("gpu");
    let (on_cpu, cpu_log) = run("cpu");
    assert!(gpu_log.contains(r#""matcher":"gpu""#), "{gpu_log}");
    assert_eq!(
        gpu_log.matches("gallery uploaded to the GPU").count(),
        1,
        "one upload for four batches: {gpu_log}"
    );
    assert!(cpu_log.contains(r#""matcher":"cpu""#), "{cpu_log}");
    assert_eq!(on_gpu, on_cpu);

    let lines: Vec<serde_json::Value> = on_gpu
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), batch.len());
    let mut strangers = 0;
    for (line, (stem, name)) in lines.iter().zip(batch) {
        let face = &line["faces"][0];
        if name == "Bob" {
            strangers += 1;
            assert!(face["identity"].is_null(), "{stem}: {line}");
            assert_ne!(face["nearest"], "Bob");
        } else {
            assert_eq!(face["identity"], name.as_str(), "{stem}: {line}");
        }
    }
    assert!(strangers >= 3, "{strangers} photos of Bob");
}

/// `facerec bench models` times every requested (net, batch) point and writes the report
/// shape the peer scripts read; search runs on the CPU and, where a wgpu adapter exists
/// (lavapipe on CI), on the WGSL kernel too.
#[test]
fn bench_models_reports_every_point() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("models.json");
    let out = facerec(
        &[
            "bench",
            "models",
            "--backend",
            "cpu",
            "--nets",
            "recognition,tiny,search,pipeline",
            "--batches",
            "1,2",
            "--seconds",
            "0.2",
            "--gallery-faces",
            "5000",
            "--json",
            json.to_str().expect("utf-8"),
        ],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("report")).expect("JSON");
    assert_eq!(report["tool"], "facerec");
    assert_eq!(report["backend"], "cpu");
    assert!(report["adapter"].is_string() && report["date"].is_string());
    let rows = report["results"].as_array().expect("results");
    let mut nets = vec!["recognition", "tiny", "pipeline", "search_cpu"];
    if facerec_engine::gpu::Gpu::open().is_ok() {
        nets.push("search_gpu");
    }
    for net in &nets {
        for batch in [1u64, 2] {
            let row = rows
                .iter()
                .find(|r| r["net"] == *net && r["batch"] == batch)
                .unwrap_or_else(|| panic!("no {net} batch {batch} in {rows:?}"));
            assert_eq!(row["dtype"], "f32");
            assert!(
                row["items_per_s"].as_f64().expect("items_per_s") > 0.0,
                "{row}"
            );
            assert!(
                row["median_ms"].as_f64().expect("median_ms") >= 0.0,
                "{row}"
            );
            assert!(row["iters"].as_u64().expect("iters") >= 1, "{row}");
            assert!(row["warmup_s"].as_f64().expect("warmup_s") >= 0.0, "{row}");
        }
    }
    assert_eq!(rows.len(), nets.len() * 2, "{rows:?}");
    // The parity photos hold faces: the pipeline reports them.
    let pipeline = rows
        .iter()
        .find(|r| r["net"] == "pipeline")
        .expect("pipeline");
    assert!(pipeline["faces_per_s"].as_f64().expect("faces_per_s") > 0.0);
    // One progress line per point on stderr, the table on stdout.
    assert_eq!(stderr.matches(" items/s").count(), rows.len(), "{stderr}");
    let table = stdout(&out);
    assert!(
        table.starts_with("| net | dtype | batch | items/s"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 2 + rows.len(), "{table}");
}

/// `--batch auto` times the networks after loading, logs its choice, and the answers are
/// those of a fixed batch.
#[test]
fn batch_auto_picks_and_logs_a_batch_and_answers_correctly() {
    let w = Workload::new();
    let gallery = w.path().join("gallery.bin");
    let g = gallery.to_str().expect("utf-8");
    let out = facerec(&["enroll", "--gallery", g, "--dir", "people"], w.path());
    assert_succeeded(&out);

    let batch: Vec<&(String, String)> = w.expected[10..22].iter().collect();
    let images: Vec<String> = batch.iter().map(|(s, _)| w.image(s)).collect();
    let mut args = vec!["identify", "--batch", "auto", "--gallery", g];
    args.extend(images.iter().map(String::as_str));
    let out = facerec_env(&args, w.path(), &[("FACEREC_LOG", "info")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let want: Vec<String> = batch.iter().map(|(s, n)| format!("{s}:{n}")).collect();
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), want);

    let chosen = logged(&stderr, "batch autotune chose a batch size")
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no autotune log line in {stderr}"));
    let b = chosen["fields"]["batch"].as_u64().expect("batch field");
    assert!((1..=256).contains(&b), "{chosen}");
    assert_eq!(chosen["fields"]["detector"], "ssd");
    let size = logged(&stderr, "batch size")
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no batch size log line in {stderr}"));
    assert_eq!(size["fields"]["batch"], b, "{size}");
    assert_eq!(size["fields"]["from"], "--batch auto", "{size}");

    // The same through the environment variable.
    let out = facerec_env(
        &["identify", "--gallery", g, &images[0]],
        w.path(),
        &[("FACEREC_BATCH", "auto")],
    );
    assert_succeeded(&out);
    assert_eq!(stdout(&out).trim(), want[0]);
}

/// Without `--batch` the engine takes its backend's default (8 on the CPU backends, 16 on
/// wgpu) and says so; `--batch N` and `FACEREC_BATCH` replace it.
#[test]
fn the_default_batch_follows_the_backend_and_a_flag_replaces_it() {
    let w = Workload::new();
    let gallery = w.path().join("gallery.bin");
    let g = gallery.to_str().expect("utf-8");
    assert_succeeded(&facerec(
        &["enroll", "--gallery", g, "--dir", "people"],
        w.path(),
    ));
    let image = w.image(&w.expected[10].0);
    let want = format!("{}:{}", w.expected[10].0, w.expected[10].1);
    let batch_line = |args: &[&str], env: &[(&str, &str)]| -> serde_json::Value {
        let mut env = env.to_vec();
        env.push(("FACEREC_LOG", "info"));
        let mut args = args.to_vec();
        args.extend(["--gallery", g]);
        let out = facerec_env(&args, w.path(), &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert_eq!(stdout(&out).trim(), want);
        let lines = logged(&stderr, "batch size");
        assert_eq!(lines.len(), 1, "{stderr}");
        lines[0]["fields"].clone()
    };
    let mut defaults = vec![("ort", 8), ("cpu", 8)];
    if cfg!(feature = "gpu") {
        // Mesa's software Vulkan here; a GPU takes larger batches.
        defaults.push(("wgpu", 16));
    }
    for (backend, batch) in defaults {
        let line = batch_line(&["identify", "--backend", backend, &image], &[]);
        assert_eq!(line["batch"], batch, "{line}");
        assert_eq!(line["backend"], backend, "{line}");
        assert_eq!(line["from"], "the backend's default", "{line}");
    }
    let line = batch_line(&["identify", "--batch", "3", &image], &[]);
    assert_eq!(
        (&line["batch"], &line["from"]),
        (&3.into(), &"--batch".into())
    );
    let line = batch_line(&["identify", &image], &[("FACEREC_BATCH", "5")]);
    assert_eq!(
        (&line["batch"], &line["from"]),
        (&5.into(), &"--batch".into())
    );
}

#[test]
fn bad_batch_values_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (args, says) in [
        (&["embed", "--batch", "0", "x.jpg"][..], "at least 1"),
        (
            &["embed", "--batch", "foo", "x.jpg"][..],
            "not a batch size",
        ),
        (
            &["bench", "models", "--batches", ""][..],
            "at least one batch size",
        ),
        (
            &["bench", "models", "--batches", "1,0"][..],
            "not a batch size",
        ),
        (&["bench", "models", "--nets", "resnet"][..], "unknown net"),
    ] {
        let out = facerec(args, dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// The onnxruntime backend end to end: `auto` takes it where the library loads (CI installs
/// the PyPI wheel) and says why, `--backend ort` identifies the 1000 CSE546 crops exactly as
/// the expected names say, and a library that cannot be loaded is a clear error for `ort`
/// and a logged fallback to flex for `auto`.
#[test]
fn onnxruntime_backend_identifies_and_auto_explains_its_choice() {
    let w = Workload::new();
    let gallery = w.path().join("gallery.bin");
    let g = gallery.to_str().expect("utf-8");
    let ort = [("FACEREC_BACKEND", "ort"), ("FACEREC_LOG", "info")];
    let out = facerec_env(
        &["enroll", "--gallery", g, "--dir", "people"],
        w.path(),
        &ort,
    );
    assert_succeeded(&out);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains(r#""backend":"ort""#), "{log}");

    let images: Vec<String> = w.expected.iter().map(|(s, _)| w.image(s)).collect();
    let mut args = vec!["identify", "--gallery", g];
    args.extend(images.iter().map(String::as_str));
    let out = facerec_env(&args, w.path(), &ort);
    assert_succeeded(&out);
    let want: Vec<String> = w.expected.iter().map(|(s, n)| format!("{s}:{n}")).collect();
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), want);

    let auto = [("FACEREC_BACKEND", "auto"), ("FACEREC_LOG", "info")];
    let out = facerec_env(&["embed", "--json", &w.image("test_000")], w.path(), &auto);
    assert_succeeded(&out);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains(r#""backend":"ort""#), "{log}");
    assert!(log.contains("onnxruntime loaded"), "{log}");

    // A library that is not onnxruntime: `ort` refuses with the reason, `auto` falls back.
    let bogus = w.path().join("libonnxruntime.so");
    std::fs::write(&bogus, b"not a shared library").expect("write");
    let bogus = bogus.to_str().expect("utf-8");
    let no_python = [("PATH", "/nonexistent")];
    let env = |backend| {
        [
            ("FACEREC_BACKEND", backend),
            ("FACEREC_LOG", "info"),
            ("FACEREC_ORT_LIB", bogus),
            no_python[0],
        ]
    };
    let out = facerec_env(&["embed", &w.image("test_000")], w.path(), &env("ort"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("onnxruntime did not load"), "{err}");
    assert!(err.contains(bogus), "{err}");
    let out = facerec_env(
        &["embed", "--json", &w.image("test_000")],
        w.path(),
        &env("auto"),
    );
    assert_succeeded(&out);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains(r#""backend":"cpu""#), "{log}");
    assert!(
        log.contains("FACEREC_ORT_LIB"),
        "the hint names the fix: {log}"
    );
}

/// The library search asks `python3` where the `onnxruntime` package is only when nothing
/// before it loaded: with `FACEREC_ORT_LIB` naming the library, no interpreter starts (its
/// start-up was most of a one-photo command's); without it, the package `python3` imports
/// is found and loaded. A `python3` first on `PATH` records each call.
#[test]
fn onnxruntime_search_asks_python_only_when_nothing_before_it_loads() {
    let w = Workload::new();
    let real = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs");
    let real = String::from_utf8_lossy(&real.stdout).trim().to_string();
    let bin = w.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    let calls = w.path().join("python3-calls");
    let fake = bin.join("python3");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\nexec '{real}' \"$@\"\n",
            calls.display()
        ),
    )
    .expect("write the recording python3");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |ort_lib: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_facerec"));
        cmd.args(["--log-json", "embed", "--json", &w.image("test_000")])
            .current_dir(w.path())
            .env("FACEREC_BACKEND", "ort")
            .env("FACEREC_LOG", "info")
            .env("FACEREC_MODELS", facerec_testkit::models_dir())
            .env("PATH", &path)
            .env_remove("FACEREC_ORT_LIB")
            .env_remove("ORT_DYLIB_PATH");
        if let Some(lib) = ort_lib {
            cmd.env("FACEREC_ORT_LIB", lib);
        }
        let out = cmd.output().expect("facerec runs");
        assert_succeeded(&out);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    // Found through python3: the library is the package's `capi/` one.
    let log = run(None);
    assert!(log.contains(r#""backend":"ort""#), "{log}");
    let asked = std::fs::read_to_string(&calls).unwrap_or_default();
    assert!(asked.contains("find_spec('onnxruntime')"), "{asked}");
    let package = Command::new(&real)
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .output()
        .expect("python3 runs");
    let capi = format!("{}/capi", String::from_utf8_lossy(&package.stdout).trim());
    assert!(log.contains(&capi), "the package's library: {log}");

    // Named: loaded without asking.
    std::fs::remove_file(&calls).expect("clear the record");
    let log = run(Some(&capi));
    assert!(log.contains(r#""backend":"ort""#), "{log}");
    assert!(
        !calls.exists(),
        "python3 was asked: {:?}",
        std::fs::read_to_string(&calls)
    );
}

/// The binary finds its models wherever it is started (here in a folder of its own, with
/// no `FACEREC_MODELS`), and a `--models` that does not exist is an error naming the flag.
#[test]
fn the_binary_finds_its_models_from_any_directory() {
    let w = Workload::new();
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let image = w.image("test_005");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_facerec"))
            .args(args)
            .current_dir(elsewhere.path())
            .env("FACEREC_BACKEND", "cpu")
            .env_remove("FACEREC_MODELS")
            .output()
            .expect("facerec runs")
    };
    let out = run(&["embed", "--json", &image]);
    assert_succeeded(&out);
    assert!(stdout(&out).contains("\"embedding\""), "{}", stdout(&out));
    let out = run(&["embed", "--models", "no-such-models", &image]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--models no-such-models"), "{err}");
}
