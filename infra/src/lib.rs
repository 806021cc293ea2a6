//! The AWS resources of one deployment `ID`, as `facerec infra` manages them: the buckets
//! and queues ([`provision`]), the workers' launch template with its user-data
//! ([`template`]) and a least-privilege IAM policy per role ([`policy`]).

pub mod policy;
pub mod provision;
pub mod template;
