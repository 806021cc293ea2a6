//! Locks that outlive a panicked holder: the edge, the worker and the scaler share this one.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`; a holder that panicked leaves the data as it was, and the caller goes on with it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
