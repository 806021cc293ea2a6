//! Shared bench helpers live here as the harness grows.
