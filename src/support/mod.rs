//! What several commands share; commands never import each other, they import this.

pub mod engine;
pub mod offline;
pub mod runtime;
pub mod serve;
