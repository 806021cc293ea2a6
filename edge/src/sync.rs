//! Locks that outlive a panicked holder.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`; a holder that panicked leaves the data as it was, and the edge goes on with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
