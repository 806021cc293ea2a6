//! Every CPU backend answers alike: the whole pipeline (decode, detect, landmarks, align,
//! embed) on onnxruntime and on Burn flex, on real photos and real face crops, with each
//! detector. The networks are the same ONNX files; only the arithmetic's order differs.

mod common;

use facerec_engine::{Analysis, BackendChoice, Detector, Engine, EngineConfig};

fn engine(backend: BackendChoice, detector: Detector) -> Engine {
    let mut config = EngineConfig::new(common::models_dir());
    config.backend = backend;
    config.detector = detector;
    Engine::new(config).unwrap_or_else(|e| panic!("{backend} engine: {e}"))
}

fn analyze(engine: &Engine, inputs: &[&[u8]]) -> Vec<Analysis> {
    engine
        .analyze(inputs)
        .0
        .into_iter()
        .map(|r| r.expect("image analyses"))
        .collect()
}

/// Real inputs: the six demo photos (1920 px, three to five people) and the ten distinct
/// CSE546 crops (64x64).
fn inputs() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = (1..=6).map(common::sample).collect();
    let dir = common::cse546_dir();
    for k in 0..10 {
        out.push(std::fs::read(dir.join(format!("test_{k:03}.jpg"))).expect("crop"));
    }
    out
}

fn agree(detector: Detector) {
    let files = inputs();
    let refs: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    let ort = analyze(&engine(BackendChoice::Ort, detector), &refs);
    let flex = analyze(&engine(BackendChoice::Cpu, detector), &refs);
    let mut worst_px = 0f32;
    let mut worst_d = 0f32;
    for (i, (a, b)) in ort.iter().zip(&flex).enumerate() {
        assert_eq!(a.faces.len(), b.faces.len(), "input {i}: face count");
        for (fa, fb) in a.faces.iter().zip(&b.faces) {
            assert_eq!(fa.whole_frame, fb.whole_frame, "input {i}");
            let px = [
                (fa.bbox.x - fb.bbox.x).abs(),
                (fa.bbox.y - fb.bbox.y).abs(),
                (fa.bbox.w - fb.bbox.w).abs(),
                (fa.bbox.h - fb.bbox.h).abs(),
            ]
            .into_iter()
            .fold(0f32, f32::max);
            let d = facerec_engine::report::distance(&fa.embedding, &fb.embedding);
            worst_px = worst_px.max(px);
            worst_d = worst_d.max(d);
        }
    }
    eprintln!("{detector:?}: boxes within {worst_px:.2e} px, descriptors within {worst_d:.2e}");
    assert!(worst_px <= 0.5, "boxes differ by {worst_px} px");
    assert!(worst_d <= 0.01, "descriptors differ by {worst_d}");
}

#[test]
fn onnxruntime_and_flex_agree_with_the_tiny_detector() {
    agree(Detector::Tiny);
}

#[test]
fn onnxruntime_and_flex_agree_with_the_ssd_detector() {
    agree(Detector::Ssd);
}

/// Several lanes on a CPU backend (`facerec up`'s engine threads, `identify`'s batches)
/// each run their batches in a rayon pool of their own, their share of the cores with the
/// lane's thread the first of them, and answer exactly as the process's shared pool does;
/// one lane keeps the shared pool.
#[test]
fn each_lane_runs_on_a_pool_of_its_own_and_answers_alike() {
    let files = inputs();
    let refs: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for backend in [BackendChoice::Ort, BackendChoice::Cpu] {
        let mut config = EngineConfig::new(common::models_dir());
        config.backend = backend;
        config.lanes = 2;
        let engine = Engine::new(config).unwrap_or_else(|e| panic!("{backend} engine: {e}"));
        assert!(
            engine.lane_pool(1).is_none(),
            "{backend}: one lane shares the pool"
        );
        let shared = format!("{:?}", analyze(&engine, &refs[..8]));
        std::thread::scope(|s| {
            let lanes: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        let pool = engine.lane_pool(2).expect("a pool for the lane");
                        assert_eq!(rayon::current_thread_index(), Some(0));
                        assert_eq!(rayon::current_num_threads(), (cores / 2).max(1));
                        assert_eq!(pool.current_num_threads(), (cores / 2).max(1));
                        format!("{:?}", analyze(&engine, &refs[..8]))
                    })
                })
                .collect();
            for lane in lanes {
                let got = lane.join().expect("the lane answers");
                assert!(
                    got == shared,
                    "{backend}: a lane's answers differ from the shared pool's"
                );
            }
        });
    }
}
