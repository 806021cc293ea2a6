//! Development probe: detection scores and pairwise descriptor distances on given images.
//! usage: cargo run -p facerec-engine --example probe -- [--min-score S] IMAGE...
use facerec_engine::{BackendChoice, Engine, EngineConfig};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut min_score = 0.5f32;
    if args.first().map(String::as_str) == Some("--min-score") {
        min_score = args[1].parse().expect("score");
        args.drain(..2);
    }
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let mut config = EngineConfig::new(models);
    config.backend = BackendChoice::Cpu;
    config.min_score = min_score;
    let engine = Engine::new(config).expect("engine");
    let bytes: Vec<Vec<u8>> = args
        .iter()
        .map(|p| std::fs::read(p).expect("read"))
        .collect();
    let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    let (results, times) = engine.analyze(&refs);
    eprintln!("{times:?}");
    let mut all = Vec::new();
    for (path, r) in args.iter().zip(&results) {
        let a = r.as_ref().expect("analysis");
        let stem = std::path::Path::new(path)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (k, f) in a.faces.iter().enumerate() {
            println!("{path} face{k} box {:?} whole {}", f.bbox, f.whole_frame);
            if let Ok(dir) = std::env::var("PROBE_CHIPS") {
                let img = image::open(path).expect("decode").to_rgb8();
                let chip = facerec_engine::align::chip(&img, &f.landmarks);
                chip.save(format!("{dir}/{stem}_{k}.png"))
                    .expect("save chip");
            }
            all.push((format!("{stem}#{k}"), f.embedding.clone()));
        }
    }
    for i in 0..all.len() {
        let row: Vec<String> = (0..all.len())
            .map(|j| {
                format!(
                    "{:.2}",
                    facerec_engine::report::distance(&all[i].1, &all[j].1)
                )
            })
            .collect();
        println!("{:>14} {}", all[i].0, row.join(" "));
    }
}
