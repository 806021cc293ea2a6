//! The load harness (`facerec bench`) and helpers shared by the criterion benches and
//! `facerec bench models`.

pub mod batch;
pub mod harness;
pub mod sweep;
pub mod synthetic;
