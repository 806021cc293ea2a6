//! The load harness (`facerec bench`) and helpers shared by the criterion benches.

pub mod batch;
pub mod harness;
pub mod sweep;
