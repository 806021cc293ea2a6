//! `facerec up` end to end over HTTP: the real binary, real models, real faces.
//! Mirrors the original workload (enroll each distinct photo, then POST all
//! 1000 CSE546 images to `/` from 100 concurrent clients) and checks every route's
//! answers and error statuses.

// Helpers of a test panic on failure like the tests themselves.
#![allow(clippy::unwrap_used)]

mod bulk;
mod faults;
mod harness;
mod observe;
mod original;
mod people;
mod routes;
mod workload;
