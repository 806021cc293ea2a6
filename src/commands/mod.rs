//! One module per command; each has `run(&Args) -> Result<ExitCode>`. Commands never
//! import each other: what they share is in `support/`.

pub mod bench;
pub mod bench_faces;
pub mod bench_grouping;
pub mod bench_models;
pub mod cluster;
pub mod edge;
pub mod embed;
pub mod enroll;
pub mod faces;
pub mod identify;
pub mod infra;
pub mod scaler;
pub mod simulate;
pub mod sweep;
pub mod up;
pub mod verify;
pub mod worker;
