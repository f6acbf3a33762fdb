//! Shared set-up for the criterion benches: which shims to measure and why one is left out.
