//! The harness library: a mock containerd that launches any shim and drives it over TTRPC.
