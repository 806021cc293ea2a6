//! Development probe: per-network forward time on a backend.
//! usage: cargo run --release -p facerec-engine --example timing -- [cpu|wgpu] [batch]
use std::time::Instant;

use facerec_engine::backend;
use facerec_engine::models::{self, Models};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let choice = args
        .get(1)
        .map(String::as_str)
        .unwrap_or("cpu")
        .parse()
        .expect("backend");
    let batch: usize = args.get(2).and_then(|b| b.parse().ok()).unwrap_or(4);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let m = Models::load(&dir, backend::resolve(choice).expect("backend")).expect("models");
    let input = |side: u32| vec![100f32; batch * 3 * (side * side) as usize];
    let time = |label: &str, f: &dyn Fn()| {
        f();
        let t = Instant::now();
        let reps = 3;
        for _ in 0..reps {
            f();
        }
        let per = t.elapsed().as_secs_f64() / reps as f64;
        println!(
            "{label:>12}: {:8.1} ms/batch of {batch}, {:7.1} img/s",
            per * 1e3,
            batch as f64 / per
        );
    };
    time("ssd", &|| {
        drop(m.ssd(input(models::SSD_SIZE), batch).expect("ssd"))
    });
    time("tiny", &|| {
        drop(m.tiny(input(models::TINY_SIZE), batch).expect("tiny"))
    });
    time("landmarks", &|| {
        drop(
            m.landmarks(input(models::LANDMARK_SIZE), batch)
                .expect("lm"),
        )
    });
    time("recognition", &|| {
        drop(
            m.embed(input(models::RECOGNITION_SIZE), batch)
                .expect("rec"),
        )
    });
}
