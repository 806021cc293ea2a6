//! facerec's controller tier: a pure scaling decision ([`decide`]), the sources it observes
//! ([`source`]), the fleets it changes ([`fleet`], [`ec2`]), the loop that ties them
//! together ([`controller`]) and a closed-loop simulator for traces ([`simulate`]).

pub mod controller;
pub mod decide;
pub mod ec2;
pub mod fleet;
pub mod metrics;
pub mod simulate;
pub mod source;

pub use controller::{Controller, ControllerConfig, Report};
pub use decide::{
    Action, Backlog, Decide, Decision, Member, MemberState, Observation, PerMessages, Policy,
    Scaler,
};
pub use fleet::{Fleet, FleetError, InProcess, Processes};
pub use metrics::ScalerMetrics;
pub use source::{Combined, Prometheus, QueueDepth, Sample, Scrape, Source, SourceError};
