//! facerec's load generator, behind `facerec bench`: sends images to a running edge
//! (`facerec up` or `facerec edge`) with a fixed number of concurrent clients, one request
//! per connection (as the original workload generator did), and reports throughput, latency
//! percentiles, errors by status, and correctness against expected names. The bulk route
//! (many images per request, results streamed back) is in `batch`; `sweep` runs a grid of
//! server settings and client counts; `synthetic` makes gallery rows for search benchmarks.
//!
//! No Burn here: it measures a server, it does not run one.

mod batch;
mod client;
mod config;
mod items;
mod outcome;
mod pool;
mod report;
mod run;
pub mod sweep;
pub mod synthetic;

pub use client::call;
pub use config::{Config, Route, files_per_batch};
pub use items::{Item, ItemsError, load, load_dir};
pub use report::{Latency, Report};
pub use run::run;
