//! What the engine's integration tests share: the test kit's data, and one CPU engine.
#![allow(dead_code, unused_imports)]

use std::sync::OnceLock;

use facerec_engine::{BackendChoice, Engine, EngineConfig};
pub use facerec_testkit::{cse546_dir, cse546_expected, models_dir, sample};

/// One CPU engine per test binary: loading the models is the slow part.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = EngineConfig::new(models_dir());
        config.backend = BackendChoice::Cpu;
        Engine::new(config).expect("engine loads")
    })
}
