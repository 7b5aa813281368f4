//! The sidecar: terminates its pod's TLS to the apiserver, forwards every request, and records each exchange.
//!
//! Built in its own issue; the workspace carries it from the start so that
//! every part grows in the same place, under the same lints and CI.
