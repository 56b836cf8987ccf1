//! Integration tests for ferry against the local stack of real servers (`dev/stack up`).
//! The test binaries live next to this file: `smoke/` proves each service is real and reachable;
//! `conformance/` runs the testkit's role conformance suites against the real Sink and StateStore.
